"""Plain values shared by every layer."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from rehearse.core.errors import ExitCode, RehearseError


class CheckKind(StrEnum):
    """What a health check (config.Check) reaches: a command in the guest,
    a TCP port, an HTTP URL."""

    CMD = "cmd"
    TCP = "tcp"
    HTTP = "http"


_TARGET = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)"
    r"(?::(?P<port>[0-9]{1,5}))?$"
)


@dataclass(frozen=True)
class Address:
    """Where promote goes: USER@HOST[:PORT]; user and port may be left to
    the user's ssh configuration."""

    host: str
    user: str = ""
    port: int = 0

    @classmethod
    def parse(cls, text: str, where: str = "--to") -> Address:
        m = _TARGET.match(text.strip())
        if not m or m.group("host").startswith("-"):
            raise RehearseError(
                f"{where}: {text!r} is not a server: expected USER@HOST[:PORT], HOST or HOST:PORT",
                hint="e.g. root@fripon.example.org or admin@203.0.113.10:2222",
                exit_code=ExitCode.USAGE,
            )
        port = int(m.group("port") or 0)
        if m.group("port") and not 1 <= port <= 65535:
            raise RehearseError(f"{where}: port {port} is out of range (1–65535)", exit_code=ExitCode.USAGE)
        return cls(host=m.group("host").strip("[]"), user=m.group("user") or "", port=port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (f"{self.user}@" if self.user else "") + host + (f":{self.port}" if self.port else "")

    @property
    def key(self) -> str:
        """A file name for this server's history."""
        return re.sub(r"[^A-Za-z0-9._@-]", "_", str(self))

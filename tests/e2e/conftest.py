"""Fixtures for driving the rehearse command against VMs booted from the mini nixpkgs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MINI_NIXPKGS, fixed_fripon


@dataclass
class Rehearse:
    """Runs `rehearse` as a user would, with its own state directory."""

    state: Path
    cwd: Path

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "REHEARSE_STATE_DIR": str(self.state), **extra}

    def __call__(
        self, *args: str, timeout: float = 600, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "rehearse", *args],
            cwd=self.cwd,
            env=env or self.env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def popen(self, *args: str, new_session: bool = False) -> subprocess.Popen[str]:
        """rehearse in the background; with new_session in a process group of
        its own, so a test can kill it with everything it started."""
        return subprocess.Popen(
            [sys.executable, "-m", "rehearse", *args],
            cwd=self.cwd,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
            start_new_session=new_session,
            # Ctrl-C as a terminal gives it, whoever started the test session:
            # a shell's background job inherits SIGINT ignored, and Python
            # then installs no KeyboardInterrupt for it.
            preexec_fn=_default_sigint,
        )

    def status(self) -> list[dict[str, Any]]:
        result = self("status", "--json")
        assert result.returncode == 0, result.stderr
        data: list[dict[str, Any]] = json.loads(result.stdout)
        return data

    def vm(self, name: str) -> dict[str, Any]:
        return next(v for v in self.status() if v["name"] == name)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="session")
def rehearse(tmp_path_factory: pytest.TempPathFactory, guest_image: Path) -> Iterator[Rehearse]:
    base = tmp_path_factory.mktemp("rehearse")
    r = Rehearse(state=base / "state", cwd=base)
    yield r
    # Leave no VM running behind the test session.
    if r.state.exists():
        for vm in r.status():
            if vm["state"] == "running":
                r("destroy", vm["name"], "--timeout", "5")


def include() -> list[str]:
    return ["-I", f"nixpkgs={MINI_NIXPKGS}"]


class Config:
    """A test VM's configuration: fripon plus an `extra.nix` the tests rewrite."""

    def __init__(self, directory: Path) -> None:
        self.path = fixed_fripon(directory)
        self.extra = directory / "extra.nix"

    def set(self, body: str) -> None:
        self.extra.write_text("{ config, lib, pkgs, ... }:\n{\n" + body + "\n}\n")


def booted(rehearse: Rehearse, tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Config]:
    """A module's VM `name`, booted from a Config and destroyed after the module."""
    conf = Config(tmp_path_factory.mktemp(f"{name}-conf"))
    result = rehearse("up", str(conf.path), *include(), "--name", name)
    assert result.returncode == 0, result.stderr[-3000:]
    yield conf
    rehearse("destroy", name, "--timeout", "10")


def oneshot(name: str, script: str, *, remain: bool = True) -> str:
    """Module text: a oneshot unit wanted by multi-user.target that runs `script`."""
    config = '{ Type = "oneshot"; RemainAfterExit = true; }' if remain else '{ Type = "oneshot"; }'
    return (
        f'  systemd.services.{name} = {{ wantedBy = [ "multi-user.target" ]; '
        f'serviceConfig = {config}; script = "{script}"; }};'
    )


def reaches_host(rehearse: Rehearse, name: str) -> bool:
    """Whether VM `name`'s guest can open a TCP connection to a port the host
    listens on at 127.0.0.1, through QEMU's user network (10.0.2.2)."""
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        probe = f"timeout 20 bash -c 'exec 3<>/dev/tcp/10.0.2.2/{port}' && echo open || echo closed"
        result = rehearse("ssh", name, "--", probe, timeout=120)
    assert result.returncode == 0, result.stderr  # the SSH forward works either way
    assert result.stdout.strip() in ("open", "closed"), result.stdout
    return result.stdout.strip() == "open"

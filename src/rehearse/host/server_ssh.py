"""The server's own sshd, kept under test.

rehearse reaches a VM through its management channel (nix/vm-module.nix),
not through the server's sshd; so a configuration that would lock the real
server out (sshd off, its port closed in the firewall, AllowUsers or
PermitRootLogin refusing every authorized user) must be caught by a check
of its own, run after every deploy over the server's ports as configured.

What the server's sshd is, is read from the system's own files on the host
(the VM shares the host's store): `etc/ssh/sshd_config` (Port and
ListenAddress lines, as NixOS's sshd.nix writes them), `sshd.socket`'s
ListenStream lines with `startWhenNeeded` (sshd.nix then writes no Port
line), and `etc/ssh/authorized_keys.d/<user>` (one per user with
authorized keys, as NixOS's users-groups.nix writes them).
"""

from __future__ import annotations

import re
import shlex
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rehearse.host import process, ssh

DEFAULT_PORT = 22


@dataclass(frozen=True)
class Sshd:
    """The server's sshd as a system configures it."""

    enabled: bool
    ports: tuple[int, ...] = ()
    users: tuple[str, ...] = ()  # users whose authorized keys include rehearse's
    socket_activated: bool = False


def _port_of(listen: str) -> int | None:
    """The port of a ListenAddress / ListenStream value: `22`,
    `1.2.3.4:22`, `[::1]:22`; None for an address alone."""
    value = listen.strip()
    if value.isdigit():
        return int(value)
    if value.startswith("["):
        m = re.fullmatch(r"\[[^\]]*\](?::(\d+))?", value)
        return int(m.group(1)) if m and m.group(1) else None
    host, sep, port = value.rpartition(":")
    return int(port) if sep and ":" not in host and port.isdigit() else None


def read(system: Path, public_key: str) -> Sshd:
    """The server's sshd of a system (its store path)."""
    etc = system / "etc"
    units = etc / "systemd" / "system"
    config = etc / "ssh" / "sshd_config"
    socket = units / "sshd.socket"
    service = units / "sshd.service"
    if not config.exists() or not (socket.exists() or service.exists()):
        return Sshd(enabled=False)
    ports: list[int] = []
    if socket.exists():
        for line in socket.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "ListenStream" and (port := _port_of(value)) is not None:
                ports.append(port)
    else:
        plain: list[int] = []
        for line in config.read_text().splitlines():
            words = line.split()
            if len(words) == 2 and words[0].lower() == "port" and words[1].isdigit():
                plain.append(int(words[1]))
            elif len(words) == 2 and words[0].lower() == "listenaddress":
                port = _port_of(words[1])
                ports.append(port if port is not None else (plain[0] if plain else DEFAULT_PORT))
        ports = ports or plain
    users = []
    keys_dir = etc / "ssh" / "authorized_keys.d"
    wanted = public_key.split()[1] if len(public_key.split()) > 1 else public_key
    if keys_dir.is_dir():
        for f in sorted(keys_dir.iterdir()):
            try:
                if wanted in f.read_text():
                    users.append(f.name)
            except OSError:
                continue
    return Sshd(
        enabled=True,
        ports=tuple(dict.fromkeys(ports or [DEFAULT_PORT])),
        users=tuple(users),
        socket_activated=socket.exists(),
    )


def host_keys(system: Path) -> list[str]:
    """The host key files of the server's sshd (HostKey lines; NixOS's
    default ed25519 and RSA keys when there are none)."""
    config = system / "etc" / "ssh" / "sshd_config"
    keys = []
    if config.exists():
        for line in config.read_text().splitlines():
            words = line.split()
            if len(words) == 2 and words[0].lower() == "hostkey":
                keys.append(words[1])
    return keys or ["/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_rsa_key"]


@dataclass(frozen=True)
class PortResult:
    port: int
    ok: bool
    detail: str  # who logged in, or why the port failed
    reachable: bool = True  # sshd answered (a key exchange completed)


# ssh's words for a connection that never reached authentication.
_UNREACHABLE = re.compile(
    r"rehearse: |Connection refused|Connection reset|Connection closed|Connection timed out|timed out|"
    r"kex_exchange_identification|No route to host|Network is unreachable|banner exchange"
)
_REFUSED = re.compile(r"Permission denied|Too many authentication failures|Authentication failed")


def greeted(port: int, grace: float) -> tuple[socket.socket | None, str]:
    """A connection to 127.0.0.1:port on which sshd's greeting has come
    (peeked at, not read: ssh reads it), within `grace` seconds; else None
    and why not. QEMU's user network accepts the connection on this side at
    once whatever the guest does, so a port the guest's firewall drops shows
    as silence, and one nobody listens on as a connection closed at once
    (tried again: sshd may be restarting)."""
    deadline = time.monotonic() + grace
    why = "no answer"
    while True:
        left = max(0.2, deadline - time.monotonic())
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=left)
            s.settimeout(left)
            if s.recv(4, socket.MSG_PEEK).startswith(b"SSH-"):
                s.settimeout(None)
                return s, ""
            s.close()
            why = "the connection was closed without an SSH greeting (nothing listens, or it was rejected)"
        except TimeoutError:
            why = f"no SSH greeting within {grace:.0f} s (the port is closed or filtered)"
        except OSError as e:
            why = f"connection failed: {e.strerror or e}"
        if time.monotonic() >= deadline:
            return None, why
        time.sleep(0.3)


def proxy(port: int, grace: float) -> int:
    """ssh's ProxyCommand (with ProxyUseFdpass): the greeted connection is
    handed to ssh, so the check costs the guest one sshd connection, not a
    probe and a login."""
    s, why = greeted(port, grace)
    if s is None:
        print(f"rehearse: {why}", file=sys.stderr)
        return 1
    with socket.socket(fileno=sys.stdout.fileno()) as out:
        socket.send_fds(out, [b"\0"], [s.fileno()])
    return 0


def _try(remote: ssh.Remote, grace: float) -> tuple[str, str]:
    """One login, on a connection that sshd greeted within `grace` seconds:
    ("ok" | "refused" | "unreachable", ssh's or the proxy's message)."""
    proxy = shlex.join([sys.executable, "-m", "rehearse.host.server_ssh", str(remote.port), str(grace)])
    argv = [
        "ssh",
        *ssh.options(remote, master=False, connect_timeout=15),
        "-o", f"ProxyCommand={proxy.replace('%', '%%')}",
        "-o", "ProxyUseFdpass=yes",
        remote.target, "--", "true",
    ]  # fmt: skip
    r = process.run(argv, check=False, timeout=60)
    text = (r.stderr or "").strip().splitlines()
    mine = [line.removeprefix("rehearse: ") for line in text if line.startswith("rehearse: ")]  # the proxy's
    last = mine[0] if mine else text[-1] if text else f"exit {r.returncode}"
    if r.returncode == 0:
        return "ok", ""
    if _REFUSED.search(r.stderr or ""):
        return "refused", last
    if r.returncode == 255 and not _UNREACHABLE.search(r.stderr or "") and "Host key verification" in (r.stderr or ""):
        return "refused", last  # the key exchange completed: sshd answered
    return "unreachable", last


def check_port(
    base: ssh.Remote, port: int, host_port: int | None, users: tuple[str, ...], grace: float = 4.0
) -> PortResult:
    """Can the server's sshd on guest `port` be logged into? It must greet
    within `grace` seconds; then, with users that the configuration
    authorizes, one of them must log in with a key; with none, a completed
    key exchange (authentication refused) is enough."""
    if host_port is None:
        return PortResult(port, False, "not forwarded to this machine", reachable=False)
    refused: list[str] = []
    for user in users or ("root",):
        remote = ssh.Remote(base.host, host_port, user, base.key, base.known_hosts, base.host_key_alias)
        outcome, why = _try(remote, grace)
        if outcome == "ok":
            return PortResult(port, True, f"{user} logged in")
        if outcome == "unreachable":
            return PortResult(port, False, why, reachable=False)
        refused.append(f"{user}: {why}")
    if not users:
        return PortResult(port, True, "answers (no user is authorized with a key)")
    return PortResult(port, False, "every authorized user was refused (" + "; ".join(refused) + ")")


def check(base: ssh.Remote, sshd: Sshd, forwards: dict[int, int], grace: float = 4.0) -> list[PortResult]:
    """Check every port at once (each login is a new handshake, ~1 s in a
    VM without KVM)."""
    with ThreadPoolExecutor(max_workers=max(1, len(sshd.ports))) as pool:
        return list(pool.map(lambda p: check_port(base, p, forwards.get(p), sshd.users, grace), sshd.ports))


if __name__ == "__main__":
    sys.exit(proxy(int(sys.argv[1]), float(sys.argv[2])))

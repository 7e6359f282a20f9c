"""server_ssh.read: the server's sshd as a system's own files describe it."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from rehearse.host import server_ssh
from rehearse.host.server_ssh import _port_of
from tests.unit.conftest import serving

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOZoe rehearse@srv"


def system(
    tmp_path: Path, config: str | None, *, socket: str | None = None, keys: dict[str, str] | None = None
) -> Path:
    etc = tmp_path / "etc"
    units = etc / "systemd" / "system"
    units.mkdir(parents=True)
    if config is not None:
        (etc / "ssh").mkdir(parents=True, exist_ok=True)
        (etc / "ssh" / "sshd_config").write_text(config)
    if socket is None:
        (units / "sshd.service").write_text("[Service]\nExecStart=sshd -D\n")
    else:
        (units / "sshd.socket").write_text(socket)
    for user, text in (keys or {}).items():
        (etc / "ssh" / "authorized_keys.d").mkdir(parents=True, exist_ok=True)
        (etc / "ssh" / "authorized_keys.d" / user).write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("value", "port"),
    [("22", 22), ("1.2.3.4:2222", 2222), ("[::1]:22", 22), ("[::]", None), ("10.0.0.1", None), ("::", None)],
)
def test_port_of_listen_values(value: str, port: int | None) -> None:
    assert _port_of(value) == port


def test_ports_from_port_lines_and_default(tmp_path: Path) -> None:
    assert server_ssh.read(system(tmp_path / "a", "Port 2222\nPort 22\n"), KEY).ports == (2222, 22)
    assert server_ssh.read(system(tmp_path / "b", "PermitRootLogin no\n"), KEY).ports == (22,)


def test_listen_addresses_with_and_without_port(tmp_path: Path) -> None:
    config = "Port 2200\nListenAddress 0.0.0.0:2222\nListenAddress [::]\n"
    assert server_ssh.read(system(tmp_path, config), KEY).ports == (2222, 2200)


def test_socket_activation_reads_listen_stream(tmp_path: Path) -> None:
    socket = "[Socket]\nListenStream=2222\nListenStream=0.0.0.0:2223\nAccept=yes\n"
    sshd = server_ssh.read(system(tmp_path, "UsePAM yes\n", socket=socket), KEY)
    assert sshd.enabled and sshd.socket_activated and sshd.ports == (2222, 2223)


def test_no_sshd(tmp_path: Path) -> None:
    assert not server_ssh.read(system(tmp_path, None), KEY).enabled


def test_users_whose_keys_include_rehearses(tmp_path: Path) -> None:
    keys = {"alice": f"ssh-ed25519 AAAAother alice\n{KEY}\n", "bob": "ssh-ed25519 AAAAbob bob\n"}
    assert server_ssh.read(system(tmp_path, "", keys=keys), KEY).users == ("alice",)


def test_host_keys(tmp_path: Path) -> None:
    sys_a = system(tmp_path / "a", "HostKey /etc/ssh/k1\nHostKey /var/k2\n")
    assert server_ssh.host_keys(sys_a) == ["/etc/ssh/k1", "/var/k2"]
    assert server_ssh.host_keys(system(tmp_path / "b", "")) == [
        "/etc/ssh/ssh_host_ed25519_key",
        "/etc/ssh/ssh_host_rsa_key",
    ]


BASE = server_ssh.ssh.Remote("127.0.0.1", 0, "root", Path("/k"), Path("/kh"), "rehearse-srv-server")


def fake_try(monkeypatch: pytest.MonkeyPatch, outcomes: dict[str, tuple[str, str]]) -> list[str]:
    tried: list[str] = []

    def attempt(remote: server_ssh.ssh.Remote, grace: float) -> tuple[str, str]:
        tried.append(remote.user)
        return outcomes[remote.user]

    monkeypatch.setattr(server_ssh, "_try", attempt)
    return tried


def test_one_authorized_user_getting_in_is_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    tried = fake_try(monkeypatch, {"alice": ("refused", "Permission denied"), "bob": ("ok", "")})
    result = server_ssh.check_port(BASE, 2222, 2201, ("alice", "bob"))
    assert result.ok and result.detail == "bob logged in" and tried == ["alice", "bob"]


def test_every_authorized_user_refused_is_a_lockout(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_try(monkeypatch, {"alice": ("refused", "alice@127.0.0.1: Permission denied (publickey).")})
    result = server_ssh.check_port(BASE, 2222, 2201, ("alice",))
    assert not result.ok and result.reachable
    assert result.detail.startswith("every authorized user was refused (alice: ")


def listener(behaviour: str) -> socket.socket:
    """A local port that greets like sshd, stays silent (a firewall that
    drops, behind QEMU's user network), or closes each connection at once."""

    def answer(conn: socket.socket) -> None:
        if behaviour == "greet":
            conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
        elif behaviour == "silent":
            time.sleep(1.5)
        conn.close()

    return serving(answer)


@pytest.mark.parametrize(
    ("behaviour", "expected"), [("greet", None), ("silent", "no SSH greeting"), ("close", "closed")]
)
def test_greeting(behaviour: str, expected: str | None) -> None:
    with listener(behaviour) as srv:
        conn, why = server_ssh.greeted(srv.getsockname()[1], grace=0.8)
    if conn is not None:
        conn.close()
    assert (conn is not None and why == "") if expected is None else (conn is None and expected in why)


def test_unreachable_port(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_try(monkeypatch, {"alice": ("unreachable", "Connection timed out during banner exchange")})
    result = server_ssh.check_port(BASE, 22, 2201, ("alice",))
    assert not result.ok and not result.reachable and "banner exchange" in result.detail
    assert not server_ssh.check_port(BASE, 22, None, ("alice",)).reachable  # not forwarded


def test_no_authorized_user_needs_only_an_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_try(monkeypatch, {"root": ("refused", "Permission denied")})
    result = server_ssh.check_port(BASE, 22, 2201, ())
    assert result.ok and "no user is authorized" in result.detail


def test_proxy_hands_the_greeted_connection_to_ssh(tmp_path: Path) -> None:
    """The ProxyCommand of the check: a real ssh reads the greeting from the
    connection the proxy passed it (here it gets no further: no server)."""
    with listener("greet") as srv:
        port = srv.getsockname()[1]
        remote = server_ssh.ssh.Remote("127.0.0.1", port, "alice", tmp_path / "k", tmp_path / "kh", "x")
        outcome, why = server_ssh._try(remote, grace=2)
    assert outcome == "unreachable" and "rehearse:" not in why  # past the proxy: ssh's own complaint


def test_proxy_reports_silence(tmp_path: Path) -> None:
    with listener("silent") as srv:
        remote = server_ssh.ssh.Remote("127.0.0.1", srv.getsockname()[1], "alice", tmp_path / "k", tmp_path / "kh", "x")
        outcome, why = server_ssh._try(remote, grace=0.8)
    assert outcome == "unreachable" and why.startswith("no SSH greeting within")

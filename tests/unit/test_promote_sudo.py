"""promote to a non-root user: `--sudo` (sudo -n) and `--ask-sudo-password`
(sudo --prompt= --stdin, the password on stdin as nixos-rebuild-ng gives it),
at the argv and stdin level; the password never in a command line, a repr
or an error. The server end to end: tests/e2e/test_promote_sudo.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rehearse.core.errors import ExitCode, RehearseError
from rehearse.core.values import Address
from rehearse.host import ssh
from rehearse.pipeline import promote
from rehearse.store.state import VMDir
from rehearse.targets.target import Server
from tests.conftest import on_a_terminal

PASSWORD = "s3cret pass\\word"  # a space and a backslash: read as they are


def server(**kw: object) -> ssh.Remote:
    address = Address.parse("admin@fripon.example.org:2222")
    return Server(address, VMDir("fripon", Path("/tmp/x")), **kw).remote  # type: ignore[arg-type]


def test_the_password_goes_on_stdin_never_on_the_command_line() -> None:
    remote = server(sudo=True, sudo_password=PASSWORD)
    argv = ssh.argv(remote, ["sh", "-c", "echo hi"])
    assert not any(PASSWORD in word for word in argv)
    assert argv[-1].startswith("sudo --prompt= --stdin sh -c ")
    assert argv[-1].endswith(f" {ssh._SUDO_MARK} sh -c 'echo hi'")
    assert ssh.stdin(remote, "input\n") == f"{PASSWORD}\n{ssh._SUDO_MARK}\ninput\n"
    assert ssh.stdin(remote, None) == f"{PASSWORD}\n{ssh._SUDO_MARK}\n"  # also for a command that reads none
    # Without the password: sudo -n, and stdin as it was.
    plain = server(sudo=True)
    assert ssh.argv(plain, ["true"])[-1] == "sudo -n true"
    assert ssh.stdin(plain, "input\n") == "input\n" and ssh.stdin(plain, None) is None


def test_the_password_is_in_no_repr() -> None:
    req = promote.PromoteRequest(name="fripon", to=Address.parse("admin@srv"), sudo=True, sudo_password=PASSWORD)
    remote = server(sudo=True, sudo_password=PASSWORD)
    assert remote.sudo_password == PASSWORD
    for value in (req, remote):
        assert PASSWORD not in repr(value) and PASSWORD not in str(value)


@pytest.mark.parametrize("sudo_read_it", [True, False])
def test_the_command_gets_its_input_to_the_byte(sudo_read_it: bool) -> None:
    """What runs under sudo reads the password's line if sudo left it (a
    NOPASSWD rule, cached credentials) and the marker's, then the command
    reads the rest as rehearse wrote it (guest/start.sh counts its script
    in bytes with head -c)."""
    remote = server(sudo=True, sudo_password=PASSWORD)
    payload = "#!/bin/sh\necho 'ünïcode'\n\tno newline at the end"
    fed = ssh.stdin(remote, payload)
    assert fed is not None
    if sudo_read_it:
        fed = fed.split("\n", 1)[1]  # as sudo --stdin reads it: its line, no more
    words = ssh._sudo_words(remote)
    assert words[:3] == ["sudo", "--prompt=", "--stdin"]
    n = len(payload.encode())
    command = [*words[3:], "sh", "-c", f"head -c {n}; printf '|'; cat"]
    r = subprocess.run(command, input=fed + "\nrest", capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout == payload + "|\nrest"
    assert PASSWORD not in r.stdout + r.stderr


def test_input_out_of_step_is_refused() -> None:
    words = ssh._sudo_words(server(sudo=True, sudo_password=PASSWORD))
    r = subprocess.run([*words[3:], "echo", "ran"], input="a\nb\nc\n", capture_output=True, text=True, check=False)
    assert r.returncode == 97 and r.stdout == ""
    assert "out of step" in r.stderr


def fake_ssh(monkeypatch: pytest.MonkeyPatch, code: int, err: str) -> list[tuple[list[str], str | None]]:
    seen: list[tuple[list[str], str | None]] = []

    def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        seen.append((argv, kw.get("input")))  # type: ignore[arg-type]
        return subprocess.CompletedProcess(argv, code, "", err)

    monkeypatch.setattr(ssh.process, "run", run)
    return seen


def test_check_sudo_asks_sudo_itself_and_checks_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = fake_ssh(monkeypatch, 0, "")
    ssh.check_sudo(server(sudo=True))
    ssh.check_sudo(server(sudo=True, sudo_password=PASSWORD))
    ssh.check_sudo(server())  # no sudo: nothing to check, nothing sent
    (plain, no_input), (asked, password) = seen
    assert plain[-1] == "sh -c 'LC_ALL=C exec sudo -n true'" and no_input is None
    # The password checked even if sudo cached credentials (-k); its line alone on stdin.
    assert asked[-1] == "sh -c 'LC_ALL=C exec sudo -k --prompt= --stdin true'" and password == f"{PASSWORD}\n"
    assert not any(PASSWORD in w for w in asked)


@pytest.mark.parametrize(
    ("password", "code", "err", "says", "exit_code"),
    [
        (None, 1, "sudo: a password is required\n", "wants a password", ExitCode.USAGE),
        (PASSWORD, 1, "Sorry, try again.\n\nsudo: no password was provided\nsudo: 1 incorrect password attempt\n",
         "refused the password", ExitCode.FAILED),
        (PASSWORD, 1, "admin is not in the sudoers file.  This incident will be reported.\n", "may not use sudo",
         ExitCode.FAILED),
        (None, 127, "sh: 1: exec: sudo: not found\n", "has no sudo", ExitCode.FAILED),
    ],
)  # fmt: skip
def test_check_sudo_says_what_is_wrong_and_that_nothing_changed(
    monkeypatch: pytest.MonkeyPatch, password: str | None, code: int, err: str, says: str, exit_code: ExitCode
) -> None:
    fake_ssh(monkeypatch, code, err)
    with pytest.raises(RehearseError) as e:
        ssh.check_sudo(server(sudo=True, sudo_password=password))
    assert says in e.value.message and "nothing was copied or activated" in e.value.message
    assert e.value.exit_code == exit_code
    assert PASSWORD not in str(e.value)
    if says == "wants a password":
        assert "--ask-sudo-password" in (e.value.hint or "")


def rehearse_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "rehearse", "promote", "fripon", "--to", "admin@srv", *args]


def run_without_a_terminal(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # A session of its own: no controlling terminal. The password is never read from stdin.
    return subprocess.run(
        rehearse_argv(*args),
        input="password on stdin\n",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "REHEARSE_STATE_DIR": str(tmp_path / "state")},
        start_new_session=True,
        check=False,
    )


def test_without_a_terminal_nothing_is_asked_nor_sent(tmp_path: Path) -> None:
    r = run_without_a_terminal(tmp_path, "--ask-sudo-password")
    assert r.returncode == ExitCode.USAGE, r.stderr
    assert "asks for the password on a terminal" in r.stderr and "nothing was sent" in r.stderr


def test_bad_arguments_are_said_before_the_password_is_asked(tmp_path: Path) -> None:
    r = run_without_a_terminal(tmp_path, "--ask-sudo-password", "--confirm-timeout", "1")
    assert r.returncode == ExitCode.USAGE, r.stderr
    assert "--confirm-timeout" in r.stderr and "terminal" not in r.stderr


def test_the_password_is_asked_once_on_the_terminal_unechoed() -> None:
    code = "from rehearse.host import ssh; print(repr(ssh.ask_sudo_password('admin@srv')))"
    rc, out, _, shown = on_a_terminal([sys.executable, "-c", code], PASSWORD.encode() + b"\n", timeout=30)
    assert rc == 0
    assert out.strip() == repr(PASSWORD)
    assert shown.startswith(b"[sudo] password for admin@srv: ")  # nixos-rebuild-ng's prompt
    assert PASSWORD.encode() not in shown  # not echoed

"""The command line's conventions: exit codes, --debug, help, output, and
what `up`/`deploy`/`ssh` make of their arguments (no VM needed)."""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rehearse import config
from rehearse.commands import cli, requests
from rehearse.core import output
from rehearse.core.errors import ExitCode, RehearseError
from rehearse.host import nix, process, ssh
from rehearse.store.state import RecordedSource, VMDir, VMState


def rehearse(*args: str, state: Path, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rehearse", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env={**os.environ, "REHEARSE_STATE_DIR": str(state), **env},
        stdin=subprocess.DEVNULL,
    )


def stopped_vm(root: Path, name: str = "fripon") -> VMDir:
    d = VMDir(name, root)
    d.create()
    d.save(VMState(name=name, source=RecordedSource("/srv/configuration.nix", include=("nixpkgs=/old",))))
    return d


def test_help_lists_every_exit_code(tmp_path: Path) -> None:
    result = rehearse("--help", state=tmp_path)
    assert result.returncode == 0
    for code in ExitCode:
        assert f"{int(code):>3}  {code.meaning}" in result.stdout
    assert "NO_COLOR" in result.stdout


def test_every_argument_has_help() -> None:
    def walk(p: argparse.ArgumentParser, where: str) -> list[str]:
        missing = []
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    missing += walk(sub, f"{where} {name}")
            elif not action.help:
                missing.append(f"{where} {'/'.join(action.option_strings) or action.dest}")
        return missing

    assert walk(cli.parser(), "rehearse") == []


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert rehearse("deploy", state=tmp_path).returncode == 2  # argparse: NAME missing
    bad = rehearse("down", "no/such", state=tmp_path)
    assert bad.returncode == 2 and "invalid VM name" in bad.stderr
    unknown = rehearse("down", "nosuch", state=tmp_path)
    assert unknown.returncode == 2 and "no VM named 'nosuch'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    zero = rehearse("deploy", "nosuch", "--confirm-timeout", "0", state=tmp_path)
    assert (
        zero.returncode == 2
        and "--confirm-timeout: expected a number of seconds from 5 to 86400, found 0" in zero.stderr
    )


def test_not_running_exits_6(tmp_path: Path) -> None:
    stopped_vm(tmp_path)
    # (`generations` of a stopped VM lists what rehearse recorded: test_day.py)
    for args in (("ssh", "fripon", "--", "true"), ("deploy", "fripon", "--yes")):
        result = rehearse(*args, state=tmp_path)
        assert result.returncode == 6, (args, result.stderr)
        assert "VM 'fripon' is not running" in result.stderr and "rehearse up fripon" in result.stderr


def test_busy_exits_7_naming_the_holder(tmp_path: Path) -> None:
    d = stopped_vm(tmp_path)
    fd = os.open(d.file("lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"rehearse deploy, pid 4242\n")
        result = rehearse("down", "fripon", state=tmp_path)
    finally:
        os.close(fd)
    assert result.returncode == 7
    assert "busy" in result.stderr and "rehearse deploy, pid 4242" in result.stderr


def test_configuration_errors_exit_3() -> None:
    source = nix.Source(configuration=Path("/srv/configuration.nix"))
    err = nix.evaluation_error("error: undefined variable 'x'\n       at /srv/configuration.nix:3:5:", source)
    assert err.exit_code == ExitCode.CONFIG


def test_debug_shows_the_traceback_only_when_asked(tmp_path: Path) -> None:
    plain = rehearse("down", "nosuch", state=tmp_path)
    assert "Traceback" not in plain.stderr
    for args in (("--debug", "down", "nosuch"), ("down", "nosuch", "--debug")):
        result = rehearse(*args, state=tmp_path)
        assert result.returncode == 2, args
        assert "Traceback (most recent call last)" in result.stderr and "RehearseError" in result.stderr
        assert "error: no VM named 'nosuch'" in result.stderr


def test_debug_shows_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    output.configure(debug=True)
    try:
        process.run(["echo", "a b"])
    finally:
        output.configure(debug=False)
    assert "$ echo 'a b'" in capsys.readouterr().err
    process.run(["true"])
    assert capsys.readouterr().err == ""


def test_output_colour_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    output.warn("careful")
    assert capsys.readouterr().err == "warning: careful\n"  # captured: not a terminal
    monkeypatch.setattr(output, "is_terminal", lambda stream=None: True)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert output.style("x", "red") == "\033[31mx\033[0m"
    monkeypatch.setenv("NO_COLOR", "1")
    assert output.style("x", "red") == "x"


def test_results_go_to_stdout_and_progress_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    output.result("rehearse ssh fripon")
    output.info("building")
    out, err = capsys.readouterr()
    assert out == "rehearse ssh fripon\n" and err == "building\n"


def test_ssh_joins_a_users_words_as_openssh_does(tmp_path: Path) -> None:
    remote = ssh.Remote("127.0.0.1", 2222, "root", tmp_path / "k", tmp_path / "kh", "rehearse-x")
    argv = ssh.argv(remote, shell_command="uname -a; systemctl is-system-running")
    assert argv[-2:] == ["--", "uname -a; systemctl is-system-running"]
    assert ssh.argv(remote, ["echo", "a b"])[-1] == "echo 'a b'"  # rehearse's own commands: quoted


def up_args(*argv: str) -> argparse.Namespace:
    return cli.parser().parse_args(["up", *argv])


def test_up_takes_a_vm_name_or_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REHEARSE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    stopped_vm(tmp_path / "state")
    by_name = requests.up_request(up_args("fripon", "-I", "nixpkgs=/new"), config.Settings())
    assert by_name.source is None and by_name.name == "fripon" and by_name.include == ("nixpkgs=/new",)
    (tmp_path / "configuration.nix").write_text("{ }")
    by_path = requests.up_request(up_args("configuration.nix"), config.Settings())
    assert by_path.source is not None and by_path.source.configuration == tmp_path / "configuration.nix"
    (tmp_path / "fripon").mkdir()
    (tmp_path / "fripon" / "configuration.nix").write_text("{ }")
    explicit = requests.up_request(up_args("./fripon"), config.Settings())
    assert explicit.source is not None and explicit.source.configuration == tmp_path / "fripon" / "configuration.nix"
    with pytest.raises(RehearseError, match="no VM named 'ghost', and no file 'ghost'") as e:
        requests.up_request(up_args("ghost"), config.Settings())
    assert e.value.exit_code == ExitCode.USAGE
    with pytest.raises(RehearseError, match="invalid VM name"):
        requests.up_request(up_args("configuration.nix", "--name", ""), config.Settings())


def test_new_include_replaces_the_recorded_one() -> None:
    assert config.merge_include(("nixpkgs=/old", "foo=/x"), ["nixpkgs=/new"]) == ("nixpkgs=/new", "foo=/x")
    assert config.merge_include(("nixpkgs=/old",), []) == ("nixpkgs=/old",)
    assert config.merge_include((), ["/some/dir"]) == ("/some/dir",)


@pytest.mark.parametrize("bad", [0.0, -1.0, 0.5, 4.9, math.nan, math.inf, -math.inf, 86401.0, 10**400, True, "60"])
def test_durations_are_checked_against_their_bounds(bad: object) -> None:
    with pytest.raises(
        RehearseError, match=r"^--confirm-timeout: expected a number of seconds from 5 to 86400, found "
    ) as e:
        config.seconds(bad, 60.0, "--confirm-timeout", config.CONFIRM)
    assert e.value.exit_code == ExitCode.USAGE
    assert e.value.hint and "fresh SSH connection" in e.value.hint  # the message says why 5 s
    assert config.seconds(None, 60.0, "--confirm-timeout", config.CONFIRM) == 60.0
    # The guest counts whole seconds: a fraction is rounded up, never down to 0.
    assert config.seconds(5.2, 60.0, "--confirm-timeout", config.CONFIRM) == 6.0
    assert config.seconds(1.5, 300.0, "--timeout", config.SSH_WAIT) == 1.5  # the host waits in fractions
    assert config.seconds(0, 60.0, "--timeout", config.POWER_OFF) == 0.0  # down: do not wait


def test_json_document_of_a_failed_deploy() -> None:
    e = RehearseError("rolled back", exit_code=ExitCode.ROLLED_BACK, report={"name": "x", "result": "rolled-back"})
    doc = e.as_report()
    assert json.loads(json.dumps(doc)) == {
        "name": "x",
        "result": "rolled-back",
        "error": "rolled back",
        "hint": None,
        "exit_code": 4,
    }
    assert RehearseError("no VM").as_report()["result"] == "error"


def test_children_never_read_the_users_terminal() -> None:
    """A command without input gets /dev/null: an ssh must not eat the answer
    typed for "activate it?"."""
    assert process.run(["readlink", "/proc/self/fd/0"]).stdout.strip() == "/dev/null"
    assert process.run(["cat"], input="given").stdout == "given"


@pytest.mark.parametrize("content", [b"", b"{", b"{}", b"[1, 2]", b"\xff\xfe", b'"text"'])
def test_a_damaged_deploy_history_is_set_aside(
    tmp_path: Path, content: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    from rehearse.store import history as h

    history = tmp_path / "deploys.json"
    history.write_bytes(content)
    assert h.load(history) == []
    assert history.read_bytes() == content  # reading alone changes nothing
    h.record(history, {"system": "/nix/store/x", "result": "confirmed"})
    assert h.load(history) == [{"system": "/nix/store/x", "result": "confirmed"}]
    [aside] = tmp_path.glob("deploys.json.broken-*")
    assert aside.read_bytes() == content
    assert "is damaged" in capsys.readouterr().err


def test_guest_output_cannot_drive_the_terminal() -> None:
    assert output.printable("ok \x1b]0;pwned\x07 \x1b[2J\tend") == "ok \\x1b]0;pwned\\x07 \\x1b[2J\tend"
    assert output.printable("plain ünïcode") == "plain ünïcode"

"""What used to end in `internal error` (issue 22, item 8) ends in a clear
one-line error that says what is wrong and what to do, with its exit code,
and changes nothing: each run in-process, as from the command line."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from rehearse.core.errors import ExitCode
from rehearse.host import nix, ssh
from rehearse.machines import lifecycle
from rehearse.store.state import Forwarded, RecordedSource, VMDir, VMState
from tests.unit.test_input import main


def error_of(capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """The error line and the hint line of what main() printed; nothing else."""
    err = capsys.readouterr().err
    assert "internal error" not in err and "Traceback" not in err
    lines = err.splitlines()
    [message] = [line for line in lines if line.startswith("error: ")]
    hints = [line for line in lines if line.startswith("hint: ")]
    return message, hints[0] if hints else ""


def vm_with_state(root: Path, name: str, content: bytes) -> VMDir:
    d = VMDir(name, root)
    d.create()
    d.file("state.json").write_bytes(content)
    return d


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b'{"name": "fripon", "source": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "it is nested too deeply"),
        (b'{"name": "fripon", "pid": 12, "pid_start": "x"}', "pid_start is 'x'"),
        (b'{"name": "fripon", "forwards": [{"host": 8080}]}', "forwards is [{'host': 8080}]"),
        (b'{"source": {}}', "it names no VM"),
        # a long value is cut short: the message stays a line
        (b'{"name": "fripon", "runners": {"a": "' + b"x" * 10_000 + b'", "b": 1}}', "runners is {'a': 'xxxxx"),
    ],
)
def test_a_damaged_state_names_its_file_and_the_way_out(
    cwd: Path, capsys: pytest.CaptureFixture[str], content: bytes, says: str
) -> None:
    d = vm_with_state(cwd / "state", "fripon", content)
    for command in (["down", "fripon"], ["up", "fripon"], ["snapshot", "fripon", "t"]):
        assert main(*command) == ExitCode.FAILED
        message, hint = error_of(capsys)
        assert message.startswith(f"error: the state of VM 'fripon' is broken: {d.file('state.json')}: {says}")
        assert message.endswith(".") and len(message) < 300, message
        assert hint == "hint: fix the file, or `rehearse destroy fripon` removes the VM (its disk too)"
        assert d.file("state.json").read_bytes() == content  # nothing changed
    # status shows it among the others, and destroy removes it
    assert main("status") == ExitCode.OK
    assert "broken" in capsys.readouterr().out
    assert main("destroy", "fripon") == ExitCode.OK
    assert not d.path.exists()


def listening() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


@pytest.mark.parametrize("where", ["flag", "rehearse.toml", "configuration"])
def test_a_taken_forward_port_is_said_before_anything_is_built(
    cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    (cwd / "configuration.nix").write_text("{ }")
    with listening() as holder:
        port = holder.getsockname()[1]
        from_config = [{"from": "host", "host": {"port": port}, "guest": {"port": 80}, "proto": "tcp"}]
        info = nix.VMInfo("fripon", "fripon", True, from_config if where == "configuration" else [], [])
        monkeypatch.setattr(nix, "vm_info", lambda source: info)
        monkeypatch.setattr(nix, "build", lambda *a, **kw: pytest.fail("built"))
        monkeypatch.setattr(ssh, "generate_key", lambda *a, **kw: pytest.fail("made a key"))
        flags = ["--forward", f"{port}:80"] if where == "flag" else []
        if where == "rehearse.toml":
            (cwd / "rehearse.toml").write_text(f'forward = ["{port}:80"]\n')
        assert main("up", "./configuration.nix", *flags) == ExitCode.USAGE
    message, hint = error_of(capsys)
    assert message.startswith(f"error: port {port} on 127.0.0.1 is taken by ")  # the process that holds it
    assert message.endswith(
        f"(pid {os.getpid()}): cannot forward it to the VM's port 80; nothing was built or started."
    )
    assert hint.startswith("hint: free it, or forward another host port")
    assert not VMDir("fripon", cwd / "state").path.exists()  # the VM that never was leaves nothing


def test_a_taken_port_of_a_stopped_vm_is_said_before_it_starts(
    cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with listening() as holder:
        port = holder.getsockname()[1]
        d = VMDir("fripon", cwd / "state")
        d.create()
        state = VMState(name="fripon", source=RecordedSource("/srv/configuration.nix"))
        state.forwards = [Forwarded(port, 80, "tcp")]
        d.save(state)
        before = d.file("state.json").read_bytes()
        monkeypatch.setattr(nix, "vm_info", lambda source: pytest.fail("evaluated"))
        monkeypatch.setattr(lifecycle, "ensure_keys", lambda vmdir: pytest.fail("made keys"))
        state.runner = str(cwd)  # a runner to restart with: nothing to evaluate
        d.save(state)
        before = d.file("state.json").read_bytes()
        assert main("up", "fripon") == ExitCode.USAGE
    message, _ = error_of(capsys)
    assert f"port {port} on 127.0.0.1 is taken" in message
    assert d.file("state.json").read_bytes() == before


@pytest.mark.parametrize(("files", "says"), [((), ", and no flake.nix."), (("flake.nix",), " (it has a flake.nix).")])
def test_up_of_a_directory_without_a_configuration(
    cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], files: tuple[str, ...], says: str
) -> None:
    (cwd / "server").mkdir()
    for f in files:
        (cwd / "server" / f).write_text("{ }")
    monkeypatch.setattr(nix, "vm_info", lambda source: pytest.fail("evaluated"))
    assert main("up", "./server") == ExitCode.USAGE
    message, hint = error_of(capsys)
    assert message == f"error: no configuration.nix in {cwd / 'server'}{says}"
    assert ("--flake" in hint) == bool(files)
    monkeypatch.chdir(cwd / "server")
    assert main("up", ".") == ExitCode.USAGE
    assert error_of(capsys)[0] == f"error: no configuration.nix in {cwd / 'server'}{says}"
    assert not (cwd / "state").exists() or not any((cwd / "state").iterdir())


def test_restore_on_a_vm_without_a_disk(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = VMDir("fripon", cwd / "state")
    d.create()
    d.save(VMState(name="fripon", source=RecordedSource("/srv/configuration.nix")))
    (d.file("snapshots") / "before").mkdir(parents=True)
    (d.file("snapshots") / "before" / "meta.json").write_text('{"tag": "before", "taken": 1}')
    assert main("restore", "fripon", "before") == ExitCode.USAGE
    message, hint = error_of(capsys)
    assert message == (
        "error: fripon has no disk (disk.qcow2): there is nothing to restore snapshot before into; nothing was changed."
    )
    assert hint == "hint: `rehearse up fripon` makes a new disk; snapshots taken after that can be restored"


def test_a_state_without_a_source(
    cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nix used to be asked to build "None"."""
    d = vm_with_state(cwd / "state", "fripon", b'{"name": "fripon", "source": {"include": ["nixpkgs=/n"]}}')
    monkeypatch.setattr(nix, "vm_info", lambda source: pytest.fail("evaluated"))
    monkeypatch.setattr(nix, "build", lambda *a, **kw: pytest.fail("built"))
    # deploy to it running
    monkeypatch.setattr(lifecycle, "running", lambda vmdir: (vmdir.load(), lifecycle.remote_for(vmdir, 2222)))
    for command in (["up", "fripon"], ["deploy", "fripon", "--yes"], ["promote", "fripon", "--to", "root@h", "--yes"]):
        assert main(*command) == ExitCode.USAGE, command
        message, hint = error_of(capsys)
        assert message == (
            "error: VM 'fripon' has no recorded configuration (its state.json names none): "
            "rehearse does not know what to build."
        )
        assert "`rehearse deploy fripon ./configuration.nix`" in hint and "`rehearse destroy fripon`" in hint
    assert d.file("state.json").read_bytes() == b'{"name": "fripon", "source": {"include": ["nixpkgs=/n"]}}'


@pytest.mark.parametrize(
    ("key", "shown"), [('"bad name!"', '"bad name!"'), ('"a\\nb"', '"a\\nb"'), ('".hidden"', '".hidden"')]
)
def test_a_promote_key_that_is_no_vm_name(cwd: Path, capsys: pytest.CaptureFixture[str], key: str, shown: str) -> None:
    (cwd / "rehearse.toml").write_text(f'[promote]\n{key} = "root@fripon.example.org"\n')
    assert main("promote", "fripon") == ExitCode.USAGE
    message, hint = error_of(capsys)
    assert message.startswith(f"error: rehearse.toml: promote.{shown}: invalid VM name ")
    assert hint.startswith("hint: use letters, digits")


def test_a_path_with_a_newline_is_shown_escaped(
    cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main("up", "./new\nline/configuration.nix") == ExitCode.USAGE
    message, _ = error_of(capsys)  # one line: the path cannot forge a second one
    assert message == f"error: {cwd}/new\\nline/configuration.nix: no such file."
    (cwd / "new\nline").mkdir()
    assert main("up", "./new\nline") == ExitCode.USAGE
    assert error_of(capsys)[0] == f"error: no configuration.nix in {cwd}/new\\nline, and no flake.nix."
    # What rehearse says of such a source later (building it, its errors) is on one line too.
    assert nix.Source(configuration=Path("/a\nb\x1b[2J/c.nix")).describe() == "/a\\nb\\u001b[2J/c.nix"
    assert nix.Source(flake="/x\ny", attr="a").describe() == "/x\\ny#a"

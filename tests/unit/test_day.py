"""A working day with rehearse (issue 24, items 3, 6, 10, 11, 13, 14): each
run in-process, as from the command line, with processes faked."""

from __future__ import annotations

from pathlib import Path

import pytest

from rehearse.core.errors import ExitCode
from rehearse.host import nix
from rehearse.store.state import VMDir, VMState
from tests.unit.test_clear_errors import error_of
from tests.unit.test_input import main


def made_from(root: Path, configuration: Path, name: str = "fripon") -> VMDir:
    d = VMDir(name, root)
    d.create()
    d.save(VMState(name=name, source={"configuration": str(configuration)}, runner="/nix/store/x-vm"))
    return d


def test_up_of_another_file_under_a_vms_name_says_so(
    cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 3: it used to say "nothing changed" (running) or start the VM of the first file."""
    (cwd / "configuration.nix").write_text("{ }")
    (cwd / "other.nix").write_text("{ }")
    d = made_from(cwd / "state", cwd / "configuration.nix")
    before = d.file("state.json").read_bytes()
    monkeypatch.setattr(nix, "vm_info", lambda source: nix.VMInfo("fripon", "fripon", True, [], []))
    monkeypatch.setattr(nix, "build", lambda *a, **kw: pytest.fail("built"))
    assert main("up", "./other.nix") == ExitCode.USAGE
    message, hint = error_of(capsys)
    assert message == (
        f"error: VM fripon was made from {cwd}/configuration.nix, not {cwd}/other.nix; nothing changed."
    )
    assert hint == (
        f"hint: `rehearse deploy fripon {cwd}/other.nix` switches fripon to it; "
        f"`rehearse up {cwd}/other.nix --name OTHER` makes another VM of it"
    )
    assert d.file("state.json").read_bytes() == before
    # Its own file still starts it (here: from its runner, which is not there: it would build).
    monkeypatch.setattr(nix, "build", lambda *a, **kw: (_ for _ in ()).throw(RuntimeError("would build")))
    assert main("up", "./configuration.nix") == ExitCode.FAILED
    assert "would build" in capsys.readouterr().err


def a_system(root: Path, port: int) -> Path:
    """A system whose server's sshd listens on `port`."""
    system = root / f"system-{port}"
    (system / "etc" / "ssh").mkdir(parents=True)
    (system / "etc" / "ssh" / "sshd_config").write_text(f"Port {port}\n")
    (system / "etc" / "systemd" / "system").mkdir(parents=True)
    (system / "etc" / "systemd" / "system" / "sshd.service").write_text("[Service]\n")
    return system


def test_status_shows_only_the_sshd_port_the_running_system_listens_on(
    cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 11: after a deploy moved sshd from 22 to 2022, the line of 22 stayed."""
    import os

    from rehearse.machines import lifecycle
    from rehearse.store.state import process_start

    monkeypatch.setattr(lifecycle, "unpause", lambda vmdir, state: False)
    d = made_from(cwd / "state", cwd / "configuration.nix")
    state = d.load()
    state.pid, state.pid_start, state.ssh_port = os.getpid(), process_start(os.getpid()), 2222
    state.server_ssh = [{"host": 2222 + 1, "guest": 22}, {"host": 2224, "guest": 2022}]
    state.system = str(a_system(cwd, 22))
    d.save(state)
    assert main("status") == ExitCode.OK
    out = capsys.readouterr().out
    assert "the server's own sshd (port 22) on 127.0.0.1:2223" in out and "port 2022" not in out
    state.system = str(a_system(cwd, 2022))  # the deploy that moved it
    d.save(state)
    assert main("status") == ExitCode.OK
    out = capsys.readouterr().out
    assert "the server's own sshd (port 2022) on 127.0.0.1:2224" in out and "port 22)" not in out

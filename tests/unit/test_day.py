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

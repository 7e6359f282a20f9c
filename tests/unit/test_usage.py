"""Issue 24, items 8 and 9: several names where several make sense (`down
web db`, `destroy web db`), and usage errors that say what was meant. Each
run in-process, as from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from rehearse.core.errors import ExitCode
from tests.unit.test_cli import stopped_vm
from tests.unit.test_input import main


@pytest.mark.parametrize("verb", ["down", "destroy"])
def test_down_and_destroy_take_several_names(cwd: Path, capsys: pytest.CaptureFixture[str], verb: str) -> None:
    web, db, other = (stopped_vm(cwd / "state", n) for n in ("web", "db", "other"))
    # a typo among them: named, with what was meant, before any VM is touched
    assert main(verb, "web", "dbb") == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "error: no VM named 'dbb'; did you mean db?" in err.splitlines(), err
    assert "web:" not in err and web.exists and db.exists
    assert main(verb, "web", "db", "--timeout", "1") == ExitCode.OK
    out, err = capsys.readouterr()
    assert out.startswith(f"{verb}: 2 VMs in ") and "web:" in err and "db:" in err
    assert (web.exists, db.exists) == ((True, True) if verb == "down" else (False, False))
    assert other.exists
    assert main(verb, "other", "--all") == ExitCode.USAGE  # names or --all, as before
    assert "error: give a VM's name or --all, not both." in capsys.readouterr().err


def test_an_unknown_flag_gets_its_commands_usage_and_the_closest_flag(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, usage, meant in (
        (["deploy", "fripon", "--yess"], "usage: rehearse deploy ", "; did you mean `--yes`?"),
        (["status", "--jsn"], "usage: rehearse status ", "; did you mean `--json`?"),
        (["down", "fripon", "--timout=3"], "usage: rehearse down ", "; did you mean `--timeout`?"),
        (["snapshots", "fripon", "--zzz"], "usage: rehearse snapshots ", ""),  # none close: none named
    ):
        assert main(*argv) == ExitCode.USAGE
        err = capsys.readouterr().err
        assert err.startswith(usage), err
        assert err.splitlines()[-1].endswith(f"error: unrecognized arguments: {argv[-1]}{meant}"), err


def test_an_unknown_vm_name_gets_the_closest_one(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stopped_vm(cwd / "state", "fripon")
    for argv in (["down", "fripno"], ["ssh", "fripom", "--", "true"], ["up", "friponn"]):
        assert main(*argv) == ExitCode.USAGE
        [line] = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error: ")]
        assert line.endswith("; did you mean fripon?"), line
    assert main("down", "zzzzzz") == ExitCode.USAGE  # nothing close: as before
    assert "error: no VM named 'zzzzzz'." in capsys.readouterr().err.splitlines()


def test_ssh_without_a_command_is_a_login(capsys: pytest.CaptureFixture[str]) -> None:
    """The usage line says the command is optional, and so does the error."""
    assert main("ssh") == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith(
        "usage: rehearse ssh [-h] [--debug] [-L SPEC] [-R SPEC] [-D SPEC] [-N] name [-- COMMAND ...]\n"
    ), err
    assert err.splitlines()[-1] == "rehearse ssh: error: the following arguments are required: name"

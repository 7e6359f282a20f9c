"""Errors a user hits with `rehearse up`: each says what to do and changes nothing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, fixed_fripon
from tests.e2e.conftest import Rehearse, include

pytestmark = pytest.mark.e2e


def test_missing_file(rehearse: Rehearse) -> None:
    result = rehearse("up", "/nonexistent/configuration.nix", *include())
    assert result.returncode == 2
    assert "/nonexistent/configuration.nix: no such file." in result.stderr
    assert "Traceback" not in result.stderr


def test_seed_conflict_gets_the_hint_and_nothing_is_made(rehearse: Rehearse) -> None:
    before = set(rehearse.state.iterdir()) if rehearse.state.exists() else set()
    result = rehearse("up", str(REPO / "examples" / "fripon" / "configuration.nix"), *include())
    assert result.returncode == 3
    err = result.stderr
    assert "The option `virtualisation.vmVariant.services.timesyncd.enable' has conflicting definition values:" in err
    assert "hint:" in err
    assert "services.timesyncd.enable = lib.mkDefault <value>;" in err
    assert "virtualisation.vmVariant.services.timesyncd.enable = lib.mkForce <value>;" in err
    assert "Traceback" not in err
    after = set(rehearse.state.iterdir()) if rehearse.state.exists() else set()
    assert after == before


def test_syntax_error_shows_file_and_line(rehearse: Rehearse, tmp_path: Path) -> None:
    conf = fixed_fripon(tmp_path)
    conf.write_text(conf.read_text().replace('networking.hostName = "fripon";', "networking.hostName = ;"))
    result = rehearse("up", str(conf), *include())
    assert result.returncode == 3
    assert "syntax error" in result.stderr
    assert f"{conf}:" in result.stderr
    assert "Traceback" not in result.stderr


def test_evaluation_error_shows_nix_message(rehearse: Rehearse, tmp_path: Path) -> None:
    conf = fixed_fripon(tmp_path, extra="  environment.etc.probe.text = undefinedThing;")
    result = rehearse("up", str(conf), *include())
    assert result.returncode == 3
    assert "undefined variable 'undefinedThing'" in result.stderr
    assert "Traceback" not in result.stderr


def test_nix_not_installed(rehearse: Rehearse, tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("ssh", "ssh-keygen"):
        os.symlink(shutil.which(tool) or tool, bindir / tool)
    env = rehearse.env(PATH=str(bindir))
    result = rehearse("up", str(REPO / "examples" / "fripon-vm" / "configuration.nix"), *include(), env=env)
    assert result.returncode == 1
    assert "nix-instantiate not found" in result.stderr
    assert "apt-get install nix-bin" in result.stderr


def test_no_nixpkgs(rehearse: Rehearse) -> None:
    env = rehearse.env(NIX_PATH="")
    result = rehearse("up", str(REPO / "examples" / "fripon-vm" / "configuration.nix"), env=env)
    assert result.returncode == 2
    assert "-I nixpkgs=PATH" in result.stderr


def test_vm_that_never_answers_ssh(rehearse: Rehearse, tmp_path: Path) -> None:
    # Also a state directory too deep for Unix socket paths (QMP, SSH master).
    deep = Rehearse(state=tmp_path / ("very-long-directory-name-" * 4) / "state", cwd=rehearse.cwd)
    # rehearse's management channel never starts (the server's sshd does not matter).
    mute = (
        '  virtualisation.vmVariant.systemd.services.rehearse-sshd.serviceConfig.ExecStart = lib.mkForce "/bin/false";'
    )
    conf = fixed_fripon(tmp_path, extra=mute)
    result = deep("up", str(conf), *include(), "--name", "mute", "--timeout", "20", timeout=300)
    assert result.returncode == 1
    assert "did not answer SSH on 127.0.0.1:" in result.stderr
    assert "within 20 s" in result.stderr
    assert "Last lines of its console:" in result.stderr
    assert "rehearse down mute" in result.stderr
    down = deep("destroy", "mute", "--timeout", "30")
    assert down.returncode == 0, down.stderr
    assert not (deep.state / "mute").exists()


def test_commands_on_unknown_or_stopped_vms(rehearse: Rehearse) -> None:
    for args in (
        ("deploy", "nosuchvm", "--yes"),
        ("ssh", "nosuchvm", "--", "true"),
        ("down", "nosuchvm"),
        ("generations", "nosuchvm"),
        ("rollback", "nosuchvm"),
        ("console", "nosuchvm"),
    ):
        result = rehearse(*args)
        assert result.returncode == 2, args
        assert "no VM named 'nosuchvm'" in result.stderr, (args, result.stderr)
        assert "rehearse up" in result.stderr or "rehearse status" in result.stderr
        assert "Traceback" not in result.stderr


def test_bad_flake_reference(rehearse: Rehearse, tmp_path: Path) -> None:
    result = rehearse("up", "--flake", str(tmp_path))
    assert result.returncode == 2
    assert "names no configuration" in result.stderr and "--flake PATH#NAME" in result.stderr
    result = rehearse("up", "--flake", f"{tmp_path}#fripon")
    assert result.returncode == 2
    assert "no flake.nix" in result.stderr


def test_up_of_a_name_that_is_no_vm(rehearse: Rehearse) -> None:
    result = rehearse("up", "neverseen")
    assert result.returncode == 2
    assert "no VM named 'neverseen', and no file 'neverseen'" in result.stderr
    assert "./configuration.nix" in result.stderr
    assert not (rehearse.state / "neverseen").exists()

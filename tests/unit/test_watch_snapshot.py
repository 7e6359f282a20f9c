"""deploy --watch and snapshots without a VM: what is watched, which events
count, Ctrl-C's deferral, and snapshot tags and records."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from rehearse import nix, snapshot, watch
from rehearse.errors import RehearseError


def test_the_tree_and_the_files_evaluated_outside_it_are_watched(tmp_path: Path) -> None:
    conf = tmp_path / "server" / "configuration.nix"
    common = tmp_path / "common" / "users.nix"
    nixpkgs = tmp_path / "nixpkgs"
    for f in (conf, common, nixpkgs / "lib" / "default.nix"):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("{ }")
    source = nix.Source(configuration=conf, include=(f"nixpkgs={nixpkgs}",))
    evaluated = [str(conf), str(common), str(nixpkgs / "lib" / "default.nix"), "/nix/store/abc-source/lib/x.nix"]
    scope = watch.watched(source, evaluated)
    assert scope.trees == [conf.parent] and scope.files == {common}
    assert scope.directories() == sorted([conf.parent, common.parent])
    assert scope.concerns(conf.parent / "sub" / "new.nix")  # a new file of the tree
    assert scope.concerns(common) and not scope.concerns(common.parent / "other.nix")
    assert not scope.concerns(nixpkgs / "lib" / "default.nix")


@pytest.mark.parametrize(
    ("name", "relevant"),
    [
        ("configuration.nix", True),
        (".configuration.nix.swp", False),
        ("configuration.nix~", False),
        (".#configuration.nix", False),
        ("4913", False),
        (".git/index", False),
    ],
)
def test_editor_files_are_no_change(tmp_path: Path, name: str, relevant: bool) -> None:
    assert watch._relevant(tmp_path / name) is relevant


def test_ctrl_c_waits_for_a_deploy_in_progress() -> None:
    i = watch.Interrupts()
    i.busy = True
    i(signal.SIGINT, None)  # deferred
    assert i.pending
    i.busy = False
    with pytest.raises(KeyboardInterrupt):
        i(signal.SIGINT, None)


@pytest.mark.parametrize("tag", ["before-migration", "20261127-223000", "v1.2_rc"])
def test_good_tags(tag: str) -> None:
    assert snapshot.check_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", "-x", "a b", "a/b", "x" * 65, "é"])
def test_bad_tags_are_usage_errors(tag: str) -> None:
    with pytest.raises(RehearseError, match="invalid snapshot tag") as e:
        snapshot.check_tag(tag)
    assert e.value.exit_code == 2


def test_a_snapshot_record_round_trips() -> None:
    s = snapshot.Snapshot("t", 1.5, "/nix/store/x-system", "/nix/store/y-vm", 4096, True)
    assert snapshot.Snapshot.from_json(s.to_json()) == s


def test_watch_needs_a_running_vm(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from rehearse.state import VMDir, VMState

    d = VMDir("fripon", tmp_path / "state")
    d.create()
    d.save(VMState(name="fripon", source={"configuration": "/srv/configuration.nix", "include": []}))
    result = subprocess.run(
        [sys.executable, "-m", "rehearse", "deploy", "fripon", "--watch"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "REHEARSE_STATE_DIR": str(tmp_path / "state")},
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert result.returncode == 6, result.stderr  # not running: nothing is watched
    assert "is not running" in result.stderr and "watching" not in result.stderr


@pytest.mark.parametrize("shielded", [True, False])
def test_a_streamed_child_is_shielded_from_the_terminals_ctrl_c(
    shielded: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deploy --watch: the activation's SSH session (process.stream) is in a
    process group of its own, which the terminal's Ctrl-C does not reach."""
    from rehearse import process

    monkeypatch.setattr(process, "shielded", shielded)
    with process.stream(["sh", "-c", "echo $$; exec sleep 30"]) as lines:
        child = int(next(iter(lines)))
        assert (os.getpgid(child) != os.getpgid(0)) is shielded

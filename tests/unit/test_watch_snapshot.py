"""deploy --watch and snapshots without a VM: what is watched, which events
count, Ctrl-C's deferral, and snapshot tags and records."""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rehearse.core.errors import RehearseError
from rehearse.fleets import watch
from rehearse.host import nix
from rehearse.machines import snapshot


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


class FakeEvents:
    """Saves, given to the watch as from the kernel: `save` queues a batch
    (a debounced burst) that the running watch yields."""

    def __init__(self) -> None:
        self.batches: queue.Queue[list[str]] = queue.Queue()
        self.watched: list[list[Path]] = []

    def save(self, *paths: Path) -> None:
        self.batches.put([str(p) for p in paths])

    def __call__(self, directories: list[Path], stop: threading.Event) -> Iterator[list[str]]:
        self.watched.append(directories)
        yield []  # in place
        while not stop.is_set():
            try:
                yield self.batches.get(timeout=0.05)
            except queue.Empty:
                yield []


def run_watch(conf: Path, during_first: list[list[Path]]) -> list[str]:
    """Watch conf's tree with fake events and a fake deploy; while the first
    deploy runs, the bursts of saves `during_first` come. Ctrl-C after 2 s
    (a deploy takes 0.3 s). What each deploy was for."""
    events = FakeEvents()
    interrupts = watch.Interrupts()
    deployed: list[str] = []

    def deploy_once(what: str, evaluated: set[str]) -> None:
        deployed.append(what)
        evaluated.add(str(conf))
        if len(deployed) == 1:
            for burst in during_first:
                events.save(*burst)
                time.sleep(0.1)  # one batch each
        time.sleep(0.3)

    ctrl_c = threading.Timer(2, lambda: setattr(interrupts, "pending", True))
    ctrl_c.start()
    changes = watch.Changes(events)
    try:
        watch.loop(changes, lambda ev: watch.watched(nix.Source(configuration=conf), ev), deploy_once, interrupts)
    finally:
        changes.close()
        ctrl_c.cancel()
    assert events.watched[0] == [conf.parent]  # watched from before the first deploy on
    return deployed


@pytest.fixture
def conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A configuration in a home that holds rehearse's state directory."""
    monkeypatch.setenv("REHEARSE_STATE_DIR", str(tmp_path / "home" / ".local" / "state" / "rehearse"))
    path = tmp_path / "home" / "configuration.nix"
    path.parent.mkdir()
    path.write_text("{ }")
    return path


def test_a_save_during_a_deploy_is_deployed_after_it(conf: Path) -> None:
    assert run_watch(conf, [[conf]]) == ["start", "configuration.nix"]


def test_several_saves_during_one_deploy_are_one_more_deploy(conf: Path) -> None:
    users = conf.parent / "users.nix"
    deployed = run_watch(conf, [[conf], [users], [conf, users]])
    assert deployed == ["start", "configuration.nix, users.nix"]


def test_no_save_no_deploy_but_the_first(conf: Path) -> None:
    swap = conf.parent / ".configuration.nix.swp"
    assert run_watch(conf, [[swap], [conf.parent.parent / "elsewhere.nix"]]) == ["start"]


def test_the_state_directory_is_no_change_inside_the_tree(conf: Path) -> None:
    console = conf.parent / ".local" / "state" / "rehearse" / "fripon" / "console.log"
    assert run_watch(conf, [[console], [console]]) == ["start"]
    assert run_watch(conf, [[console, conf]]) == ["start", "configuration.nix"]


def test_rehearses_own_files_are_no_change_even_inside_the_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    state = home / ".local" / "state" / "rehearse"
    monkeypatch.setenv("REHEARSE_STATE_DIR", str(state))
    conf = home / "configuration.nix"
    state.mkdir(parents=True)
    conf.write_text("{ }")
    scope = watch.watched(nix.Source(configuration=conf), [str(conf)])
    assert scope.trees == [home]
    assert scope.concerns(conf) and scope.concerns(home / "sub" / "new.nix")
    assert not scope.concerns(state / "fripon" / "console.log")
    assert not scope.concerns(Path(f"/tmp/rehearse-{os.getuid()}") / "0123-ssh")


def test_a_watch_that_fails_is_an_error_not_a_hang(conf: Path) -> None:
    def broken(directories: list[Path], stop: threading.Event) -> Iterator[list[str]]:
        yield []
        raise OSError(28, "inotify watch limit reached")

    changes = watch.Changes(broken)
    changes.follow([conf.parent])
    with pytest.raises(RehearseError, match=r"watching stopped: .*inotify watch limit reached"):
        changes.next(watch.watched(nix.Source(configuration=conf), []), watch.Interrupts())
    changes.close()


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

    from rehearse.store.state import RecordedSource, VMDir, VMState

    d = VMDir("fripon", tmp_path / "state")
    d.create()
    d.save(VMState(name="fripon", source=RecordedSource("/srv/configuration.nix")))
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
    from rehearse.host import process

    monkeypatch.setattr(process, "shielded", shielded)
    with process.stream(["sh", "-c", "echo $$; exec sleep 30"]) as lines:
        child = int(next(iter(lines)))
        assert (os.getpgid(child) != os.getpgid(0)) is shielded

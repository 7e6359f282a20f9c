"""`deploy --watch` end to end on one booted VM (issue 15): an edit is applied
within seconds of its save; a broken edit prints Nix's error and changes
nothing, and watching goes on; the next good edit is applied; a save during
a deploy is deployed after it; Ctrl-C during an activation lets it finish
before rehearse exits."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.e2e.conftest import Config, Rehearse, booted, oneshot

pytestmark = pytest.mark.e2e

NAME = "watched"


@dataclass
class Watcher:
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, after: int = 0, timeout: float = 120) -> int:
        """The index of the first line from `after` on that holds `text`."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for i, line in enumerate(self.lines[after:], after):
                if text in line:
                    return i
            if self.proc.poll() is not None and not any(text in line for line in self.lines[after:]):
                break
            time.sleep(0.1)
        raise AssertionError(f"no line with {text!r}; the output:\n" + "\n".join(self.lines))


@pytest.fixture(scope="module")
def vm(rehearse: Rehearse, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    yield from booted(rehearse, tmp_path_factory, NAME)


@pytest.fixture(scope="module")
def watcher(rehearse: Rehearse, vm: Config) -> Iterator[Watcher]:
    w = Watcher(rehearse.popen("deploy", NAME, "--watch", new_session=True))
    threading.Thread(target=w.read, daemon=True).start()
    w.wait_for("start:")  # the first deploy: what was saved before
    w.wait_for("watching")
    yield w
    if w.proc.poll() is None:
        os.killpg(w.proc.pid, signal.SIGKILL)
        w.proc.wait()


def etc(rehearse: Rehearse) -> str:
    return rehearse("ssh", NAME, "--", "cat /etc/watched 2>/dev/null || echo none").stdout.strip()


def current(rehearse: Rehearse) -> str:
    return rehearse("ssh", NAME, "--", "readlink /run/current-system").stdout.strip()


def edit(vm: Config, text: str) -> float:
    vm.set(f'  environment.etc."watched".text = "{text}";')
    return time.monotonic()


def test_an_edit_is_applied_seconds_after_its_save(rehearse: Rehearse, vm: Config, watcher: Watcher) -> None:
    mark = len(watcher.lines)
    saved = edit(vm, "v1")
    i = watcher.wait_for("extra.nix: deployed", mark)
    seconds = time.monotonic() - saved
    print(f"\nwatch: an edit was deployed {seconds:.1f} s after its save: {watcher.lines[i]}")
    assert etc(rehearse) == "v1"
    assert seconds < 60


def test_a_broken_edit_changes_nothing_and_watching_goes_on(rehearse: Rehearse, vm: Config, watcher: Watcher) -> None:
    before = current(rehearse)
    mark = len(watcher.lines)
    vm.extra.write_text("{ config, lib, ... }:\n{\n  this is not nix\n}\n")
    i = watcher.wait_for("does not build; the VM is unchanged", mark)
    assert "extra.nix" in watcher.lines[i]
    assert any("syntax error" in line or "error:" in line for line in watcher.lines[i:])
    assert current(rehearse) == before and etc(rehearse) == "v1"
    assert watcher.proc.poll() is None  # still watching
    mark = len(watcher.lines)
    edit(vm, "v2")
    watcher.wait_for("extra.nix: deployed", mark)
    assert etc(rehearse) == "v2"


def test_a_save_during_a_deploy_is_deployed_after_it(rehearse: Rehearse, vm: Config, watcher: Watcher) -> None:
    mark = len(watcher.lines)
    edit(vm, "v3")
    time.sleep(2)  # the change is seen (0.3 s debounce) and its deploy runs (about 7 s here)
    edit(vm, "v4")
    i = watcher.wait_for("extra.nix: deployed", mark)
    watcher.wait_for("extra.nix: deployed", i + 1)
    assert etc(rehearse) == "v4"


def test_ctrl_c_during_an_activation_lets_it_finish(rehearse: Rehearse, vm: Config, watcher: Watcher) -> None:
    """The terminal's Ctrl-C, sent while the switch runs (a unit that says so
    through the shared directory and takes its time), reaches rehearse alone:
    the activation's SSH session carries on to the verdict."""
    started = rehearse.state / NAME / "shared" / "activating"
    started.unlink(missing_ok=True)
    mark = len(watcher.lines)
    vm.set('  environment.etc."watched".text = "v5";\n' + oneshot("slowstart", "touch /tmp/shared/activating; sleep 8"))
    end = time.monotonic() + 120
    while not started.exists():
        assert time.monotonic() < end, "\n".join(watcher.lines[mark:])
        time.sleep(0.1)
    os.killpg(watcher.proc.pid, signal.SIGINT)  # as the terminal's Ctrl-C: to the whole process group
    code = watcher.proc.wait(timeout=180)
    time.sleep(0.5)
    text = "\n".join(watcher.lines[mark:])
    assert code == 130, text
    assert "the deploy in progress finishes" in text
    assert "extra.nix: deployed" in text and "stopped watching" in text
    assert "dropped during the activation" not in text  # the session was not cut
    assert etc(rehearse) == "v5"
    # Nothing was left pending: the next deploy has nothing to settle or do.
    result = rehearse("deploy", NAME, "--yes")
    assert result.returncode == 0 and "nothing to deploy" in result.stderr, result.stderr


def test_watch_refuses_dry_run_and_fleets(rehearse: Rehearse, vm: Config) -> None:
    for args in (["deploy", NAME, "--watch", "--dry-run"], ["deploy", "--all", "--watch"]):
        result = rehearse(*args)
        assert result.returncode == 2 and "--watch" in result.stderr, result.stderr

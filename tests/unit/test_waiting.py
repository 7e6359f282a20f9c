"""Issue 24, items 1, 2, 5, 7 and 12: what a user sees while rehearse waits,
when it is interrupted, and where its hints point."""

from __future__ import annotations

import dataclasses
import io
import re
import socket
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rehearse.config import Check, Settings
from rehearse.core import errors as activation_errors
from rehearse.core import output
from rehearse.core.errors import ExitCode, RehearseError
from rehearse.host import answers, ssh
from rehearse.host.plan import Units
from rehearse.pipeline import run as pipeline
from rehearse.pipeline.deploy import DeployRequest
from rehearse.pipeline.run import Words, where_to_look
from rehearse.targets import activation
from rehearse.targets.activation import Outcome
from rehearse.targets.target import VM, Activated, ActivateOptions, Pushed
from tests.unit.conftest import serving
from tests.unit.test_input import Clock, main, stopped_vm


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr("rehearse.targets.activation.time.monotonic", c.monotonic)
    monkeypatch.setattr("rehearse.targets.activation.time.sleep", c.sleep)
    return c


def terminal(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """stdout and stderr as one terminal shows them (live lines drawn),
    without colour (called in the test: pytest sets sys.stderr after fixtures)."""
    screen = io.StringIO()
    monkeypatch.setattr(sys, "stderr", screen)
    monkeypatch.setattr(sys, "stdout", screen)
    monkeypatch.setattr(output, "is_terminal", lambda stream=None: True)
    monkeypatch.setenv("NO_COLOR", "1")
    return screen


@pytest.fixture
def resetting_port(no_proxy: None) -> Iterator[int]:
    """A port that takes each connection and resets it at once, as QEMU's
    forwarding does when nothing listens in the guest."""

    def reset(conn: socket.socket) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # RST

    server = serving(reset)
    yield server.getsockname()[1]
    server.close()


def remote() -> ssh.Remote:
    return ssh.Remote("127.0.0.1", 2222, "root", Path("/nonexistent/k"), Path("/nonexistent/kh"), "rehearse-x")


# --- 1: waiting is visible -------------------------------------------------------------


def test_a_failing_check_shows_a_live_line_and_ends_in_plain_words(
    clock: Clock, monkeypatch: pytest.MonkeyPatch, resetting_port: int
) -> None:
    screen = terminal(monkeypatch)
    url = f"http://127.0.0.1:{resetting_port}/"
    why = activation.run_check(remote(), Check("http", url), deadline=clock.now + 6)
    shown = screen.getvalue()
    assert f"waiting for {url} — retrying, 6 s left" in shown
    assert f"waiting for {url} — retrying, 2 s left" in shown  # the time left counts down
    assert shown.endswith("\r\033[K") and output._live is None  # the line is gone at the end
    assert why is not None and why.startswith(f"http {url}: nothing answered")
    assert "Errno" not in why and "reset by peer" not in why


def test_off_a_terminal_the_wait_draws_nothing(
    clock: Clock, capsys: pytest.CaptureFixture[str], resetting_port: int
) -> None:
    why = activation.run_check(remote(), Check("tcp", "127.0.0.1:1"), deadline=clock.now + 4)
    assert why == "tcp 127.0.0.1:1: nothing listens on the port (connection refused)"
    assert capsys.readouterr().err == ""


def test_a_check_that_passes_at_once_shows_no_wait(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    screen = terminal(monkeypatch)
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert activation.run_check(remote(), Check("tcp", f"127.0.0.1:{port}"), deadline=clock.now + 6) is None
    assert "waiting" not in screen.getvalue()


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (ConnectionRefusedError(111, "Connection refused"), "nothing listens on the port (connection refused)"),
        (TimeoutError("timed out"), "no answer in time"),
        (OSError(113, "No route to host"), "no route to host"),
    ],
)
def test_a_tries_failure_in_plain_words(error: OSError, words: str) -> None:
    import urllib.error

    assert activation.plain_failure(error) == words
    assert activation.plain_failure(urllib.error.URLError(error)) == words  # as urllib wraps it


def test_an_http_error_status_is_said_as_the_answer() -> None:
    import urllib.error

    e = urllib.error.HTTPError("http://x/", 503, "Service Unavailable", {}, None)  # type: ignore[arg-type]
    assert activation.plain_failure(e) == "it answered 503 Service Unavailable"


# --- 12: live lines never collide with stdout ---------------------------------------------


def test_a_result_clears_the_live_lines_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal stdout and stderr share the screen: one stream for both
    here, as the user sees them."""
    screen = terminal(monkeypatch)
    with output.machine("web"):
        output.live("booting (21 s)")
        output.result("rehearse ssh web")
        shown = screen.getvalue()
        assert "(21 s)rehearse ssh web" not in shown
        assert "booting (21 s)\r\033[Krehearse ssh web\n" in shown  # the line cleared, then the result
        assert shown.endswith("web: booting (21 s)")  # and drawn again below it


# --- 5: hints point where the answer is --------------------------------------------------

JOURNAL = Words(
    "deploy", "dry run", "activate it?", "not activated", "the new configuration",
    hint="`rehearse console fripon` and the output above show what went wrong",
    journal="rehearse ssh fripon -- journalctl {units}",
)  # fmt: skip


def test_after_a_failed_unit_the_hint_names_its_log() -> None:
    failed = Outcome(False, 4, "rolled-back activation-exit-4 0", ["nginx.service"])
    assert where_to_look(JOURNAL, failed, Units()) == (
        "`rehearse ssh fripon -- journalctl -u nginx.service` shows why it failed"
    )


def test_after_a_failed_check_the_hint_names_what_the_switch_started() -> None:
    check = Outcome(False, 0, "rolled-back http http://127.0.0.1:8080/: nothing answered 0", [])
    units = Units(stop=("nginx.service",), start=("nginx.service", "app.service"), restart=("nginx.service",))
    assert where_to_look(JOURNAL, check, units) == (
        "`rehearse ssh fripon -- journalctl -u nginx.service -u app.service` shows what the switch started"
    )
    assert where_to_look(JOURNAL, check, Units()) == "`rehearse ssh fripon -- journalctl -b -n 50` shows what happened"


def test_other_rollbacks_keep_the_console_hint() -> None:
    lost = Outcome(False, 0, "rolled-back not-confirmed 0", [])
    assert where_to_look(JOURNAL, lost, Units()) == JOURNAL.hint
    no_journal = dataclasses.replace(JOURNAL, journal=None)  # a server's promote
    assert where_to_look(no_journal, Outcome(False, 4, "rolled-back x 0", ["a.service"]), None) == JOURNAL.hint


def test_a_deploys_rolled_back_error_carries_the_units_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At the pipeline: the error's hint, not the boot console."""
    from tests.unit.test_pipeline import CURRENT, SYSTEM, Fake, deployed, job

    with pytest.raises(RehearseError) as e:
        pipeline.run(Fake(tmp_path, units=Units(), ok=False), job(words=JOURNAL), deployed(), CURRENT, SYSTEM)
    assert e.value.hint == "`rehearse ssh fripon -- journalctl -u a.service` shows why it failed"


# --- 2: Ctrl-C says where the VM is ------------------------------------------------------


def test_ctrl_c_before_the_activation_says_the_vm_runs_its_old_system(
    cwd: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stopped_vm(cwd / "state")

    def interrupted(vmdir: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(VM, "running", interrupted)
    assert main("deploy", "fripon", "--yes") == ExitCode.INTERRUPTED
    err = capsys.readouterr().err
    assert "error: interrupted: fripon still runs its old system: nothing was activated\n" in err


def activation_interrupted(
    monkeypatch: pytest.MonkeyPatch, clock: Clock, markers: list[str], after: float = 0
) -> activation_errors.Interrupted:
    """An activation whose guest said `markers` (rc=…, result=…), then Ctrl-C
    `after` seconds later."""
    monkeypatch.setattr(activation.secrets, "token_hex", lambda n: "n0nce")
    monkeypatch.setattr(activation.output, "info", lambda text: None)

    class Stream:
        def __enter__(self) -> Stream:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def __iter__(self) -> Iterator[str]:
            for m in markers:
                yield f"@@rehearse-n0nce {m}"
            clock.now += after
            raise KeyboardInterrupt

        def send(self, text: str) -> bool:
            return True

    def verdict(*args: object, **kw: object) -> activation.Verdict:
        return activation.Verdict(None, None)  # the word sent; the verdict would follow in the log

    monkeypatch.setattr(activation.process, "stream", lambda *a, **kw: Stream())
    monkeypatch.setattr(activation, "verify_and_confirm", verdict)
    with pytest.raises(activation_errors.Interrupted) as e:
        activation.activate(remote(), "/nix/store/" + "s" * 32 + "-new", 60, activation.Verify())
    return e.value


def test_ctrl_c_after_the_switch_says_when_the_vm_rolls_itself_back(
    monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    e = activation_interrupted(monkeypatch, clock, ["generation=3", "failed=", "rc=0"], after=2)
    assert e.where == "the VM x runs the new system unconfirmed; it rolls itself back in 58 s"
    assert e.hint is not None and "the next deploy (or promote) settles it" in e.hint


@pytest.mark.parametrize(
    ("markers", "says"),
    [
        (["generation=3"], "the VM x was switching to the new system; unless confirmed, it rolls itself back 60 s "),
        (["generation=3", "rc=4"], "the switch failed on the VM x; it is rolling back to its old system"),
    ],
)
def test_ctrl_c_during_the_switch(monkeypatch: pytest.MonkeyPatch, clock: Clock, markers: list[str], says: str) -> None:
    assert activation_interrupted(monkeypatch, clock, markers).where.startswith(says)


@pytest.mark.parametrize(
    ("result", "says"),
    [
        ("confirmed", "fripon runs the new system (confirmed)"),
        ("rolled-back not-confirmed 0", "fripon was rolled back: it runs its old system again"),
        ("kept activation-exit-4", "fripon runs the new system, kept as --keep-failed asked (not confirmed)"),
        ("reboot-required 100", "fripon still runs its old system; its next start boots the new one"),
    ],
)
def test_after_the_verdict_ctrl_c_says_it(result: str, says: str) -> None:
    assert activation.after("fripon", result) == says


def test_an_interrupted_with_its_words_is_printed_with_its_hint(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def deploy(request: object) -> None:
        raise activation_errors.Interrupted("fripon runs the new system unconfirmed; it rolls itself back in 58 s", "h")

    monkeypatch.setattr("rehearse.pipeline.deploy.run_deploy", deploy)
    monkeypatch.setattr("rehearse.config.load_settings", lambda *a, **kw: Settings())
    assert main("deploy", "fripon", "--yes") == ExitCode.INTERRUPTED
    err = capsys.readouterr().err
    assert "error: interrupted: fripon runs the new system unconfirmed; it rolls itself back in 58 s\nhint: h\n" in err


# --- 7: keep a failing system to look at it ---------------------------------------------


def test_keep_failed_reaches_the_activation(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[DeployRequest] = []

    def deploy(request: DeployRequest) -> None:
        seen.append(request)
        raise RehearseError("stop here")

    monkeypatch.setattr("rehearse.pipeline.deploy.run_deploy", deploy)
    monkeypatch.setattr("rehearse.config.load_settings", lambda *a, **kw: Settings())
    main("deploy", "fripon", "--keep-failed")
    main("deploy", "fripon")
    assert [r.keep_failed for r in seen] == [True, False]


def test_the_activation_asks_the_guest_to_keep_a_failure(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    argvs: list[list[str]] = []

    def stream(argv: list[str], **kw: object) -> object:
        argvs.append(argv)
        raise KeyboardInterrupt

    monkeypatch.setattr(activation.process, "stream", stream)
    for keep in (True, False):
        with pytest.raises(KeyboardInterrupt):
            activation.activate(remote(), "/nix/store/x", 60, activation.Verify(), keep_failed=keep)
    kept, plain = (" ".join(a) for a in argvs)
    assert "'--keep-failed /run/rehearse/" in kept and "--keep-failed" not in plain


KEPT = Outcome(False, 4, "kept activation-exit-4", ["nginx.service"], generation=8)


def test_a_kept_failure_says_so_and_how_to_roll_back(tmp_path: Path) -> None:
    from tests.unit.test_pipeline import CURRENT, SYSTEM, Fake, deployed, job

    class Kept(Fake):
        def activate(
            self, system: Path, pushed: Pushed, verify: activation.Verify, options: ActivateOptions
        ) -> Activated:
            assert options.keep_failed
            return Activated(KEPT, pushed)

    words = dataclasses.replace(JOURNAL, undo="rehearse rollback fripon")
    j = job(words=words, activate=ActivateOptions(30.0, keep_failed=True))
    with pytest.raises(RehearseError) as e:
        pipeline.run(Kept(tmp_path, units=Units()), j, deployed(), CURRENT, SYSTEM)
    assert e.value.exit_code == ExitCode.ROLLED_BACK  # the failure's, as without --keep-failed
    assert e.value.message == (
        "the new configuration failed (switch-to-configuration exited 4 — failed units: nginx.service) and was kept, "
        "as --keep-failed asked: fripon runs it, unconfirmed."
    )
    assert e.value.hint == (
        "`rehearse rollback fripon` goes back to nixos-system-fripon-25.11; "
        "`rehearse ssh fripon -- journalctl -u nginx.service` shows why it failed"
    )
    doc = e.value.as_report()
    assert (doc["result"], doc["reason"], doc["generation"]) == ("kept", "activation-exit-4", 8)


def test_the_guest_may_answer_kept() -> None:
    assert answers.result("the VM x", "kept failed units: a.service") == "kept failed units: a.service"
    assert KEPT.kept and KEPT.reason == "activation-exit-4" and not KEPT.ok


# --- 1 and 12 on a real (pseudo-)terminal --------------------------------------------------


def on_a_screen(code: str) -> str:
    """What a terminal shows of `code` run by Python with stdout and stderr
    on a new pseudo-terminal (as a user's shell runs rehearse)."""
    import os
    import pty
    import select
    import subprocess

    master, slave = pty.openpty()
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    with subprocess.Popen([sys.executable, "-c", code], stdout=slave, stderr=slave, env=env) as p:
        os.close(slave)
        shown = b""
        while True:
            if select.select([master], [], [], 30)[0]:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the other end closed
                    break
                if not chunk:
                    break
                shown += chunk
            elif p.poll() is not None:
                break
        p.wait(timeout=30)
    os.close(master)
    return shown.decode()


def test_the_wait_and_a_result_on_a_terminal(resetting_port: int) -> None:
    url = f"http://127.0.0.1:{resetting_port}/"
    shown = on_a_screen(
        "import time\n"
        "from rehearse.config import Check\n"
        "from rehearse.core import output\n"
        "from rehearse.targets import activation\n"
        f"why = activation.run_check(None, Check('http', '{url}'), time.monotonic() + 3)\n"
        "output.warn('check failed: ' + why)\n"
        "with output.machine('web'):\n"
        "    output.live('booting (21 s)')\n"
        "    output.result('rehearse ssh web')\n"
    )
    assert re.search(rf"waiting for {re.escape(url)} — retrying, [1-3] s left", shown), shown
    assert f"\r\033[Kwarning: check failed: http {url}: nothing answered" in shown  # the live line cleared first
    assert "(21 s)rehearse ssh web" not in shown and "\r\033[Krehearse ssh web" in shown, shown

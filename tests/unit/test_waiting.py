"""Issue 24, items 1, 2, 5, 7 and 12: what a user sees while rehearse waits,
when it is interrupted, and where its hints point."""

from __future__ import annotations

import dataclasses
import io
import socket
import struct
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from rehearse.config import Check
from rehearse.core import output
from rehearse.core.errors import RehearseError
from rehearse.host import ssh
from rehearse.host.plan import Units
from rehearse.pipeline import run as pipeline
from rehearse.pipeline.run import Words, where_to_look
from rehearse.targets import activation
from rehearse.targets.activation import Outcome


class Clock:
    """time.monotonic and time.sleep for run_check, without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


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
def resetting_port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A port that takes each connection and resets it at once, as QEMU's
    forwarding does when nothing listens in the guest."""
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()  # RST

    threading.Thread(target=serve, daemon=True).start()
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

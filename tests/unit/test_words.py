"""Issue 24, item 15: the words a user reads. No internal tokens (the guest's
verdicts keep theirs in --json), plurals right, no library's log lines, and a
taken host port says who holds it."""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from pathlib import Path

import pytest

from rehearse.core import output
from rehearse.core.errors import ExitCode, RehearseError
from rehearse.fleets import fleet, watch
from rehearse.host import answers, qemu
from rehearse.machines import lifecycle
from rehearse.pipeline.run import rolled_back
from rehearse.store.state import VMState, process_start
from rehearse.targets.activation import Outcome
from tests.unit.test_cli import stopped_vm

TOKENS = ("activation-exit", "not-confirmed", "superseded", "rolled-back")


@pytest.mark.parametrize(
    ("verdict", "words"),
    [
        ("rolled-back activation-exit-4 0", "switch-to-configuration exited 4"),
        ("rolled-back activation-timeout-600s 0", "switch-to-configuration ran longer than 600 s"),
        ("rolled-back not-confirmed 0", "no confirmation came in time"),
        ("rolled-back superseded 0", "another activation took its place"),
        ("rolled-back check failed: port 80 is closed 0", "check failed: port 80 is closed"),
    ],
)
def test_a_rollback_says_why_in_words(verdict: str, words: str) -> None:
    outcome = Outcome(False, 4, verdict, ["web.service"])
    message = rolled_back("the deploy", "fripon", "/nix/store/" + "a" * 32 + "-nixos-system-x", outcome)
    assert f"({words} — failed units: web.service)" in message
    assert not any(t in message for t in TOKENS), message
    assert outcome.report()["reason"] == verdict.removeprefix("rolled-back ")  # --json keeps the guest's words
    settled = answers.settled("fripon", f"settled 20261127-1 {verdict}\n")
    assert settled.messages[0].endswith(f"It was rolled back first ({words}).")


def test_counts_are_plural_only_when_more_than_one(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert [output.counted(n, "machine") for n in (0, 1, 2)] == ["0 machines", "1 machine", "2 machines"]
    assert fleet.every_vm("down", ["web"], lambda name: None) == ExitCode.OK
    assert capsys.readouterr().out.startswith("down: 1 VM in ")


def test_the_watchs_library_logs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stop = threading.Event()
    stop.set()
    list(watch.kernel_events([tmp_path], stop))
    logging.getLogger("watchfiles.main").warning("KeyboardInterrupt caught, stopping watch")  # as watchfiles says it
    assert capsys.readouterr().err == ""


def test_a_taken_port_says_who_holds_it(cwd: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        holder = qemu.port_holder(port)
        assert holder is not None and holder.endswith(f"(pid {os.getpid()})")
        with pytest.raises(RehearseError, match=rf"^port {port} on 127.0.0.1 is taken by {re.escape(holder)}: "):
            lifecycle.check_forwards([qemu.Forward(port, 80)])
        # a VM of rehearse's that runs with it is named instead
        d = stopped_vm(cwd / "state", "web")
        d.save(VMState(name="web", pid=os.getpid(), pid_start=process_start(os.getpid()), ssh_port=port))
        with pytest.raises(RehearseError, match=rf"^port {port} on 127.0.0.1 is taken by VM web: "):
            lifecycle.check_forwards([qemu.Forward(port, 80)])

"""Nix's build progress on screen, as nix-output-monitor and nh show it.

On a terminal: one live status line (builds done/expected, what runs, bytes
copied). Otherwise: a plain line when a derivation starts and when it is
built, no more (a log of CI must stay readable). Build logs are kept, not
shown (with -L or --debug they are); a failed build shows the tail of its log.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from rehearse.core import output
from rehearse.host.progress import Event, Failed, Finished, LogLine, Message, Started, Status, Tracker


def size(n: int) -> str:
    return f"{n / 1024:.0f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB"


def status_line(s: Status) -> str:
    """`building 3/12 (running 1: openssh-9.2p1 [buildPhase]) · copied 12.3 of 80.0 MiB`."""
    parts = []
    # Builds' `expected` counts derivations that may yet be fetched instead
    # (it falls when they are): shown once a build has run.
    if s.expected and (s.running or s.done or s.failed):
        names = ", ".join(r.name + (f" [{r.phase}]" if r.phase else "") for r in s.running)
        parts.append(
            f"building {s.done}/{s.expected}"
            + (f" (running {len(s.running)}: {names})" if s.running else "")
            + (f", {s.failed} failed" if s.failed else "")
        )
    if s.copied or s.copy_expected:
        total = f" of {size(s.copy_expected)}" if s.copy_expected >= s.copied else ""
        parts.append(f"copied {size(s.copied)}{total}")
    if not parts and s.evaluating:
        parts.append(f"evaluating {s.evaluating}")
    return " · ".join(parts)


class Renderer:
    """Shows Nix's progress through `output`: give it to `process.run` as
    on_stderr, then call `close` (and `summary` if Nix succeeded). Its
    tracker keeps what the caller needs after (Nix's error as plain text)."""

    def __init__(
        self, *, interval: float = 0.1, clock: Callable[[], float] = time.monotonic, build_logs: bool = False
    ) -> None:
        self.tracker = Tracker()
        self._build_logs = build_logs  # -L: every line of every build's log, as it comes
        self._terminal = output.is_terminal()
        self._interval, self._clock = interval, clock  # a copy's Progress comes every 64 KiB: redraw less often
        self._drawn = -math.inf

    def __call__(self, line: str) -> None:
        events = self.tracker.feed(line)
        for event in events:
            self._show(event)
        now = self._clock()
        if self._terminal and (
            now - self._drawn >= self._interval or any(isinstance(e, Started | Finished | Failed) for e in events)
        ):
            text = status_line(self.tracker.status())
            if text:
                output.live(text)
                self._drawn = now

    def close(self) -> None:
        """Remove the status line (before anything else is printed)."""
        output.live_end()

    def summary(self) -> None:
        """One line of what the build did, where the status line was."""
        t = self.tracker
        built, copied = len(t.built), t.status().copied
        done = [f"built {built} derivation{'s' * (built != 1)}"] if built else []
        if t.paths_copied:
            done.append(
                f"copied {t.paths_copied} path{'s' * (t.paths_copied != 1)}" + f" ({size(copied)})" * bool(copied)
            )
        if done:
            output.info(", ".join(done))

    def _show(self, event: Event) -> None:
        match event:
            case Started(name) if not self._terminal:
                output.info(f"building {name}")
            case Finished(name) if not self._terminal:
                output.info(f"built {name}")
            case Failed(name, log) if self._build_logs:  # its log is on screen already
                output.info(output.style(f"{name} failed to build", "red", "bold"))
            case Failed(name, log):
                tail = f"; the last {len(log)} lines of its log:" if log else ", printing nothing"
                output.info(output.style(f"{name} failed to build", "red", "bold") + tail)
                for text in log:
                    output.info("  " + text)
            case LogLine(name, text) if self._build_logs:
                output.info(f"{name}> {text}")  # as `nix build -L` prints them
            case LogLine(name, text):
                output.debug(f"{name}> {text}")  # with --debug only: kept for a failure otherwise
            case Message(_, text, True):
                output.info(text)
            case Message(1, text):
                output.warn(text.removeprefix("warning: "))
            case Message(0, text) if text.startswith("trace: evaluation warning: "):
                # lib.warn (NixOS's `warnings`) under a Nix without builtins.warn: worded as Nix words it
                output.info(
                    output.style("evaluation warning:", "yellow", "bold") + text[len("trace: evaluation warning:") :]
                )
            case Message(0, text) if text.startswith("trace: warning: "):  # older nixpkgs
                output.warn(text[len("trace: warning: ") :])
            case Message(0, text) if text.startswith("trace: "):
                output.info(text)
            case Message(2 | 3, text):
                output.debug(text)  # the list of what will be built or fetched
            # Errors (level 0) reach the user through the caller's exception.

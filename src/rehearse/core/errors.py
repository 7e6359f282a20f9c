"""The one error type of rehearse, and the exit codes main() turns it into."""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """rehearse's exit codes (listed in `rehearse --help` and the README)."""

    OK = 0
    FAILED = 1  # anything else: a program rehearse ran failed, the VM did not boot …
    USAGE = 2  # bad arguments or rehearse.toml, an unknown VM (argparse uses 2 too)
    CONFIG = 3  # the configuration does not evaluate or does not build
    ROLLED_BACK = 4  # the new system was activated, then rolled back
    DECLINED = 5  # "activate it?" was answered no
    NOT_RUNNING = 6  # the VM is not running
    BUSY = 7  # another rehearse command holds the VM
    REBOOT_REQUIRED = 8  # switch-to-configuration exited 100: the new system takes effect after a restart
    NOT_REHEARSED = 9  # promote: the VM never ran and confirmed this revision of the configuration
    PARTIAL = 10  # a fleet command failed on some machines and succeeded on the others
    BAD_ANSWER = 11  # a VM or server answered something rehearse does not take (answers.py)
    INTERRUPTED = 130  # Ctrl-C

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


_MEANINGS = {
    ExitCode.OK: "success (also: nothing to do)",
    ExitCode.FAILED: "failure not listed below",
    ExitCode.USAGE: "bad arguments, bad rehearse.toml or an unknown VM; or a command that asks first (promote, "
    "rollback --server, destroy --all) without a terminal and without --yes; nothing changed",
    ExitCode.CONFIG: "the configuration does not evaluate or build; the VM was not touched",
    ExitCode.ROLLED_BACK: "the new system was activated, failed its checks and was rolled back",
    ExitCode.DECLINED: "the plan (or destroy --all) was declined at the prompt; nothing changed",
    ExitCode.NOT_RUNNING: "the VM is not running",
    ExitCode.BUSY: "another rehearse command is working on the VM (or on the fleet's hub)",
    ExitCode.REBOOT_REQUIRED: "the new system needs a restart of the VM (switch-to-configuration exited 100)",
    ExitCode.NOT_REHEARSED: "promote: the VM never ran and confirmed this revision; nothing was sent to the server",
    ExitCode.PARTIAL: "a command over several machines failed on some of them (its summary names them) "
    "and succeeded on the others",
    ExitCode.BAD_ANSWER: "a VM or a server answered something that is not what was asked (a store path, a "
    "number, a unit's name …); nothing was done with it",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
}


def exit_codes_text() -> str:
    """The table for `rehearse --help`."""
    return "exit codes:\n" + "\n".join(f"  {int(c):>3}  {c.meaning}" for c in ExitCode)


_LINE_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def escape_char(c: str) -> str:
    """One character as a message shows it: as it is when it prints, else
    escaped (a newline as \\n, others as \\uXXXX)."""
    if c.isprintable():
        return c
    return _LINE_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}")


def one_line(text: str) -> str:
    """`text` (a path, a name the user gave) on one line of a message: every
    character that does not print is escaped, so a newline in a path can
    neither break the message nor forge a line of it. NEL and the Unicode
    line separators too, which end a line for some terminals."""
    return text if text.isprintable() else "".join(map(escape_char, text))


def closest(word: str, known: Iterable[str]) -> str | None:
    """The one of `known` that `word` was most likely meant to be (a typo),
    for "did you mean …?"; None when none is close."""
    matches = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """The end of a sentence that names an unknown `word`: "; did you mean
    fripon?" when one of `known` is close, else "."."""
    meant = closest(word, known)
    return f"; did you mean {meant}?" if meant else "."


class RehearseError(Exception):
    """An error the user can act on. main() prints it and exits with `exit_code`."""

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        exit_code: ExitCode = ExitCode.FAILED,
        report: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code
        self.report = report  # what a deploy/rollback had done when it failed, for --json

    def as_report(self) -> dict[str, Any]:
        """The --json document of a command that ended in this error."""
        report = dict(self.report or {})
        report.update(
            result=report.get("result", "error"), error=self.message, hint=self.hint, exit_code=int(self.exit_code)
        )
        return report

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\nhint: {self.hint}"
        return self.message


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with where it left the machine ("fripon runs the new system
    unconfirmed; it rolls itself back in 58 s"): main() says it instead of
    a bare "interrupted". A KeyboardInterrupt still, so whatever stops on
    Ctrl-C (deploy --watch, a fleet) stops on it too."""

    def __init__(self, where: str, hint: str | None = None) -> None:
        super().__init__(where)
        self.where = where
        self.hint = hint


@dataclass
class Whereabouts:
    """Where a command has left the machine so far (said if Ctrl-C comes)."""

    where: str
    hint: str | None = None


@contextlib.contextmanager
def saying_where(where: str) -> Iterator[Whereabouts]:
    """A Ctrl-C in the block becomes an Interrupted that says the
    Whereabouts' last word (the block updates it as it goes); one already
    saying more (from deeper down) goes through as it is."""
    said = Whereabouts(where)
    try:
        yield said
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise Interrupted(said.where, said.hint) from None

"""Everything rehearse prints goes through here.

stdout carries results only (`status`, `--json` documents, the next command
to type), so they can be piped; progress, warnings and errors go to stderr.
Colour and the live status line appear only when stderr is a terminal, and
colour never when NO_COLOR is set (https://no-color.org). With --debug,
every command rehearse runs is shown, as a shell line one can paste.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from typing import Final, TextIO

_CODES: Final = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "blue": "34", "cyan": "36"}

_debug = False
_live: str | None = None  # the status line now shown at the bottom of a terminal


def configure(*, debug: bool) -> None:
    global _debug
    _debug = debug


def debugging() -> bool:
    return _debug


def is_terminal(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def color_enabled(stream: TextIO | None = None) -> bool:
    return "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb" and is_terminal(stream)


def style(text: str, *styles: str, stream: TextIO | None = None) -> str:
    """`text` in the given styles when `stream` (stderr by default) shows colour."""
    if not styles or not color_enabled(stream):
        return text
    codes = ";".join(_CODES[s] for s in styles)
    return f"\033[{codes}m{text}\033[0m"


def _write(text: str) -> None:
    """A line on stderr, above the live status line if there is one."""
    err = sys.stderr
    if _live is not None:
        err.write("\r\033[K")
    err.write(text + "\n")
    if _live is not None:
        err.write(_fit(_live))
    err.flush()


def info(message: str) -> None:
    """Progress: what rehearse is doing, on stderr."""
    _write(message)


def step(message: str) -> None:
    """The start of a step of a command (build, plan, activate …), in bold."""
    _write(style(message, "bold"))


def success(message: str) -> None:
    _write(style(message, "green", "bold"))


def warn(message: str) -> None:
    _write(style("warning:", "yellow", "bold") + " " + message)


def error(message: str, hint: str | None = None) -> None:
    _write(style("error:", "red", "bold") + " " + message)
    if hint:
        _write(style("hint:", "cyan", "bold") + " " + hint)


def debug(message: str) -> None:
    """Shown with --debug only."""
    if _debug:
        _write(style(message, "dim"))


def command(line: str) -> None:
    """A command rehearse runs (a shell line), shown with --debug."""
    debug(f"$ {line}")


def result(text: str) -> None:
    """A result, on stdout."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def ask(question: str) -> str:
    """Ask on the terminal: the question on stderr (stdout stays for
    results), the answer from stdin."""
    live_end()
    sys.stderr.write(style(question, "bold") + " ")
    sys.stderr.flush()
    return sys.stdin.readline()


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Text from the guest, with control characters shown as escapes: a
    guest must not move the cursor or retitle the user's terminal."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def _fit(text: str) -> str:
    width = shutil.get_terminal_size((100, 24)).columns
    return text if len(text) < width else text[: max(width - 2, 1)] + "…"


def live(text: str) -> None:
    """Show (or replace) the status line at the bottom of a terminal; does
    nothing when stderr is not a terminal (callers print plain lines then)."""
    global _live
    if not is_terminal():
        return
    _live = text
    sys.stderr.write("\r\033[K" + _fit(text))
    sys.stderr.flush()


def live_end() -> None:
    """Remove the status line."""
    global _live
    if _live is not None:
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()
        _live = None

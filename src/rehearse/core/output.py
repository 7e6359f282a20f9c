"""Everything rehearse prints goes through here.

stdout carries results only (`status`, `--json` documents, the next command
to type), so they can be piped; progress, warnings and errors go to stderr.
Colour and the live status line appear only when stderr is a terminal, and
colour never when NO_COLOR is set (https://no-color.org). With --debug,
every command rehearse runs is shown, as a shell line one can paste.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Final, ParamSpec, TextIO, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

_CODES: Final = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "blue": "34", "cyan": "36"}

_debug = False
_live: str | None = None  # the status line now shown at the bottom of a terminal

# A fleet command runs one thread per machine: each prints its lines under
# the machine's name, and has its own live line (all are shown at the
# bottom, one per machine). One lock orders the writes.
_quiet = False  # progress is not shown (deploy --watch prints a line per deploy)
_lock = threading.RLock()
_local = threading.local()
_lives: dict[str, str] = {}  # machine → its live line
_shown = 0  # how many live lines are on the screen


@contextlib.contextmanager
def machine(name: str) -> Iterator[None]:
    """What this thread prints is machine `name`'s."""
    _local.machine = name
    try:
        yield
    finally:
        _local.machine = None
        with _lock:
            if _lives.pop(name, None) is not None:
                _render()


def _machine() -> str | None:
    return getattr(_local, "machine", None)


def bound(fn: Callable[P, R]) -> Callable[P, R]:
    """`fn`, printing under this thread's machine from whichever thread runs
    it (a reader of a process's output, a pool's worker)."""
    name = _machine()
    if name is None:
        return fn

    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        _local.machine = name
        try:
            return fn(*args, **kwargs)
        finally:
            _local.machine = None

    return run


def counted(n: int, noun: str) -> str:
    """`1 machine`, `2 machines`: a count and its noun, plural as English wants."""
    return f"{n} {noun}{'s' * (n != 1)}"


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


_STYLE = re.compile(r"\033\[[0-9;]*m")


def _names(line: str, name: str) -> bool:
    """Whether a line begins with the machine's name already ("db is up …")."""
    return re.match(re.escape(name) + r"[: ]", _STYLE.sub("", line)) is not None


def _lines() -> list[str]:
    """The live lines to show: the command's, or one per machine."""
    if _lives:
        return [f"{name}: {text}" for name, text in _lives.items()]
    return [_live] if _live is not None else []


def _clear() -> None:
    """Remove the live lines shown (one: the line; several: up to the first)."""
    global _shown
    if _shown == 1:
        sys.stderr.write("\r\033[K")
    elif _shown > 1:
        sys.stderr.write("\r" + "\033[F" * (_shown - 1) + "\033[J")
    _shown = 0


def _render() -> None:
    """Show the live lines at the bottom of the terminal, in place of the ones shown."""
    global _shown
    lines = _lines()
    if _shown == 0 and lines:
        sys.stderr.write("\r\033[K")
    _clear()
    sys.stderr.write("\n".join(_safe(_fit(line)) for line in lines))
    _shown = len(lines)
    sys.stderr.flush()


def _write(text: str) -> None:
    """A line on stderr (with the machine's name first, in a fleet command),
    above the live status lines if there are any."""
    name = _machine()
    if name is not None:
        tag = style(f"{name}:", "cyan")
        text = "\n".join(line if _names(line, name) else f"{tag} {line}" for line in text.split("\n"))
    with _lock:
        err = sys.stderr
        _clear()
        err.write(_safe(text) + "\n")
        if _lines():
            _render()
        err.flush()


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Progress (info, steps, successes, live lines) is not shown; warnings
    and errors are."""
    global _quiet
    _quiet = True
    try:
        yield
    finally:
        _quiet = False


def info(message: str) -> None:
    """Progress: what rehearse is doing, on stderr."""
    if not _quiet:
        _write(message)


def step(message: str) -> None:
    """The start of a step of a command (build, plan, activate …), in bold;
    in a fleet command, also the machine's live line until the next."""
    if _quiet:
        return
    _write(style(message, "bold"))
    if _machine() is not None:
        live(message)


def success(message: str) -> None:
    if not _quiet:
        _write(style(message, "green", "bold"))


def line(message: str) -> None:
    """A line that is shown even when progress is not (deploy --watch's own)."""
    _write(message)


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
    """A result, on stdout. The live lines (stderr) are cleared first and
    shown again after it: on a terminal both streams share the screen."""
    text = _safe(text)
    with _lock:
        _clear()
        sys.stderr.flush()
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
        if _lines():
            _render()


def ask(question: str) -> str:
    """Ask on the terminal: the question on stderr (stdout stays for
    results), the answer from stdin."""
    live_end()
    sys.stderr.write(style(_safe(question), "bold") + " ")
    sys.stderr.flush()
    return sys.stdin.readline()


# Control characters, and the Unicode ones that reorder or break what a
# terminal shows (bidirectional overrides, line and paragraph separators).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# rehearse's own colours (style()), the only escape sequences it prints.
_OWN_OR_CONTROL = re.compile(r"\033\[[0-9;]*m|" + _CONTROL.pattern)


def printable(text: str) -> str:
    """Text from a guest or a server, with control characters shown as
    escapes (\\x1b …): it must not move the cursor, retitle or otherwise
    drive the user's terminal."""
    return _CONTROL.sub(_escaped, text)


def _escaped(m: re.Match[str]) -> str:
    return m.group().encode("unicode_escape").decode("ascii")


def _safe(text: str) -> str:
    """What goes to the terminal: rehearse's own colours (SGR sequences) as
    they are, any other control character escaped, whatever a message
    quoted (the last line of the guest's stderr …)."""
    return _OWN_OR_CONTROL.sub(lambda m: m.group() if m.group().startswith("\033[") else _escaped(m), text)


def _fit(text: str) -> str:
    width = shutil.get_terminal_size((100, 24)).columns
    return text if len(text) < width else text[: max(width - 2, 1)] + "…"


def live(text: str) -> None:
    """Show (or replace) the status line at the bottom of a terminal (in a
    fleet command, the machine's own line); does nothing when stderr is not
    a terminal (callers print plain lines then)."""
    global _live
    if not is_terminal() or _quiet:
        return
    with _lock:
        name = _machine()
        if name is not None:
            _lives[name] = text
        else:
            _live = text
        _render()


def live_end() -> None:
    """Remove the status line (in a fleet command, the machine's own)."""
    global _live
    with _lock:
        name = _machine()
        if name is not None:
            if _lives.pop(name, None) is None:
                return
        elif _live is None:
            return
        else:
            _live = None
        _render()

"""Nix's build progress, read from `--log-format internal-json -v`.

With that option Nix writes one `@nix {json}` line per event on stderr:
activities `start` and `stop`, carry `result`s (log lines, counters), and
messages come as `msg` actions. `Tracker` turns the lines into state and
events (progress_view shows them). The codes are those of Nix's logging.hh;
unknown codes and fields are ignored, since other Nix versions add some.
"""

from __future__ import annotations

import json
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

# Nix's logging.hh, the codes rehearse shows. ActivityType (a Substitute, 108,
# needs none: the CopyPath under it carries the bytes):
COPY_PATH: Final = 100
REALISE: Final = 102
BUILDS: Final = 104
BUILD: Final = 105
# ResultType:
BUILD_LOG_LINE: Final = 101
SET_PHASE: Final = 104
PROGRESS: Final = 105
SET_EXPECTED: Final = 106

LOG_TAIL: Final = 25  # lines of a build's log kept to show if it fails
INFO: Final = 3  # Nix's lvlInfo: messages above it are what -v added

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # Nix colours msg text even off a terminal
_DRV = re.compile(r"/nix/store/[0-9a-z]{32}-[^'\s]+\.drv")
_EVALUATING = re.compile(r"evaluating file '(?:/nix/store/[0-9a-z]{32}-)?(.+)'")  # nixpkgs' files: …-source/…


def store_name(path: str) -> str:
    """`openssh-9.2p1` of /nix/store/<hash>-openssh-9.2p1.drv (or of the output)."""
    base = path.rsplit("/", 1)[-1].removesuffix(".drv")
    return base[33:] if len(base) > 33 and base[32] == "-" else base


@dataclass(frozen=True)
class Message:
    """A message of Nix's (level 0 error, 1 warning … 3 info, 4+ what -v
    added), or a line that was not `@nix` JSON (plain, given as is)."""

    level: int
    text: str
    plain: bool = False


@dataclass(frozen=True)
class Started:
    name: str


@dataclass(frozen=True)
class Finished:
    name: str


@dataclass(frozen=True)
class Failed:
    name: str
    log: tuple[str, ...]  # the last LOG_TAIL lines of its log


@dataclass(frozen=True)
class LogLine:
    name: str
    text: str


Event = Message | Started | Finished | Failed | LogLine


@dataclass(frozen=True)
class Running:
    name: str
    phase: str  # as stdenv announces it (buildPhase …); "" if none


@dataclass(frozen=True)
class Status:
    done: int
    expected: int
    failed: int
    running: tuple[Running, ...]
    copied: int  # bytes
    copy_expected: int  # bytes; 0 when Nix did not say
    evaluating: str  # the file Nix read last, while it evaluates


@dataclass
class _Activity:
    """What Nix has said of one activity so far (mutable: Nix updates it)."""

    type: int
    path: str
    name: str
    done: int = 0
    expected: int = 0
    phase: str = ""
    failed: bool = False
    log: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_TAIL))


def _ints(value: Any) -> list[int]:
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]


class Tracker:
    """Nix's state as its stderr lines tell it, fed one line at a time."""

    def __init__(self) -> None:
        self._acts: dict[int, _Activity] = {}
        self._text: list[str] = []
        self._copied = 0  # bytes of copies that ended
        self.builds = (0, 0, 0, 0)  # done, expected, running, failed: Progress of Builds
        self.copy_expected = 0
        self.paths_copied = 0
        self.evaluating = ""
        self.files: set[str] = set()  # every file Nix evaluated (as it names them)
        self.started: list[str] = []
        self.built: list[str] = []
        self.failures: list[Failed] = []
        self.errors: list[str] = []

    def feed(self, line: str) -> list[Event]:
        line = line.rstrip("\n")
        data = _parse(line)
        if data is None:
            self._text.append(line)
            return [Message(INFO, line, plain=True)]
        handler = {"msg": self._msg, "start": self._start, "stop": self._stop, "result": self._result}
        action = data.get("action")
        return handler[action](data) if isinstance(action, str) and action in handler else []

    def plain_text(self) -> str:
        """What Nix would have printed without the JSON and -v, less the
        build logs: its messages (errors in full) and lines that were plain."""
        return "".join(t + "\n" for t in self._text)

    def status(self) -> Status:
        acts = self._acts.values()
        done, expected, _, failed = self.builds
        running = tuple(Running(a.name, a.phase) for a in acts if a.type == BUILD and not a.failed)
        copying = sum(a.done for a in acts if a.type == COPY_PATH)
        # Builds' Progress lowers `expected` when a failure cancels builds.
        expected = max(expected, done + len(running) + failed)
        return Status(done, expected, failed, running, self._copied + copying, self.copy_expected, self.evaluating)

    def _msg(self, data: dict[str, Any]) -> list[Event]:
        level = data.get("level")
        level = level if isinstance(level, int) else INFO
        text = _ANSI.sub("", str(data.get("msg", "")))
        if level <= INFO:
            self._text.append(text)
        elif m := _EVALUATING.match(text):
            self.evaluating = m.group(1)
            self.files.add(text[len("evaluating file '") : -1])
        events: list[Event] = [Message(level, text)]
        if level == 0 and not text.startswith("trace: "):  # builtins.trace also comes at level 0
            self.errors.append(text)
            # The error names the derivation whose builder failed (Nix 2.8:
            # "builder for '/nix/store/…drv' failed"), before its Build stops.
            for drv in _DRV.findall(text):
                for act in self._acts.values():
                    if act.type == BUILD and act.path == drv and not act.failed:
                        act.failed = True
                        failure = Failed(act.name, tuple(act.log))
                        self.failures.append(failure)
                        events.append(failure)
        return events

    def _start(self, data: dict[str, Any]) -> list[Event]:
        act_id, act_type = data.get("id"), data.get("type")
        if not isinstance(act_id, int) or not isinstance(act_type, int):
            return []
        fields = data.get("fields")
        path = fields[0] if isinstance(fields, list) and fields and isinstance(fields[0], str) else ""
        act = self._acts[act_id] = _Activity(act_type, path, store_name(path))
        if act_type == BUILD:
            self.started.append(act.name)
            return [Started(act.name)]
        return []

    def _stop(self, data: dict[str, Any]) -> list[Event]:
        act = self._acts.pop(data["id"], None) if isinstance(data.get("id"), int) else None
        if act is None:
            return []
        if act.type == COPY_PATH:
            # The last Progress of a copy falls short of its size (recorded
            # with Nix 2.8); one that stops is whole, or an error follows.
            self._copied += max(act.done, act.expected)
            self.paths_copied += 1
        # A Build stops when it succeeds, fails, or is cut short by another's
        # failure; Builds' `done` counter, raised before the stop, tells.
        if act.type == BUILD and not act.failed and self.builds[0] > len(self.built):
            self.built.append(act.name)
            return [Finished(act.name)]
        return []

    def _result(self, data: dict[str, Any]) -> list[Event]:
        act_id, result_type, fields = data.get("id"), data.get("type"), data.get("fields")
        act = self._acts.get(act_id) if isinstance(act_id, int) else None
        if act is None or not isinstance(fields, list):
            return []
        if result_type == BUILD_LOG_LINE and fields and isinstance(fields[0], str):
            act.log.append(fields[0])
            return [LogLine(act.name, fields[0])]
        if result_type == SET_PHASE and fields and isinstance(fields[0], str):
            act.phase = fields[0]
        elif result_type == PROGRESS and len(numbers := _ints(fields)) == 4:
            act.done, act.expected = numbers[0], numbers[1]
            if act.type == BUILDS:
                self.builds = (numbers[0], numbers[1], numbers[2], numbers[3])
        elif result_type == SET_EXPECTED and act.type == REALISE and _ints(fields)[:1] == [COPY_PATH]:
            self.copy_expected = [*_ints(fields), 0][1]
        return []


def _parse(line: str) -> dict[str, Any] | None:
    """The JSON of an `@nix` line; None for anything else, malformed included."""
    if not line.startswith("@nix "):
        return None
    try:
        data = json.loads(line[5:])
    except ValueError:
        return None
    return data if isinstance(data, dict) else None

"""What a VM or a server answers: the one boundary where it is read.

Anything a guest or a server prints is untrusted: root in a VM, or whoever
owns a server, controls it. It may name paths the host never asked about,
put option-like words where a path goes, send escape sequences to the
user's terminal or bytes that are not UTF-8. Every answer rehearse reads
over SSH is parsed here, once, into typed values; what does not fit is
refused with `BadAnswer` (its own exit code; nothing was done yet with it),
and free text (a check's output, a log line, a console tail, a rollback's
reason) is made printable before it goes anywhere.

Where each answer is read, and the parser that vets it:

    guest/room.sh             room()             free bytes, paths it lacks (of those asked)
    guest/settle.sh, reach.sh settled()          "settled ID VERDICT", "current SYSTEM", "nix"
    guest/generations.sh      generations()      "LINK SYSTEM MTIME", current/running/booted
    readlink current-system   running_system()   down, destroy, status, snapshots
    --print-invalid (server)  invalid_paths()    paths the server lacks (of those asked)
    dry-activate              dry_activate()     unit names, swap devices, other lines
    guest/look.sh, markers    failed_units()     unit names
    guest/host-keys.sh        host_keys()        "TYPE BASE64" per key
    activation markers        marker_number(), result()
    missing (start.sh)        store_path(among=) the paths it was asked to register
    log lines, check output,  text()             escaped control characters, bounded
    a verdict's reason
    console.log (console,     console()          colours dropped, the rest escaped
    vm.tail)
    anything else quoted in   output._safe()     the terminal's sink: control characters
    a message (ssh's stderr,                     escaped, rehearse's own colours kept
    nix-copy-closure's lines,
    ssh-keyscan's keys)
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Final

from rehearse.core import output
from rehearse.core.errors import ExitCode, RehearseError
from rehearse.host.nix import STORE_PATH
from rehearse.host.plan import Units, parse_dry_activate

# A systemd unit name (systemd src/basic/unit-name.c: letters, digits, ":-_.\@",
# at most 255 characters, a type suffix).
UNIT = re.compile(
    r"[A-Za-z0-9:_.\\@-]{1,240}\."
    r"(service|socket|target|device|mount|automount|swap|timer|path|slice|scope)"
)
# An OpenSSH public key line's first two words.
HOST_KEY = re.compile(r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+) [A-Za-z0-9+/]+={0,3}")
# The longest answer taken at all, and the longest piece of free text shown.
MAX_ANSWER = 4 * 1024 * 1024
MAX_TEXT = 4000


class BadAnswer(RehearseError):
    """A VM or a server answered something rehearse does not take."""

    def __init__(self, who: str, what: str, got: str) -> None:
        super().__init__(
            f"{who} answered something that is not {what}: '{text(got, limit=120)}'; nothing was done with it",
            hint="its programs (df, nix-store, readlink, systemctl …) or its PATH may have been replaced; "
            "look at it with `rehearse ssh`, or destroy it and start again",
            exit_code=ExitCode.BAD_ANSWER,
        )


def text(s: str, limit: int = MAX_TEXT) -> str:
    """Free text from the other side, fit for a terminal, a log or a state
    file: control characters (escape sequences, carriage returns,
    bidirectional overrides) shown as escapes, what did not decode as UTF-8
    already shown as \\xNN (process.py), cut to `limit` characters."""
    shown = output.printable(s)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


_SGR = re.compile(r"\x1b\[[0-9;]*m")


def console(data: bytes) -> str:
    """A VM's serial console (its log file's bytes), for a terminal:
    colours dropped, carriage returns of its line ends dropped, any other
    control character escaped, bytes that are not UTF-8 shown as \\xNN."""
    decoded = data.decode("utf-8", errors="backslashreplace").replace("\r\n", "\n")
    return output.printable(_SGR.sub("", decoded))


def lines(s: str) -> Iterable[str]:
    """Text's lines, each made printable (newlines and tabs stay)."""
    return (text(line) for line in s.splitlines())


def _bounded(who: str, out: str) -> str:
    if len(out) > MAX_ANSWER:
        raise BadAnswer(who, f"an answer of at most {MAX_ANSWER} characters", out[:120])
    return out


def store_path(who: str, word: str, *, among: Collection[str] | None = None) -> str:
    """A store path; with `among`, one of the paths rehearse asked about."""
    if STORE_PATH.fullmatch(word) is None:
        raise BadAnswer(who, "a store path", word)
    if among is not None and word not in among:
        raise BadAnswer(who, "one of the store paths it was asked about", word)
    return word


def number(who: str, word: str, what: str = "a number") -> int:
    """A non-negative decimal integer (no sign, no spaces, at most 20 digits)."""
    if re.fullmatch(r"[0-9]{1,20}", word) is None:
        raise BadAnswer(who, what, word)
    return int(word)


def running_system(who: str, out: str) -> str:
    """`readlink /run/current-system`: a store path, or "" when it has none."""
    word = _bounded(who, out).strip()
    return store_path(who, word) if word else ""


@dataclass(frozen=True)
class Room:
    free: int  # bytes free for the store
    missing: list[str]  # of the paths asked about, those the store lacks


def room(who: str, out: str, asked: Collection[str]) -> Room:
    """guest/room.sh: the free bytes, then a line per path it lacks."""
    words = _bounded(who, out).split("\n")
    first = words[0].strip() if words else ""
    free = number(who, first, "the free space of its store (a number of bytes)")
    missing = [store_path(who, w, among=asked) for w in (line.strip() for line in words[1:]) if w]
    return Room(free, missing)


def invalid_paths(who: str, out: str, asked: Collection[str]) -> list[str]:
    """`nix-store --check-validity --print-invalid`: the paths it lacks, of those asked."""
    return [store_path(who, w, among=asked) for w in (line.strip() for line in _bounded(who, out).split("\n")) if w]


@dataclass(frozen=True)
class Settled:
    current: str  # the system that runs, "" if none
    messages: list[str]  # a line per activation settled
    has_nix: bool = False  # reach.sh: nix-store is on its PATH

    def say(self) -> None:
        for line in self.messages:
            output.warn(line)


def settled(who: str, out: str) -> Settled:
    """guest/settle.sh's lines ("settled ID VERDICT", "current SYSTEM"), and
    reach.sh's "nix"."""
    current = ""
    messages = []
    has_nix = False
    for line in _bounded(who, out).splitlines():
        word, _, rest = line.partition(" ")
        if word == "settled":
            run_id, _, verdict = rest.partition(" ")
            if re.fullmatch(r"[0-9A-Za-z-]{1,64}", run_id) is None:
                raise BadAnswer(who, "an activation's ID", run_id)
            messages.append(
                f"an earlier activation ({run_id}) still waited for its verdict: its deployer was interrupted. "
                f"It was rolled back first ({verdict_words(text(verdict, 300))})."
            )
        elif word == "current":
            current = running_system(who, rest)
        elif line == "nix":
            has_nix = True
    return Settled(current, messages, has_nix)


@dataclass(frozen=True)
class Generation:
    number: int
    system: str
    date: int  # the link's mtime
    booted: bool  # the system the machine booted


@dataclass(frozen=True)
class Generations:
    generations: list[Generation]
    current: int | None  # the profile's generation
    running: str  # /run/current-system

    def system_of(self, number: int | None) -> str | None:
        return next((g.system for g in self.generations if g.number == number), None)


def _link_number(who: str, profile: str, link: str) -> int:
    m = re.fullmatch(re.escape(profile) + r"-([0-9]{1,9})-link", link)
    if m is None:
        raise BadAnswer(who, f"a generation of {profile}", link)
    return int(m.group(1))


def _absolute(profile: str, link: str) -> str:
    return link if link.startswith("/") else f"{profile.rsplit('/', 1)[0]}/{link}"


def generations(who: str, out: str, profile: str) -> Generations:
    """guest/generations.sh: "LINK SYSTEM MTIME" per generation, then
    "current LINK", "running SYSTEM" and "booted SYSTEM"."""
    found: list[tuple[int, str, int]] = []
    current = None
    running = booted = ""
    booted_at = 0
    for line in _bounded(who, out).splitlines():
        words = line.split(" ")
        if words == [""]:
            continue
        key, value = words[0], " ".join(words[1:])
        if key == "booted":
            booted = running_system(who, value)
        elif key == "booted-at":
            booted_at = number(who, value, "the boot's time (seconds since 1970)")
        elif key == "running":
            running = running_system(who, value)
        elif key == "current":
            # The profile's link is relative ("system-3-link") or absolute.
            link = value.strip()
            current = None if not link else _link_number(who, profile, _absolute(profile, link))
        elif len(words) == 3:
            found.append(
                (
                    _link_number(who, profile, key),
                    store_path(who, words[1]),
                    number(who, words[2], "a generation's date (seconds since 1970)"),
                )
            )
        else:
            raise BadAnswer(who, "a line of generations.sh", line)
    found.sort()
    boot = booted_generation(found, booted, booted_at)
    return Generations([Generation(n, s, d, n == boot) for n, s, d in found], current, running)


def booted_generation(found: list[tuple[int, str, int]], booted: str, booted_at: int) -> int | None:
    """The one generation (number, system, date) the machine booted, when
    several hold its system: the newest made before the boot; else (the
    booted system became a generation at the first deploy, after it) the
    oldest of them."""
    same = [(n, d) for n, s, d in found if s == booted]
    before = [n for n, d in same if d <= booted_at]
    return before[-1] if before else same[0][0] if same else None


def unit(who: str, word: str) -> str:
    if UNIT.fullmatch(word) is None:
        raise BadAnswer(who, "a systemd unit's name", word)
    return word


def units(who: str, words: Iterable[str]) -> list[str]:
    return [unit(who, w) for w in words if w]


def failed_units(who: str, out: str) -> list[str]:
    """A list of unit names separated by spaces or commas."""
    return units(who, re.split(r"[\s,]+", _bounded(who, out).strip()))


def dry_activate(who: str, out: str) -> Units:
    """switch-to-configuration dry-activate's lines (plan.parse_dry_activate),
    its unit names checked and the rest made printable."""
    u = parse_dry_activate(_bounded(who, out))
    return dataclasses.replace(
        u,
        stop=tuple(units(who, u.stop)),
        restart=tuple(units(who, u.restart)),
        reload=tuple(units(who, u.reload)),
        start=tuple(units(who, u.start)),
        skip=tuple(units(who, u.skip)),
        swap_off=tuple(text(d, 300) for d in u.swap_off),
        other=tuple(text(line, 300) for line in u.other),
    )


def host_keys(who: str, out: str) -> list[str]:
    """guest/host-keys.sh: public keys, "TYPE BASE64 [COMMENT]" a line;
    their first two words (the comment is not kept)."""
    keys = []
    for line in _bounded(who, out).splitlines():
        if not line.strip():
            continue
        key = " ".join(line.split()[:2])
        if HOST_KEY.fullmatch(key) is None:
            raise BadAnswer(who, "an SSH public host key", line)
        keys.append(key)
    return keys


def marker_number(who: str, word: str, *, signed: bool = False) -> int:
    """A number in an activation's marker (an exit code may be negative)."""
    if signed and word.startswith("-"):
        return -number(who, word[1:], "an exit code")
    return number(who, word, "a number in the activation's markers")


_RESULT = re.compile(r"(confirmed|rolled-back|kept|reboot-required)( .*)?")


def result(who: str, value: str) -> str:
    """The activation's verdict: "confirmed", "rolled-back REASON RC",
    "kept REASON" (deploy --keep-failed) or "reboot-required …"; its free
    text made printable."""
    m = _RESULT.fullmatch(value)
    if m is None:
        raise BadAnswer(who, "an activation's verdict", value)
    return m.group(1) + text(m.group(2) or "", 500)


# The guest's words for why it rolled back (guest/activate.sh), as a person
# reads them; any other reason is rehearse's own (a check's failure, sent by
# reject.sh) and is words already. --json keeps the guest's words.
_REASONS: Final = (
    (re.compile(r"activation-exit-(-?\d+)"), "switch-to-configuration exited {0}"),
    (re.compile(r"activation-timeout-(\d+)s"), "switch-to-configuration ran longer than {0} s"),
    (re.compile(r"not-confirmed"), "no confirmation came in time"),
    (re.compile(r"superseded"), "another activation took its place"),
    (re.compile(r"busy"), "another activation was in progress"),
    (re.compile(r"profile"), "the system profile could not be set"),
)


def verdict_words(verdict: str) -> str:
    """An activation's verdict ("rolled-back REASON RC" …) as a person reads
    it: a rollback's reason (or a kept failure's, `deploy --keep-failed`) in
    words, without the rollback's exit code."""
    if verdict.startswith("rolled-back "):
        reason = re.sub(r" -?\d+$", "", verdict.removeprefix("rolled-back "))
    elif verdict.startswith("kept "):
        reason = verdict.removeprefix("kept ")
    else:
        return verdict
    for pattern, words in _REASONS:
        if m := pattern.fullmatch(reason):
            return words.format(*m.groups())
    return reason


_ROLLING_BACK: Final = re.compile(r"(rehearse: rolling back to \S+) \((.+)\)")


def log_line(line: str) -> str:
    """A line of the guest's activation log, as shown: escaped (text()); the
    guest's own "rolling back to PREV (REASON)" with its reason in words."""
    shown = text(line)
    if m := _ROLLING_BACK.fullmatch(shown):
        return f"{m.group(1)} ({verdict_words('rolled-back ' + m.group(2))})"
    return shown

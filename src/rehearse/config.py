"""rehearse.toml and command-line flags → frozen values.

rehearse.toml is looked up in the current directory:

    nixpkgs = "../nixpkgs"        # a path (relative to the file), or any form `-I nixpkgs=` takes
    configuration = "./configuration.nix"
    # flake = ".#fripon"
    forward = ["8080:80"]          # HOST:GUEST, on 127.0.0.1
    ssh_timeout = 300
    confirm_timeout = 60           # seconds the VM waits for rehearse to confirm a new system
    activation_timeout = 600       # seconds switch-to-configuration may take
    restrict_network = true        # VMs `up` makes are cut off from the host and the outside (`up --isolate`)
    checks = [ { cmd = "systemctl is-active nginx" }, { tcp = 8080 }, { http = "http://127.0.0.1:8080/" } ]

    # A fleet: VMs brought up together, on one private LAN (lan.py).
    [machines.web]
    configuration = "./web/configuration.nix"   # or flake = ".#web"
    tags = ["front"]               # `deploy --on @front`
    forward = ["8080:80"]          # this machine's forwards, beside the top-level ones
    checks = [ { tcp = 8080 } ]    # this machine's checks (default: the top-level ones)
    lan_interface = "ens4"         # its LAN interface (default: see lan.py)

The whole file is checked when it is read, before anything is built or
changed: a wrong value is a usage error (exit 2) that names the file, the
key, what was found and what was expected, never a traceback later.
"""

from __future__ import annotations

import datetime
import difflib
import math
import os
import re
import stat
import tomllib
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rehearse.core.errors import ExitCode, RehearseError, escape_char, one_line
from rehearse.core.values import Address, CheckKind
from rehearse.host.nix import Source
from rehearse.host.qemu import Forward
from rehearse.store.state import check_name

FILE_NAME = "rehearse.toml"


# --- values shown in messages ---------------------------------------------


def show(value: object, limit: int = 60) -> str:
    """`value` as TOML would write it, on one line and at most `limit`
    characters: what an error message says it found. Strings are quoted with
    their control characters escaped, so a newline in a value cannot break
    the message (or forge a line of it)."""
    text = _show(value, 0)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _show(value: object, depth: int) -> str:
    if depth > 3:
        return "…"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, int):
        # str() refuses integers of more than 4300 digits.
        return str(value) if value.bit_length() <= 128 else "a very large integer"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"
        # A flag's "0" is 0.0 by then: show it as typed.
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_show(v, depth + 1) for v in value[:10]) + (", …]" if len(value) > 10 else "]")
    if isinstance(value, dict):
        items = [f"{show_key(k)} = {_show(v, depth + 1)}" for k, v in list(value.items())[:10]]
        return "{ " + ", ".join(items) + (", … }" if len(value) > 10 else " }") if items else "{}"
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return repr(value)


_ESCAPES = {'"': '\\"', "\\": "\\\\"}


def quote(text: str) -> str:
    """`text` as a TOML basic string, every character that does not print
    escaped: not only newlines, also NEL and the Unicode line separators,
    which end a line too for some terminals and for str.splitlines."""
    return '"' + "".join(_ESCAPES.get(c) or escape_char(c) for c in text) + '"'


def show_key(key: str) -> str:
    """A TOML key as written: bare when it can be, else quoted."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else quote(key)


def _expected(where: str, what: str, found: object, hint: str | None = None) -> RehearseError:
    return RehearseError(f"{where}: expected {what}, found {show(found)}", hint=hint, exit_code=ExitCode.USAGE)


# --- durations ------------------------------------------------------------

DAY = 86400.0


@dataclass(frozen=True)
class Bounds:
    """The range a duration may take, and why its minimum is what it is."""

    minimum: float
    why: str
    maximum: float = DAY  # more than a day is a typo, not a rehearsal
    whole: bool = False  # rounded up to whole seconds: the guest's script takes an integer


SSH_WAIT = Bounds(1, "it is how long `up` waits for the VM's SSH; a boot under emulation takes about a minute")
CONFIRM = Bounds(
    5,
    "the VM must be reached over a fresh SSH connection (about a second under emulation) and the checks must "
    "pass before it rolls back; the VM counts whole seconds, so a fraction is rounded up",
    whole=True,
)
ACTIVATION = Bounds(
    10,
    "switch-to-configuration stops, starts and restarts units, which takes seconds even for a small change; "
    "the VM counts whole seconds, so a fraction is rounded up",
    whole=True,
)
POWER_OFF = Bounds(0, "it is how long `down` waits for an ACPI power-off before it makes QEMU quit; 0 does not wait")

SSH_TIMEOUT = 300.0
CONFIRM_TIMEOUT = 60.0
ACTIVATION_TIMEOUT = 600.0
POWER_OFF_TIMEOUT = 60.0


def seconds(value: object, default: float, where: str, bounds: Bounds) -> float:
    """A duration from a flag or rehearse.toml (None: `default`), checked
    against `bounds`: every duration rehearse takes goes through here.
    Rejects what is not a number (a TOML string or boolean), nan, infinities
    and values out of bounds; a duration the guest counts in whole seconds is
    rounded up, so the VM never waits less than asked (0.5 would be 0: an
    immediate rollback)."""
    if value is None:
        return default
    expected = f"a number of seconds from {bounds.minimum:g} to {bounds.maximum:g}"
    # bool is an int to Python, but `confirm_timeout = true` is no duration.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _expected(where, expected, value, hint=bounds.why)
    # Compared before any conversion: float() of a huge TOML integer raises,
    # and nan compares false, so it fails here too.
    if not bounds.minimum <= value <= bounds.maximum:
        raise _expected(where, expected, value, hint=bounds.why)
    return float(math.ceil(value)) if bounds.whole else float(value)


# --- checks ---------------------------------------------------------------

CHECK_KINDS = tuple(k.value for k in CheckKind)
_CHECK_HINT = 'write { cmd = "systemctl is-active nginx" }, { tcp = 8080 } or { http = "http://127.0.0.1:8080/" }'


@dataclass(frozen=True)
class Check:
    """A health check from rehearse.toml: a command in the guest, a TCP port
    or an HTTP URL reached through a forwarded port. Built by `parse` only,
    so a Check is always one that can run: a `tcp` target is a port number,
    an `http` one an http(s) URL."""

    kind: CheckKind
    target: str

    @classmethod
    def parse(cls, data: object, where: str = "check") -> Check:
        if not isinstance(data, dict):
            raise _expected(where, "a check: a table with one of cmd, tcp or http", data, hint=_CHECK_HINT)
        unknown = [k for k in data if k not in CHECK_KINDS]
        if unknown:
            raise RehearseError(
                f"{where}: unknown key {', '.join(show_key(k) for k in unknown)} in {show(data)}",
                hint=f"a check has one of {', '.join(CHECK_KINDS)}: {_CHECK_HINT}",
                exit_code=ExitCode.USAGE,
            )
        if len(data) != 1:
            raise _expected(where, "exactly one of cmd, tcp or http", data, hint="write one check per table")
        [(kind, value)] = data.items()
        if kind == CheckKind.CMD:
            return cls(CheckKind.CMD, _text(f"{where}: cmd", value, "a shell command as a string"))
        if kind == CheckKind.TCP:
            return cls(CheckKind.TCP, str(port(f"{where}: tcp", value)))
        return cls(CheckKind.HTTP, _url(f"{where}: http", value))


def port(where: str, value: object) -> int:
    """A TCP/UDP port number: an integer (not a boolean) from 1 to 65535."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _expected(where, "a port number from 1 to 65535", value)
    return value


def _url(where: str, value: object) -> str:
    """An http:// or https:// URL that urllib can open as it is."""
    expected = 'an http:// or https:// URL, e.g. "http://127.0.0.1:8080/"'
    if not isinstance(value, str) or not value.isascii() or any(c.isspace() or not c.isprintable() for c in value):
        raise _expected(where, expected, value, hint="write the URL in ASCII, %-encoding other characters")
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError for a port out of range
    except ValueError:
        raise _expected(where, expected, value) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _expected(where, expected, value)
    return value


def _text(where: str, value: object, expected: str = "a string") -> str:
    """A non-empty string without NUL (which no argv, path or URL can carry)."""
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise _expected(where, expected, value)
    return value


# --- forwards -------------------------------------------------------------

# [0-9], not \d: \d matches any script's digits ("８０８０"), which int() takes.
_FORWARD = re.compile(r"(?:(tcp|udp)/)?([0-9]{1,5}):([0-9]{1,5})")
_FORWARD_HINT = "write HOST_PORT:GUEST_PORT, e.g. 8080:80 (udp/HOST_PORT:GUEST_PORT for UDP), ports from 1 to 65535"


def parse_forward(spec: str) -> Forward:
    """HOST:GUEST or PROTO/HOST:GUEST, ports from 1 to 65535."""
    m = _FORWARD.fullmatch(spec)
    if not m:
        raise RehearseError(
            f"invalid forward {show(spec)}: expected HOST:GUEST.", hint=_FORWARD_HINT, exit_code=ExitCode.USAGE
        )
    host, guest = int(m.group(2)), int(m.group(3))
    for p in (host, guest):
        if not 1 <= p <= 65535:
            raise RehearseError(
                f"invalid forward {show(spec)}: port {p} is out of range.",
                hint=_FORWARD_HINT,
                exit_code=ExitCode.USAGE,
            )
    return Forward(host, guest, m.group(1) or "tcp")


def unique_forwards(forwards: Iterable[Forward]) -> list[Forward]:
    """The forwards, each once. The same forward asked twice (from the VM's
    record and --forward again, or rehearse.toml and forwardPorts) is one;
    one host port sent to two guest ports is an error: QEMU would refuse
    the second, or worse, one of them would silently not work."""
    seen: dict[tuple[str, int], Forward] = {}
    for f in forwards:
        other = seen.setdefault((f.proto, f.host_port), f)
        if other != f:
            raise RehearseError(
                f"host port {f.host_port} ({f.proto}) is forwarded twice: to the VM's port {other.guest_port} "
                f"and to its port {f.guest_port}.",
                hint="a host port goes to one VM port: drop one of them (--forward, forward in rehearse.toml, "
                "virtualisation.forwardPorts; `up NAME --rebuild` forgets the forwards a VM recorded)",
                exit_code=ExitCode.USAGE,
            )
    return list(seen.values())


# --- rehearse.toml ----------------------------------------------------------


@dataclass(frozen=True)
class Machine:
    """A machine of the fleet in rehearse.toml's [machines.NAME]."""

    name: str
    configuration: Path | None = None
    flake: str | None = None
    tags: tuple[str, ...] = ()
    forward: tuple[Forward, ...] = ()
    checks: tuple[Check, ...] | None = None  # None: the top-level checks
    lan_interface: str | None = None


@dataclass(frozen=True)
class Settings:
    nixpkgs: str | None = None
    configuration: Path | None = None
    flake: str | None = None
    forward: tuple[Forward, ...] = ()
    ssh_timeout: float = SSH_TIMEOUT
    confirm_timeout: float = CONFIRM_TIMEOUT
    activation_timeout: float = ACTIVATION_TIMEOUT
    checks: tuple[Check, ...] = ()
    restrict_network: bool = False  # the VMs `up` makes or starts are isolated (virtualisation.restrictNetwork)
    promote: tuple[tuple[str, str], ...] = ()  # VM name → the server `promote` goes to
    machines: tuple[Machine, ...] = ()

    def machine(self, name: str) -> Machine | None:
        return next((m for m in self.machines if m.name == name), None)

    def checks_of(self, name: str) -> tuple[Check, ...]:
        """The checks run after a deploy to VM `name`: its machine's, else the top-level ones."""
        m = self.machine(name)
        return m.checks if m is not None and m.checks is not None else self.checks


def _absolute(path: Path) -> Path:
    """`path` made absolute with its links resolved. os.path.realpath, not
    Path.resolve: that raises RuntimeError on a symlink loop (Python 3.11)."""
    return Path(os.path.realpath(path))


def _is_uri(value: str) -> bool:
    """Whether a -I value is a URI (https://…, channel:…) rather than a path."""
    return re.match(r"^[a-z+]+:", value) is not None


def _read(path: Path, shown: str) -> str | None:
    """The text of rehearse.toml, None if there is none. A dangling link, a
    directory, a FIFO (which would block), an unreadable file or one not in
    UTF-8 (as TOML must be) is an error, not "no settings"."""

    def bad(what: str, hint: str | None = None) -> RehearseError:
        return RehearseError(f"{shown}: {what}", hint=hint, exit_code=ExitCode.USAGE)

    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise bad(
                f"a symbolic link to {os.readlink(path)}, which does not exist", hint="fix or remove the link"
            ) from None
        return None
    except OSError as e:
        raise bad(f"cannot read it: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise bad("is a directory; expected a TOML file", hint=f"move it away, or make {FILE_NAME} a file")
    if not stat.S_ISREG(st.st_mode):
        raise bad("is not a regular file; expected a TOML file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise bad(f"cannot read it: {e.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise bad(
            f"is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})",
            hint="TOML files are UTF-8: convert it, e.g. with iconv -t UTF-8",
        ) from None


def load_settings(directory: Path | None = None) -> Settings:
    """rehearse.toml of `directory` (default: the current one), checked
    whole: every error found is reported at once, each naming the file and
    the key."""
    path = (directory or Path.cwd()) / FILE_NAME
    shown = FILE_NAME if directory is None else str(path)
    text = _read(path, shown)
    if text is None:
        return Settings()
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RehearseError(f"{shown}: {e}", hint="fix the TOML syntax", exit_code=ExitCode.USAGE) from None
    except RecursionError:
        raise RehearseError(f"{shown}: nested too deeply", exit_code=ExitCode.USAGE) from None
    errors: list[RehearseError] = []
    values: dict[str, Any] = {}
    base = path.parent

    for name in sorted(set(data) - set(_PARSERS)):
        close = difflib.get_close_matches(name, _PARSERS, n=1)
        errors.append(
            RehearseError(
                f"{shown}: {show_key(name)}: unknown setting",
                hint=f"did you mean {close[0]}?" if close else f"known settings: {', '.join(sorted(_PARSERS))}",
                exit_code=ExitCode.USAGE,
            )
        )
    for name, parse in _PARSERS.items():
        if name in data:
            try:
                values[name] = parse(f"{shown}: {name}", data[name], base)
            except RehearseError as e:
                errors.append(e)
    if "configuration" in values and "flake" in values:
        errors.append(
            RehearseError(
                f"{shown}: configuration and flake are both set; expected one of them", exit_code=ExitCode.USAGE
            )
        )
    if errors:
        hints = list(dict.fromkeys(e.hint for e in errors if e.hint))
        raise RehearseError(
            "\n".join(e.message for e in errors), hint="\n      ".join(hints) or None, exit_code=ExitCode.USAGE
        )
    return Settings(**values)


def _nixpkgs(where: str, value: object, base: Path) -> str:
    text = _text(where, value, 'a path or anything `-I nixpkgs=` takes, e.g. "../nixpkgs"')
    return text if _is_uri(text) else str(_absolute(base / text))


def _configuration(where: str, value: object, base: Path) -> Path:
    return _absolute(base / _text(where, value, 'the path of a configuration.nix, e.g. "./configuration.nix"'))


def _flake(where: str, value: object, base: Path) -> str:
    expected = 'a flake reference REF#NAME, e.g. ".#fripon"'
    text = _text(where, value, expected)
    if not text.partition("#")[2]:
        raise _expected(where, expected, value)
    return text


def _forward(where: str, value: object, base: Path) -> tuple[Forward, ...]:
    expected = 'a list of "HOST:GUEST" strings'
    if not isinstance(value, list):
        raise _expected(where, expected, value, hint='write forward = ["8080:80"]')
    forwards = []
    for i, spec in enumerate(value):
        if not isinstance(spec, str):
            raise _expected(f"{where}[{i}]", 'a "HOST:GUEST" string, e.g. "8080:80"', spec)
        try:
            forwards.append(parse_forward(spec))
        except RehearseError as e:
            raise RehearseError(f"{where}[{i}]: {e.message}", hint=e.hint, exit_code=ExitCode.USAGE) from None
    try:
        return tuple(unique_forwards(forwards))
    except RehearseError as e:
        raise RehearseError(f"{where}: {e.message}", hint=e.hint, exit_code=ExitCode.USAGE) from None


def _checks(where: str, value: object, base: Path) -> tuple[Check, ...]:
    if not isinstance(value, list):
        raise _expected(where, 'a list of checks, e.g. [ { cmd = "…" }, { tcp = 8080 } ]', value, hint=_CHECK_HINT)
    return tuple(Check.parse(c, f"{where}[{i}]") for i, c in enumerate(value))


def _duration(default: float, bounds: Bounds) -> Callable[[str, object, Path], float]:
    return lambda where, value, base: seconds(value, default, where, bounds)


def _boolean(where: str, value: object, base: Path) -> bool:
    if not isinstance(value, bool):
        raise _expected(where, "true or false", value)
    return value


def _promote(where: str, value: object, base: Path) -> tuple[tuple[str, str], ...]:
    """[promote] NAME = "USER@HOST[:PORT]": where each VM's configuration goes."""

    if not isinstance(value, dict):
        raise _expected(
            where, 'a table of VM names and servers, e.g. [promote] fripon = "root@fripon.example.org"', value
        )
    pairs = []
    for name, target in value.items():
        at = f"{where}.{show_key(name)}"
        _vm_name(at, name)
        Address.parse(_text(at, target, "a server: USER@HOST[:PORT]"), at)
        pairs.append((name, target))
    return tuple(pairs)


def _vm_name(at: str, name: str) -> str:
    """A table's key that names a VM, checked; an error names the file and the key."""
    try:
        return check_name(name)
    except RehearseError as e:
        raise RehearseError(f"{at}: {e.message}", hint=e.hint, exit_code=ExitCode.USAGE) from None


_MACHINE_KEYS = ("configuration", "flake", "tags", "forward", "checks", "lan_interface")
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_INTERFACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")  # a Linux interface name: at most 15 bytes


def _machines(where: str, value: object, base: Path) -> tuple[Machine, ...]:
    """[machines.NAME] tables: each with a configuration or a flake."""
    example = '[machines.web] configuration = "./web/configuration.nix"'
    if not isinstance(value, dict):
        raise _expected(where, "a table of machines", value, hint=f"write {example}")
    machines = []
    for name, table in value.items():
        at = f"{where}.{show_key(name)}"
        _vm_name(at, name)
        if not isinstance(table, dict):
            raise _expected(at, "a table with configuration or flake", table, hint=f"write {example}")
        unknown = [k for k in table if k not in _MACHINE_KEYS]
        if unknown:
            raise RehearseError(
                f"{at}: unknown key {', '.join(show_key(k) for k in unknown)}",
                hint=f"a machine has {', '.join(_MACHINE_KEYS)}",
                exit_code=ExitCode.USAGE,
            )
        if ("configuration" in table) == ("flake" in table):
            raise RehearseError(
                f"{at}: expected one of configuration or flake", hint=f"write {example}", exit_code=ExitCode.USAGE
            )
        tags = table.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) and _TAG.fullmatch(t) for t in tags):
            raise _expected(f"{at}.tags", 'a list of tags (letters, digits, "-", "_", "."), e.g. ["front"]', tags)
        interface = table.get("lan_interface")
        if interface is not None and not (isinstance(interface, str) and _INTERFACE.fullmatch(interface)):
            raise _expected(f"{at}.lan_interface", 'an interface name, e.g. "ens4"', interface)
        machines.append(
            Machine(
                name=name,
                configuration=_configuration(f"{at}.configuration", table["configuration"], base)
                if "configuration" in table
                else None,
                flake=_flake(f"{at}.flake", table["flake"], base) if "flake" in table else None,
                tags=tuple(tags),
                forward=_forward(f"{at}.forward", table["forward"], base) if "forward" in table else (),
                checks=_checks(f"{at}.checks", table["checks"], base) if "checks" in table else None,
                lan_interface=interface,
            )
        )
    return tuple(machines)


_PARSERS: dict[str, Callable[[str, Any, Path], Any]] = {
    "nixpkgs": _nixpkgs,
    "configuration": _configuration,
    "flake": _flake,
    "forward": _forward,
    "ssh_timeout": _duration(SSH_TIMEOUT, SSH_WAIT),
    "confirm_timeout": _duration(CONFIRM_TIMEOUT, CONFIRM),
    "activation_timeout": _duration(ACTIVATION_TIMEOUT, ACTIVATION),
    "checks": _checks,
    "restrict_network": _boolean,
    "promote": _promote,
    "machines": _machines,
}


def stat_or_none(path: Path) -> os.stat_result | None:
    """`path`'s status, None if there is nothing there. Other failures (a
    name too long, a link loop, no permission) are usage errors: Path.exists()
    lets them out as OSError."""
    try:
        return path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise RehearseError(f"{one_line(str(path))}: {e.strerror}.", exit_code=ExitCode.USAGE) from None


def nonempty(value: str | None, what: str) -> str | None:
    """A flag's value, None if not given; given empty, an error: `--name ''`
    or `--flake ''` must not quietly mean "not given"."""
    if value is not None and not value.strip():
        raise RehearseError(f"{what} is empty.", exit_code=ExitCode.USAGE)
    return value


def resolve_source(configuration: str | None, flake: str | None, includes: list[str], settings: Settings) -> Source:
    """Which configuration to build, from flags first, then rehearse.toml."""
    configuration = nonempty(configuration, "the configuration's path")
    flake = nonempty(flake, "--flake")
    if configuration and flake:
        raise RehearseError("give a configuration file or --flake, not both.", exit_code=ExitCode.USAGE)
    include = list(includes)
    if settings.nixpkgs and not any(i.startswith("nixpkgs=") for i in include):
        include.append(f"nixpkgs={settings.nixpkgs}")
    flake = flake or (settings.flake if not configuration else None)
    if flake:
        ref, sep, attr = flake.partition("#")
        if not sep or not attr:
            raise RehearseError(
                f"flake reference {flake!r} names no configuration.",
                hint="write --flake PATH#NAME, e.g. --flake .#fripon",
                exit_code=ExitCode.USAGE,
            )
        if not _is_uri(ref):
            local = _absolute(Path(ref or "."))
            if stat_or_none(local / "flake.nix") is None:
                raise RehearseError(f"no flake.nix in {one_line(str(local))}.", exit_code=ExitCode.USAGE)
            ref = str(local)
        return Source(flake=ref, attr=attr, include=tuple(include))
    path = _absolute(Path(configuration)) if configuration else settings.configuration
    if path is None:
        raise RehearseError(
            "which configuration?",
            hint='rehearse up ./configuration.nix, rehearse up --flake .#NAME, or configuration = "…" in rehearse.toml',
            exit_code=ExitCode.USAGE,
        )
    st = stat_or_none(path)
    if st is None:
        raise RehearseError(
            f"{one_line(str(path))}: no such file.",
            hint="give the path of the server's configuration.nix",
            exit_code=ExitCode.USAGE,
        )
    if stat.S_ISDIR(st.st_mode):
        path = _configuration_in(path)
    return Source(configuration=path, include=tuple(include))


def _configuration_in(directory: Path) -> Path:
    """The configuration of `up DIR`: DIR/configuration.nix, else
    DIR/default.nix; neither is a usage error that says so (Nix would only
    say that it cannot find <nixpkgs> to import DIR)."""
    for name in ("configuration.nix", "default.nix"):
        if stat_or_none(directory / name) is not None:
            return directory / name
    shown = one_line(str(directory))
    flake = stat_or_none(directory / "flake.nix") is not None
    raise RehearseError(
        f"no configuration.nix in {shown}" + (" (it has a flake.nix)." if flake else ", and no flake.nix."),
        hint=f"rehearse up --flake {shown}#NAME" if flake else "give the path of the server's configuration.nix",
        exit_code=ExitCode.USAGE,
    )


def merge_include(recorded: tuple[str, ...], new: list[str]) -> tuple[str, ...]:
    """The search path `recorded`, with each new `-I prefix=…` replacing the
    recorded entry of the same prefix (nixpkgs=… replaces nixpkgs=…)."""
    prefixes = {i.split("=", 1)[0] for i in new if "=" in i}
    kept = [i for i in recorded if "=" not in i or i.split("=", 1)[0] not in prefixes]
    return (*new, *(i for i in kept if i not in new))

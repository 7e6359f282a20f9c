"""The plan of a deploy, as a person reads it before saying yes: which
packages change version, come or go, how the closure grows, and which units
the switch would stop, restart, reload or start (the way nvd and dix show a
closure diff, followed by what `switch-to-configuration dry-activate` says).

The facts are gathered as plain values (ClosureDiff, Units, each with a
to_json() for a machine-readable outcome); render() turns them into a few
aligned lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rehearse import nix
from rehearse.output import style

# --- closure diff ---------------------------------------------------------

_NAME = re.compile(r"^/nix/store/[0-9a-z]{32}-(?P<name>.+)$")
_VERSIONED = re.compile(r"^(?P<pname>.+?)-(?P<version>[0-9][^-]*(?:-[^-]+)*)$")
# A multi-output package's other outputs are named NAME-VERSION-OUTPUT
# (openssh-9.2p1-man): the output is not part of the version, else one
# upgrade would read "9.2p1, 9.2p1-man → 9.3p1, 9.3p1-man".
_OUTPUT = re.compile(r"-(?:bin|dev|devdoc|doc|debug|info|lib|man|out|static|terminfo)$")


def store_name(path: str) -> str:
    m = _NAME.match(path)
    return m.group("name") if m else path


def split_name(path: str) -> tuple[str, str]:
    """pname and version of a store path's name, as `nix-store`'s names go."""
    name = store_name(path)
    v = _VERSIONED.match(name)
    return (v.group("pname"), v.group("version")) if v else (name, "")


def _version(path: str) -> tuple[str, str]:
    pname, version = split_name(path)
    bare = _OUTPUT.sub("", version)
    return pname, bare or version


@dataclass(frozen=True)
class ClosureDiff:
    """Two system closures compared by package name (pname) and version.
    Every name is here, NixOS plumbing included; what counts as a package is
    decided when the diff is shown (is_plumbing)."""

    changed: list[tuple[str, str, str]]  # pname, old version(s), new version(s)
    added: list[tuple[str, str]]  # pname, version(s): new in the closure
    removed: list[tuple[str, str]]  # pname, version(s): gone from it
    rebuilt: list[tuple[str, str]]  # pname, version(s): same on both sides, other store paths
    size_delta: int  # bytes (NAR size) the new closure has more than the old one
    added_paths: list[str] = field(default_factory=list)  # store paths the new closure adds
    removed_paths: list[str] = field(default_factory=list)  # store paths it no longer has

    def to_json(self) -> dict[str, Any]:
        view = _View.of(self)
        return {
            "changed": [{"name": n, "old": o, "new": v} for n, o, v in view.changed],
            "added": [{"name": n, "version": v} for n, v in view.added],
            "removed": [{"name": n, "version": v} for n, v in view.removed],
            "rebuilt": view.rebuilt,
            "config": view.plumbing,  # NixOS plumbing: generated files, units, the toplevel
            "size_delta": self.size_delta,
            "added_paths": self.added_paths,
            "removed_paths": self.removed_paths,
        }


def human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def closure_diff(old: Path | None, new: Path) -> ClosureDiff:
    """What changes between two system closures, by package name and version
    (the way nvd and `nix store diff-closures` present it)."""
    new_c = nix.closure(new)
    old_c = nix.closure(old) if old is not None and old.exists() else []
    added_paths = sorted(set(new_c) - set(old_c))
    removed_paths = sorted(set(old_c) - set(new_c))
    size = nix.sizes(added_paths + removed_paths)

    def versions(paths: list[str]) -> dict[str, set[str]]:
        by: dict[str, set[str]] = {}
        for p in paths:
            pname, version = _version(p)
            by.setdefault(pname, set()).add(version)
        return by

    def joined(vs: set[str]) -> str:
        return ", ".join(sorted(v for v in vs if v))

    before, after = versions(removed_paths), versions(added_paths)
    changed: list[tuple[str, str, str]] = []
    rebuilt: list[tuple[str, str]] = []
    for pname in sorted(set(before) & set(after)):
        if before[pname] == after[pname]:
            rebuilt.append((pname, joined(after[pname])))
        else:
            changed.append((pname, joined(before[pname]), joined(after[pname])))
    return ClosureDiff(
        changed=changed,
        added=[(n, joined(after[n])) for n in sorted(set(after) - set(before))],
        removed=[(n, joined(before[n])) for n in sorted(set(before) - set(after))],
        rebuilt=rebuilt,
        size_delta=sum(size[p] for p in added_paths) - sum(size[p] for p in removed_paths),
        added_paths=added_paths,
        removed_paths=removed_paths,
    )


# What is a package. A system closure is full of store paths that are no
# package anyone installed but the NixOS configuration itself: /etc and its
# files, unit files, activation and helper scripts, the toplevel. Nixpkgs
# names packages NAME-VERSION; NixOS names its generated files without a
# version (etc, etc-hosts, unit-sshd.service, sshd_config, system-path,
# users-groups.json, activate, closure-info, sshd-pre-start …). So the rule:
# a name without a version is plumbing, and so are the few generated names
# that carry one (the toplevel nixos-system-HOST-VERSION, unit files and
# /etc entries whose name happens to contain a number, derivations). A
# versionless package (a writeShellScriptBin script) is counted as
# plumbing too: it is part of the configuration rather than of nixpkgs, and
# --verbose lists every store path anyway.
_PLUMBING = re.compile(
    r"^(?:nixos-system-.*|unit-.*|etc|etc-.*|system-path|system-units|user-units|activate|dry-activate"
    r"|closure-info|.*-(?:pre|post)-start|.*\.(?:drv|conf|json|service|socket|timer|target|mount|slice))$"
)


def is_plumbing(pname: str, version: str) -> bool:
    return not version or bool(_PLUMBING.match(pname)) or bool(_PLUMBING.match(f"{pname}-{version}"))


@dataclass(frozen=True)
class _View:
    """A ClosureDiff as shown: packages apart from plumbing, each sorted by name."""

    changed: list[tuple[str, str, str]]
    added: list[tuple[str, str]]
    removed: list[tuple[str, str]]
    rebuilt: list[str]  # packages only
    plumbing: list[str]  # every plumbing name that changed in any way

    @classmethod
    def of(cls, diff: ClosureDiff) -> _View:
        plumbing = {n for n, old, new in diff.changed if is_plumbing(n, old) and is_plumbing(n, new)}
        plumbing |= {n for n, v in (*diff.added, *diff.removed, *diff.rebuilt) if is_plumbing(n, v)}
        return cls(
            changed=sorted(c for c in diff.changed if c[0] not in plumbing),
            added=sorted(a for a in diff.added if a[0] not in plumbing),
            removed=sorted(r for r in diff.removed if r[0] not in plumbing),
            rebuilt=sorted(n for n, _ in diff.rebuilt if n not in plumbing),
            plumbing=sorted(plumbing),
        )


# --- units ----------------------------------------------------------------


@dataclass(frozen=True)
class Units:
    """What `switch-to-configuration dry-activate` says the switch would do
    to systemd units. The lists are as printed: a changed unit that is
    stopped before activation and started after it is in both stop and start
    (render() shows it as a restart)."""

    stop: tuple[str, ...] = ()
    restart: tuple[str, ...] = ()
    reload: tuple[str, ...] = ()
    start: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()  # changed, but left running (restartIfChanged = false)
    swap_off: tuple[str, ...] = ()  # swap devices gone from the configuration
    restart_systemd: bool = False  # PID 1 re-executes (new systemd or system.conf)
    activate: bool = False  # the activation script would run: the dry run got that far
    other: tuple[str, ...] = ()  # other `would …` lines (the activation script's own dry run)

    def to_json(self) -> dict[str, Any]:
        return {
            "stop": list(self.stop),
            "restart": list(self.restart),
            "reload": list(self.reload),
            "start": list(self.start),
            "not_stopped": list(self.skip),
            "swap_off": list(self.swap_off),
            "restart_systemd": self.restart_systemd,
            "other": list(self.other),
        }

    @property
    def cycled(self) -> tuple[str, ...]:
        """Units stopped before the activation and started after it."""
        return tuple(u for u in self.stop if u in self.start)


# The lines of switch-to-configuration-ng's dry run (nixpkgs
# pkgs/by-name/sw/switch-to-configuration-ng/src/src/main.rs; the Perl one
# printed the same), and of the rig's mini implementation:
#   would stop the following units: a.service, b.service
#   would NOT stop the following changed units: c.service
#   would stop swap device: /dev/vdb
#   would activate the configuration...
#   would restart systemd
#   would reload the following units: …
#   would restart the following units: …
#   would start the following units: …
_UNIT_LIST = re.compile(r"^would (stop|restart|reload|start) the following units: (.*)$")
_SKIPPED = re.compile(r"^would NOT stop the following changed units: (.*)$")
_SWAP = re.compile(r"^would stop swap device: (.*)$")


def parse_dry_activate(text: str) -> Units:
    """The units a switch would touch, from dry-activate's output (stderr;
    lines that do not start with "would " are ignored)."""
    lists: dict[str, list[str]] = {"stop": [], "restart": [], "reload": [], "start": [], "skip": [], "swap": []}
    other: list[str] = []
    restart_systemd = activate = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("would "):
            continue
        if m := _UNIT_LIST.match(line):
            lists[m.group(1)] += _names(m.group(2))
        elif m := _SKIPPED.match(line):
            lists["skip"] += _names(m.group(1))
        elif m := _SWAP.match(line):
            lists["swap"].append(m.group(1).strip())
        elif line == "would restart systemd":
            restart_systemd = True
        elif line.startswith("would activate the configuration"):
            activate = True
        else:
            other.append(line)
    return Units(
        stop=tuple(lists["stop"]),
        restart=tuple(lists["restart"]),
        reload=tuple(lists["reload"]),
        start=tuple(lists["start"]),
        skip=tuple(lists["skip"]),
        swap_off=tuple(lists["swap"]),
        restart_systemd=restart_systemd,
        activate=activate,
        other=tuple(other),
    )


def _names(listed: str) -> list[str]:
    return [u.strip() for u in listed.split(",") if u.strip()]


# --- rendering ------------------------------------------------------------

_FEW_NAMES = 4  # rebuilt and config names shown without --verbose
_FEW_UNITS = 8  # units of one verb shown without --verbose
_KEY_WIDTH = 20  # the name column stops growing here; a longer name pushes its own row only


@dataclass(frozen=True)
class _Row:
    mark: str  # "+", "-", "~" or " "
    key: str
    value: str
    colour: tuple[str, ...] = ()  # the key's style


def render(diff: ClosureDiff, units: Units, *, verbose: bool = False) -> list[str]:
    """The plan as aligned lines: version changes, added and removed
    packages, the rebuilt rest, the size change, then the units by verb in
    the order the switch acts (stop, restart, reload, start). Short for a
    small change; `verbose` lists every name, unit and store path."""
    view = _View.of(diff)
    rows = [_Row(" ", n, f"{old or '?'} → {new or '?'}", ("yellow",)) for n, old, new in view.changed]
    rows += [_Row("+", n, v, ("green",)) for n, v in view.added]
    rows += [_Row("-", n, v, ("red",)) for n, v in view.removed]
    # Rebuilt packages (same version, built anew because a dependency
    # changed) apart from the configuration's own files, which change with
    # almost every deploy: a count and a few names of each.
    for key, names in (("rebuilt", view.rebuilt), ("config", view.plumbing)):
        if names:
            rows.append(_Row("~", key, _few(names, _FEW_NAMES, verbose, count=True), ("dim",)))
    sign = "+" if diff.size_delta >= 0 else "-"
    rows.append(
        _Row(
            " ",
            "closure",
            f"{sign}{human(abs(diff.size_delta))} "
            f"({len(diff.added_paths)} paths added, {len(diff.removed_paths)} removed)",
        )
    )
    rows += _unit_rows(units, verbose)

    width = min(max(len(r.key) for r in rows), _KEY_WIDTH)
    out = []
    for r in rows:
        mark = style(r.mark, *r.colour) if r.mark != " " else " "
        key = style(r.key, *r.colour, "bold") + " " * max(width - len(r.key), 0)
        out.append(f"  {mark} {key}  {r.value}")
    if verbose:
        for title, mark, paths, colour in (
            ("added", "+", diff.added_paths, "green"),
            ("removed", "-", diff.removed_paths, "red"),
        ):
            if paths:
                out.append(f"  {title} store paths ({len(paths)}):")
                out += [f"    {style(mark, colour)} {p}" for p in paths]
    return out


def _unit_rows(units: Units, verbose: bool) -> list[_Row]:
    cycled = set(units.cycled)
    by_verb = {
        "stop": [u for u in units.stop if u not in cycled],
        # Stopped before activation, started after: to the reader a restart.
        "restart": [*units.restart, *cycled],
        "reload": list(units.reload),
        "start": [u for u in units.start if u not in cycled],
    }
    colours = {"stop": ("red",), "restart": ("yellow",), "reload": ("yellow",), "start": ("green",)}
    rows = [_Row(" ", verb, _listing(names, verbose), colours[verb]) for verb, names in by_verb.items() if names]
    if units.restart_systemd:
        rows.append(_Row(" ", "restart", "systemd (PID 1 re-executes)", ("yellow",)))
    if units.skip:
        rows.append(_Row(" ", "keep", _listing(list(units.skip), verbose) + " (changed, left running)"))
    if units.swap_off:
        rows.append(_Row(" ", "swapoff", ", ".join(units.swap_off), ("red",)))
    rows += [_Row(" ", "note", line) for line in units.other]
    if not rows and units.activate:
        rows.append(_Row(" ", "units", "none stopped, restarted, reloaded or started"))
    return rows


def _listing(names: list[str], verbose: bool) -> str:
    # Sorted as switch-to-configuration sorts them.
    return _few(sorted(set(names), key=str.lower), _FEW_UNITS, verbose)


def _few(names: list[str], few: int, verbose: bool, *, count: bool = False) -> str:
    """`names`, or the first `few` of them and how many more: "a, b, … (3
    more)", or with `count` "5 (a, b, …)"."""
    if verbose or len(names) <= few:
        return f"{len(names)} ({', '.join(names)})" if count else ", ".join(names)
    if count:
        return f"{len(names)} ({', '.join(names[:few])}, …)"
    return ", ".join(names[:few]) + f", … ({len(names) - few} more)"

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

from rehearse.core.output import style
from rehearse.host import nix

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


def closure_diff(old: Path | None, new: Path, new_closure: list[str] | None = None) -> ClosureDiff:
    """What changes between two system closures, by package name and version
    (the way nvd and `nix store diff-closures` present it); `new_closure`:
    the new one's, when the caller has already asked Nix for it."""
    new_c = new_closure if new_closure is not None else nix.closure(new)
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


# --- units planned on the host -------------------------------------------
#
# The same decisions, made on the host from the two systems' unit files
# instead of by `switch-to-configuration dry-activate` in the guest: the VM
# shares the host's store, so the running system's toplevel is normally on
# the host too. The rules are switch-to-configuration-ng's (nixpkgs
# pkgs/by-name/sw/switch-to-configuration-ng/src/src/main.rs), plus the rig's
# mini implementation's explicit start of new units (real starts them by
# restarting the active targets, which its dry run does not show).

_UNIT_DIR = "etc/systemd/system"
_TEMPLATE = re.compile(r"^(?P<name>.*)@[^.]*\.(?P<kind>.*)$")

UnitInfo = dict[str, dict[str, list[str]]]  # section → key → values, as ng parses a unit

# Targets active on a booted system; units they want (transitively) count as
# active (the host cannot ask the guest's systemd). The rig's mini looks at
# the first four.
_ACTIVE_TARGETS = (
    "multi-user.target",
    "default.target",
    "sysinit.target",
    "basic.target",
    "sockets.target",
    "timers.target",
    "paths.target",
    "local-fs.target",
    "remote-fs.target",
    "swap.target",
    "network.target",
    "getty.target",
)
# ng: "These cannot be restarted directly"; slices get their properties on
# daemon-reload.
_NOT_RESTARTED = ("sysinit.target", "basic.target", "multi-user.target", "graphical.target")
_SLEEP_TARGETS = ("suspend.target", "hibernate.target", "hybrid-sleep.target")
# ng's compare_units: [Unit] keys whose change restarts nothing.
_UNIT_IGNORED = frozenset(
    {
        "X-Reload-Triggers",
        "Description",
        "Documentation",
        "OnFailure",
        "OnSuccess",
        "OnFailureJobMode",
        "IgnoreOnIsolate",
        "StopWhenUnneeded",
        "RefuseManualStart",
        "RefuseManualStop",
        "AllowIsolate",
        "CollectMode",
        "SourcePath",
    }
)


def parse_unit_text(text: str, into: UnitInfo) -> None:
    """Add one unit file or drop-in to `into`, as ng's parse_systemd_ini:
    a key may repeat (its values add up), an empty value clears the values
    before it, [Install] is skipped, a quoted value loses its quotes."""
    section: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        if section in (None, "Install") or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        values = into.setdefault(str(section), {}).setdefault(key, [])
        if value:
            values.append(value)
        else:
            values.clear()


def _flag(info: UnitInfo, section: str, key: str, default: bool) -> bool:
    """ng's parse_systemd_bool: the key's last value, true when 1/yes/true/on.
    NixOS writes X-RestartIfChanged, X-ReloadIfChanged, X-StopIfChanged and
    X-NotSocketActivated under [Service]; the rig's mini writes every X- key
    under [Unit], so an X- key missing from its section is looked up in the
    other one."""
    values = info.get(section, {}).get(key)
    if values is None and key.startswith("X-"):
        values = info.get("Unit" if section == "Service" else "Service", {}).get(key)
    return values[-1] in ("1", "yes", "true", "on") if values else default


def compare_units(old: UnitInfo, new: UnitInfo) -> str:
    """Whether a change is "equal", "reload" or "restart", as ng's
    compare_units: a change of X-Reload-Triggers only (or of a mount's
    Options only) reloads, a change of one of the ignored [Unit] keys does
    nothing, any other change restarts."""
    result = "equal"
    for section in old.keys() | new.keys():
        before, after = old.get(section, {}), new.get(section, {})
        for key in before.keys() | after.keys():
            if before.get(key) == after.get(key):
                continue
            if section == "Unit" and key in _UNIT_IGNORED:
                if key == "X-Reload-Triggers" and key in after:
                    result = "reload"
            elif section == "Mount" and key == "Options" and key in before and key in after:
                result = "reload"
            else:
                return "restart"
    return result


@dataclass(frozen=True)
class _System:
    """One toplevel's units: the name of each file in etc/systemd/system
    (and of each template instance its .wants/.requires name) → whether it
    is masked (a link to /dev/null)."""

    unit_dir: Path
    masked: dict[str, bool]

    @classmethod
    def read(cls, toplevel: Path) -> _System | None:
        """None when a unit file is missing (the system was collected)."""
        unit_dir = toplevel / _UNIT_DIR
        if not toplevel.is_dir():
            return None
        masked: dict[str, bool] = {}
        instances: list[str] = []
        for entry in sorted(unit_dir.iterdir()) if unit_dir.is_dir() else []:
            if entry.name.endswith((".wants", ".requires")) and entry.is_dir():
                instances += [link.name for link in entry.iterdir() if _TEMPLATE.match(link.name)]
            elif "." in entry.name and not entry.name.endswith(".d"):
                if not entry.exists():
                    return None
                masked[entry.name] = entry.resolve() == Path("/dev/null")
        system = cls(unit_dir, masked)
        for instance in instances:
            if system.file(instance).exists():
                masked.setdefault(instance, False)
        return system

    def has(self, unit: str) -> bool:
        """ng: the unit's file exists and is not masked."""
        return unit in self.masked and not self.masked[unit]

    def file(self, unit: str) -> Path:
        """The unit's file, or its template's for an instance without one."""
        path = self.unit_dir / unit
        m = _TEMPLATE.match(unit)
        if not path.exists() and m:
            return self.unit_dir / f"{m['name']}@.{m['kind']}"
        return path

    def info(self, unit: str) -> UnitInfo:
        """ng's parse_unit: the file, its drop-ins (FILE.d/*.conf) and, for
        an instance, the instance's own drop-ins."""
        base = self.file(unit)
        info: UnitInfo = {}
        parse_unit_text(base.read_text(), info)
        dirs = [Path(f"{base}.d")] + ([self.unit_dir / f"{unit}.d"] if base.name != unit else [])
        for dropin in (conf for d in dirs for conf in sorted(d.glob("*.conf"))):
            parse_unit_text(dropin.read_text(), info)
        return info

    def wanted(self) -> set[str]:
        """Units the active targets want or require, transitively (the
        .wants/.requires links and Wants=/Requires=/BindsTo=)."""
        default = self.unit_dir / "default.target"
        roots = [*_ACTIVE_TARGETS, *([default.resolve().name] if default.exists() else [])]
        seen: set[str] = set()
        todo = list(roots)
        while todo:
            unit = todo.pop()
            if unit in seen or self.masked.get(unit):
                continue
            seen.add(unit)
            todo += self._dependencies(unit)
        return seen

    def _dependencies(self, unit: str) -> list[str]:
        deps = [link.name for kind in (".wants", ".requires") for link in self._links(unit + kind)]
        if self.has(unit):
            section = self.info(unit).get("Unit", {})
            deps += [d for key in ("Wants", "Requires", "BindsTo") for v in section.get(key, []) for d in v.split()]
        return deps

    def _links(self, dirname: str) -> list[Path]:
        d = self.unit_dir / dirname
        return sorted(d.iterdir()) if d.is_dir() else []

    def active(self) -> set[str]:
        """Units taken to be active while this system runs: the wanted ones
        with a file, but for a oneshot without RemainAfterExit (it ran and
        is inactive again)."""
        return {u for u in self.wanted() if self.has(u) and not _ran_and_exited(self.info(u))}


def active_units(toplevel: Path) -> set[str]:
    """The units taken to be active while `toplevel` runs (see units_between)."""
    system = _System.read(toplevel)
    return system.active() if system is not None else set()


def _ran_and_exited(info: UnitInfo) -> bool:
    service = info.get("Service", {})
    return service.get("Type", [""])[-1] == "oneshot" and not _flag(info, "Service", "RemainAfterExit", False)


@dataclass
class _Decisions:
    """ng's units_to_stop, _start, _restart, _reload, _skip and _filter."""

    stop: set[str] = field(default_factory=set)
    start: set[str] = field(default_factory=set)
    restart: set[str] = field(default_factory=set)
    reload: set[str] = field(default_factory=set)
    skip: set[str] = field(default_factory=set)
    hidden: set[str] = field(default_factory=set)  # started targets, not shown

    def shown(self, units: set[str]) -> tuple[str, ...]:
        return tuple(sorted(units - self.hidden, key=str.lower))


def units_between(old: Path, new: Path) -> Units | None:
    """What switching from the system `old` to `new` does to units, decided
    on the host from their unit files as switch-to-configuration-ng decides
    in the guest; None when `old`'s files are not on the host (collected),
    so the guest must plan.

    Approximated, since the host cannot ask the guest's systemd:
    - active units are the units the usual active targets want in `old`
      (_ACTIVE_TARGETS, transitively), minus oneshots without
      RemainAfterExit; a unit started by hand or a failed one is not seen;
    - new units, and changed inactive ones, are started when an active
      target of `new` wants them (what the rig's mini prints; real starts
      them by restarting the active targets and does not print it);
    - PID 1 is taken to be `old`'s systemd (its toplevel's `systemd` link);
    - the activation script's own dry run and the units it asks to restart
      or reload (/run/nixos/activation-*-list) are not known.
    """
    before, after = _System.read(old), _System.read(new)
    if before is None or after is None:
        return None
    d = _Decisions()
    active = before.active()
    for unit in sorted(active):
        _plan_active(d, before, after, unit, active)
    _plan_started(d, before, after, active)
    swaps = _plan_filesystems(d, old, new)
    return Units(
        stop=d.shown(d.stop),
        restart=d.shown(d.restart),
        reload=d.shown(d.reload),
        start=d.shown(d.start),
        skip=d.shown(d.skip),
        swap_off=tuple(swaps),
        restart_systemd=_restarts_systemd(old, new),
        activate=True,
    )


def _plan_active(d: _Decisions, before: _System, after: _System, unit: str, active: set[str]) -> None:
    """ng's loop over the active units: a removed (or masked) one stops
    unless X-StopOnRemoval=false; an active target is started again (not
    shown) and stopped first with X-StopOnReconfiguration; another unit is
    compared with its new version."""
    if not after.has(unit):
        if _flag(before.info(unit), "Unit", "X-StopOnRemoval", True):
            d.stop.add(unit)
        return
    new = after.info(unit)
    if unit.endswith(".target"):
        manual = _flag(new, "Unit", "RefuseManualStart", False) or _flag(new, "Unit", "X-OnlyManualStart", False)
        if unit not in _SLEEP_TARGETS and not manual:
            d.start.add(unit)
            d.hidden.add(unit)
        if _flag(new, "Unit", "X-StopOnReconfiguration", False):
            d.stop.add(unit)
        return
    change = compare_units(before.info(unit), new)
    if change == "restart":
        _plan_modified(d, after, unit, new, active)
    elif change == "reload" and unit not in d.restart:
        d.reload.add(unit)


def _plan_modified(d: _Decisions, after: _System, unit: str, new: UnitInfo, active: set[str]) -> None:
    """ng's handle_modified_unit, for a unit whose change needs a restart."""
    if unit in _NOT_RESTARTED or unit.endswith((".unit", ".slice", ".socket")) or unit.startswith("systemd-nspawn@"):
        return
    if unit.endswith(".mount"):
        # / and /nix cannot be unmounted: remounted instead.
        (d.reload if unit in ("-.mount", "nix.mount") else d.restart).add(unit)
    elif _flag(new, "Service", "X-ReloadIfChanged", False) and unit not in d.restart and unit not in d.stop:
        d.reload.add(unit)
    elif (
        not _flag(new, "Service", "X-RestartIfChanged", True)
        or _flag(new, "Unit", "RefuseManualStop", False)
        or _flag(new, "Unit", "X-OnlyManualStart", False)
    ):
        d.skip.add(unit)
    elif not _flag(new, "Service", "X-StopIfChanged", True) or not unit.endswith(".service"):
        d.restart.add(unit)
        d.reload.discard(unit)
    else:
        _stop_and_start(d, after, unit, new, active)


def _stop_and_start(d: _Decisions, after: _System, unit: str, new: UnitInfo, active: set[str]) -> None:
    """A changed service stops before the activation and starts after it;
    when socket-activated (an active socket of its own), its sockets are
    stopped and started instead, unless X-NotSocketActivated."""
    base = after.file(unit).name.rsplit(".", 1)[0]
    sockets = " ".join(new.get("Service", {}).get("Sockets", [])).split() or [f"{base}.socket"]
    socket_activated = False
    for socket in (s for s in sockets if s in active):
        d.stop.add(socket)
        if (after.unit_dir / socket).exists():
            d.start.add(socket)
            socket_activated = True
    if _flag(new, "Service", "X-NotSocketActivated", False):
        socket_activated = False
    if not socket_activated:
        d.start.add(unit)
    d.stop.add(unit)
    d.reload.discard(unit)


def _plan_started(d: _Decisions, before: _System, after: _System, active: set[str]) -> None:
    """The rig's mini: a new unit, or a changed one that is not running, is
    started when an active target of the new system wants it (targets
    themselves are started silently, as ng's filtered targets)."""
    wanted = after.wanted()
    for unit in sorted(u for u in wanted if after.has(u) and u not in active and not u.endswith(".target")):
        if not before.has(unit) or compare_units(before.info(unit), after.info(unit)) != "equal":
            d.start.add(unit)


def _plan_filesystems(d: _Decisions, old: Path, new: Path) -> list[str]:
    """ng's fstab comparison: a file system gone is unmounted, one whose
    device or type changed is mounted again (/ and /nix only remounted, or
    left alone), one whose options changed is remounted. Returns the swap
    devices gone from the fstab (swapped off)."""
    (fs_before, swaps_before), (fs_after, swaps_after) = _fstab(old), _fstab(new)
    for mountpoint, (device, fstype, options) in fs_before.items():
        unit = mount_unit(mountpoint)
        if mountpoint not in fs_after:
            d.stop.add(unit)
            continue
        new_device, new_fstype, new_options = fs_after[mountpoint]
        if (device, fstype) != (new_device, new_fstype):
            if mountpoint not in ("/", "/nix"):
                d.restart.add(unit)
            else:
                (d.reload if options != new_options else d.skip).add(unit)
        elif options != new_options:
            d.reload.add(unit)
    return [s for s in swaps_before if s not in swaps_after]


def _fstab(toplevel: Path) -> tuple[dict[str, tuple[str, str, str]], list[str]]:
    """ng's parse_fstab: mount point → (device, type, options), and the swap
    devices; a line with a '#' anywhere is skipped."""
    path = toplevel / "etc" / "fstab"
    filesystems: dict[str, tuple[str, str, str]] = {}
    swaps: list[str] = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        fields = line.split()
        if "#" in line or len(fields) < 3:
            continue
        if fields[2] == "swap":
            swaps.append(fields[0])
        else:
            filesystems[fields[1]] = (fields[0], fields[2], fields[3] if len(fields) > 3 else "")
    return filesystems, swaps


def mount_unit(path: str) -> str:
    """The mount unit of `path`, as `systemd-escape --suffix=mount -p`."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return "-.mount"

    def escape(i: int, c: str) -> str:
        ok = c.isascii() and (c.isalnum() or c in ":_.") and not (i == 0 and c == ".")
        return c if ok else "".join(f"\\x{b:02x}" for b in c.encode())

    joined = "/".join(parts)
    return "".join("-" if c == "/" else escape(i, c) for i, c in enumerate(joined)) + ".mount"


def _restarts_systemd(old: Path, new: Path) -> bool:
    """ng re-executes PID 1 when /proc/1/exe is not the new system's
    systemd (lib/systemd/systemd) or /etc/systemd/system.conf resolves
    elsewhere than the new one's. The old toplevel's `systemd` link stands
    in for /proc/1/exe; without one on either side (the rig's guest runs
    its image's systemd) the package is not compared."""

    def resolved(path: Path) -> Path | None:
        return path.resolve() if path.exists() else None

    pid1 = [resolved(top / "systemd" / "lib" / "systemd" / "systemd") for top in (old, new)]
    conf = [resolved(top / "etc" / "systemd" / "system.conf") for top in (old, new)]
    return (None not in pid1 and pid1[0] != pid1[1]) or conf[0] != conf[1]


def dry_activate_text(units: Units) -> str:
    """The lines switch-to-configuration-ng prints in a dry run that found
    `units`, in its order (parse_dry_activate reads them back)."""
    lines = [f"would stop the following units: {', '.join(units.stop)}"] if units.stop else []
    if units.skip:
        lines.append(f"would NOT stop the following changed units: {', '.join(units.skip)}")
    lines += [f"would stop swap device: {device}" for device in units.swap_off]
    lines.append("would activate the configuration...")
    lines += list(units.other)
    if units.restart_systemd:
        lines.append("would restart systemd")
    for verb, names in (("reload", units.reload), ("restart", units.restart), ("start", units.start)):
        if names:
            lines.append(f"would {verb} the following units: {', '.join(names)}")
    return "\n".join(lines) + "\n"


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

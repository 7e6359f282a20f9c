"""Commands over several machines: a fleet's `up` (on one private LAN, see
lan.py), `deploy --on/--all`, `down --all` and `destroy --all`.

One thread per machine, each printing under the machine's name
(output.machine); a machine that fails does not stop the others, and a
summary table ends the command. Its exit code is 0 when every machine
succeeded, the machines' own code when they all failed alike, else
ExitCode.PARTIAL (colmena's semantics: what succeeded stays).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rehearse import config
from rehearse.core import output
from rehearse.core.errors import ExitCode, RehearseError, did_you_mean
from rehearse.host import lan, nix, qemu
from rehearse.machines import lifecycle
from rehearse.pipeline import deploy as single
from rehearse.store.state import LanState, VMDir, all_vms, check_name, state_root

T = TypeVar("T")

GiB = 1024**3
EVAL_MEMORY = 2 * GiB  # what one evaluation and build of a NixOS system may take (nixpkgs' evaluator)
DEFAULT_PARALLEL = 10  # colmena's default


@dataclass(frozen=True)
class Outcome:
    """One machine's result in a fleet command."""

    name: str
    ok: bool
    result: str  # "up", "confirmed", "rolled-back", "error" …
    exit_code: int
    seconds: float
    detail: str = ""  # the address on the LAN, the new system, or the error
    report: dict[str, Any] | None = None


def exit_code(outcomes: Sequence[Outcome]) -> int:
    """0 if all succeeded; the failures' code if all failed alike; else PARTIAL."""
    failed = {o.exit_code for o in outcomes if not o.ok}
    if not failed:
        return ExitCode.OK
    if len(failed) == 1 and all(not o.ok for o in outcomes):
        return failed.pop()
    return ExitCode.PARTIAL


def summary(title: str, outcomes: Sequence[Outcome]) -> str:
    """The table that ends a fleet command."""
    width = max(8, *(len(o.name) for o in outcomes))
    lines = [title, f"{'MACHINE':<{width}}  {'RESULT':<12} {'TIME':>7}  DETAIL"]
    for o in outcomes:
        lines.append(f"{o.name:<{width}}  {o.result:<12} {o.seconds:>6.1f}s  {o.detail}")
    failed = [o.name for o in outcomes if not o.ok]
    if failed:
        lines.append(f"failed: {', '.join(failed)}")
    return "\n".join(lines)


def memory_available() -> int:
    """Bytes of memory available (MemAvailable), or a guess if unknown."""
    try:
        for line in open("/proc/meminfo", encoding="ascii"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 4 * GiB


def build_slots(machines: int) -> int:
    """How many evaluations and builds run at once: one per machine, as
    memory and cores allow."""
    return max(1, min(machines, memory_available() // EVAL_MEMORY, os.cpu_count() or 1))


def each(names: Sequence[str], work: Callable[[str], T], workers: int) -> list[T | BaseException]:
    """work(name) for every name, `workers` at a time, each thread printing
    under its machine's name; an exception is returned, not raised."""

    def one(name: str) -> T | BaseException:
        with output.machine(name):
            try:
                return work(name)
            except Exception as e:  # one machine's failure is its outcome, not the command's
                return e

    if len(names) == 1:
        return [one(names[0])]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, names))


def _failure(name: str, e: BaseException, seconds: float) -> Outcome:
    if isinstance(e, RehearseError):
        report = e.as_report()
        first = e.message.splitlines()[0] if e.message else ""
        return Outcome(name, False, str(report["result"]), int(e.exit_code), seconds, first, report)
    report = {"result": "error", "error": f"{type(e).__name__}: {e}", "exit_code": int(ExitCode.FAILED)}
    return Outcome(name, False, "error", ExitCode.FAILED, seconds, f"internal error: {type(e).__name__}: {e}", report)


# --- which machines ----------------------------------------------------------


def select(on: str | None, every: bool, machines: Iterable[config.Machine], what: str) -> list[str]:
    """The VMs a fleet command works on: `--on web,db` (names), `--on @tag`
    (rehearse.toml's machines with that tag), or `--all` (rehearse.toml's
    machines if it has any, else every VM). Unknown names and tags are errors."""
    fleet = list(machines)
    existing = [d.name for d in all_vms()]
    if every:
        names = [m.name for m in fleet] if fleet else existing
        if not names:
            raise RehearseError(f"no VMs to {what}.", hint="`rehearse up` makes them", exit_code=ExitCode.USAGE)
        return names
    assert on is not None
    names = []
    for word in (w.strip() for w in on.split(",")):
        if not word:
            continue
        if word.startswith("@"):
            tagged = [m.name for m in fleet if word[1:] in m.tags]
            if not tagged:
                tags = sorted({t for m in fleet for t in m.tags})
                raise RehearseError(
                    f"no machine in rehearse.toml has the tag {word[1:]!r}.",
                    hint=f"tags: {', '.join(tags)}" if tags else "tag machines with tags = [...] in [machines.NAME]",
                    exit_code=ExitCode.USAGE,
                )
            names += tagged
        else:
            check_name(word)
            if word not in existing:
                raise RehearseError(
                    f"no VM named {word!r}" + did_you_mean(word, existing),
                    hint=f"VMs: {', '.join(existing)}" if existing else "`rehearse up` makes them",
                    exit_code=ExitCode.USAGE,
                )
            names.append(word)
    if not names:
        raise RehearseError("--on names no machine.", hint="--on web,db or --on @tag", exit_code=ExitCode.USAGE)
    return list(dict.fromkeys(names))


# --- up ------------------------------------------------------------------------


@dataclass(frozen=True)
class Machine:
    """A machine to bring up: from rehearse.toml's [machines.NAME] (named)
    or from the command line (named after its host name)."""

    source: nix.Source
    name: str | None = None
    forwards: tuple[qemu.Forward, ...] = ()
    lan_interface: str | None = None


@dataclass(frozen=True)
class UpRequest:
    machines: tuple[Machine, ...]
    forwards: tuple[qemu.Forward, ...]  # every machine's (rehearse.toml's top-level forward)
    gui: bool
    ssh_timeout: float
    rebuild: bool = False
    isolate: bool = False  # every machine cut off from the host and the outside (the LAN stays)


def up(req: UpRequest) -> int:
    """Evaluate every machine (in parallel), give each its place on the LAN,
    build and boot them all (in parallel), and sum up. Nothing is built or
    booted when a machine does not evaluate, or when their names, forwards,
    addresses or memory clash."""
    root = state_root()
    qemu.check_state_path(root)
    slots = build_slots(len(req.machines))
    labels = [m.name or (m.source.describe()) for m in req.machines]
    output.step(f"evaluating {output.counted(len(req.machines), 'machine')}")
    infos = each(labels, lambda label: nix.vm_info(req.machines[labels.index(label)].source), slots)
    errors = [(label, i) for label, i in zip(labels, infos, strict=True) if isinstance(i, BaseException)]
    if errors:
        raise RehearseError(
            "nothing was built or started: "
            + "; ".join(f"{label} does not evaluate" for label, _ in errors)
            + "\n"
            + "\n".join(f"{label}: {getattr(e, 'message', e)}" for label, e in errors),
            exit_code=ExitCode.CONFIG,
        )
    evaluated = [i for i in infos if isinstance(i, nix.VMInfo)]
    names = [check_name(m.name or i.name) for m, i in zip(req.machines, evaluated, strict=True)]
    for name in names:
        if names.count(name) > 1:
            raise RehearseError(
                f"two machines are named {name!r}.",
                hint="give them different networking.hostName, or name them in rehearse.toml's [machines.NAME]",
                exit_code=ExitCode.USAGE,
            )
    _check_forwards(names, req, evaluated)
    places, overrides = _places(root, names, req.machines, evaluated)
    _check_memory(names, evaluated)

    forced = _changed_lan(names, places)
    start = time.monotonic()
    lifecycle.BUILDS = threading.BoundedSemaphore(slots)

    def boot(name: str) -> Outcome:
        k = names.index(name)
        m, info = req.machines[k], evaluated[k]
        one = lifecycle.UpRequest(
            source=m.source,
            name=name,
            forwards=(*req.forwards, *m.forwards),
            gui=req.gui,
            ssh_timeout=req.ssh_timeout,
            rebuild=req.rebuild or name in forced,
            isolate=req.isolate,
        )
        t = time.monotonic()
        lifecycle.start_vm(one, m.source, info, VMDir(name), places[name], overrides[name])
        address = places[name].state.address
        return Outcome(name, True, "up", 0, time.monotonic() - t, f"{address} on the LAN")

    try:
        with lan.joined(root):  # up before the first build: a missing vde_switch stops nothing half-way
            results = each(names, boot, len(names))
    finally:
        lan.release_hub(root)  # if no VM of it came up
    outcomes = [
        r if isinstance(r, Outcome) else _failure(n, r, time.monotonic() - start)
        for n, r in zip(names, results, strict=True)
    ]
    output.result(summary(f"{output.counted(len(names), 'machine')} in {time.monotonic() - start:.1f} s", outcomes))
    return exit_code(outcomes)


def _check_forwards(names: list[str], req: UpRequest, infos: list[nix.VMInfo]) -> None:
    """A host port goes to one machine."""
    owner: dict[int, str] = {}
    for name, m, info in zip(names, req.machines, infos, strict=True):
        ports = {f.host_port for f in (*req.forwards, *m.forwards) if f.proto == "tcp"}
        ports |= {int(f["host"]["port"]) for f in info.forward_ports if f.get("from", "host") == "host"}
        for port in sorted(ports):
            other = owner.setdefault(port, name)
            if other != name:
                raise RehearseError(
                    f"host port {port} is forwarded to both {other} and {name}.",
                    hint="forward another host port to one of them ([machines.NAME] forward in rehearse.toml); "
                    "a forward at the top of rehearse.toml goes to every machine",
                    exit_code=ExitCode.USAGE,
                )


def _places(
    root: Path, names: list[str], machines: Sequence[Machine], infos: list[nix.VMInfo]
) -> tuple[dict[str, lifecycle.LanPlace], dict[str, list[str]]]:
    """Each machine's place on the LAN, beside the fleet's VMs that exist;
    and the overrides shown for it (its LAN interface is no longer one)."""
    recorded: dict[str, LanState] = {}
    for vmdir in all_vms(root):
        try:
            state = vmdir.load()
        except RehearseError:
            continue
        if state.lan is not None:
            recorded[vmdir.name] = state.lan
    numbers = lan.numbers(names, {n: p.number for n, p in recorded.items()})
    members = [
        lan.member(
            name,
            numbers[name],
            [lan.Candidate(c["name"], c["address"]) for c in info.lan_candidates],
            info.host_name,
            info.domain,
            m.lan_interface,
        )
        for name, m, info in zip(names, machines, infos, strict=True)
    ]
    others = [
        lan.Member(n, p.number, p.interface, p.address, True, p.host or n, p.domain)
        for n, p in recorded.items()
        if n not in names
    ]
    everyone = [*members, *others]
    lan.check_addresses(everyone)
    places, overrides = {}, {}
    for member, info in zip(members, infos, strict=True):
        recorded_place = LanState(member.number, member.interface, member.address, member.host_name, member.domain)
        places[member.name] = lifecycle.LanPlace(recorded_place, lan.settings(member, everyone))
        gone = f"networking.interfaces.{member.interface}:"
        overrides[member.name] = [o for o in info.overrides if not o.startswith(gone)]
    return places, overrides


def _changed_lan(names: list[str], places: dict[str, lifecycle.LanPlace]) -> set[str]:
    """The machines whose VM exists, is not running, and was built with
    other LAN settings (none, or another list of machines): their recorded
    runner would boot without the LAN as it is now, so they are rebuilt."""
    forced = set()
    for name in names:
        vmdir = VMDir(name)
        if not vmdir.exists:
            continue
        try:
            state = vmdir.load()
            recorded = json.loads(vmdir.file("settings.json").read_text()).get("lan")
        except (RehearseError, OSError, ValueError, AttributeError):
            continue
        if state.alive():
            if recorded != places[name].settings:
                output.warn(
                    f"{name} is running with the LAN as it was when it started: "
                    f"`rehearse deploy {name}` gives it the fleet's hosts as they are now"
                )
            continue
        if state.runner and recorded != places[name].settings:
            output.info(f"{name}: built anew from its configuration, for the fleet's LAN as it is now")
            forced.add(name)
    return forced


def _check_memory(names: list[str], infos: list[nix.VMInfo]) -> None:
    """The VMs to boot must fit in the memory available."""
    needed = 0
    for name, info in zip(names, infos, strict=True):
        vmdir = VMDir(name)
        if vmdir.exists:
            try:
                if vmdir.load().alive():
                    continue
            except RehearseError:
                pass
        needed += (info.memory_size or 1024) * 1024**2
    available = memory_available()
    if needed > available:
        raise RehearseError(
            f"the VMs need {needed // 1024**2} MiB of memory and {available // 1024**2} MiB are available; "
            "nothing was started.",
            hint="give the VMs less (virtualisation.vmVariant.virtualisation.memorySize = 1024;) "
            "or bring up fewer machines",
        )


# --- deploy ----------------------------------------------------------------------


def deploy(
    names: list[str],
    parallel: int,
    template: single.DeployRequest,
    checks_of: Callable[[str], tuple[config.Check, ...]],
    as_json: bool,
) -> int:
    """`deploy --on/--all`: each machine's own configuration (the one its VM
    was made from), `parallel` at a time. A machine whose deploy fails is
    rolled back alone (by its own VM); the others keep their new systems."""
    if not template.yes and not template.dry_run and sys.stdin.isatty():
        answer = output.ask(f"deploy to {', '.join(names)}? Each rolls back alone if it fails. [y/N]")
        if answer.strip().lower() not in ("y", "yes"):
            output.info("not deployed; the VMs are unchanged")
            return ExitCode.DECLINED
    start = time.monotonic()

    def one(name: str) -> Outcome:
        t = time.monotonic()
        req = dataclasses.replace(template, name=name, yes=True, checks=checks_of(name))
        report = single.run_deploy(req)
        seconds = time.monotonic() - t
        code = int(report.exit_code or 0)
        return Outcome(
            name, True, report.result or "confirmed", code, seconds, report.new_system or "", report.to_json()
        )

    results = each(names, one, parallel)
    outcomes = [
        r if isinstance(r, Outcome) else _failure(n, r, time.monotonic() - start)
        for n, r in zip(names, results, strict=True)
    ]
    code = exit_code(outcomes)
    table = summary(f"deploy to {output.counted(len(names), 'machine')} in {time.monotonic() - start:.1f} s", outcomes)
    if as_json:
        output.info(table)
        doc = {
            "action": "deploy",
            "result": "ok" if code == 0 else "partial" if code == ExitCode.PARTIAL else "failed",
            "exit_code": int(code),
            "machines": {o.name: o.report for o in outcomes},
        }
        output.result(json.dumps(doc, indent=2))
    else:
        output.result(table)
    return code


# --- down, destroy -----------------------------------------------------------------


def every_vm_of(machines: Iterable[config.Machine]) -> list[str]:
    """The VMs `down --all` and `destroy --all` work on, as `deploy --all`
    picks them: rehearse.toml's machines when it has any (those that have a
    VM; other VMs are left alone), else every VM of the state directory."""
    existing = [d.name for d in all_vms()]
    named = [m.name for m in machines]
    return [n for n in named if n in existing] if named else existing


def every_vm(verb: str, names: list[str], work: Callable[[str], None]) -> int:
    """`down --all`, `destroy --all`: work(name) on each of `names`."""
    if not names:
        output.info("no VMs")
        return ExitCode.OK

    def one(name: str) -> Outcome:
        t = time.monotonic()
        work(name)
        return Outcome(name, True, verb, 0, time.monotonic() - t)

    start = time.monotonic()
    results = each(names, one, len(names))
    outcomes = [
        r if isinstance(r, Outcome) else _failure(n, r, time.monotonic() - start)
        for n, r in zip(names, results, strict=True)
    ]
    output.result(summary(f"{verb}: {output.counted(len(names), 'VM')} in {time.monotonic() - start:.1f} s", outcomes))
    return exit_code(outcomes)

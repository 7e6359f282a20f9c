"""The deploy pipeline, as named steps over a target (target.py: a running
VM, or a real server for `promote`):

  build → plan → push → activate → verify → (roll back)

- plan: what the switch would do — the closure diff, the units stopped,
  restarted, started — shown before anything changes (target.Plan);
- push: the new paths made valid there (target.Pushed): registered in a VM
  that sees the host store, copied to a server;
- activate, verify, roll back: activation.py's protocol, the same on both —
  detached under the other side's PID 1, verified over a connection made
  after the switch, confirmed, or rolled back by the other side itself.

The commands over a VM live here (`deploy`, `rollback`, `generations`);
promote.py runs the same steps over a server.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from rehearse.config import ACTIVATION_TIMEOUT, Check
from rehearse.core import output
from rehearse.core.errors import ExitCode, RehearseError
from rehearse.host import nix, plan, ssh
from rehearse.host.answers import Generations
from rehearse.host.plan import store_name
from rehearse.store import history
from rehearse.store.state import VMDir
from rehearse.targets import activation
from rehearse.targets.activation import Outcome, Verify
from rehearse.targets.target import VM, Plan, Pushed, Server, read_generations


@dataclass(frozen=True)
class DeployRequest:
    name: str
    source: nix.Source | None  # None: the configuration recorded at `up`
    dry_run: bool
    yes: bool
    force_copy: bool
    confirm_timeout: float
    checks: tuple[Check, ...]
    include: tuple[str, ...] = ()  # -I entries; with source None they replace the recorded ones
    verbose: bool = False
    activation_timeout: float = ACTIVATION_TIMEOUT  # seconds switch-to-configuration may take in the guest
    ssh_check: bool = True  # check the server's own sshd after the switch (server_ssh.py)
    evaluated: set[str] | None = None  # gets the files the build evaluated (deploy --watch)


class Report(TypedDict, total=False):
    """The --json document of `deploy` and `rollback`."""

    name: str
    action: str  # "deploy" | "rollback"
    result: str  # "confirmed" | "unchanged" | "dry-run" | "declined" | "rolled-back" | "error"
    exit_code: int
    source: str
    target: str  # rollback on a server: where
    old_system: str | None
    new_system: str
    generation: int | None
    switch_rc: int | None
    failed_units: list[str]
    reason: str | None
    server_failed_assertions: list[str]  # what the server's own system would refuse (the VM's did not)
    durations: dict[str, float]
    store: dict[str, int]  # registered (no copy), copied
    plan: dict[str, Any]
    error: str
    hint: str | None


# --- the steps shared by every target -------------------------------------------


def show_plan(where: str, pl: Plan, *, verbose: bool = False) -> dict[str, Any]:
    """Show the plan; return it for --json."""
    output.step(f"plan for {where}")
    output.info(f"  {pl.current or '(no system)'}\n→ {pl.system}")
    if pl.diff is not None:
        for line in plan.render(pl.diff, pl.units or plan.Units(), verbose=verbose):
            output.info(line)
    else:
        output.info(
            f"  ({pl.current or 'its system'} is not in this machine's store: the units come from its dry-activate)"
        )
    return pl.to_json()


def confirm(question: str, yes: bool) -> bool:
    """The user's go (always, with --yes or without a terminal)."""
    return yes or not sys.stdin.isatty() or output.ask(question).strip().lower() in ("y", "yes")


def ask(question: str, yes: bool) -> bool:
    """A yes the user must give (never taken for granted)."""
    return not yes and sys.stdin.isatty() and output.ask(question).strip().lower() in ("y", "yes")


def must_ask(doing: str, unchanged: str, yes: bool) -> None:
    """A command that changes a real server or destroys VMs asks first:
    without a terminal to ask on, it needs --yes (else USAGE, `unchanged`)."""
    if not yes and not sys.stdin.isatty():
        raise RehearseError(
            f"{doing}, and there is no terminal to ask on: {unchanged}.",
            hint="run it on a terminal to be asked, or add --yes",
            exit_code=ExitCode.USAGE,
        )


def rolled_back(what: str, where: str, current: str, outcome: Outcome) -> str:
    """The message of an activation that did not hold."""
    reason = outcome.reason or ""
    if outcome.failed_units:
        reason += " — failed units: " + ", ".join(outcome.failed_units)
    return f"{what} was rolled back; {where} runs {store_name(current)} again ({reason})."


# --- deploy: a VM -------------------------------------------------------------


def run_deploy(req: DeployRequest) -> Report:
    """build → plan → push → activate → verify (the VM rolls back unless
    confirmed). Returns the outcome; a rolled-back deploy raises, with it."""
    from rehearse.config import merge_include

    vmdir = VMDir(req.name)
    with vmdir.locked("rehearse deploy"):
        vm = VM.running(vmdir)
        source = req.source
        if source is None:
            recorded = nix.Source.from_json(vm.state.source).of_vm(req.name)
            source = dataclasses.replace(recorded, include=merge_include(recorded.include, list(req.include)))
        report: Report = {"name": req.name, "action": "deploy", "source": source.describe(), "durations": {}}
        times = report["durations"]

        # build (beside it: the server's own system, evaluated; and the VM,
        # settled — what an interrupted deploy left pending is rolled back,
        # as it would be at its timeout — and asked what it runs)
        t = time.monotonic()
        output.step(f"building {source.describe()}")
        with ThreadPoolExecutor(max_workers=2) as pool:
            server = pool.submit(output.bound(nix.server_eval), source)
            settling = pool.submit(output.bound(vm.settle), req.activation_timeout)
            system, runner = nix.build(
                source, vmdir.file("settings.json"), ["toplevel", "vm"], vmdir.file("next"), files=req.evaluated
            )
            server_eval = server.result()
            settled = settling.result()
        times["build"] = round(time.monotonic() - t, 2)
        settled.say()
        current = settled.current
        if server_eval.failed_assertions:
            report["server_failed_assertions"] = server_eval.failed_assertions
            output.warn(
                "the server itself could not build this configuration (the VM can: its variant differs); "
                "Failed assertions:\n" + "".join(f"- {m}\n" for m in server_eval.failed_assertions).rstrip()
            )
        vm.reconcile(current)
        report.update({"old_system": current or None, "new_system": str(system)})
        if str(system) == current:
            output.info(f"{req.name} already runs {system}: nothing to deploy")
            return {**report, "result": "unchanged", "exit_code": ExitCode.OK}

        # plan → push
        t = time.monotonic()
        pl = vm.plan(current, system)
        if pl.units is None and req.dry_run:
            raise RehearseError(
                f"{req.name} cannot plan the switch: it does not see the new system through the host store it "
                "mounts, and a dry run copies nothing.",
                hint="deploy without --dry-run (the new paths are then copied)",
                report={**report, "result": "error"},
            )
        pushed = Pushed(0, 0) if req.dry_run else vm.push(pl, copy=req.force_copy or pl.units is None)
        if pl.units is None:  # the guest plans once the copy made the new system visible
            pl = dataclasses.replace(pl, units=_dry_activate(vm, system, report))
        times["push"] = round(time.monotonic() - t, 2)
        report["store"] = {"registered": pushed.registered, "copied": pushed.copied}
        report["plan"] = show_plan(req.name, pl, verbose=req.verbose)
        if req.dry_run:
            output.info("dry run: nothing activated")
            return {**report, "result": "dry-run", "exit_code": ExitCode.OK}
        when = " (with the activation)" if pushed.pending else ""
        output.info(f"  store: {pushed.registered} new paths registered without copying{when}, {pushed.copied} copied")
        if not confirm("activate it? [y/N]", req.yes):
            output.info("not activated; the VM is unchanged")
            return {**report, "result": "declined", "exit_code": ExitCode.DECLINED}

        # activate → verify
        server_check = vm.sshd_check(current, system) if req.ssh_check else None
        units = pl.units or plan.Units()
        touched = {*units.stop, *units.restart, *units.start}
        verify = Verify(
            checks=req.checks,
            server_check=server_check,
            # A switch that restarts rehearse's own sshd is verified by a new login through it.
            fresh_login=pl.units is None or "rehearse-sshd.service" in touched,
            greets=vm.greets,
        )
        t = time.monotonic()
        output.step(f"activating on {req.name}")
        outcome = _activate_in_vm(vm, pl, pushed, verify, req, report)
        times["activate"] = round(time.monotonic() - t, 2)
        if outcome.after_switch is not None:
            times["after_switch"] = outcome.after_switch
        report.update(outcome.report())  # type: ignore[typeddict-item]  # the keys are Report's
        history.record(vm.history, _history_entry(report, outcome))
        if outcome.reboot_required:
            return _reboot_required(req, vm, system, runner, report)
        if outcome.ok:
            vm.adopt(system, runner, source)
            passed = ["no failed units", "a new login through rehearse's channel"]
            passed += ["the server's own sshd"] if server_check is not None else []
            passed += [f"{c.kind} {c.target}" for c in req.checks]
            history.record_rehearsal(vm.rehearsals, server_eval.drv_path, str(system), "deploy", passed)
            output.success(
                f"{req.name} runs {store_name(str(system))} (build {times['build']:.1f} s, "
                f"push {times['push']:.1f} s, activate {times['activate']:.1f} s)"
            )
            return {**report, "exit_code": ExitCode.OK}
        raise RehearseError(
            rolled_back("the new configuration", req.name, current, outcome),
            hint=f"`rehearse console {req.name}` and the output above show what went wrong",
            exit_code=ExitCode.ROLLED_BACK,
            report=dict(report),
        )


def _dry_activate(vm: VM, system: Path, report: Report) -> plan.Units:
    from rehearse.targets.target import DryActivateFailed, dry_activate

    try:
        return dry_activate(vm.remote, system, vm.remote.who)
    except DryActivateFailed as e:
        raise RehearseError(str(e), report={**report, "result": "error"}) from None


def _activate_in_vm(vm: VM, pl: Plan, pushed: Pushed, verify: Verify, req: DeployRequest, report: Report) -> Outcome:
    """The activation, with the pending registration; paths the guest does
    not see through the host store are copied, then it starts again."""
    try:
        return activation.activate(
            vm.remote,
            str(pl.system),
            req.confirm_timeout,
            verify,
            activation_timeout=req.activation_timeout,
            register=pushed.pending,
        )
    except activation.NotVisible as e:
        for path in e.paths:
            output.debug(f"not visible in the guest: {path}")
        output.info(f"  store: the VM does not see {len(e.paths)} new paths through the host store; copying")
        vm.copy(pl.to_push)
        report["store"] = {"registered": 0, "copied": len(pl.to_push)}
        return activation.activate(
            vm.remote, str(pl.system), req.confirm_timeout, verify, activation_timeout=req.activation_timeout
        )


def _reboot_required(req: DeployRequest, vm: VM, system: Path, runner: Path, report: Report) -> Report:
    """switch-to-configuration exited 100: the new system changes the init
    interface and takes effect only at the next boot. Nothing was activated
    and nothing is rolled back: the VM's profile holds the new system, and
    the next start boots it (its runner is recorded)."""
    vm.boot_next(system, runner)
    report.update({"result": "reboot-required", "reason": "switch-to-configuration exited 100"})
    output.warn(
        f"reboot required: {store_name(str(system))} changes the init interface (switch-to-configuration exited 100). "
        f"{req.name} still runs {store_name(report.get('old_system') or '')}; its next start boots the new system."
    )
    if ask(f"restart {req.name} now? [y/N]", req.yes):
        vm.restart()
        return {**report, "result": "rebooted", "exit_code": ExitCode.OK}
    output.info(f"to boot it: rehearse down {req.name} && rehearse up {req.name}")
    return {**report, "exit_code": ExitCode.REBOOT_REQUIRED}


def _history_entry(report: Report, outcome: Outcome) -> dict[str, Any]:
    return {
        "time": time.time(),
        "system": report.get("new_system"),
        "previous": report.get("old_system"),
        "source": report.get("source"),
        "result": outcome.result,
        "generation": outcome.generation,
        "switch_rc": outcome.switch_rc,
        "failed_units": outcome.failed_units,
        "durations": report.get("durations", {}),
        "pushed": report.get("store", {}),
    }


# --- generations and rollback: a VM, or the server it was promoted to ------------


def generations(name: str, as_json: bool, server: Server | None = None) -> None:
    """The system generations of the VM (or of `server`), with what rehearse
    recorded of each: when it deployed or promoted it, from what."""
    vmdir = VMDir(name)
    if server is None:
        gens = VM.running(vmdir).generations()
        entries = history.load(vmdir.file("deploys.json"))
    else:
        vmdir.check()
        try:
            gens = read_generations(server.remote)
        finally:
            server.close()
        entries = history.load(server.history)
    recorded = {h.get("system"): h for h in entries if h.get("result") == "confirmed"}
    rows: list[dict[str, Any]] = []
    for g in gens.generations:
        h = recorded.get(g.system)
        rows.append(
            {
                "generation": g.number,
                "system": g.system,
                "date": g.date,
                "booted": g.booted,
                "current": g.number == gens.current,
                "deployed": h.get("time") if h else None,
                "source": h.get("source") if h else None,
                "durations": h.get("durations") if h else None,
            }
        )
    if as_json:
        output.result(json.dumps(rows, indent=2))
        return
    for r in rows:
        mark = "*" if r["current"] else " "
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["date"]))
        booted = "  (booted)" if r["booted"] else ""
        output.result(f"{mark} {r['generation']:>4}  {when}  {store_name(r['system'])}{booted}")


@dataclass(frozen=True)
class RollbackRequest:
    name: str
    to: int | None  # the generation; None: the one before the current one
    confirm_timeout: float
    activation_timeout: float = ACTIVATION_TIMEOUT
    server: Server | None = None  # roll the server back (switch: its boot entry too), not the VM
    yes: bool = True


def rollback(req: RollbackRequest) -> Report:
    vmdir = VMDir(req.name)
    with vmdir.locked("rehearse rollback"):
        if req.server is None:
            vm = VM.running(vmdir)
            vm.settle(req.activation_timeout).say()
            gens = vm.generations()
            vm.reconcile(gens.running)
            return _rollback(req, vm.remote, req.name, gens, vm.history, "test", vm)
        vmdir.check()
        try:
            must_ask(
                f"`rollback --server` would switch {req.server.describe()} to another generation",
                "nothing was sent to the server",
                req.yes,
            )
            ssh.check_sudo(req.server.remote)
            settled = activation.settle(req.server.remote, req.activation_timeout)
            settled.say()
            gens = read_generations(req.server.remote)
            return _rollback(req, req.server.remote, req.server.describe(), gens, req.server.history, "switch", None)
        finally:
            req.server.close()


def _rollback(
    req: RollbackRequest,
    remote: ssh.Remote,
    where: str,
    gens: Generations,
    history_file: Path,
    action: str,
    vm: VM | None,
) -> Report:
    numbers = [g.number for g in gens.generations]
    hint = f"`rehearse generations {req.name}{' --server' if vm is None else ''}` lists them"
    to = req.to
    if to is None:
        older = [n for n in numbers if gens.current is not None and n < gens.current]
        if not older:
            raise RehearseError(
                f"{where} has no generation before {gens.current}.", hint=hint, exit_code=ExitCode.USAGE
            )
        to = older[-1]
    if to not in numbers:
        raise RehearseError(f"{where} has no generation {to}.", hint=hint, exit_code=ExitCode.USAGE)
    system = Path(gens.system_of(to) or "")
    report: Report = {
        "name": req.name,
        "action": "rollback",
        "source": f"generation {to}",
        "old_system": gens.system_of(gens.current),
        "new_system": str(system),
        "generation": to,
        "durations": {},
    }
    if vm is None:
        report["target"] = where
    if to == gens.current:
        output.info(f"{where} already runs generation {to}")
        return {**report, "result": "unchanged", "exit_code": ExitCode.OK}
    if vm is None and not confirm(f"roll {where} back to generation {to} ({action})? [y/N]", req.yes):
        output.info(f"not rolled back; {where} runs what it ran")
        return {**report, "result": "declined", "exit_code": ExitCode.DECLINED}
    output.step(f"rolling {where} back to generation {to} ({store_name(str(system))})")
    t = time.monotonic()
    outcome = activation.activate(
        remote,
        str(system),
        req.confirm_timeout,
        Verify(),
        generation=to,
        activation_timeout=req.activation_timeout,
        action=action,
    )
    report["durations"]["activate"] = round(time.monotonic() - t, 2)
    report.update(outcome.report())  # type: ignore[typeddict-item]  # the keys are Report's
    history.record(
        history_file,
        {
            "time": time.time(),
            "system": str(system),
            "previous": report["old_system"],
            "result": outcome.result,
            "action": action,
            "source": f"rollback to generation {to}",
            "durations": {},
        },
    )
    if not outcome.ok:
        raise RehearseError(
            f"rollback to generation {to} did not hold: {outcome.result}",
            exit_code=ExitCode.ROLLED_BACK,
            report=dict(report),
        )
    if vm is not None:
        vm.rolled_back_to(system)
    output.success(f"{where} runs generation {to}")
    return {**report, "exit_code": ExitCode.OK}

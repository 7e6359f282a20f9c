"""The commands over a VM: `deploy` (its build, then the pipeline of run.py
over the VM: plan → push → activate → verify → roll back), `rollback` (of
the VM, or of the server it was promoted to) and `generations`; promote.py
runs the same pipeline over a server.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rehearse.config import ACTIVATION_TIMEOUT, Check, merge_include
from rehearse.core import output
from rehearse.core.errors import ExitCode, RehearseError, saying_where
from rehearse.host import nix
from rehearse.host.answers import Generations
from rehearse.host.plan import store_name
from rehearse.pipeline.run import Job, Report, Words, run
from rehearse.store import history
from rehearse.store.state import VMDir
from rehearse.targets import activation
from rehearse.targets.activation import Verify
from rehearse.targets.target import VM, ActivateOptions, Plan, PushOptions, Server, Target


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
    keep_failed: bool = False  # a failed activation stays in place, to look at (not rolled back)


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


# --- deploy: a VM -------------------------------------------------------------


def run_deploy(req: DeployRequest) -> Report:
    """build → the pipeline (run.py) over the VM (it rolls back unless
    confirmed). Returns the outcome; a rolled-back deploy raises, with it."""
    vmdir = VMDir(req.name)
    with (
        vmdir.locked("rehearse deploy"),
        saying_where(f"{req.name} still runs its old system: nothing was activated") as said,
    ):
        if req.dry_run and not vmdir.load().alive():
            # What a dry run shows needs the VM (issue 24, item 14): said before anything is built.
            raise RehearseError(
                f"{req.name} is not running: a dry run asks the running VM what it runs and what the switch "
                "would stop, restart and start (switch-to-configuration dry-activate); nothing was built.",
                hint=f"`rehearse up {req.name}`, then `rehearse deploy {req.name} --dry-run`; "
                f"`rehearse generations {req.name}` lists what rehearse recorded of its deploys",
                exit_code=ExitCode.NOT_RUNNING,
            )
        vm = VM.running(vmdir)
        source = req.source
        if source is None:
            recorded = nix.Source.of_record(vm.state.source).of_vm(req.name)
            source = dataclasses.replace(recorded, include=merge_include(recorded.include, list(req.include)))
        report = Report(name=req.name, action="deploy", source=source.describe())

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
        report = report.timed("build", t)
        settled.say()
        current = settled.current
        if (warning := server_eval.warning()) is not None:
            report = dataclasses.replace(report, server_failed_assertions=server_eval.failed_assertions)
            output.warn(warning)
        vm.reconcile(current)

        def activated(report: Report) -> Report:
            history.record(vm.history, _history_entry(report))
            assert report.activation is not None
            if report.activation.kept:  # it runs the new system, as a confirmed one would
                vm.adopt(system, runner, source)
            said.where = activation.after(req.name, report.activation.result)
            return report

        def confirmed(report: Report, verify: Verify) -> Report:
            vm.adopt(system, runner, source)
            passed = ["no failed units", "a new login through rehearse's channel"]
            passed += ["the server's own sshd"] if verify.server_check is not None else []
            passed += [f"{c.kind} {c.target}" for c in req.checks]
            history.record_rehearsal(vm.rehearsals, server_eval.drv_path, str(system), "deploy", passed)
            times = report.durations
            output.success(
                f"{req.name} runs {store_name(str(system))} (build {times['build']:.1f} s, "
                f"push {times['push']:.1f} s, activate {times['activate']:.1f} s)"
            )
            return report

        job = Job(
            where=req.name,
            heading=req.name,
            words=Words(
                verb="deploy",
                dry_run="dry run: nothing activated",
                question="activate it? [y/N]",
                declined="not activated; the VM is unchanged",
                rolled_back="the new configuration",
                hint=f"`rehearse console {req.name}` and the output above show what went wrong",
                journal=f"rehearse ssh {req.name} -- journalctl {{units}}",
                undo=f"rehearse rollback {req.name}",
                unplannable="{where} cannot plan the switch: it does not see the new system through the host "
                "store it mounts, and a dry run copies nothing.",
            ),
            activate=ActivateOptions(req.confirm_timeout, req.activation_timeout, keep_failed=req.keep_failed),
            push=PushOptions(copy=req.force_copy),
            dry_run=req.dry_run,
            yes=req.yes,
            verbose=req.verbose,
            checks=req.checks,
            ssh_check=req.ssh_check,
            activated=activated,
            confirmed=confirmed,
            reboot_required=lambda report: _reboot_required(req, vm, system, runner, report),
        )
        return run(vm, job, report, current, system)


def _reboot_required(req: DeployRequest, vm: VM, system: Path, runner: Path, report: Report) -> Report:
    """switch-to-configuration exited 100: the new system changes the init
    interface and takes effect only at the next boot. Nothing was activated
    and nothing is rolled back: the VM's profile holds the new system, and
    the next start boots it (its runner is recorded)."""
    vm.boot_next(system, runner)
    report = dataclasses.replace(report, reason="switch-to-configuration exited 100")
    output.warn(
        f"reboot required: {store_name(str(system))} changes the init interface (switch-to-configuration exited 100). "
        f"{req.name} still runs {store_name(str(report.old_system or ''))}; its next start boots the new system."
    )
    if ask(f"restart {req.name} now? [y/N]", req.yes):
        vm.restart()
        return report.ended("rebooted")
    output.info(f"to boot it: rehearse down {req.name} && rehearse up {req.name}")
    return report.ended("reboot-required", ExitCode.REBOOT_REQUIRED)


def _history_entry(report: Report) -> history.Deployed:
    outcome = report.activation
    assert outcome is not None
    return history.Deployed(
        time=time.time(),
        system=report.new_system,
        previous=report.previous,
        source=report.source,
        result=outcome.result,
        generation=outcome.generation,
        switch_rc=outcome.switch_rc,
        failed_units=outcome.failed_units,
        durations=report.durations,
        pushed=report.store or {},
        changes=changes(report.plan),
    )


# --- generations and rollback: a VM, or the server it was promoted to ------------


def generations(name: str, as_json: bool, server: Server | None = None) -> None:
    """The system generations of the VM (or of `server`), with what rehearse
    recorded of each: when it deployed or promoted it, from what, what
    changed. A stopped VM's are those rehearse recorded (issue 24, item 14)."""
    vmdir = VMDir(name)
    if server is None:
        state = vmdir.load()
        entries = history.load(vmdir.file("deploys.json"))
        if not state.alive():
            _recorded_generations(name, as_json, state.system, entries)
            return
        gens = VM.running(vmdir).generations()
    else:
        vmdir.check()
        try:
            gens = server.generations()
        finally:
            server.close()
        # This VM's promotions to the server under another address (its SSH
        # port changed) first, so that those to this address win: a system
        # path names what rehearse promoted wherever it went.
        others = sorted(p for p in vmdir.path.glob("promotions-*.json") if p != server.history)
        entries = [h for p in others for h in history.load(p)] + history.load(server.history)
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
                "changes": h.get("changes") if h else None,
            }
        )
    if as_json:
        output.result(json.dumps(rows, indent=2))
        return
    did = "deployed" if server is None else "promoted by rehearse"
    for r in rows:
        mark = "*" if r["current"] else " "
        booted = "  (booted)" if r["booted"] else ""
        output.result(f"{mark} {r['generation']:>4}  {_when(r['date'])}  {_system(r['system'])}{booted}")
        if r["deployed"] is not None:
            output.result(f"{'':8}{did} {_when(r['deployed'])}: {_what(r)}")


def _recorded_generations(name: str, as_json: bool, system: str | None, entries: list[dict[str, Any]]) -> None:
    """A stopped VM's generations as rehearse recorded its deploys: the
    generation numbers and the current one are the guest's to say."""
    output.info(
        f"{name} is not running: its deploys as rehearse recorded them; "
        f"`rehearse up {name}` starts it, and `rehearse generations {name}` then lists the VM's own generations"
    )
    rows: list[dict[str, Any]] = [
        {
            "generation": h.get("generation"),
            "system": h.get("system"),
            "deployed": h.get("time"),
            "source": h.get("source"),
            "changes": h.get("changes"),
            "current": h.get("system") == system,
        }
        for h in entries
        if h.get("result") == "confirmed" and isinstance(h.get("system"), str)
    ]
    if as_json:
        output.result(json.dumps(rows, indent=2))
        return
    if not rows:
        output.info(f"rehearse has recorded no deploy to {name}")
    for r in rows:
        number = "?" if r["generation"] is None else r["generation"]
        output.result(f"  {number:>4}  {_when(r['deployed'])}  {_system(r['system'])}  deployed: {_what(r)}")
    if system and not any(r["current"] for r in rows):
        output.result(f"{'':8}its last system: {_system(system)} (made at `up`)")


def _when(seconds: object) -> str:
    return (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(seconds))) if isinstance(seconds, int | float) else "-"
    )


def _system(path: str) -> str:
    """A system as a row shows it: its hash's first 8 characters (what tells
    two builds of the same name apart) and its name."""
    base = path.rsplit("/", 1)[-1]
    return f"{base[:8]} {store_name(path)}" if "-" in base else path


def _what(row: dict[str, Any]) -> str:
    """What a recorded deploy changed, and from what."""
    changes, source = row.get("changes"), f"from {row.get('source') or '?'}"
    if changes is None:  # recorded before rehearse kept it, or not known
        return source
    return f"{changes or 'no package or unit changed'} ({source})"


def changes(plan: Plan | None) -> str | None:
    """A recorded deploy's change in a few words: the packages changed,
    added or removed and the units restarted or started; None unknown."""
    if plan is None:
        return None
    words: list[str] = []
    if plan.diff is not None:
        view = plan.diff.to_json()
        words += [f"{c['name']} {c['old']} → {c['new']}" for c in view["changed"]]
        words += [f"+{a['name']}" for a in view["added"]]
        words += [f"-{a['name']}" for a in view["removed"]]
    if plan.units is not None:
        units = plan.units  # a unit stopped and started is restarted (plan.Units)
        words += [f"restarts {u}" for u in (*units.restart, *(u for u in units.start if u in units.stop))]
        words += [f"starts {u}" for u in units.start if u not in units.stop]
    text = ", ".join(words)
    return text if len(text) <= 100 else text[:99] + "…"


@dataclass(frozen=True)
class RollbackRequest:
    name: str
    to: int | None  # the generation; None: the one before the current one
    confirm_timeout: float
    activation_timeout: float = ACTIVATION_TIMEOUT
    server: Server | None = None  # roll the server back (switch: its boot entry too), not the VM
    yes: bool = True


def rollback(req: RollbackRequest) -> Report:
    """The pipeline (run.py) over the VM, or the server it was promoted to,
    to one of its generations: settled, asked (a server), activated."""
    vmdir = VMDir(req.name)
    with vmdir.locked("rehearse rollback"):
        target: Target
        if req.server is None:
            target = VM.running(vmdir)
        else:
            vmdir.check()
            target = req.server
        try:
            if target.is_server:
                must_ask(
                    f"`rollback --server` would switch {target.describe()} to another generation",
                    "nothing was sent to the server",
                    req.yes,
                )
            target.settle(req.activation_timeout, for_push=False).say()
            gens = target.generations()
            target.reconcile(gens.running)
            return _rollback(req, target, gens)
        finally:
            target.close()


def _rollback(req: RollbackRequest, target: Target, gens: Generations) -> Report:
    where = target.describe()
    numbers = [g.number for g in gens.generations]
    hint = f"`rehearse generations {req.name}{' --server' if target.is_server else ''}` lists them"
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
    action = target.rollback_action
    report = Report(
        name=req.name,
        action="rollback",
        source=f"generation {to}",
        target=where if target.is_server else None,
        generation=to,
    )

    def activated(report: Report) -> Report:
        outcome = report.activation
        assert outcome is not None
        source = f"rollback to generation {to}"
        entry = history.RolledBack(time.time(), str(system), report.previous, outcome.result, action, source, {})
        history.record(target.history, entry)
        return report

    def confirmed(report: Report, verify: Verify) -> Report:
        target.rolled_back_to(system)
        output.success(f"{where} runs generation {to}")
        return report

    job = Job(
        where=where,
        heading=where,
        words=Words(
            verb="roll back",
            dry_run="",
            question=f"roll {where} back to generation {to} ({action})? [y/N]",
            declined=f"not rolled back; {where} runs what it ran",
            rolled_back=f"the rollback to generation {to}",
            unchanged=f"{{where}} already runs generation {to}",
            activating=f"rolling {where} back to generation {to} ({store_name(str(system))})",
            not_held=f"rollback to generation {to} did not hold: {{result}}",
        ),
        activate=ActivateOptions(req.confirm_timeout, req.activation_timeout, action=action, generation=to),
        yes=req.yes or not target.is_server,
        activated=activated,
        confirmed=confirmed,
        plan=False,
        unchanged=to == gens.current,
    )
    return run(target, job, report, gens.system_of(gens.current) or "", system)

"""The one pipeline: the steps of a deploy over a target (targets/target.py:
a running VM for `deploy`, a real server for `promote`), once the new system
is built and the target settled:

  plan → push → (dry run: stop) → confirm → activate → verify → (roll back)

- plan: what the switch would do — the closure diff, the units stopped,
  restarted, started — shown before anything changes (target.Plan);
- push: the new paths made valid there (target.Pushed): registered in a VM
  that sees the host store, copied to a server;
- activate, verify, roll back: activation.py's protocol, the same on both —
  detached under the other side's PID 1, verified over a connection made
  after the switch, confirmed, or rolled back by the other side itself.

A rollback (deploy.py) runs the same pipeline to a generation the target
has: nothing to plan or push (`Job.plan` False), confirm → activate.

What differs between a VM and a server is in the target; what differs
between `deploy`, `rollback` and `promote` (their words, their history, what
a confirmed switch records) is in the `Job` they give. Each returns one
`Report`, whose `to_json()` is the --json document of deploy, rollback and
promote.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Final

from rehearse.config import Check
from rehearse.core import output
from rehearse.core.errors import ExitCode, RehearseError
from rehearse.host import plan
from rehearse.host.plan import store_name
from rehearse.targets.activation import Outcome, Verify
from rehearse.targets.target import ActivateOptions, Plan, Pushed, PushOptions, Target


class _Absent(Enum):
    ABSENT = "absent"


# A field left out of the --json document (where None is a value it can have).
ABSENT: Final = _Absent.ABSENT


# The keys each document starts with, in today's order (a promote names the
# new system before the old one; a rollback its systems and generation before
# the durations); the others follow in Report's order.
_FIRST: Final[dict[str, tuple[str, ...]]] = {
    "promote": (
        *("name", "action", "target", "switch_action", "source", "durations"),
        *("server_drv", "rehearsal", "new_system", "old_system"),
    ),
    "rollback": ("name", "action", "source", "old_system", "new_system", "generation", "durations", "target"),
}


@dataclass(frozen=True)
class Report:
    """What a deploy, rollback or promote did: the --json document (to_json)."""

    name: str
    action: str  # "deploy" | "rollback" | "promote"
    source: str
    target: str | None = None  # a server: where (promote, rollback --server)
    switch_action: str | None = None  # promote's --action
    durations: dict[str, float] = field(default_factory=dict)
    server_drv: str | _Absent | None = ABSENT  # promote: the derivation its guard looked up
    rehearsal: dict[str, Any] | _Absent | None = ABSENT  # promote: the rehearsal found
    server_failed_assertions: list[str] | None = None  # what the server's own system would refuse (the VM's did not)
    old_system: str | _Absent | None = ABSENT
    new_system: str | None = None
    generation: int | _Absent | None = ABSENT  # a rollback's (the activation's, once there is one)
    store: dict[str, int] | None = None  # deploy: registered (no copy), copied; promote: missing, bytes
    plan: Plan | None = None
    activation: Outcome | None = None
    # "confirmed" | "unchanged" | "dry-run" | "declined" | "rolled-back" | "error" | …; None: the activation's
    result: str | None = None
    reason: str | _Absent | None = ABSENT  # None: the activation's
    forced: bool | None = None  # promote: no rehearsal found, --force
    exit_code: int | None = None  # None: an error's (RehearseError.as_report adds it)

    @property
    def previous(self) -> str | None:
        """The system the target ran before (None: none known)."""
        return self.old_system if isinstance(self.old_system, str) else None

    def timed(self, step: str, since: float) -> Report:
        """With the seconds `step` took since `since` (time.monotonic())."""
        return self.with_durations(**{step: round(time.monotonic() - since, 2)})

    def with_durations(self, **seconds: float) -> Report:
        return dataclasses.replace(self, durations={**self.durations, **seconds})

    def ended(self, result: str, exit_code: int | None = ExitCode.OK) -> Report:
        return dataclasses.replace(self, result=result, exit_code=exit_code)

    def error(self, result: str = "error") -> dict[str, Any]:
        """The document so far, of a command that ends in an error."""
        return self.ended(result, None).to_json()

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name, "action": self.action}
        if self.target is not None:
            doc["target"] = self.target
        if self.switch_action is not None:
            doc["switch_action"] = self.switch_action
        doc["source"] = self.source
        doc["durations"] = dict(self.durations)
        present: dict[str, Any] = {
            "server_drv": self.server_drv,
            "rehearsal": self.rehearsal,
            "server_failed_assertions": self.server_failed_assertions or ABSENT,
            "old_system": self.old_system,
            "new_system": ABSENT if self.new_system is None else self.new_system,
            "generation": self.generation,
            "store": ABSENT if self.store is None else self.store,
            "plan": ABSENT if self.plan is None else self.plan.to_json(),
        }
        doc |= {k: v for k, v in present.items() if v is not ABSENT}
        if self.activation is not None:
            doc |= self.activation.report()
        if self.result is not None:
            doc["result"] = self.result
        if self.reason is not ABSENT:
            doc["reason"] = self.reason
        if self.forced is not None:
            doc["forced"] = self.forced
        if self.exit_code is not None:
            doc["exit_code"] = int(self.exit_code)
        first = _FIRST.get(self.action, ())
        return {k: doc[k] for k in first if k in doc} | {k: v for k, v in doc.items() if k not in first}


@dataclass(frozen=True)
class Words:
    """What a command says at the pipeline's steps."""

    verb: str  # "nothing to {verb}"
    dry_run: str  # said when a dry run stops
    question: str  # asked before activating
    declined: str  # said when the answer is no
    rolled_back: str  # what was rolled back ("the new configuration")
    hint: str | None = None  # of the error of a rolled-back activation
    unchanged: str = "{where} already runs {system}: nothing to {verb}"
    activating: str = "activating on {heading}"
    # The error of an activation that did not hold ({result}: the guest's); None: rolled_back()'s.
    not_held: str | None = None
    # How to read units' logs there ("rehearse ssh web -- journalctl {units}"): the
    # hint after a failed unit or check then names the unit's log.
    journal: str | None = None
    undo: str | None = None  # how to go back by hand from a kept failure ("rehearse rollback fripon")
    # Why a dry run cannot plan when the target plans only once it sees the new system.
    unplannable: str = "{where} cannot plan the switch without the new system, and a dry run sends nothing."


def _nothing(report: Report, verify: Verify) -> Report:
    return report


@dataclass(frozen=True)
class Job:
    """One run of the pipeline: what the command asked, and its hooks."""

    where: str  # how the target is named
    heading: str  # the plan's ("plan for …") and the activation's ("activating on …")
    words: Words
    activate: ActivateOptions
    push: PushOptions = field(default_factory=PushOptions)
    dry_run: bool = False
    yes: bool = False
    verbose: bool = False
    checks: tuple[Check, ...] = ()
    ssh_check: bool = True  # check the server's own sshd after the switch (a VM's, server_ssh.py)
    # The activation ended (confirmed or not): record it in the history (and add to the report).
    activated: Callable[[Report], Report] = lambda report: report
    # The activation was confirmed: what the command does then (says it, records the rehearsal).
    confirmed: Callable[[Report, Verify], Report] = _nothing
    # switch-to-configuration exited 100 (a VM: the next boot takes it); None: rolled back like any other.
    reboot_required: Callable[[Report], Report] | None = None
    # False: a rollback, to a generation the target has: nothing to plan, push
    # or verify beyond the activation's own (and its durations are the activation's).
    plan: bool = True
    # Whether the target already runs what is asked; None: whether it runs the new system.
    unchanged: bool | None = None


def confirm(question: str, yes: bool) -> bool:
    """The user's go (always, with --yes or without a terminal)."""
    return yes or not sys.stdin.isatty() or output.ask(question).strip().lower() in ("y", "yes")


def show_plan(where: str, pl: Plan, *, verbose: bool = False) -> None:
    output.step(f"plan for {where}")
    output.info(f"  {pl.current or '(no system)'}\n→ {pl.system}")
    if pl.diff is not None:
        for line in plan.render(pl.diff, pl.units or plan.Units(), verbose=verbose):
            output.info(line)
    else:
        output.info(
            f"  ({pl.current or 'its system'} is not in this machine's store: the units come from its dry-activate)"
        )


def rolled_back(what: str, where: str, current: str, outcome: Outcome) -> str:
    """The message of an activation that did not hold."""
    reason = outcome.why
    if outcome.failed_units:
        reason += " — failed units: " + ", ".join(outcome.failed_units)
    if outcome.kept:
        return f"{what} failed ({reason}) and was kept, as --keep-failed asked: {where} runs it, unconfirmed."
    return f"{what} was rolled back; {where} runs {store_name(current)} again ({reason})."


def where_to_look(words: Words, outcome: Outcome, units: plan.Units | None, current: str = "") -> str | None:
    """The hint of a rolled-back activation: after a failed unit, its log;
    after a failed check, the log of the units the switch (re)started (or
    the whole log of the boot, when it started none). A kept one's says
    how to go back by hand first."""
    look = _journal(words, outcome, units)
    if outcome.kept and words.undo is not None:
        back = f"`{words.undo}` goes back to {store_name(current) if current else 'the previous generation'}"
        return back + (f"; {look}" if look is not None else "")
    return look


def _journal(words: Words, outcome: Outcome, units: plan.Units | None) -> str | None:
    if words.journal is None:
        return words.hint
    if outcome.failed_units:
        suspects, why = outcome.failed_units, "why it failed"
    elif outcome.failed_check:
        suspects = list(dict.fromkeys([*units.restart, *units.start])) if units is not None else []
        why = "what the switch started" if suspects else "what happened"
    else:
        return words.hint
    args = " ".join(f"-u {u}" for u in suspects[:3]) if suspects else "-b -n 50"
    return f"`{words.journal.format(units=args)}` shows {why}"


def run(target: Target, job: Job, report: Report, current: str, system: Path) -> Report:
    """plan → push → activate → verify over `target`, from `current` (what it
    runs) to `system`. Returns the outcome; a rolled-back activation raises,
    with it."""
    report = dataclasses.replace(report, old_system=current or None, new_system=str(system))
    if job.unchanged if job.unchanged is not None else str(system) == current:
        output.info(job.words.unchanged.format(where=job.where, system=system, verb=job.words.verb))
        return report.ended("unchanged")
    if not job.plan:
        return _activate(target, job, report, current, system, None, Pushed(0, 0))

    # plan → push: a target whose push only registers pushes before the plan
    # is shown (its guest plans once it sees the new system); another shows
    # the plan, stops there on a dry run, then pushes.
    t = time.monotonic()
    pl = target.plan(current, system)
    pushed: Pushed | None = None
    if target.push_first:
        pl, pushed = _push(target, job, pl, report)
        report = report.timed("push", t)
    report = dataclasses.replace(report, store=target.store_json(pl, pushed), plan=pl)
    show_plan(job.heading, pl, verbose=job.verbose)
    if pushed is None:
        output.info(target.push_line(pl, pushed))
    if job.dry_run:
        output.info(job.words.dry_run)
        return report.ended("dry-run")
    if pushed is None:
        t = time.monotonic()
        planned = pl.units is not None
        pl, pushed = _push(target, job, pl, report)
        report = dataclasses.replace(report.timed("push", t), plan=pl)
        for line in [] if planned or pl.units is None else plan.dry_activate_text(pl.units).splitlines():
            output.info(f"  {line}")
    else:
        output.info(target.push_line(pl, pushed))
    return _activate(target, job, report, current, system, pl, pushed)


def _activate(
    target: Target, job: Job, report: Report, current: str, system: Path, pl: Plan | None, pushed: Pushed
) -> Report:
    """confirm → activate → verify (`pl` None: a rollback, verified by the
    activation alone). Returns the outcome; one that did not hold raises."""
    if not confirm(job.words.question, job.yes):
        output.info(job.words.declined)
        return report.ended("declined", ExitCode.DECLINED)
    verify = Verify() if pl is None else target.verify(current, pl, job.checks, job.ssh_check)
    t = time.monotonic()
    output.step(job.words.activating.format(heading=job.heading))
    activated = target.activate(system, pushed, verify, job.activate)
    outcome = activated.outcome
    report = dataclasses.replace(report.timed("activate", t), activation=outcome)
    if pl is not None:
        report = dataclasses.replace(report, store=target.store_json(pl, activated.pushed))
        if outcome.after_switch is not None:
            report = report.with_durations(after_switch=outcome.after_switch)
    report = job.activated(report)
    if outcome.reboot_required and job.reboot_required is not None:
        return job.reboot_required(report)
    if outcome.ok:
        return job.confirmed(report, verify).ended("confirmed")
    raise RehearseError(
        job.words.not_held.format(result=outcome.why)
        if job.words.not_held is not None
        else rolled_back(job.words.rolled_back, job.where, current, outcome),
        hint=where_to_look(job.words, outcome, pl.units if pl is not None else None, current),
        exit_code=ExitCode.ROLLED_BACK,
        report=report.to_json(),
    )


def _push(target: Target, job: Job, pl: Plan, report: Report) -> tuple[Plan, Pushed]:
    """Push the new paths (not in a dry run); when the target could not
    plan the units before, they come from its dry-activate now."""
    if job.dry_run:
        if pl.units is None:
            raise RehearseError(
                job.words.unplannable.format(where=job.where),
                hint=f"{job.words.verb} without --dry-run (the new paths are then copied)",
                report=report.error(),
            )
        return pl, Pushed(0, 0)
    pushed = target.push(pl, job.push)
    if pl.units is None:
        try:
            pl = dataclasses.replace(pl, units=target.dry_activate(pl.system))
        except RehearseError as e:
            e.report = report.error()
            raise
    return pl, pushed

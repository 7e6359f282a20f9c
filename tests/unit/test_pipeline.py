"""The one pipeline (pipeline/run.py) over a fake target: the order of its
steps and the fields of the --json document of each ending, as deploy and
promote have them (README: --json)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar

import pytest

from rehearse.config import Check
from rehearse.core.errors import ExitCode, RehearseError
from rehearse.host import answers, ssh
from rehearse.host.answers import Generations
from rehearse.host.plan import Units
from rehearse.pipeline import run as pipeline
from rehearse.pipeline.run import Job, Report, Words
from rehearse.targets.activation import Outcome, Verify
from rehearse.targets.target import Activated, ActivateOptions, Plan, Pushed, PushOptions

SYSTEM = Path("/nix/store/" + "s" * 32 + "-nixos-system-fripon-25.11")
CURRENT = "/nix/store/" + "c" * 32 + "-nixos-system-fripon-25.11"
A = "/nix/store/" + "a" * 32 + "-a"

ACTIVATED = {"generation", "switch_rc", "failed_units", "result", "reason"}
DEPLOY = {"name", "action", "source", "durations", "old_system", "new_system"}
PROMOTE = DEPLOY | {"target", "switch_action", "server_drv", "rehearsal"}


class Fake:
    """A target whose steps are recorded, not run."""

    push_first: ClassVar[bool] = True

    def __init__(self, tmp_path: Path, *, units: Units | None = None, ok: bool = True) -> None:
        self.remote = ssh.Remote("127.0.0.1", 22, "root", None, None, None)
        self.steps: list[str] = []
        self.units = units
        self.ok = ok
        self.file = tmp_path / "history.json"

    @property
    def history(self) -> Path:
        return self.file

    def describe(self) -> str:
        return "fripon"

    def settle(self, timeout: float) -> answers.Settled:
        raise AssertionError("the pipeline starts settled")

    def plan(self, current: str, system: Path) -> Plan:
        self.steps.append("plan")
        return Plan(current, system, None, self.units, [A], {A: 100})

    def push(self, pl: Plan, options: PushOptions) -> Pushed:
        self.steps.append("push")
        return Pushed(1, 0, pending=[A])

    def dry_activate(self, system: Path) -> Units:
        self.steps.append("dry-activate")
        return Units()

    def store_json(self, pl: Plan, pushed: Pushed | None) -> dict[str, int]:
        return {"registered": pushed.registered, "copied": pushed.copied} if pushed else {}

    def push_line(self, pl: Plan, pushed: Pushed | None) -> str:
        return "pushed" if pushed else "to push"

    def verify(self, current: str, pl: Plan, checks: tuple[Check, ...], ssh_check: bool) -> Verify:
        self.steps.append("verify")
        return Verify(checks=checks)

    def activate(self, system: Path, pushed: Pushed, verify: Verify, options: ActivateOptions) -> Activated:
        self.steps.append("activate")
        result = "confirmed" if self.ok else "rolled-back a.service failed 1"
        return Activated(Outcome(self.ok, 0, result, [] if self.ok else ["a.service"], generation=7), pushed)

    def generations(self) -> Generations:
        raise AssertionError("not a rollback")


class Server(Fake):
    push_first: ClassVar[bool] = False

    def store_json(self, pl: Plan, pushed: Pushed | None) -> dict[str, int]:
        return {"missing": len(pl.to_push), "bytes": pl.push_bytes}


WORDS = Words("deploy", "dry run", "activate it?", "not activated", "the new configuration")


def job(**kw: Any) -> Job:
    return dataclasses.replace(Job("fripon", "fripon", WORDS, ActivateOptions(30.0), yes=True), **kw)


def deployed() -> Report:
    return Report(name="fripon", action="deploy", source="fripon's configuration").with_durations(build=1.0)


def promoted() -> Report:
    report = Report(name="fripon", action="promote", source="c", target="srv", switch_action="switch")
    return dataclasses.replace(report, server_drv="/nix/store/d.drv", rehearsal=None)


def test_a_deploy_confirmed(tmp_path: Path) -> None:
    vm = Fake(tmp_path, units=Units())
    doc = pipeline.run(vm, job(), deployed(), CURRENT, SYSTEM).to_json()
    assert vm.steps == ["plan", "push", "verify", "activate"]
    assert set(doc) == DEPLOY | {"store", "plan"} | ACTIVATED | {"exit_code"}
    assert doc["result"] == "confirmed" and doc["exit_code"] == 0 and doc["generation"] == 7
    assert doc["store"] == {"registered": 1, "copied": 0} and set(doc["durations"]) == {"build", "push", "activate"}
    assert list(doc) == [
        *("name", "action", "source", "durations", "old_system", "new_system", "store", "plan"),
        *("generation", "switch_rc", "failed_units", "result", "reason", "exit_code"),
    ]


def test_unchanged_and_dry_run(tmp_path: Path) -> None:
    vm = Fake(tmp_path, units=Units())
    doc = pipeline.run(vm, job(), deployed(), str(SYSTEM), SYSTEM).to_json()
    assert vm.steps == [] and set(doc) == DEPLOY | {"result", "exit_code"} and doc["result"] == "unchanged"
    doc = pipeline.run(vm, job(dry_run=True), deployed(), CURRENT, SYSTEM).to_json()
    assert vm.steps == ["plan"]  # a dry run pushes nothing
    assert set(doc) == DEPLOY | {"store", "plan", "result", "exit_code"} and doc["result"] == "dry-run"


def test_a_vm_that_cannot_plan_refuses_a_dry_run(tmp_path: Path) -> None:
    with pytest.raises(RehearseError) as e:
        pipeline.run(Fake(tmp_path), job(dry_run=True), deployed(), CURRENT, SYSTEM)
    assert e.value.report is not None and set(e.value.report) == DEPLOY | {"result"}
    assert e.value.message.startswith("fripon cannot plan the switch")
    assert e.value.hint == "deploy without --dry-run (the new paths are then copied)"


def test_a_server_shows_the_plan_before_it_pushes(tmp_path: Path) -> None:
    server = Server(tmp_path)
    doc = pipeline.run(server, job(dry_run=True), promoted(), CURRENT, SYSTEM).to_json()
    assert server.steps == ["plan"] and set(doc) == PROMOTE | {"store", "plan", "result", "exit_code"}
    assert doc["store"] == {"missing": 1, "bytes": 100} and doc["plan"] == {"units": None}
    forced = job(activated=lambda r: dataclasses.replace(r, forced=True))
    doc = pipeline.run(server, forced, promoted(), CURRENT, SYSTEM).to_json()
    assert server.steps == ["plan", "plan", "push", "dry-activate", "verify", "activate"]
    assert set(doc) == PROMOTE | {"store", "plan", "forced", "exit_code"} | ACTIVATED
    assert doc["plan"]["units"] is not None
    assert list(doc)[:12] == [
        *("name", "action", "target", "switch_action", "source", "durations", "server_drv", "rehearsal"),
        *("new_system", "old_system", "store", "plan"),
    ]


def test_a_rolled_back_activation_raises_with_the_document(tmp_path: Path) -> None:
    with pytest.raises(RehearseError) as e:
        pipeline.run(Fake(tmp_path, units=Units(), ok=False), job(), deployed(), CURRENT, SYSTEM)
    assert e.value.exit_code == ExitCode.ROLLED_BACK
    assert e.value.report is not None and set(e.value.report) == DEPLOY | {"store", "plan"} | ACTIVATED
    assert e.value.report["result"] == "rolled-back" and e.value.report["reason"] == "a.service failed 1"
    assert "failed units: a.service" in e.value.message


# --- rollback: the same pipeline, to a generation the target has ------------------------


class Rollbackable(Fake):
    """A target with two generations (1: SYSTEM, 2: CURRENT, the current one)."""

    is_server: ClassVar[bool] = False
    rollback_action: ClassVar[str] = "test"

    def generations(self) -> Generations:
        p = "/nix/var/nix/profiles/system"
        out = f"{p}-1-link {SYSTEM} 100\n{p}-2-link {CURRENT} 200\ncurrent system-2-link\n"
        return answers.generations("fripon", out, p)

    def rolled_back_to(self, system: Path) -> None:
        self.steps.append(f"rolled back to {system}")


class RollbackServer(Rollbackable):
    is_server: ClassVar[bool] = True
    rollback_action: ClassVar[str] = "switch"

    def describe(self) -> str:
        return "root@srv"


def rolled_back(target: Rollbackable, to: int | None = None) -> Report:
    from rehearse.pipeline import deploy

    req = deploy.RollbackRequest("fripon", to, 30.0, yes=False)
    return deploy._rollback(req, target, target.generations())  # type: ignore[arg-type]


def test_a_rollback_activates_the_generation_without_plan_or_push(tmp_path: Path) -> None:
    vm = Rollbackable(tmp_path)
    doc = rolled_back(vm).to_json()
    assert vm.steps == ["activate", f"rolled back to {SYSTEM}"]  # nothing planned, pushed or verified
    assert list(doc) == [
        *("name", "action", "source", "old_system", "new_system", "generation", "durations"),
        *("switch_rc", "failed_units", "result", "reason", "exit_code"),
    ]
    assert doc["source"] == "generation 1" and doc["old_system"] == CURRENT and doc["new_system"] == str(SYSTEM)
    assert set(doc["durations"]) == {"activate"} and doc["result"] == "confirmed" and doc["exit_code"] == 0
    [entry] = json.loads(vm.file.read_text())
    assert entry["source"] == "rollback to generation 1" and entry["action"] == "test" and entry["durations"] == {}


def test_a_rollback_to_the_current_generation_changes_nothing(tmp_path: Path) -> None:
    vm = Rollbackable(tmp_path)
    doc = rolled_back(vm, to=2).to_json()
    assert vm.steps == [] and doc["result"] == "unchanged" and doc["generation"] == 2


def test_a_rollback_that_does_not_hold_says_so(tmp_path: Path) -> None:
    with pytest.raises(RehearseError) as e:
        rolled_back(Rollbackable(tmp_path, ok=False))
    assert e.value.message == "rollback to generation 1 did not hold: a.service failed"
    assert e.value.exit_code == ExitCode.ROLLED_BACK and e.value.hint is None
    assert e.value.report is not None and "target" not in e.value.report


def test_a_server_rollback_asks_and_a_no_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    monkeypatch.setattr(pipeline, "confirm", lambda question, yes: asked.append(question) and False)
    server = RollbackServer(tmp_path)
    doc = rolled_back(server).to_json()
    assert asked == ["roll root@srv back to generation 1 (switch)? [y/N]"]
    assert server.steps == [] and doc["result"] == "declined" and doc["exit_code"] == ExitCode.DECLINED
    assert doc["target"] == "root@srv"

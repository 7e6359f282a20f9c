"""`rehearse promote NAME`: the configuration a VM rehearsed goes to the real
server, with the VM's pipeline (plan, push, activation detached from the SSH
session, health checks, magic rollback) and a guard: only a revision the VM
ran and confirmed goes.

The guard's key is the derivation of the server's own system
(`config.system.build.toplevel`, not the VM variant's): it changes with any
file, input or nixpkgs of the configuration. Each rehearsal — a confirmed
deploy, or an `up` that built and booted the VM — records it with the checks
that passed (VMDir's rehearsals.json); promote evaluates the configuration
as it stands and looks that derivation up.

The server is reached in the user's own SSH world (ssh.Remote.own_world):
their ~/.ssh/config, agent, known_hosts and NIX_SSHOPTS; its host key must be
known (or --accept-new-host-key), never skipped.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rehearse.config import Check
from rehearse.core import output
from rehearse.core.errors import ExitCode, RehearseError
from rehearse.core.values import Address
from rehearse.host import answers, nix, plan
from rehearse.host.plan import human, store_name
from rehearse.pipeline import deploy
from rehearse.store import history
from rehearse.store.state import VMDir
from rehearse.targets import activation
from rehearse.targets.activation import Verify
from rehearse.targets.target import Server


@dataclass(frozen=True)
class PromoteRequest:
    name: str
    to: Address
    action: str = "switch"
    dry_run: bool = False
    yes: bool = False
    force: bool = False
    accept_new_host_key: bool = False
    sudo: bool = False
    sudo_password: str | None = field(default=None, repr=False, compare=False)  # --ask-sudo-password's
    use_substitutes: bool = False
    build_host: str | None = None
    confirm_timeout: float = 60.0
    activation_timeout: float = 600.0
    checks: tuple[Check, ...] = ()


# --- rehearsals -------------------------------------------------------------


def record_rehearsal(vmdir: VMDir, server_drv: str | None, system: str, how: str, checks: list[str]) -> None:
    """The VM ran and confirmed this revision (`how`: "deploy" or "up")."""
    history.record_rehearsal(vmdir.file("rehearsals.json"), server_drv, system, how, checks)


def find_rehearsal(vmdir: VMDir, server_drv: str | None) -> dict[str, Any] | None:
    """The latest rehearsal of this revision of the server's system."""
    return history.find_rehearsal(vmdir.file("rehearsals.json"), server_drv)


def describe_rehearsal(r: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(r.get("time", 0))))
    checks = ", ".join(r.get("checks") or []) or "no checks configured"
    return f"rehearsed {when} by `{r.get('how')}` of {store_name(str(r.get('vm_system')))}; passed: {checks}"


# --- promote -----------------------------------------------------------------


def run_promote(req: PromoteRequest) -> dict[str, Any]:
    """Promote under the VM's lock: no deploy, rollback or destroy of the VM
    runs beside it (its rehearsals, state and promotion history)."""
    if not req.dry_run:
        deploy.must_ask(
            f"`promote` would {req.action} {req.to} to what {req.name} rehearsed",
            "nothing was sent to the server",
            req.yes,
        )
    vmdir = VMDir(req.name)
    with vmdir.locked("rehearse promote"):
        return _promote(req, vmdir)


def _promote(req: PromoteRequest, vmdir: VMDir) -> dict[str, Any]:
    state = vmdir.load()
    source = nix.Source.from_json(state.source).of_vm(req.name)
    report: dict[str, Any] = {
        "name": req.name,
        "action": "promote",
        "target": str(req.to),
        "switch_action": req.action,
        "source": source.describe(),
        "durations": {},
    }
    times = report["durations"]

    # 1. The guard: this revision must be one the VM ran and confirmed.
    t = time.monotonic()
    output.step(f"evaluating {source.describe()} (the server's own system)")
    ev = nix.server_eval(source, instantiate=True)
    if ev.failed_assertions:
        raise RehearseError(
            "the server's own system does not build: Failed assertions:\n"
            + "".join(f"- {m}\n" for m in ev.failed_assertions).rstrip(),
            exit_code=ExitCode.CONFIG,
            report={**report, "result": "error"},
        )
    rehearsal = find_rehearsal(vmdir, ev.drv_path)
    report["server_drv"] = ev.drv_path
    report["rehearsal"] = rehearsal
    if rehearsal is not None:
        output.info(f"  {describe_rehearsal(rehearsal)}")
    elif req.force:
        output.warn("this revision was never rehearsed on the VM; promoting it anyway (--force, recorded)")
    else:
        raise RehearseError(
            f"not rehearsed — deploy it to the VM first: {req.name} never ran and confirmed this revision of the "
            "configuration (its files, inputs or nixpkgs changed since the last rehearsal). Nothing was sent.",
            hint=f"`rehearse deploy {req.name}`, then promote again (or --force, which is recorded)",
            exit_code=ExitCode.NOT_REHEARSED,
            report={**report, "result": "not-rehearsed"},
        )

    # 2. Build the server's system (locally, or on --build-host through
    # Nix's remote builds); meanwhile, reach the server (its host key known,
    # or refused), settle what an interrupted promote left pending there and
    # read what it runs.
    server = Server(
        req.to,
        vmdir,
        accept_new_host_key=req.accept_new_host_key,
        sudo=req.sudo,
        sudo_password=req.sudo_password,
    )
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            output.step(f"building the server's system; connecting to {server.describe()}")
            reaching = pool.submit(server.reach, req.activation_timeout)
            system = nix.build_server(
                source, vmdir.file("promote-next"), build_host=req.build_host, drv_path=ev.drv_path
            )
            settled = reaching.result()
        times["build"] = round(time.monotonic() - t, 2)
        report["new_system"] = str(system)
        return _promote_to(req, server, settled, state.forwards, system, report, rehearsal)
    finally:
        server.close()


def _promote_to(
    req: PromoteRequest,
    server: Server,
    settled: answers.Settled,
    vm_forwards: list[dict[str, Any]],
    system: Path,
    report: dict[str, Any],
    rehearsal: dict[str, Any] | None,
) -> dict[str, Any]:
    times = report["durations"]
    where = server.describe()

    # 3. What it runs.
    settled.say()
    current = settled.current
    report["old_system"] = current or None
    if current == str(system):
        output.info(f"{where} already runs {system}: nothing to promote")
        return {**report, "result": "unchanged", "exit_code": ExitCode.OK}

    # 4. Plan.
    pl = server.plan(current, system)
    report["store"] = {"missing": len(pl.to_push), "bytes": pl.push_bytes}
    report["plan"] = deploy.show_plan(f"{where} ({req.action})", pl)
    output.info(f"  copy: {len(pl.to_push)} paths the server lacks, {human(pl.push_bytes)}")
    if req.dry_run:
        output.info("dry run: nothing copied, nothing activated on the server")
        return {**report, "result": "dry-run", "exit_code": ExitCode.OK}

    # 5. Push; the units from the server's own dry-activate when this
    # machine lacks its running system.
    t = time.monotonic()
    server.push(pl, use_substitutes=req.use_substitutes)
    times["push"] = round(time.monotonic() - t, 2)
    if pl.units is None:
        from rehearse.targets.target import DryActivateFailed, dry_activate

        try:
            units = dry_activate(server.remote, system, server.describe())
        except DryActivateFailed as e:
            raise RehearseError(
                f"{e} (on {where}); nothing was activated.", report={**report, "result": "error"}
            ) from None
        report["plan"]["units"] = units.to_json()
        for line in plan.dry_activate_text(units).splitlines():
            output.info(f"  {line}")
    if not deploy.confirm(f"{req.action} {where} to it? [y/N]", req.yes):
        output.info("not activated; the server runs what it ran")
        return {**report, "result": "declined", "exit_code": ExitCode.DECLINED}

    # 6. Activate: detached on the server, verified over a new connection,
    # confirmed, or rolled back (system and boot entry) by the server itself.
    forwards = {int(f["host"]): int(f["guest"]) for f in vm_forwards if f.get("proto", "tcp") == "tcp"}
    t = time.monotonic()
    output.step(f"activating on {where} ({req.action})")
    outcome = activation.activate(
        server.remote,
        str(system),
        req.confirm_timeout,
        Verify(checks=tuple(server.checks(req.checks, forwards)), fresh_login=True),
        activation_timeout=req.activation_timeout,
        action=req.action,
        keep_profile=req.action == "test",  # nixos-rebuild test: no generation, the boot menu as it was
    )
    times["activate"] = round(time.monotonic() - t, 2)
    if outcome.after_switch is not None:
        times["after_switch"] = outcome.after_switch
    report.update(outcome.report(), forced=rehearsal is None)
    history.record(
        server.history,
        {
            "time": time.time(),
            "target": str(req.to),
            "system": str(system),
            "previous": current or None,
            "result": outcome.result,
            "action": req.action,
            "source": report["source"],
            "forced": rehearsal is None,
            "rehearsal": rehearsal,
            "durations": times,
        },
    )
    if outcome.ok:
        output.success(f"{where} runs {store_name(str(system))} ({req.action})")
        return {**report, "exit_code": ExitCode.OK}
    raise RehearseError(
        deploy.rolled_back("the promoted configuration", where, current, outcome),
        exit_code=ExitCode.ROLLED_BACK,
        report=dict(report),
    )

"""`rehearse promote NAME`: the configuration a VM rehearsed goes to the real
server, with the VM's pipeline (run.py: plan, push, activation detached
from the SSH session, health checks, magic rollback) and a guard: only a
revision the VM ran and confirmed goes.

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

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from rehearse.config import Check
from rehearse.core import output
from rehearse.core.errors import ExitCode, RehearseError
from rehearse.core.values import Address
from rehearse.host import nix
from rehearse.host.plan import store_name
from rehearse.pipeline import deploy
from rehearse.pipeline.run import Job, Report, Words, run
from rehearse.store import history
from rehearse.store.state import VMDir
from rehearse.targets.activation import Verify
from rehearse.targets.target import ActivateOptions, PushOptions, Server


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


def run_promote(req: PromoteRequest) -> Report:
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


def _promote(req: PromoteRequest, vmdir: VMDir) -> Report:
    state = vmdir.load()
    source = nix.Source.of_record(state.source).of_vm(req.name)
    report = Report(
        name=req.name, action="promote", target=str(req.to), switch_action=req.action, source=source.describe()
    )

    # 1. The guard: this revision must be one the VM ran and confirmed.
    t = time.monotonic()
    output.step(f"evaluating {source.describe()} (the server's own system)")
    ev = nix.server_eval(source, instantiate=True)
    if ev.failed_assertions:
        raise RehearseError(
            "the server's own system does not build: Failed assertions:\n"
            + "".join(f"- {m}\n" for m in ev.failed_assertions).rstrip(),
            exit_code=ExitCode.CONFIG,
            report=report.error(),
        )
    rehearsal = find_rehearsal(vmdir, ev.drv_path)
    report = dataclasses.replace(report, server_drv=ev.drv_path, rehearsal=rehearsal)
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
            report=report.error("not-rehearsed"),
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
        forwards=state.tcp_forwards(),
    )
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            output.step(f"building the server's system; connecting to {server.describe()}")
            reaching = pool.submit(server.settle, req.activation_timeout)
            system = nix.build_server(
                source, vmdir.file("promote-next"), build_host=req.build_host, drv_path=ev.drv_path
            )
            settled = reaching.result()
        report = dataclasses.replace(report.timed("build", t), new_system=str(system))
        # 3. What it runs; then the pipeline (run.py): plan, push (the units
        # from the server's own dry-activate when this machine lacks its
        # running system), activate — detached on the server, verified over
        # a new connection, confirmed, or rolled back (system and boot
        # entry) by the server itself.
        settled.say()
        return run(server, _job(req, server, rehearsal), report, settled.current, system)
    finally:
        server.close()


def _job(req: PromoteRequest, server: Server, rehearsal: dict[str, Any] | None) -> Job:
    where = server.describe()

    def activated(report: Report) -> Report:
        report = dataclasses.replace(report, forced=rehearsal is None)
        outcome = report.activation
        assert outcome is not None
        history.record(
            server.history,
            history.Promoted(
                time=time.time(),
                target=str(req.to),
                system=report.new_system,
                previous=report.previous,
                result=outcome.result,
                action=req.action,
                source=report.source,
                forced=rehearsal is None,
                rehearsal=rehearsal,
                durations=report.durations,
                changes=deploy.changes(report.plan),
            ),
        )
        return report

    def confirmed(report: Report, verify: Verify) -> Report:
        output.success(f"{where} runs {store_name(str(report.new_system))} ({req.action})")
        return report

    return Job(
        where=where,
        heading=f"{where} ({req.action})",
        words=Words(
            verb="promote",
            dry_run="dry run: nothing copied, nothing activated on the server",
            question=f"{req.action} {where} to it? [y/N]",
            declined="not activated; the server runs what it ran",
            rolled_back="the promoted configuration",
        ),
        activate=ActivateOptions(
            req.confirm_timeout,
            req.activation_timeout,
            action=req.action,
            keep_profile=req.action == "test",  # nixos-rebuild test: no generation, the boot menu as it was
        ),
        push=PushOptions(use_substitutes=req.use_substitutes),
        dry_run=req.dry_run,
        yes=req.yes,
        checks=req.checks,
        activated=activated,
        confirmed=confirmed,
    )

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

import os
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rehearse import deploy, nix, output, plan, process, ssh
from rehearse.config import Check
from rehearse.errors import ExitCode, RehearseError
from rehearse.state import VMDir

_TARGET = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)"
    r"(?::(?P<port>[0-9]{1,5}))?$"
)


@dataclass(frozen=True)
class Target:
    """Where promote goes: USER@HOST[:PORT]; user and port may be left to
    the user's ssh configuration."""

    host: str
    user: str = ""
    port: int = 0

    @classmethod
    def parse(cls, text: str, where: str = "--to") -> Target:
        m = _TARGET.match(text.strip())
        if not m or m.group("host").startswith("-"):
            raise RehearseError(
                f"{where}: {text!r} is not a server: expected USER@HOST[:PORT], HOST or HOST:PORT",
                hint="e.g. root@fripon.example.org or admin@203.0.113.10:2222",
                exit_code=ExitCode.USAGE,
            )
        port = int(m.group("port") or 0)
        if m.group("port") and not 1 <= port <= 65535:
            raise RehearseError(f"{where}: port {port} is out of range (1–65535)", exit_code=ExitCode.USAGE)
        return cls(host=m.group("host").strip("[]"), user=m.group("user") or "", port=port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (f"{self.user}@" if self.user else "") + host + (f":{self.port}" if self.port else "")

    @property
    def key(self) -> str:
        """A file name for this target's history."""
        return re.sub(r"[^A-Za-z0-9._@-]", "_", str(self))


@dataclass(frozen=True)
class PromoteRequest:
    name: str
    to: Target
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
    if server_drv is None:
        return
    deploy.record(
        vmdir.file("rehearsals.json"),
        {"time": time.time(), "server_drv": server_drv, "vm_system": system, "how": how, "checks": checks},
    )


def find_rehearsal(vmdir: VMDir, server_drv: str | None) -> dict[str, Any] | None:
    """The latest rehearsal of this revision of the server's system."""
    if server_drv is None:
        return None
    matches = [r for r in deploy.load_history(vmdir.file("rehearsals.json")) if r.get("server_drv") == server_drv]
    return matches[-1] if matches else None


def describe_rehearsal(r: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(r.get("time", 0))))
    checks = ", ".join(r.get("checks") or []) or "no checks configured"
    return f"rehearsed {when} by `{r.get('how')}` of {deploy.store_name(str(r.get('vm_system')))}; passed: {checks}"


# --- the server ---------------------------------------------------------------


def server_remote(req: PromoteRequest, control_path: Path) -> ssh.Remote:
    return ssh.Remote(
        host=req.to.host,
        port=req.to.port,
        user=req.to.user,
        key=None,
        known_hosts=None,
        host_key_alias=None,
        control_path=control_path,
        own_world=True,
        extra_options=tuple(shlex.split(os.environ.get("NIX_SSHOPTS", ""))),
        accept_new_host_key=req.accept_new_host_key,
        sudo=req.sudo,
        sudo_password=req.sudo_password,
    )


def copy_closure(remote: ssh.Remote, system: Path, use_substitutes: bool) -> None:
    """nix-copy-closure over rehearse's master connection, compressed, with
    the user's NIX_SSHOPTS (already in the Remote's options); the server's
    own substituters first with --use-substitutes."""
    opts = " ".join(shlex.quote(o) for o in ssh.options(remote))
    argv = ["nix-copy-closure", "--to", remote.target, "--gzip", *(["--use-substitutes"] if use_substitutes else [])]
    env = {"NIX_SSHOPTS": opts}
    result = process.run([*argv, str(system)], env=env, check=False, on_stderr=lambda line: output.info(f"  {line}"))
    if result.returncode != 0:
        raise RehearseError(
            f"copying {deploy.store_name(str(system))} to {remote.describe()} failed (exit {result.returncode}); "
            "nothing was activated.",
            hint="the server needs a Nix that the remote user may run; the copy runs as that user, also with --sudo: "
            "a user other than root must be one of its nix.settings.trusted-users, or its Nix refuses unsigned paths",
        )


def _check_for_server(check: Check, forwards: dict[int, int], host: str) -> Check | None:
    """A VM check made the server's: `cmd` runs there as it is; a `tcp` or
    `http` check through a port the VM forwards goes to that guest port on
    the server. None: it cannot be made the server's (it names no forward)."""
    if check.kind == "cmd":
        return check
    if check.kind == "tcp":
        guest = forwards.get(int(check.target))
        return Check("tcp", f"{host}:{guest}") if guest else None
    m = re.match(r"^(https?://)(?:127\.0\.0\.1|localhost):([0-9]+)(/.*)?$", check.target)
    if not m or int(m.group(2)) not in forwards:
        return None
    return Check("http", f"{m.group(1)}{host}:{forwards[int(m.group(2))]}{m.group(3) or '/'}")


# --- promote -----------------------------------------------------------------


def run_promote(req: PromoteRequest) -> dict[str, Any]:
    vmdir = VMDir(req.name)
    state = vmdir.load()
    source = nix.Source.from_json(state.source)
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
    ev = nix.server_eval(source)
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

    # 2. Build the server's system (locally, or on --build-host through Nix's remote builds).
    system = nix.build_server(source, vmdir.file("promote-next"), build_host=req.build_host)
    times["build"] = round(time.monotonic() - t, 2)
    report["new_system"] = str(system)

    # 3. Reach the server (its host key known, or refused) and read what it runs.
    remote = server_remote(req, vmdir.socket("promote.ctl"))
    try:
        return _promote_to(req, vmdir, remote, system, report, rehearsal)
    finally:
        ssh.close_master(remote)


def _promote_to(
    req: PromoteRequest,
    vmdir: VMDir,
    remote: ssh.Remote,
    system: Path,
    report: dict[str, Any],
    rehearsal: dict[str, Any] | None,
) -> dict[str, Any]:
    times = report["durations"]
    output.step(f"connecting to {remote.describe()}")
    ssh.check_sudo(remote)
    reached = ssh.run(remote, ["sh", "-c", "readlink /run/current-system; command -v nix-store >/dev/null && echo nix"])
    lines = reached.stdout.split()
    current = lines[0] if lines and lines[0].startswith("/nix/store/") else ""
    if "nix" not in lines:
        raise RehearseError(f"{remote.describe()} has no nix-store on its PATH: is it a NixOS machine?")
    report["old_system"] = current or None
    if current == str(system):
        output.info(f"{remote.describe()} already runs {system}: nothing to promote")
        return {**report, "result": "unchanged", "exit_code": ExitCode.OK}

    # 4. Plan: what the server lacks (and its size); the closure and unit plan
    # from the host when it has the server's running system, else from the
    # server's dry-activate once the new system is there.
    closure = nix.closure(system)
    missing = ssh.run(remote, ["sh", "-c", "xargs -r nix-store --check-validity --print-invalid"],
                      input="\n".join(closure) + "\n").stdout.split()  # fmt: skip
    sizes = nix.sizes(missing)
    report["store"] = {"missing": len(missing), "bytes": sum(sizes.values())}
    output.step(f"plan for {remote.describe()} ({req.action})")
    output.info(f"  {current or '(no system)'}\n→ {system}")
    output.info(f"  copy: {len(missing)} paths the server lacks, {plan.human(sum(sizes.values()))}")
    local_current = Path(current) if current and Path(current).exists() else None
    units = plan.units_between(local_current, system) if local_current else None
    if local_current is not None:
        diff = deploy.closure_diff(local_current, system)
        for line in plan.render(diff, units or plan.parse_dry_activate("")):
            output.info(line)
    else:
        output.info("  (the server's system is not in this machine's store: the units come from its dry-activate)")
    if req.dry_run:
        output.info("dry run: nothing copied, nothing activated on the server")
        return {**report, "result": "dry-run", "exit_code": ExitCode.OK}

    # 5. Push.
    t = time.monotonic()
    if missing:
        output.step(f"copying {len(missing)} paths to {remote.describe()}")
        copy_closure(remote, system, req.use_substitutes)
    times["push"] = round(time.monotonic() - t, 2)
    if units is None:
        dry = ssh.run(remote, [f"{system}/bin/switch-to-configuration", "dry-activate"], check=False)
        for line in (dry.stderr + dry.stdout).strip().splitlines():
            output.info(f"  {line}")
    if not req.yes and sys.stdin.isatty():
        if output.ask(f"{req.action} {remote.describe()} to it? [y/N]").strip().lower() not in ("y", "yes"):
            output.info("not activated; the server runs what it ran")
            return {**report, "result": "declined", "exit_code": ExitCode.DECLINED}

    # 6. Activate: detached on the server, verified over a new connection,
    # confirmed, or rolled back (system and boot entry) by the server itself.
    forwards = {int(f["host"]): int(f["guest"]) for f in vmdir.load().forwards}
    checks = [c for c in (_check_for_server(c, forwards, req.to.host) for c in req.checks) if c is not None]
    skipped = len(req.checks) - len(checks)
    if skipped:
        output.warn(f"{skipped} check(s) of rehearse.toml name a port the VM does not forward: not run on the server")
    t = time.monotonic()
    output.step(f"activating on {remote.describe()} ({req.action})")
    outcome = deploy.activate(
        remote,
        system,
        req.confirm_timeout,
        checks,
        activation_timeout=req.activation_timeout,
        fresh_login=True,
        action=req.action,
    )
    times["activate"] = round(time.monotonic() - t, 2)
    report.update(outcome.report(), forced=rehearsal is None)
    deploy.record(
        vmdir.file(f"promotions-{req.to.key}.json"),
        {
            "time": time.time(),
            "target": str(req.to),
            "system": str(system),
            "previous": current or None,
            "result": outcome.result,
            "action": req.action,
            "forced": rehearsal is None,
            "rehearsal": rehearsal,
            "durations": times,
        },
    )
    if outcome.ok:
        output.success(f"{remote.describe()} runs {deploy.store_name(str(system))} ({req.action})")
        return {**report, "exit_code": ExitCode.OK}
    raise RehearseError(
        f"the promoted configuration was rolled back; {remote.describe()} runs {deploy.store_name(current)} again "
        f"({report['reason']}).",
        exit_code=ExitCode.ROLLED_BACK,
        report=dict(report),
    )

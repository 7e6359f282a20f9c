"""What a deploy goes to: a running VM (`deploy`, `rollback`) or a real
server (`promote`, `rollback --server`). The pipeline (pipeline/run.py: plan → push → activate →
verify → roll back) is the same; a target (the `Target` protocol) says how
its steps are done there:

- VM: rehearse's own channel (its key, its pinned host key, its sshd); the
  VM sees the host's store, so new paths are registered, not copied
  (zero-copy), and copied only when it does not see them; its state
  (runner, system, forwards) is rehearse's and is kept up to date here.
- Server: the user's SSH world; the closure is really copied
  (nix-copy-closure, compressed, the server's own substituters first if
  asked); the plan's closure and units come from this machine when it has
  the server's running system, else from the server's dry-activate.
"""

from __future__ import annotations

import math
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from rehearse.config import ACTIVATION_TIMEOUT, Check
from rehearse.core import output
from rehearse.core.errors import RehearseError
from rehearse.core.values import Address, CheckKind
from rehearse.host import answers, nix, plan, qemu, scripts, server_ssh, ssh
from rehearse.host.answers import Generations
from rehearse.host.plan import ClosureDiff, Units, human, store_name
from rehearse.machines import lifecycle
from rehearse.store.state import ServerPort, VMDir, VMState
from rehearse.targets import activation

PROFILE = "/nix/var/nix/profiles/system"

# How long the server's sshd may take to greet after a switch (a restarted
# sshd, a socket unit coming back) before its port counts as closed.
SERVER_SSH_GRACE = 4.0


@dataclass(frozen=True)
class Plan:
    """What a switch from `current` to `system` would do."""

    current: str  # "" when nothing runs there yet
    system: Path
    diff: ClosureDiff | None  # None: the running system is not on this machine
    units: plan.Units | None  # None: not known before the new system is there (dry-activate then)
    to_push: list[str]  # store paths to make valid there
    push_sizes: dict[str, int] | None = None  # their sizes, when they were asked (a server's copy)

    @property
    def push_bytes(self) -> int:
        return sum((self.push_sizes or {}).values())

    def to_json(self) -> dict[str, Any]:
        return {**(self.diff.to_json() if self.diff else {}), "units": self.units.to_json() if self.units else None}


@dataclass(frozen=True)
class Pushed:
    registered: int  # made valid in the guest without copying (host store shared)
    copied: int  # given to nix-copy-closure, which copies those the other side lacks
    # Registered with the activation (guest/start.sh), one round trip less;
    # a path the guest cannot see then is copied before the activation starts.
    pending: list[str] | None = None


@dataclass(frozen=True)
class PushOptions:
    """How the new paths are to be pushed (`Target.push`)."""

    copy: bool = False  # a VM: copy them rather than register them (deploy --copy)
    use_substitutes: bool = False  # a server: its own substituters first (promote --use-substitutes)


@dataclass(frozen=True)
class ActivateOptions:
    """How the activation runs (`Target.activate`; activation.activate)."""

    confirm_timeout: float
    activation_timeout: float = ACTIVATION_TIMEOUT
    action: str = "test"  # switch-to-configuration's: "test", "switch", "boot"
    keep_profile: bool = False  # nixos-rebuild test: no generation, the boot menu as it was
    generation: int | None = None  # a rollback: the generation to switch to
    keep_failed: bool = False  # a failed activation stays in place (deploy --keep-failed)


@dataclass(frozen=True)
class Activated:
    outcome: activation.Outcome
    pushed: Pushed  # what was pushed in the end (a VM copies what it could not see)


class Target(Protocol):
    """The steps of the pipeline (pipeline/run.py), as a target does them."""

    # Whether its push goes before the plan is shown: a VM's only registers
    # (zero-copy), and its guest plans once it sees the new system; a
    # server's copies, after the plan was shown and a dry run stopped.
    push_first: ClassVar[bool]
    # A server of the user's: named in --json (`target`) and in commands
    # (`--server`); asked before a rollback, which switches (the boot entry
    # too). A VM's rollback is a `test`: its next start boots its runner.
    is_server: ClassVar[bool]
    rollback_action: ClassVar[str]
    remote: ssh.Remote

    @property
    def history(self) -> Path: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...

    # `for_push`: new paths are to be pushed there (a server must then have Nix).
    def settle(self, timeout: float, *, for_push: bool = True) -> answers.Settled: ...

    def reconcile(self, running: str) -> None: ...

    def rolled_back_to(self, system: Path) -> None: ...

    def plan(self, current: str, system: Path) -> Plan: ...

    def push(self, pl: Plan, options: PushOptions) -> Pushed: ...

    def dry_activate(self, system: Path) -> Units: ...

    def store_json(self, pl: Plan, pushed: Pushed | None) -> dict[str, int]: ...

    def push_line(self, pl: Plan, pushed: Pushed | None) -> str: ...

    def verify(self, current: str, pl: Plan, checks: tuple[Check, ...], ssh_check: bool) -> activation.Verify: ...

    def activate(
        self, system: Path, pushed: Pushed, verify: activation.Verify, options: ActivateOptions
    ) -> Activated: ...

    def generations(self) -> Generations: ...


def _activate(
    remote: ssh.Remote,
    system: Path,
    verify: activation.Verify,
    options: ActivateOptions,
    register: list[str] | None = None,
) -> activation.Outcome:
    return activation.activate(
        remote,
        str(system),
        options.confirm_timeout,
        verify,
        generation=options.generation,
        activation_timeout=options.activation_timeout,
        register=register,
        action=options.action,
        keep_profile=options.keep_profile,
        keep_failed=options.keep_failed,
    )


class DryActivateFailed(Exception):
    def __init__(self, returncode: int, stderr: str) -> None:
        super().__init__(f"switch-to-configuration dry-activate failed (exit {returncode}):\n{stderr}")
        self.returncode = returncode
        self.stderr = stderr


def dry_activate(remote: ssh.Remote, system: Path, who: str) -> plan.Units:
    """The units a switch to `system` would touch, from its own
    dry-activate on the other side (the new system's files must be there)."""
    r = ssh.run(remote, [f"{system}/bin/switch-to-configuration", "dry-activate"], check=False)
    if r.returncode != 0:
        raise DryActivateFailed(r.returncode, answers.text(r.stderr))
    return answers.dry_activate(who, r.stderr + "\n" + r.stdout)


# --- a VM ---------------------------------------------------------------------


class VM:
    """A handle on a running VM: its state directory, its recorded state and
    the channel to it. Commands use it rather than each other."""

    push_first: ClassVar[bool] = True
    is_server: ClassVar[bool] = False
    rollback_action: ClassVar[str] = "test"

    def __init__(self, vmdir: VMDir, state: VMState, remote: ssh.Remote) -> None:
        self.dir = vmdir
        self.state = state
        self.remote = remote

    @classmethod
    def running(cls, vmdir: VMDir) -> VM:
        """The VM, which must be running (else a clear error)."""
        state, remote = lifecycle.running(vmdir)
        return cls(vmdir, state, remote)

    @property
    def name(self) -> str:
        return self.dir.name

    def describe(self) -> str:
        return self.name

    @property
    def who(self) -> str:
        """How messages about its answers name it (answers.py)."""
        return f"the VM {self.name}"

    @property
    def history(self) -> Path:
        return self.dir.file("deploys.json")

    @property
    def rehearsals(self) -> Path:
        return self.dir.file("rehearsals.json")

    def close(self) -> None:
        """Nothing to close: the VM's SSH master is kept for later commands."""

    def settle(self, timeout: float, *, for_push: bool = True) -> answers.Settled:
        return activation.settle(self.remote, timeout)

    # The VM's record of what it runs and what boots it.

    def reconcile(self, running: str) -> None:
        lifecycle.reconcile(self.dir, self.state, running)

    def adopt(self, system: Path, runner: Path, source: nix.Source) -> None:
        """The VM now runs `system`: a restart (down + up) must boot it, so
        the runner built in the same evaluation becomes the VM's."""
        self.boot_next(system, runner)
        self.state.system = str(system)
        self.state.source = source.record()
        self.dir.save(self.state)

    def boot_next(self, system: Path, runner: Path) -> None:
        """The VM's next start boots `system` (its `runner`)."""
        nix.add_root(runner, self.dir.file(f"runners/{runner.name}"))
        self.state.runners[str(system)] = str(runner)
        self.state.runner = str(runner)
        self.dir.save(self.state)

    def rolled_back_to(self, system: Path) -> None:
        """A rollback made `system` the running one."""
        self.state.system = str(system)
        if str(system) in self.state.runners:
            self.state.runner = self.state.runners[str(system)]
        else:
            output.warn(
                f"rehearse has no VM runner for this system: a restart (down + up) boots "
                f"{store_name(str(Path(self.state.runner or '') / 'system'))} until the next deploy"
            )
        self.dir.save(self.state)

    def restart(self) -> None:
        lifecycle.restart(self.dir)

    def tcp_forwards(self) -> dict[int, int]:
        """Host port → guest port of what the VM forwards (TCP)."""
        return self.state.tcp_forwards()

    def greets(self) -> bool:
        """Whether the management sshd answers a new connection with its SSH
        greeting (through the same forward and firewall as any login)."""
        return qemu.ssh_banner(self.remote.port, timeout=5.0)

    # plan → push

    def plan(self, current: str, system: Path) -> Plan:
        """Planned on the host from the running and the new system's files
        (plan.units_between); only when the running system is not on the
        host, the guest's dry-activate says (it sees the new system through
        the host store it mounts). Units None: the guest could not see it."""
        diff = plan.closure_diff(Path(current) if current else None, system)
        units = plan.units_between(Path(current), system) if current else None
        if units is None:
            output.debug(f"{current or 'the running system'} is not on the host: the guest plans the switch")
            try:
                units = dry_activate(self.remote, system, self.who)
            except DryActivateFailed as e:
                output.debug(str(e))
        return Plan(current, system, diff, units, diff.added_paths)

    def push(self, pl: Plan, options: PushOptions) -> Pushed:
        """Register the new paths with the activation (zero-copy: the VM
        sees the host store), or copy them (`options.copy`, or when the
        guest could not plan: it does not see the new system)."""
        if not pl.to_push:
            return Pushed(0, 0)
        if options.copy or pl.units is None:
            self.copy(pl.to_push)
            return Pushed(0, len(pl.to_push))
        return Pushed(len(pl.to_push), 0, pending=pl.to_push)

    def dry_activate(self, system: Path) -> Units:
        """The guest plans, once the copy made the new system visible."""
        try:
            return dry_activate(self.remote, system, self.remote.who)
        except DryActivateFailed as e:
            raise RehearseError(str(e)) from None

    def store_json(self, pl: Plan, pushed: Pushed | None) -> dict[str, int]:
        """The --json `store` of a deploy: how the new paths were pushed."""
        return {"registered": pushed.registered, "copied": pushed.copied} if pushed else {}

    def push_line(self, pl: Plan, pushed: Pushed | None) -> str:
        """What the push did (said after the plan)."""
        pushed = pushed or Pushed(0, 0)
        when = " (with the activation)" if pushed.pending else ""
        return f"  store: {pushed.registered} new paths registered without copying{when}, {pushed.copied} copied"

    def verify(self, current: str, pl: Plan, checks: tuple[Check, ...], ssh_check: bool) -> activation.Verify:
        server_check = self.sshd_check(current, pl.system) if ssh_check else None
        units = pl.units or plan.Units()
        touched = {*units.stop, *units.restart, *units.start}
        return activation.Verify(
            checks=checks,
            server_check=server_check,
            # A switch that restarts rehearse's own sshd is verified by a new login through it.
            fresh_login=pl.units is None or "rehearse-sshd.service" in touched,
            greets=self.greets,
        )

    def activate(self, system: Path, pushed: Pushed, verify: activation.Verify, options: ActivateOptions) -> Activated:
        """The activation, with the pending registration; paths the guest
        does not see through the host store are copied, then it starts again."""
        try:
            return Activated(_activate(self.remote, system, verify, options, register=pushed.pending), pushed)
        except activation.NotVisible as e:
            for path in e.paths:
                output.debug(f"not visible in the guest: {path}")
            paths = pushed.pending or []
            output.info(f"  store: the VM does not see {len(e.paths)} new paths through the host store; copying")
            self.copy(paths)
            return Activated(_activate(self.remote, system, verify, options), Pushed(0, len(paths)))

    def copy(self, paths: list[str]) -> None:
        """Copy with nix-copy-closure over the VM's SSH master, after checking
        that the guest's store has room for what it lacks: a full disk must
        refuse the deploy before anything changes, not fail half-way."""
        room = answers.room(self.who, ssh.run(self.remote, scripts.sh("room.sh", *paths)).stdout, set(paths))
        avail, missing = room.free, room.missing
        needed = sum(nix.sizes(missing).values())
        # Unpacked NARs take about their size; leave a margin for the database.
        if needed + 16 * 1024 * 1024 > avail:
            raise RehearseError(
                f"the VM's store has {human(avail)} free; copying the {len(missing)} paths it lacks needs "
                f"{human(needed)} (+16 MiB of margin). Nothing was changed.",
                hint="give the VM's store more room (virtualisation.memorySize, or virtualisation.diskSize with "
                "virtualisation.writableStoreUseTmpfs = false), or deploy without --copy so the paths are "
                "registered from the host store the VM mounts",
            )
        if not missing:
            return
        r = nix.copy_closure(self.remote.target, missing, ssh.options(self.remote))
        if r.returncode != 0:
            raise RehearseError(
                f"copying {len(missing)} paths into {self.name} failed (exit {r.returncode}); nothing was activated:\n"
                + r.stderr.strip()[-2000:]
            )

    # verify

    def sshd_check(self, current: str, system: Path) -> activation.ServerCheck | None:
        """The check that the new system keeps the server's own SSH open
        (server_ssh.py), or None when neither system runs the server's sshd.
        Ports the VM does not forward yet are forwarded now (QMP
        hostfwd_add). The server's host keys are read through the management
        channel after the switch and pinned, so even this check never trusts
        on first use."""
        public = self.dir.file("id_ed25519.pub").read_text()
        old = server_ssh.read(Path(current), public) if current else server_ssh.Sshd(enabled=False)
        new = server_ssh.read(system, public)
        if not old.enabled and not new.enabled:
            return None
        if not new.enabled:
            return lambda: (
                "the server's own sshd is off in the new configuration (services.openssh.enable): "
                "the real server could not be reached over SSH"
            )
        state = self.state
        forwards = {guest: host for host, guest in self.tcp_forwards().items()}
        forwards |= {p.guest: p.host for p in state.server_ssh}
        for port in new.ports:
            if port not in forwards:
                host = qemu.pick_port(2200 + port % 100, taken=set(forwards.values()) | {state.ssh_port or 0})
                qemu.add_forward(self.dir.socket("qmp.sock"), qemu.Forward(host, port))
                forwards[port] = host
                state.server_ssh.append(ServerPort(host, port))
                self.dir.save(state)
                output.info(f"  the server's sshd port {port} is now forwarded from 127.0.0.1:{host}")
        known_hosts = self.dir.file("server_known_hosts")
        base = ssh.Remote(
            "127.0.0.1", 0, "root", self.dir.file("id_ed25519"), known_hosts, f"rehearse-{self.name}-server"
        )
        keys = [f"{k}.pub" for k in server_ssh.host_keys(system)]
        remote = self.remote

        def pin() -> None:
            shown = ssh.run(remote, scripts.sh("host-keys.sh", *keys), check=False).stdout
            lines = [f"{base.host_key_alias} {key}" for key in answers.host_keys(self.who, shown)]
            known_hosts.write_text("".join(f"{line}\n" for line in lines))
            known_hosts.chmod(0o600)

        def check() -> str | None:
            # The keys pinned by an earlier check are tried first (a round trip
            # less); read again when the server's sshd shows another.
            pinned = known_hosts.exists() and known_hosts.stat().st_size > 0
            if not pinned:
                pin()
            results = server_ssh.check(base, new, forwards, grace=SERVER_SSH_GRACE)
            if pinned and any(not r.ok and "Host key verification failed" in r.detail for r in results):
                pin()
                results = server_ssh.check(base, new, forwards, grace=SERVER_SSH_GRACE)
            bad = [r for r in results if not r.ok]
            if not bad:
                for r in results:
                    output.info(f"  the server's sshd on port {r.port}: {r.detail}")
                return None
            why = "; ".join(f"port {r.port}: {r.detail}" for r in bad)
            if not old.enabled:
                output.warn(f"the server's sshd, new in this configuration, does not let anyone in: {why}")
                return None
            return f"the server's own SSH would lock you out ({why})"

        return check

    def generations(self) -> Generations:
        return read_generations(self.remote)


def read_generations(remote: ssh.Remote) -> Generations:
    """The system profile's generations over there (guest/generations.sh)."""
    out = ssh.run(remote, scripts.sh("generations.sh", PROFILE)).stdout
    return answers.generations(remote.who, out, PROFILE)


# --- a real server ----------------------------------------------------------


class Server:
    """A real server, reached in the user's own SSH world (ssh.Remote.
    own_world: their ~/.ssh/config, agent, known_hosts and NIX_SSHOPTS; its
    host key known, or --accept-new-host-key), through a ControlMaster of
    rehearse's own (`control_path`, in the VM's state directory)."""

    push_first: ClassVar[bool] = False
    is_server: ClassVar[bool] = True
    rollback_action: ClassVar[str] = "switch"

    def __init__(
        self,
        address: Address,
        vmdir: VMDir,
        *,
        accept_new_host_key: bool = False,
        sudo: bool = False,
        sudo_password: str | None = None,
        forwards: dict[int, int] | None = None,
    ) -> None:
        self.address = address
        self.vmdir = vmdir
        self.forwards = forwards or {}  # the VM's (host port → guest port), for its checks
        self.remote = ssh.Remote(
            host=address.host,
            port=address.port,
            user=address.user,
            key=None,
            known_hosts=None,
            host_key_alias=None,
            control_path=vmdir.socket("promote.ctl"),
            own_world=True,
            extra_options=tuple(shlex.split(os.environ.get("NIX_SSHOPTS", ""))),
            accept_new_host_key=accept_new_host_key,
            sudo=sudo,
            sudo_password=sudo_password,
        )

    def describe(self) -> str:
        return self.remote.describe()

    @property
    def history(self) -> Path:
        return self.vmdir.file(f"promotions-{self.address.key}.json")

    def close(self) -> None:
        ssh.close_master(self.remote)

    def settle(self, timeout: float, *, for_push: bool = True) -> answers.Settled:
        """Connect (the host key known, or refused), settle what an
        interrupted promote left pending there (it is rolled back, as it
        would be at its timeout), and say what it runs: one round trip
        (with `for_push`, the same one asks whether it has Nix)."""
        ssh.check_sudo(self.remote)  # may the user use sudo as asked? Before anything else
        if not for_push:
            return activation.settle(self.remote, timeout)
        argv = scripts.sh("reach.sh", activation.RUN_DIR, str(math.ceil(timeout)), scripts.guest("settle.sh"))
        settled = answers.settled(self.describe(), ssh.run(self.remote, argv, timeout=timeout + 60).stdout)
        if not settled.has_nix:
            raise RehearseError(f"{self.describe()} has no nix-store on its PATH: is it a NixOS machine?")
        return settled

    def reconcile(self, running: str) -> None:
        """Nothing to reconcile: rehearse keeps no record of what a server runs."""

    def rolled_back_to(self, system: Path) -> None:
        """Nothing to record: the server's boot entry went back with the switch."""

    def plan(self, current: str, system: Path) -> Plan:
        """What the server lacks of the new closure (and its size); the
        closure diff and the units from this machine when it has the
        server's running system, else the units come from the server's
        dry-activate once the new system is there."""
        closure = nix.closure(system)
        invalid = ssh.run(
            self.remote,
            ["xargs", "-r", "nix-store", "--check-validity", "--print-invalid", "--"],
            input="\n".join(closure) + "\n",
        ).stdout
        lacks = answers.invalid_paths(self.describe(), invalid, set(closure))
        local = Path(current) if current and Path(current).exists() else None
        diff = plan.closure_diff(local, system, closure) if local else None
        units = plan.units_between(local, system) if local else None
        return Plan(current, system, diff, units, lacks, nix.sizes(lacks))

    def push(self, pl: Plan, options: PushOptions) -> Pushed:
        """nix-copy-closure over rehearse's master connection, compressed,
        with the user's NIX_SSHOPTS (in the Remote's options); the server's
        own substituters first with `options.use_substitutes`."""
        if not pl.to_push:
            return Pushed(0, 0)
        output.step(f"copying {len(pl.to_push)} paths ({human(pl.push_bytes)}) to {self.describe()}")
        r = nix.copy_closure(
            self.remote.target,
            [str(pl.system)],
            ssh.options(self.remote),
            gzip=True,
            use_substitutes=options.use_substitutes,
            on_line=CopyProgress(pl.push_sizes or {}).line,
        )
        if r.returncode != 0:
            raise RehearseError(
                f"copying {store_name(str(pl.system))} to {self.describe()} failed (exit {r.returncode}); "
                f"nothing was activated:\n{r.stderr.strip()[-2000:]}",
                hint="the server needs a Nix that the remote user may run; the copy runs as that user, also with "
                "--sudo: a user other than root must be one of its nix.settings.trusted-users, or its Nix refuses "
                "unsigned paths",
            )
        return Pushed(0, len(pl.to_push))

    def dry_activate(self, system: Path) -> Units:
        """The units, from the server's own dry-activate (the new system copied)."""
        try:
            return dry_activate(self.remote, system, self.describe())
        except DryActivateFailed as e:
            raise RehearseError(f"{e} (on {self.describe()}); nothing was activated.") from None

    def store_json(self, pl: Plan, pushed: Pushed | None) -> dict[str, int]:
        """The --json `store` of a promote: what the server lacks."""
        return {"missing": len(pl.to_push), "bytes": pl.push_bytes}

    def push_line(self, pl: Plan, pushed: Pushed | None) -> str:
        """What the push will copy (said with the plan, before a dry run stops)."""
        return f"  copy: {len(pl.to_push)} paths the server lacks, {human(pl.push_bytes)}"

    def verify(self, current: str, pl: Plan, checks: tuple[Check, ...], ssh_check: bool) -> activation.Verify:
        return activation.Verify(checks=tuple(self.checks(checks, self.forwards)), fresh_login=True)

    def activate(self, system: Path, pushed: Pushed, verify: activation.Verify, options: ActivateOptions) -> Activated:
        """Detached on the server, verified over a new connection, confirmed,
        or rolled back (system and boot entry) by the server itself."""
        return Activated(_activate(self.remote, system, verify, options), pushed)

    def generations(self) -> Generations:
        return read_generations(self.remote)

    def checks(self, checks: tuple[Check, ...], forwards: dict[int, int]) -> list[Check]:
        """The VM's checks made the server's (`forwards`: the VM's, host port
        → guest port); those that cannot be are said and left out."""
        mapped = [c for c in (check_for_server(c, forwards, self.address.host) for c in checks) if c is not None]
        skipped = len(checks) - len(mapped)
        if skipped:
            output.warn(
                f"{skipped} check(s) of rehearse.toml name a port the VM does not forward: not run on the server"
            )
        return mapped


class CopyProgress:
    """nix-copy-closure's lines, shown with how far the copy is: a line per
    path it starts, as "[k/N] done/total name" (sizes from the plan)."""

    _PATH = re.compile(r"^copying path '(/nix/store/[^']+)'")

    def __init__(self, sizes: dict[str, int]) -> None:
        self.sizes = sizes
        self.total = sum(sizes.values())
        self.started = 0
        self.done = 0

    def line(self, line: str) -> None:
        m = self._PATH.match(line.strip())
        if m is None:
            output.info(f"  {line}")
            return
        self.started += 1
        self.done += self.sizes.get(m.group(1), 0)
        n = len(self.sizes) or self.started
        output.info(f"  [{self.started}/{n}] {human(self.done)} of {human(self.total)}: {store_name(m.group(1))}")


def check_for_server(check: Check, forwards: dict[int, int], host: str) -> Check | None:
    """A VM check made the server's: `cmd` runs there as it is; a `tcp` or
    `http` check through a port the VM forwards goes to that guest port on
    the server. None: it cannot be made the server's (it names no forward)."""
    if check.kind == CheckKind.CMD:
        return check
    if check.kind == CheckKind.TCP:
        guest = forwards.get(int(check.target))
        return Check(CheckKind.TCP, f"{host}:{guest}") if guest else None
    m = re.match(r"^(https?://)(?:127\.0\.0\.1|localhost):([0-9]+)(/.*)?$", check.target)
    if not m or int(m.group(2)) not in forwards:
        return None
    return Check(CheckKind.HTTP, f"{m.group(1)}{host}:{forwards[int(m.group(2))]}{m.group(3) or '/'}")

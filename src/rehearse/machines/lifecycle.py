"""The VM lifecycle commands: up, ssh, status, console, down, destroy."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from rehearse.config import SSH_TIMEOUT, merge_include, unique_forwards
from rehearse.core import output
from rehearse.core.errors import ExitCode, RehearseError
from rehearse.host import answers, lan, nix, qemu, server_ssh, ssh
from rehearse.host.nix import Source
from rehearse.store import history
from rehearse.store.state import (
    Forwarded,
    LanState,
    ServerPort,
    VMDir,
    VMState,
    all_vms,
    create_private,
    ensure_root,
    process_start,
    state_root,
)

HOST_KEY = "ssh_host_ed25519_key"  # the VM's host key, in its state directory; a copy goes to shared/

# The guest port of rehearse's management channel (nix/vm-module.nix): an
# sshd of rehearse's own, apart from the server's. Above the kernel's range
# of ephemeral ports (32768–60999), so no outgoing connection holds it.
MANAGEMENT_PORT = 64022

# What an isolated VM (virtualisation.restrictNetwork, QEMU's restrict=on) can reach.
ISOLATED = "the VM reaches neither the host (10.0.2.2) nor the outside; its forwards still work"


def remote_for(vmdir: VMDir, port: int) -> ssh.Remote:
    return ssh.Remote(
        host="127.0.0.1",
        port=port,
        user="root",
        key=vmdir.file("id_ed25519"),
        known_hosts=vmdir.file("known_hosts"),
        host_key_alias=f"rehearse-{vmdir.name}",
        control_path=vmdir.socket("ssh.ctl"),
    )


def ensure_keys(vmdir: VMDir) -> None:
    """The per-VM client key and the VM's host key, made once, both in the
    VM's state directory, which the guest cannot reach; the host key is
    pinned in known_hosts before the VM ever boots. A VM made before the
    host key moved here had it in shared/, which the guest can write: that
    copy is never read; the VM gets a new key, pinned anew."""
    if not vmdir.file("id_ed25519").exists():
        ssh.generate_key(vmdir.file("id_ed25519"), f"rehearse@{vmdir.name}")
    host_key, host_pub = vmdir.file(HOST_KEY), vmdir.file(f"{HOST_KEY}.pub")
    if not (host_key.exists() and host_pub.exists()):
        if vmdir.file("known_hosts").exists():
            output.info(f"{vmdir.name} gets a new SSH host key, kept where the VM cannot change it; pinned anew")
        host_key.unlink(missing_ok=True)
        host_pub.unlink(missing_ok=True)
        ssh.generate_key(host_key, f"root@{vmdir.name}")
    ssh.write_known_hosts(vmdir.file("known_hosts"), f"rehearse-{vmdir.name}", host_pub)


def share_host_key(vmdir: VMDir) -> None:
    """Hand the guest its host key for this boot: shared/ (its /tmp/shared)
    and tmp/ (whose xchg/ it shares too) are made anew, so nothing the guest
    left there is followed, and the key pair is copied in from the state
    directory with exclusive, no-follow creates. Nothing is read back: the
    guest removes the key from the share once sshd has it."""
    shared = vmdir.fresh_dir("shared")
    vmdir.fresh_dir("tmp")
    for name in (HOST_KEY, f"{HOST_KEY}.pub"):
        create_private(shared / name, vmdir.file(name).read_bytes())


def write_settings(vmdir: VMDir, lan_settings: dict[str, Any] | None = None, *, isolated: bool = False) -> Path:
    """The settings of rehearse's module (nix/vm-module.nix), which every
    build of the VM reads (deploys too: an isolated VM's new runners are
    isolated as well). The `lan` entry of a fleet's VM is kept until a
    fleet `up` gives a new one."""
    path = vmdir.file("settings.json")
    data: dict[str, Any] = {
        "publicKey": vmdir.file("id_ed25519.pub").read_text().strip(),
        "managementPort": MANAGEMENT_PORT,
        "restrictNetwork": isolated,
    }
    if lan_settings is None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            lan_settings = json.loads(path.read_text()).get("lan")
    if lan_settings is not None:
        data["lan"] = lan_settings
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class UpRequest:
    source: Source | None  # None: the VM `name` exists; start it again
    name: str | None
    forwards: tuple[qemu.Forward, ...]
    gui: bool
    ssh_timeout: float
    rebuild: bool = False
    include: tuple[str, ...] = ()  # with source None: -I entries replacing the recorded ones
    isolate: bool = False  # cut the VM off from the host and the outside; once isolated, a VM stays so


def up(req: UpRequest) -> None:
    qemu.check_state_path(state_root())  # before anything is built or made
    if req.source is None:
        assert req.name is not None
        _restart(req, VMDir(req.name))
        return
    info = nix.vm_info(req.source)
    start_vm(req, req.source, info, VMDir(req.name or info.name))


def start_vm(
    req: UpRequest,
    source: Source,
    info: nix.VMInfo,
    vmdir: VMDir,
    place: LanPlace | None = None,
    overrides: list[str] | None = None,
) -> None:
    """Build (unless it has a runner to restart with) and boot VM `vmdir`
    from `source`, evaluated as `info`; with `place`, on the fleet's LAN."""
    with vmdir.locked("rehearse up", create=True):
        fresh = not vmdir.exists
        if not fresh:
            other_source(vmdir, vmdir.load(), source, req.rebuild)
        try:
            _up(req, source, info.forward_ports, vmdir, info.overrides if overrides is None else overrides, place)
        except BaseException:
            # A VM that never came to be leaves nothing behind: no keys, no state.
            # (The lock file goes too: removing it while held is harmless.)
            if fresh and not (vmdir.exists and vmdir.load().alive()):
                shutil.rmtree(vmdir.path, ignore_errors=True)
            raise


def other_source(vmdir: VMDir, state: VMState, source: Source, rebuild: bool) -> None:
    """`up FILE` under the name of a VM made from another file (issue 24,
    item 3) would start or keep that VM, not FILE's: said, not "nothing
    changed". A stopped VM rebuilt (--rebuild) takes FILE, as it always did."""
    if not state.source:
        return
    recorded = Source.of_record(state.source)
    if (recorded.configuration, recorded.flake, recorded.attr) == (source.configuration, source.flake, source.attr):
        return
    if rebuild and not state.alive():
        return
    name = vmdir.name
    raise RehearseError(
        f"VM {name} was made from {recorded.describe()}, not {source.describe()}; nothing changed.",
        hint=f"`rehearse deploy {name} {_words(source)}` switches {name} to it; "
        f"`rehearse up {_words(source)} --name OTHER` makes another VM of it",
        exit_code=ExitCode.USAGE,
    )


def _words(source: Source) -> str:
    """The source as a command line's arguments."""
    if source.flake is not None:
        return f"--flake {shlex.quote(source.describe())}"
    return shlex.quote(source.describe())


def _restart(req: UpRequest, vmdir: VMDir) -> None:
    """`up NAME`: start an existing VM with the system it last ran, using the
    configuration recorded at its `up` (no evaluation unless a rebuild is
    needed); -I replaces entries of its recorded search path."""
    with vmdir.locked("rehearse up"):
        state = vmdir.load()
        recorded = Source.of_record(state.source)
        source = dataclasses.replace(recorded, include=merge_include(recorded.include, list(req.include)))
        if state.alive() or (state.runner and Path(state.runner).exists() and not req.rebuild and not req.include):
            # Its forwards (the configuration's and --forward ones) were recorded.
            _up(req, source, None, vmdir)
            return
        info = nix.vm_info(source.of_vm(vmdir.name))
        _up(dataclasses.replace(req, rebuild=True), source, info.forward_ports, vmdir, info.overrides)


# A fleet's `up` runs one thread per machine: the KVM probe runs once, and
# builds run no more at once than memory allows (fleet.py sets the slots).
_KVM = threading.Lock()
BUILDS = threading.BoundedSemaphore(64)
_WARNED: set[str] = set()  # warnings a fleet's `up` gives once, not once per machine
_PORTS = threading.Lock()
_CLAIMED: set[int] = set()  # host ports picked by this process: a VM started meanwhile may not listen yet


@dataclass(frozen=True)
class LanPlace:
    """A fleet machine's place on the LAN, from fleet.py: what its state
    records and what its module's settings say."""

    state: LanState
    settings: dict[str, Any]


def _up(
    req: UpRequest,
    source: Source,
    config_forwards: list[dict[str, Any]] | None,
    vmdir: VMDir,
    overrides: list[str] | None = None,
    place: LanPlace | None = None,
) -> None:
    name = vmdir.name
    if vmdir.exists:
        state = vmdir.load()
        if state.alive() and req.isolate and not state.isolated:
            raise RehearseError(
                f"{name} is running without isolation; it cannot be isolated while it runs. Nothing changed.",
                hint=f"`rehearse down {name}`, then `rehearse up {name} --isolate`",
                exit_code=ExitCode.USAGE,
            )
        if state.alive():
            unpause(vmdir, state)
            output.info(
                f"{name} is already running (pid {state.pid}, ssh 127.0.0.1:{state.ssh_port}); nothing changed."
            )
            if state.lan is not None and not lan.hub_running(vmdir.path.parent):
                output.warn(cut_off(name))
            output.result(f"rehearse ssh {name}")
            return
        _reap(state)  # a VM that crashed may have left its runner's daemons
    else:
        state = VMState(name=name)
    # A host port that is taken is said before anything is built or changed.
    if config_forwards is None:
        recorded = [qemu.Forward(f.host, f.guest, f.proto) for f in state.forwards]
        forwards = check_forwards([*recorded, *(f for f in req.forwards if f not in recorded)])
    else:
        forwards = plan_forwards(config_forwards, req.forwards)

    vmdir.create()
    ensure_keys(vmdir)
    # Isolation, once asked for, stays: a rehearsal with real data must not
    # lose it to an `up NAME` run from another directory.
    state.isolated = state.isolated or req.isolate
    settings = write_settings(vmdir, place.settings if place else None, isolated=state.isolated)
    if place is not None:
        state.lan = place.state

    t0 = time.monotonic()
    built = False
    if (
        state.runner
        and Path(state.runner).exists()
        and not req.rebuild
        and (restricts(Path(state.runner)) or not state.isolated)
    ):
        # A VM boots the kernel and init its runner fixes: after live deploys
        # the runner of the last deployed system is the one to start.
        runner_out = Path(state.runner)
        output.step(
            f"starting {name} with its last deployed system ({runner_out.joinpath('system').resolve().name}); "
            f"`rehearse deploy {name}` applies later changes"
        )
    else:
        output.step(f"building the VM of {source.of_vm(name).describe()}")
        built = True
        with BUILDS:
            [runner_out] = nix.build(source, settings, ["vm"], vmdir.file("vm"))
        output.debug(f"built {runner_out} in {time.monotonic() - t0:.1f} s")
        state.source = source.record()
        if state.isolated and not restricts(runner_out):
            raise RehearseError(
                f"the VM built for {name} does not restrict its network (its run script has no restrict=on): "
                "rehearse does not boot it unisolated.",
                hint="rehearse sets virtualisation.restrictNetwork in the VM; does this nixpkgs's qemu-vm.nix have it?",
            )
    runner = next((runner_out / "bin").glob("run-*-vm"))
    system = str((runner_out / "system").resolve())

    kernel = runner_out / "system" / "kernel"
    with _KVM:
        tcg = not qemu.kvm_works(kernel, ensure_root(vmdir.path.parent))
        warn = tcg and os.path.exists("/dev/kvm") and not _WARNED
        _WARNED.add("kvm")
    if warn:
        output.warn(
            "KVM does not work on this machine (/dev/kvm did not run a guest); "
            "using software emulation (TCG), which is slower"
        )
    with contextlib.ExitStack() as hub:
        if state.lan is not None:  # the hub stays up at least until this VM's state names its QEMU
            hub_socket = hub.enter_context(lan.joined(vmdir.path.parent))
        # An SSH master left from an earlier run of this VM talks to nothing.
        if state.ssh_port is not None:
            ssh.close_master(remote_for(vmdir, state.ssh_port))
        for sock in ("qmp.sock", "ssh.ctl"):
            vmdir.socket(sock).unlink(missing_ok=True)
        if not vmdir.file("disk.qcow2").exists():
            state.disk_from = system
        share_host_key(vmdir)
        for attempt in range(5):
            with _PORTS:  # the machines of a fleet pick theirs one at a time, each apart from the others'
                ssh_port = qemu.pick_port(2222, taken={f.host_port for f in forwards} | _CLAIMED)
                server_ssh = server_ssh_forwards(Path(system), vmdir, forwards, taken={ssh_port} | _CLAIMED)
                _CLAIMED.update([ssh_port, *(f.host_port for f in server_ssh)])
            all_forwards = [qemu.Forward(ssh_port, MANAGEMENT_PORT), *server_ssh, *forwards]
            env = qemu.runner_env(vmdir, all_forwards, gui=req.gui, tcg=tcg)
            if state.lan is not None:
                env[lan.SOCKET_ENV] = str(hub_socket)
            try:
                pid = qemu.start(runner, env, vmdir, listens=[f.host_port for f in all_forwards if f.proto == "tcp"])
                break
            except qemu.PortTaken as taken:
                # A port rehearse picked (never one the user asked for: those
                # were checked free and are refused again below) went to
                # another program meanwhile: pick again, apart from it.
                if taken.port in {f.host_port for f in forwards} or attempt == 4:
                    raise RehearseError(
                        f"port {taken.port} on 127.0.0.1 is taken: QEMU could not forward it; nothing was started.",
                        hint="free it, or forward another host port (--forward PORT:GUEST, forward in rehearse.toml)",
                        exit_code=ExitCode.USAGE,
                    ) from None
                _CLAIMED.add(taken.port)

        state.pid = pid
        state.pid_start = process_start(pid)
        state.ssh_port = ssh_port
        state.forwards = [Forwarded(f.host_port, f.guest_port, f.proto) for f in forwards]
        state.server_ssh = [ServerPort(f.host_port, f.guest_port) for f in server_ssh]
        if overrides is not None:
            state.overrides = overrides
        state.runner = str(runner_out)
        state.system = system
        state.runners[system] = str(runner_out)
        state.started = time.time()
        vmdir.save(state)

    remote = remote_for(vmdir, ssh_port)
    with ThreadPoolExecutor(max_workers=1) as pool:
        # A VM built from the configuration and booted rehearses it (for
        # `promote`'s guard): the server's own system, evaluated meanwhile.
        server = pool.submit(output.bound(nix.server_eval), source) if built else None
        qemu.wait_for_ssh(remote, pid, state.pid_start, vmdir, req.ssh_timeout)
        server_eval = server.result() if server is not None else None
        if server_eval is not None:
            passed = ["booted", "reached over SSH through rehearse's channel"]
            history.record_rehearsal(vmdir.file("rehearsals.json"), server_eval.drv_path, system, "up", passed)
    output.success(
        f"{name} is up after {time.monotonic() - t0:.1f} s; ssh on 127.0.0.1:{ssh_port}"
        + "".join(f", {f.host_port}->{f.guest_port}" for f in forwards)
    )
    # The server's own failed assertions, said at `up` rather than first at
    # the next deploy (issue 24, item 10): the VM boots, the server's would not build.
    if server_eval is not None and (warning := server_eval.warning()) is not None:
        output.warn(warning)
    if state.lan is not None:
        output.info(f"  on the fleet's LAN: {state.lan.address} ({state.lan.interface})")
    if state.isolated:
        output.info(f"  isolated: {ISOLATED}")
    for f in server_ssh:
        output.info(f"  the server's own sshd (port {f.guest_port}) on 127.0.0.1:{f.host_port}")
    for o in state.overrides:
        output.info(f"  overridden for the VM: {o}")
    output.result(f"rehearse ssh {name}")


def restricts(runner: Path) -> bool:
    """Whether the VM runner `runner` starts QEMU's user network with
    restrict=on (NixOS's qemu-vm.nix writes it into the run script when
    virtualisation.restrictNetwork is set). A runner built before the VM
    was isolated (or one a restored snapshot brings back) does not: an
    isolated VM is rebuilt rather than booted with it."""
    return any("restrict=on" in script.read_text(errors="replace") for script in (runner / "bin").glob("run-*-vm"))


def plan_forwards(from_config: list[dict[str, Any]], extra: tuple[qemu.Forward, ...]) -> list[qemu.Forward]:
    """The configuration's virtualisation.forwardPorts (host side only) and
    --forward ones, all bound to 127.0.0.1; a taken host port is an error."""
    forwards = [
        qemu.Forward(int(f["host"]["port"]), int(f["guest"]["port"]), f["proto"])
        for f in from_config
        if f.get("from", "host") == "host"
    ] + list(extra)
    return check_forwards(forwards)


def server_ssh_forwards(
    system: Path, vmdir: VMDir, forwards: list[qemu.Forward], taken: set[int]
) -> list[qemu.Forward]:
    """Forwards to the server's own sshd ports (server_ssh.py checks them
    after each deploy): a port the configuration already forwards is not
    forwarded twice."""
    sshd = server_ssh.read(system, vmdir.file("id_ed25519.pub").read_text())
    result: list[qemu.Forward] = []
    used = taken | {f.host_port for f in forwards}
    for port in sshd.ports:
        if port == MANAGEMENT_PORT or any(f.guest_port == port and f.proto == "tcp" for f in forwards):
            continue
        host = qemu.pick_port(2200 + port % 100, taken=used)
        used.add(host)
        result.append(qemu.Forward(host, port))
    return result


def _taken_by(port: int) -> str:
    """Who holds a host port, as " by …" ("" when it cannot be told): a VM
    of rehearse's that runs with it (a forward, its SSH), else the process
    that listens on it."""
    for vmdir in all_vms():
        try:
            state = vmdir.load()
        except RehearseError:
            continue
        if state.alive() and port in {
            state.ssh_port,
            *(f.host for f in state.forwards),
            *(p.host for p in state.server_ssh),
        }:
            return f" by VM {vmdir.name}"
    holder = qemu.port_holder(port)
    return f" by {holder}" if holder else ""


def check_forwards(forwards: list[qemu.Forward]) -> list[qemu.Forward]:
    forwards = unique_forwards(forwards)  # one host port, one guest port
    for f in forwards:
        if f.proto == "tcp" and not qemu.port_free(f.host_port):
            raise RehearseError(
                f"port {f.host_port} on 127.0.0.1 is taken{_taken_by(f.host_port)}: cannot forward it to the VM's "
                f"port {f.guest_port}; "
                "nothing was built or started.",
                hint="free it, or forward another host port (--forward PORT:GUEST, forward in rehearse.toml)",
                exit_code=ExitCode.USAGE,
            )
    return forwards


def running(vmdir: VMDir) -> tuple[VMState, ssh.Remote]:
    state = vmdir.load()
    if not state.alive() or state.ssh_port is None:
        raise RehearseError(
            f"VM {vmdir.name!r} is not running.",
            hint=f"`rehearse up {vmdir.name}` starts it",
            exit_code=ExitCode.NOT_RUNNING,
        )
    unpause(vmdir, state)
    return state, remote_for(vmdir, state.ssh_port)


def unpause(vmdir: VMDir, state: VMState) -> bool:
    """Resume the VM if QEMU has it paused; whether it is still paused.

    `snapshot` pauses a running VM (QMP `stop`) for the moment its disk is
    snapshotted and resumes it after; killed in between, it leaves the VM
    paused, its guest frozen. So every command that reaches a running VM
    (and `status`) asks QEMU first, and resumes a paused VM under the VM's
    lock: one that another command holds may be a snapshot's own short
    pause, and is left as it is (and reported paused). A VM QEMU stopped on
    a disk error ("io-error") is no pause of rehearse's and is left alone."""
    if not state.alive() or qemu.run_status(vmdir.socket("qmp.sock")) != "paused":
        return False
    if not vmdir.held:
        try:
            with vmdir.locked("rehearse: resuming the paused VM"):
                return unpause(vmdir, state)
        except RehearseError as e:
            output.debug(f"{vmdir.name} is paused; not resumed: {e.message}")
            return True
    try:
        qemu.qmp(vmdir.socket("qmp.sock"), "cont")
    except Exception as e:
        output.warn(
            f"{vmdir.name} is paused and QEMU would not resume it: {e}; "
            f"`rehearse down {vmdir.name}` powers it off, `rehearse up {vmdir.name}` starts it again"
        )
        return True
    output.warn(f"{vmdir.name} was paused (by a `rehearse snapshot` that did not finish?); resumed it")
    return False


# ssh's options that `rehearse ssh` hands to ssh (issue 24, item 13): port
# forwardings, and -N (no command); each but -N takes a value.
SSH_OPTIONS: Final = ("-L", "-R", "-D", "-N")


def ssh_options(words: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """The ssh options (SSH_OPTIONS) that lead `words` (what follows the
    VM's name, or its `--`), and the command after them."""
    taken: list[str] = []
    rest = list(words)
    while rest:
        word = rest[0]
        if word == "-N":
            taken.append(rest.pop(0))
        elif word[:2] in SSH_OPTIONS[:3] and (len(word) > 2 or len(rest) > 1):
            taken += [word[:2], word[2:] if len(word) > 2 else rest[1]]
            del rest[: 1 if len(word) > 2 else 2]
        else:
            break
    return tuple(taken), rest


def ssh_command(name: str, command: list[str], options: tuple[str, ...] = ()) -> int:
    """`rehearse ssh [OPTIONS] NAME [--] [OPTIONS] WORDS…` as `ssh HOST
    WORDS…`: the words are joined with spaces and the VM's shell runs them;
    none: a login shell (with -N: none, as ssh -N)."""
    more, command = ssh_options(command)
    options += more
    _, remote = running(VMDir(name))
    tty = not command and "-N" not in options and sys.stdin.isatty()
    argv = ssh.argv(remote, tty=tty, shell_command=" ".join(command) or None, forwarding=options)
    return _exec(argv)


def _exec(argv: list[str]) -> int:
    output.command(shlex.join(argv))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(argv[0], argv)


def copy(words: list[str], recursive: bool) -> int:
    """`rehearse cp [-r] SOURCE… TARGET`, as scp: NAME:PATH is a path in VM
    NAME (a local path with a colon is written ./PATH, as for scp), copied
    through the VM's own channel (its key, its pinned host key, rehearse's
    master connection) over SFTP."""
    names = {w.split(":", 1)[0] for w in words if _in_vm(w)}
    if len(names) != 1:
        raise RehearseError(
            "which VM? Name one, as NAME:PATH, in the paths to copy from or to."
            if not names
            else f"one VM at a time: the paths name {', '.join(sorted(names))}.",
            hint="rehearse cp ./file fripon:/root/ ; rehearse cp -r fripon:/etc/nginx ./nginx",
            exit_code=ExitCode.USAGE,
        )
    [name] = names
    _, remote = running(VMDir(name))
    opts = ssh.options(remote)
    at = opts.index("-p")
    opts[at] = "-P"  # scp's port option
    paths = [f"{remote.target}:{w.split(':', 1)[1]}" if _in_vm(w) else w for w in words]
    return _exec(["scp", *opts, *(["-r"] if recursive else []), "--", *paths])


def _in_vm(word: str) -> bool:
    """NAME:PATH (a VM's path), not a local path: scp's rule, what comes
    before the first colon has no slash."""
    head, colon, _ = word.partition(":")
    return bool(colon and head and "/" not in head)


def ssh_config(name: str) -> None:
    """`rehearse ssh-config NAME`: a Host block for the user's own ssh, scp
    and rsync (as `vagrant ssh-config`), with the VM's key and its pinned
    host key: StrictHostKeyChecking holds from the first connection on."""
    vmdir = VMDir(name)
    _, remote = running(vmdir)
    assert remote.key is not None and remote.known_hosts is not None

    def quoted(path: Path) -> str:
        return '"' + ssh.path_option(path) + '"'

    output.result(
        f"Host {name}\n"
        "  HostName 127.0.0.1\n"
        f"  Port {remote.port}\n"
        "  User root\n"
        f"  IdentityFile {quoted(remote.key)}\n"
        "  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {quoted(remote.known_hosts)}\n"
        f"  HostKeyAlias {remote.host_key_alias}\n"
        "  StrictHostKeyChecking yes\n"
        "  UpdateHostKeys no\n"
        "  ForwardAgent no"
    )


def cut_off(name: str) -> str:
    """What to do about a VM that runs while its LAN's hub does not."""
    return (
        f"{name} is cut off from the fleet's LAN: its hub (vde_switch) is not running, and QEMU does not "
        f"connect to a new one; to join it again: rehearse down {name} && rehearse up {name}"
    )


def _hub(alive: bool, hub_running: bool) -> str:
    """A LAN VM's hub, for `status`: "running", "dead" (the VM runs, its hub
    does not: it is cut off) or "stopped"."""
    return "running" if hub_running else "dead" if alive else "stopped"


def status(as_json: bool) -> None:
    rows: list[dict[str, Any]] = []
    now = time.time()
    hub_running = lan.hub_running(state_root())
    for vmdir in all_vms():
        try:
            state = vmdir.load()
        except RehearseError as e:
            # One VM's broken state must not hide the others.
            rows.append({"name": vmdir.name, "state": "broken", "error": e.message, **_NOTHING})
            continue
        alive = state.alive()
        paused = unpause(vmdir, state)
        rows.append(
            {
                "name": state.name,
                # A pid left in the state: the VM ended without `down` (QEMU killed, host crash).
                "state": ("paused" if paused else "running") if alive else ("crashed" if state.pid else "stopped"),
                "pid": state.pid if alive else None,
                "ssh": f"127.0.0.1:{state.ssh_port}" if alive and state.ssh_port else None,
                "forwards": [f.to_json() for f in state.forwards] if alive else [],
                "system": state.system,
                "disk_from": state.disk_from,
                "disk_older": bool(state.disk_from and state.system and state.disk_from != state.system),
                "source": nix.Source.of_record(state.source).describe() if state.source else None,
                "uptime": round(now - state.started) if alive and state.started else None,
                "server_ssh": _sshd_forwards(state) if alive else [],
                "overrides": state.overrides,
                "lan": {
                    "address": state.lan.address,
                    "interface": state.lan.interface,
                    "number": state.lan.number,
                    "hub": _hub(alive, hub_running),
                }
                if state.lan
                else None,
                "isolated": state.isolated,
                "snapshots": _snapshots(vmdir),
            }
        )
    if as_json:
        output.result(json.dumps(rows, indent=2))
        return
    if not rows:
        output.info("no VMs")
        return
    output.result(f"{'NAME':<16} {'STATE':<8} {'PID':>7} {'SSH':<16} {'UPTIME':>8}  SYSTEM")
    for r in rows:
        uptime = f"{r['uptime']} s" if r["uptime"] is not None else "-"
        pid, address, system = r["pid"] or "-", r["ssh"] or "-", r["system"] or r.get("error") or "-"
        # A disk made with an older system is what every deploy leaves: it
        # asks nothing of the user, so only --json says it (disk_older).
        output.result(f"{r['name']:<16} {r['state']:<8} {pid:>7} {address:<16} {uptime:>8}  {system}")
        for f in r["server_ssh"]:
            output.result(f"{'':<16} the server's own sshd (port {f['guest']}) on 127.0.0.1:{f['host']}")
        if r["snapshots"]:
            output.result(f"{'':<16} {r['snapshots']} snapshot(s): `rehearse snapshots {r['name']}`")
        if r["lan"]:
            output.result(f"{'':<16} on the fleet's LAN: {r['lan']['address']} ({r['lan']['interface']})")
            if r["lan"]["hub"] == "dead":
                output.result(f"{'':<16} {cut_off(r['name'])}")
        if r["isolated"]:
            output.result(f"{'':<16} isolated: {ISOLATED}")
        for o in r["overrides"]:
            output.result(f"{'':<16} overridden for the VM: {o}")


def _sshd_forwards(state: VMState) -> list[dict[str, Any]]:
    """The forwards to the server's own sshd that its running system listens
    on: QEMU keeps the forward of a port a later deploy moved sshd from
    (a rollback may bring it back), `status` shows only what is current
    (issue 24, item 11)."""
    system = Path(state.system) if state.system else None
    if system is None or not system.exists():
        return [p.to_json() for p in state.server_ssh]
    ports = server_ssh.read(system, "").ports
    return [p.to_json() for p in state.server_ssh if p.guest in ports]


# The fields of a status row that a VM with a broken state has no value for.
_NOTHING: dict[str, Any] = {
    "pid": None,
    "ssh": None,
    "forwards": [],
    "system": None,
    "disk_from": None,
    "disk_older": False,
    "source": None,
    "uptime": None,
    "server_ssh": [],
    "overrides": [],
    "lan": None,
    "isolated": False,
    "snapshots": 0,
}


def _snapshots(vmdir: VMDir) -> int:
    return vmdir.snapshot_count()


def console(name: str, follow: bool) -> None:
    vmdir = VMDir(name)
    vmdir.load()
    path = vmdir.file("console.log")
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise RehearseError(
            f"VM {name!r} has no console log yet ({path}); the VM's next start writes it.",
            hint=f"`rehearse up {name}` starts it",
        ) from None
    # The guest writes the console: shown as text with its colours dropped
    # and any other escape sequence escaped (answers.console), whole lines
    # at a time so that no sequence is cut in two.
    with f:
        pending = b""
        while True:
            chunk = f.read()
            if chunk:
                done, _, pending = (pending + chunk).rpartition(b"\n")
                if done:
                    sys.stdout.write(answers.console(done + b"\n"))
                    sys.stdout.flush()
            elif not follow:
                break
            else:
                time.sleep(0.3)
        if pending:
            sys.stdout.write(answers.console(pending) + "\n")
            sys.stdout.flush()


def keep_runner(vmdir: VMDir, runner: Path) -> None:
    """A GC root for a VM runner rehearse may start later."""
    nix.add_root(runner, vmdir.file(f"runners/{runner.name}"))


def reconcile(vmdir: VMDir, state: VMState, running_system: str) -> None:
    """The guest's /run/current-system is the truth. If rehearse died between
    the guest's confirmation and saving its state, the state still names the
    older system (and a restart would boot it): adopt what runs, with the
    runner built for it when rehearse has it (the last deploy's build)."""
    if not running_system or running_system == state.system:
        return
    runner = state.runners.get(running_system)
    last_build = vmdir.file("next-2")  # nix-build's second out-link of a deploy: the VM runner
    if runner is None and last_build.exists() and (last_build / "system").resolve() == Path(running_system):
        runner = str(last_build.resolve())
        keep_runner(vmdir, Path(runner))
    output.warn(
        f"{vmdir.name} runs {running_system}, not the system rehearse had recorded "
        f"({state.system}): an interrupted command? Recorded what runs."
    )
    state.system = running_system
    if runner is not None:
        state.runner = runner
        state.runners[running_system] = runner
    else:
        output.warn(f"rehearse has no VM runner for it: a restart boots {state.runner} until the next deploy")
    vmdir.save(state)


def _power_off(vmdir: VMDir, state: VMState, timeout: float) -> str:
    """Close the VM's SSH master and power it off; the state is kept (and
    first brought up to date with the system the guest runs)."""
    if state.ssh_port is not None:
        remote = remote_for(vmdir, state.ssh_port)
        if state.alive():
            unpause(vmdir, state)  # a paused guest neither answers nor powers off
            said = ssh.run(remote, ["readlink", "--", "/run/current-system"], check=False, timeout=15)
            try:
                running_system = answers.running_system(remote.who, said.stdout) if said.returncode == 0 else ""
            except answers.BadAnswer as e:
                # Not a reason to leave the VM running: power it off as asked.
                output.warn(f"{e.message}; its state keeps the system rehearse recorded")
                running_system = ""
            reconcile(vmdir, state, running_system)
        ssh.close_master(remote)
    how = (
        qemu.stop(state.pid, state.pid_start, vmdir.socket("qmp.sock"), timeout)
        if state.pid and state.alive()
        else "already stopped"
    )
    _reap(state)
    state.pid = None
    vmdir.save(state)
    if state.lan is not None:
        lan.release_hub(vmdir.path.parent)
    return how


def _reap(state: VMState) -> None:
    """What the VM's runner left running beside QEMU (virtiofsd) ends with it."""
    left = qemu.reap(state.pid, state.pid_start)
    if left:
        output.info(f"  ended {len(left)} process(es) the VM's runner had left: pid {', '.join(map(str, left))}")


def power_off(vmdir: VMDir, state: VMState, timeout: float) -> str:
    """Power the VM off (the caller holds its lock); how it went."""
    return _power_off(vmdir, state, timeout)


def boot(req: UpRequest, source: Source, vmdir: VMDir) -> None:
    """Start a stopped VM with its recorded runner (the caller holds its lock)."""
    _up(req, source, None, vmdir)


def restart(vmdir: VMDir, timeout: float = 60.0) -> None:
    """Power the VM off and start it again with its recorded runner (the
    caller holds the VM's lock)."""
    state = vmdir.load()
    output.step(f"restarting {vmdir.name}")
    output.info(f"{vmdir.name}: {_power_off(vmdir, state, timeout)}")
    req = UpRequest(source=None, name=vmdir.name, forwards=(), gui=False, ssh_timeout=SSH_TIMEOUT)
    _up(req, Source.of_record(state.source), None, vmdir)


def down(name: str, timeout: float) -> None:
    vmdir = VMDir(name)
    with vmdir.locked("rehearse down"):
        how = _power_off(vmdir, vmdir.load(), timeout)
    output.info(f"{name}: {how}")


def destroy(name: str, timeout: float) -> None:
    vmdir = VMDir(name)
    with vmdir.locked("rehearse destroy"):
        try:
            state = vmdir.load()
        except RehearseError as e:
            # Half made (an `up` that died before its state was saved) or a
            # broken state: no pid to trust, so nothing is signalled; a QEMU
            # that may still run is told to quit over its QMP socket.
            if vmdir.file("state.json").exists():
                output.warn(f"{e.message} Removing it anyway.")
            else:
                output.warn(f"{name} was never fully made (it has no state.json); removing what there is.")
            ssh.close_master(remote_for(vmdir, 22))  # the port plays no part in `ssh -O exit`
            if vmdir.socket("qmp.sock").exists():
                try:
                    qemu.qmp_command(vmdir.socket("qmp.sock"), "quit")
                except Exception as qe:
                    output.debug(f"QMP quit failed: {qe}")
        else:
            _power_off(vmdir, state, timeout)
        for sock in ("qmp.sock", "ssh.ctl"):
            vmdir.socket(sock).unlink(missing_ok=True)
        shutil.rmtree(vmdir.path)
    output.info(f"{name}: destroyed (disk, keys and state removed)")

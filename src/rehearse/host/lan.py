"""A fleet's private LAN: the VMs of a state directory that were brought up
together share one virtual Ethernet hub, as the NixOS test driver's nodes do.

- The hub is a `vde_switch --hub` (the package vde2), started without root
  by the first fleet VM's `up` and ended when the last one powers off. Its
  socket directory (0700) is in the state directory, or under a private
  /tmp directory when that path is too long for a Unix socket. QEMU's vde
  netdev connects to it once, at start: the hub must outlive every VM.
- The hub is started and stopped under a lock (.lan/lock), and an `up`
  holds a share of .lan/users from the hub's start until its VM's state
  names a running QEMU: a `down` of the LAN's last VM meanwhile leaves the
  hub alone. A hub found dead while VMs of the LAN run is started again by
  the next `up`; those VMs stay cut off from the LAN (QEMU does not connect
  again) until they are restarted, which that `up` and `status` say.
- Each machine has a number (1 to 254), kept in its state for as long as the
  VM exists, so that a machine joining later moves no other one. Its LAN NIC
  has the MAC 52:54:00:12:01:<number> (nixos/lib/qemu-common.nix's scheme
  for VLAN 1), and is named by a udev rule.
- Its LAN interface is the one the configuration declares with an address
  (the second such interface when it declares several: the first one is
  taken for the public one), with that address; else eth1, with
  192.168.1.<number>/24, as the NixOS test framework numbers its nodes.
- Every machine's /etc/hosts (networking.extraHosts, in the VM variant only)
  names every machine of the fleet: "<address> [<host>.<domain>] <host>".

Nothing here leaves the host: the hub has no uplink.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rehearse.core import output
from rehearse.core.errors import ExitCode, RehearseError
from rehearse.host import process
from rehearse.store.state import VMDir, all_vms, ensure_root, pid_alive, process_start, socket_path

VLAN = 1
NETWORK = "192.168.1"
FIRST, LAST = 1, 254  # machine numbers: host parts of NETWORK, and the MAC's last byte
SOCKET_ENV = f"QEMU_VDE_SOCKET_{VLAN}"  # the variable qemu-common.nix's NIC flags read
DEFAULT_INTERFACE = "eth1"  # eth0 is the VM's NIC on QEMU's user network


def mac(number: int) -> str:
    """The MAC of machine `number`'s LAN NIC, as qemu-common.nix's qemuNicMac
    (lowercase: udev compares case-sensitively)."""
    return f"52:54:00:12:{VLAN:02x}:{number:02x}"


@dataclass(frozen=True)
class Candidate:
    """An interface the server's configuration gives an IPv4 address."""

    name: str
    address: str


@dataclass(frozen=True)
class Member:
    """One machine on the LAN."""

    name: str  # the VM's
    number: int
    interface: str
    address: str
    declared: bool  # the address is the configuration's own (else rehearse assigns it)
    host_name: str
    domain: str | None = None

    def hosts_line(self) -> str:
        fqdn = f"{self.host_name}.{self.domain} " if self.domain else ""
        return f"{self.address} {fqdn}{self.host_name}\n"


def member(
    name: str, number: int, candidates: list[Candidate], host_name: str, domain: str | None, wanted: str | None
) -> Member:
    """Machine `name`'s place on the LAN. `wanted`: the interface rehearse.toml
    names for it (`lan_interface`)."""
    by_name = {c.name: c for c in candidates}
    if wanted is not None:
        chosen = by_name.get(wanted)
        if chosen is None:
            return Member(name, number, wanted, f"{NETWORK}.{number}", False, host_name, domain)
    elif candidates:
        ordered = sorted(candidates, key=lambda c: c.name)
        chosen = ordered[1] if len(ordered) > 1 else ordered[0]
    else:
        return Member(name, number, DEFAULT_INTERFACE, f"{NETWORK}.{number}", False, host_name, domain)
    return Member(name, number, chosen.name, chosen.address, True, host_name, domain)


def numbers(names: Iterable[str], taken: Mapping[str, int]) -> dict[str, int]:
    """A number for each of `names`: the one it has in `taken` (the VMs'
    recorded numbers), else the smallest free one."""
    result: dict[str, int] = {}
    used = set(taken.values())
    for name in names:
        if name in taken:
            result[name] = taken[name]
            continue
        free = next((n for n in range(FIRST, LAST + 1) if n not in used), None)
        if free is None:
            raise RehearseError(
                f"the LAN has no free machine number for {name}: {LAST} machines at most.",
                hint="`rehearse destroy` VMs you no longer need",
            )
        used.add(free)
        result[name] = free
    return result


def check_addresses(members: Iterable[Member]) -> None:
    """Two machines with one LAN address would answer for each other."""
    seen: dict[str, str] = {}
    for m in members:
        other = seen.setdefault(m.address, m.name)
        if other != m.name:
            raise RehearseError(
                f"{other} and {m.name} both have the LAN address {m.address}.",
                hint="give one of them another address in its configuration, or name another interface "
                "with lan_interface in rehearse.toml's [machines.NAME]",
            )


def settings(m: Member, members: Iterable[Member]) -> dict[str, Any]:
    """The `lan` entry of the VM's settings.json, read by nix/vm-module.nix."""
    return {
        "number": m.number,
        "mac": mac(m.number),
        "interface": m.interface,
        "address": None if m.declared else m.address,
        "hosts": "".join(o.hosts_line() for o in sorted(members, key=lambda o: o.number)),
    }


# --- the hub -----------------------------------------------------------------


def _home(root: Path) -> Path:
    """The hub's directory: pid file and socket directory."""
    return root / ".lan"


def socket_dir(root: Path) -> Path:
    """Where the hub's sockets are: QEMU_VDE_SOCKET_1."""
    return socket_path(_home(root), "hub")


def _running(root: Path) -> int | None:
    """The hub's pid, if it runs (its pid file names a live vde_switch)."""
    try:
        pid = int(_home(root).joinpath("pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"vde_switch" in cmdline and str(socket_dir(root)).encode() in cmdline else None


LOCK_WAIT = 30.0  # seconds an `up` or `down` waits for another one's start or stop of the hub


@contextlib.contextmanager
def _flock(path: Path, how: int, *, wait: float) -> Iterator[bool]:
    """Hold flock `how` on `path` (0600, created), waiting up to `wait`
    seconds (0: not at all); yields whether it was taken."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        end = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, how | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= end:
                    yield False
                    return
                time.sleep(0.05)
        yield True
    finally:
        os.close(fd)


@contextlib.contextmanager
def _hub_lock(root: Path) -> Iterator[Path]:
    """Hold the lock under which the hub is started and stopped; its directory."""
    home = _home(ensure_root(root))
    with contextlib.suppress(FileExistsError):
        home.mkdir(mode=0o700)
    with _flock(home / "lock", fcntl.LOCK_EX, wait=LOCK_WAIT) as taken:
        if not taken:
            raise RehearseError(
                "the fleet's LAN is busy: another rehearse command has been starting or stopping its hub "
                f"for {LOCK_WAIT:.0f} s.",
                hint="wait for it to finish, then try again",
                exit_code=ExitCode.BUSY,
            )
        yield home


def hub_running(root: Path) -> bool:
    """Whether the fleet's hub (vde_switch) runs."""
    return _running(root) is not None


def _lan_vms(root: Path, *, running: bool) -> list[VMDir]:
    found = []
    for vmdir in all_vms(root):
        with contextlib.suppress(RehearseError):
            state = vmdir.load()
            if state.lan is not None and (state.alive() or not running):
                found.append(vmdir)
    return found


@contextlib.contextmanager
def joined(root: Path) -> Iterator[Path]:
    """The hub, started unless it runs (its socket directory), kept up until
    the block ends: the caller starts a VM on it and records it as running."""
    with _hub_lock(root) as home:
        sock = ensure_hub(root)
        users = contextlib.ExitStack()
        users.enter_context(_flock(home / "users", fcntl.LOCK_SH, wait=LOCK_WAIT))
    with users:
        yield sock


def ensure_hub(root: Path) -> Path:
    """Start the fleet's hub unless it runs; its socket directory. (The
    caller holds the hub's lock: `joined`.)"""
    sock = socket_dir(root)
    if _running(root) is not None and (sock / "ctl").exists():
        return sock
    stranded = [d.name for d in _lan_vms(root, running=True)]
    if shutil.which("vde_switch") is None:
        raise RehearseError(
            "a fleet's VMs share a LAN through vde_switch, which is not installed.",
            hint="install vde2 (Debian: apt-get install vde2; NixOS: environment.systemPackages = [ pkgs.vde2 ])",
        )
    home = _home(ensure_root(root))
    with contextlib.suppress(FileExistsError):
        home.mkdir(mode=0o700)
    if sock.exists():  # left by a hub that did not end cleanly
        shutil.rmtree(sock)
    pidfile = home / "pid"
    pidfile.unlink(missing_ok=True)
    argv = ["vde_switch", "--daemon", "--pidfile", str(pidfile), "--sock", str(sock), "--dirmode", "0700", "--hub"]
    result = process.run(argv, check=False)
    if result.returncode != 0:
        raise RehearseError(f"vde_switch did not start the fleet's LAN:\n{result.stderr.strip()}")
    end = time.monotonic() + 5
    while not (sock / "ctl").exists() or _running(root) is None:
        if time.monotonic() > end:
            raise RehearseError(f"vde_switch started but made no socket in {sock}")
        time.sleep(0.05)
    output.info(f"the fleet's LAN ({NETWORK}.0/24, a hub of its own) is up")
    if stranded:
        output.warn(
            "the fleet's hub (vde_switch) had stopped and was started again; "
            f"{', '.join(stranded)} still run cut off from the LAN (QEMU does not connect to a new hub): "
            + "; ".join(f"`rehearse down {n} && rehearse up {n}`" for n in stranded)
        )
    return sock


def release_hub(root: Path) -> None:
    """End the hub when no VM of the LAN runs any more, nor is being started."""
    if _running(root) is None:
        return
    with _hub_lock(root) as home, _flock(home / "users", fcntl.LOCK_EX, wait=0) as alone:
        pid = _running(root)
        if pid is None or not alone or _lan_vms(root, running=True):
            return
        _stop(root, pid)


def _stop(root: Path, pid: int) -> None:
    start = process_start(pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + 5
    while pid_alive(pid, start) and time.monotonic() < end:
        time.sleep(0.05)
    _home(root).joinpath("pid").unlink(missing_ok=True)
    output.info("the fleet's LAN is down (no VM of it runs)")

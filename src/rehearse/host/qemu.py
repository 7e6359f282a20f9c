"""The VM handle: start the NixOS runner detached, wait for SSH, control it
over QMP, stop it.  Knows the runner's interface (the variables of
nixos/modules/virtualisation/qemu-vm.nix), nothing else about the guest.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rehearse.core import output
from rehearse.core.errors import ExitCode, RehearseError
from rehearse.host import answers, process, ssh
from rehearse.store.state import VMDir, pid_alive, process_start

T = TypeVar("T")


def retry(fn: Callable[[bool], T | None], timeout: float, interval: float = 1.0) -> T | None:
    """Call fn(last_try) until it returns something other than None or time is up."""
    deadline = time.monotonic() + timeout
    while True:
        last = time.monotonic() + interval >= deadline
        value = fn(last)
        if value is not None or last:
            return value
        time.sleep(interval)


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether QEMU could listen on host:port. QEMU's user network sets
    SO_REUSEADDR on its forwards, so connections of an earlier VM still in
    TIME_WAIT on that port do not keep it; only a listener does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def port_holder(port: int, proc: Path = Path("/proc")) -> str | None:
    """Which process listens on 127.0.0.1:`port` (or on every address), as
    "NAME (pid N)", from /proc (Linux): the listening socket's inode in
    net/tcp, then the process with that socket open. None when it cannot be
    told (another user's process, no /proc)."""
    inodes = set()
    for table in ("net/tcp", "net/tcp6"):
        try:
            lines = (proc / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local address HEX:PORT, state 0A (LISTEN), inode in field 9
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    for pid_dir in proc.glob("[0-9]*"):
        try:
            if any(os.readlink(fd) in inodes for fd in (pid_dir / "fd").iterdir()):
                name = (pid_dir / "comm").read_text().strip()
                return f"{name} (pid {pid_dir.name})"
        except OSError:
            continue
    return None


def pick_port(start: int = 2222, taken: set[int] | None = None) -> int:
    """The first free loopback port from `start`; ports in use are skipped."""
    for port in range(start, start + 2000):
        if (taken is None or port not in taken) and port_free(port):
            return port
    raise RehearseError(f"no free TCP port on 127.0.0.1 between {start} and {start + 1999}.")


# --- KVM ------------------------------------------------------------------


# The probe's cache in the state root: its name starts with a dot, which no
# VM name does, so no command on a VM ever takes it for one.
KVM_CACHE = ".kvm-probe"


def kvm_works(kernel: Path | None, cache_dir: Path, timeout: float = 8.0) -> bool:
    """Whether KVM really runs a guest here. /dev/kvm can exist and hang
    (broken nested virtualisation), so boot the VM's kernel under KVM with a
    time limit and look for its "no root" panic. The answer is cached for
    the host's boot in `cache_dir` (the state root, which exists)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = "unknown"
    cache = cache_dir / KVM_CACHE
    try:
        cached_boot, answer = cache.read_text().split()
        if cached_boot == boot_id:
            return answer == "kvm"
    except (OSError, ValueError):
        pass
    if kernel is None or not kernel.exists():
        return True  # nothing to test with: let QEMU try KVM and fall back itself
    qemu = process.require("qemu-system-x86_64")
    argv = [
        qemu,
        "-machine",
        "accel=kvm",
        "-cpu",
        "max",
        "-m",
        "256",
        "-nodefaults",
        "-no-reboot",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-kernel",
        str(kernel),
        "-append",
        "console=ttyS0 panic=-1",
    ]
    output.command(" ".join(argv) + f"   # KVM probe, killed after {timeout:.0f} s")
    works = False
    with subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    ) as proc:
        try:
            out, _ = proc.communicate(timeout=timeout)
            works = b"Kernel panic" in out or b"VFS:" in out
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    try:
        cache.write_text(f"{boot_id} {'kvm' if works else 'tcg'}\n")
    except OSError as e:  # only a cache
        output.debug(f"cannot cache the KVM probe's answer in {cache}: {e}")
    return works


# --- the VM ---------------------------------------------------------------


@dataclass(frozen=True)
class Forward:
    host_port: int
    guest_port: int
    proto: str = "tcp"

    def hostfwd(self) -> str:
        return f"hostfwd={self.proto}:127.0.0.1:{self.host_port}-:{self.guest_port}"


def check_state_path(path: Path) -> None:
    """Refuse a state directory whose path the runner cannot hand to QEMU:
    QEMU_OPTS is split on whitespace, and the runner's own `-drive
    file=$NIX_DISK_IMAGE,…` and `-virtfs local,path=$SHARED_DIR,…` options
    cannot carry a comma (QEMU would read the rest as more options)."""
    bad = [
        what
        for what, found in (("whitespace", any(c.isspace() for c in str(path))), ("a comma", "," in str(path)))
        if found
    ]
    if bad:
        raise RehearseError(
            f"the state directory {path} contains {' and '.join(bad)}, which the VM runner cannot pass to QEMU.",
            hint="set REHEARSE_STATE_DIR to a path without spaces or commas",
            exit_code=ExitCode.USAGE,
        )


def qemu_value(text: str) -> str:
    """`text` as the value inside a QEMU option list (a,b=c,…): QEMU reads a
    comma as the end of the value unless it is doubled."""
    return text.replace(",", ",,")


def runner_env(vmdir: VMDir, forwards: list[Forward], *, gui: bool, tcg: bool) -> dict[str, str]:
    """The run-<name>-vm variables that put the VM's files into its state dir."""
    check_state_path(vmdir.path)
    qemu_opts = [
        # `-serial file:PATH` takes the rest of the word as the path, as it
        # is (QEMU 7.2 opens "a,,b" for file:a,,b); `-qmp unix:PATH,server=on`
        # is an option list, where a comma of the path must be doubled.
        "-serial",
        f"file:{vmdir.file('console.log')}",
        "-qmp",
        f"unix:{qemu_value(str(vmdir.socket('qmp.sock')))},server=on,wait=off",
    ]
    if not gui:
        qemu_opts += ["-display", "none"]
    if tcg:
        qemu_opts += ["-machine", "accel=tcg"]
    return {
        "NIX_DISK_IMAGE": str(vmdir.file("disk.qcow2")),
        "SHARED_DIR": str(vmdir.file("shared")),
        "TMPDIR": str(vmdir.file("tmp")),
        "USE_TMPDIR": "1",
        "QEMU_NET_OPTS": ",".join(f.hostfwd() for f in forwards),
        "QEMU_OPTS": " ".join(qemu_opts),
    }


def listening_ports(session: int) -> set[int]:
    """The TCP ports on 127.0.0.1 that processes of `session` listen on
    (from /proc: the listening sockets' inodes, then the session's fds)."""
    inodes: dict[str, int] = {}
    try:
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[1].startswith("0100007F:"):  # LISTEN on 127.0.0.1
                inodes[fields[9]] = int(fields[1].split(":")[1], 16)
    except OSError:
        return set()
    ports: set[int] = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            after_name = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            if int(after_name[3]) != session:  # state, ppid, pgrp, session
                continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    ports.add(inodes[link[8:-1]])
        except (OSError, IndexError, ValueError):
            continue
    return ports


class PortTaken(RehearseError):
    """A host port picked as free was taken by someone else (another
    rehearse, another program) before QEMU could listen on it."""

    def __init__(self, port: int) -> None:
        super().__init__(f"port {port} on 127.0.0.1 was taken while the VM started.")
        self.port = port


_FORWARD_REFUSED = re.compile(r"Could not set up host forwarding rule '(?:tcp|udp):127\.0\.0\.1:(\d+)-")


def start(runner: Path, env: dict[str, str], vmdir: VMDir, listens: Sequence[int] = (), timeout: float = 60) -> int:
    """Start the runner detached (the VM outlives rehearse); its pid is QEMU's,
    since the runner ends by exec'ing QEMU. With `listens`, wait until QEMU
    listens on those host ports: a port another process took between the
    pick and QEMU's start (another rehearse in another terminal) ends QEMU
    at once, and raises PortTaken so that the caller picks again."""
    vmdir.file("console.log").write_bytes(b"")
    vmdir.file("runner.log").write_bytes(b"")
    proc = process.spawn([runner], env=env, cwd=vmdir.path, log_file=vmdir.file("runner.log"))
    deadline = time.monotonic() + timeout
    # Listened on by the runner's own session (QEMU), not merely taken: the
    # program that won the race listens there too.
    while listens and proc.poll() is None and time.monotonic() < deadline:
        if set(listens) <= listening_ports(session=proc.pid):
            break
        time.sleep(0.1)
    if proc.poll() is not None:
        refused = _FORWARD_REFUSED.search(vmdir.file("runner.log").read_text(errors="replace"))
        if refused:
            raise PortTaken(int(refused.group(1)))
    return proc.pid


def tail(path: Path, lines: int = 15) -> str:
    try:
        data = path.read_bytes()[-64 * 1024 :]
    except OSError:
        return ""
    return "\n".join(answers.console(data).rstrip().splitlines()[-lines:])


def early_exit_error(vmdir: VMDir) -> RehearseError:
    out = tail(vmdir.file("runner.log"), 20)
    if "qemu-system-x86_64" in out and ("not found" in out or "No such file" in out):
        return RehearseError(
            "qemu-system-x86_64 not found: the VM could not start.",
            hint=process.INSTALL_HINTS["qemu-system-x86_64"],
        )
    if "gtk initialization failed" in out:
        return RehearseError(
            "QEMU could not open a window: there is no display here.",
            hint="run without --gui (rehearse is headless by default)",
        )
    return RehearseError(
        f"the VM stopped while booting. Its runner said:\n{out or '(nothing)'}\n"
        f"console:\n{tail(vmdir.file('console.log'))}"
    )


def ssh_banner(port: int, timeout: float = 1.0) -> bool:
    """Whether something on 127.0.0.1:port greets like an SSH server."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def wait_for_ssh(remote: ssh.Remote, pid: int, pid_start: int | None, vmdir: VMDir, timeout: float) -> None:
    """Wait until the VM answers SSH, with a progress line; on failure say
    what was waited for and show the console's last lines."""
    start_time = time.monotonic()

    def attempt(last: bool) -> bool | None:
        if not pid_alive(pid, pid_start):
            raise early_exit_error(vmdir)
        waited = time.monotonic() - start_time
        output.live(f"waiting for SSH on 127.0.0.1:{remote.port} ({waited:.0f} s)")
        # Until the guest has its network up, QEMU accepts the forwarded
        # connection and then says nothing: wait for sshd's banner first
        # (cheap, 1 s at most) rather than an SSH handshake that hangs.
        if not ssh_banner(remote.port):
            return None
        result = ssh.run(remote, ["true"], check=False, connect_timeout=5, timeout=30)
        return True if result.returncode == 0 else None

    try:
        ok = retry(attempt, timeout, interval=0.5)
    finally:
        output.live_end()
    if not ok:
        raise RehearseError(
            f"VM {vmdir.name!r} did not answer SSH on 127.0.0.1:{remote.port} within {timeout:.0f} s.\n"
            f"Last lines of its console:\n{tail(vmdir.file('console.log'))}",
            hint=f"`rehearse console {vmdir.name}` shows the whole console; the VM is still running: "
            f"`rehearse down {vmdir.name}` stops it. Does the configuration keep services.openssh enabled?",
        )


def qmp_command(sock: Path, command: str) -> None:
    from qemu.qmp.legacy import QEMUMonitorProtocol  # lazy: only down needs it

    qmp = QEMUMonitorProtocol(str(sock))
    try:
        qmp.connect()
        qmp.cmd(command)
    finally:
        qmp.close()


def qmp(sock: Path, command: str, **arguments: object) -> Any:
    """One QMP command to the running VM; its return value. A QMP error is
    a RehearseError naming the command."""
    from qemu.qmp import ExecuteError
    from qemu.qmp.legacy import QEMUMonitorProtocol

    monitor = QEMUMonitorProtocol(str(sock))
    try:
        monitor.connect()
        return monitor.cmd(command, **arguments)
    except ExecuteError as e:
        raise RehearseError(f"QEMU refused {command}: {e}") from None
    finally:
        monitor.close()


def run_status(sock: Path) -> str | None:
    """QEMU's run state (QMP query-status: "running", "paused" after a QMP
    `stop`, "io-error" …), or None when QMP does not answer."""
    try:
        answer = qmp(sock, "query-status")
    except Exception as e:  # no socket, QEMU gone or hung: the caller goes on as before
        output.debug(f"QMP query-status failed: {e}")
        return None
    status = answer.get("status") if isinstance(answer, dict) else None
    return status if isinstance(status, str) else None


def add_forward(sock: Path, forward: Forward) -> None:
    """Forward one more port from 127.0.0.1 into the running VM (QEMU's
    hostfwd_add on the runner's user network, netdev user.0)."""
    from qemu.qmp.legacy import QEMUMonitorProtocol

    qmp = QEMUMonitorProtocol(str(sock))
    try:
        qmp.connect()
        command = f"hostfwd_add user.0 {forward.proto}:127.0.0.1:{forward.host_port}-:{forward.guest_port}"
        out = qmp.cmd("human-monitor-command", **{"command-line": command})
    finally:
        qmp.close()
    text = out if isinstance(out, str) else ""
    if text.strip():
        raise RehearseError(f"QEMU could not forward 127.0.0.1:{forward.host_port} to the VM: {text.strip()}")


def _session_members(sid: int) -> list[int]:
    """The processes of session `sid` (field 6 of /proc/PID/stat)."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            members.append(int(entry.name))
    return members


def reap(pid: int | None, pid_start: int | None) -> list[int]:
    """End what the VM's runner started beside QEMU and left behind once the
    VM is gone: NixOS 26.11's run script starts a virtiofsd per shared
    directory, which outlives a QEMU that was killed or never connected.
    The runner was started in a session of its own (process.spawn), so they
    are the processes of session `pid`. Nothing happens while the VM runs,
    nor when another process now holds `pid` (a new session leader: pids are
    reused once a session is empty). Returns the pids signalled."""
    if not pid or pid_start is None or pid_alive(pid, pid_start):
        return []
    if process_start(pid) is not None:
        return []  # pid is another process's now (it may lead a session of its own)
    left = [p for p in _session_members(pid) if p != os.getpid()]
    for p in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(process_start(p) is not None for p in left):
        time.sleep(0.1)
    for p in left:
        if process_start(p) is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGKILL)
    return left


def stop(pid: int, pid_start: int | None, qmp_sock: Path, timeout: float) -> str:
    """Power the VM off: ACPI power button over QMP, then QMP quit, then
    SIGKILL. Returns how it went down. The process is the VM only while
    `pid` still has its start time `pid_start` (pids are reused): another
    process with that pid, or a pid without its start time, is never
    signalled."""

    def gone(last: bool) -> bool | None:
        return True if not pid_alive(pid, pid_start) else None

    if gone(False):
        return "already stopped"
    try:
        qmp_command(qmp_sock, "system_powerdown")
    except Exception as e:
        output.debug(f"QMP system_powerdown failed: {e}")
    if retry(gone, timeout, interval=0.5):
        return "powered off"
    try:
        qmp_command(qmp_sock, "quit")
    except Exception as e:
        output.debug(f"QMP quit failed: {e}")
    if retry(gone, 5, interval=0.2):
        return f"did not power off within {timeout:.0f} s; QEMU was told to quit"
    # pidfd: the check that it is still the VM and the signal reach the same
    # process, even if it ends and its pid is reused in between.
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return "powered off"
    try:
        if not pid_alive(pid, pid_start):
            return "powered off"
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        return "powered off"
    finally:
        os.close(pidfd)
    retry(gone, 5, interval=0.2)
    return f"did not power off within {timeout:.0f} s; killed"

"""Per-VM state: one directory per VM, 0700, holding its keys, disk, logs
and a state file written under a lock.

    $XDG_STATE_HOME/rehearse/<name>/      (REHEARSE_STATE_DIR overrides the root)
        lock                 flock: one command at a time changes this VM
        state.json           pid, ports, system, configuration source …
        id_ed25519[.pub]     the client key rehearse logs in with
        known_hosts          the VM's host key, pinned before the first connection
        shared/              the VM's SHARED_DIR (/tmp/shared): its host key
        tmp/                 the runner's TMPDIR
        disk.qcow2           NIX_DISK_IMAGE
        console.log          serial console
        qmp.sock             QMP
        vm                   GC root: the VM runner built for it
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rehearse.errors import ExitCode, RehearseError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def state_root() -> Path:
    override = os.environ.get("REHEARSE_STATE_DIR")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(xdg) / "rehearse"


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise RehearseError(
            f"invalid VM name {name!r}.",
            hint="use letters, digits, '-', '_' and '.', starting with a letter or digit",
            exit_code=ExitCode.USAGE,
        )
    return name


@dataclass
class VMState:
    """What state.json holds. Mutable: commands update it under the lock."""

    name: str
    source: dict[str, Any] = field(default_factory=dict)
    pid: int | None = None
    pid_start: int | None = None  # with pid, names the VM's process (pids are reused)
    ssh_port: int | None = None
    forwards: list[dict[str, Any]] = field(default_factory=list)
    runner: str | None = None  # the VM runner (system.build.vm) `up` starts: that of `system`
    system: str | None = None  # the system the VM runs (after live deploys, the last deployed)
    runners: dict[str, str] = field(default_factory=dict)  # system → its runner, for restarts after rollback
    disk_from: str | None = None  # the system the disk was made with: its state may be older
    started: float | None = None

    def alive(self) -> bool:
        return pid_alive(self.pid, self.pid_start)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VMState:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class VMDir:
    """The state directory of one VM."""

    def __init__(self, name: str, root: Path | None = None) -> None:
        self.name = check_name(name)
        self.path = (root or state_root()) / name

    @classmethod
    def named(cls, name: str) -> VMDir | None:
        """The VM called `name`, if there is one."""
        if not NAME_RE.fullmatch(name):
            return None
        vmdir = cls(name)
        return vmdir if vmdir.exists else None

    @property
    def exists(self) -> bool:
        return (self.path / "state.json").exists()

    def file(self, name: str) -> Path:
        return self.path / name

    def socket(self, name: str) -> Path:
        """Where the VM's Unix socket `name` lives (QMP, the SSH master): in
        its directory, unless that path is too long for a Unix socket (108
        bytes, and ssh adds a suffix while it sets a master up); then in a
        private directory under /tmp, named by a hash of the VM's directory."""
        path = self.path / name
        if len(str(path).encode()) <= 80:
            return path
        short = Path(f"/tmp/rehearse-{os.getuid()}")
        short.mkdir(mode=0o700, exist_ok=True)
        st = short.stat()
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise RehearseError(
                f"{short} is not a private directory of yours.", hint="remove it, or set a shorter REHEARSE_STATE_DIR"
            )
        digest = hashlib.sha256(str(self.path).encode()).hexdigest()[:16]
        return short / f"{digest}-{name}"

    def create(self) -> None:
        root = self.path.parent
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(root, 0o700)
        for d in (self.path, self.path / "shared", self.path / "tmp", self.path / "runners"):
            d.mkdir(exist_ok=True, mode=0o700)
            os.chmod(d, 0o700)

    def load(self) -> VMState:
        try:
            data = json.loads((self.path / "state.json").read_text())
        except FileNotFoundError:
            raise RehearseError(
                f"no VM named {self.name!r}.",
                hint="`rehearse status` lists the VMs; `rehearse up` makes one",
                exit_code=ExitCode.USAGE,
            ) from None
        return VMState.from_json(data)

    def save(self, state: VMState) -> None:
        tmp = self.path / "state.json.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(state), f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, self.path / "state.json")

    @contextlib.contextmanager
    def locked(self, what: str) -> Iterator[None]:
        """Hold the VM's lock, or fail at once if another command holds it."""
        self.create()
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                raise RehearseError(
                    f"VM {self.name!r} is busy: another rehearse command holds its lock"
                    + (f" ({holder})" if holder else "")
                    + ".",
                    hint="wait for it to finish, then try again",
                    exit_code=ExitCode.BUSY,
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{what}, pid {os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)


def all_vms(root: Path | None = None) -> list[VMDir]:
    base = root or state_root()
    if not base.is_dir():
        return []
    return [VMDir(p.name, base) for p in sorted(base.iterdir()) if (p / "state.json").exists()]


def process_start(pid: int) -> int | None:
    """The start time of process `pid` (clock ticks since boot), None if gone.
    Together with the pid it names one process: pids are reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def pid_alive(pid: int | None, start: int | None = None) -> bool:
    """Whether the VM process `pid` (started at `start`) still runs: the
    runner script first, QEMU after the runner's exec (same pid)."""
    if not pid:
        return False
    now = process_start(pid)
    return now is not None and (start is None or now == start)

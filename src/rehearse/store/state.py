"""Per-VM state: one directory per VM, 0700, holding its keys, disk, logs
and a state file written under a lock.

    $XDG_STATE_HOME/rehearse/<name>/      (REHEARSE_STATE_DIR overrides the root)
        lock                 flock: one command at a time changes this VM
        state.json           pid, ports, system, configuration source …
        id_ed25519[.pub]     the client key rehearse logs in with
        ssh_host_ed25519_key[.pub]  the VM's host key (kept here, never read back from the guest)
        known_hosts          the VM's host key, pinned before the first connection
        shared/              the VM's SHARED_DIR (/tmp/shared), guest-writable: made anew by
                             each `up` with a copy of the host key, never read by rehearse
        tmp/                 the runner's TMPDIR (its xchg/ is guest-writable too), made anew by `up`
        disk.qcow2           NIX_DISK_IMAGE
        console.log          serial console
        qmp.sock             QMP
        vm                   GC root: the VM runner built for it

The root and the VM directories are made 0700; rehearse never changes the
mode of one that exists, and refuses one that others could change. Only
`up` makes a VM directory. Entries of the root whose names are no VM names
(.kvm-probe, the KVM probe's cache, starts with a dot) are never VMs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rehearse.core.errors import ExitCode, RehearseError, did_you_mean, one_line

# Always matched with fullmatch (a `$` would let a trailing newline through).
# A name never starts with a dot, so the root's own files (.kvm-probe) are no VMs.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def state_root() -> Path:
    """The root, absolute: the runner runs in the VM's directory, and a
    relative path would mean another place there (and to ssh)."""
    override = os.environ.get("REHEARSE_STATE_DIR")
    if override:
        return Path(override).absolute()
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return (Path(xdg) / "rehearse").absolute()


def check_private_dir(path: Path, what: str) -> None:
    """Refuse a directory that is not one, is not ours, or that group or
    others can write: they could swap the files rehearse keeps there (keys,
    state, the lock). Its mode is never changed: it may be someone's /tmp."""
    fix = "set REHEARSE_STATE_DIR to a directory of your own that only you can write (a new one is made 0700)"
    try:
        st = path.stat()
    except OSError as e:  # a dangling symlink, a file in the way …
        raise RehearseError(f"cannot use {what} {path}: {e.strerror}.", hint=fix, exit_code=ExitCode.USAGE) from None
    if not stat.S_ISDIR(st.st_mode):
        raise RehearseError(f"{what} {path} is not a directory.", hint=fix, exit_code=ExitCode.USAGE)
    if st.st_uid != os.geteuid():
        raise RehearseError(
            f"{what} {path} belongs to another user (uid {st.st_uid}).", hint=fix, exit_code=ExitCode.USAGE
        )
    if st.st_mode & 0o022:
        raise RehearseError(
            f"{what} {path} can be written by other users (mode {stat.S_IMODE(st.st_mode):o}); "
            "rehearse does not change the mode of a directory it did not make.",
            hint=f"`chmod go-w {path}` if it is yours alone, or {fix}",
            exit_code=ExitCode.USAGE,
        )


def ensure_root(root: Path | None = None) -> Path:
    """The state root, made 0700 if missing, else checked (never chmodded)."""
    root = root or state_root()
    try:
        root.mkdir(parents=True, mode=0o700)
    except FileExistsError:
        pass
    except NotADirectoryError:
        pass  # a parent is a file: check_private_dir says so
    except OSError as e:
        raise RehearseError(
            f"cannot make the state directory {root}: {e.strerror}.", exit_code=ExitCode.USAGE
        ) from None
    check_private_dir(root, "the state directory")
    return root


def existing_root(root: Path | None = None) -> Path | None:
    """The state root, checked, if it exists; None if not (nothing is made)."""
    root = root or state_root()
    if not os.path.lexists(root):
        return None
    check_private_dir(root, "the state directory")
    return root


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise RehearseError(
            f"invalid VM name {name!r}.",
            hint="use letters, digits, '-', '_' and '.', starting with a letter or digit",
            exit_code=ExitCode.USAGE,
        )
    return name


@dataclass(frozen=True)
class RecordedSource:
    """The configuration a VM was built from, as recorded (host/nix.py's
    Source: record(), of_record())."""

    configuration: str | None = None
    flake: str | None = None
    attr: str | None = None
    include: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"configuration": self.configuration, "flake": self.flake, "attr": self.attr, "include": [*self.include]}


@dataclass(frozen=True)
class Forwarded:
    """A port the VM forwards: 127.0.0.1:host on this machine → guest in the VM."""

    host: int
    guest: int
    proto: str = "tcp"

    def to_json(self) -> dict[str, Any]:
        return {"guest": self.guest, "host": self.host, "proto": self.proto}


@dataclass(frozen=True)
class ServerPort:
    """A port of the server's own sshd, forwarded: 127.0.0.1:host → guest."""

    host: int
    guest: int

    def to_json(self) -> dict[str, Any]:
        return {"guest": self.guest, "host": self.host}


@dataclass(frozen=True)
class LanState:
    """A fleet machine's place on the LAN (host/lan.py), as its state records it."""

    number: int
    interface: str
    address: str
    host: str | None = None  # its host name (None: the VM's name)
    domain: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VMState:
    """What state.json holds. Mutable: commands update it under the lock."""

    name: str
    source: RecordedSource | None = None  # None: none recorded ({} in state.json)
    pid: int | None = None
    pid_start: int | None = None  # with pid, names the VM's process (pids are reused)
    ssh_port: int | None = None
    forwards: list[Forwarded] = field(default_factory=list)
    runner: str | None = None  # the VM runner (system.build.vm) `up` starts: that of `system`
    system: str | None = None  # the system the VM runs (after live deploys, the last deployed)
    runners: dict[str, str] = field(default_factory=dict)  # system → its runner, for restarts after rollback
    disk_from: str | None = None  # the system the disk was made with: its state may be older
    started: float | None = None
    server_ssh: list[ServerPort] = field(default_factory=list)  # the server's sshd ports
    overrides: list[str] = field(default_factory=list)  # the server's settings the VM overrides
    lan: LanState | None = None  # on a fleet's LAN (lan.py)
    isolated: bool = False  # virtualisation.restrictNetwork: the VM reaches neither the host nor the outside

    def alive(self) -> bool:
        return pid_alive(self.pid, self.pid_start)

    def tcp_forwards(self) -> dict[int, int]:
        """Host port → guest port of what the VM forwards (TCP)."""
        return {f.host: f.guest for f in self.forwards if f.proto == "tcp"}

    @classmethod
    def from_json(cls, data: object, name: str | None = None) -> VMState:
        """The state of VM `name` from state.json's data; ValueError saying
        what is wrong when it is not a state of that VM (a pid of the wrong
        type could name any process: nothing is taken on trust)."""
        if not isinstance(data, dict):
            raise ValueError("it holds no JSON object")
        if "name" not in data:
            raise ValueError("it names no VM")
        if name is not None and data["name"] != name:
            raise ValueError(f"it names the VM {data['name']!r}")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key, value in known.items():
            if not _valid(key, value):
                shown = repr(value)
                raise ValueError(f"{key} is {shown if len(shown) <= 60 else shown[:59] + '…'}")
        typed: dict[str, Any] = {**known}
        if "source" in known:
            src = known["source"]
            typed["source"] = (
                RecordedSource(src.get("configuration"), src.get("flake"), src.get("attr"), (*src.get("include", []),))
                if src
                else None
            )
        if "forwards" in known:
            typed["forwards"] = [Forwarded(f["host"], f["guest"], f["proto"]) for f in known["forwards"]]
        if "server_ssh" in known:
            typed["server_ssh"] = [ServerPort(f["host"], f["guest"]) for f in known["server_ssh"]]
        if known.get("lan") is not None:
            lan = known["lan"]
            typed["lan"] = LanState(lan["number"], lan["interface"], lan["address"], lan.get("host"), lan.get("domain"))
        return cls(**typed)

    def to_json(self) -> dict[str, Any]:
        """What state.json holds (from_json reads it back)."""
        return {
            **asdict(self),
            "source": self.source.to_json() if self.source else {},
            "forwards": [f.to_json() for f in self.forwards],
            "server_ssh": [p.to_json() for p in self.server_ssh],
            "lan": self.lan.to_json() if self.lan else None,
        }


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _valid(key: str, v: object) -> bool:
    """Whether `v` is a possible value of the VMState field `key`."""
    match key:
        case "name":
            return isinstance(v, str)
        case "isolated":
            return isinstance(v, bool)
        case "pid":
            return v is None or (isinstance(v, int) and not isinstance(v, bool) and v > 0)
        case "pid_start" | "ssh_port":
            return v is None or _is_int(v)
        case "runner" | "system" | "disk_from":
            return v is None or isinstance(v, str)
        case "started":
            return v is None or (isinstance(v, int | float) and not isinstance(v, bool))
        case "overrides":
            return isinstance(v, list) and all(isinstance(o, str) for o in v)
        case "server_ssh":
            return isinstance(v, list) and all(
                isinstance(f, dict) and _is_int(f.get("host")) and _is_int(f.get("guest")) for f in v
            )
        case "lan":
            return v is None or (
                isinstance(v, dict)
                and _is_int(v.get("number"))
                and isinstance(v.get("interface"), str)
                and isinstance(v.get("address"), str)
                and isinstance(v.get("host"), str | None)
                and isinstance(v.get("domain"), str | None)
            )
        case "runners":
            return isinstance(v, dict) and all(isinstance(a, str) and isinstance(b, str) for a, b in v.items())
        case "forwards":
            return isinstance(v, list) and all(
                isinstance(f, dict)
                and _is_int(f.get("host"))
                and _is_int(f.get("guest"))
                and isinstance(f.get("proto"), str)
                for f in v
            )
        case "source":
            return (
                isinstance(v, dict)
                and all(isinstance(v.get(k), str | None) for k in ("configuration", "flake", "attr"))
                and isinstance(v.get("include", []), list)
                and all(isinstance(i, str) for i in v.get("include", []))
            )
    return True


def socket_path(directory: Path, name: str) -> Path:
    """Where a Unix socket (or a directory of them) `name` of `directory`
    lives: there, unless that path is too long for a Unix socket (108 bytes,
    and ssh or vde_switch add their own names); then in a private directory
    under /tmp, named by a hash of `directory`."""
    path = directory / name
    if len(str(path).encode()) <= 80:
        return path
    return socket_dir() / f"{hashlib.sha256(str(directory).encode()).hexdigest()[:16]}-{name}"


def socket_dir(base: Path = Path("/tmp")) -> Path:
    """The user's private directory for sockets, `base`/rehearse-UID: made
    0700 if missing, else refused unless it is a real directory (lstat: a
    symbolic link someone planted in /tmp is never followed) that the user
    owns and that no one else can enter. Made first and checked after, so
    no one can slip a link in between: once it is ours in a sticky /tmp, no
    one else can rename or replace it."""
    path = base / f"rehearse-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    hint = f"remove {path} if it is yours, or set REHEARSE_STATE_DIR to a shorter path (sockets then stay in it)"
    try:
        st = os.lstat(path)
    except OSError as e:
        raise RehearseError(
            f"cannot use {path} for sockets: {e.strerror}.", hint=hint, exit_code=ExitCode.USAGE
        ) from None
    if stat.S_ISLNK(st.st_mode):
        problem = "is a symbolic link; rehearse does not follow it"
    elif not stat.S_ISDIR(st.st_mode):
        problem = "is not a directory"
    elif st.st_uid != os.geteuid():
        problem = f"belongs to another user (uid {st.st_uid})"
    elif st.st_mode & 0o077:
        problem = f"can be reached by other users (mode {stat.S_IMODE(st.st_mode):o}, not 700)"
        hint = f"`chmod 700 {path}` if it is yours alone, or {hint}"
    else:
        return path
    raise RehearseError(f"{path}, the private directory for sockets, {problem}.", hint=hint, exit_code=ExitCode.USAGE)


class VMDir:
    """The state directory of one VM."""

    def __init__(self, name: str, root: Path | None = None) -> None:
        self.name = check_name(name)
        self.path = (root or state_root()) / name
        self.held = False  # this process holds the VM's lock, through this VMDir

    @classmethod
    def named(cls, name: str) -> VMDir | None:
        """The VM called `name`, if there is one."""
        if not NAME_RE.fullmatch(name):
            return None
        vmdir = cls(name)
        return vmdir if vmdir.exists else None

    @property
    def exists(self) -> bool:
        return self.path.is_dir() and (self.path / "state.json").exists()

    def _no_vm(self) -> RehearseError:
        return RehearseError(
            f"no VM named {self.name!r}" + did_you_mean(self.name, (d.name for d in all_vms(self.path.parent))),
            hint="`rehearse status` lists the VMs; `rehearse up` makes one",
            exit_code=ExitCode.USAGE,
        )

    def check(self) -> None:
        """For commands on a VM that exists: its directory is there, and it
        and the root are safe. Nothing is made (only `up` makes a VM)."""
        if existing_root(self.path.parent) is None or not self.path.is_dir():
            raise self._no_vm()
        check_private_dir(self.path, f"the directory of VM {self.name!r}")

    def file(self, name: str) -> Path:
        return self.path / name

    def snapshot_count(self) -> int:
        """How many snapshots the VM has: its catalogue (snapshots/TAG/meta.json,
        machines/snapshot.py), counted without asking QEMU, so `status` stays fast."""
        base = self.file("snapshots")
        return sum(1 for d in base.iterdir() if (d / "meta.json").exists()) if base.is_dir() else 0

    def socket(self, name: str) -> Path:
        """Where the VM's Unix socket `name` lives (QMP, the SSH master): in
        its directory, unless that path is too long for a Unix socket (108
        bytes, and ssh adds a suffix while it sets a master up); then in a
        private directory under /tmp, named by a hash of the VM's directory."""
        return socket_path(self.path, name)

    def create(self) -> None:
        """Make the VM's directory (0700), and the root if missing; what
        exists is checked, never chmodded. `up` only."""
        ensure_root(self.path.parent)
        if os.path.lexists(self.path) and not self.path.is_dir():
            raise RehearseError(
                f"{self.path} is in the way of VM {self.name!r}: it is not a VM's directory.",
                hint="remove it, or give the VM another --name",
                exit_code=ExitCode.USAGE,
            )
        for d in (self.path, self.path / "runners"):
            with contextlib.suppress(FileExistsError):
                d.mkdir(mode=0o700)
        check_private_dir(self.path, f"the directory of VM {self.name!r}")

    def fresh_dir(self, name: str) -> Path:
        """The VM's subdirectory `name` made anew, empty, 0700: for the ones
        the guest can write (shared/, and tmp/ whose xchg/ it shares), so
        that nothing the guest left there (a symlink to a host file …) is
        ever read, written or followed. rmtree removes the links inside
        without following them; a link in place of the directory itself is
        refused rather than followed (the guest cannot make one there)."""
        path = self.path / name
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None:
            if stat.S_ISLNK(st.st_mode):
                raise RehearseError(
                    f"{path} is a symbolic link; rehearse does not follow it.",
                    hint="remove it: `rehearse up` makes the directory anew",
                )
            try:
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except OSError as e:  # e.g. a directory the guest made unreadable
                raise RehearseError(
                    f"cannot clear {path}, which the VM can write: {e}.",
                    hint=f"remove {path} (the VM writes it; rehearse keeps nothing there)",
                ) from None
        path.mkdir(mode=0o700)
        return path

    def _broken(self, why: str) -> RehearseError:
        return RehearseError(
            f"the state of VM {self.name!r} is broken: {one_line(str(self.path / 'state.json'))}: {one_line(why)}.",
            hint=f"fix the file, or `rehearse destroy {self.name}` removes the VM (its disk too)",
        )

    def load(self) -> VMState:
        self.check()
        path = self.path / "state.json"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise self._no_vm() from None
        except OSError as e:
            raise self._broken(e.strerror or str(e)) from None
        try:
            return VMState.from_json(json.loads(raw), self.name)
        except ValueError as e:  # JSON, UTF-8, or a state of no VM
            raise self._broken(str(e) or "empty") from None
        except RecursionError:  # arrays or objects nested thousands deep: no state rehearse wrote
            raise self._broken("it is nested too deeply") from None

    def save(self, state: VMState) -> None:
        write_durably(self.path / "state.json", json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n")

    @contextlib.contextmanager
    def locked(self, what: str, *, create: bool = False) -> Iterator[None]:
        """Hold the VM's lock, or fail at once if another command holds it.
        Only `up` gives create=True; other commands need the VM to exist."""
        if create:
            self.create()
        else:
            self.check()
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
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
            held, self.held = self.held, True
            try:
                yield
            finally:
                self.held = held
        finally:
            os.close(fd)


def create_private(path: Path, data: bytes) -> None:
    """Create `path` with `data`, 0600: exclusively and without following a
    symlink, so a name someone planted there is never written through."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def write_durably(path: Path, text: str) -> None:
    """Replace `path` with `text`, atomically (a temporary file renamed over
    it) and durably (the file, then the directory's new entry, are synced
    before this returns): a crash leaves the old content or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def all_vms(root: Path | None = None) -> list[VMDir]:
    """The VMs: directories of the root with a VM's name and a state.json.
    Anything else there (.kvm-probe, a stray file) is no VM and is left alone."""
    base = existing_root(root)
    if base is None:
        return []
    return [
        VMDir(p.name, base)
        for p in sorted(base.iterdir())
        if NAME_RE.fullmatch(p.name) and p.is_dir() and (p / "state.json").exists()
    ]


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


def pid_alive(pid: int | None, start: int | None) -> bool:
    """Whether the VM process `pid` (started at `start`) still runs: the
    runner script first, QEMU after the runner's exec (same pid). A pid
    without its start time names no process for sure (pids are reused):
    never the VM, so nothing is ever signalled on its strength."""
    if not pid or start is None:
        return False
    return process_start(pid) == start

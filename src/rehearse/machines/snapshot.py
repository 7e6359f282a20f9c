"""Snapshots of a VM: `snapshot`, `snapshots`, `restore`, `snapshot --delete`.

A snapshot holds the VM's disk (with the system generations the guest keeps
on it), the system it ran and that system's VM runner (a GC root in the
snapshot's directory), and rehearse's state for the VM. `restore` brings
them back and boots the saved system.

The disk: a qcow2 internal snapshot of the VM's disk.qcow2. It is
copy-on-write (the snapshot shares every cluster with the disk until one of
them is written), so it costs the same whatever the disk holds. Of a running
VM it is taken live, without a migration (which QEMU refuses while a 9p or
virtiofs share is mounted, as every NixOS VM has): the guest's file systems
are synced over SSH, the VM is paused, QMP's
`blockdev-snapshot-internal-sync` snapshots the disk's node, and the VM goes
on. A paused VM writes nothing, and what the guest had written is on the
disk after the sync: the snapshot is what a clean power cut would leave,
which ext4's journal replays. Only the disk is saved, not the memory: a
restore boots. A powered-off VM is snapshotted with `qemu-img snapshot`.

Files: <vm>/snapshots/<tag>/{meta.json, state.json, runner}.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rehearse.core import output
from rehearse.core.errors import ExitCode, RehearseError
from rehearse.host import answers, nix, process, qemu, ssh
from rehearse.host.nix import Source
from rehearse.host.plan import store_name
from rehearse.machines import lifecycle
from rehearse.store.state import VMDir, VMState, write_durably

TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
DISK = "disk.qcow2"


@dataclass(frozen=True)
class Snapshot:
    tag: str
    taken: float  # seconds since the epoch
    system: str | None
    runner: str | None
    disk_bytes: int  # what the disk held (allocated) when it was taken
    live: bool  # taken of a running VM

    def to_json(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "taken": self.taken,
            "system": self.system,
            "runner": self.runner,
            "disk_bytes": self.disk_bytes,
            "live": self.live,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Snapshot:
        return cls(
            str(data["tag"]),
            float(data["taken"]),
            data.get("system"),
            data.get("runner"),
            int(data.get("disk_bytes", 0)),
            bool(data.get("live", False)),
        )


def check_tag(tag: str) -> str:
    if not TAG_RE.fullmatch(tag):
        raise RehearseError(
            f"invalid snapshot tag {tag!r}.",
            hint="use up to 64 letters, digits, '-', '_' and '.', starting with a letter or digit",
            exit_code=ExitCode.USAGE,
        )
    return tag


def _home(vmdir: VMDir, tag: str | None = None) -> Path:
    base = vmdir.file("snapshots")
    return base if tag is None else base / tag


def saved(vmdir: VMDir) -> list[Snapshot]:
    """The VM's snapshots, oldest first (those whose files are readable)."""
    result = []
    base = _home(vmdir)
    if not base.is_dir():
        return []
    for d in base.iterdir():
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            result.append(Snapshot.from_json(json.loads((d / "meta.json").read_text())))
    return sorted(result, key=lambda s: s.taken)


def _disk_info(disk: Path) -> dict[str, Any]:
    """qemu-img info of the disk; -U: readable while QEMU has it open."""
    qemu_img = process.require("qemu-img")
    result = process.run([qemu_img, "info", "-U", "--output=json", disk])
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _tags_on_disk(disk: Path) -> list[str]:
    return [str(s.get("name")) for s in _disk_info(disk).get("snapshots", [])]


def _id_of(disk: Path, tag: str) -> str:
    """The qcow2 ID of the disk's snapshot tagged `tag`.

    A qcow2 snapshot has an ID (1, 2, … given by QEMU) and a tag (rehearse's
    name for it), and `qemu-img snapshot -a` takes either, trying the IDs
    first (QEMU's find_snapshot_by_id_or_name): given the tag `1`, it would
    apply the snapshot whose ID is 1, whatever its tag. Given the ID of the
    snapshot found here by its tag, it can only mean that one (IDs are
    unique). The other operations take a tag as a tag only: `qemu-img
    snapshot -c/-d` (bdrv_snapshot_find) and QMP's
    blockdev-snapshot-{internal,delete-internal}-sync given `name` alone."""
    snaps = _disk_info(disk).get("snapshots", [])
    ids = [str(s.get("id")) for s in snaps if s.get("name") == tag]
    if len(ids) != 1 or [str(s.get("id")) for s in snaps].count(ids[0]) != 1:
        raise RehearseError(
            f"the disk {disk} has {len(ids)} snapshots tagged {tag!r}, or their IDs are not unique: "
            "rehearse cannot tell which one to restore; nothing was done.",
            hint=f"`qemu-img snapshot -l {disk}` lists them",
        )
    return ids[0]


def _node(sock: Path, disk: Path) -> str:
    """The QEMU block node of the VM's disk (its format node), found by the
    file it opened: the run script names its drive, rehearse does not rely on it."""
    for block in qemu.qmp(sock, "query-block"):
        inserted = block.get("inserted") or {}
        if inserted.get("file") and os.path.realpath(inserted["file"]) == os.path.realpath(disk):
            return str(inserted.get("node-name") or block["device"])
    raise RehearseError(f"the running VM has no disk {disk} (QMP query-block)")


def _running_remote(vmdir: VMDir, state: VMState) -> ssh.Remote | None:
    if not state.alive() or state.ssh_port is None:
        return None
    return lifecycle.remote_for(vmdir, state.ssh_port)


def take(name: str, tag: str | None) -> Snapshot:
    """Snapshot VM `name` (running or not) as `tag` (default: the time)."""
    vmdir = VMDir(name)
    with vmdir.locked("rehearse snapshot"):
        state = vmdir.load()
        tag = check_tag(tag or time.strftime("%Y%m%d-%H%M%S"))
        disk = vmdir.file(DISK)
        if not disk.exists():
            raise RehearseError(f"{name} has no disk yet.", hint=f"`rehearse up {name}` makes it")
        if _home(vmdir, tag).exists() or tag in _tags_on_disk(disk):
            raise RehearseError(
                f"{name} has a snapshot {tag!r} already.",
                hint=f"choose another tag, or `rehearse snapshot {name} {tag} --delete` first",
                exit_code=ExitCode.USAGE,
            )
        t0 = time.monotonic()
        remote = _running_remote(vmdir, state)
        if remote is not None:
            lifecycle.unpause(vmdir, state)  # one a killed snapshot left paused would not sync
            current = ssh.run(remote, ["sh", "-c", "sync && readlink -- /run/current-system"], timeout=120)
            lifecycle.reconcile(vmdir, state, answers.running_system(remote.who, current.stdout))
            sock = vmdir.socket("qmp.sock")
            node = _node(sock, disk)
            qemu.qmp(sock, "stop")
            try:
                qemu.qmp(sock, "blockdev-snapshot-internal-sync", device=node, name=tag)
            finally:
                qemu.qmp(sock, "cont")
        else:
            process.run([process.require("qemu-img"), "snapshot", "-c", tag, disk])
        snap = Snapshot(
            tag,
            time.time(),
            state.system,
            state.runner,
            int(_disk_info(disk).get("actual-size", 0)),
            remote is not None,
        )
        home = _home(vmdir, tag)
        home.mkdir(parents=True, mode=0o700)
        if state.runner and Path(state.runner).exists():
            nix.add_root(Path(state.runner), home / "runner")
        write_durably(home / "state.json", json.dumps(vmdir.load().to_json(), indent=2))
        write_durably(home / "meta.json", json.dumps(snap.to_json(), indent=2))
        how = "live (paused after a sync)" if remote is not None else "of the powered-off VM"
        output.success(
            f"{name}: snapshot {tag} taken {how} in {time.monotonic() - t0:.1f} s"
            + (f"; it runs {store_name(snap.system)}" if snap.system else "")
        )
        return snap


def delete(name: str, tag: str) -> None:
    vmdir = VMDir(name)
    with vmdir.locked("rehearse snapshot --delete"):
        state = vmdir.load()
        check_tag(tag)
        disk = vmdir.file(DISK)
        home = _home(vmdir, tag)
        on_disk = disk.exists() and tag in _tags_on_disk(disk)
        if not on_disk and not home.exists():
            raise _unknown(vmdir, tag)
        if on_disk:
            if state.alive():
                sock = vmdir.socket("qmp.sock")
                qemu.qmp(sock, "blockdev-snapshot-delete-internal-sync", device=_node(sock, disk), name=tag)
            else:
                process.run([process.require("qemu-img"), "snapshot", "-d", tag, disk])
        shutil.rmtree(home, ignore_errors=True)
    output.info(f"{name}: snapshot {tag} deleted")


def _unknown(vmdir: VMDir, tag: str) -> RehearseError:
    tags = [s.tag for s in saved(vmdir)]
    return RehearseError(
        f"{vmdir.name} has no snapshot {tag!r}.",
        hint=f"its snapshots: {', '.join(tags)}" if tags else f"`rehearse snapshot {vmdir.name} {tag}` takes one",
        exit_code=ExitCode.USAGE,
    )


def restore(name: str, tag: str, timeout: float, ssh_timeout: float) -> None:
    """Bring back the snapshot's disk, system, runner and state, and boot the saved system."""
    vmdir = VMDir(name)
    with vmdir.locked("rehearse restore"):
        state = vmdir.load()
        check_tag(tag)
        home = _home(vmdir, tag)
        disk = vmdir.file(DISK)
        if not disk.exists():
            # Its snapshots lived inside the disk: they went with it.
            raise RehearseError(
                f"{name} has no disk ({disk.name}): there is nothing to restore snapshot {tag} into; "
                "nothing was changed.",
                hint=f"`rehearse up {name}` makes a new disk; snapshots taken after that can be restored",
                exit_code=ExitCode.USAGE,
            )
        if not (home / "meta.json").exists() or tag not in _tags_on_disk(disk):
            raise _unknown(vmdir, tag)
        try:
            kept = VMState.from_json(json.loads((home / "state.json").read_text()), name)
        except (OSError, ValueError, RecursionError) as e:
            raise RehearseError(f"the snapshot {tag} of {name} is damaged: {home / 'state.json'}: {e}") from None
        if kept.runner is None or not Path(kept.runner).exists():
            raise RehearseError(
                f"the snapshot {tag} of {name} has no VM runner to boot (was it taken before the VM was built?).",
            )
        snapshot_id = _id_of(disk, tag)  # found before the VM is powered off: a failure changes nothing
        if state.alive():
            output.info(f"{name}: {lifecycle.power_off(vmdir, state, timeout)}")
            state = vmdir.load()
        process.run([process.require("qemu-img"), "snapshot", "-a", snapshot_id, disk])
        # What the VM ran, and how to boot it; where it is reached stays as it is now.
        state.system, state.runner, state.disk_from = kept.system, kept.runner, kept.disk_from
        state.runners = {**state.runners, **kept.runners}
        state.source, state.overrides = kept.source, kept.overrides
        vmdir.save(state)
        output.step(f"{name}: disk restored to snapshot {tag}; booting its system ({store_name(kept.system or '')})")
        req = lifecycle.UpRequest(source=None, name=name, forwards=(), gui=False, ssh_timeout=ssh_timeout)
        lifecycle.boot(req, Source.of_record(state.source), vmdir)


def listing(name: str, as_json: bool) -> None:
    vmdir = VMDir(name)
    vmdir.load()
    snaps = saved(vmdir)
    disk = vmdir.file(DISK)
    on_disk = set(_tags_on_disk(disk)) if disk.exists() else set()
    rows = [{**s.to_json(), "on_disk": s.tag in on_disk} for s in snaps]
    if as_json:
        output.result(json.dumps(rows, indent=2))
        return
    if not rows:
        output.info(f"{name} has no snapshots")
        return
    output.result(f"{'TAG':<20} {'TAKEN':<19} {'DISK':>9}  SYSTEM")
    for r in rows:
        taken = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["taken"]))
        size = f"{r['disk_bytes'] / 1024**2:.0f} MiB"
        missing = "" if r["on_disk"] else "  (not on the disk any more)"
        output.result(f"{r['tag']:<20} {taken:<19} {size:>9}  {store_name(r['system'] or '-')}{missing}")


def count(vmdir: VMDir) -> int:
    return vmdir.snapshot_count()

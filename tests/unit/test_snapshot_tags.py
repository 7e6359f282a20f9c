"""Issue 22, item 4, without a VM: a snapshot is restored by its tag, never
by the qcow2 ID the tag may spell (with a real qcow2 disk and qemu-img), and
a VM a killed `snapshot` left paused is resumed by the next command."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from rehearse.core.errors import ExitCode, RehearseError
from rehearse.host import nix, qemu
from rehearse.machines import lifecycle, snapshot
from rehearse.store.state import VMDir, VMState, process_start

needs_qemu_io = pytest.mark.skipif(
    not (shutil.which("qemu-img") and shutil.which("qemu-io")), reason="needs qemu-img and qemu-io"
)


@pytest.fixture
def stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> VMDir:
    """A powered-off VM with a real disk, and a runner file its snapshots keep."""
    root = tmp_path / "state"
    root.mkdir(mode=0o700)
    monkeypatch.setenv("REHEARSE_STATE_DIR", str(root))
    vmdir = VMDir("fripon")
    vmdir.create()
    runner = tmp_path / "runner"
    runner.write_text("")
    vmdir.save(VMState(name="fripon", runner=str(runner), system="/nix/store/x-system"))
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", vmdir.file("disk.qcow2"), "1M"], check=True)
    monkeypatch.setattr(nix, "add_root", lambda path, root: root.symlink_to(path))
    return vmdir


def write(disk: Path, byte: int) -> None:
    subprocess.run(["qemu-io", "-c", f"write -P {byte} 0 512", disk], check=True, capture_output=True)


def first_byte(disk: Path) -> str:
    out = subprocess.run(["qemu-io", "-c", "read -v 0 1", disk], check=True, capture_output=True, text=True)
    return out.stdout.split()[1]


@needs_qemu_io
def test_restore_takes_the_tag_never_the_id_it_spells(stopped: VMDir, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = stopped.file("disk.qcow2")
    booted: list[str] = []
    monkeypatch.setattr(lifecycle, "boot", lambda req, source, vmdir: booted.append(vmdir.name))
    write(disk, 0xBB)
    snapshot.take("fripon", "b")  # ID 1
    write(disk, 0x11)
    snapshot.take("fripon", "1")  # ID 2, tagged as the ID of "b"
    write(disk, 0xFF)
    assert [(s["id"], s["name"]) for s in snapshot._disk_info(disk)["snapshots"]] == [("1", "b"), ("2", "1")]

    snapshot.restore("fripon", "1", timeout=5, ssh_timeout=5)
    assert first_byte(disk) == "11" and booted == ["fripon"]
    snapshot.restore("fripon", "b", timeout=5, ssh_timeout=5)
    assert first_byte(disk) == "bb"
    with pytest.raises(RehearseError, match="has no snapshot '2'") as e:
        snapshot.restore("fripon", "2", timeout=5, ssh_timeout=5)  # an ID, no tag
    assert e.value.exit_code == ExitCode.USAGE and first_byte(disk) == "bb"

    # Deleting the tag "1" deletes that snapshot, not the one whose ID is 1.
    snapshot.delete("fripon", "1")
    assert snapshot._tags_on_disk(disk) == ["b"]
    with pytest.raises(RehearseError, match="has no snapshot '2'"):
        snapshot.delete("fripon", "2")
    assert snapshot._tags_on_disk(disk) == ["b"]


@needs_qemu_io
def test_restore_gives_qemu_img_the_id(stopped: VMDir, monkeypatch: pytest.MonkeyPatch) -> None:
    """The argv: `qemu-img snapshot -a` gets the ID found by the tag."""
    for tag in ("b", "1"):
        snapshot.take("fripon", tag)
    monkeypatch.setattr(lifecycle, "boot", lambda req, source, vmdir: None)
    calls: list[list[str]] = []
    real = snapshot.process.run

    def run(argv: list[Any], **kw: Any) -> Any:
        calls.append([str(a) for a in argv])
        return real(argv, **kw)

    monkeypatch.setattr(snapshot.process, "run", run)
    snapshot.restore("fripon", "1", timeout=5, ssh_timeout=5)
    [apply] = [c for c in calls if "-a" in c]
    assert apply[-3:] == ["-a", "2", str(stopped.file("disk.qcow2"))]


def test_a_tag_on_no_or_several_snapshots_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info: dict[str, Any] = {"snapshots": [{"id": "1", "name": "a"}, {"id": "1", "name": "b"}]}
    monkeypatch.setattr(snapshot, "_disk_info", lambda disk: info)
    for tag in ("a", "c"):
        with pytest.raises(RehearseError, match="cannot tell which one to restore"):
            snapshot._id_of(tmp_path / "disk.qcow2", tag)
    info["snapshots"][1]["id"] = "2"
    assert snapshot._id_of(tmp_path / "disk.qcow2", "b") == "2"


# --- a VM left paused ---------------------------------------------------------


@pytest.fixture
def alive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[VMDir, VMState]:
    """A VM whose pid is this process (so it is alive), and a fake QMP."""
    root = tmp_path / "state"
    root.mkdir(mode=0o700)
    vmdir = VMDir("fripon", root)
    vmdir.create()
    me = os.getpid()
    state = VMState(name="fripon", pid=me, pid_start=process_start(me), ssh_port=2222)
    vmdir.save(state)
    return vmdir, state


def fake_qemu(monkeypatch: pytest.MonkeyPatch, status: str) -> list[str]:
    sent: list[str] = []
    monkeypatch.setattr(qemu, "run_status", lambda sock: "running" if "cont" in sent else status)
    monkeypatch.setattr(qemu, "qmp", lambda sock, command, **kw: sent.append(command))
    return sent


def test_a_paused_vm_is_resumed(alive: tuple[VMDir, VMState], monkeypatch: pytest.MonkeyPatch) -> None:
    vmdir, state = alive
    sent = fake_qemu(monkeypatch, "paused")
    warned: list[str] = []
    monkeypatch.setattr(lifecycle.output, "warn", warned.append)
    assert lifecycle.unpause(vmdir, state) is False
    assert sent == ["cont"] and "resumed it" in warned[0]
    assert vmdir.held is False  # the lock it took for that is let go
    # `running()` (ssh, deploy, rollback, generations, watch) goes through it.
    sent.clear()
    monkeypatch.setattr(qemu, "run_status", lambda sock: "paused")
    lifecycle.running(vmdir)
    assert sent == ["cont"]


@pytest.mark.parametrize("status", ["running", "io-error", None])
def test_a_vm_not_paused_by_a_stop_is_left_alone(
    alive: tuple[VMDir, VMState], monkeypatch: pytest.MonkeyPatch, status: str | None
) -> None:
    vmdir, state = alive
    sent = fake_qemu(monkeypatch, status)  # type: ignore[arg-type]
    assert lifecycle.unpause(vmdir, state) is False and sent == []


def test_a_paused_vm_another_command_holds_is_left_paused(
    alive: tuple[VMDir, VMState], monkeypatch: pytest.MonkeyPatch
) -> None:
    """It may be a snapshot's own short pause: not resumed, shown paused."""
    vmdir, state = alive
    sent = fake_qemu(monkeypatch, "paused")
    fd = os.open(vmdir.file("lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert lifecycle.unpause(vmdir, state) is True and sent == []
        monkeypatch.setenv("REHEARSE_STATE_DIR", str(vmdir.path.parent))
        lifecycle.status(as_json=True)
        assert sent == []
    finally:
        os.close(fd)
    # Under its own lock (deploy, snapshot, down …) a command resumes it directly.
    with vmdir.locked("test"):
        assert lifecycle.unpause(vmdir, state) is False and sent == ["cont"]


def test_status_shows_a_paused_vm_it_could_not_resume(
    alive: tuple[VMDir, VMState], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    vmdir, _ = alive
    monkeypatch.setenv("REHEARSE_STATE_DIR", str(vmdir.path.parent))
    monkeypatch.setattr(qemu, "run_status", lambda sock: "paused")
    monkeypatch.setattr(qemu, "qmp", lambda sock, command, **kw: (_ for _ in ()).throw(OSError("refused")))
    lifecycle.status(as_json=True)
    assert '"state": "paused"' in capsys.readouterr().out

"""Snapshots end to end on one booted VM (issue 15): a live snapshot, then a
file written in the guest and a change deployed; `restore` brings the disk
(the file is gone, the generations are the saved ones) and the saved system
back, booted. A snapshot of the powered-off VM, the listing, `status`'s
count, deletion, and the errors a user can hit."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from rehearse.host import qemu as qemu
from rehearse.store.state import VMDir
from tests.e2e.conftest import Config, Rehearse, booted

pytestmark = pytest.mark.e2e

NAME = "snap"


@pytest.fixture(scope="module")
def vm(rehearse: Rehearse, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    yield from booted(rehearse, tmp_path_factory, NAME)


def run(rehearse: Rehearse, command: str) -> str:
    result = rehearse("ssh", NAME, "--", command)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def snapshots(rehearse: Rehearse) -> list[dict[str, Any]]:
    result = rehearse("snapshots", NAME, "--json")
    assert result.returncode == 0, result.stderr
    data: list[dict[str, Any]] = json.loads(result.stdout)
    return data


def generations(rehearse: Rehearse) -> list[dict[str, Any]]:
    result = rehearse("generations", NAME, "--json")
    assert result.returncode == 0, result.stderr
    data: list[dict[str, Any]] = json.loads(result.stdout)
    return data


def on_disk(rehearse: Rehearse) -> list[dict[str, Any]]:
    disk = rehearse.state / NAME / "disk.qcow2"
    info = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(disk)], capture_output=True, text=True, check=True
    )
    data: list[dict[str, Any]] = json.loads(info.stdout).get("snapshots", [])
    return data


def tags_on_disk(rehearse: Rehearse) -> list[str]:
    return [s["name"] for s in on_disk(rehearse)]


def test_restore_brings_back_the_disk_and_the_saved_system(rehearse: Rehearse, vm: Config) -> None:
    saved = run(rehearse, "readlink /run/current-system")
    gens = generations(rehearse)
    result = rehearse("snapshot", NAME, "before")
    assert result.returncode == 0, result.stderr
    assert "taken live" in result.stderr
    [snap] = snapshots(rehearse)
    assert (snap["tag"], snap["system"], snap["live"], snap["on_disk"]) == ("before", saved, True, True)
    assert tags_on_disk(rehearse) == ["before"]
    assert rehearse.vm(NAME)["snapshots"] == 1
    # The VM went on after the snapshot: a file, and a deploy.
    run(rehearse, "echo after > /root/after-snapshot && sync")
    vm.set('  environment.etc."snapshot-test".text = "deployed after the snapshot";')
    deployed = rehearse("deploy", NAME, "--yes")
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    new = run(rehearse, "readlink /run/current-system")
    assert new != saved and len(generations(rehearse)) > len(gens)

    result = rehearse("restore", NAME, "before", "--timeout", "30")
    assert result.returncode == 0, result.stderr[-3000:]
    assert run(rehearse, "test -e /root/after-snapshot && echo there || echo gone") == "gone"
    assert run(rehearse, "readlink /run/current-system") == saved
    assert run(rehearse, "test -e /etc/snapshot-test && echo there || echo gone") == "gone"
    assert [g["generation"] for g in generations(rehearse)] == [g["generation"] for g in gens]
    status = rehearse.vm(NAME)
    assert status["state"] == "running" and status["system"] == saved
    # The snapshot stays: it can be restored again.
    assert [s["tag"] for s in snapshots(rehearse)] == ["before"]


def test_a_powered_off_vm_is_snapshotted_too_and_snapshots_are_deleted(rehearse: Rehearse, vm: Config) -> None:
    assert rehearse("down", NAME, "--timeout", "30").returncode == 0
    result = rehearse("snapshot", NAME, "off")
    assert result.returncode == 0, result.stderr
    assert "of the powered-off VM" in result.stderr
    assert [(s["tag"], s["live"]) for s in snapshots(rehearse)] == [("before", True), ("off", False)]
    # Listed as a table too.
    table = rehearse("snapshots", NAME).stdout
    assert table.splitlines()[0].split() == ["TAG", "TAKEN", "DISK", "SYSTEM"] and "off" in table
    assert rehearse("up", NAME).returncode == 0
    for tag in ("off", "before"):
        result = rehearse("snapshot", NAME, tag, "--delete")
        assert result.returncode == 0, result.stderr
    assert snapshots(rehearse) == [] and tags_on_disk(rehearse) == []
    assert rehearse.vm(NAME)["snapshots"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["restore", NAME, "nope"], f"{NAME} has no snapshot 'nope'"),
        (["snapshot", NAME, "nope", "--delete"], f"{NAME} has no snapshot 'nope'"),
        (["snapshot", NAME, "bad tag"], "invalid snapshot tag 'bad tag'"),
        (["snapshot", NAME, "--delete"], "`--delete` needs its tag"),
        (["snapshot", "no-such-vm"], "no-such-vm"),
    ],
)
def test_snapshot_errors_change_nothing(rehearse: Rehearse, vm: Config, args: list[str], message: str) -> None:
    before = rehearse.vm(NAME)
    result = rehearse(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    after = rehearse.vm(NAME)
    assert (after["state"], after["system"], after["pid"]) == (before["state"], before["system"], before["pid"])


def test_a_tag_is_taken_once(rehearse: Rehearse, vm: Config) -> None:
    assert rehearse("snapshot", NAME, "once").returncode == 0
    result = rehearse("snapshot", NAME, "once")
    assert result.returncode == 2 and "has a snapshot 'once' already" in result.stderr
    assert rehearse("snapshot", NAME, "once", "--delete").returncode == 0


def test_a_tag_that_spells_another_snapshots_id_restores_its_own(rehearse: Rehearse, vm: Config) -> None:
    """Issue 22: qcow2 gives each snapshot an ID too, and `qemu-img snapshot
    -a` takes IDs before tags: `restore NAME 1` once restored the snapshot
    whose ID is 1."""
    run(rehearse, "echo first > /root/marker")
    assert rehearse("snapshot", NAME, "b").returncode == 0
    [first] = on_disk(rehearse)
    tag = first["id"]  # the ID QEMU gave "b" is the next snapshot's tag
    run(rehearse, "echo second > /root/marker")
    assert rehearse("snapshot", NAME, tag).returncode == 0
    b, second = on_disk(rehearse)
    assert (b["id"], b["name"], second["name"]) == (tag, "b", tag) and second["id"] != tag
    run(rehearse, "echo third > /root/marker")
    result = rehearse("restore", NAME, tag, "--timeout", "30")
    assert result.returncode == 0, result.stderr[-3000:]
    assert run(rehearse, "cat /root/marker") == "second"
    assert rehearse("snapshot", NAME, tag, "--delete").returncode == 0
    assert tags_on_disk(rehearse) == ["b"]
    assert rehearse("snapshot", NAME, "b", "--delete").returncode == 0


def test_a_vm_left_paused_is_resumed_by_the_next_command(rehearse: Rehearse, vm: Config) -> None:
    """What a `snapshot` killed between its QMP `stop` and `cont` leaves: a
    paused VM. `status` resumes it; so does a `snapshot` (which would else
    wait for the frozen guest's sync)."""
    sock = VMDir(NAME, rehearse.state).socket("qmp.sock")
    qemu.qmp(sock, "stop")
    assert qemu.run_status(sock) == "paused"
    result = rehearse("status", "--json")
    assert result.returncode == 0 and "was paused" in result.stderr and "resumed it" in result.stderr
    assert next(v for v in json.loads(result.stdout) if v["name"] == NAME)["state"] == "running"
    assert qemu.run_status(sock) == "running"
    assert run(rehearse, "echo answers") == "answers"

    qemu.qmp(sock, "stop")
    result = rehearse("snapshot", NAME, "unpaused")
    assert result.returncode == 0 and "resumed it" in result.stderr, result.stderr
    assert qemu.run_status(sock) == "running"
    assert rehearse("snapshot", NAME, "unpaused", "--delete").returncode == 0

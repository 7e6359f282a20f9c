"""Faults in the middle of a deploy, end to end on one booted VM: each must
leave the VM on its old system or on the new one, never in between."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Config, Rehearse, booted, oneshot

pytestmark = pytest.mark.e2e

NAME = "faults"


@pytest.fixture(scope="module")
def vm(rehearse: Rehearse, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    yield from booted(rehearse, tmp_path_factory, NAME)


def sh(rehearse: Rehearse, line: str) -> subprocess.CompletedProcess[str]:
    """A shell line in the guest (rehearse ssh joins words as ssh does)."""
    return rehearse("ssh", NAME, "--", line)


def current(rehearse: Rehearse) -> str:
    return sh(rehearse, "readlink /run/current-system").stdout.strip()


def generations(rehearse: Rehearse) -> list[int]:
    result = rehearse("generations", NAME, "--json")
    assert result.returncode == 0, result.stderr
    return [g["generation"] for g in json.loads(result.stdout)]


def processes(needle: str, also: str = "") -> list[int]:
    """Pids of processes whose command line contains `needle` (and `also`:
    this test's VM directory, so that nothing of another test's VM, which may
    run beside this one, is ever counted or killed)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmd and also in cmd:
            found.append(int(entry))
    return found


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def deploy_popen(rehearse: Rehearse, *args: str) -> subprocess.Popen[str]:
    """A deploy in its own process group, so a test can kill it whole."""
    return rehearse.popen("deploy", NAME, "--yes", *args, new_session=True)


def blob(tag: str, mib: int) -> str:
    return f'  environment.etc."blob".source = pkgs.runCommand "blob-{tag}" {{ }} "head -c {mib}M /dev/urandom > $out";'


def test_replaced_host_key_is_refused_as_an_impostor(rehearse: Rehearse, vm: Config, tmp_path: Path) -> None:
    before, gens = current(rehearse), generations(rehearse)
    vmdir = rehearse.state / NAME
    key = "/var/lib/rehearse/ssh_host_ed25519_key"
    # Through the SSH master (an established connection): give rehearse-sshd another
    # host key; SIGHUP makes sshd re-exec and load it (no preStart runs).
    swap = sh(
        rehearse,
        f"set -e; cp {key} /root/pinned_key; ssh-keygen -q -t ed25519 -N '' -f /root/other_key; "
        f"cp /root/other_key {key}; cp /root/other_key.pub {key}.pub; "
        "systemctl kill -s HUP --kill-whom=main rehearse-sshd.service; cat /root/other_key.pub",
    )
    assert swap.returncode == 0, swap.stderr
    other_known = tmp_path / "known_hosts"
    other_known.write_text(f"rehearse-{NAME} " + " ".join(swap.stdout.split()[:2]) + "\n")
    subprocess.run(
        ["ssh", "-o", f"ControlPath={vmdir / 'ssh.ctl'}", "-O", "exit", "x"], capture_output=True, check=False
    )
    vm.set('  environment.etc."motd".text = "impostor";')
    time.sleep(1)  # sshd's re-exec
    result = rehearse("deploy", NAME, "--yes")
    assert result.returncode == 1, result.stderr
    assert "did not show the host key rehearse pinned" in result.stderr and "impostor" in result.stderr
    assert "Traceback" not in result.stderr
    # Look inside with the other key pinned: nothing was deployed; put the pinned key back.
    port = rehearse.vm(NAME)["ssh"].split(":")[1]
    restore = subprocess.run(
        ["ssh", "-F", "none", "-p", port, "-i", str(vmdir / "id_ed25519"), "-o", "IdentitiesOnly=yes",
         "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={other_known}", "-o", f"HostKeyAlias=rehearse-{NAME}",
         "-o", "StrictHostKeyChecking=yes", "-o", "ControlPath=none", "root@127.0.0.1",
         f"readlink /run/current-system; ssh-keygen -y -f /root/pinned_key > {key}.pub; "
         f"cp /root/pinned_key {key}; systemctl kill -s HUP --kill-whom=main rehearse-sshd.service"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert restore.returncode == 0, restore.stderr
    assert restore.stdout.strip() == before
    time.sleep(1)
    assert current(rehearse) == before and generations(rehearse) == gens


def test_copy_is_refused_when_the_guest_store_is_full(rehearse: Rehearse, vm: Config) -> None:
    before, gens = current(rehearse), generations(rehearse)
    fill = sh(
        rehearse,
        "avail=$(df -P -B1 /nix/store | tail -n 1 | awk '{print $4}'); "
        "fallocate -l $((avail - 4 * 1024 * 1024)) /nix/.rw-store/fill && df -P -B1 /nix/store | tail -n 1",
    )
    assert fill.returncode == 0, fill.stderr
    try:
        vm.set(blob("full", 8))
        result = rehearse("deploy", NAME, "--yes", "--copy")
        assert result.returncode == 1, result.stderr
        assert "the VM's store has" in result.stderr and "free; copying the" in result.stderr
        assert "MiB" in result.stderr and "Nothing was changed" in result.stderr
        assert current(rehearse) == before and generations(rehearse) == gens
    finally:
        assert sh(rehearse, "rm -f /nix/.rw-store/fill").returncode == 0


def test_copy_killed_half_way_then_retried(rehearse: Rehearse, vm: Config) -> None:
    vm.set(blob("killed", 48))
    proc = deploy_popen(rehearse, "--copy")
    try:
        # its ssh (named by this VM's key) runs the other side of the copy
        wait_for(lambda: processes("nix-store --serve", str(rehearse.state / NAME)), 300, "nix-copy-closure")
        time.sleep(1.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    retry = rehearse("deploy", NAME, "--yes", "--copy")
    assert retry.returncode == 0, retry.stderr
    blob_path = sh(rehearse, "readlink -f /etc/blob").stdout.strip()
    assert sh(rehearse, f"test -f /nix/.rw-store/store/{blob_path.removeprefix('/nix/store/')}").returncode == 0
    verify = sh(rehearse, "nix-store --verify --check-contents 2>&1")
    assert verify.returncode == 0, verify.stdout
    assert "corrupt" not in verify.stdout and "modified" not in verify.stdout


def test_dropped_session_during_activation_is_reconnected_and_confirmed(rehearse: Rehearse, vm: Config) -> None:
    """The session following the activation dies mid-switch: the activation
    goes on in the guest, rehearse reconnects, verifies and confirms."""
    vm.set('  environment.etc."motd".text = "dropped";\n' + oneshot("slowstart", "sleep 8"))
    proc = deploy_popen(rehearse, "--confirm-timeout", "30")
    ctl = str(rehearse.state / NAME / "ssh.ctl")
    mine = str(rehearse.state / NAME)
    wait_for(lambda: processes("tail -n +1 -f", mine), 300, "the session following the activation")
    time.sleep(3)  # inside the switch: slowstart takes 8 s
    for pid in processes("tail -n +1 -f", mine) + processes(f"{ctl} [mux]"):
        os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "dropped during the activation; reconnecting" in err
    assert sh(rehearse, "cat /etc/motd").stdout == "dropped"
    newest = 'cat "$(ls -d /run/rehearse/*/ | sort | tail -n 1)result"'
    assert sh(rehearse, newest).stdout.strip() == "confirmed"
    assert sh(rehearse, "systemctl is-active slowstart.service").stdout.strip() == "active"


def test_deployer_killed_after_the_switch_then_a_new_deploy(rehearse: Rehearse, vm: Config) -> None:
    """The first activation waits for a confirmation that never comes; the
    second deploy settles it (rolled back) before its own switch, and the
    first's timer can no longer undo the second."""
    vm.set('  environment.etc."motd".text = "first";')
    proc = deploy_popen(rehearse, "--confirm-timeout", "20")
    assert proc.stderr is not None
    for line in proc.stderr:
        if "setting up /etc" in line:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    vm.set('  environment.etc."motd".text = "second";')
    result = rehearse("deploy", NAME, "--yes", "--json")
    assert result.returncode == 0, result.stderr
    assert "an earlier activation" in result.stderr and "It was rolled back first" in result.stderr
    second = json.loads(result.stdout)["new_system"]
    assert current(rehearse) == second
    time.sleep(25)  # past the first activation's confirmation window
    assert current(rehearse) == second
    assert sh(rehearse, "cat /etc/motd").stdout == "second"
    verdicts = sh(rehearse, "for d in $(ls -d /run/rehearse/*/ | sort | tail -n 2); do cat $d/result; done")
    assert verdicts.stdout.split("\n")[:2] == ["rolled-back superseded 0", "confirmed"], verdicts.stdout


def test_slow_healthy_activation_is_not_rolled_back(rehearse: Rehearse, vm: Config) -> None:
    """The confirmation window starts when the switch ends."""
    vm.set('  environment.etc."motd".text = "slow";\n' + oneshot("slow", "sleep 25"))
    t0 = time.monotonic()
    result = rehearse("deploy", NAME, "--yes", "--confirm-timeout", "10")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - t0 > 25
    assert sh(rehearse, "systemctl is-active slow.service").stdout.strip() == "active"
    assert sh(rehearse, "cat /etc/motd").stdout == "slow"


def test_activation_over_its_timeout_is_rolled_back(rehearse: Rehearse, vm: Config) -> None:
    before = current(rehearse)
    vm.set('  environment.etc."motd".text = "hangs";\n' + oneshot("hangs", "sleep 300"))
    result = rehearse("deploy", NAME, "--yes", "--activation-timeout", "10", "--json")
    assert result.returncode == 4, result.stderr
    report = json.loads(result.stdout)
    assert report["reason"].startswith("activation-timeout-10s"), report
    assert current(rehearse) == before
    assert sh(rehearse, "cat /etc/motd").stdout == "slow"


def test_state_is_reconciled_when_the_deployer_died_before_saving(rehearse: Rehearse, vm: Config) -> None:
    """Confirmed in the guest, but rehearse died before it wrote its state:
    the next command records what the VM really runs, and a restart boots it."""
    state_file = rehearse.state / NAME / "state.json"
    stale = state_file.read_text()
    vm.set('  environment.etc."motd".text = "unsaved";')
    result = rehearse("deploy", NAME, "--yes")
    assert result.returncode == 0, result.stderr
    deployed = current(rehearse)
    state_file.write_text(stale)  # as if the deployer had died before saving
    assert json.loads(stale)["system"] != deployed
    down = rehearse("down", NAME)
    assert down.returncode == 0, down.stderr
    assert "Recorded what runs" in down.stderr
    assert json.loads(state_file.read_text())["system"] == deployed
    up = rehearse("up", NAME)
    assert up.returncode == 0, up.stderr
    assert current(rehearse) == deployed
    assert sh(rehearse, "cat /etc/motd").stdout == "unsaved"


def test_killed_qemu_is_seen_as_crashed_and_comes_back(rehearse: Rehearse, vm: Config) -> None:
    assert sh(rehearse, "echo kept > /root/marker; sync").returncode == 0
    deployed = current(rehearse)
    os.kill(rehearse.vm(NAME)["pid"], signal.SIGKILL)
    time.sleep(0.5)
    status = rehearse.vm(NAME)
    assert status["state"] == "crashed" and status["pid"] is None
    assert "crashed" in rehearse("status").stdout
    stopped = sh(rehearse, "true")
    assert stopped.returncode == 6
    up = rehearse("up", NAME)
    assert up.returncode == 0, up.stderr
    assert rehearse.vm(NAME)["state"] == "running"
    assert sh(rehearse, "cat /root/marker").stdout == "kept\n"
    assert current(rehearse) == deployed

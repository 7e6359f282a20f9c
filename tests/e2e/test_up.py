"""`rehearse up` and the VM lifecycle, end to end against VMs booted from the mini nixpkgs."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rehearse.store.state import process_start
from tests.conftest import MINI_NIXPKGS, REPO, fixed_fripon
from tests.e2e.conftest import Rehearse, include, reaches_host

pytestmark = pytest.mark.e2e


def listening_addresses(port: int) -> set[str]:
    """The local addresses on which something listens on TCP `port` (from /proc/net/tcp{,6})."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            addr, hexport = fields[1].rsplit(":", 1)
            if int(hexport, 16) == port and fields[3] == "0A":  # LISTEN
                if len(addr) == 8:
                    found.add(".".join(str(int(addr[i : i + 2], 16)) for i in (6, 4, 2, 0)))
                else:
                    found.add(addr)
    return found


@pytest.fixture(scope="module")
def classic(rehearse: Rehearse) -> Iterator[str]:
    t0 = time.monotonic()
    result = rehearse(
        "up", str(REPO / "examples" / "fripon-vm" / "configuration.nix"), *include(), "--forward", "18080:80"
    )
    print(f"rehearse up (classic, cold): {time.monotonic() - t0:.1f} s")
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip() == "rehearse ssh fripon"
    yield "fripon"


def test_ssh_runs_a_command(rehearse: Rehearse, classic: str) -> None:
    result = rehearse("ssh", classic, "--", "hostname")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "fripon"


def test_ssh_joins_words_for_the_remote_shell_as_openssh_does(rehearse: Rehearse, classic: str) -> None:
    result = rehearse("ssh", classic, "--", "uname -s; systemctl is-system-running")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["Linux", "running"]
    assert rehearse("ssh", classic, "echo", "a", "b", "$HOME").stdout == "a b /root\n"  # no -- needed
    assert rehearse("ssh", classic, "--", "echo", "'a  b'").stdout == "a  b\n"
    assert rehearse("ssh", classic, "--", "exit 3").returncode == 3  # the remote command's exit code


def test_first_connection_was_strict(rehearse: Rehearse, classic: str) -> None:
    vmdir = rehearse.state / classic
    known = (vmdir / "known_hosts").read_text().split()
    host_pub = (vmdir / "ssh_host_ed25519_key.pub").read_text().split()
    assert known == ["rehearse-fripon", host_pub[0], host_pub[1]]
    # A key rehearse did not pin is refused: strict checking, no trust on first use.
    (vmdir / "known_hosts").write_text(
        "rehearse-fripon ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBcMf4b6wzI2gbi7LJ3xLZL6pKVjT1L7Mm0YPSoqHpqU\n"
    )
    try:
        port = rehearse.vm(classic)["ssh"].split(":")[1]
        probe = subprocess.run(
            [
                "ssh",
                "-p",
                port,
                "-i",
                str(vmdir / "id_ed25519"),
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                f"UserKnownHostsFile={vmdir / 'known_hosts'}",
                "-o",
                "HostKeyAlias=rehearse-fripon",
                "-o",
                "ControlPath=none",
                "root@127.0.0.1",
                "true",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert probe.returncode != 0
        assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in probe.stderr or "verification failed" in probe.stderr
    finally:
        (vmdir / "known_hosts").write_text(" ".join(known) + "\n")
    for path in ("id_ed25519", "known_hosts", "ssh_host_ed25519_key", "state.json"):
        assert (vmdir / path).stat().st_mode & 0o077 == 0, path
    assert vmdir.stat().st_mode & 0o777 == 0o700


def test_forwards_listen_on_loopback_only(rehearse: Rehearse, classic: str) -> None:
    vm = rehearse.vm(classic)
    ssh_port = int(vm["ssh"].split(":")[1])
    assert listening_addresses(ssh_port) == {"127.0.0.1"}
    assert listening_addresses(18080) == {"127.0.0.1"}


def test_a_guest_reaches_the_hosts_loopback_unless_isolated(rehearse: Rehearse, classic: str) -> None:
    """What the README's security section says: on QEMU's user network the
    guest reaches a service bound to the host's 127.0.0.1 as 10.0.2.2
    (test_security.py's isolated VM does not)."""
    assert rehearse.vm(classic)["isolated"] is False
    assert reaches_host(rehearse, classic)


def test_status_json(rehearse: Rehearse, classic: str) -> None:
    vm = rehearse.vm(classic)
    assert vm["state"] == "running"
    assert isinstance(vm["pid"], int) and process_start(vm["pid"]) is not None
    assert vm["system"].endswith("-nixos-system-fripon-25.11pre-mini")
    current = rehearse("ssh", classic, "--", "readlink", "/run/current-system")
    assert current.stdout.strip() == vm["system"]


def test_dead_ssh_master_is_replaced(rehearse: Rehearse, classic: str) -> None:
    vmdir = rehearse.state / classic
    assert rehearse("ssh", classic, "--", "true").returncode == 0
    check = subprocess.run(
        ["ssh", "-o", f"ControlPath={vmdir / 'ssh.ctl'}", "-O", "check", "root@127.0.0.1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "Master running" in check.stderr, check.stderr
    master_pid = int(check.stderr.split("pid=")[1].split(")")[0])
    os.kill(master_pid, signal.SIGKILL)  # the socket file stays behind, stale
    time.sleep(0.2)
    assert (vmdir / "ssh.ctl").exists()
    result = rehearse("ssh", classic, "--", "hostname", timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "fripon"


def test_console_shows_the_serial_log(rehearse: Rehearse, classic: str) -> None:
    result = rehearse("console", classic)
    assert result.returncode == 0
    assert "Linux version" in result.stdout


def test_up_again_changes_nothing(rehearse: Rehearse, classic: str, tmp_path: Path) -> None:
    before = rehearse.vm(classic)
    result = rehearse("up", str(REPO / "examples" / "fripon-vm" / "configuration.nix"), *include())
    assert result.returncode == 0, result.stderr
    assert "already running" in result.stderr
    assert rehearse.vm(classic)["pid"] == before["pid"]
    # Another file under its name is said, not "nothing changed" (issue 24, item 3).
    other = fixed_fripon(tmp_path / "other")
    result = rehearse("up", str(other), *include())
    assert result.returncode == 2, result.stderr
    assert (
        f"VM fripon was made from {REPO / 'examples' / 'fripon-vm' / 'configuration.nix'}, not {other}" in result.stderr
    )
    assert f"`rehearse deploy fripon {other}`" in result.stderr and "--name OTHER" in result.stderr
    assert rehearse.vm(classic)["pid"] == before["pid"]


def test_ssh_like_ssh_cp_and_ssh_config(rehearse: Rehearse, classic: str, tmp_path: Path) -> None:
    """Issue 24, item 13: ssh's -L reaches ssh; files copied both ways; the user's own ssh with ssh-config."""
    config = tmp_path / "ssh_config"
    config.write_text(rehearse("ssh-config", classic).stdout)
    mine = subprocess.run(
        ["ssh", "-F", str(config), "-o", "BatchMode=yes", classic, "hostname"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert mine.returncode == 0 and mine.stdout.strip() == "fripon", mine.stderr
    (tmp_path / "sent").write_text("from the host\n")
    sent = rehearse("cp", str(tmp_path / "sent"), f"{classic}:/root/received")
    assert sent.returncode == 0, sent.stderr
    assert rehearse("ssh", classic, "--", "cat", "/root/received").stdout == "from the host\n"
    back = rehearse("cp", f"{classic}:/root/received", str(tmp_path / "back"))
    assert back.returncode == 0 and (tmp_path / "back").read_text() == "from the host\n", back.stderr
    # -L before the name: the VM's management sshd answers on the forwarded port.
    forwarding = rehearse.popen("ssh", "-L", "18622:127.0.0.1:64022", classic, "--", "sleep", "60")
    try:
        deadline = time.monotonic() + 30
        banner = b""
        while not banner.startswith(b"SSH-2.0"):
            assert time.monotonic() < deadline and forwarding.poll() is None, forwarding.stderr
            time.sleep(0.5)
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 18622), timeout=5) as c:
                banner = c.recv(64)
    finally:
        forwarding.kill()
        forwarding.communicate()


def test_down_then_up_then_destroy(rehearse: Rehearse, classic: str) -> None:
    pid = rehearse.vm(classic)["pid"]
    result = rehearse("down", classic)
    assert result.returncode == 0, result.stderr
    assert "powered off" in result.stderr  # ACPI power button over QMP, not a kill
    vm = rehearse.vm(classic)
    assert vm["state"] == "stopped" and vm["pid"] is None and vm["ssh"] is None
    assert process_start(pid) is None  # gone (or a zombie waiting for init to reap it)
    stopped = rehearse("ssh", classic, "--", "true")
    assert stopped.returncode == 6 and "is not running" in stopped.stderr  # 6: not running
    assert f"rehearse up {classic}" in stopped.stderr
    # Restarted by name, with no configuration given and none evaluated.
    t0 = time.monotonic()
    result = rehearse("up", classic, env=rehearse.env(NIX_PATH=""))
    print(f"rehearse up NAME (warm, built): {time.monotonic() - t0:.1f} s")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "building" not in result.stderr
    assert result.stdout.strip() == f"rehearse ssh {classic}"
    assert rehearse("ssh", classic, "--", "hostname").stdout.strip() == "fripon"
    assert listening_addresses(18080) == {"127.0.0.1"}  # the recorded --forward came back
    result = rehearse("destroy", classic)
    assert result.returncode == 0, result.stderr
    assert not (rehearse.state / classic).exists()
    assert all(v["name"] != classic for v in rehearse.status())


def test_flake_up_and_concurrent_up_leave_one_vm(rehearse: Rehearse, tmp_path: Path) -> None:
    fixed_fripon(tmp_path / "conf")
    (tmp_path / "flake.nix").write_text(
        '{ inputs.nixpkgs.url = "path:%s";\n'
        "  outputs = { self, nixpkgs }: {\n"
        "    nixosConfigurations.fripon = nixpkgs.lib.nixosSystem {\n"
        "      modules = [ ./conf/configuration.nix ]; };\n"
        "  }; }\n" % MINI_NIXPKGS
    )
    ref = f"{tmp_path}#fripon"
    first = rehearse.popen("up", "--flake", ref, "--name", "flakey")
    time.sleep(1.0)
    second = rehearse.popen("up", "--flake", ref, "--name", "flakey")
    _, err2 = second.communicate(timeout=600)
    _, err1 = first.communicate(timeout=600)
    codes = sorted([first.returncode, second.returncode])
    assert codes == [0, 7], (err1[-2000:], err2[-2000:])  # 7: busy
    assert "busy" in (err1 + err2)
    vms = [v for v in rehearse.status() if v["name"] == "flakey"]
    assert len(vms) == 1 and vms[0]["state"] == "running"
    qemus = [p for p in os.listdir("/proc") if p.isdigit() and _is_qemu_of(p, rehearse.state / "flakey")]
    assert len(qemus) == 1
    assert rehearse("ssh", "flakey", "--", "hostname").stdout.strip() == "fripon"
    assert rehearse("destroy", "flakey").returncode == 0


def _is_qemu_of(pid: str, vmdir: Path) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"qemu-system" in cmd and str(vmdir).encode() in cmd

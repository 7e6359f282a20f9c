"""End to end: the mini nixpkgs's VM runner boots the rig's guest, and a
system built on the host later is activated inside the running guest after
`nix-store --load-db` registration, without copying it."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import MINI_NIXPKGS, fixed_fripon, run

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Guest:
    dir: Path
    port: int
    proc: subprocess.Popen[bytes]

    def ssh_argv(self, *command: str) -> list[str]:
        return [
            "ssh", "-p", str(self.port), "-i", str(self.dir / "id"), "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.dir / 'known_hosts'}", "-o", "ConnectTimeout=5",
            "root@127.0.0.1", "--", *command,
        ]  # fmt: skip

    def ssh(self, *command: str, input: str | bytes | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.ssh_argv(*command), capture_output=True, text=True, check=False, input=input)


def guest_config(dir: Path, extra: str = "") -> Path:
    """fripon, with the test's key authorized and a host key from /tmp/shared
    (made by the test, so the first connection is checked strictly)."""
    pub = (dir / "id.pub").read_text().strip()
    return fixed_fripon(
        dir / "conf",
        extra=f"""
  users.users.root.openssh.authorizedKeys.keys = [ "{pub}" ];
  virtualisation.vmVariant.services.openssh.hostKeys = lib.mkForce [ {{ type = "ed25519"; path = "/tmp/shared/host_key"; }} ];
{extra}""",
    )


def start_runner(d: Path, vm: Path, net_opts: str) -> subprocess.Popen[bytes]:
    """fripon's VM runner started as a user starts it, in `d` (its shared
    directory d/shared, console in d/console.log, output in d/runner.log)."""
    env = {
        **os.environ,
        "QEMU_NET_OPTS": net_opts,
        "QEMU_OPTS": f"-display none -serial file:{d / 'console.log'}",
        "SHARED_DIR": str(d / "shared"),
        "TMPDIR": str(d),
        "USE_TMPDIR": "1",
    }
    return subprocess.Popen(
        [vm / "bin" / "run-fripon-vm"],
        cwd=d,
        env=env,
        stdout=open(d / "runner.log", "wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def stop_runner(proc: subprocess.Popen[bytes]) -> None:
    """End a runner started by start_runner (QEMU killed after 20 s)."""
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def build(conf: Path, attr: str) -> Path:
    expr = f"(import <nixpkgs/nixos> {{ configuration = {conf}; }}).{attr}"
    result = run(["nix-build", "--no-out-link", "-I", f"nixpkgs={MINI_NIXPKGS}", "-E", expr])
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(result.stdout.strip())


@pytest.fixture(scope="module")
def guest(guest_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    d = tmp_path_factory.mktemp("rig-guest")
    (d / "shared").mkdir()
    for key, comment in (("id", "test"), ("shared/host_key", "fripon")):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(d / key)], check=True)
    port = free_port()
    host_pub = (d / "shared" / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    vm = build(guest_config(d), "vm")
    # NIX_DISK_IMAGE unset: the runner's default ./fripon.qcow2 in the current directory.
    proc = start_runner(d, vm, f"hostfwd=tcp:127.0.0.1:{port}-:22")
    g = Guest(d, port, proc)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 240:
        assert proc.poll() is None, (d / "runner.log").read_text() + (d / "console.log").read_text()[-3000:]
        if g.ssh("true").returncode == 0:
            break
        time.sleep(1)
    else:
        pytest.fail("no SSH after 240 s:\n" + (d / "console.log").read_text()[-3000:])
    print(f"rig guest: boot to SSH {time.monotonic() - t0:.1f} s")
    yield g
    stop_runner(proc)


def test_runner_made_the_default_disk_and_ssh_reaches_fripon(guest: Guest) -> None:
    assert (guest.dir / "fripon.qcow2").exists()  # ./<hostName>.qcow2 in the current directory
    result = guest.ssh("hostname")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "fripon"


def test_host_store_is_shared_with_an_overlay(guest: Guest) -> None:
    mounts = guest.ssh("cat", "/proc/mounts").stdout
    assert any(line.split()[1] == "/nix/.ro-store" and line.split()[2] == "9p" for line in mounts.splitlines())
    assert any(line.split()[1] == "/nix/store" and line.split()[2] == "overlay" for line in mounts.splitlines())
    current = guest.ssh("readlink", "/run/current-system").stdout.strip()
    assert current.startswith("/nix/store/") and current.endswith("-nixos-system-fripon-25.11pre-mini")
    assert guest.ssh("nix-store", "--check-validity", current).returncode == 0
    # The boot activated it (rig-activate: switch-to-configuration test, standing for NixOS's
    # stage 2) and, as on NixOS, left the system profile alone.
    assert guest.ssh("readlink", "/run/booted-system").stdout.strip() == current
    assert guest.ssh("cat", "/run/rig/activate-status").stdout.strip() == "0"
    assert guest.ssh("test", "-e", "/nix/var/nix/profiles/system").returncode != 0
    assert "vim 9.1.0707" in guest.ssh("vim").stdout  # /run/current-system/sw/bin on PATH


def register(guest: Guest, system: Path) -> None:
    """Register a system built on the host in the guest's Nix database."""
    closure = subprocess.run(["nix-store", "-qR", str(system)], capture_output=True, text=True, check=True)
    dump = subprocess.run(["nix-store", "--dump-db", *closure.stdout.split()], capture_output=True, check=True)
    loaded = subprocess.run(
        guest.ssh_argv("nix-store", "--load-db"), input=dump.stdout, capture_output=True, check=False
    )
    assert loaded.returncode == 0, loaded.stderr


def stc(guest: Guest, system: Path, action: str, *env: str) -> subprocess.CompletedProcess[str]:
    """SYSTEM/bin/switch-to-configuration ACTION in the guest, with env's VAR=VALUE."""
    return guest.ssh("env", *env, f"{system}/bin/switch-to-configuration", action)


def activate(guest: Guest, system: Path, action: str = "test") -> subprocess.CompletedProcess[str]:
    register(guest, system)
    assert guest.ssh("nix-env", "-p", "/nix/var/nix/profiles/system", "--set", str(system)).returncode == 0
    return stc(guest, system, action)


VM_TOPLEVEL = "config.virtualisation.vmVariant.system.build.toplevel"


def test_new_system_activated_in_running_guest_without_copy(guest: Guest) -> None:
    conf = guest_config(
        guest.dir,
        extra='  environment.etc."rig-probe".text = "built after boot";\n'
        "  environment.systemPackages = [ pkgs.hello ];",
    )
    system = build(conf, "config.virtualisation.vmVariant.system.build.toplevel")
    assert guest.ssh("nix-store", "--check-validity", str(system)).returncode != 0  # not registered yet
    dry = activate(guest, system, "dry-activate")
    assert dry.returncode == 0, dry.stderr
    result = activate(guest, system)
    assert result.returncode == 0, result.stdout + result.stderr
    assert guest.ssh("cat", "/etc/rig-probe").stdout == "built after boot"
    assert "hello 2.12.1" in guest.ssh("hello").stdout
    assert guest.ssh("readlink", "/run/current-system").stdout.strip() == str(system)
    # Nothing was copied: the path is not in the overlay's upper (RAM) layer.
    upper = f"/nix/.rw-store/store/{system.name}"
    assert guest.ssh("test", "-e", upper).returncode != 0


def test_failing_unit_makes_switch_exit_4(guest: Guest) -> None:
    conf = guest_config(
        guest.dir,
        extra="""  systemd.services.broken = {
    wantedBy = [ "multi-user.target" ];
    serviceConfig.Type = "oneshot";
    script = "echo about to fail; exit 3";
  };""",
    )
    system = build(conf, "config.virtualisation.vmVariant.system.build.toplevel")
    dry = activate(guest, system, "dry-activate")
    assert "would start the following units: broken.service" in dry.stderr
    result = activate(guest, system)
    assert result.returncode == 4, result.stdout + result.stderr
    assert "warning: the following units failed: broken.service" in result.stderr
    # Back to a healthy system: the unit is stopped and its failure cleared.
    good = build(guest_config(guest.dir), "config.virtualisation.vmVariant.system.build.toplevel")
    guest.ssh("systemctl", "reset-failed")
    assert activate(guest, good).returncode == 0


def test_services_get_nixos_path_timers_and_etc_owners_by_name(guest: Guest) -> None:
    # Issue 25: NixOS's default service PATH (no Debian /usr/bin), startAt's
    # timer, environment.etc.<n>.user/group by name (after the accounts), `other`.
    conf = guest_config(
        guest.dir,
        extra="""  systemd.services.forgets-path = {
    wantedBy = [ "multi-user.target" ];
    serviceConfig.Type = "oneshot";
    script = "python3 -c pass";
  };
  systemd.services.default-path = {
    wantedBy = [ "multi-user.target" ];
    serviceConfig = { Type = "oneshot"; RemainAfterExit = true; };
    script = "echo ok | grep ok | sed s/o/0/ > /run/default-path; find /run/default-path; systemctl --version > /dev/null";
  };
  systemd.services.tick = { script = "date"; startAt = "*:0/5"; };
  users.users.svc = { isSystemUser = true; group = "svc"; };
  users.groups.svc = { };
  environment.etc."svc.conf" = { text = "x"; mode = "0640"; user = "svc"; group = "svc"; };""",
    )
    system = build(conf, VM_TOPLEVEL)
    result = activate(guest, system)
    assert result.returncode == 4, result.stdout + result.stderr
    assert "warning: the following units failed: forgets-path.service" in result.stderr
    journal = guest.ssh("journalctl", "-u", "forgets-path.service", "--no-pager").stdout
    assert "python3: command not found" in journal
    assert guest.ssh("cat", "/run/default-path").stdout == "0k\n"
    assert guest.ssh("systemctl", "is-active", "tick.timer").stdout.strip() == "active"
    assert guest.ssh("stat", "-c", "%U:%G:%a", "/etc/svc.conf").stdout.strip() == "svc:svc:640"
    assert guest.ssh("readlink", "/etc/pam.d/other").stdout.strip() == "/etc/static/pam.d/other"
    # A program with no PAM file of its own gets `other`: pam_warn logs it, pam_deny refuses.
    assert guest.ssh("mv", "/etc/pam.d/su", "/etc/pam.d/su.rig-off").returncode == 0
    try:
        denied = guest.ssh("su", "-s", "/bin/sh", "root", "-c", "true")
    finally:
        guest.ssh("mv", "/etc/pam.d/su.rig-off", "/etc/pam.d/su")
    assert denied.returncode != 0
    assert "pam_warn(su:auth)" in guest.ssh("journalctl", "-b", "--no-pager", "-t", "su").stdout
    assert guest.ssh("su", "-s", "/bin/sh", "root", "-c", "true").returncode == 0  # Debian's su file: rootok
    good = build(guest_config(guest.dir), VM_TOPLEVEL)
    guest.ssh("systemctl", "reset-failed")
    assert activate(guest, good).returncode == 0


def test_server_options_and_a_failed_firewall_reload(guest: Guest) -> None:
    # Issue 25, items 6 and 9: what only a switch shows.
    conf = guest_config(
        guest.dir,
        extra="""  systemd.tmpfiles.rules = [ "d /var/lib/rig-tmpfiles 0750 root root -" ];
  users.users.rigling = { isNormalUser = true; linger = true; };
  systemd.timers.rig-tick = { wantedBy = [ "timers.target" ]; timerConfig.OnCalendar = "daily"; };
  systemd.services.rig-tick = { serviceConfig.Type = "oneshot"; script = "true"; };""",
    )
    result = activate(guest, build(conf, VM_TOPLEVEL))
    assert result.returncode == 0, result.stdout + result.stderr
    assert guest.ssh("stat", "-c", "%a", "/var/lib/rig-tmpfiles").stdout.strip() == "750"
    assert guest.ssh("test", "-e", "/var/lib/systemd/linger/rigling").returncode == 0
    # The switch started the timer (timers.target wants it); systemd took it.
    assert guest.ssh("systemctl", "is-active", "rig-tick.timer").stdout.strip() == "active"
    calendar = guest.ssh("systemctl", "show", "-p", "TimersCalendar", "rig-tick.timer").stdout
    assert "OnCalendar=*-*-* 00:00:00 ;" in calendar  # "daily", as systemd shows it
    # The iptables backend's reload: a start that fails stops the firewall.
    assert guest.ssh("nft", "list", "table", "inet", "nixos-fw").returncode == 0
    bad = build(guest_config(guest.dir, extra='  networking.firewall.extraCommands = "false";'), VM_TOPLEVEL)
    activate(guest, bad)
    assert guest.ssh("nft", "list", "table", "inet", "nixos-fw").returncode != 0
    journal = guest.ssh("journalctl", "-u", "firewall.service", "--no-pager").stdout
    assert "Failed to reload firewall... Stopping" in journal
    guest.ssh("systemctl", "reset-failed")
    assert activate(guest, build(guest_config(guest.dir), VM_TOPLEVEL)).returncode == 0
    assert guest.ssh("nft", "list", "table", "inet", "nixos-fw").returncode == 0


def current_system(guest: Guest) -> str:
    return guest.ssh("readlink", "/run/current-system").stdout.strip()


# switch-to-configuration-ng's message (src/main.rs), then its eprintln!'s newline.
INCOMPATIBLE_INIT = (
    "Warning: the new NixOS configuration has an \u2018init\u2019 that is\n"
    "incompatible with the current configuration.  The new configuration\n"
    "won't take effect until you reboot the system.\n\n"
)


def test_init_interface_change_exits_100(guest: Guest) -> None:
    before = current_system(guest)
    assert guest.ssh("cat", f"{before}/init-interface-version").stdout == "systemd 2"
    conf = guest_config(guest.dir, extra="  systemd.package = pkgs.systemd // { interfaceVersion = 3; };")
    system = build(conf, VM_TOPLEVEL)
    assert (system / "init-interface-version").read_text() == "systemd 3"
    register(guest, system)
    for action in ("dry-activate", "test", "switch"):
        result = stc(guest, system, action)
        assert result.returncode == 100, (action, result.stderr)
        assert result.stderr.endswith(INCOMPATIBLE_INIT), (action, result.stderr)
        assert "activating the configuration" not in result.stderr
        assert current_system(guest) == before
    assert "no boot loader to install (direct boot)" in stc(guest, system, "switch").stderr
    # boot ends before the comparison, as in NixOS: the new init is for the next boot.
    boot = stc(guest, system, "boot")
    assert boot.returncode == 0 and "incompatible" not in boot.stderr, boot.stderr
    assert current_system(guest) == before


def test_failing_pre_switch_check_stops_the_switch(guest: Guest) -> None:
    before = current_system(guest)
    conf = guest_config(
        guest.dir,
        extra="""  system.preSwitchChecks.a-ok = "echo ok-check $1 $2";
  system.preSwitchChecks.b-nope = "echo nope-check-ran; exit 3";
  environment.etc."rig-checked".text = "switched";""",
    )
    system = build(conf, VM_TOPLEVEL)
    register(guest, system)
    for action in ("test", "dry-activate", "switch", "boot", "check"):
        result = stc(guest, system, action)
        assert result.returncode == 1, (action, result.stderr)
        lines = result.stderr.splitlines()
        assert lines[-4:] == [
            f"ok-check {system} {action}",
            "nope-check-ran",
            "Pre-switch check 'b-nope' failed",
            "Pre-switch checks failed",
        ], (action, result.stderr)
        assert current_system(guest) == before
    assert guest.ssh("test", "-e", "/etc/rig-checked").returncode != 0
    # NIXOS_NO_CHECK=1 skips them; any other value does not.
    assert stc(guest, system, "test", "NIXOS_NO_CHECK=yes").returncode == 1
    skipped = stc(guest, system, "test", "NIXOS_NO_CHECK=1")
    assert skipped.returncode == 0, skipped.stderr
    assert "ok-check" not in skipped.stderr
    assert guest.ssh("cat", "/etc/rig-checked").stdout == "switched"
    assert current_system(guest) == str(system)
    assert stc(guest, system, "check", "NIXOS_NO_CHECK=1").returncode == 0
    good = build(guest_config(guest.dir), VM_TOPLEVEL)
    assert stc(guest, good, "check").returncode == 0
    assert stc(guest, good, "test").returncode == 0


def test_second_switch_does_not_wait_for_the_lock(guest: Guest) -> None:
    # switch-to-configuration-ng takes /run/nixos/switch-to-configuration.lock with
    # LockExclusiveNonblock: a second one fails at once, exit 11 (EWOULDBLOCK).
    good = Path(current_system(guest))
    conf = guest_config(guest.dir, extra='  system.preSwitchChecks.slow = "touch /run/slow-check-started; sleep 8";')
    slow = build(conf, VM_TOPLEVEL)
    register(guest, slow)
    guest.ssh("rm", "-f", "/run/slow-check-started")
    first = subprocess.Popen(
        guest.ssh_argv(f"{slow}/bin/switch-to-configuration", "test"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        t0 = time.monotonic()
        while guest.ssh("test", "-e", "/run/slow-check-started").returncode != 0:
            assert time.monotonic() - t0 < 30, "the first switch-to-configuration did not reach its check"
            time.sleep(0.3)
        t1 = time.monotonic()
        second = stc(guest, good, "test")
        waited = time.monotonic() - t1
        assert second.returncode == 11, second.stderr
        assert second.stderr.splitlines()[-1] == "Could not acquire lock"
        assert first.poll() is None and waited < 6, waited  # it did not wait for the first
        _, err = first.communicate(timeout=180)
        assert first.returncode == 0, err
    finally:
        if first.poll() is None:
            first.kill()
    assert current_system(guest) == str(slow)
    assert stc(guest, good, "test").returncode == 0

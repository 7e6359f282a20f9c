"""rig/server: the stand-in for a real NixOS server. It boots from its own disk through its
(emulated) boot loader, with a Nix store of its own (no host share); a new system reaches it
as it reaches a server (nix-copy-closure, switch-to-configuration), and the boot menu decides
what the next boot runs. One stand-in is booted for the module (and booted again once).

As on a real NixOS server, a user other than root reaches the store through the Nix daemon
(nix.settings.trusted-users decides who may copy unsigned paths) and root through sudo
(security.sudo): `deploy` is in wheel, trusted, and uses sudo without a password;
`intern` is neither trusted nor in wheel, and may use sudo with its password."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import MINI_NIXPKGS, REPO, fixed_fripon, run

pytestmark = pytest.mark.e2e

START = REPO / "rig" / "server" / "start"
STOP = REPO / "rig" / "server" / "stop"


@dataclass
class Server:
    tmp: Path  # the test's directory: configurations, DIR
    image: Path
    conn: dict[str, object]  # start's JSON line
    initial: Path  # the system start built

    @property
    def dir(self) -> Path:
        return self.tmp / "server"

    def ssh_opts(self) -> list[str]:
        return [
            "-p", str(self.conn["port"]), "-i", str(self.conn["identity"]), "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.conn['known_hosts']}", "-o", "ConnectTimeout=10",
        ]  # fmt: skip

    def ssh(self, *command: str) -> subprocess.CompletedProcess[str]:
        target = f"{self.conn['user']}@{self.conn['host']}"
        return run(["ssh", *self.ssh_opts(), target, "--", *command])

    def out(self, *command: str) -> str:
        result = self.ssh(*command)
        assert result.returncode == 0, (command, result.stderr)
        return result.stdout.strip()


INTERN_PASSWORD = "intern's password"


def users(key: Path) -> str:
    """Two users besides root, logging in with `key`: see the top."""
    return f"""
  users.users.deploy = {{ isNormalUser = true; extraGroups = [ "wheel" ]; initialPassword = "deploy's password";
    openssh.authorizedKeys.keyFiles = [ {key}.pub ]; }};
  users.users.intern = {{ isNormalUser = true; initialPassword = "{INTERN_PASSWORD}";
    openssh.authorizedKeys.keyFiles = [ {key}.pub ]; }};
  nix.settings.trusted-users = [ "@wheel" ];
  security.sudo.wheelNeedsPassword = false;
  security.sudo.extraRules = [ {{ users = [ "intern" ]; commands = [ "ALL" ]; }} ];
"""


def deployer_key(tmp: Path) -> Path:
    """The key of deploy and intern (made once per module)."""
    key = tmp / "deployer"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def server_config(d: Path, extra: str = "") -> Path:
    """fripon as a VPS: its root file system is the disk labelled nixos (the rig image's),
    GRUB on /dev/vda (fripon's own setting); its users (`users`)."""
    conf = fixed_fripon(d, extra=users(deployer_key(d.parent)) + extra)
    hardware = d / "hardware-configuration.nix"
    text = re.sub(r"/dev/disk/by-uuid/[0-9a-f-]+", "/dev/disk/by-label/nixos", hardware.read_text())
    assert "/dev/disk/by-label/nixos" in text
    hardware.write_text(text)
    return conf


def build(conf: Path) -> Path:
    expr = f"(import <nixpkgs/nixos> {{ configuration = {conf}; }}).system"
    result = run(["nix-build", "--no-out-link", "-I", f"nixpkgs={MINI_NIXPKGS}", "-E", expr])
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(result.stdout.strip())


def start(tmp: Path, image: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    argv = [START, "--nixpkgs", MINI_NIXPKGS, "--image", image, tmp / "conf-a" / "configuration.nix", tmp / "server"]
    result = run(argv, stdin=subprocess.DEVNULL)
    return result, time.monotonic() - t0


def qemu_running(d: Path) -> bool:
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu-system" in cmdline and str(d).encode() in cmdline:
            return True
    return False


@pytest.fixture(scope="module")
def server(guest_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("rig-server")
    initial = build(server_config(tmp / "conf-a"))
    result, took = start(tmp, guest_image)
    if result.returncode != 0:
        run([STOP, tmp / "server"])
    assert result.returncode == 0, result.stderr[-4000:]
    print(f"rig server: start (build, disks, boot to SSH) {took:.1f} s")
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    s = Server(tmp, guest_image, json.loads(lines[0]), initial)
    yield s
    run([STOP, s.dir])


def copy(server: Server, system: Path) -> None:
    env = {**os.environ, "NIX_SSHOPTS": " ".join(server.ssh_opts())}
    target = f"{server.conn['user']}@{server.conn['host']}"
    result = run(["nix-copy-closure", "--to", target, str(system)], env=env)
    assert result.returncode == 0, result.stderr[-3000:]


def stc(server: Server, system: Path, action: str) -> subprocess.CompletedProcess[str]:
    return server.ssh(f"{system}/bin/switch-to-configuration", action)


def default_entry(server: Server) -> str:
    return server.out("cat", "/boot/rig/default")


def current(server: Server) -> str:
    return server.out("readlink", "/run/current-system")


def probe_system(server: Server, name: str) -> Path:
    """A system that differs from the first by /etc/rig-probe (its text: `name`)."""
    return build(server_config(server.tmp / f"conf-{name}", extra=f'  environment.etc."rig-probe".text = "{name}";'))


def test_start_prints_how_to_reach_the_server(server: Server) -> None:
    conn = server.conn
    assert set(conn) == {"host", "port", "user", "identity", "known_hosts"}
    assert conn["host"] == "127.0.0.1" and conn["user"] == "root" and isinstance(conn["port"], int)
    identity, known_hosts = Path(str(conn["identity"])), Path(str(conn["known_hosts"]))
    assert identity.parent == server.dir and known_hosts.parent == server.dir
    assert stat.S_IMODE(server.dir.stat().st_mode) == 0o700
    for f in server.dir.iterdir():
        if not f.is_symlink():
            assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0, f
    # The server's host key is pinned before the first connection: no trust on first use.
    pinned = known_hosts.read_text().split()
    assert pinned[0] == f"[127.0.0.1]:{conn['port']}" and pinned[1] == "ssh-ed25519"
    argv = [
        "ssh", "-p", str(conn["port"]), "-i", str(identity), "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "BatchMode=yes", f"{conn['user']}@{conn['host']}", "hostname",
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "fripon"


def test_the_store_is_the_servers_own(server: Server) -> None:
    source, fstype = server.out("findmnt", "-n", "-o", "SOURCE,FSTYPE", "-T", "/nix/store").split()
    assert source == "/dev/vdb[/nix]" and fstype == "ext4"
    assert server.out("blkid", "-o", "value", "-s", "LABEL", "/dev/vdb") == "nix-store"
    types = {line.split()[2] for line in server.out("cat", "/proc/mounts").splitlines()}
    assert not types & {"9p", "virtiofs", "overlay"}, types
    assert "regInfo=" not in server.out("cat", "/proc/cmdline")
    # Booted from the boot menu's default entry; registered in the guest's own database.
    system = str(server.initial)
    assert default_entry(server) == system
    assert server.out("readlink", "/run/booted-system") == system
    assert current(server) == system
    assert server.out("cat", "/run/rig/activate-status") == "0"
    assert server.ssh("nix-store", "--check-validity", system).returncode == 0
    assert server.out("readlink", "-f", "/nix/var/nix/profiles/system") == system
    # The guest's database knows the closure and nothing of the host's store.
    assert sorted(server.out("nix-store", "-qR", system).split()) == sorted(
        run(["nix-store", "-qR", system]).stdout.split()
    )


def test_switch_installs_the_boot_entry(server: Server) -> None:
    b = probe_system(server, "b")
    assert server.ssh("nix-store", "--check-validity", str(b)).returncode != 0
    copy(server, b)
    assert server.ssh("nix-store", "--check-validity", str(b)).returncode == 0
    # As nixos-rebuild switch: the profile's new generation, then switch-to-configuration.
    assert server.ssh("nix-env", "-p", "/nix/var/nix/profiles/system", "--set", str(b)).returncode == 0
    result = stc(server, b, "switch")
    assert result.returncode == 0, result.stderr
    assert "updating GRUB 2 menu..." in result.stderr
    assert "installing the GRUB 2 boot loader" not in result.stderr  # installed already, same device
    assert current(server) == str(b)
    assert default_entry(server) == str(b)
    assert server.out("cat", "/etc/rig-probe") == "b"
    entries = server.out("grep . /boot/rig/entries/*").splitlines()  # one word: the guest's shell globs
    assert entries == [f"/boot/rig/entries/1:{server.initial}", f"/boot/rig/entries/2:{b}"]


def test_test_leaves_the_boot_entry_alone(server: Server) -> None:
    before = default_entry(server)
    c = probe_system(server, "c")
    copy(server, c)
    result = stc(server, c, "test")
    assert result.returncode == 0, result.stderr
    assert "GRUB" not in result.stderr
    assert current(server) == str(c)
    assert server.out("cat", "/etc/rig-probe") == "c"
    assert default_entry(server) == before


def test_boot_installs_without_activating(server: Server) -> None:
    running = current(server)
    d = probe_system(server, "d")
    copy(server, d)
    result = stc(server, d, "boot")
    assert result.returncode == 0, result.stderr
    assert "updating GRUB 2 menu..." in result.stderr
    assert "activating" not in result.stderr
    assert default_entry(server) == str(d)
    assert current(server) == running
    assert server.out("cat", "/etc/rig-probe") == "c"


def as_user(server: Server, user: str, *command: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """`command` as `user`, logged in with the deployer key."""
    opts = [*server.ssh_opts(), "-i", str(deployer_key(server.tmp))]
    return run(["ssh", *opts, f"{user}@{server.conn['host']}", "--", *command], input=input)


def copy_as(server: Server, user: str, system: Path) -> subprocess.CompletedProcess[str]:
    opts = " ".join([*server.ssh_opts(), "-i", str(deployer_key(server.tmp))])
    return run(["nix-copy-closure", "--to", f"{user}@{server.conn['host']}", str(system)],
               env={**os.environ, "NIX_SSHOPTS": opts})  # fmt: skip


def test_a_trusted_user_copies_through_the_daemon_and_sudo_needs_no_password(server: Server) -> None:
    assert server.out("systemctl", "is-active", "nix-daemon.socket") == "active"
    assert "trusted-users = root @wheel" in server.out("cat", "/etc/nix/nix.conf").splitlines()
    # deploy may not write the store: its Nix goes through the daemon (root).
    assert as_user(server, "deploy", "test", "-w", "/nix/var/nix/db").returncode != 0
    e = probe_system(server, "e")
    result = copy_as(server, "deploy", e)
    assert result.returncode == 0, result.stderr[-3000:]
    assert server.ssh("nix-store", "--check-validity", str(e)).returncode == 0
    assert server.out("stat", "-c", "%U", str(e)) == "root"  # written by the daemon
    result = as_user(server, "deploy", "sudo", "-n", "id", "-u")
    assert (result.returncode, result.stdout.strip()) == (0, "0"), result.stderr


def test_an_untrusted_user_is_refused_unsigned_paths(server: Server) -> None:
    f = probe_system(server, "f")
    result = copy_as(server, "intern", f)
    assert result.returncode != 0
    assert "lacks a valid signature" in result.stderr, result.stderr[-3000:]
    assert server.ssh("nix-store", "--check-validity", str(f)).returncode != 0


def test_sudo_with_a_password_leaves_the_rest_of_stdin_to_the_command(server: Server) -> None:
    result = as_user(server, "intern", "sudo", "-n", "true")
    assert result.returncode == 1 and "a password is required" in result.stderr
    # As nixos-rebuild-ng's --ask-sudo-password: the password is the first line of stdin;
    # sudo reads that line, no more.
    result = as_user(server, "intern", "sudo", "--prompt=", "--stdin", "cat", input=f"{INTERN_PASSWORD}\nthe rest")
    assert (result.returncode, result.stdout) == (0, "the rest"), result.stderr
    result = as_user(server, "intern", "sudo", "-k", "--prompt=", "--stdin", "true", input="wrong\n")
    assert result.returncode == 1 and "incorrect password attempt" in result.stderr


def test_stop_then_start_boots_the_promoted_system(server: Server) -> None:
    promoted = default_entry(server)
    disk = (server.dir / "store.img").stat().st_ino
    stopped = run([STOP, server.dir])
    assert stopped.returncode == 0, stopped.stderr
    assert not qemu_running(server.dir)
    assert not (server.dir / "qmp.sock").exists()
    result, took = start(server.tmp, server.image)
    assert result.returncode == 0, result.stderr[-4000:]
    print(f"rig server: start again (boot to SSH) {took:.1f} s")
    assert "is not built" in result.stderr and "nix-build" not in result.stderr
    assert (server.dir / "store.img").stat().st_ino == disk
    server.conn = json.loads(result.stdout.splitlines()[-1])
    assert server.out("readlink", "/run/booted-system") == promoted
    assert current(server) == promoted
    assert server.out("cat", "/etc/rig-probe") == "d"
    # The store and its database stayed: the systems copied before are still there and valid.
    for name in ("b", "c"):
        system = str(probe_system(server, name))
        assert server.ssh("nix-store", "--check-validity", system).returncode == 0

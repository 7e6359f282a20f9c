"""rig/server: the stand-in for a real NixOS server. It boots from its own disk through its
(emulated) boot loader, with a Nix store of its own (no host share); a new system reaches it
as it reaches a server (nix-copy-closure, switch-to-configuration), and the boot menu decides
what the next boot runs. One stand-in is booted for the module (and booted again once)."""

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


def server_config(d: Path, extra: str = "") -> Path:
    """fripon as a VPS: its root file system is the disk labelled nixos (the rig image's),
    GRUB on /dev/vda (fripon's own setting)."""
    conf = fixed_fripon(d, extra=extra)
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

"""promote, end to end: the seed's server fripon (written for QEMU hardware:
the qemu-guest profile, GRUB on /dev/vda) is rehearsed in a VM, then promoted
to the rig's stand-in for a real server (rig/server: its own disk, Nix store
and boot menu; no store shared with this host), reached the way a user
reaches theirs (NIX_SSHOPTS, their known_hosts)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MINI_NIXPKGS, REPO
from tests.e2e.conftest import Config, Rehearse, booted

pytestmark = pytest.mark.e2e

NAME = "prom"
# The stand-in's root file system is the one it boots (label nixos).
SERVER = '  fileSystems."/".device = lib.mkForce "/dev/disk/by-label/nixos";\n'


@dataclass
class Server:
    dir: Path
    host: str
    port: int
    identity: Path
    known_hosts: Path

    def ssh(self, command: str) -> str:
        r = subprocess.run(
            ["ssh", "-F", "none", "-i", str(self.identity), "-o", f"UserKnownHostsFile={self.known_hosts}",
             "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-p", str(self.port), f"root@{self.host}",
             command],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def start(self, config: Path | None = None, image: Path | None = None) -> None:
        argv = [str(REPO / "rig" / "server" / "start"), "--nixpkgs", str(MINI_NIXPKGS)]
        argv += ["--image", str(image)] if image else []
        r = subprocess.run(
            [*argv, str(config or "-"), str(self.dir)], capture_output=True, text=True, timeout=600, check=False
        )
        assert r.returncode == 0, r.stderr[-3000:]
        info: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
        self.host, self.port = info["host"], int(info["port"])
        self.identity, self.known_hosts = Path(info["identity"]), Path(info["known_hosts"])

    def stop(self) -> None:
        subprocess.run(
            [str(REPO / "rig" / "server" / "stop"), str(self.dir)], capture_output=True, timeout=120, check=False
        )


@pytest.fixture(scope="module")
def vm(rehearse: Rehearse, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    yield from booted(rehearse, tmp_path_factory, NAME)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The stand-in, installed with fripon as it was before the change."""
    base = Config(tmp_path_factory.mktemp("server-conf"))
    base.set(SERVER)
    s = Server(tmp_path_factory.mktemp("server") / "machine", "", 0, Path(), Path())
    s.start(base.path)
    yield s
    s.stop()


def promote(rehearse: Rehearse, server: Server, *args: str) -> tuple[int, dict[str, Any], str]:
    """`rehearse promote` as a user runs it: their ssh options in NIX_SSHOPTS
    (the key the server accepts, their known_hosts), no ssh configuration."""
    home = rehearse.state.parent / "home"
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    env = rehearse.env(HOME=str(home), NIX_SSHOPTS=f"-i {server.identity} -o UserKnownHostsFile={server.known_hosts}")
    r = rehearse("promote", NAME, "--to", f"root@{server.host}:{server.port}", "--yes", "--json", *args, env=env)
    return r.returncode, json.loads(r.stdout), r.stderr


def test_promote_switches_the_server_and_its_boot_entry(rehearse: Rehearse, vm: Config, server: Server) -> None:
    vm.set(SERVER + '  environment.etc."promoted".text = "first";')
    r = rehearse("deploy", NAME, "--yes")
    assert r.returncode == 0, r.stderr
    before = server.ssh("readlink /run/current-system")
    code, report, err = promote(rehearse, server)
    assert code == 0, err
    assert report["result"] == "confirmed" and report["old_system"] == before
    assert "rehearsed" in err and "by `deploy`" in err  # the rehearsal it relies on
    system = report["new_system"]
    assert server.ssh("readlink /run/current-system") == system
    assert server.ssh("cat /boot/rig/default") == system  # the boot entry (switch)
    assert server.ssh("cat /etc/promoted") == "first"
    # The server's own system, not the VM variant the VM runs.
    vm_system = rehearse("ssh", NAME, "--", "readlink /run/current-system").stdout.strip()
    assert system != vm_system and system.endswith("-nixos-system-fripon-" + vm_system.rsplit("-fripon-", 1)[1])
    # The copy went over SSH into the server's own store: no share of this host's.
    assert server.ssh("findmnt -n -o FSTYPE --target /nix/store") == "ext4"
    assert server.ssh(f"nix-store --check-validity {system} && echo valid") == "valid"


def test_a_restart_comes_back_on_the_promoted_system(rehearse: Rehearse, vm: Config, server: Server) -> None:
    promoted = server.ssh("readlink /run/current-system")
    server.stop()
    server.start()
    assert server.ssh("readlink /run/booted-system") == promoted
    assert server.ssh("cat /etc/promoted") == "first"


def test_an_unrehearsed_configuration_is_refused_and_changes_nothing(
    rehearse: Rehearse, vm: Config, server: Server
) -> None:
    before = server.ssh("readlink /run/current-system")
    vm.set(SERVER + '  environment.etc."promoted".text = "edited, never rehearsed";')
    code, report, err = promote(rehearse, server)
    assert code == 9, err
    assert "not rehearsed — deploy it to the VM first" in err
    assert report["result"] == "not-rehearsed"
    assert server.ssh("readlink /run/current-system") == before


def test_dry_run_changes_nothing_on_the_server(rehearse: Rehearse, vm: Config, server: Server) -> None:
    before = server.ssh("readlink /run/current-system")
    vm.set(SERVER + '  environment.etc."promoted".text = "second";')
    assert rehearse("deploy", NAME, "--yes").returncode == 0
    code, report, err = promote(rehearse, server, "--dry-run")
    assert code == 0, err
    assert report["result"] == "dry-run" and report["store"]["missing"] > 0
    assert server.ssh("readlink /run/current-system") == before
    new = report["new_system"]
    assert server.ssh(f"test -e {new} && echo there || echo absent") == "absent"  # nothing copied


def test_a_promotion_that_cuts_ssh_is_rolled_back_with_its_boot_entry(
    rehearse: Rehearse, vm: Config, server: Server
) -> None:
    before = server.ssh("readlink /run/current-system")
    entry = server.ssh("cat /boot/rig/default")
    vm.set(SERVER + "  services.openssh.enable = lib.mkForce false;")
    code, report, err = promote(rehearse, server, "--force", "--confirm-timeout", "20")
    assert code == 4, err
    assert report["result"] == "rolled-back" and report["forced"] is True
    assert server.ssh("readlink /run/current-system") == before
    assert server.ssh("cat /boot/rig/default") == entry
    # One history per server address (the stand-in's port changed with its restart).
    history = (rehearse.state / NAME).glob("promotions-*.json")
    newest = max((e for f in history for e in json.loads(f.read_text())), key=lambda e: e["time"])
    assert newest["forced"] is True and newest["result"].startswith("rolled-back")
    assert os.path.exists(server.identity)


def test_the_servers_generations_and_rollback(rehearse: Rehearse, vm: Config, server: Server) -> None:
    """`generations --server` lists the server's own generations with what
    rehearse promoted; `rollback --server` switches it back, boot entry too."""
    home = rehearse.state.parent / "home"
    env = rehearse.env(HOME=str(home), NIX_SSHOPTS=f"-i {server.identity} -o UserKnownHostsFile={server.known_hosts}")
    where = f"root@{server.host}:{server.port}"
    promoted = server.ssh("readlink /run/current-system")
    r = rehearse("generations", NAME, "--server", where, "--json", env=env)
    assert r.returncode == 0, r.stderr
    gens = json.loads(r.stdout)
    [current] = [g for g in gens if g["current"]]
    assert current["system"] == promoted and len(gens) >= 2
    # The listing marks what rehearse promoted (issue 24, item 6).
    listing = rehearse("generations", NAME, "--server", where, env=env)
    assert listing.returncode == 0 and "        promoted by rehearse " in listing.stdout, listing.stdout
    r = rehearse("rollback", NAME, "--server", where, "--yes", "--json", env=env)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    earlier = max(g["generation"] for g in gens if g["generation"] < current["generation"])
    assert report["result"] == "confirmed" and report["generation"] == earlier
    system = next(g["system"] for g in gens if g["generation"] == earlier)
    assert server.ssh("readlink /run/current-system") == system != promoted
    assert server.ssh("cat /boot/rig/default") == system  # rolled back with `switch`: the boot entry too


def test_build_host_builds_the_system_on_a_nix_remote_builder(rehearse: Rehearse, vm: Config, server: Server) -> None:
    """--build-host: Nix's own remote builds (ssh-ng) build the server's
    system there, reached with the user's NIX_SSHOPTS; here the builder is
    the stand-in itself, and --dry-run copies nothing to it as a target, so
    the new system in its store can only come from the build."""
    # A text no earlier run built: the system cannot be in this machine's store yet.
    vm.set(SERVER + f'  environment.etc."promoted".text = "built on the build host {uuid.uuid4().hex}";')
    assert rehearse("deploy", NAME, "--yes").returncode == 0
    opts = f"-i {server.identity} -o UserKnownHostsFile={server.known_hosts} -p {server.port}"
    env = rehearse.env(NIX_SSHOPTS=opts)
    r = rehearse(
        "promote", NAME, "--to", f"root@{server.host}:{server.port}", "--build-host", f"root@{server.host}",
        "--dry-run", "--yes", "--json", env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["result"] == "dry-run"
    system = report["new_system"]
    assert server.ssh(f"test -e {system} && echo built-there") == "built-there"
    assert server.ssh("readlink /run/current-system") != system


def test_promote_test_leaves_the_servers_profile_alone(rehearse: Rehearse, vm: Config, server: Server) -> None:
    """--test, as nixos-rebuild test: the new system runs, and the system
    profile (its generations) and the boot entry stay as they were. A
    promotion that fails afterwards goes back to that system, and the boot
    entry to the profile's. (Last: the server then runs a system its
    profile does not hold.)"""

    def profile() -> tuple[str, str, str]:
        return (
            server.ssh("readlink /nix/var/nix/profiles/system"),
            server.ssh("ls -d /nix/var/nix/profiles/system-*-link | wc -l"),
            server.ssh("cat /boot/rig/default"),
        )

    before, kept = server.ssh("readlink /run/current-system"), profile()
    vm.set(SERVER + '  environment.etc."promoted".text = "tested";')
    assert rehearse("deploy", NAME, "--yes").returncode == 0
    code, report, err = promote(rehearse, server, "--test")
    assert code == 0, err
    assert report["result"] == "confirmed" and report["generation"] is None
    tested = report["new_system"]
    assert server.ssh("readlink /run/current-system") == tested != before
    assert server.ssh("cat /etc/promoted") == "tested"
    assert profile() == kept
    vm.set(
        SERVER + '  systemd.services.broken = { wantedBy = [ "multi-user.target" ]; '
        'serviceConfig = { Type = "oneshot"; RemainAfterExit = true; }; script = "exit 1"; };'
    )
    code, report, err = promote(rehearse, server, "--force")
    assert code == 4, err
    assert server.ssh("readlink /run/current-system") == tested
    assert profile() == kept

"""A fleet end to end (issue 14): two VMs from two configurations, brought
up together by `rehearse up` from rehearse.toml's [machines], on one
private LAN; `web` reaches a TCP service of `db` by host name; a parallel
deploy applies both changes; a deploy in which db's new configuration fails
leaves web on its new system and db on its old one, with exit code 10 and a
summary naming db; `down --all`/`destroy --all` end the VMs and the LAN.

The fleet has a state directory of its own, so the other tests' VMs are not
part of it. Marked `generations`: ./run runs it on NixOS 26.11 VMs too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import MINI_NIXPKGS, fixed_fripon
from tests.e2e.conftest import Rehearse
from tests.rig.test_fleet_eval import LISTENER  # a TCP service that greets each client with its address

pytestmark = [pytest.mark.e2e, pytest.mark.generations]

# db declares its LAN interface and address, as a server on a private
# network does; web declares none, and gets eth1 with its machine number.
DB_SERVICE = (
    '  networking.interfaces.enp7s0.ipv4.addresses = [ { address = "192.168.1.10"; prefixLength = 24; } ];\n'
    "  networking.firewall.allowedTCPPorts = [ 8080 ];\n" + LISTENER.format(port=8080) + LISTENER.format(port=8081)
)

# A client in web: what db:PORT answers, or the error.
CLIENT = (
    "python3 -c 'import socket,sys\n"
    "try:\n"
    " c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5); print(c.recv(100).decode().strip())\n"
    "except OSError as e:\n"
    " print(type(e).__name__)' "
)


@dataclass
class Machine:
    name: str
    directory: Path

    def set(self, body: str) -> None:
        """The machine's own module: its host name, a small VM, and `body`."""
        (self.directory / "extra.nix").write_text(
            "{ config, lib, pkgs, ... }:\n{\n"
            f'  networking.hostName = lib.mkForce "{self.name}";\n'
            "  virtualisation.vmVariant.virtualisation.memorySize = 512;\n" + body + "\n}\n"
        )


@dataclass
class Fleet:
    rehearse: Rehearse
    web: Machine
    db: Machine
    up_seconds: float
    up: subprocess.CompletedProcess[str]

    def run(self, name: str, command: str) -> str:
        result = self.rehearse("ssh", name, "--", command)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def wait_for(self, name: str, command: str, expected: str, timeout: float = 60) -> str:
        """The output of `command` once it holds `expected` (the LAN's
        addresses are set by units that may still run when SSH answers)."""
        end = time.monotonic() + timeout
        while True:
            text = self.run(name, command)
            if expected in text or time.monotonic() > end:
                return text
            time.sleep(1)

    def current(self, name: str) -> str:
        return self.run(name, "readlink /run/current-system")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, guest_image: Path) -> Iterator[Fleet]:
    base = tmp_path_factory.mktemp("fleet")
    web = Machine("web", base / "web")
    db = Machine("db", base / "db")
    for m in (web, db):
        fixed_fripon(m.directory)
    web.set("")
    db.set(DB_SERVICE)
    (base / "rehearse.toml").write_text(
        f'nixpkgs = "{MINI_NIXPKGS}"\n'
        '[machines.web]\nconfiguration = "web/configuration.nix"\ntags = ["front"]\n'
        '[machines.db]\nconfiguration = "db/configuration.nix"\ntags = ["back"]\n'
    )
    r = Rehearse(state=base / "state", cwd=base)
    t0 = time.monotonic()
    up = r("up")
    seconds = time.monotonic() - t0
    print(f"\nfleet: `rehearse up` of web and db took {seconds:.1f} s")
    yield Fleet(r, web, db, seconds, up)
    if r.state.exists():
        r("destroy", "--all", "--yes", "--timeout", "5")


def test_up_brings_both_machines_up_on_one_lan(fleet: Fleet) -> None:
    assert fleet.up.returncode == 0, fleet.up.stderr[-4000:]
    assert "web:" in fleet.up.stderr and "db:" in fleet.up.stderr  # each machine's lines under its name
    status = {v["name"]: v for v in fleet.rehearse.status()}
    assert {n: v["state"] for n, v in status.items()} == {"db": "running", "web": "running"}
    lan = {n: v["lan"] for n, v in status.items()}
    # Numbered in the order of rehearse.toml's machines: web has eth1 and
    # 192.168.1.<its number>; db its own interface and address.
    assert (lan["web"]["interface"], lan["web"]["address"], lan["web"]["number"]) == ("eth1", "192.168.1.1", 1)
    assert (lan["db"]["interface"], lan["db"]["address"], lan["db"]["number"]) == ("enp7s0", "192.168.1.10", 2)
    assert "192.168.1.1 on the LAN" in fleet.up.stdout and "192.168.1.10 on the LAN" in fleet.up.stdout
    # db's interface is in the VM now: not listed as overridden.
    assert not any("enp7s0" in o for o in status["db"]["overrides"])
    # Every machine in every hosts file; the NIC has the test framework's MAC, and db's its own name.
    assert "192.168.1.10 db" in fleet.run("web", "cat /etc/hosts")
    assert "192.168.1.1 web" in fleet.run("db", "cat /etc/hosts")
    assert fleet.run("db", "cat /sys/class/net/enp7s0/address") == "52:54:00:12:01:02"
    assert "192.168.1.10/24" in fleet.wait_for("db", "ip -4 -o addr show enp7s0", "192.168.1.10/24")
    assert "192.168.1.1/24" in fleet.wait_for("web", "ip -4 -o addr show eth1", "192.168.1.1/24")


def test_web_reaches_db_by_host_name_over_the_lan(fleet: Fleet) -> None:
    # The greeter names the client's address: web's LAN address, not QEMU's user network.
    assert fleet.run("web", CLIENT + "db 8080") == "hello 192.168.1.1"
    # 8081 listens in db but its firewall drops it.
    assert fleet.run("web", CLIENT + "db 8081") in ("TimeoutError", "timeout")


def test_a_parallel_deploy_applies_both_changes(fleet: Fleet) -> None:
    web_before, db_before = fleet.current("web"), fleet.current("db")
    fleet.web.set('  environment.etc."fleet-mark".text = "web v2";')
    fleet.db.set(DB_SERVICE + '  environment.etc."fleet-mark".text = "db v2";\n')
    result = fleet.rehearse("deploy", "--all", "--yes", "--parallel", "2", "--json")
    assert result.returncode == 0, result.stderr[-4000:]
    doc = json.loads(result.stdout)
    assert doc["result"] == "ok" and doc["exit_code"] == 0
    assert {n: m["result"] for n, m in doc["machines"].items()} == {"web": "confirmed", "db": "confirmed"}
    assert fleet.run("web", "cat /etc/fleet-mark") == "web v2"
    assert fleet.run("db", "cat /etc/fleet-mark") == "db v2"
    assert fleet.current("web") != web_before and fleet.current("db") != db_before
    # The summary (on stderr with --json) has a line per machine.
    assert "MACHINE" in result.stderr and "confirmed" in result.stderr
    # web still reaches db after both switches.
    assert fleet.run("web", CLIENT + "db 8080") == "hello 192.168.1.1"


def test_a_failing_machine_is_rolled_back_alone(fleet: Fleet) -> None:
    db_before = fleet.current("db")
    fleet.web.set('  environment.etc."fleet-mark".text = "web v3";')
    fleet.db.set(
        DB_SERVICE
        + '  environment.etc."fleet-mark".text = "db v3";\n'
        + '  systemd.services.broken = { wantedBy = [ "multi-user.target" ]; '
        'serviceConfig = { Type = "oneshot"; RemainAfterExit = true; }; script = "exit 1"; };\n'
    )
    result = fleet.rehearse("deploy", "--on", "@front,db", "--yes")
    assert result.returncode == 10, result.stderr[-4000:]  # some failed, some succeeded
    table = result.stdout
    assert "failed: db" in table
    web_line = next(line for line in table.splitlines() if line.startswith("web "))
    db_line = next(line for line in table.splitlines() if line.startswith("db "))
    assert "confirmed" in web_line and "rolled-back" in db_line
    assert fleet.run("web", "cat /etc/fleet-mark") == "web v3"
    assert fleet.current("db") == db_before
    assert fleet.run("db", "cat /etc/fleet-mark") == "db v2"


def test_a_dead_hub_is_said_by_status(fleet: Fleet) -> None:
    hub = fleet.rehearse.state / ".lan" / "pid"
    pid = int(hub.read_text())
    assert {v["lan"]["hub"] for v in fleet.rehearse.status()} == {"running"}
    os.kill(pid, signal.SIGKILL)
    end = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < end:
        time.sleep(0.1)
    assert {v["lan"]["hub"] for v in fleet.rehearse.status()} == {"dead"}
    text = fleet.rehearse("status")
    assert "web is cut off from the fleet's LAN" in text.stdout and "rehearse down db && rehearse up db" in text.stdout


def test_down_all_ends_the_vms_and_the_lan(fleet: Fleet) -> None:
    result = fleet.rehearse("down", "--all", "--timeout", "30")
    assert result.returncode == 0, result.stderr
    assert {v["state"] for v in fleet.rehearse.status()} == {"stopped"}
    assert {v["lan"]["hub"] for v in fleet.rehearse.status()} == {"stopped"}
    result = fleet.rehearse("destroy", "--all", "--timeout", "5")
    assert result.returncode == 2 and "no terminal to ask on" in result.stderr  # asks first
    result = fleet.rehearse("destroy", "--all", "--yes", "--timeout", "5")
    assert result.returncode == 0, result.stderr
    assert fleet.rehearse.status() == []

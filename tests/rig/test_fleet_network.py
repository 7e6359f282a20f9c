"""End to end: two VMs of two configurations on one private LAN, as NixOS's
test framework runs its nodes (issue 14's rig side).

One `vde_switch --hub` (Debian's vde2) is VLAN 1: its socket directory is
QEMU_VDE_SOCKET_1 for both runners. Each VM is built by tests/rig/fleet.nix
(the test framework's network.nix, restated for server configurations):
beside the user-mode NIC that the test reaches it through (eth0, SSH
forwarded from 127.0.0.1), a virtio NIC on the switch, named by its MAC
(52:54:00:12:<vlan>:<machine number>), with the address its configuration
declares (db: 192.168.1.10 on enp7s0, the server's own interface name) or
else 192.168.<vlan>.<machine number> (web, the 2nd machine: 192.168.1.2 on
eth1), and both machines in every machine's /etc/hosts.

Boot: both VMs at once (the default), or one after the other with
REHEARSE_FLEET_BOOT=serial; the times go to the output (pytest -s)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import MINI_NIXPKGS, run
from tests.rig.test_guest import Guest, free_port, stop_runner

pytestmark = pytest.mark.e2e

FLEET = Path(__file__).resolve().parent / "fleet.nix"
MEMORY = 512  # MiB per VM: two TCG guests beside other VM tests on a 2-core machine

# A TCP server on a port: it greets with the peer's address.
LISTENER = """
  systemd.services.rig-listener-{port} = {{
    wantedBy = [ "multi-user.target" ];
    script = "exec /usr/bin/python3 ${{pkgs.writeText "rig-listener.py" ''
      import socket
      s = socket.socket()
      s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
      s.bind(("0.0.0.0", {port}))
      s.listen(5)
      while True:
          c, a = s.accept()
          c.sendall(b"hello " + a[0].encode() + b"\\n")
          c.close()
    ''}}";
  }};
"""

COMMON = """{{ lib, pkgs, ... }}:
{{
  boot.loader.grub.device = "/dev/vda";
  fileSystems."/" = {{ device = "/dev/vda"; fsType = "ext4"; }};
  services.openssh.enable = true;
  users.users.root.openssh.authorizedKeys.keys = [ "{key}" ];
  system.stateVersion = "25.11";
  virtualisation.vmVariant = {{
    virtualisation.memorySize = {memory};
    # The test made each VM's host key, in the VM's shared directory.
    services.openssh.hostKeys = lib.mkForce [ {{ type = "ed25519"; path = "/tmp/shared/host_key"; }} ];
  }};
}}
"""

# db: a server whose configuration names its LAN interface and address;
# the VM puts that interface on VLAN 1. 8080 is open in its firewall, 8081
# listens but is not.
DB = (
    """{ lib, pkgs, ... }:
{
  imports = [ ./common.nix ];
  networking.hostName = "db";
  networking.interfaces.enp7s0.ipv4.addresses = [ { address = "192.168.1.10"; prefixLength = 24; } ];
  networking.firewall.allowedTCPPorts = [ 8080 ];
  virtualisation.vmVariant.virtualisation.interfaces.enp7s0.vlan = 1;
"""
    + LISTENER.format(port=8080)
    + LISTENER.format(port=8081)
    + "}\n"
)

# web: nothing about the LAN; virtualisation.vlans' default [ 1 ] puts eth1 on it.
WEB = """{ lib, pkgs, ... }:
{
  imports = [ ./common.nix ];
  networking.hostName = "web";
}
"""

CONNECT = r"""
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as s:
        print(s.recv(100).decode().strip())
except OSError as e:
    print("refused" if isinstance(e, ConnectionRefusedError) else "timeout")
"""


@dataclass
class Machine(Guest):
    name: str
    started: float = 0.0
    ssh_after: float = 0.0


@dataclass
class Fleet:
    db: Machine
    web: Machine
    switch: subprocess.Popen[str]


def start_switch(sock: Path) -> subprocess.Popen[str]:
    """A vde_switch as NixOS's test driver starts one per VLAN (--hub), its
    socket directory `sock`. Its stdin stays open: at EOF it exits."""
    proc = subprocess.Popen(
        ["vde_switch", "--sock", str(sock), "--dirmode", "0700", "--hub"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    end = time.monotonic() + 10
    while not (sock / "ctl").exists():
        assert proc.poll() is None, "vde_switch exited"
        assert time.monotonic() < end, "vde_switch made no socket"
        time.sleep(0.05)
    return proc


def stop_switch(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()  # vde_switch: "EOF on stdin, cleaning up and exiting"
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def prepare(d: Path, name: str) -> Machine:
    m = d / name
    (m / "shared").mkdir(parents=True)
    for f in ("id", "id.pub"):
        (m / f).write_bytes((d / f).read_bytes())
    (m / "id").chmod(0o600)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(m / "shared" / "host_key")], check=True
    )
    port = free_port()
    pub = (m / "shared" / "host_key.pub").read_text().split()
    (m / "known_hosts").write_text(f"[127.0.0.1]:{port} {pub[0]} {pub[1]}\n")
    return Machine(m, port, None, name)  # type: ignore[arg-type]


def start(m: Machine, vm: Path, vde: Path) -> None:
    env = {
        **os.environ,
        "QEMU_NET_OPTS": f"hostfwd=tcp:127.0.0.1:{m.port}-:22",
        "QEMU_OPTS": f"-display none -serial file:{m.dir / 'console.log'}",
        "QEMU_VDE_SOCKET_1": str(vde),
        "SHARED_DIR": str(m.dir / "shared"),
        "TMPDIR": str(m.dir),
        "USE_TMPDIR": "1",
    }
    m.started = time.monotonic()
    m.proc = subprocess.Popen(
        [vm / "bin" / f"run-{m.name}-vm"],
        cwd=m.dir,
        env=env,
        stdout=open(m.dir / "runner.log", "wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def logs(m: Machine) -> str:
    return "".join(
        (m.dir / f).read_text(errors="replace")[-3000:] for f in ("runner.log", "console.log") if (m.dir / f).exists()
    )


def wait_ssh(machines: list[Machine], seconds: float = 300) -> None:
    """Until each machine answers over SSH (polled in turn)."""
    pending = list(machines)
    end = time.monotonic() + seconds
    while pending:
        for m in list(pending):
            assert m.proc.poll() is None, f"{m.name}'s QEMU exited:\n{logs(m)}"
            if m.ssh("true").returncode == 0:
                m.ssh_after = time.monotonic() - m.started
                pending.remove(m)
        if pending:
            assert time.monotonic() < end, "no SSH:\n" + "\n".join(f"{m.name}:\n{logs(m)}" for m in pending)
            time.sleep(1)


@pytest.fixture(scope="module")
def fleet(guest_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    d = tmp_path_factory.mktemp("rig-fleet")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", str(d / "id")], check=True)
    conf = d / "conf"
    conf.mkdir()
    key = (d / "id.pub").read_text().strip()
    (conf / "common.nix").write_text(COMMON.format(key=key, memory=MEMORY))
    (conf / "db.nix").write_text(DB)
    (conf / "web.nix").write_text(WEB)
    expr = f"let f = import {FLEET} {{ machines = {{ db = {conf}/db.nix; web = {conf}/web.nix; }}; }}; in [ f.db.vm f.web.vm ]"
    built = run(["nix-build", "--no-out-link", "-I", f"nixpkgs={MINI_NIXPKGS}", "-E", expr])
    assert built.returncode == 0, built.stderr[-3000:]
    db_vm, web_vm = (Path(p) for p in built.stdout.split())
    db, web = prepare(d, "db"), prepare(d, "web")
    vde = d / "vde1.ctl"
    switch = start_switch(vde)
    serial = os.environ.get("REHEARSE_FLEET_BOOT") == "serial"
    try:
        t0 = time.monotonic()
        start(db, db_vm, vde)
        if serial:
            wait_ssh([db])
        start(web, web_vm, vde)
        wait_ssh([db, web] if not serial else [web])
        both = time.monotonic() - t0
        for m in (db, web):
            assert m.ssh("systemctl is-system-running --wait").returncode in (0, 1)  # the activation has ended
        settled = time.monotonic() - t0
        print(
            f"\nrig fleet ({'one after the other' if serial else 'both at once'}, {MEMORY} MiB each):"
            f" db SSH after {db.ssh_after:.1f} s, web SSH after {web.ssh_after:.1f} s (from its own start);"
            f" both reachable after {both:.1f} s, both activated after {settled:.1f} s"
        )
        for m in (db, web):
            assert m.ssh("cat > /root/connect.py", input=CONNECT).returncode == 0
        yield Fleet(db, web, switch)
    finally:
        for m in (db, web):
            if m.proc is not None:
                stop_runner(m.proc)
        stop_switch(switch)


def wait_for(m: Machine, command: str, want: str, seconds: float = 30) -> str:
    """The output of `command` in m once it contains `want` (the network is
    configured by the boot's activation, in the background of SSH)."""
    end = time.monotonic() + seconds
    while True:
        out = m.ssh(command).stdout
        if want in out or time.monotonic() > end:
            return out
        time.sleep(1)


def test_each_machine_has_its_lan_address_on_its_named_nic(fleet: Fleet) -> None:
    # db: the address and interface name its configuration declares.
    db = wait_for(fleet.db, "ip -4 -o addr show dev enp7s0", "192.168.1.10/24")
    assert "inet 192.168.1.10/24" in db, db
    assert fleet.db.ssh("cat /sys/class/net/enp7s0/address").stdout.strip() == "52:54:00:12:01:01"
    assert fleet.db.ssh("test -e /sys/class/net/eth1").returncode != 0  # renamed, not added
    # web: nothing declared; the 2nd machine (by name) gets 192.168.1.2 on eth1.
    web = wait_for(fleet.web, "ip -4 -o addr show dev eth1", "192.168.1.2/24")
    assert "inet 192.168.1.2/24" in web, web
    assert fleet.web.ssh("cat /sys/class/net/eth1/address").stdout.strip() == "52:54:00:12:01:02"
    # The user-mode NIC is still eth0, with QEMU's DHCP address (rehearse's channel).
    for m in (fleet.db, fleet.web):
        assert "inet 10.0.2.15/24" in m.ssh("ip -4 -o addr show dev eth0").stdout


def test_machines_resolve_each_other_by_name(fleet: Fleet) -> None:
    for m in (fleet.db, fleet.web):
        hosts = m.ssh("cat /etc/hosts").stdout
        assert "192.168.1.10 db\n192.168.1.2 web\n" in hosts, hosts
    assert fleet.web.ssh("getent hosts db").stdout.split() == ["192.168.1.10", "db"]
    assert fleet.db.ssh("getent hosts web").stdout.split() == ["192.168.1.2", "web"]
    # web's route to db is its LAN NIC, not the user-mode one.
    assert " dev eth1 " in fleet.web.ssh("ip route get 192.168.1.10").stdout


def test_web_reaches_db_service_by_name_over_the_lan(fleet: Fleet) -> None:
    wait_for(fleet.db, "ip -4 -o addr show dev enp7s0", "192.168.1.10/24")
    wait_for(fleet.web, "ip -4 -o addr show dev eth1", "192.168.1.2/24")
    # db greets with the peer's address: web's LAN address.
    assert fleet.web.ssh("python3 /root/connect.py db 8080").stdout.strip() == "hello 192.168.1.2"


def test_port_not_opened_in_db_firewall_is_not_reached(fleet: Fleet) -> None:
    # 8081 listens (db reaches it over lo, which the firewall trusts) ...
    assert fleet.db.ssh("python3 /root/connect.py 127.0.0.1 8081").stdout.strip() == "hello 127.0.0.1"
    # ... but from web the SYN is dropped: NixOS's default (rejectPackets = false).
    assert fleet.web.ssh("python3 /root/connect.py db 8081").stdout.strip() == "timeout"
    # A port nothing listens on is dropped alike.
    assert fleet.web.ssh("python3 /root/connect.py db 9").stdout.strip() == "timeout"

"""tests/rig/fleet.nix evaluated with real Nix (no VM): what each machine of a
fleet gets, as NixOS's test framework (nixos/lib/testing/network.nix) gives
it, with the one policy of rehearse's fleets: a declared LAN address wins.

The mini nixpkgs' side of several VMs on one LAN (virtualisation.vlans and
interfaces, qemu-common.nix's NIC flags and MACs, udev names, hosts lines).
rehearse's own fleets (lan.py, nix/vm-module.nix) are proven end to end in
tests/e2e/test_fleet.py, on both generations of NixOS VMs."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import MINI_NIXPKGS, run

FLEET = Path(__file__).resolve().parent / "fleet.nix"

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


def fleet(tmp: Path, **machines: str) -> dict[str, dict[str, object]]:
    (tmp / "common.nix").write_text(COMMON.format(key="ssh-ed25519 AAAA test", memory=512))
    for name, text in machines.items():
        (tmp / f"{name}.nix").write_text(text)
    listed = " ".join(f"{n} = {tmp}/{n}.nix;" for n in machines)
    expr = (
        f"let f = import {FLEET} {{ machines = {{ {listed} }}; }}; in"
        " builtins.mapAttrs (_: m: {"
        ' options = builtins.filter (o: builtins.match ".*(vde|virtio-net).*" o != null)'
        " m.config.virtualisation.qemu.options;"
        " udev = m.config.boot.initrd.services.udev.rules;"
        " primary = m.config.networking.primaryIPAddress;"
        " hosts = m.config.networking.extraHosts;"
        " addresses = builtins.mapAttrs (_: i: map (a: a.address) i.ipv4.addresses) m.config.networking.interfaces;"
        " }) f"
    )
    result = run(["nix-instantiate", "--eval", "--strict", "--json", "-I", f"nixpkgs={MINI_NIXPKGS}", "-E", expr])
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_declared_address_wins_and_the_other_is_assigned(tmp_path: Path) -> None:
    f = fleet(tmp_path, db=DB, web=WEB)
    # db is machine 1 (names in order), web machine 2.
    assert f["db"]["options"] == [
        "-device virtio-net-pci,netdev=vlan1,mac=52:54:00:12:01:01",
        '-netdev vde,id=vlan1,sock="$QEMU_VDE_SOCKET_1"',
    ]
    assert f["web"]["options"] == [
        "-device virtio-net-pci,netdev=vlan1,mac=52:54:00:12:01:02",
        '-netdev vde,id=vlan1,sock="$QEMU_VDE_SOCKET_1"',
    ]
    assert f["db"]["udev"] == 'SUBSYSTEM=="net",ACTION=="add",ATTR{address}=="52:54:00:12:01:01",NAME="enp7s0"\n'
    assert f["web"]["udev"] == 'SUBSYSTEM=="net",ACTION=="add",ATTR{address}=="52:54:00:12:01:02",NAME="eth1"\n'
    assert f["db"]["addresses"] == {"enp7s0": ["192.168.1.10"]}  # declared; enp7s0 has no assignIP
    assert f["web"]["addresses"] == {"eth1": ["192.168.1.2"]}  # virtualisation.vlans' eth1: assigned
    for m in ("db", "web"):
        assert f[m]["hosts"] == "192.168.1.10 db\n192.168.1.2 web\n"


def test_declared_address_on_an_assigned_interface_replaces_it(tmp_path: Path) -> None:
    web = WEB.replace(
        'networking.hostName = "web";',
        'networking.hostName = "web";\n'
        '  networking.interfaces.eth1.ipv4.addresses = [ { address = "192.168.1.20"; prefixLength = 24; } ];',
    )
    f = fleet(tmp_path, web=web, app=WEB.replace('"web"', '"app"'))
    assert f["web"]["addresses"] == {"eth1": ["192.168.1.20"]}  # the test framework would add .2 beside it
    assert f["app"]["addresses"] == {"eth1": ["192.168.1.1"]}  # app is machine 1
    assert f["app"]["hosts"] == "192.168.1.1 app\n192.168.1.20 web\n"


def test_two_vlans_two_nics(tmp_path: Path) -> None:
    web = WEB.replace(
        'networking.hostName = "web";',
        'networking.hostName = "web";\n  virtualisation.vmVariant.virtualisation.vlans = [ 1 2 ];',
    )
    f = fleet(tmp_path, web=web)
    assert f["web"]["options"] == [
        "-device virtio-net-pci,netdev=vlan1,mac=52:54:00:12:01:01",
        '-netdev vde,id=vlan1,sock="$QEMU_VDE_SOCKET_1"',
        "-device virtio-net-pci,netdev=vlan2,mac=52:54:00:12:02:01",
        '-netdev vde,id=vlan2,sock="$QEMU_VDE_SOCKET_2"',
    ]
    assert f["web"]["addresses"] == {"eth1": ["192.168.1.1"], "eth2": ["192.168.2.1"]}
    assert f["web"]["primary"] == "192.168.1.1"  # the first LAN interface's

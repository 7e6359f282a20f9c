"""The mini nixpkgs's networking and firewall options, evaluated with real Nix
(no VM): real NixOS's option types, defaults, coercions and assertions, and
the files the guest gets from them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import MINI_NIXPKGS, fixed_fripon, run


def evaluate(tmp: Path, extra: str, attr: str) -> tuple[int, object, str]:
    conf = fixed_fripon(tmp, extra=extra)
    expr = f"let config = (import <nixpkgs/nixos> {{ configuration = {conf}; }}).config; in config.{attr}"
    result = run(["nix-instantiate", "--eval", "--strict", "--json", "-I", f"nixpkgs={MINI_NIXPKGS}", "-E", expr])
    value = json.loads(result.stdout) if result.returncode == 0 else None
    return result.returncode, value, result.stderr


def build_system(tmp: Path, extra: str) -> tuple[int, Path, str]:
    conf = fixed_fripon(tmp, extra=extra)
    expr = (
        f"(import <nixpkgs/nixos> {{ configuration = {conf}; }}).config.virtualisation.vmVariant.system.build.toplevel"
    )
    result = run(["nix-build", "--no-out-link", "-I", f"nixpkgs={MINI_NIXPKGS}", "-E", expr])
    return result.returncode, Path(result.stdout.strip()), result.stderr


def test_defaults_are_nixos_defaults(tmp_path: Path) -> None:
    code, value, err = evaluate(
        tmp_path,
        "",
        "networking.firewall // { inherit (config.networking) useDHCP nameservers defaultGateway interfaces; }",
    )
    assert code == 0, err
    assert isinstance(value, dict)
    assert value["enable"] is True
    assert value["allowPing"] is True
    assert value["rejectPackets"] is False
    assert value["allowedTCPPorts"] == [22]  # services.openssh.openFirewall (default true)
    assert value["allowedUDPPorts"] == []
    assert value["trustedInterfaces"] == ["lo"]
    assert value["useDHCP"] is True
    assert value["nameservers"] == []
    assert value["defaultGateway"] is None
    assert value["interfaces"] == {}


def test_ports_are_sorted_and_deduplicated(tmp_path: Path) -> None:
    code, value, err = evaluate(
        tmp_path, "networking.firewall.allowedTCPPorts = [ 8080 80 22 80 ];", "networking.firewall.allowedTCPPorts"
    )
    assert code == 0, err
    assert value == [22, 80, 8080]


def test_port_out_of_range_is_a_type_error(tmp_path: Path) -> None:
    code, _, err = evaluate(tmp_path, "networking.firewall.allowedTCPPorts = [ 70000 ];", "networking.firewall")
    assert code != 0
    assert (
        'A definition for option `networking.firewall.allowedTCPPorts."[definition 1-entry 1]"\' is not of type '
        "`16 bit unsigned integer; between 0 and 65535 (both inclusive)'" in err
    )


def test_default_gateway_string_is_coerced(tmp_path: Path) -> None:
    code, value, err = evaluate(tmp_path, 'networking.defaultGateway = "10.0.2.2";', "networking.defaultGateway")
    assert code == 0, err
    assert value == {"address": "10.0.2.2", "interface": None, "metric": None, "source": None}


def test_interface_name_too_long_fails_like_nixos(tmp_path: Path) -> None:
    code, _, err = build_system(tmp_path, "networking.interfaces.averyveryverylongname0.useDHCP = true;")
    assert code != 0
    assert (
        'The name of networking.interfaces."averyveryverylongname0" is too long, it needs to be less than 16 characters.'
        in err
    )


def test_networkd_needs_gateway_interface(tmp_path: Path) -> None:
    code, _, err = build_system(tmp_path, 'networking.useNetworkd = true; networking.defaultGateway = "10.0.2.2";')
    assert code != 0
    assert "networking.defaultGateway.interface is not optional when using networkd." in err


def test_dhcp_only_where_configured(tmp_path: Path) -> None:
    code, system, err = build_system(tmp_path, "networking.useDHCP = false; networking.interfaces.ens3.useDHCP = true;")
    assert code == 0, err
    net = system / "etc" / "systemd" / "network"
    assert sorted(p.name for p in net.iterdir()) == ["40-ens3.network", "80-rig-fallback.network"]
    assert (net / "80-rig-fallback.network").resolve() == Path("/dev/null")  # the image's fallback masked
    text = (net / "40-ens3.network").read_text()
    assert "Name=ens3\n" in text and "DHCP=yes\n" in text


def test_static_address_turns_dhcp_off_on_that_interface(tmp_path: Path) -> None:
    code, system, err = build_system(
        tmp_path,
        'networking.interfaces.eth0.ipv4.addresses = [ { address = "192.168.1.2"; prefixLength = 24; } ];\n'
        'networking.defaultGateway = "192.168.1.1";',
    )
    assert code == 0, err
    net = system / "etc" / "systemd" / "network"
    eth0 = (net / "40-eth0.network").read_text()
    assert "DHCP=no\n" in eth0 and "Address=192.168.1.2/24\n" in eth0
    assert "[Route]\nGateway=192.168.1.1\n" in eth0  # the gateway's subnet is eth0's
    assert "DHCP=yes\n" in (net / "99-ethernet-default-dhcp.network").read_text()  # the other interfaces


def test_firewall_unit_like_nixos(tmp_path: Path) -> None:
    code, system, err = build_system(tmp_path, "networking.firewall.allowedUDPPorts = [ 53 ];")
    assert code == 0, err
    units = system / "etc" / "systemd" / "system"
    assert (units / "sysinit.target.wants" / "firewall.service").exists()
    unit = (units / "firewall.service").read_text()
    for line in ("Before=network-pre.target", "Wants=network-pre.target", "X-ReloadIfChanged=true", "Type=oneshot"):
        assert line in unit.splitlines()
    start = next(w for w in unit.split() if w.startswith("ExecStart=@")).removeprefix("ExecStart=@")
    ruleset = next(w for w in Path(start).read_text().split() if w.endswith("nixos-fw.nft"))
    rules = Path(ruleset).read_text()
    assert "type filter hook input priority filter; policy drop;" in rules
    assert "udp dport { 53 } accept" in rules
    assert 'icmp type echo-request accept comment "allow ping"' in rules


def test_firewall_disabled_has_no_unit(tmp_path: Path) -> None:
    code, system, err = build_system(tmp_path, "networking.firewall.enable = false;")
    assert code == 0, err
    assert not (system / "etc" / "systemd" / "system" / "firewall.service").exists()


# --- /etc/hosts and the VM's test-network options (NixOS's config/networking.nix,
# virtualisation/guest-networking-options.nix, lib/qemu-common.nix) ---


def test_hosts_file_is_nixos_one(tmp_path: Path) -> None:
    code, system, err = build_system(
        tmp_path,
        'networking.hosts."192.168.1.5" = [ "five" "cinq" ];\n'
        'networking.hosts."10.0.0.9" = [ ];\n'  # an address without names: no line
        'networking.extraHosts = "192.168.1.6 six";',
    )
    assert code == 0, err
    # localhost first, then networking.hosts by address (with the machine's
    # names on 127.0.0.2 and ::1; fripon's domain is "", so its FQDN is
    # "fripon." as in NixOS), then extraHosts verbatim.
    assert (system / "etc" / "hosts").read_text() == (
        "127.0.0.1 localhost\n::1 localhost\n"
        "127.0.0.2 fripon. fripon\n192.168.1.5 five cinq\n::1 fripon. fripon\n"
        "192.168.1.6 six"
    )


def test_localhost_elsewhere_fails_like_nixos(tmp_path: Path) -> None:
    code, _, err = build_system(tmp_path, 'networking.hosts."10.0.0.1" = [ "localhost" ];')
    assert code != 0
    assert '`networking.hosts` maps "localhost" to something other than "127.0.0.1"' in err


def test_vm_vlans_default_and_named_interfaces(tmp_path: Path) -> None:
    attr = "virtualisation.vmVariant.virtualisation"
    expr = "{ inherit (config.virtualisation.vmVariant.virtualisation) vlans allInterfaces; }"
    code, value, err = evaluate(tmp_path / "a", "", f"{attr}.vlans")
    assert code == 0, err
    assert value == [1]  # as in NixOS: [ 1 ] while interfaces is empty
    code, value, err = evaluate(tmp_path / "b", "", f"{attr}.allInterfaces")
    assert code == 0, err
    assert value == {"eth1": {"name": "eth1", "vlan": 1, "assignIP": True}}
    conf = fixed_fripon(tmp_path / "c", extra="virtualisation.vmVariant.virtualisation.interfaces.enp7s0.vlan = 2;")
    result = run(
        ["nix-instantiate", "--eval", "--strict", "--json", "-I", f"nixpkgs={MINI_NIXPKGS}", "-E",
         f"let config = (import <nixpkgs/nixos> {{ configuration = {conf}; }}).config; in {expr}"]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "vlans": [],  # [ ] as soon as an interface is named
        "allInterfaces": {"enp7s0": {"name": "enp7s0", "vlan": 2, "assignIP": False}},
    }


def test_vlans_and_interfaces_conflict_like_nixos(tmp_path: Path) -> None:
    code, _, err = build_system(
        tmp_path, "virtualisation.vmVariant.virtualisation = { vlans = [ 1 ]; interfaces.eth1.vlan = 2; };"
    )
    assert code != 0
    assert "`virtualisation.vlans` and `virtualisation.interfaces` have conflicting keys: eth1" in err


def test_the_vlan_options_alone_add_no_nic(tmp_path: Path) -> None:
    # As in NixOS: qemu-vm.nix declares them; the NICs come from whoever runs
    # the VMs together (qemu-common.nix's qemuNICFlags).
    code, value, err = evaluate(tmp_path, "", "virtualisation.vmVariant.virtualisation.qemu.options")
    assert code == 0, err
    assert isinstance(value, list)
    assert not any("vde" in o for o in value)


def test_qemu_nic_flags_are_nixos_ones() -> None:
    expr = (
        "let q = import <nixpkgs/nixos/lib/qemu-common.nix> { lib = import <nixpkgs/lib>; pkgs = null; }; in"
        " { flags = q.qemuNICFlags 2 1 10; mac = q.qemuNicMac 17 255; }"
    )
    result = run(["nix-instantiate", "--eval", "--strict", "--json", "-I", f"nixpkgs={MINI_NIXPKGS}", "-E", expr])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "flags": [
            "-device virtio-net-pci,netdev=vlan2,mac=52:54:00:12:01:0A",
            '-netdev vde,id=vlan2,sock="$QEMU_VDE_SOCKET_1"',
        ],
        "mac": "52:54:00:12:11:FF",
    }


def test_udev_naming_rules_rename_at_activation(tmp_path: Path) -> None:
    code, system, err = build_system(
        tmp_path,
        "virtualisation.vmVariant.boot.initrd.services.udev.rules = ''\n"
        '  SUBSYSTEM=="net",ACTION=="add",ATTR{address}=="52:54:00:12:01:0A",NAME="enp7s0"\n'
        '  SUBSYSTEM=="block",ATTR{size}=="0",NAME="ignored"\n'
        "'';",
    )
    assert code == 0, err
    activate = (system / "activate").read_text()
    assert "ifaceOf 52:54:00:12:01:0a" in activate  # sysfs shows MACs in lower case
    assert "enp7s0" in activate and "ignored" not in activate
    # before the network is set up
    assert activate.index("snippet udev-net-names") < activate.index("snippet network-setup")

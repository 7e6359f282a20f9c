"""Issue 25, items 6 and 9: the firewall's default (iptables) backend and the
options typical servers use (systemd.tmpfiles, systemd.timers, networking.nat,
users.users.<n>.linger), evaluated and built with real Nix against the mini
(no VM), as NixOS's modules give them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.rig.test_networking_eval import build_system, evaluate


def units(system: Path) -> Path:
    return system / "etc" / "systemd" / "system"


def exec_script(unit: str, key: str) -> str:
    """The text of the script an `Exec…=@<script> name` line runs."""
    word = next(w for w in unit.split() if w.startswith(f"{key}=@"))
    return Path(word.removeprefix(f"{key}=@")).read_text()


def ruleset(start: str) -> str:
    return Path(next(w for w in start.split() if w.endswith("nixos-fw.nft"))).read_text()


# --- item 6: networking.firewall with its default backend, iptables
# (NixOS's firewall.nix and firewall-iptables.nix) ---


def test_firewall_defaults_of_the_iptables_backend(tmp_path: Path) -> None:
    code, value, err = evaluate(tmp_path, "", "networking.firewall // { allInterfaces = null; }")
    assert code == 0, err
    assert isinstance(value, dict)
    assert value["backend"] == "iptables"
    assert value["logRefusedConnections"] is True
    assert value["extraStopCommands"] == ""
    # nat-iptables.nix's flush of the NAT rules, NAT on or off
    assert value["extraCommands"].startswith("nft delete table ip nixos-nat")


def test_extra_input_rules_unused_with_iptables(tmp_path: Path) -> None:
    rule = "tcp dport 9999 accept"
    code, system, err = build_system(tmp_path / "a", f'networking.firewall.extraInputRules = "{rule}";')
    assert code == 0, err
    unit = (units(system) / "firewall.service").read_text()
    assert rule not in ruleset(exec_script(unit, "ExecStart"))
    assert 'log level info prefix "refused connection: "' in ruleset(exec_script(unit, "ExecStart"))
    # with the nftables backend they are the input-allow chain's
    code, system, err = build_system(
        tmp_path / "b", f'networking.nftables.enable = true; networking.firewall.extraInputRules = "{rule}";'
    )
    assert code == 0, err
    assert rule in ruleset(exec_script((units(system) / "nftables.service").read_text(), "ExecStart"))


def test_extra_commands_run_by_start_and_a_failed_reload_stops(tmp_path: Path) -> None:
    code, system, err = build_system(
        tmp_path,
        'networking.firewall.extraCommands = "echo extra-start";\n'
        'networking.firewall.extraStopCommands = "echo extra-stop";',
    )
    assert code == 0, err
    unit = (units(system) / "firewall.service").read_text()
    start = exec_script(unit, "ExecStart")
    assert start.index("nixos-fw.nft") < start.index("echo extra-start")
    assert "echo extra-stop" in exec_script(unit, "ExecStop")
    reload = exec_script(unit, "ExecReload")
    assert 'echo "Failed to reload firewall... Stopping"' in reload
    assert "firewall-stop" in reload and "exit 1" in reload


def test_failed_reload_stops_the_firewall_and_exits_1(tmp_path: Path) -> None:
    # The reload script run as is, with `nft` a stand-in that fails to load
    # the rules: the firewall is stopped (its table deleted) and it exits 1.
    code, system, err = build_system(tmp_path / "sys", "")
    assert code == 0, err
    unit = (units(system) / "firewall.service").read_text()
    reload_path = next(w for w in unit.split() if w.startswith("ExecReload=@")).removeprefix("ExecReload=@")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "nft.log"
    (bin_dir / "nft").write_text(f'#!/bin/sh\necho "$@" >> {log}\n[ "$1" != "-f" ]\n')
    (bin_dir / "nft").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = subprocess.run([reload_path], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "Failed to reload firewall... Stopping" in result.stdout
    assert log.read_text().splitlines()[-1] == "delete table inet nixos-fw"


# --- item 9: options typical servers use ---


def test_tmpfiles_rules_and_settings(tmp_path: Path) -> None:
    code, system, err = build_system(
        tmp_path,
        'systemd.tmpfiles.rules = [ "d /var/lib/foo 0755 root root -" ];\n'
        'systemd.tmpfiles.settings."10-bar"."/var/lib/bar".d = { mode = "0700"; user = "nobody"; };\n'
        'systemd.tmpfiles.settings."10-bar"."/var/lib/baz"."L+".argument = "/a b";',
    )
    assert code == 0, err
    etc = system / "etc" / "tmpfiles.d"
    assert "d /var/lib/foo 0755 root root -\n" in (etc / "00-nixos.conf").read_text()
    assert (etc / "10-bar.conf").read_text() == (
        "'d' '/var/lib/bar' '0700' 'nobody' '-' '-' \n"  # the argument, "", C-escaped
        "'L+' '/var/lib/baz' '-' '-' '-' '-' /a\\x20b\n"
    )
    resetup = (units(system) / "systemd-tmpfiles-resetup.service").read_text()
    assert "ExecStart=/bin/systemd-tmpfiles --create --remove --exclude-prefix=/dev" in resetup.splitlines()
    assert "X-Restart-Triggers=" in resetup  # a changed rule re-applies them on switch
    assert (units(system) / "sysinit.target.wants" / "systemd-tmpfiles-resetup.service").exists()


def test_tmpfiles_settings_type_checked(tmp_path: Path) -> None:
    code, _, err = build_system(tmp_path, 'systemd.tmpfiles.settings."x"."/a".d.mode = 493;')
    assert code != 0
    assert "systemd.tmpfiles.settings" in err and "is not of type `string'" in err


def test_timers(tmp_path: Path) -> None:
    code, system, err = build_system(
        tmp_path,
        'systemd.timers.backup = { wantedBy = [ "timers.target" ]; timerConfig = { OnCalendar = "daily"; Persistent = true; }; };\n'
        'systemd.services.backup = { script = "true"; serviceConfig.Type = "oneshot"; };',
    )
    assert code == 0, err
    timer = (units(system) / "backup.timer").read_text()
    assert "[Timer]\nOnCalendar=daily\nPersistent=true\n" in timer
    assert (units(system) / "timers.target.wants" / "backup.timer").exists()


def test_nat_through_the_firewall(tmp_path: Path) -> None:
    code, system, err = build_system(
        tmp_path,
        'networking.nat = { enable = true; internalInterfaces = [ "eth1" ]; externalInterface = "eth0";\n'
        '  forwardPorts = [ { sourcePort = 8080; destination = "10.0.0.2:80"; } '
        '{ sourcePort = "9000:9010"; proto = "udp"; destination = "10.0.0.3:9000-9010"; } ]; };',
    )
    assert code == 0, err
    start = exec_script((units(system) / "firewall.service").read_text(), "ExecStart")
    nat = Path(next(w for w in start.split() if w.endswith("nixos-nat.nft"))).read_text()
    assert 'add rule ip nixos-nat post iifname "eth1" oifname "eth0" masquerade' in nat
    assert 'add rule ip nixos-nat pre iifname "eth0" tcp dport 8080 dnat to 10.0.0.2:80' in nat
    assert 'add rule ip nixos-nat pre iifname "eth0" udp dport 9000-9010 dnat to 10.0.0.3:9000-9010' in nat
    # flushed first (mkBefore), then set up, forwarding on
    assert start.index("nft delete table ip nixos-nat") < start.index("nixos-nat.nft")
    assert "echo 1 > /proc/sys/net/ipv4/conf/all/forwarding" in start
    assert not (units(system) / "nat.service").exists()


def test_nat_without_firewall_is_a_service(tmp_path: Path) -> None:
    code, system, err = build_system(
        tmp_path,
        'networking.firewall.enable = false; networking.nat = { enable = true; internalIPs = [ "10.0.0.0/24" ]; };',
    )
    assert code == 0, err
    unit = (units(system) / "nat.service").read_text()
    assert "Description=Network Address Translation" in unit
    assert (units(system) / "network.target.wants" / "nat.service").exists()


def test_nat_forward_ports_need_external_interface(tmp_path: Path) -> None:
    code, _, err = build_system(
        tmp_path,
        'networking.nat = { enable = true; forwardPorts = [ { sourcePort = 80; destination = "10.0.0.2:80"; } ]; };',
    )
    assert code != 0
    assert "networking.nat.forwardPorts requires networking.nat.externalInterface" in err


def test_nat_source_port_type(tmp_path: Path) -> None:
    code, _, err = build_system(
        tmp_path,
        'networking.nat = { enable = true; externalInterface = "eth0";'
        ' forwardPorts = [ { sourcePort = "80-90"; destination = "10.0.0.2:80"; } ]; };',
    )
    assert code != 0
    assert "sourcePort" in err and "is not of type" in err


def test_linger(tmp_path: Path) -> None:
    code, system, err = build_system(tmp_path / "a", "users.users.alice = { isNormalUser = true; linger = true; };")
    assert code == 0, err
    unit = (units(system) / "linger-users.service").read_text()
    assert "StateDirectory=systemd/linger" in unit.splitlines()
    script = exec_script(unit.replace("ExecStart=", "ExecStart=@"), "ExecStart")
    assert 'for user in alice; do id "$user" >/dev/null && touch -- "$user"; done' in script
    # fripon's stateVersion is 18.09: linger defaults to false there (null from 25.11)
    assert 'for user in nobody root sshd; do rm -f -- "$user"; done' in script
    code, value, err = evaluate(tmp_path / "b", 'system.stateVersion = lib.mkForce "25.11";', "users.users.root.linger")
    assert code == 0, err
    assert value is None


def test_linger_without_manage_lingering_fails_like_nixos(tmp_path: Path) -> None:
    code, _, err = build_system(
        tmp_path,
        'system.stateVersion = lib.mkForce "25.11"; users.manageLingering = false; users.users.root.linger = true;',
    )
    assert code != 0
    assert "users.manageLingering is set to false, but\n       users.users.root.linger is configured." in err
    assert "users.users.nobody.linger" not in err  # null from stateVersion 25.11 on


def test_ping_limit_in_the_syntax_of_the_backend(tmp_path: Path) -> None:
    # iptables' syntax with the iptables backend (NixOS's example) ...
    code, system, err = build_system(
        tmp_path / "a", 'networking.firewall.pingLimit = "--limit 1/minute --limit-burst 5";'
    )
    assert code == 0, err
    rules = ruleset(exec_script((units(system) / "firewall.service").read_text(), "ExecStart"))
    assert "icmp type echo-request limit rate 1/minute burst 5 packets accept" in rules
    # ... and refused with the nftables backend (firewall-nftables.nix's assertion)
    code, _, err = build_system(
        tmp_path / "b", 'networking.nftables.enable = true; networking.firewall.pingLimit = "--limit 1/minute";'
    )
    assert code != 0
    assert 'nftables syntax like "2/second" should be used in networking.firewall.pingLimit' in err

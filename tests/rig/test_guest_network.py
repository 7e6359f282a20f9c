"""End to end: the mini nixpkgs's networking.firewall and networking.interfaces
are enforced inside the rig's guest, as on NixOS.  One VM, booted once and
switched between configurations; checked from the host through QEMU's
forwarded ports (which reach the guest's eth0 from 10.0.2.2, so the firewall
applies to them) and from a network namespace inside the guest (a veth pair:
pings and per-interface rules)."""

from __future__ import annotations

import shlex
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.rig.test_guest import Guest, activate, build, free_port, guest_config, start_runner, stop_runner

pytestmark = pytest.mark.e2e

# A TCP server on 8080 in every configuration: it greets with the peer's address.
LISTENER = """
  systemd.services.rig-listener = {
    wantedBy = [ "multi-user.target" ];
    script = "exec /usr/bin/python3 ${pkgs.writeText "rig-listener.py" ''
      import socket
      s = socket.socket()
      s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
      s.bind(("0.0.0.0", 8080))
      s.listen(5)
      while True:
          c, a = s.accept()
          c.sendall(b"hello " + a[0].encode() + b"\\n")
          c.close()
    ''}";
  };
"""

# An ICMP echo request from the namespace; exit 0 when answered.
PING = r"""
import os, socket, struct, sys, time
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(3)
# A new identifier each time, as ping does: an echo request reusing one
# would belong to the earlier exchange's conntrack entry (established).
h = struct.pack("!BBHHH", 8, 0, 0, os.getpid() & 0xFFFF, 1) + b"rig!"
h = h[:2] + struct.pack("!H", csum(h)) + h[4:]
s.sendto(h, (sys.argv[1], 0))
end = time.monotonic() + 3
while time.monotonic() < end:
    try:
        d, a = s.recvfrom(200)
    except socket.timeout:
        break
    if d[20] == 0 and a[0] == sys.argv[1]:
        sys.exit(0)
sys.exit(1)
"""

CONNECT = r"""
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as s:
        print(s.recv(100).decode().strip())
except OSError as e:
    print("refused" if isinstance(e, ConnectionRefusedError) else "timeout")
"""


class NetGuest(Guest):
    web: int


def knock(port: int, timeout: float = 5.0) -> str:
    """What the host gets from a forwarded port: the greeting, "closed" (QEMU
    closed the connection: the guest answered with a reset) or "timeout" (no
    answer: the guest dropped the SYN)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            data = s.recv(100)
    except TimeoutError:
        return "timeout"
    except OSError:
        return "closed"
    return data.decode().strip() if data else "closed"


def wait_ssh(g: Guest, seconds: float = 120) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if g.ssh("true").returncode == 0:
            return
        time.sleep(1)
    pytest.fail("no SSH:\n" + (g.dir / "console.log").read_text()[-3000:])


@pytest.fixture(scope="module")
def net(guest_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetGuest]:
    d = tmp_path_factory.mktemp("rig-net")
    (d / "shared").mkdir()
    for key, comment in (("id", "test"), ("shared/host_key", "fripon")):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(d / key)], check=True)
    port, web = free_port(), free_port()
    host_pub = (d / "shared" / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    vm = build(guest_config(d, LISTENER), "vm")
    proc = start_runner(d, vm, f"hostfwd=tcp:127.0.0.1:{port}-:22,hostfwd=tcp:127.0.0.1:{web}-:8080")
    g = NetGuest(d, port, proc)
    g.web = web
    wait_ssh(g, 240)
    g.ssh("systemctl is-system-running --wait")  # the activation has ended
    # A peer in a network namespace behind veth0 (192.168.99.1 <-> .2);
    # networkd leaves veth interfaces alone (99-ethernet-default-dhcp matches
    # physical ethernet only).
    setup = (
        "ip netns add peer && ip link add veth0 type veth peer name veth1 netns peer"
        " && ip addr add 192.168.99.1/24 dev veth0 && ip link set veth0 up"
        " && ip -n peer addr add 192.168.99.2/24 dev veth1 && ip -n peer link set veth1 up"
        " && ip -n peer link set lo up"
    )
    assert g.ssh(setup).returncode == 0
    assert g.ssh("cat > /root/ping.py", input=PING).returncode == 0
    assert g.ssh("cat > /root/connect.py", input=CONNECT).returncode == 0
    yield g
    stop_runner(proc)


def system(g: Guest, extra: str = "") -> Path:
    return build(guest_config(g.dir, LISTENER + extra), "config.virtualisation.vmVariant.system.build.toplevel")


def switch(g: Guest, extra: str = "") -> subprocess.CompletedProcess[str]:
    result = activate(g, system(g, extra))
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def switch_detached(
    g: Guest,
    extra: str,
    probe: str = "true",
    hold: int = 0,
    then: str | None = None,
    during: Callable[[], None] | None = None,
) -> str:
    """Switch to a configuration that may cut SSH off: in a transient unit,
    switch, run `probe` (its output lands in the shared directory), wait
    `hold` seconds (`during` runs on the host then), then switch to `then`
    if given.  Returns the probe's output."""
    new = system(g, extra)
    back = system(g, then) if then is not None else None
    closure = subprocess.run(
        ["nix-store", "-qR", str(new), *([str(back)] if back else [])], capture_output=True, text=True, check=True
    )
    dump = subprocess.run(["nix-store", "--dump-db", *closure.stdout.split()], capture_output=True, check=True)
    loaded = subprocess.run(g.ssh_argv("nix-store", "--load-db"), input=dump.stdout, capture_output=True, check=False)
    assert loaded.returncode == 0, loaded.stderr
    out = g.dir / "shared" / "probe.out"
    done = g.dir / "shared" / "probe.done"
    ready = g.dir / "shared" / "probe.ready"
    for f in (out, done, ready):
        f.unlink(missing_ok=True)
    script = (
        f"{new}/bin/switch-to-configuration test > /tmp/shared/switch.log 2>&1; sleep 2;"
        f" ( {probe} ) > /tmp/shared/probe.out 2>&1; touch /tmp/shared/probe.ready; sleep {hold};"
        + (f" {back}/bin/switch-to-configuration test >> /tmp/shared/switch.log 2>&1;" if back else "")
        + " echo $? > /tmp/shared/probe.done"
    )
    started = g.ssh(
        "systemd-run --collect --unit=rig-switch-" + str(time.monotonic_ns()) + " sh -c " + shlex.quote(script)
    )
    assert started.returncode == 0, started.stderr
    return_at = time.monotonic() + 180
    if during is not None:
        while not ready.exists():
            assert time.monotonic() < return_at, (g.dir / "shared" / "switch.log").read_text()
            time.sleep(0.5)
        during()
    while not done.exists():
        assert time.monotonic() < return_at, (g.dir / "shared" / "switch.log").read_text()
        time.sleep(1)
    assert done.read_text().strip() == "0", (g.dir / "shared" / "switch.log").read_text()
    wait_ssh(g)
    return out.read_text()


def in_peer(g: Guest, command: str) -> subprocess.CompletedProcess[str]:
    return g.ssh(f"ip netns exec peer {command}")


def test_default_firewall_drops_forwarded_connections_to_closed_ports(net: NetGuest) -> None:
    assert net.ssh("systemctl is-active firewall.service").stdout.strip() == "active"
    status = net.ssh("systemctl status --no-pager rig-listener.service")
    assert "Active: active (running)" in status.stdout, status.stdout
    assert "table inet nixos-fw" in net.ssh("nft list tables").stdout
    # The listener answers inside the guest (lo is trusted) ...
    assert net.ssh("python3 /root/connect.py 127.0.0.1 8080").stdout.strip() == "hello 127.0.0.1"
    # ... but QEMU's forwarded connection from 10.0.2.2 arrives on eth0: dropped.
    assert knock(net.web) == "timeout"
    # SSH (port 22) is open: services.openssh.openFirewall.


def test_allowed_port_opens_then_closes_with_a_reload(net: NetGuest) -> None:
    result = switch(net, "networking.firewall.allowedTCPPorts = [ 8080 ];")
    assert "reloading the following units: firewall.service" in result.stderr
    assert knock(net.web) == "hello 10.0.2.2"
    switch(net, "networking.firewall.allowedTCPPortRanges = [ { from = 8000; to = 8100; } ];")
    assert knock(net.web) == "hello 10.0.2.2"
    switch(net)
    assert knock(net.web) == "timeout"


def test_reject_packets_resets_instead_of_dropping(net: NetGuest) -> None:
    switch(net, "networking.firewall.rejectPackets = true;")
    t0 = time.monotonic()
    assert knock(net.web, timeout=10) == "closed"
    assert time.monotonic() - t0 < 5
    assert in_peer(net, "python3 /root/connect.py 192.168.99.1 8080").stdout.strip() == "refused"
    switch(net)
    assert in_peer(net, "python3 /root/connect.py 192.168.99.1 8080").stdout.strip() == "timeout"


def test_disabled_firewall_stops_the_unit_and_removes_the_rules(net: NetGuest) -> None:
    result = switch(net, "networking.firewall.enable = false;")
    assert "stopping the following units: firewall.service" in result.stderr
    assert "nixos-fw" not in net.ssh("nft list tables").stdout
    assert knock(net.web) == "hello 10.0.2.2"
    switch(net)
    assert "table inet nixos-fw" in net.ssh("nft list tables").stdout
    assert knock(net.web) == "timeout"


def test_allow_ping(net: NetGuest) -> None:
    assert in_peer(net, "python3 /root/ping.py 192.168.99.1").returncode == 0  # default: allowPing = true
    switch(net, "networking.firewall.allowPing = false;")
    assert in_peer(net, "python3 /root/ping.py 192.168.99.1").returncode != 0
    switch(net)
    assert in_peer(net, "python3 /root/ping.py 192.168.99.1").returncode == 0


def test_interface_ports_and_trusted_interfaces(net: NetGuest) -> None:
    switch(net, "networking.firewall.interfaces.veth0.allowedTCPPorts = [ 8080 ];")
    assert in_peer(net, "python3 /root/connect.py 192.168.99.1 8080").stdout.strip() == "hello 192.168.99.2"
    assert knock(net.web) == "timeout"  # eth0 is not veth0
    switch(net, 'networking.firewall.trustedInterfaces = [ "veth0" ]; networking.firewall.allowPing = false;')
    assert in_peer(net, "python3 /root/connect.py 192.168.99.1 8080").stdout.strip() == "hello 192.168.99.2"
    assert in_peer(net, "python3 /root/ping.py 192.168.99.1").returncode == 0  # trusted: everything
    assert knock(net.web) == "timeout"
    switch(net)


def test_default_dhcp_gives_the_slirp_address(net: NetGuest) -> None:
    addr = net.ssh("ip -4 -o addr show dev eth0").stdout
    assert "inet 10.0.2.15/24" in addr and "dynamic" in addr
    assert net.ssh("readlink -f /etc/systemd/network/80-rig-fallback.network").stdout.strip() == "/dev/null"
    assert "default via 10.0.2.2 dev eth0" in net.ssh("ip -4 route").stdout
    resolv = net.ssh("cat /etc/resolv.conf").stdout
    assert "nameserver 10.0.2.3" in resolv.splitlines()


def test_static_address_gateway_and_nameservers(net: NetGuest) -> None:
    probe = switch_detached(
        net,
        "networking.useDHCP = false;\n"
        'networking.interfaces.eth0.ipv4.addresses = [ { address = "10.0.2.15"; prefixLength = 24; }'
        ' { address = "192.168.77.7"; prefixLength = 24; } ];\n'
        'networking.defaultGateway = "10.0.2.2";\n'
        'networking.nameservers = [ "10.0.2.3" "9.9.9.9" ];',
    )
    assert probe == ""
    addr = net.ssh("ip -4 -o addr show dev eth0").stdout
    assert "inet 10.0.2.15/24" in addr and "inet 192.168.77.7/24" in addr
    assert "dynamic" not in addr  # no DHCP lease
    assert "default via 10.0.2.2 dev eth0" in net.ssh("ip -4 route").stdout
    resolv = net.ssh("cat /etc/resolv.conf").stdout.splitlines()
    assert [line for line in resolv if line.startswith("nameserver")] == ["nameserver 10.0.2.3", "nameserver 9.9.9.9"]
    # Back to DHCP: the static addresses go.
    switch_detached(net, "")
    addr = net.ssh("ip -4 -o addr show dev eth0").stdout
    assert "192.168.77.7" not in addr and "dynamic" in addr


def unreachable(g: Guest) -> None:
    """No SSH banner: QEMU accepts the connection but cannot reach the guest."""
    with socket.create_connection(("127.0.0.1", g.port), timeout=5) as s:
        s.settimeout(5)
        try:
            banner = s.recv(100)
        except TimeoutError:
            banner = b""
    assert not banner.startswith(b"SSH-"), banner


def test_no_dhcp_where_not_configured(net: NetGuest) -> None:
    # As on NixOS in a VM whose NIC is eth0: DHCP on ens3 only leaves eth0
    # without an address, and the host cannot reach the guest at all.
    probe = switch_detached(
        net,
        "networking.useDHCP = false; networking.interfaces.ens3.useDHCP = true;",
        probe="ip -4 -o addr show dev eth0; echo ---; cat /etc/resolv.conf",
        hold=15,
        then="networking.useDHCP = false; networking.interfaces.eth0.useDHCP = true;",
        during=lambda: unreachable(net),
    )
    addr, resolv = probe.split("---\n")
    assert "inet " not in addr
    assert "nameserver" not in resolv  # no DHCP anywhere, no nameservers
    # Then (inside the same transient unit) DHCP on eth0 by name: an address again.
    assert net.ssh("cat /etc/systemd/network/40-eth0.network").stdout.count("DHCP=yes") == 1
    assert "inet 10.0.2.15/24" in net.ssh("ip -4 -o addr show dev eth0").stdout
    assert "nameserver 10.0.2.3" in net.ssh("cat /etc/resolv.conf").stdout.splitlines()
    switch(net)

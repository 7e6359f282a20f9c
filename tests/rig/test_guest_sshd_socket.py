"""A booted guest whose sshd is socket-activated on port 2222, with
PermitRootLogin = "no": root is refused, a normal user with a key logs in."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import fixed_fripon
from tests.rig.test_guest import build, free_port, start_runner, stop_runner

pytestmark = pytest.mark.e2e


def ssh(d: Path, port: int, user: str, *command: str) -> subprocess.CompletedProcess[str]:
    argv = [
        "ssh", "-p", str(port), "-i", str(d / "id"), "-o", "IdentitiesOnly=yes",
        "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={d / 'known_hosts'}", "-o", "ConnectTimeout=5",
        f"{user}@127.0.0.1", "--", *command,
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def test_socket_activated_sshd_refuses_root_and_lets_a_user_in(guest_image: Path, tmp_path: Path) -> None:
    d = tmp_path
    (d / "shared").mkdir()
    for key, comment in (("id", "test"), ("shared/host_key", "fripon")):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(d / key)], check=True)
    pub = (d / "id.pub").read_text().strip()
    port = free_port()
    host_pub = (d / "shared" / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    conf = fixed_fripon(
        d / "conf",
        extra=f"""
  users.users.root.openssh.authorizedKeys.keys = [ "{pub}" ];
  users.users.alice = {{ isNormalUser = true; extraGroups = [ "wheel" ]; openssh.authorizedKeys.keys = [ "{pub}" ]; }};
  services.openssh.settings.PermitRootLogin = lib.mkForce "no";
  services.openssh.startWhenNeeded = true;
  services.openssh.ports = [ 2222 ];
  virtualisation.vmVariant.services.openssh.hostKeys = lib.mkForce [ {{ type = "ed25519"; path = "/tmp/shared/host_key"; }} ];
""",
    )
    vm = build(conf, "vm")
    proc = start_runner(d, vm, f"hostfwd=tcp:127.0.0.1:{port}-:2222")
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 240:
            assert proc.poll() is None, (d / "runner.log").read_text()
            if ssh(d, port, "alice", "true").returncode == 0:
                break
            time.sleep(1)
        else:
            pytest.fail("no SSH for alice after 240 s:\n" + (d / "console.log").read_text()[-3000:])
        assert ssh(d, port, "alice", "id", "-un").stdout.strip() == "alice"
        assert "wheel" in ssh(d, port, "alice", "id", "-Gn").stdout.split()
        root = ssh(d, port, "root", "true")
        assert root.returncode == 255 and "Permission denied" in root.stderr, root.stderr
        # Socket activation (systemctl needs root here; root may not log in):
        # systemd (pid 1) holds the listening socket on 2222, sshd runs only
        # per connection (`sshd -i`), never as a daemon (`sshd -D`).
        listening = ssh(d, port, "alice", "cat", "/proc/net/tcp", "/proc/net/tcp6").stdout
        assert any(
            f.split()[1].endswith(":08AE") and f.split()[3] == "0A"
            for f in listening.splitlines()[1:]
            if f.split()[0] != "sl"
        )
        procs = ssh(d, port, "alice", "ps", "-eo", "args").stdout
        assert "sshd -D" not in procs and "sshd: alice" in procs, procs
        units = ssh(d, port, "alice", "ls", "/etc/systemd/system").stdout.split()
        assert "sshd.socket" in units and "sshd@.service" in units and "sshd.service" not in units
        # sshd-keygen found the host key there and left it alone.
        assert ssh(d, port, "alice", "cat", "/tmp/shared/host_key.pub").stdout.split()[:2] == host_pub[:2]
    finally:
        stop_runner(proc)

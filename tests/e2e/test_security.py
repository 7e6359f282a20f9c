"""Issue 10's security items against a booted VM: a guest that plants
symlinks in its shared directory, and a user ssh configuration that would
send rehearse's connections elsewhere. The VM is isolated (`up --isolate`,
issue 22): it reaches no service of the host, while its forwards work."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import fixed_fripon
from tests.e2e.conftest import Rehearse, include, reaches_host

pytestmark = pytest.mark.e2e

NAME = "secvm"


@pytest.fixture(scope="module")
def secvm(rehearse: Rehearse, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    conf = fixed_fripon(tmp_path_factory.mktemp("secvm"))
    result = rehearse("up", str(conf), *include(), "--name", NAME, "--isolate")
    assert result.returncode == 0, result.stderr[-4000:]
    yield NAME
    rehearse("destroy", NAME, "--timeout", "5")


def in_guest(rehearse: Rehearse, line: str) -> str:
    result = rehearse("ssh", NAME, "--", line, timeout=120)
    assert result.returncode == 0, (line, result.stderr)
    return result.stdout


def test_the_guest_cannot_make_up_write_host_files(rehearse: Rehearse, secvm: str, tmp_path: Path) -> None:
    vmdir = rehearse.state / secvm
    pinned = (vmdir / "known_hosts").read_text()
    # The attack, with a file of the test as the victim: the guest's
    # link points at a host path, which the host would follow.
    victim = tmp_path / "authorized_keys"
    victim.write_text("ssh-ed25519 AAAA precious\n")
    in_guest(
        rehearse,
        "cd /tmp/shared && rm -f ssh_host_ed25519_key ssh_host_ed25519_key.pub && "
        f"ln -s {victim} ssh_host_ed25519_key.pub && mkdir d && ln -s {tmp_path} d/up",
    )
    assert os.readlink(vmdir / "shared" / "ssh_host_ed25519_key.pub") == str(victim)  # planted, seen by the host

    down = rehearse("down", secvm)
    assert down.returncode == 0, down.stderr
    up = rehearse("up", secvm)
    assert victim.read_text() == "ssh-ed25519 AAAA precious\n"
    assert [p.name for p in tmp_path.iterdir()] == ["authorized_keys"]
    assert up.returncode == 0, up.stderr[-3000:]
    # The VM came up with the key pinned before (strict checking, same pin),
    # which the host keeps in the VM's state directory.
    assert (vmdir / "known_hosts").read_text() == pinned
    host_pub = (vmdir / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    assert pinned.split()[1:] == host_pub
    assert in_guest(rehearse, "cat /var/lib/rehearse/ssh_host_ed25519_key.pub").split()[:2] == host_pub
    # Once sshd has it, the host key is gone from the share; nothing planted is left.
    assert in_guest(rehearse, "ls -A /tmp/shared") == ""
    assert list((vmdir / "shared").iterdir()) == []


def test_a_hostile_user_ssh_config_does_not_break_rehearse(rehearse: Rehearse, secvm: str, tmp_path: Path) -> None:
    """`Host *  ProxyCommand false` in the user's ~/.ssh/config would make
    every ssh fail. ssh finds ~ in the password database, not in $HOME: the
    command runs in a private mount namespace whose /etc/passwd gives this
    user the test's home."""
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True, check=False).returncode != 0:
        pytest.skip("no private mount namespace here (unshare --mount needs privileges)")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text("Host *\n  ProxyCommand false\n  ForwardAgent yes\n")
    me = str(os.getuid())
    lines = []
    for line in Path("/etc/passwd").read_text().splitlines():
        f = line.split(":")
        if len(f) == 7 and f[2] == me:
            f[5] = str(home)
        lines.append(":".join(f))
    (tmp_path / "passwd").write_text("\n".join(lines) + "\n")

    def hostile(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *("unshare", "--mount", "--propagation", "private"),
                *("sh", "-c", 'mount --bind "$0" /etc/passwd && exec "$@"', str(tmp_path / "passwd")),
                *argv,
            ],
            env=rehearse.env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )

    vmdir = rehearse.state / secvm
    port = rehearse.vm(secvm)["ssh"].split(":")[1]
    # The rig works: a plain ssh under that configuration fails.
    plain = hostile(
        "ssh",
        *("-p", port, "-i", str(vmdir / "id_ed25519"), "-o", "BatchMode=yes", "-o", "ControlPath=none"),
        *("-o", f"UserKnownHostsFile={vmdir / 'known_hosts'}", "-o", f"HostKeyAlias=rehearse-{secvm}"),
        "root@127.0.0.1",
        "true",
    )
    assert plain.returncode != 0
    # No master left from earlier commands: the next one connects anew.
    subprocess.run(
        ["ssh", "-F", "none", "-o", f"ControlPath={vmdir / 'ssh.ctl'}", "-O", "exit", "root@127.0.0.1"],
        capture_output=True,
        check=False,
    )
    result = hostile(sys.executable, "-m", "rehearse", "ssh", secvm, "--", "hostname; echo ${SSH_AUTH_SOCK:-none}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["fripon", "none"]  # connected, and no agent forwarded
    gens = hostile(sys.executable, "-m", "rehearse", "generations", secvm)
    assert gens.returncode == 0, gens.stderr


def test_an_isolated_guest_reaches_no_host_service(rehearse: Rehearse, secvm: str) -> None:
    """QEMU's restrict=on: a port on the host's 127.0.0.1 is closed to the
    guest (test_up.py's VM, not isolated, reaches it), while rehearse's SSH
    forward works. Isolation outlives the `down`/`up` above (an `up NAME`
    without --isolate)."""
    assert rehearse.vm(secvm)["isolated"] is True
    assert not reaches_host(rehearse, secvm)
    status = rehearse("status")
    assert any(line.split()[:1] == ["isolated:"] for line in status.stdout.splitlines()), status.stdout

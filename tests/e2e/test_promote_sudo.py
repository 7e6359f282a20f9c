"""promote to a non-root user, end to end: `deploy@HOST --sudo` (sudo -n) and
`--ask-sudo-password` (asked on the terminal, given to sudo on stdin), to the
rig's stand-in for a server (its own store, reached by `deploy` through its
nix-daemon as a trusted user; root through sudo). One VM and one stand-in
for the module; the promotions follow each other:

1. sudo without a password (wheelNeedsPassword = false): `--sudo` switches;
2. to a system whose sudo wants the password, with it (`--ask-sudo-password`);
3. then `--sudo` alone is refused before anything is copied, and so is a
   wrong password; the right one switches again, every command through
   `sudo --prompt= --stdin`, the activation's script after the password on
   the same stdin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import on_a_terminal
from tests.e2e.conftest import Config, Rehearse, booted
from tests.e2e.test_promote import SERVER, Server

pytestmark = pytest.mark.e2e

NAME = "prosudo"
PASSWORD = "deploy's password"
# `openssl passwd -6 -salt rehearsetestsalt "deploy's password"`: SHA-512 crypt, which the
# guest checks at once; Debian's default (yescrypt) costs seconds of emulated CPU a sudo.
HASH = "$6$rehearsetestsalt$f7ytlXBu9zr4DXdXXYxuu2XJKCaPEN3sLTMGtrqwSfyIts60iNPIx4l3COCE.LIjBAiWeWEjFvWCM1OOhiG8e/"


def server_text(key: Path, *, sudo_password: bool, promoted: str) -> str:
    """fripon as the stand-in runs it, with its deployer `deploy`: in wheel, a trusted user
    of the server's Nix, logging in with `key`."""
    return (
        SERVER
        + f"""
  users.users.deploy = {{ isNormalUser = true; extraGroups = [ "wheel" ]; hashedPassword = "{HASH}";
    openssh.authorizedKeys.keyFiles = [ {key}.pub ]; }};
  nix.settings.trusted-users = [ "deploy" ];
  security.sudo.wheelNeedsPassword = {"true" if sudo_password else "false"};
  environment.etc."promoted".text = "{promoted}";
"""
    )


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("deployer") / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def vm(rehearse: Rehearse, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    yield from booted(rehearse, tmp_path_factory, NAME)


@pytest.fixture(scope="module")
def server(guest_image: Path, key: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The stand-in, installed with fripon and its deployer, sudo without a password. Booted
    from this run's guest image (the one with sudo), not whichever `guest` names now."""
    base = Config(tmp_path_factory.mktemp("sudo-server-conf"))
    base.set(server_text(key, sudo_password=False, promoted="none"))
    s = Server(tmp_path_factory.mktemp("sudo-server") / "machine", "", 0, Path(), Path())
    s.start(base.path, image=guest_image)
    yield s
    s.stop()


def rehearse_deploy(rehearse: Rehearse, vm: Config, key: Path, *, sudo_password: bool, promoted: str) -> None:
    vm.set(server_text(key, sudo_password=sudo_password, promoted=promoted))
    r = rehearse("deploy", NAME, "--yes")
    assert r.returncode == 0, r.stderr[-3000:]


def promote(
    rehearse: Rehearse, server: Server, key: Path, *args: str, password: str | None = None
) -> tuple[int, dict[str, Any], str, bytes]:
    """`rehearse promote` to deploy@ the stand-in, as its user runs it: their key and
    known_hosts in NIX_SSHOPTS; with `password`, typed on its terminal when it asks.
    The exit code, the --json document, stderr and what the terminal showed."""
    home = rehearse.state.parent / "home"
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    env = rehearse.env(HOME=str(home), NIX_SSHOPTS=f"-i {key} -o UserKnownHostsFile={server.known_hosts}")
    argv = ["promote", NAME, "--to", f"deploy@{server.host}:{server.port}", "--yes", "--json", *args]
    if password is None:
        r = rehearse(*argv, env=env)
        return r.returncode, json.loads(r.stdout), r.stderr, b""
    code, out, err, shown = on_a_terminal(
        [sys.executable, "-m", "rehearse", *argv, "--ask-sudo-password"],
        password.encode() + b"\n",
        cwd=rehearse.cwd,
        env=env,
    )
    return code, json.loads(out), err, shown


def as_deploy(server: Server, key: Path, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-F", "none", "-i", str(key), "-o", f"UserKnownHostsFile={server.known_hosts}",
         "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-p", str(server.port),
         f"deploy@{server.host}", command],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def nowhere(rehearse: Rehearse, secret: str, *texts: str | bytes) -> None:
    """`secret` is in none of `texts` and in no file rehearse keeps."""
    for text in texts:
        assert (secret.encode() if isinstance(text, bytes) else secret) not in text
    for f in rehearse.state.rglob("*"):
        if f.is_file() and f.stat().st_size < 1 << 24:  # not the VM's disk
            assert secret.encode() not in f.read_bytes(), f


def test_sudo_without_a_password_switches_the_server(rehearse: Rehearse, vm: Config, server: Server, key: Path) -> None:
    rehearse_deploy(rehearse, vm, key, sudo_password=False, promoted="one")
    before = server.ssh("readlink /run/current-system")
    code, report, err, _ = promote(rehearse, server, key, "--sudo")
    assert code == 0, err
    assert report["result"] == "confirmed" and report["old_system"] == before
    system = report["new_system"]
    assert server.ssh("readlink /run/current-system") == system
    assert server.ssh("cat /boot/rig/default") == system  # switch: the boot entry too, as root
    assert server.ssh("cat /etc/promoted") == "one"
    # deploy's copy went through the server's nix-daemon: root wrote it.
    assert server.ssh(f"stat -c %U {system}") == "root"


def test_the_password_switches_to_a_system_whose_sudo_wants_it(
    rehearse: Rehearse, vm: Config, server: Server, key: Path
) -> None:
    """Asked on the terminal; sudo wants none at first (it goes to nothing), then the new
    system's sudo wants it for the checks and the confirmation."""
    rehearse_deploy(rehearse, vm, key, sudo_password=True, promoted="two")
    code, report, err, shown = promote(rehearse, server, key, password=PASSWORD)
    assert code == 0, err
    assert report["result"] == "confirmed"
    assert shown.startswith(f"[sudo] password for deploy@{server.host}:{server.port}: ".encode())
    assert server.ssh("readlink /run/current-system") == report["new_system"]
    assert server.ssh("cat /etc/promoted") == "two"
    refused = as_deploy(server, key, "sudo -n true")
    assert refused.returncode == 1 and "a password is required" in refused.stderr
    nowhere(rehearse, PASSWORD, err, json.dumps(report), shown)


def test_sudo_alone_is_refused_and_nothing_is_copied(rehearse: Rehearse, vm: Config, server: Server, key: Path) -> None:
    rehearse_deploy(rehearse, vm, key, sudo_password=True, promoted="three")
    before = server.ssh("readlink /run/current-system")
    code, report, err, _ = promote(rehearse, server, key, "--sudo")
    assert code == 2, err
    assert "wants a password" in err and "--ask-sudo-password" in err
    assert report["result"] == "error" and "nothing was copied or activated" in report["error"]
    assert server.ssh("readlink /run/current-system") == before
    assert server.ssh(f"test -e {built(rehearse)} && echo there || echo absent") == "absent"


def built(rehearse: Rehearse) -> str:
    """The server's system that promote built last (its GC root beside the VM's state)."""
    return os.readlink(rehearse.state / NAME / "promote-next")


def test_a_wrong_password_is_refused_and_nothing_is_copied(
    rehearse: Rehearse, vm: Config, server: Server, key: Path
) -> None:
    before = server.ssh("readlink /run/current-system")
    wrong = "not deploy's password"
    code, report, err, shown = promote(rehearse, server, key, password=wrong)
    assert code == 1, err
    assert "refused the password" in err and "nothing was copied or activated" in err
    assert report["result"] == "error"
    assert server.ssh("readlink /run/current-system") == before
    assert server.ssh(f"test -e {built(rehearse)} && echo there || echo absent") == "absent"
    nowhere(rehearse, wrong, err, json.dumps(report), shown)


def test_the_password_switches_the_server_through_sudo_all_along(
    rehearse: Rehearse, vm: Config, server: Server, key: Path
) -> None:
    """Every command through `sudo --prompt= --stdin`, which reads the password each time;
    the activation's script follows it on the same stdin. --debug shows each command."""
    code, report, err, shown = promote(rehearse, server, key, "--debug", password=PASSWORD)
    assert code == 0, err
    assert report["result"] == "confirmed"
    assert "sudo --prompt= --stdin" in err  # the commands, as --debug shows them
    assert server.ssh("readlink /run/current-system") == report["new_system"] == built(rehearse)
    assert server.ssh("cat /boot/rig/default") == report["new_system"]
    assert server.ssh("cat /etc/promoted") == "three"
    nowhere(rehearse, PASSWORD, err, json.dumps(report), shown)

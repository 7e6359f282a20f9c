"""Real servers' configurations, end to end on one booted VM: a hardened
server (root login off, sshd on another port, AllowUsers, the firewall on, a
static network on a named interface) is reached through rehearse's own
management channel, and its own sshd stays under test: a deploy that would
lock its users out is rolled back at once, naming why."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Config, Rehearse, include

pytestmark = pytest.mark.e2e

NAME = "srv"
ALICE = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPnhoJD76/JVrDy8bO4R0+xKbo77PmL9e176uqZA/iLV alice@laptop"

HARDENED = f"""
  services.openssh.ports = [ 2222 ];
  services.openssh.settings.PermitRootLogin = lib.mkForce "no";
  services.openssh.settings.PasswordAuthentication = false;
  services.openssh.settings.AllowUsers = [ "alice" ];
  users.users.alice = {{ isNormalUser = true; extraGroups = [ "wheel" ]; openssh.authorizedKeys.keys = [ "{ALICE}" ]; }};
  networking.firewall.enable = true;
  networking.useDHCP = false;
  networking.interfaces.ens3.ipv4.addresses = [ {{ address = "203.0.113.10"; prefixLength = 24; }} ];
  networking.defaultGateway = "203.0.113.1";
  networking.nameservers = [ "203.0.113.53" ];
"""


SERVER_ONLY_FAILURE = "  fileSystems = lib.mkForce { };"
ROOT_FS_MISSING = "The ‘fileSystems’ option does not specify your root file system."


@pytest.fixture(scope="module")
def vm(rehearse: Rehearse, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    conf = Config(tmp_path_factory.mktemp(f"{NAME}-conf"))
    # Booted first with what only the server fails (its root file system
    # forgotten; the VM variant has its own): `up` warns of it (issue 24,
    # item 10). The module's tests then deploy their own configurations.
    conf.set(HARDENED + SERVER_ONLY_FAILURE)
    result = rehearse("up", str(conf.path), *include(), "--name", NAME)
    assert result.returncode == 0, result.stderr[-3000:]
    conf.up_stderr = result.stderr  # type: ignore[attr-defined]
    yield conf
    rehearse("destroy", NAME, "--timeout", "10")


def current(rehearse: Rehearse) -> str:
    return rehearse("ssh", NAME, "--", "readlink", "/run/current-system").stdout.strip()


def deploy(rehearse: Rehearse, *args: str) -> tuple[int, str, float]:
    t0 = time.monotonic()
    result = rehearse("deploy", NAME, "--yes", *args)
    return result.returncode, result.stderr, time.monotonic() - t0


def server_login(rehearse: Rehearse, user: str) -> subprocess.CompletedProcess[str]:
    """A login through the server's own sshd, on its forward, with the VM's
    key (which rehearse authorized, in the VM only, for alice); its host key
    read through rehearse's channel first."""
    state = rehearse.state / NAME
    forward = next(f for f in rehearse.vm(NAME)["server_ssh"] if f["guest"] == 2222)
    key = rehearse("ssh", NAME, "--", "cat", "/etc/ssh/ssh_host_ed25519_key.pub").stdout.split()
    known = state / "test_known_hosts"
    known.write_text(f"[127.0.0.1]:{forward['host']} {key[0]} {key[1]}\n")
    return subprocess.run(
        ["ssh", "-F", "none", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", str(state / "id_ed25519"),
         "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10",
         "-p", str(forward["host"]), f"{user}@127.0.0.1", "--", "id", "-un"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def test_hardened_server_comes_up_and_rehearse_ssh_works(rehearse: Rehearse, vm: Config) -> None:
    assert rehearse("ssh", NAME, "--", "id", "-un").stdout.strip() == "root"
    status = rehearse.vm(NAME)
    assert [f["guest"] for f in status["server_ssh"]] == [2222]
    overrides = "\n".join(status["overrides"])
    assert "networking.defaultGateway = 203.0.113.1" in overrides
    assert "networking.interfaces.ens3" in overrides and "eth0.useDHCP" in overrides
    table = rehearse("status").stdout
    assert "the server's own sshd (port 2222)" in table and "overridden for the VM" in table
    # The static address is there, on an interface the VM does not have.
    addresses = rehearse("ssh", NAME, "--", "ip", "-4", "-o", "addr").stdout
    assert "203.0.113.10" not in addresses and "10.0.2.15" in addresses


def test_server_sshd_refuses_what_its_configuration_refuses(rehearse: Rehearse, vm: Config) -> None:
    alice = server_login(rehearse, "alice")
    assert alice.returncode == 0 and alice.stdout.strip() == "alice", alice.stderr
    root = server_login(rehearse, "root")
    assert root.returncode == 255 and "Permission denied" in root.stderr, root.stderr


def test_rollback_after_the_first_deploy_returns_to_the_booted_system(rehearse: Rehearse, vm: Config) -> None:
    booted = current(rehearse)
    vm.set(HARDENED + '  environment.etc."motd".text = "first deploy";')
    code, err, _ = deploy(rehearse)
    assert code == 0, err
    assert "the server's sshd on port 2222: alice logged in" in err
    gens = json.loads(rehearse("generations", NAME, "--json").stdout)
    assert [g["system"] for g in gens][-2] == booted
    result = rehearse("rollback", NAME)
    assert result.returncode == 0, result.stderr
    assert current(rehearse) == booted


def test_closing_the_ssh_port_is_rolled_back_at_once(rehearse: Rehearse, vm: Config) -> None:
    before = current(rehearse)
    vm.set(HARDENED + "  services.openssh.openFirewall = false;")
    code, err, took = deploy(rehearse, "--confirm-timeout", "120")
    print(f"deploy closing the SSH port, rolled back: {took:.1f} s")
    assert code == 4, err
    assert "the server's own SSH would lock you out (port 2222:" in err
    assert took < 120  # the guest did not wait out its confirmation window
    assert current(rehearse) == before
    assert server_login(rehearse, "alice").returncode == 0


def test_allow_users_locking_every_user_out_is_rolled_back(rehearse: Rehearse, vm: Config) -> None:
    before = current(rehearse)
    vm.set(HARDENED.replace('AllowUsers = [ "alice" ]', 'AllowUsers = [ "bob" ]'))
    code, err, _ = deploy(rehearse, "--confirm-timeout", "120")
    assert code == 4, err
    assert "every authorized user was refused" in err and "alice" in err
    assert current(rehearse) == before


def test_socket_activated_sshd(rehearse: Rehearse, vm: Config) -> None:
    vm.set(HARDENED + "  services.openssh.startWhenNeeded = true;")
    code, err, _ = deploy(rehearse)
    assert code == 0, err
    assert "the server's sshd on port 2222: alice logged in" in err
    units = rehearse("ssh", NAME, "--", "systemctl", "is-active", "sshd.socket", "sshd.service").stdout.split()
    assert units[0] == "active" and units[1] != "active"
    assert server_login(rehearse, "alice").returncode == 0


def test_a_new_server_host_key_is_pinned_again(rehearse: Rehearse, vm: Config) -> None:
    """The check tries the host keys an earlier check pinned; a server that
    shows another (here a new key file) is read again through rehearse's
    channel, never trusted on first use."""
    other = "/etc/ssh/other_host_ed25519_key"
    vm.set(HARDENED + f'  services.openssh.hostKeys = [ {{ type = "ed25519"; path = "{other}"; }} ];')
    code, err, _ = deploy(rehearse)
    assert code == 0, err
    assert "the server's sshd on port 2222: alice logged in" in err
    shown = rehearse("ssh", NAME, "--", "cat", f"{other}.pub").stdout.split()
    pinned = (rehearse.state / NAME / "server_known_hosts").read_text().split()
    assert pinned[1:3] == shown[:2]


def test_server_only_assertion_is_reported(rehearse: Rehearse, vm: Config) -> None:
    """The VM variant has a root file system of its own (qemu-vm.nix); the
    server without its hardware configuration's would not build."""
    vm.set(HARDENED + SERVER_ONLY_FAILURE)
    code, err, _ = deploy(rehearse, "--json")
    assert code == 0, err
    assert "the server itself could not build this configuration" in err
    assert ROOT_FS_MISSING in err


def test_a_new_sshd_port_is_forwarded_while_the_vm_runs(rehearse: Rehearse, vm: Config) -> None:
    vm.set(HARDENED.replace("ports = [ 2222 ]", "ports = [ 2022 ]"))  # sshd moves to another port
    code, err, _ = deploy(rehearse)
    assert code == 0, err
    assert "the server's sshd port 2022 is now forwarded from 127.0.0.1:" in err
    assert "the server's sshd on port 2022: alice logged in" in err
    # status is current: the old port's line goes (issue 24, item 11)
    assert [f["guest"] for f in rehearse.vm(NAME)["server_ssh"]] == [2022]
    table = rehearse("status").stdout
    assert "the server's own sshd (port 2022)" in table and "(port 2222)" not in table


def test_no_ssh_check_lets_a_server_without_ssh_through(rehearse: Rehearse, vm: Config) -> None:
    """For a server reached otherwise (a console): the user says so."""
    vm.set(HARDENED + "  services.openssh.openFirewall = false;")
    code, err, _ = deploy(rehearse, "--no-ssh-check")
    assert code == 0, err
    assert "the server's sshd on port" not in err
    assert rehearse("ssh", NAME, "--", "true").returncode == 0  # the management channel is not the server's


def test_reboot_required_is_neither_success_nor_rolled_back(rehearse: Rehearse, vm: Config) -> None:
    before = current(rehearse)
    vm.set(HARDENED + "  systemd.package = pkgs.systemd // { interfaceVersion = 3; };")
    result = rehearse("deploy", NAME, "--yes", "--json")
    assert result.returncode == 8, result.stderr
    assert "reboot required" in result.stderr
    report = json.loads(result.stdout)
    assert report["result"] == "reboot-required"
    assert current(rehearse) == before  # nothing activated, nothing rolled back
    gens = json.loads(rehearse("generations", NAME, "--json").stdout)
    assert next(g for g in gens if g["current"])["system"] == report["new_system"]  # the next boot's
    assert Path(report["new_system"]).exists()


def test_up_warns_once_that_the_server_itself_would_not_build(rehearse: Rehearse, vm: Config) -> None:
    text = vm.up_stderr  # type: ignore[attr-defined]
    assert "the server itself could not build this configuration" in text
    assert text.count(ROOT_FS_MISSING) == 1, text
    assert text.index(ROOT_FS_MISSING) > text.index(f"{NAME} is up after")  # the VM booted all the same


def test_seed_configuration_shows_the_two_real_warnings(rehearse: Rehearse, vm: Config) -> None:
    text = vm.up_stderr  # type: ignore[attr-defined]
    assert "evaluation warning: The option `services.openssh.permitRootLogin' defined in" in text
    assert "has been renamed to `services.openssh.settings.PermitRootLogin'" in text
    assert "boot.loader.grub.version" in text and "does not have any effect anymore" in text

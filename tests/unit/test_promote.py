"""`rehearse promote` at the argv level: the target, the user's own SSH world
for the real server, the rehearsal guard, the checks made the server's."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from rehearse import config
from rehearse.commands import cli
from rehearse.config import Check
from rehearse.core.errors import ExitCode, RehearseError
from rehearse.core.values import Address
from rehearse.host import nix, ssh
from rehearse.pipeline import promote
from rehearse.store import history
from rehearse.store.state import VMDir, VMState
from rehearse.targets.target import Server, check_for_server


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("root@fripon.example.org", Address("fripon.example.org", "root", 0)),
        ("admin@203.0.113.10:2222", Address("203.0.113.10", "admin", 2222)),
        ("fripon", Address("fripon", "", 0)),
        ("root@[2001:db8::1]:22", Address("2001:db8::1", "root", 22)),
    ],
)
def test_targets(text: str, target: Address) -> None:
    assert Address.parse(text) == target
    assert Address.parse(str(target)) == target


@pytest.mark.parametrize(
    "text", ["", "root@", "-oProxyCommand=touch /tmp/x", "root@-oProxyCommand=x", "a b", "root@host:0", "h:70000"]
)
def test_bad_targets_are_usage_errors(text: str) -> None:
    with pytest.raises(RehearseError) as e:
        Address.parse(text)
    assert e.value.exit_code == ExitCode.USAGE


def server(**kw: bool) -> ssh.Remote:
    return Server(Address.parse("admin@fripon.example.org:2222"), VMDir("fripon", Path("/tmp/x")), **kw).remote


def test_the_server_is_reached_in_the_users_own_ssh_world(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIX_SSHOPTS", "-o ProxyJump=bastion -i /home/me/.ssh/deploy")
    argv = ssh.argv(server(), ["true"])
    words = " ".join(argv)
    # Their ~/.ssh/config, agent and known_hosts: nothing of the VM's isolation.
    assert "-F" not in argv and "IdentityAgent=none" not in words and "UserKnownHostsFile" not in words
    assert "-o ProxyJump=bastion -i /home/me/.ssh/deploy" in words  # NIX_SSHOPTS, as nixos-rebuild honours it
    assert "StrictHostKeyChecking=yes" in words and "StrictHostKeyChecking=no" not in words
    assert "BatchMode=yes" in words and "-p 2222" in words
    assert argv[-3:] == ["admin@fripon.example.org", "--", "true"]


def test_accept_new_host_key_and_sudo() -> None:
    argv = ssh.argv(server(accept_new_host_key=True, sudo=True), ["sh", "-c", "echo hi"])
    assert "StrictHostKeyChecking=accept-new" in " ".join(argv)
    assert argv[-1] == "sudo -n sh -c 'echo hi'"


def test_an_unknown_host_key_is_refused_with_its_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        seen.append(argv)
        if argv[0] == "ssh":
            err = "No ED25519 host key is known for [fripon.example.org]:2222 and you have requested strict checking.\n"
            return subprocess.CompletedProcess(argv, 255, "", err + "Host key verification failed.\n")
        if argv[0] == "ssh-keyscan":
            return subprocess.CompletedProcess(argv, 0, "fripon ssh-ed25519 AAAA\n", "")
        return subprocess.CompletedProcess(argv, 0, "256 SHA256:abc fripon (ED25519)\n", "")

    monkeypatch.setattr(ssh.process, "run", run)
    with pytest.raises(RehearseError) as e:
        ssh.run(server(), ["true"])
    assert "is not in your known_hosts" in e.value.message and "SHA256:abc" in e.value.message
    assert "--accept-new-host-key" in (e.value.hint or "")
    assert [a[0] for a in seen] == ["ssh", "ssh-keyscan", "ssh-keygen"]


def test_checks_are_made_the_servers() -> None:
    forwards = {8080: 80, 2443: 443}
    made = [
        check_for_server(c, forwards, "fripon.example.org")
        for c in (
            Check("cmd", "systemctl is-active nginx"),
            Check("tcp", "8080"),
            Check("http", "http://127.0.0.1:2443/health"),
            Check("http", "http://localhost:9999/"),
        )
    ]
    assert made == [
        Check("cmd", "systemctl is-active nginx"),
        Check("tcp", "fripon.example.org:80"),
        Check("http", "http://fripon.example.org:443/health"),
        None,  # names no port the VM forwards
    ]


@pytest.fixture
def vm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> VMDir:
    monkeypatch.setenv("REHEARSE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    vmdir = VMDir("fripon")
    vmdir.create()
    source = nix.Source(configuration=tmp_path / "configuration.nix", include=("nixpkgs=/x",))
    vmdir.save(VMState(name="fripon", source=source.record()))
    return vmdir


def test_an_unrehearsed_revision_is_refused_and_nothing_is_sent(vm: VMDir, monkeypatch: pytest.MonkeyPatch) -> None:
    promote.record_rehearsal(vm, "/nix/store/aaa-nixos-system-fripon.drv", "/nix/store/v-vm", "deploy", ["x"])
    monkeypatch.setattr(
        nix, "server_eval", lambda source, **kw: nix.ServerEval([], "/nix/store/bbb-nixos-system-fripon.drv")
    )

    def nothing(*a: object, **kw: object) -> None:
        raise AssertionError("nothing may be built or sent")

    monkeypatch.setattr(nix, "build_server", nothing)
    monkeypatch.setattr(ssh, "run", nothing)
    with pytest.raises(RehearseError) as e:
        promote.run_promote(promote.PromoteRequest(name="fripon", to=Address.parse("root@srv"), yes=True))
    assert e.value.exit_code == ExitCode.NOT_REHEARSED
    assert e.value.message.startswith("not rehearsed — deploy it to the VM first")
    assert e.value.report is not None and e.value.report["result"] == "not-rehearsed"


def test_the_rehearsal_is_found_by_the_servers_derivation(vm: VMDir) -> None:
    drv = "/nix/store/aaa-nixos-system-fripon.drv"
    assert promote.find_rehearsal(vm, drv) is None
    promote.record_rehearsal(vm, drv, "/nix/store/v1-nixos-system-fripon", "up", ["booted"])
    promote.record_rehearsal(vm, "/nix/store/ccc.drv", "/nix/store/v2", "deploy", [])
    promote.record_rehearsal(vm, drv, "/nix/store/v3-nixos-system-fripon", "deploy", ["the server's own sshd"])
    found = promote.find_rehearsal(vm, drv)
    assert found is not None and found["vm_system"] == "/nix/store/v3-nixos-system-fripon"
    assert "passed: the server's own sshd" in promote.describe_rehearsal(found)
    assert promote.find_rehearsal(vm, None) is None  # a system that does not evaluate was never rehearsed
    assert json.loads(vm.file("rehearsals.json").read_text())  # kept as JSON beside the VM's state


def test_promote_needs_a_target(vm: VMDir, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["promote", "fripon"])
    assert e.value.code == ExitCode.USAGE
    assert "No --to USER@HOST, and rehearse.toml has no [promote] entry for fripon" in capsys.readouterr().err


def test_rehearse_toml_names_the_server(tmp_path: Path) -> None:
    (tmp_path / "rehearse.toml").write_text('[promote]\nfripon = "root@fripon.example.org"\n')
    assert config.load_settings(tmp_path).promote == (("fripon", "root@fripon.example.org"),)
    (tmp_path / "rehearse.toml").write_text('[promote]\nfripon = "-oProxyCommand=x"\n')
    with pytest.raises(RehearseError) as e:
        config.load_settings(tmp_path)
    assert "promote.fripon" in e.value.message and e.value.exit_code == ExitCode.USAGE


def test_deploy_records_nothing_for_a_system_that_does_not_evaluate(vm: VMDir) -> None:
    promote.record_rehearsal(vm, None, "/nix/store/v", "deploy", [])
    assert history.load(vm.file("rehearsals.json")) == []


# --- promote and rollback --server never surprise ---------------------------------------


def nothing_may_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing evaluated, built or sent: every way out of this process fails the test."""

    def nothing(*a: object, **kw: object) -> None:
        raise AssertionError("nothing may be evaluated, built or sent")

    for module, name in ((nix, "server_eval"), (nix, "build_server"), (ssh, "run"), (ssh.process, "run")):
        monkeypatch.setattr(module, name, nothing)


@pytest.mark.parametrize(
    "argv",
    [
        ["promote", "fripon", "--to", "root@srv"],
        ["promote", "fripon", "--to", "root@srv", "--test"],
        ["rollback", "fripon", "--server", "root@srv"],
    ],
)
def test_a_server_is_not_switched_without_a_terminal_or_yes(
    vm: VMDir, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    import io
    import sys

    nothing_may_run(monkeypatch)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # no terminal
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "there is no terminal to ask on: nothing was sent to the server" in err and "--yes" in err


def test_promote_waits_for_no_deploy_it_is_refused_while_the_vm_is_busy(
    vm: VMDir, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import fcntl
    import os

    nothing_may_run(monkeypatch)
    fd = os.open(vm.file("lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"rehearse deploy, pid 4242\n")
        with pytest.raises(SystemExit) as e:
            cli.main(["promote", "fripon", "--to", "root@srv", "--yes"])
    finally:
        os.close(fd)
    assert e.value.code == ExitCode.BUSY
    assert "busy" in capsys.readouterr().err


def test_promote_test_leaves_the_servers_profile_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """--test: activate.sh gets `keep` (no generation, no boot entry), as nixos-rebuild test."""
    from rehearse.targets import activation

    seen: list[list[str]] = []

    class Stop(Exception):
        pass

    def stream(argv: list[str], **kw: object) -> None:
        seen.append(argv)
        raise Stop

    monkeypatch.setattr(activation.process, "stream", stream)
    for keep, tail in ((True, "test keep"), (False, "test")):
        with pytest.raises(Stop):
            activation.activate(server(), "/nix/store/x-sys", 60, activation.Verify(), action="test", keep_profile=keep)
        # activate.sh's arguments (start.sh's ACTIVATE_ARGS, one word of the remote command)
        [args] = re.findall(r"\S+ \S+ /nix/store/x-sys 60 600 [a-z ]+", " ".join(seen[-1]))
        assert args.split(" ", 5)[5] == tail

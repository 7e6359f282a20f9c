"""The core of rehearse on both generations of NixOS VMs, one booted VM:
NixOS 25.11's, whose run script shares the host store over 9p (the mini
nixpkgs rig/nixpkgs, on this host: Nix 2.8, QEMU 7.2), and NixOS 26.11's,
which shares it over virtiofs with a virtiofsd per shared directory and a
shared-memory QEMU (rig/nixpkgs-26.11, run by ./run inside rig/host/enter:
Debian 13's Nix 2.26, QEMU 10 and virtiofsd). REHEARSE_TEST_NIXPKGS names
the mini nixpkgs (rig/nixpkgs by default)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MINI_NIXPKGS, run
from tests.e2e.conftest import Config, Rehearse, booted

pytestmark = [pytest.mark.e2e, pytest.mark.generations]

NAME = "gen"


@pytest.fixture(scope="module")
def vm(rehearse: Rehearse, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    yield from booted(rehearse, tmp_path_factory, NAME)


def share() -> str:
    """How this flavour's run script shares the store: "9p" or "virtiofs"."""
    r = run(["nix-instantiate", "--eval", "--json", "-E", f"(import {MINI_NIXPKGS}/flavour.nix).share"])
    assert r.returncode == 0, r.stderr
    value: str = json.loads(r.stdout)
    return value


def guest(rehearse: Rehearse, command: str) -> str:
    r = rehearse("ssh", NAME, "--", command)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def runner_processes(rehearse: Rehearse) -> list[str]:
    """The command lines of the processes that name the VM's directory:
    its QEMU, and the daemons its run script started (virtiofsd's sockets
    are in the VM's TMPDIR)."""
    vmdir = str(rehearse.state / NAME)
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            argv = (p / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        # Not a Python (this test, a rehearse command): a program the runner started.
        if any(vmdir in a for a in argv) and "python" not in Path(argv[0]).name:
            found.append(" ".join(argv))
    return found


def deploy_json(rehearse: Rehearse, *args: str) -> tuple[int, dict[str, object], str]:
    r = rehearse("deploy", NAME, "--yes", "--json", *args)
    return r.returncode, json.loads(r.stdout), r.stderr


def test_the_store_comes_over_the_flavours_share(rehearse: Rehearse, vm: Config) -> None:
    kind = share()
    print(f"generation: {MINI_NIXPKGS.name}, store over {kind}")
    assert guest(rehearse, "findmnt -n -o FSTYPE /nix/.ro-store") == kind
    # A virtiofsd per shared directory (its sandbox may make it two processes).
    daemons = {c for c in runner_processes(rehearse) if Path(c.split()[0]).name == "virtiofsd"}
    shares = {w.rsplit("/", 1)[1] for c in daemons for w in c.split() if w.startswith("--socket-path=")}
    expected = {"virtiofsd-nix-store.sock", "virtiofsd-shared.sock", "virtiofsd-xchg.sock"}
    assert shares == (expected if kind == "virtiofs" else set()), daemons


def test_small_change_and_a_new_path_are_registered_without_copying(rehearse: Rehearse, vm: Config) -> None:
    vm.set('  environment.etc."generation".text = "first";\n  environment.systemPackages = [ pkgs.hello ];')
    code, report, err = deploy_json(rehearse)
    assert code == 0, err
    assert report["result"] == "confirmed"
    store = report["store"]
    assert isinstance(store, dict) and store["registered"] > 0 and store["copied"] == 0, err
    assert guest(rehearse, "cat /etc/generation") == "first"
    assert "hello 2.12.1" in guest(rehearse, "hello")
    system = guest(rehearse, "readlink /run/current-system").removeprefix("/nix/store/")
    assert guest(rehearse, f"test -e /nix/.rw-store/store/{system} && echo copied || echo shared") == "shared"
    # Registered in the guest's Nix database once the verdict was out.
    deadline = time.monotonic() + 30
    while (
        guest(rehearse, "nix-store --check-validity /run/current-system >/dev/null 2>&1 && echo valid || true")
        != "valid"
    ):
        assert time.monotonic() < deadline, "the new system was never registered in the guest"
        time.sleep(1)


def test_a_cut_management_channel_is_rolled_back_by_the_guest(rehearse: Rehearse, vm: Config) -> None:
    before = guest(rehearse, "readlink /run/current-system")
    vm.set(
        '  environment.etc."generation".text = "cut";\n'
        '  systemd.services.rehearse-sshd.serviceConfig.ExecStart = lib.mkForce "/bin/false";'
    )
    code, report, err = deploy_json(rehearse, "--confirm-timeout", "20")
    assert code == 4, err
    assert report["result"] == "rolled-back" and "not-confirmed" in str(report["reason"])
    assert guest(rehearse, "readlink /run/current-system") == before
    assert guest(rehearse, "cat /etc/generation") == "first"


def test_rollback_returns_to_the_system_before(rehearse: Rehearse, vm: Config) -> None:
    vm.set('  environment.etc."generation".text = "second";')
    code, _, err = deploy_json(rehearse)
    assert code == 0, err
    assert guest(rehearse, "cat /etc/generation") == "second"
    r = rehearse("rollback", NAME)
    assert r.returncode == 0, r.stderr
    assert guest(rehearse, "cat /etc/generation") == "first"
    # Rows that tell generations apart (issue 24, item 6): a hash each, one booted, what was deployed.
    listing = rehearse("generations", NAME)
    assert listing.returncode == 0, listing.stderr
    rows = [line.replace("*", " ").split() for line in listing.stdout.splitlines() if not line.startswith(" " * 8)]
    hashes = {words[3] for words in rows}  # number, date, time, hash, name
    assert len(rows) >= 3 and len(hashes) >= 2, listing.stdout
    assert listing.stdout.count("(booted)") == 1, listing.stdout
    assert "deployed " in listing.stdout and "(from " in listing.stdout, listing.stdout


def test_down_leaves_nothing_running_and_up_boots_the_deployed_system(rehearse: Rehearse, vm: Config) -> None:
    running = guest(rehearse, "readlink /run/current-system")
    r = rehearse("down", NAME)
    assert r.returncode == 0, r.stderr
    assert runner_processes(rehearse) == []
    # Read-only commands on the stopped VM (issue 24, item 14).
    listing = rehearse("generations", NAME)
    assert listing.returncode == 0 and f"{NAME} is not running: its deploys as rehearse recorded" in listing.stderr
    assert "deployed: " in listing.stdout, listing.stdout
    dry = rehearse("deploy", NAME, "--dry-run")
    assert dry.returncode == 6 and "a dry run asks the running VM" in dry.stderr, dry.stderr
    r = rehearse("up", NAME)
    assert r.returncode == 0, r.stderr
    assert guest(rehearse, "readlink /run/current-system") == running
    assert guest(rehearse, "cat /etc/generation") == "first"


def test_a_killed_qemu_leaves_nothing_once_the_vm_is_down(rehearse: Rehearse, vm: Config) -> None:
    pid = rehearse.vm(NAME)["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while rehearse.vm(NAME)["state"] != "crashed":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    r = rehearse("down", NAME)
    assert r.returncode == 0, r.stderr
    assert runner_processes(rehearse) == []
    r = rehearse("up", NAME)
    assert r.returncode == 0, r.stderr
    assert guest(rehearse, "cat /etc/generation") == "first"

"""Fleets without a VM: the LAN's numbers, addresses, hosts lines and hub;
rehearse.toml's [machines]; which machines a command picks; the summary and
exit code; the command line's errors; and a fleet's `up` that refuses
before building (real Nix against the mini nixpkgs for those)."""

from __future__ import annotations

import io
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rehearse import config
from rehearse.core import output
from rehearse.core.errors import ExitCode, RehearseError
from rehearse.fleets import fleet
from rehearse.host import lan
from rehearse.store.state import LanState, VMDir, VMState
from tests.conftest import MINI_NIXPKGS, fixed_fripon
from tests.unit.test_cli import rehearse

# --- the LAN ---------------------------------------------------------------------


def test_macs_follow_nixos_qemu_common_scheme() -> None:
    assert lan.mac(2) == "52:54:00:12:01:02"
    assert lan.mac(200) == "52:54:00:12:01:c8"  # hex, lowercase (udev compares case-sensitively)


def test_a_machine_without_a_declared_address_gets_eth1_and_its_number() -> None:
    m = lan.member("web", 3, [], "web", None, None)
    assert (m.interface, m.address, m.declared) == ("eth1", "192.168.1.3", False)


def test_the_declared_interface_and_address_are_kept() -> None:
    one = [lan.Candidate("enp7s0", "10.0.0.5")]
    assert lan.member("db", 2, one, "db", None, None).address == "10.0.0.5"
    # Several: the second (by name), the first being taken for the public one.
    two = [lan.Candidate("ens4", "10.0.0.5"), lan.Candidate("ens3", "203.0.113.10")]
    m = lan.member("db", 2, two, "db", None, None)
    assert (m.interface, m.address, m.declared) == ("ens4", "10.0.0.5", True)
    # rehearse.toml's lan_interface chooses; one the configuration does not address gets the number.
    assert lan.member("db", 2, two, "db", None, "ens3").address == "203.0.113.10"
    assert lan.member("db", 2, two, "db", None, "eth7").address == "192.168.1.2"


def test_numbers_are_kept_and_new_machines_take_the_smallest_free() -> None:
    assert lan.numbers(["a", "b", "c"], {"b": 1, "old": 2}) == {"a": 3, "b": 1, "c": 4}
    with pytest.raises(RehearseError, match="no free machine number"):
        lan.numbers(["new"], {f"m{i}": i for i in range(1, 255)})


def test_two_machines_with_one_address_are_refused() -> None:
    a = lan.Member("web", 1, "eth1", "10.0.0.1", True, "web")
    b = lan.Member("db", 2, "eth1", "10.0.0.1", True, "db")
    with pytest.raises(RehearseError, match=r"web and db both have the LAN address 10\.0\.0\.1"):
        lan.check_addresses([a, b])


def test_every_machine_is_in_every_hosts_file() -> None:
    web = lan.Member("web", 1, "eth1", "192.168.1.1", False, "web")
    db = lan.Member("db", 2, "enp7s0", "10.0.0.5", True, "db", "example.org")
    s = lan.settings(db, [db, web])
    assert s["hosts"] == "192.168.1.1 web\n10.0.0.5 db.example.org db\n"
    assert s["address"] is None  # declared: the configuration's own stands
    assert lan.settings(web, [db, web])["address"] == "192.168.1.1"


def test_no_vde_switch_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RehearseError, match="vde_switch") as e:
        lan.ensure_hub(tmp_path / "state")
    assert e.value.hint is not None and "vde2" in e.value.hint


def test_the_hub_starts_once_and_ends_with_the_last_vm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "state"
    sock = lan.ensure_hub(root)
    pid = int((root / ".lan" / "pid").read_text())
    assert (sock / "ctl").exists() and oct(sock.stat().st_mode & 0o777) == "0o700"
    assert lan.ensure_hub(root) == sock and int((root / ".lan" / "pid").read_text()) == pid  # reused
    # A VM of the LAN that runs (this process stands in for its QEMU) keeps it.
    d = VMDir("web", root)
    d.create()
    from rehearse.store.state import process_start

    me = os.getpid()
    d.save(VMState(name="web", pid=me, pid_start=process_start(me), lan=LanState(1, "eth1", "x")))
    lan.release_hub(root)
    assert Path(f"/proc/{pid}").exists()
    d.save(VMState(name="web", lan=LanState(1, "eth1", "x")))
    lan.release_hub(root)
    assert lan._running(root) is None


# --- rehearse.toml ----------------------------------------------------------------


def toml(tmp_path: Path, text: str) -> config.Settings:
    (tmp_path / "rehearse.toml").write_text(text)
    return config.load_settings(tmp_path)


def test_machines_are_read_with_their_tags_forwards_and_checks(tmp_path: Path) -> None:
    s = toml(
        tmp_path,
        'checks = [ { tcp = 80 } ]\n[machines.web]\nconfiguration = "web/configuration.nix"\ntags = ["front"]\n'
        'forward = ["8080:80"]\nchecks = [ { tcp = 8080 } ]\n[machines.db]\nflake = ".#db"\nlan_interface = "ens4"\n',
    )
    web, db = s.machines
    assert web.configuration == tmp_path / "web" / "configuration.nix" and web.tags == ("front",)
    assert web.forward[0].host_port == 8080
    assert db.flake == ".#db" and db.lan_interface == "ens4"
    assert [c.target for c in s.checks_of("web")] == ["8080"]
    assert [c.target for c in s.checks_of("db")] == ["80"]  # the top-level ones


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[machines.web]\ntags = []\n", "expected one of configuration or flake"),
        ('[machines.web]\nconfiguration = "a.nix"\nflake = ".#a"\n', "expected one of configuration or flake"),
        ('[machines.web]\nconfiguration = "a.nix"\nport = 1\n', "unknown key port"),
        ('[machines.web]\nconfiguration = "a.nix"\ntags = ["a b"]\n', "machines.web.tags: expected a list of tags"),
        ('[machines.web]\nconfiguration = "a.nix"\nlan_interface = "a/b"\n', "lan_interface: expected an interface"),
        ('[machines."we b"]\nconfiguration = "a.nix"\n', "invalid VM name"),
        ("machines = 3\n", "expected a table of machines"),
    ],
)
def test_a_wrong_machine_is_a_usage_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(RehearseError, match=message) as e:
        toml(tmp_path, text)
    assert e.value.exit_code == ExitCode.USAGE


# --- which machines, and the outcome ----------------------------------------------


def test_on_and_all_pick_names_tags_or_every_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REHEARSE_STATE_DIR", str(tmp_path / "state"))
    for name in ("web", "db", "cache"):
        d = VMDir(name)
        d.create()
        d.save(VMState(name=name))
    machines = [config.Machine("web", tags=("front",)), config.Machine("db", tags=("back",))]
    assert fleet.select("@front,db", False, machines, "deploy to") == ["web", "db"]
    assert fleet.select("web,web", False, machines, "deploy to") == ["web"]
    assert fleet.select(None, True, machines, "deploy to") == ["web", "db"]  # rehearse.toml's
    assert fleet.select(None, True, [], "deploy to") == ["cache", "db", "web"]  # every VM
    with pytest.raises(RehearseError, match="no VM named 'nope'"):
        fleet.select("web,nope", False, machines, "deploy to")
    with pytest.raises(RehearseError, match=r"no machine in rehearse\.toml has the tag 'x'") as e:
        fleet.select("@x", False, machines, "deploy to")
    assert e.value.hint == "tags: back, front"


def test_exit_code_is_partial_when_some_failed() -> None:
    ok = fleet.Outcome("web", True, "confirmed", 0, 1.0)
    bad = fleet.Outcome("db", False, "rolled-back", ExitCode.ROLLED_BACK, 2.0)
    assert fleet.exit_code([ok, ok]) == 0
    assert fleet.exit_code([ok, bad]) == ExitCode.PARTIAL == 10
    assert fleet.exit_code([bad, bad]) == ExitCode.ROLLED_BACK  # all alike: their own code
    assert "failed: db" in fleet.summary("deploy", [ok, bad])


def test_one_machine_failing_does_not_stop_the_others(capsys: pytest.CaptureFixture[str]) -> None:
    def work(name: str) -> str:
        output.info("working")
        if name == "db":
            raise RehearseError("db broke")
        return name

    results = fleet.each(["web", "db"], work, 2)
    assert results[0] == "web" and isinstance(results[1], RehearseError)
    err = capsys.readouterr().err
    assert "web: working" in err and "db: working" in err


# --- output: a line per machine --------------------------------------------------------


def test_each_machine_has_its_own_live_line(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(output, "is_terminal", lambda stream=None: True)
    monkeypatch.setenv("NO_COLOR", "1")
    with output.machine("web"):
        output.live("building")
        with output.machine("db"):  # (as another thread would)
            output.live("activating")
            output.info("db is up")  # names itself: no second name
            output.info("done")
    text = err.getvalue()
    assert "web: building\ndb: activating" in text  # both lines shown, one under the other
    assert "\033[F\033[J" in text  # the two lines are replaced together
    assert "db is up\n" in text and "db: db is up" not in text and "db: done\n" in text


def test_bound_prints_under_the_callers_machine(capsys: pytest.CaptureFixture[str]) -> None:
    import threading

    with output.machine("web"):
        t = threading.Thread(target=output.bound(output.info), args=("from a reader thread",))
        t.start()
        t.join()
    assert "web: from a reader thread" in capsys.readouterr().err


# --- the command line -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["deploy"], "which VM? Give its name, or --on NAMES, or --all."),
        (["deploy", "web", "--on", "db"], "give no VM name or configuration with them"),
        (["deploy", "--all", "--parallel", "0"], "--parallel 0: expected 1 or more"),
        (["deploy", "web", "--parallel", "2"], "--parallel goes with --on or --all"),
        (["down"], "which VM? Give its name, or --all."),
        (["destroy", "web", "--all"], "give a VM's name or --all, not both"),
        (["up", "a.nix", "b.nix", "--name", "x"], "--name names one VM"),
        (["up", "nope"], "no VM named 'nope', and no file 'nope'"),
    ],
)
def test_fleet_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    for f in ("a.nix", "b.nix"):
        (tmp_path / f).write_text("{ }")
    result = rehearse(*args, state=tmp_path / "state", cwd=tmp_path)
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert message in result.stderr


def test_up_names_an_unknown_machine_of_the_fleet(tmp_path: Path) -> None:
    (tmp_path / "rehearse.toml").write_text('[machines.web]\nconfiguration = "web.nix"\n')
    result = rehearse("up", "web", "dbb", state=tmp_path / "state", cwd=tmp_path)
    assert result.returncode == ExitCode.USAGE
    assert "no machine named 'dbb' in rehearse.toml" in result.stderr and "machines: web" in result.stderr


# --- a fleet's up that refuses before building (real Nix) ----------------------------------


def two(tmp_path: Path, web: str = "", db: str = "") -> Path:
    for name, body in (("web", web), ("db", db)):
        fixed_fripon(tmp_path / name, f'networking.hostName = lib.mkForce "{name}";\n' + body)
    (tmp_path / "rehearse.toml").write_text(
        f'nixpkgs = "{MINI_NIXPKGS}"\n[machines.web]\nconfiguration = "web/configuration.nix"\n'
        '[machines.db]\nconfiguration = "db/configuration.nix"\n'
    )
    return tmp_path


@pytest.mark.nix
@pytest.mark.parametrize(
    ("web", "db", "code", "message"),
    [
        ("", "services.nope = 1;", ExitCode.CONFIG, "nothing was built or started: db does not evaluate"),
        (
            'networking.interfaces.ens4.ipv4.addresses = [ { address = "10.0.0.9"; prefixLength = 24; } ];',
            'networking.interfaces.ens4.ipv4.addresses = [ { address = "10.0.0.9"; prefixLength = 24; } ];',
            ExitCode.FAILED,
            "web and db both have the LAN address 10.0.0.9",
        ),
        ("virtualisation.vmVariant.virtualisation.memorySize = 100000000;", "", ExitCode.FAILED, "of memory and"),
        (
            'virtualisation.vmVariant.virtualisation.forwardPorts = [ { from = "host"; host.port = 8080; guest.port = 80; } ];',
            'virtualisation.vmVariant.virtualisation.forwardPorts = [ { from = "host"; host.port = 8080; guest.port = 80; } ];',
            ExitCode.USAGE,
            "host port 8080 is forwarded to both web and db",
        ),
    ],
)
def test_a_fleet_that_cannot_come_up_builds_and_starts_nothing(
    tmp_path: Path, web: str, db: str, code: int, message: str
) -> None:
    base = two(tmp_path, web, db)
    state = tmp_path / "state"
    result = rehearse("up", state=state, cwd=base, NIX_CONFIG="substituters =")
    assert result.returncode == code, result.stderr[-3000:]
    assert message in result.stderr
    assert not (state / "web").exists() and not (state / "db").exists()
    assert not (state / ".lan" / "pid").exists()  # no hub was started


@pytest.mark.nix
def test_two_configurations_with_one_host_name_are_refused(tmp_path: Path) -> None:
    for d in ("a", "b"):
        fixed_fripon(tmp_path / d)  # both fripon
    result = rehearse(
        "up",
        "a/configuration.nix",
        "b/configuration.nix",
        "-I",
        f"nixpkgs={MINI_NIXPKGS}",
        state=tmp_path / "state",
        cwd=tmp_path,
        NIX_CONFIG="substituters =",
    )
    assert result.returncode == ExitCode.USAGE, result.stderr[-3000:]
    assert "two machines are named 'fripon'" in result.stderr
    assert not (tmp_path / "state" / "fripon").exists()


def test_on_and_all_with_nothing_to_pick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REHEARSE_STATE_DIR", str(tmp_path / "state"))
    with pytest.raises(RehearseError, match="no VMs to deploy to"):
        fleet.select(None, True, [], "deploy to")
    with pytest.raises(RehearseError, match="--on names no machine"):
        fleet.select(" , ", False, [], "deploy to")


def test_down_all_with_no_vms(tmp_path: Path) -> None:
    result = rehearse("down", "--all", state=tmp_path / "state", cwd=tmp_path)
    assert result.returncode == 0 and "no VMs" in result.stderr


# --- --all means one thing; destroy asks -----------------------------------------------


def fleet_dir(tmp_path: Path) -> Path:
    """A fleet's directory (rehearse.toml names web and db) and a state with
    the VMs web and other (a VM rehearse.toml does not name); db has none."""
    from tests.unit.test_cli import stopped_vm

    (tmp_path / "rehearse.toml").write_text(
        '[machines.web]\nconfiguration = "web/configuration.nix"\n[machines.db]\nconfiguration = "db/configuration.nix"\n'
    )
    for name in ("web", "other"):
        stopped_vm(tmp_path / "state", name)
    return tmp_path / "state"


def test_destroy_all_without_a_terminal_or_yes_destroys_nothing(tmp_path: Path) -> None:
    state = fleet_dir(tmp_path)
    result = rehearse("destroy", "--all", state=state, cwd=tmp_path)
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert "`destroy --all` would destroy web" in result.stderr and "nothing was destroyed" in result.stderr
    assert "--yes" in result.stderr
    assert (state / "web").exists() and (state / "other").exists()


def test_down_and_destroy_all_mean_rehearse_tomls_machines_as_deploy_all(tmp_path: Path) -> None:
    state = fleet_dir(tmp_path)
    down = rehearse("down", "--all", state=state, cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert "down: 1 VM in" in down.stdout and "web " in down.stdout and "other" not in down.stdout
    result = rehearse("destroy", "--all", "--yes", state=state, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (state / "web").exists()
    assert (state / "other").exists()  # not one of rehearse.toml's machines: left alone
    # Without rehearse.toml's machines, --all is every VM.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = rehearse("destroy", "--all", "--yes", state=state, cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert not (state / "other").exists()


def test_destroy_all_asks_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rehearse.commands import cli

    state = fleet_dir(tmp_path)
    monkeypatch.setenv("REHEARSE_STATE_DIR", str(state))
    monkeypatch.chdir(tmp_path)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal("n\n"))
    with pytest.raises(SystemExit) as e:
        cli.main(["destroy", "--all"])
    assert e.value.code == ExitCode.DECLINED
    assert "destroy web: their disks, snapshots and state? [y/N]" in capsys.readouterr().err
    assert (state / "web").exists()
    monkeypatch.setattr(sys, "stdin", Terminal("y\n"))
    with pytest.raises(SystemExit) as e:
        cli.main(["destroy", "--all"])
    assert e.value.code == 0
    assert not (state / "web").exists() and (state / "other").exists()


# --- the hub's lock; a dead hub ---------------------------------------------------------


def lan_vm(root: Path, name: str, *, running: bool) -> VMDir:
    """A VM of the LAN; running: this process stands in for its QEMU."""
    from rehearse.store.state import process_start

    d = VMDir(name, root)
    d.create()
    me = os.getpid()
    place = LanState(1, "eth1", "192.168.1.1")
    if running:
        d.save(VMState(name=name, pid=me, pid_start=process_start(me), lan=place))
    else:
        d.save(VMState(name=name, lan=place))
    return d


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """A state directory whose hub, if a test leaves one, ends with the test."""
    import signal

    yield tmp_path / "state"
    pid = lan._running(tmp_path / "state")
    if pid is not None:
        os.kill(pid, signal.SIGTERM)


def test_the_hub_is_started_and_stopped_under_a_lock(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fcntl

    lan.ensure_hub(root)
    monkeypatch.setattr(lan, "LOCK_WAIT", 0.2)
    fd = os.open(root / ".lan" / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another command starts or stops the hub
        for attempt in (lambda: lan.release_hub(root), lambda: lan.joined(root).__enter__()):
            with pytest.raises(RehearseError) as e:
                attempt()
            assert e.value.exit_code == ExitCode.BUSY and "the fleet's LAN is busy" in e.value.message
    finally:
        os.close(fd)
    assert lan.hub_running(root)
    # An `up` between the hub's start and its VM's state keeps the hub: a
    # `down` of the LAN's last VM meanwhile leaves it alone.
    lan_vm(root, "web", running=False)
    with lan.joined(root):
        lan.release_hub(root)
        assert lan.hub_running(root)
    lan.release_hub(root)
    assert not lan.hub_running(root)


def test_a_dead_hub_is_said_by_status_and_started_again_by_up(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import signal

    from rehearse.machines import lifecycle

    monkeypatch.setenv("REHEARSE_STATE_DIR", str(root))
    lan.ensure_hub(root)
    lan_vm(root, "web", running=True)
    capsys.readouterr()
    lifecycle.status(True)
    assert json.loads(capsys.readouterr().out)[0]["lan"]["hub"] == "running"
    os.kill(int((root / ".lan" / "pid").read_text()), signal.SIGKILL)
    deadline = time.monotonic() + 5
    while lan.hub_running(root) and time.monotonic() < deadline:
        time.sleep(0.05)
    lifecycle.status(True)
    assert json.loads(capsys.readouterr().out)[0]["lan"]["hub"] == "dead"
    lifecycle.status(False)
    text = capsys.readouterr().out
    assert "web is cut off from the fleet's LAN" in text and "rehearse down web && rehearse up web" in text
    # The next `up` of a VM of the LAN starts it again, and says what the cut-off VMs need.
    with lan.joined(root):
        assert lan.hub_running(root)
    err = capsys.readouterr().err
    assert "had stopped and was started again" in err and "`rehearse down web && rehearse up web`" in err

"""Argv-level and value tests: what rehearse would run, without running it."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from rehearse import config
from rehearse.core.errors import RehearseError
from rehearse.host import plan, qemu, ssh
from rehearse.host.nix import Source
from rehearse.store.state import Forwarded, LanState, RecordedSource, ServerPort, VMDir, VMState


def remote(tmp_path: Path, control: bool = True) -> ssh.Remote:
    return ssh.Remote(
        "127.0.0.1",
        2222,
        "root",
        tmp_path / "key",
        tmp_path / "known",
        "rehearse-x",
        tmp_path / "ssh.ctl" if control else None,
    )


def test_ssh_argv_is_strict_and_quotes_each_word(tmp_path: Path) -> None:
    argv = ssh.argv(remote(tmp_path), ["echo", "a b", "$HOME"])
    assert argv[0] == "ssh"
    assert "StrictHostKeyChecking=yes" in argv
    assert not any("StrictHostKeyChecking=no" in a for a in argv)
    assert f"UserKnownHostsFile={tmp_path / 'known'}" in argv
    assert "HostKeyAlias=rehearse-x" in argv
    assert "BatchMode=yes" in argv
    assert f"ControlPath={tmp_path / 'ssh.ctl'}" in argv
    assert argv[-3:] == ["root@127.0.0.1", "--", "echo 'a b' '$HOME'"]


def test_fresh_connection_bypasses_the_master(tmp_path: Path) -> None:
    argv = ssh.argv(remote(tmp_path), ["true"], master=False)
    assert "ControlPath=none" in argv and "ControlMaster=no" in argv


def test_forwards_bind_loopback(tmp_path: Path) -> None:
    d = VMDir("fripon", tmp_path)
    d.create()
    env = qemu.runner_env(d, [qemu.Forward(2222, 22), qemu.Forward(8080, 80)], gui=False, tcg=True)
    assert env["QEMU_NET_OPTS"] == "hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:127.0.0.1:8080-:80"
    assert "-display none" in env["QEMU_OPTS"] and "accel=tcg" in env["QEMU_OPTS"]
    assert env["USE_TMPDIR"] == "1" and env["TMPDIR"] == str(d.path / "tmp")
    assert env["NIX_DISK_IMAGE"] == str(d.path / "disk.qcow2")
    assert env["SHARED_DIR"] == str(d.path / "shared")
    gui = qemu.runner_env(d, [], gui=True, tcg=False)
    assert "-display none" not in gui["QEMU_OPTS"] and "accel" not in gui["QEMU_OPTS"]


def test_state_dir_is_private(tmp_path: Path) -> None:
    d = VMDir("fripon", tmp_path / "root")
    d.create()
    d.save(VMState(name="fripon"))
    assert (d.path.stat().st_mode & 0o777) == 0o700
    assert (d.path.parent.stat().st_mode & 0o777) == 0o700
    assert (d.file("state.json").stat().st_mode & 0o777) == 0o600
    assert d.load().name == "fripon"


def test_lock_refuses_a_second_holder(tmp_path: Path) -> None:
    d = VMDir("fripon", tmp_path)
    with d.locked("first", create=True), pytest.raises(RehearseError, match="busy"), d.locked("second"):
        pass


def test_bad_names_and_forwards() -> None:
    with pytest.raises(RehearseError):
        VMDir("../etc")
    with pytest.raises(RehearseError, match="HOST_PORT:GUEST_PORT"):
        config.parse_forward("8080")
    assert config.parse_forward("8080:80") == qemu.Forward(8080, 80)


def test_taken_port_is_skipped() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        assert qemu.pick_port(taken) != taken


def test_rehearse_toml(tmp_path: Path) -> None:
    (tmp_path / "rehearse.toml").write_text('nixpkgs = "np"\nforward = ["80:8080"]\nconfirm_timeout = 30\n')
    s = config.load_settings(tmp_path)
    assert s.nixpkgs == str((tmp_path / "np").resolve())
    assert s.forward == (qemu.Forward(80, 8080),) and s.confirm_timeout == 30
    (tmp_path / "rehearse.toml").write_text("nixpgks = 1\n")
    with pytest.raises(RehearseError, match="unknown setting"):
        config.load_settings(tmp_path)


def test_source_resolution(tmp_path: Path) -> None:
    conf = tmp_path / "configuration.nix"
    conf.write_text("{ }")
    src = config.resolve_source(str(conf), None, [], config.Settings(nixpkgs="/np"))
    assert src.configuration == conf and src.include == ("nixpkgs=/np",)
    with pytest.raises(RehearseError, match="no such file"):
        config.resolve_source(str(tmp_path / "nope.nix"), None, [], config.Settings())
    with pytest.raises(RehearseError, match="names no configuration"):
        config.resolve_source(None, str(tmp_path), [], config.Settings())


def test_store_names_and_versions() -> None:
    assert plan.split_name("/nix/store/" + "a" * 32 + "-hello-2.12.1") == ("hello", "2.12.1")
    assert plan.split_name("/nix/store/" + "a" * 32 + "-etc") == ("etc", "")
    assert plan.split_name("/nix/store/" + "a" * 32 + "-nixos-system-fripon-25.11pre-mini") == (
        "nixos-system-fripon",
        "25.11pre-mini",
    )


def test_kvm_probe_answer_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        assert qemu.kvm_works(None, tmp_path) is False
        return
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    (tmp_path / ".kvm-probe").write_text(f"{boot_id} tcg\n")
    assert qemu.kvm_works(Path("/nonexistent"), tmp_path) is False
    (tmp_path / ".kvm-probe").write_text(f"{boot_id} kvm\n")
    assert qemu.kvm_works(Path("/nonexistent"), tmp_path) is True


def test_socket_paths_stay_short(tmp_path: Path) -> None:
    # tmp_path's own length varies (a pytest-xdist worker's is longer): a short directory of its own
    short = VMDir("fripon", Path(tempfile.mkdtemp(prefix="rs-", dir="/tmp")))
    assert short.socket("qmp.sock") == short.path / "qmp.sock"
    deep = VMDir("fripon", tmp_path / ("x" * 100))
    sock = deep.socket("qmp.sock")
    assert len(str(sock)) < 100 and sock.name.endswith("-qmp.sock")
    assert sock.parent.stat().st_mode & 0o777 == 0o700
    assert deep.socket("ssh.ctl") != sock


# A state.json as rehearse wrote it before its state was typed (asdict of the
# dicts it kept): it loads, typed, and is written back byte for byte.
OLD_STATE = {
    "disk_from": "/nix/store/aaaa-nixos-system-fripon",
    "forwards": [{"guest": 80, "host": 8080, "proto": "tcp"}, {"guest": 53, "host": 5353, "proto": "udp"}],
    "isolated": False,
    "lan": {"address": "10.23.0.2", "domain": None, "host": "fripon", "interface": "eth1", "number": 2},
    "name": "fripon",
    "overrides": ["networking.interfaces.eth1: …"],
    "pid": 1234,
    "pid_start": 5678,
    "runner": "/nix/store/bbbb-run-fripon-vm",
    "runners": {"/nix/store/aaaa-nixos-system-fripon": "/nix/store/bbbb-run-fripon-vm"},
    "server_ssh": [{"guest": 22, "host": 2222}],
    "source": {
        "attr": None,
        "configuration": "/srv/fripon/configuration.nix",
        "flake": None,
        "include": ["nixpkgs=/n"],
    },
    "ssh_port": 2201,
    "started": 1700000000.5,
    "system": "/nix/store/aaaa-nixos-system-fripon",
}


def test_an_old_state_json_loads_typed_and_is_written_back_unchanged(tmp_path: Path) -> None:
    d = VMDir("fripon", tmp_path)
    d.create()
    text = json.dumps(OLD_STATE, indent=2, sort_keys=True) + "\n"
    d.file("state.json").write_text(text)
    state = d.load()
    assert state.forwards == [Forwarded(8080, 80, "tcp"), Forwarded(5353, 53, "udp")]
    assert state.tcp_forwards() == {8080: 80}
    assert state.server_ssh == [ServerPort(2222, 22)]
    assert state.lan == LanState(2, "eth1", "10.23.0.2", "fripon", None)
    assert state.source == RecordedSource("/srv/fripon/configuration.nix", None, None, ("nixpkgs=/n",))
    assert Source.of_record(state.source) == Source(Path("/srv/fripon/configuration.nix"), include=("nixpkgs=/n",))
    d.save(state)
    assert d.file("state.json").read_text() == text


def test_a_state_without_source_or_lan_keeps_them_so(tmp_path: Path) -> None:
    d = VMDir("fripon", tmp_path)
    d.create()
    text = json.dumps({**OLD_STATE, "source": {}, "lan": None}, indent=2, sort_keys=True) + "\n"
    d.file("state.json").write_text(text)
    state = d.load()
    assert state.source is None and state.lan is None
    d.save(state)
    assert d.file("state.json").read_text() == text


def test_a_lan_with_a_host_of_the_wrong_type_is_a_broken_state() -> None:
    with pytest.raises(ValueError, match="lan is"):
        VMState.from_json({**OLD_STATE, "lan": {**OLD_STATE["lan"], "host": 5}})  # type: ignore[dict-item]


def test_history_entries_keep_the_files_fields_in_their_order(tmp_path: Path) -> None:
    """The typed entries (store/history.py) write what the dicts wrote before them."""
    from rehearse.store import history

    file = tmp_path / "deploys.json"
    history.record(file, history.Deployed(1.0, "/s", None, "src", "confirmed", 3, 0, [], {"activate": 1.0}, {}))
    history.record(file, history.RolledBack(2.0, "/s", "/t", "confirmed", "test", "rollback to generation 2", {}))
    history.record(file, history.Promoted(3.0, "srv", "/s", "/t", "confirmed", "switch", "src", False, None, {}))
    history.record(file, history.Rehearsed(4.0, "/d.drv", "/s", "deploy", ["no failed units"]))
    assert [list(e) for e in history.load(file)] == [
        [
            "time",
            "system",
            "previous",
            "source",
            "result",
            "generation",
            "switch_rc",
            "failed_units",
            "durations",
            "pushed",
            "changes",
        ],
        ["time", "system", "previous", "result", "action", "source", "durations"],
        [
            "time",
            "target",
            "system",
            "previous",
            "result",
            "action",
            "source",
            "forced",
            "rehearsal",
            "durations",
            "changes",
        ],
        ["time", "server_drv", "vm_system", "how", "checks"],
    ]

"""An isolated VM (issue 22, item 9): rehearse.toml's restrict_network and
`up --isolate` set virtualisation.restrictNetwork in the VM variant, the
VM's state records it and `status` shows it (real Nix against the mini
nixpkgs for the runner)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rehearse import config
from rehearse.commands import cli, requests
from rehearse.core.errors import ExitCode, RehearseError
from rehearse.fleets import fleet
from rehearse.host import nix
from rehearse.machines import lifecycle
from rehearse.store.state import RecordedSource, VMDir, VMState
from tests.conftest import MINI_NIXPKGS, fixed_fripon


def up_args(*argv: str) -> object:
    return cli.parser().parse_args(["up", *argv])


def test_restrict_network_in_rehearse_toml(tmp_path: Path) -> None:
    (tmp_path / "rehearse.toml").write_text("restrict_network = true\n")
    assert config.load_settings(tmp_path).restrict_network is True
    (tmp_path / "rehearse.toml").write_text("")
    assert config.load_settings(tmp_path).restrict_network is False


@pytest.mark.parametrize(
    ("value", "found"), [('"yes"', '"yes"'), ("1", "1"), ("[true]", "[true]"), ("{ on = true }", "{ on = true }")]
)
def test_restrict_network_must_be_true_or_false(tmp_path: Path, value: str, found: str) -> None:
    (tmp_path / "rehearse.toml").write_text(f"restrict_network = {value}\n")
    with pytest.raises(RehearseError) as e:
        config.load_settings(tmp_path)
    assert e.value.exit_code == ExitCode.USAGE
    assert e.value.message == f"{tmp_path / 'rehearse.toml'}: restrict_network: expected true or false, found {found}"


def test_a_misspelt_restrict_network_is_named(tmp_path: Path) -> None:
    (tmp_path / "rehearse.toml").write_text("restrict_networks = true\n")
    with pytest.raises(RehearseError) as e:
        config.load_settings(tmp_path)
    assert e.value.hint == "did you mean restrict_network?"


def test_the_flag_or_the_file_isolate_a_vm_and_a_fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REHEARSE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    fixed_fripon(tmp_path / "a")
    fixed_fripon(tmp_path / "b")
    on, off = config.Settings(restrict_network=True), config.Settings()
    assert requests.up_request(up_args("a/configuration.nix"), on).isolate
    assert requests.up_request(up_args("a/configuration.nix", "--isolate"), off).isolate
    assert not requests.up_request(up_args("a/configuration.nix"), off).isolate
    both = requests.up_request(up_args("a/configuration.nix", "b/configuration.nix", "--isolate"), off)
    assert isinstance(both, fleet.UpRequest) and both.isolate
    VMDir("fripon", tmp_path / "state").create()
    VMDir("fripon", tmp_path / "state").save(VMState(name="fripon"))
    assert requests.up_request(up_args("fripon", "--isolate"), off).isolate  # `up NAME`


def test_state_and_status_show_isolation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REHEARSE_STATE_DIR", str(tmp_path))
    for name, isolated in (("open", False), ("shut", True)):
        d = VMDir(name, tmp_path)
        d.create()
        d.save(VMState(name=name, isolated=isolated))
    assert VMDir("shut", tmp_path).load().isolated and not VMDir("open", tmp_path).load().isolated
    lifecycle.status(as_json=True)
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["shut"]["isolated"] is True and rows["open"]["isolated"] is False
    lifecycle.status(as_json=False)
    text = capsys.readouterr().out.splitlines()
    [line] = [i for i, t in enumerate(text) if "isolated:" in t]
    assert text[line - 1].startswith("shut ")
    # a state whose isolation is no boolean is broken, not trusted
    VMDir("shut", tmp_path).file("state.json").write_text('{"name": "shut", "isolated": "no"}')
    with pytest.raises(RehearseError, match="isolated is 'no'"):
        VMDir("shut", tmp_path).load()


def test_a_running_vm_is_not_isolated_behind_its_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    d = VMDir("fripon", tmp_path)
    d.create()
    d.save(VMState(name="fripon", source=RecordedSource("/srv/configuration.nix"), pid=1, pid_start=1))
    monkeypatch.setattr(VMState, "alive", lambda self: True)
    req = lifecycle.UpRequest(source=None, name="fripon", forwards=(), gui=False, ssh_timeout=1, isolate=True)
    with pytest.raises(RehearseError, match="fripon is running without isolation") as e:
        lifecycle.boot(req, nix.Source(), d)
    assert (
        e.value.exit_code == ExitCode.USAGE
        and e.value.hint == "`rehearse down fripon`, then `rehearse up fripon --isolate`"
    )


def test_an_isolated_vm_is_rebuilt_rather_than_booted_with_an_open_runner(tmp_path: Path) -> None:
    runner = tmp_path / "runner"
    (runner / "bin").mkdir(parents=True)
    script = runner / "bin" / "run-fripon-vm"
    script.write_text('exec qemu -netdev user,id=user.0,"$QEMU_NET_OPTS"\n')
    assert not lifecycle.restricts(runner)
    script.write_text('exec qemu -netdev user,id=user.0,restrict=on,"$QEMU_NET_OPTS"\n')
    assert lifecycle.restricts(runner)


@pytest.mark.nix
@pytest.mark.parametrize("isolated", [True, False])
def test_the_runner_of_an_isolated_vm_restricts_its_network(tmp_path: Path, isolated: bool) -> None:
    """Real Nix: rehearse's settings reach virtualisation.restrictNetwork
    in the VM variant, and qemu-vm.nix puts restrict=on on the user netdev."""
    configuration = fixed_fripon(tmp_path / "fripon")
    d = VMDir("fripon", tmp_path / "state")
    d.create()
    lifecycle.ensure_keys(d)
    settings = lifecycle.write_settings(d, isolated=isolated)
    source = nix.Source(configuration=configuration, include=(f"nixpkgs={MINI_NIXPKGS}",))
    [runner] = nix.build(source, settings, ["vm"], tmp_path / "vm")
    [script] = (runner / "bin").glob("run-*-vm")
    netdev = [line for line in script.read_text().splitlines() if "-netdev user" in line]
    assert netdev and all(("restrict=on" in line) == isolated for line in netdev), netdev
    assert lifecycle.restricts(runner) == isolated

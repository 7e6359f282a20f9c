"""`rehearse deploy`, `generations` and `rollback`, end to end on one booted VM."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MINI_NIXPKGS
from tests.e2e.conftest import Config, Rehearse, booted, include, oneshot

pytestmark = pytest.mark.e2e

NAME = "dep"


@pytest.fixture(scope="module")
def vm(rehearse: Rehearse, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    yield from booted(rehearse, tmp_path_factory, NAME)


def current(rehearse: Rehearse) -> str:
    return rehearse("ssh", NAME, "--", "readlink", "/run/current-system").stdout.strip()


def deploy(rehearse: Rehearse, *args: str) -> tuple[int, str, float]:
    t0 = time.monotonic()
    result = rehearse("deploy", NAME, "--yes", *args)
    return result.returncode, result.stderr, time.monotonic() - t0


def generations(rehearse: Rehearse) -> list[dict[str, object]]:
    result = rehearse("generations", NAME, "--json")
    assert result.returncode == 0, result.stderr
    data: list[dict[str, object]] = json.loads(result.stdout)
    return data


def test_change_to_etc_and_a_package_is_live(rehearse: Rehearse, vm: Config) -> None:
    before = current(rehearse)
    vm.set('  environment.etc."motd".text = "rehearsed";\n  environment.systemPackages = [ pkgs.hello ];')
    dry = rehearse("deploy", NAME, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert re.search(r"^  \+ hello +2\.12\.1$", dry.stderr, re.MULTILINE), dry.stderr
    assert "dry run: nothing activated" in dry.stderr
    assert current(rehearse) == before
    assert "registered" not in dry.stderr
    planned = next(line[2:] for line in dry.stderr.splitlines() if line.startswith("→ /nix/store/"))
    assert rehearse("ssh", NAME, "--", "nix-store", "--check-validity", planned).returncode != 0  # store untouched
    code, err, took = deploy(rehearse)
    print(f"deploy (small change): {took:.1f} s")
    assert code == 0, err
    assert rehearse("ssh", NAME, "--", "cat", "/etc/motd").stdout == "rehearsed"
    assert "hello 2.12.1" in rehearse("ssh", NAME, "--", "hello").stdout
    assert current(rehearse) != before
    assert "registered without copying" in err
    # The registration is loaded once the verdict is out: soon valid in the guest's store.
    for _ in range(40):
        if rehearse("ssh", NAME, "--", "nix-store", "--check-validity", current(rehearse)).returncode == 0:
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the new system never became valid in the guest's store")
    assert f"→ {current(rehearse)}" in err
    entry = json.loads((rehearse.state / NAME / "deploys.json").read_text())[-1]
    assert entry["result"] == "confirmed" and entry["system"] == current(rehearse)
    assert entry["generation"] == next(g["generation"] for g in generations(rehearse) if g["current"])
    assert set(entry["durations"]) == {"build", "push", "activate", "after_switch"}
    assert entry["source"].endswith("configuration.nix")


def test_redeploy_does_nothing(rehearse: Rehearse, vm: Config) -> None:
    gens = generations(rehearse)
    code, err, took = deploy(rehearse)
    print(f"deploy (no-op): {took:.1f} s")
    assert code == 0, err
    assert "nothing to deploy" in err
    assert "activating" not in err and "copied" not in err
    assert generations(rehearse) == gens


def test_failing_unit_is_reported_and_rolled_back(rehearse: Rehearse, vm: Config) -> None:
    before = current(rehearse)
    vm.set(
        '  environment.etc."motd".text = "rehearsed";\n  environment.systemPackages = [ pkgs.hello ];\n'
        + oneshot("broken", "exit 3", remain=False)
    )
    result = rehearse("deploy", NAME, "--yes", "--json")
    assert result.returncode == 4, result.stderr  # rolled back
    assert "broken.service" in result.stderr
    assert "rolled back" in result.stderr
    report = json.loads(result.stdout)  # stdout holds the one JSON document, nothing else
    assert report["result"] == "rolled-back" and report["exit_code"] == 4
    assert report["failed_units"] == ["broken.service"] and report["switch_rc"] == 4
    assert report["old_system"] == before and report["new_system"] != before
    assert report["reason"].startswith("activation-exit-4")
    assert "broken.service" in report["plan"]["units"]["start"]  # the plan said so
    assert re.search(r"^ +start +broken\.service", result.stderr, re.MULTILINE), result.stderr
    assert current(rehearse) == before
    assert rehearse("ssh", NAME, "--", "systemctl", "is-active", "broken.service").stdout.strip() != "active"
    # The hint points at the unit's log, not the boot console.
    assert f"hint: `rehearse ssh {NAME} -- journalctl -u broken.service` shows why it failed" in result.stderr


def test_keep_failed_leaves_the_failure_in_place_until_rolled_back_by_hand(rehearse: Rehearse, vm: Config) -> None:
    """deploy --keep-failed: the same failure is kept, unconfirmed, to look
    at (the guest's timer does not roll it back); `rehearse rollback` goes back."""
    before = current(rehearse)
    vm.set('  environment.etc."motd".text = "kept";\n' + oneshot("broken", "exit 3", remain=False))
    result = rehearse("deploy", NAME, "--yes", "--json", "--keep-failed", "--confirm-timeout", "5")
    assert result.returncode == 4, result.stderr  # the failure's exit code
    report = json.loads(result.stdout)
    assert (report["result"], report["failed_units"]) == ("kept", ["broken.service"]), report
    assert "was kept, as --keep-failed asked" in result.stderr
    assert f"hint: `rehearse rollback {NAME}` goes back to " in result.stderr
    kept = current(rehearse)
    assert kept == report["new_system"] != before
    time.sleep(8)  # past the confirmation window: nothing rolls it back
    assert current(rehearse) == kept
    assert rehearse("ssh", NAME, "--", "cat", "/etc/motd").stdout == "kept"
    assert rehearse("status").returncode == 0
    back = rehearse("rollback", NAME)
    assert back.returncode == 0, back.stderr
    assert current(rehearse) == before


def test_nix_error_leaves_the_vm_untouched(rehearse: Rehearse, vm: Config) -> None:
    before, gens = current(rehearse), generations(rehearse)
    vm.set("  environment.etc.x.text = undefinedThing;")
    code, err, _ = deploy(rehearse)
    assert code == 3  # the configuration does not evaluate
    assert "undefined variable 'undefinedThing'" in err
    assert current(rehearse) == before and generations(rehearse) == gens
    # Nix's own advice works as it says (issue 24, item 4): --show-trace reaches Nix
    vm.set('  environment.etc.x.text = (x: x + 1) "s";')
    code, err, _ = deploy(rehearse)
    assert code == 3 and "(use '--show-trace' to show detailed location information)" in err, err
    code, err, _ = deploy(rehearse, "--show-trace")
    assert code == 3 and "use '--show-trace'" not in err and "… while evaluating" in err, err
    assert current(rehearse) == before and generations(rehearse) == gens


def test_config_that_turns_the_servers_sshd_off_is_rolled_back_at_once(rehearse: Rehearse, vm: Config) -> None:
    before = current(rehearse)
    vm.set(
        '  environment.etc."motd".text = "rehearsed";\n  environment.systemPackages = [ pkgs.hello ];\n'
        "  services.openssh.enable = lib.mkForce false;"
    )
    code, err, took = deploy(rehearse, "--confirm-timeout", "120")
    print(f"deploy turning the server's sshd off, rolled back: {took:.1f} s")
    assert code == 4, err
    assert "the server's own sshd is off in the new configuration" in err
    assert took < 120  # rehearse rejected it; the guest did not wait out its window
    assert current(rehearse) == before
    assert rehearse("ssh", NAME, "--", "true").returncode == 0


def test_config_that_cuts_the_management_channel_is_rolled_back_by_the_guest(rehearse: Rehearse, vm: Config) -> None:
    """rehearse's own channel lost: no verdict can reach the guest, which
    rolls back by itself when its confirmation window ends."""
    before = current(rehearse)
    vm.set('  systemd.services.rehearse-sshd.serviceConfig.ExecStart = lib.mkForce "/bin/false";')
    code, err, took = deploy(rehearse, "--confirm-timeout", "20")
    print(f"deploy cutting the management channel, rolled back by the guest: {took:.1f} s")
    assert code == 4, err
    assert "rolled back" in err and "no confirmation came in time" in err and "not-confirmed" not in err
    assert current(rehearse) == before
    assert rehearse("ssh", NAME, "--", "true").returncode == 0


def test_interrupted_deploy_leaves_the_old_system(rehearse: Rehearse, vm: Config) -> None:
    """Ctrl-C after the switch, before rehearse confirmed it: the guest goes
    back to the system it ran (never a state in between)."""
    before, gens = current(rehearse), generations(rehearse)
    vm.set('  environment.etc."motd".text = "interrupted";')
    proc = rehearse.popen("deploy", NAME, "--yes", "--confirm-timeout", "15")
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("@@") or "setting up /etc" in line:
            proc.send_signal(signal.SIGINT)
            break
    _, rest = proc.communicate(timeout=60)
    assert proc.returncode == 130
    # It says where the VM is: mid-switch, or unconfirmed with the seconds left.
    assert re.search(rf"error: interrupted: the VM {NAME} .*rolls itself back", rest), rest
    # The guest decides alone now: it rolls back when the confirmation window ends.
    newest_result = 'cat "$(ls -d /run/rehearse/*/ | sort | tail -n 1)result" 2>/dev/null'
    deadline = time.monotonic() + 60
    verdict = ""
    while time.monotonic() < deadline and not verdict:
        verdict = rehearse("ssh", NAME, "--", newest_result).stdout.strip()
        time.sleep(2)
    assert verdict.startswith("rolled-back"), verdict
    assert current(rehearse) == before
    assert rehearse("ssh", NAME, "--", "cat", "/etc/motd").stdout == "rehearsed"
    assert [g["system"] for g in generations(rehearse)] == [g["system"] for g in gens]


def test_two_deploys_at_once_one_is_refused(rehearse: Rehearse, vm: Config) -> None:
    vm.set('  environment.etc."motd".text = "second";')
    first = rehearse.popen("deploy", NAME, "--yes")
    time.sleep(0.5)
    second = rehearse("deploy", NAME, "--yes")
    _, err1 = first.communicate(timeout=600)
    assert first.returncode == 0, err1
    assert second.returncode == 7
    assert "busy" in second.stderr and f"(rehearse deploy, pid {first.pid})" in second.stderr
    assert rehearse("ssh", NAME, "--", "cat", "/etc/motd").stdout == "second"


def test_activation_start_names_paths_the_vm_cannot_see_and_starts_nothing(rehearse: Rehearse, vm: Config) -> None:
    """guest/start.sh carries the registration of the new paths with the
    activation: one the VM does not see through the host store is named
    (rehearse then copies it, then starts again) and nothing starts."""
    from importlib import resources

    start = (resources.files("rehearse.host") / "guest" / "start.sh").read_text()
    script, registration = 'echo ran >> "$1/log"\n', "the registration\n"
    hidden = "/nix/store/" + "0" * 32 + "-not-in-the-host-store"
    seen = current(rehearse)
    d = "/run/rehearse/test-start"

    def start_with(*paths: str) -> subprocess.CompletedProcess[str]:
        sizes = [str(len(script)), str(len(registration))]
        argv = ["sh", "-c", start, "start", d, "N0NCE", *sizes, d, *paths]
        return subprocess.run(
            [sys.executable, "-m", "rehearse", "ssh", NAME, "--", shlex.join(argv)],
            input=script + registration + "confirm\n", capture_output=True, text=True,
            env=rehearse.env(), cwd=rehearse.cwd, timeout=120, check=False,
        )  # fmt: skip

    guest = lambda cmd: rehearse("ssh", NAME, "--", cmd).stdout  # noqa: E731
    refused = start_with(seen, hidden)
    assert refused.returncode == 3, refused.stderr
    assert refused.stdout.splitlines() == [f"@@rehearse-N0NCE missing {hidden}"]
    assert guest(f"ls {d}; cat /run/rehearse/registration 2>/dev/null | grep -c 'the registration'").split() == [
        "activate.sh",
        "0",
    ]
    started = start_with(seen)
    assert started.returncode == 0, started.stderr
    assert guest(
        f"sleep 1; cat {d}/log; cat /run/rehearse/registration 2>/dev/null | grep -c 'the registration'"
    ).split() == ["ran", "1"]
    guest(f"rm -rf {d}; sed -i '/the registration/d' /run/rehearse/registration")


def test_forced_copy(rehearse: Rehearse, vm: Config) -> None:
    vm.set('  environment.etc."motd".text = "copied over ssh";')
    code, err, _ = deploy(rehearse, "--copy")
    assert code == 0, err
    assert "0 new paths registered without copying" in err
    assert rehearse("ssh", NAME, "--", "cat", "/etc/motd").stdout == "copied over ssh"
    # nix-copy-closure wrote the new system into the VM's own (upper) store layer.
    system = current(rehearse).removeprefix("/nix/store/")
    assert rehearse("ssh", NAME, "--", "test", "-d", f"/nix/.rw-store/store/{system}").returncode == 0


def test_health_checks_from_rehearse_toml(rehearse: Rehearse, vm: Config, tmp_path: Path) -> None:
    port = rehearse.vm(NAME)["ssh"].split(":")[1]
    checked = Rehearse(state=rehearse.state, cwd=tmp_path)
    (tmp_path / "rehearse.toml").write_text(
        f'checks = [ {{ cmd = "grep -q checked /etc/motd" }}, {{ tcp = {port} }} ]\nconfirm_timeout = 30\n'
    )
    vm.set('  environment.etc."motd".text = "checked";')
    result = checked("deploy", NAME, "--yes")
    assert result.returncode == 0, result.stderr
    before = current(rehearse)
    (tmp_path / "rehearse.toml").write_text('checks = [ { http = "http://127.0.0.1:9/" } ]\nconfirm_timeout = 30\n')
    vm.set('  environment.etc."motd".text = "unhealthy";')
    result = checked("deploy", NAME, "--yes")
    assert result.returncode == 4
    assert "check failed" in result.stderr and "http://127.0.0.1:9/" in result.stderr
    assert "Errno" not in result.stderr and f"rehearse ssh {NAME} -- journalctl" in result.stderr
    assert "rolled back" in result.stderr
    assert current(rehearse) == before
    assert rehearse("ssh", NAME, "--", "cat", "/etc/motd").stdout == "checked"


def test_rollback(rehearse: Rehearse, vm: Config) -> None:
    gens = generations(rehearse)
    now = next(g for g in gens if g["current"])
    result = rehearse("rollback", NAME)
    assert result.returncode == 0, result.stderr
    after = generations(rehearse)
    cur = next(g for g in after if g["current"])
    assert int(str(cur["generation"])) < int(str(now["generation"]))
    assert current(rehearse) == cur["system"]
    assert rehearse("ssh", NAME, "--", "cat", "/etc/motd").stdout == "copied over ssh"  # the deploy before


def test_rollback_to_a_generation_that_does_not_exist(rehearse: Rehearse, vm: Config) -> None:
    before = current(rehearse)
    result = rehearse("rollback", NAME, "--to", "999")
    assert result.returncode == 2
    assert "has no generation 999" in result.stderr and "rehearse generations" in result.stderr
    assert current(rehearse) == before


def test_restart_boots_the_deployed_system(rehearse: Rehearse, vm: Config) -> None:
    vm.set('  environment.etc."motd".text = "after restart";')
    code, err, _ = deploy(rehearse)
    assert code == 0, err
    deployed = current(rehearse)
    assert rehearse("down", NAME).returncode == 0
    result = rehearse("up", str(vm.path), *include(), "--name", NAME)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "last deployed system" in result.stderr
    assert current(rehearse) == deployed
    assert rehearse("ssh", NAME, "--", "cat", "/etc/motd").stdout == "after restart"
    status = rehearse.vm(NAME)
    assert status["system"] == deployed
    assert status["disk_older"] is True
    table = rehearse("status").stdout
    assert "disk made with an older system" not in table and deployed in table  # it asks nothing of the user


def test_json_outcome_and_a_new_search_path_for_the_recorded_configuration(
    rehearse: Rehearse, vm: Config, tmp_path: Path
) -> None:
    """`deploy NAME -I nixpkgs=…` builds the configuration recorded at `up`
    with the new nixpkgs, as nixos-rebuild -I does; --json tells the outcome."""
    other = tmp_path / "nixpkgs"
    shutil.copytree(MINI_NIXPKGS, other, symlinks=True)
    version = other / "nixos" / "modules" / "misc" / "version.nix"
    version.write_text(version.read_text().replace('default = "pre-mini"', 'default = "pre-other"'))
    before = current(rehearse)
    result = rehearse("deploy", NAME, "--yes", "--json", "-I", f"nixpkgs={other}")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["result"] == "confirmed" and report["exit_code"] == 0
    assert report["source"] == str(vm.path)
    assert report["old_system"] == before
    assert report["new_system"] == current(rehearse)
    assert report["new_system"].endswith("-nixos-system-fripon-25.11pre-other")
    assert report["generation"] == next(g["generation"] for g in generations(rehearse) if g["current"])
    assert set(report["durations"]) == {"build", "push", "activate", "after_switch"}
    assert report["store"]["registered"] > 0 and report["store"]["copied"] == 0
    recorded = json.loads((rehearse.state / NAME / "state.json").read_text())["source"]
    assert recorded["configuration"] == str(vm.path) and recorded["include"] == [f"nixpkgs={other}"]
    # The same again: nothing to do, said in JSON too.
    again = rehearse("deploy", NAME, "--yes", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["result"] == "unchanged"
    # Back to the repository's mini nixpkgs.
    back = rehearse("deploy", NAME, "--yes", "-I", f"nixpkgs={MINI_NIXPKGS}")
    assert back.returncode == 0, back.stderr
    assert current(rehearse).endswith("-25.11pre-mini")


def test_declined_plan_changes_nothing(rehearse: Rehearse, vm: Config) -> None:
    """On a terminal, deploy asks before activating; "n" exits 5, VM unchanged."""
    before, gens = current(rehearse), generations(rehearse)
    vm.set('  environment.etc."motd".text = "declined";')
    controller, terminal = os.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rehearse", "deploy", NAME, "--json"],
            cwd=rehearse.cwd,
            env=rehearse.env(),
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.write(controller, b"n\n")
        out, err = proc.communicate(timeout=300)
    finally:
        os.close(controller)
        os.close(terminal)
    assert proc.returncode == 5, err
    assert "activate it? [y/N]" in err
    assert json.loads(out)["result"] == "declined"
    assert current(rehearse) == before and generations(rehearse) == gens

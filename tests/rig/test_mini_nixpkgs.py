"""Real Nix against the mini nixpkgs: its entry points behave like nixpkgs's."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import MINI_NIXPKGS, REPO, fixed_fripon, run

SEED = REPO / "examples" / "fripon" / "configuration.nix"
# The example locks root's password and has no key (whoever runs the VM gives
# one): with users.mutableUsers = false, NixOS refuses it without a key.
ROOT_KEY = '  users.users.root.openssh.authorizedKeys.keys = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk test@rig" ];'


def nix_build(expr: str, *extra: str) -> tuple[int, str, str]:
    result = run(["nix-build", "--no-out-link", "-I", f"nixpkgs={MINI_NIXPKGS}", "-E", expr, *extra])
    return result.returncode, result.stdout.strip(), result.stderr


def test_seed_configuration_conflicts_like_nixpkgs() -> None:
    code, _, err = nix_build(f"(import <nixpkgs/nixos> {{ configuration = {SEED}; }}).vm")
    assert code != 0
    lines = [line.strip() for line in err.splitlines()]
    assert (
        "error: The option `virtualisation.vmVariant.services.timesyncd.enable' has conflicting definition values:"
        in lines
    )
    assert f"- In `{MINI_NIXPKGS}/nixos/modules/virtualisation/qemu-vm.nix': false" in lines
    assert f"- In `{SEED}': true" in lines
    assert (
        "Use `lib.mkForce value` or `lib.mkDefault value` to change the priority on any of these definitions." in lines
    )


def test_seed_way_without_vmvariant_conflicts_too() -> None:
    # The seed's own `nixos-rebuild build-vm` era: qemu-vm.nix added to the modules.
    code, _, err = nix_build(
        f"(import <nixpkgs/nixos/lib/eval-config.nix> {{ modules = [ {SEED} "
        "<nixpkgs/nixos/modules/virtualisation/qemu-vm.nix> ]; }).config.system.build.vm"
    )
    assert code != 0
    assert "The option `services.timesyncd.enable' has conflicting definition values:" in err


def test_fixed_configuration_builds_a_vm(tmp_path: Path) -> None:
    conf = fixed_fripon(tmp_path, extra=ROOT_KEY)
    code, out, err = nix_build(f"(import <nixpkgs/nixos> {{ configuration = {conf}; }}).vm")
    assert code == 0, err
    vm = Path(out)
    runner = vm / "bin" / "run-fripon-vm"
    assert runner.exists()
    system = (vm / "system").resolve()
    assert system.name.endswith("-nixos-system-fripon-25.11pre-mini")
    assert (system / "nixos-version").read_text() == "25.11pre-mini"
    assert (system / "bin" / "switch-to-configuration").exists()
    assert (system / "sw" / "bin" / "vim").exists()
    assert (system / "etc" / "hostname").read_text() == "fripon\n"
    script = runner.read_text()
    for var in (
        "NIX_DISK_IMAGE",
        "USE_TMPDIR",
        "SHARED_DIR",
        "QEMU_OPTS",
        "QEMU_NET_OPTS",
        "QEMU_KERNEL_PARAMS",
    ):
        assert var in script
    assert "${NIX_DISK_IMAGE:-./fripon.qcow2}" in script
    assert "regInfo=" in script


def test_vm_settings_stay_in_the_vm(tmp_path: Path) -> None:
    conf = fixed_fripon(tmp_path, extra="  virtualisation.vmVariant.virtualisation.memorySize = 2048;\n" + ROOT_KEY)
    expr = (
        f"let n = import <nixpkgs/nixos> {{ configuration = {conf}; }}; in {{ "
        "host = n.config.services.timesyncd.enable; "
        "vm = n.config.virtualisation.vmVariant.services.timesyncd.enable; "
        "mem = n.config.virtualisation.vmVariant.virtualisation.memorySize; "
        "same = n.system == n.config.virtualisation.vmVariant.system.build.toplevel; }"
    )
    result = run(["nix-instantiate", "--eval", "--strict", "--json", "-I", f"nixpkgs={MINI_NIXPKGS}", "-E", expr])
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["host"] is True and data["vm"] is False and data["mem"] == 2048
    assert data["same"] is False  # the VM's system is a variant, not the server's


def test_unknown_option_is_named(tmp_path: Path) -> None:
    conf = fixed_fripon(tmp_path, extra="  services.nosuchservice.enable = true;")
    code, _, err = nix_build(f"(import <nixpkgs/nixos> {{ configuration = {conf}; }}).system")
    assert code != 0
    assert "The option `services.nosuchservice' does not exist." in err


def test_flake_nixos_system(tmp_path: Path) -> None:
    conf = fixed_fripon(tmp_path / "conf", extra=ROOT_KEY)
    (tmp_path / "flake.nix").write_text(
        '{ inputs.nixpkgs.url = "path:%s";\n'
        "  outputs = { self, nixpkgs }: {\n"
        "    nixosConfigurations.fripon = nixpkgs.lib.nixosSystem {\n"
        '      system = "x86_64-linux"; modules = [ ./conf/configuration.nix ]; };\n'
        "  }; }\n" % MINI_NIXPKGS
    )
    result = run(
        [
            "nix",
            "--extra-experimental-features",
            "nix-command flakes",
            "build",
            "--no-link",
            "--json",
            f"path:{tmp_path}#nixosConfigurations.fripon.config.system.build.vm",
        ]
    )
    assert result.returncode == 0, result.stderr
    vm = Path(json.loads(result.stdout)[0]["outputs"]["out"])
    assert (vm / "bin" / "run-fripon-vm").exists()
    assert conf.exists()


VM_TOPLEVEL = "config.virtualisation.vmVariant.system.build.toplevel"


def test_warnings_and_failed_assertions_as_nixos(tmp_path: Path) -> None:
    # nixos/modules/system/activation/top-level.nix: lib.asserts.checkAssertWarn; under Nix 2.8
    # (no builtins.warn) lib.warn traces "evaluation warning: …".
    conf = fixed_fripon(tmp_path / "warn", extra='  warnings = [ "first warning" "second warning" ];')
    code, _, err = nix_build(f"(import <nixpkgs/nixos> {{ configuration = {conf}; }}).{VM_TOPLEVEL}")
    assert code == 0, err
    lines = err.splitlines()
    assert lines[:2] == ["trace: evaluation warning: first warning", "trace: evaluation warning: second warning"]
    conf = fixed_fripon(
        tmp_path / "assert",
        extra='  warnings = [ "not shown" ];\n  assertions = [ { assertion = false; message = "one is wrong"; }'
        ' { assertion = true; message = "fine"; } { assertion = false; message = "two is wrong"; } ];',
    )
    code, _, err = nix_build(f"(import <nixpkgs/nixos> {{ configuration = {conf}; }}).{VM_TOPLEVEL}")
    assert code != 0
    assert "error:\n       Failed assertions:\n       - one is wrong\n       - two is wrong\n" in err
    assert "fine" not in err and "not shown" not in err


def test_warn_is_the_real_libs(tmp_path: Path) -> None:
    lib = MINI_NIXPKGS / "lib"
    result = run(["nix-instantiate", "--eval", "--strict", "-E", f"(import {lib}).warn 3 true"])
    assert result.returncode != 0 and "error: assertion '(isString msg)' failed" in result.stderr
    result = run(
        ["nix-instantiate", "--eval", "--strict", "-E", f'(import {lib}).warn "w" 1'],
        env={**os.environ, "NIX_ABORT_ON_WARN": "1"},
    )
    assert result.returncode != 0
    assert result.stderr.startswith("trace: evaluation warning: w\n")
    assert "NIX_ABORT_ON_WARN=true; warnings are treated as unrecoverable errors." in result.stderr


def test_init_interface_version_and_pre_switch_checks(tmp_path: Path) -> None:
    conf = fixed_fripon(tmp_path / "a", extra='  system.preSwitchChecks.sees = "echo \\"got $1 $2\\"";')
    code, out, err = nix_build(f"(import <nixpkgs/nixos> {{ configuration = {conf}; }}).{VM_TOPLEVEL}")
    assert code == 0, err
    system = Path(out)
    # "systemd ${toString config.systemd.package.interfaceVersion}"; nixpkgs' systemd has 2.
    assert (system / "init-interface-version").read_text() == "systemd 2"
    stc = (system / "bin" / "switch-to-configuration").read_text()
    script = stc.split('PRE_SWITCH_CHECK = "', 1)[1].split('"', 1)[0]
    assert script.endswith("-pre-switch-checks/bin/pre-switch-checks")
    ran = run([script, system, "test"])
    assert ran.returncode == 0 and ran.stderr == f"got {system} test\n" and ran.stdout == ""
    conf = fixed_fripon(
        tmp_path / "b",
        extra="  systemd.package = pkgs.systemd // { interfaceVersion = 3; };\n"
        '  system.preSwitchChecks.fails = "echo trying; false";',
    )
    code, out, err = nix_build(f"(import <nixpkgs/nixos> {{ configuration = {conf}; }}).{VM_TOPLEVEL}")
    assert code == 0, err
    system = Path(out)
    assert (system / "init-interface-version").read_text() == "systemd 3"
    script = (system / "bin" / "switch-to-configuration").read_text().split('PRE_SWITCH_CHECK = "', 1)[1]
    ran = run([script.split('"', 1)[0], system, "switch"])
    assert ran.returncode == 1 and ran.stderr == "trying\nPre-switch check 'fails' failed\n"


def install_bootloader(system: Path) -> str:
    stc = (system / "bin" / "switch-to-configuration").read_text()
    return stc.split('INSTALL_BOOTLOADER = "', 1)[1].split('"', 1)[0]


def test_grub_is_the_servers_boot_loader_and_the_vm_has_none(tmp_path: Path) -> None:
    conf = fixed_fripon(tmp_path / "ok", extra=ROOT_KEY)
    code, out, err = nix_build(f"(import <nixpkgs/nixos> {{ configuration = {conf}; }}).system")
    assert code == 0, err
    install = install_bootloader(Path(out))
    assert install.endswith("-install-grub.sh")
    assert "\ninstall /boot /dev/vda\n" in Path(install).read_text()  # boot.loader.grub.device of fripon
    code, out, err = nix_build(f"(import <nixpkgs/nixos> {{ configuration = {conf}; }}).{VM_TOPLEVEL}")
    assert code == 0, err
    assert install_bootloader(Path(out)) == ""  # direct boot: "no boot loader to install (direct boot)"
    # As NixOS's grub.nix: an enabled GRUB needs a device; without GRUB, no boot loader at all.
    conf = fixed_fripon(tmp_path / "nodev", extra=ROOT_KEY + '\n  boot.loader.grub.device = lib.mkForce "";')
    code, _, err = nix_build(f"(import <nixpkgs/nixos> {{ configuration = {conf}; }}).system")
    assert code != 0
    assert (
        "- You must set the option ‘boot.loader.grub.devices’ or 'boot.loader.grub.mirroredBoots' "
        "to make the system bootable." in err
    )
    conf = fixed_fripon(tmp_path / "none", extra=ROOT_KEY + "\n  boot.loader.grub.enable = lib.mkForce false;")
    code, out, err = nix_build(f"(import <nixpkgs/nixos> {{ configuration = {conf}; }}).system")
    assert code == 0, err
    ran = run([install_bootloader(Path(out)), out])
    assert ran.returncode == 0
    assert ran.stderr == (
        "Warning: do not know how to make this configuration bootable; please enable a boot loader.\n"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a mount namespace")
def test_install_grub_writes_the_boot_menu(tmp_path: Path) -> None:
    """The rig's install-grub, run in a mount namespace where /boot and the system profiles
    are the test's directories."""
    disk = "/dev/rig-no-such-disk"
    conf = fixed_fripon(tmp_path / "conf", extra=ROOT_KEY + f'\n  boot.loader.grub.device = lib.mkForce "{disk}";')
    code, out, err = nix_build(f"(import <nixpkgs/nixos> {{ configuration = {conf}; }}).system")
    assert code == 0, err
    system = Path(out)
    boot, profiles = tmp_path / "boot", tmp_path / "profiles"
    boot.mkdir()
    profiles.mkdir()
    (profiles / "system-1-link").symlink_to(system)
    (profiles / "system-3-link").symlink_to(system)
    (profiles / "system").symlink_to("system-3-link")

    def install(*env: str) -> subprocess.CompletedProcess[str]:
        script = f'mount --bind {boot} /boot && mount --bind {profiles} /nix/var/nix/profiles && exec "$@"'
        return run(["unshare", "-m", "sh", "-c", script, "sh", "env", *env, install_bootloader(system), system])

    # No state yet: GRUB is installed on the device, which this host lacks.
    ran = install()
    assert ran.returncode == 1
    assert ran.stderr.splitlines()[:2] == [
        "updating GRUB 2 menu...",
        f"installing the GRUB 2 boot loader on {disk}...",
    ]
    assert f"installation of GRUB on {disk} failed: not a block device" in ran.stderr
    assert not (boot / "rig" / "default").exists()
    # Installed before on the same device (as rig/server/start leaves it): the menu only.
    (boot / "rig" / "state").write_text(f"devices={disk}\n")
    ran = install()
    assert ran.returncode == 0, ran.stderr
    assert ran.stderr == "updating GRUB 2 menu...\n"
    assert (boot / "rig" / "default").read_text() == f"{system}\n"
    assert sorted(p.name for p in (boot / "rig" / "entries").iterdir()) == ["1", "3"]
    assert (boot / "rig" / "entries" / "3").read_text() == f"{system}\n"
    (profiles / "system-1-link").unlink()
    assert install().returncode == 0
    assert sorted(p.name for p in (boot / "rig" / "entries").iterdir()) == ["3"]
    # NIXOS_INSTALL_BOOTLOADER=1 installs again.
    ran = install("NIXOS_INSTALL_BOOTLOADER=1")
    assert ran.returncode == 1 and f"installing the GRUB 2 boot loader on {disk}..." in ran.stderr

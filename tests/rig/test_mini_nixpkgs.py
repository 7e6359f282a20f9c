"""Real Nix against the mini nixpkgs: its entry points behave like nixpkgs's."""

from __future__ import annotations

import json
from pathlib import Path

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

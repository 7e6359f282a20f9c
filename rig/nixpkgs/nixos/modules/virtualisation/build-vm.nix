# virtualisation.vmVariant and system.build.vm, as nixos/modules/virtualisation/build-vm.nix:
# the VM is a *variant* of the configuration, extended with qemu-vm.nix, so
# settings under `virtualisation.vmVariant` apply only inside the VM.
{ config, extendModules, lib, ... }:
let
  inherit (lib) mkOption;

  vmVariant = extendModules { modules = [ ./qemu-vm.nix ]; };

  vmVariantWithBootLoader = vmVariant.extendModules {
    modules = [ { _file = "build-vm.nix (vmVariantWithBootLoader)"; virtualisation.useBootLoader = true; } ];
  };
in
{
  options = {
    virtualisation.vmVariant = mkOption {
      description = "Machine configuration to be added for the vm script produced by `nixos-rebuild build-vm`.";
      inherit (vmVariant) type;
      default = { };
      visible = "shallow";
    };
    virtualisation.vmVariantWithBootLoader = mkOption {
      description = "Machine configuration to be added for the vm script produced by `nixos-rebuild build-vm-with-bootloader`.";
      inherit (vmVariantWithBootLoader) type;
      default = { };
      visible = "shallow";
    };
  };

  config = {
    system.build = {
      vm = lib.mkDefault config.virtualisation.vmVariant.system.build.vm;
      vmWithBootLoader = lib.mkDefault config.virtualisation.vmVariantWithBootLoader.system.build.vm;
    };
  };
}

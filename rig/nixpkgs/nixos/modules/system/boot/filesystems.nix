# fileSystems / swapDevices: declared so a server's hardware-configuration
# evaluates; the VM replaces them (qemu-vm.nix, with mkVMOverride).
# The rig's server stand-in (rig/server) boots a system whose root file
# system is the rig image's: fileSystems."/".device = "/dev/disk/by-label/nixos"
# (or label = "nixos", or "/dev/vda"), fsType ext4; rig/server/start checks it.
{ config, lib, ... }:
let
  inherit (lib) mkOption types;
  fsOpts = { name, config, ... }: {
    options = {
      mountPoint = mkOption { type = types.str; default = name; description = "Where it is mounted."; };
      device = mkOption { type = types.nullOr types.str; default = null; description = "The device."; };
      fsType = mkOption { type = types.str; default = "auto"; description = "The file system type."; };
      options = mkOption { type = types.listOf types.str; default = [ "defaults" ]; description = "Mount options."; };
      label = mkOption { type = types.nullOr types.str; default = null; description = "The file system label."; };
      neededForBoot = mkOption { type = types.bool; default = false; description = "Mounted in the initrd."; };
    };
    # As NixOS: a label names the device.
    config.device = lib.mkIf (config.label != null) (lib.mkDefault "/dev/disk/by-label/${config.label}");
  };
in
{
  options = {
    fileSystems = mkOption {
      type = types.attrsOf (types.submodule fsOpts);
      default = { };
      description = "The file systems to mount.";
    };
    swapDevices = mkOption {
      type = types.listOf (types.submodule {
        options = {
          device = mkOption { type = types.str; description = "The swap device."; };
          size = mkOption { type = types.nullOr types.int; default = null; description = "Size of a swap file in MiB."; };
        };
      });
      default = [ ];
      description = "Swap devices.";
    };
  };

  # As nixos/modules/system/boot/stage-1.nix asserts (the VM variant
  # passes: qemu-vm.nix gives it a root file system).
  config.assertions = [
    {
      assertion = lib.any (fs: fs.mountPoint == "/") (lib.attrValues config.fileSystems);
      message = "The ‘fileSystems’ option does not specify your root file system.";
    }
  ];
}

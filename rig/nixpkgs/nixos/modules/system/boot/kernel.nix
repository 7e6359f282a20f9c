# boot.* options a hardware-configuration.nix sets.  The rig boots the
# kernel of its Debian guest image, so these are recorded, not built.
{ lib, ... }:
let
  inherit (lib) mkOption types;
  strs = description: mkOption { type = types.listOf types.str; default = [ ]; inherit description; };
in
{
  options.boot = {
    isContainer = mkOption { type = types.bool; default = false; description = "Whether this is a container."; };
    kernelParams = strs "Kernel command line parameters.";
    kernelModules = strs "Kernel modules loaded in stage 2.";
    extraModulePackages = mkOption { type = types.listOf types.package; default = [ ]; description = "Out-of-tree kernel modules."; };
    blacklistedKernelModules = strs "Kernel modules never loaded.";
    initrd = {
      availableKernelModules = strs "Kernel modules available in the initrd.";
      kernelModules = strs "Kernel modules loaded in the initrd.";
      luks.devices = mkOption { type = types.attrsOf types.anything; default = { }; description = "LUKS devices."; };
    };
    postBootCommands = mkOption {
      type = types.lines;
      default = "";
      description = "Shell commands run at the end of boot.";
    };
  };
}

# boot.loader.*: the server's boot loader.  A direct-boot VM has none, which
# is why `switch-to-configuration test` is the action for it.
{ config, lib, options, ... }:
let
  inherit (lib) mkOption types;
in
{
  options.boot.loader = {
    timeout = mkOption { type = types.nullOr types.int; default = 5; description = "Boot menu timeout."; };
    grub = {
      enable = mkOption { type = types.bool; default = !config.boot.isContainer; description = "Whether to enable GRUB."; };
      # As in NixOS: declared, hidden, no default; setting it only warns.
      version = mkOption { visible = false; type = types.int; description = "No effect anymore."; };
      device = mkOption { type = types.str; default = ""; description = "The device GRUB is installed on."; };
      devices = mkOption { type = types.listOf types.str; default = [ ]; description = "Devices GRUB is installed on."; };
      efiSupport = mkOption { type = types.bool; default = false; description = "Build GRUB with EFI support."; };
      useOSProber = mkOption { type = types.bool; default = false; description = "Add other systems to the menu."; };
    };
    systemd-boot.enable = mkOption { type = types.bool; default = false; description = "Whether to enable systemd-boot."; };
    efi.canTouchEfiVariables = mkOption { type = types.bool; default = false; description = "May the installer change EFI variables."; };
  };

  config = lib.mkIf options.boot.loader.grub.version.isDefined {
    warnings = [ ''
      The boot.loader.grub.version option does not have any effect anymore, please remove it from your configuration.
    '' ];
  };
}

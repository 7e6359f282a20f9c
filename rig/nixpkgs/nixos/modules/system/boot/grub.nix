# boot.loader.*: the server's boot loader, with the interface of NixOS's
# nixos/modules/system/boot/loader/grub/grub.nix: `device` (a string, "" by
# default) joins `devices`, the devices make the /boot entry of
# `mirroredBoots`, and an enabled GRUB without any device fails the
# assertion NixOS has.
#
# What is installed (system.build.installBootLoader, run by
# `switch-to-configuration switch|boot` with the new system as argument) is
# the rig's stand-in for install-grub.pl: no GRUB is built, the guest boots
# the kernel of the rig's image (QEMU loads it, as GRUB would from the disk),
# and the menu is a directory the guest's boot units read:
#   <boot path>/rig/default      the default entry: the toplevel to boot
#   <boot path>/rig/entries/N    one entry per generation N of the system
#                                profile ("NixOS - All configurations")
#   <boot path>/rig/state        the devices GRUB was installed on
# It prints what install-grub.pl prints ("updating GRUB 2 menu...", and
# "installing the GRUB 2 boot loader on DEV..." when it installs: with
# NIXOS_INSTALL_BOOTLOADER=1 or when the devices changed), and fails when a
# device it installs on is not a block device of the machine.
# rig/server/start, the rig's nixos-install, writes the first menu.
# A direct-boot VM (qemu-vm.nix) installs nothing.
{ config, lib, pkgs, options, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.boot.loader.grub;

  installGrub = pkgs.writeScript "install-grub.sh" (''
    #!${pkgs.runtimeShell}
    # The rig's install-grub (see nixpkgs' nixos/modules/system/boot/grub.nix in the rig).
    set -e
    export PATH=/usr/sbin:/usr/bin:/sbin:/bin
    toplevel=$1
    profiles=/nix/var/nix/profiles
    install() {
      bootPath=$1
      shift
      devices="$*"
      menu=$bootPath/rig
      echo "updating GRUB 2 menu..." >&2
      mkdir -p "$menu"
      state="devices=$devices"
      if [ "''${NIXOS_INSTALL_BOOTLOADER:-}" = 1 ] || [ "$(cat "$menu/state" 2>/dev/null)" != "$state" ]; then
        for dev in $devices; do
          [ "$dev" = nodev ] && continue
          echo "installing the GRUB 2 boot loader on $dev..." >&2
          if ! [ -b "$dev" ]; then
            echo "$0: installation of GRUB on $dev failed: not a block device" >&2
            exit 1
          fi
        done
        printf '%s\n' "$state" > "$menu/state.tmp"
        mv -f "$menu/state.tmp" "$menu/state"
      fi
      # The entries of the system profile's generations, made anew.
      rm -rf "$menu/entries.tmp"
      mkdir "$menu/entries.tmp"
      for link in "$profiles"/system-*-link; do
        [ -L "$link" ] || continue
        n=''${link##*/system-}
        n=''${n%-link}
        readlink -f "$link" > "$menu/entries.tmp/$n"
      done
      rm -rf "$menu/entries.old"
      if [ -d "$menu/entries" ]; then mv "$menu/entries" "$menu/entries.old"; fi
      mv "$menu/entries.tmp" "$menu/entries"
      rm -rf "$menu/entries.old"
      # The default entry last, in one step.
      printf '%s\n' "$toplevel" > "$menu/default.tmp"
      mv -f "$menu/default.tmp" "$menu/default"
    }
  '' + lib.concatMapStrings (b: ''
    install ${lib.escapeShellArg b.path} ${lib.concatMapStringsSep " " lib.escapeShellArg b.devices}
  '') cfg.mirroredBoots);
in
{
  options.boot.loader = {
    timeout = mkOption { type = types.nullOr types.int; default = 5; description = "Boot menu timeout."; };
    grub = {
      enable = mkOption { type = types.bool; default = !config.boot.isContainer; description = "Whether to enable the GNU GRUB boot loader."; };
      # As in NixOS: declared, hidden, no default; setting it only warns.
      version = mkOption { visible = false; type = types.int; description = "No effect anymore."; };
      device = mkOption {
        type = types.str;
        default = "";
        example = "/dev/disk/by-id/wwn-0x500001234567890a";
        description = ''
          The device on which the GRUB boot loader will be installed.
          The special value `nodev` means that a GRUB boot menu will be
          generated, but GRUB itself will not actually be installed.  To
          install GRUB on multiple devices, use `boot.loader.grub.devices`.
        '';
      };
      devices = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "/dev/disk/by-id/wwn-0x500001234567890a" ];
        description = "The devices on which the boot loader, GRUB, will be installed.";
      };
      mirroredBoots = mkOption {
        type = types.listOf (types.submodule {
          options = {
            path = mkOption { type = types.str; example = "/boot1"; description = "The boot directory GRUB is written to."; };
            devices = mkOption { type = types.listOf types.str; default = [ ]; description = "The devices that get GRUB's MBR."; };
            efiSysMountPoint = mkOption { type = types.nullOr types.str; default = null; description = "The EFI system mount point."; };
            efiBootloaderId = mkOption { type = types.nullOr types.str; default = null; description = "The boot loader id in NVRAM."; };
          };
        });
        default = [ ];
        description = "Mirror the boot configuration to multiple partitions and install GRUB to their devices.";
      };
      efiSupport = mkOption { type = types.bool; default = false; description = "Build GRUB with EFI support."; };
      useOSProber = mkOption { type = types.bool; default = false; description = "Add other systems to the menu."; };
    };
    systemd-boot.enable = mkOption { type = types.bool; default = false; description = "Whether to enable systemd-boot."; };
    efi.canTouchEfiVariables = mkOption { type = types.bool; default = false; description = "May the installer change EFI variables."; };
  };

  config = lib.mkMerge [
    (lib.mkIf options.boot.loader.grub.version.isDefined {
      warnings = [ ''
        The boot.loader.grub.version option does not have any effect anymore, please remove it from your configuration.
      '' ];
    })

    (lib.mkIf cfg.enable {
      boot.loader.grub.devices = lib.optional (cfg.device != "") cfg.device;

      boot.loader.grub.mirroredBoots = lib.optionals (cfg.devices != [ ]) [
        { path = "/boot"; inherit (cfg) devices; }
      ];

      system.build.installBootLoader = installGrub;

      assertions = [
        {
          assertion = cfg.mirroredBoots != [ ];
          message = "You must set the option ‘boot.loader.grub.devices’ or "
            + "'boot.loader.grub.mirroredBoots' to make the system bootable.";
        }
      ] ++ lib.concatMap (args: [
        {
          assertion = args.devices != [ ];
          message = "A boot path cannot have an empty devices string in ${args.path}";
        }
        {
          assertion = lib.hasPrefix "/" args.path;
          message = "Boot paths must be absolute, not ${args.path}";
        }
      ] ++ map (device: {
        assertion = device == "nodev" || lib.hasPrefix "/" device;
        message = "GRUB devices must be absolute paths, not ${device} in ${args.path}";
      }) args.devices) cfg.mirroredBoots;
    })
  ];
}

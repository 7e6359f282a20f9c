# system.build.toplevel: the system's store path, laid out as NixOS lays it
# out (activate, bin/switch-to-configuration, etc, sw, nixos-version …).
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;

  # As NixOS's top-level.nix: what switch-to-configuration runs for switch
  # and boot, with the new system as argument; a boot loader module sets it.
  # The rig's direct-boot VM (qemu-vm.nix) sets "": no boot loader to install.
  noBootLoader = pkgs.writeShellScript "no-bootloader" ''
    echo 'Warning: do not know how to make this configuration bootable; please enable a boot loader.' 1>&2
  '';

  toplevel = pkgs.runCommand "nixos-system-${config.system.name}-${config.system.nixos.label}" {
    activate = config.system.build.activate;
    switch = ./switch-to-configuration.py;
    etc = config.system.build.etc;
    sw = config.system.path;
    label = config.system.nixos.label;
    kernelParams = lib.concatStringsSep " " config.boot.kernelParams;
    systemPlatform = pkgs.system;
    configurationRevision = if config.system.configurationRevision == null then "" else config.system.configurationRevision;
    # As NixOS: "systemd <interfaceVersion of systemd.package>" (2 for
    # nixpkgs' systemd); a systemd.package with another interfaceVersion
    # makes a system switch-to-configuration cannot switch to at runtime.
    initInterfaceVersion = "systemd ${toString config.systemd.package.interfaceVersion}";
    preSwitchCheck = config.system.preSwitchChecksScript;
    installBootLoader = config.system.build.installBootLoader;
  } ''
    mkdir -p "$out/bin" "$out/specialisation"
    sed "s|@out@|$out|g" "$activate" > "$out/activate"
    chmod +x "$out/activate"
    { echo "#!/usr/bin/python3"; sed -e "s|@out@|$out|g" -e "s|@preSwitchCheck@|$preSwitchCheck|g" \
      -e "s|@installBootLoader@|$installBootLoader|g" "$switch"; } > "$out/bin/switch-to-configuration"
    chmod +x "$out/bin/switch-to-configuration"
    ln -s "$etc/etc" "$out/etc"
    ln -s "$sw" "$out/sw"
    printf '%s' "$label" > "$out/nixos-version"
    printf '%s' "$systemPlatform" > "$out/system"
    printf '%s' "$kernelParams" > "$out/kernel-params"
    printf '%s' "$initInterfaceVersion" > "$out/init-interface-version"
    # The rig boots the kernel of its guest image; these links keep the
    # toplevel's NixOS layout (and let tools probe KVM with the kernel).
    ln -s /var/cache/rehearse-rig/guest/vmlinuz "$out/kernel"
    ln -s /var/cache/rehearse-rig/guest/initrd.img "$out/initrd"
    if [ -n "$configurationRevision" ]; then printf '%s' "$configurationRevision" > "$out/configuration-revision"; fi
    # NixOS boots through $out/init; the rig's guest boots Debian's systemd
    # and activates this system from a boot unit instead.
    printf '#!/bin/sh\nexec /sbin/init "$@"\n' > "$out/init"
    chmod +x "$out/init"
  '';
in
{
  options.system = {
    name = mkOption {
      type = types.str;
      default = if config.networking.hostName == "" then "nixos" else config.networking.hostName;
      description = "The name of the system (used in the toplevel's and the VM runner's names).";
    };
    build = mkOption {
      type = types.lazyAttrsOf types.unspecified;
      default = { };
      description = "Derivations of the system: toplevel, vm, etc, activate …";
    };
  };

  # As NixOS: failed assertions throw "\nFailed assertions:\n- …", and the
  # warnings are shown (lib.warn: "evaluation warning: …" under Nix 2.8)
  # when the toplevel is evaluated.
  config.system.build.toplevel = lib.asserts.checkAssertWarn config.assertions config.warnings toplevel;
  config.system.build.installBootLoader = lib.mkDefault noBootLoader;
}

# system.build.toplevel: the system's store path, laid out as NixOS lays it
# out (activate, bin/switch-to-configuration, etc, sw, nixos-version …).
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;

  failed = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
  checked =
    if failed != [ ] then throw "\nFailed assertions:\n${lib.concatMapStrings (m: "- ${m}\n") failed}"
    else lib.foldr (w: x: builtins.trace "warning: ${w}" x) true config.warnings;

  toplevel = pkgs.runCommand "nixos-system-${config.system.name}-${config.system.nixos.label}" {
    activate = config.system.build.activate;
    switch = ./switch-to-configuration.py;
    etc = config.system.build.etc;
    sw = config.system.path;
    label = config.system.nixos.label;
    kernelParams = lib.concatStringsSep " " config.boot.kernelParams;
    systemPlatform = pkgs.system;
    configurationRevision = if config.system.configurationRevision == null then "" else config.system.configurationRevision;
  } ''
    mkdir -p "$out/bin" "$out/specialisation"
    sed "s|@out@|$out|g" "$activate" > "$out/activate"
    chmod +x "$out/activate"
    { echo "#!/usr/bin/python3"; sed "s|@out@|$out|g" "$switch"; } > "$out/bin/switch-to-configuration"
    chmod +x "$out/bin/switch-to-configuration"
    ln -s "$etc/etc" "$out/etc"
    ln -s "$sw" "$out/sw"
    printf '%s' "$label" > "$out/nixos-version"
    printf '%s' "$systemPlatform" > "$out/system"
    printf '%s' "$kernelParams" > "$out/kernel-params"
    printf 'systemd' > "$out/init-interface-version"
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

  config.system.build.toplevel = assert checked; toplevel;
}

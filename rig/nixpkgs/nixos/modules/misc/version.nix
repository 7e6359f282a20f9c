# system.stateVersion and the NixOS release the mini nixpkgs claims to be.
{ config, lib, ... }:
let
  inherit (lib) mkOption types;
  # The release of this mini nixpkgs' flavour (rig/nixpkgs/flavour.nix).
  flavour = import ../../../flavour.nix;
in
{
  options.system = {
    stateVersion = mkOption {
      type = types.str;
      default = flavour.release;
      description = "The NixOS release whose stateful data layout the system keeps.";
    };
    nixos = {
      release = mkOption { type = types.str; default = flavour.release; readOnly = true; description = "The NixOS release."; };
      codeName = mkOption { type = types.str; default = flavour.codeName; readOnly = true; description = "The release code name."; };
      versionSuffix = mkOption { type = types.str; default = "pre-mini"; description = "Version suffix."; };
      version = mkOption {
        type = types.str;
        default = config.system.nixos.release + config.system.nixos.versionSuffix;
        description = "The full NixOS version.";
      };
      label = mkOption {
        type = types.strMatching "[a-zA-Z0-9:_\\.-]*";
        default = config.system.nixos.version;
        description = "The label of this generation (boot menu, system name).";
      };
      tags = mkOption { type = types.listOf types.str; default = [ ]; description = "Tags added to the label."; };
    };
    configurationRevision = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "The revision of the configuration (e.g. the flake's git revision).";
    };
  };
}

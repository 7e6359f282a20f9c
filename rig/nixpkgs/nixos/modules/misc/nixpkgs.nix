# nixpkgs.*: which package set the configuration is built with.
{ config, lib, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.nixpkgs;
  # hostPlatform may be a string ("x86_64-linux") or an attrset with `system`.
  platformSystem = p: if builtins.isString p then p else p.system;
in
{
  options.nixpkgs = {
    system = mkOption {
      type = types.str;
      description = "The system the configuration is built for (older name of hostPlatform).";
    };
    hostPlatform = mkOption {
      type = types.either types.str (types.attrsOf types.anything);
      default = cfg.system;
      description = "The platform the configuration runs on.";
    };
    buildPlatform = mkOption {
      type = types.either types.str (types.attrsOf types.anything);
      default = cfg.hostPlatform;
      description = "The platform the configuration is built on.";
    };
    localSystem = mkOption {
      type = types.attrsOf types.anything;
      default = { system = platformSystem cfg.hostPlatform; };
      description = "Older name of hostPlatform.";
    };
    config = mkOption {
      type = types.attrsOf types.anything;
      default = { };
      description = "The nixpkgs configuration (ignored by the mini nixpkgs).";
    };
    overlays = mkOption {
      type = types.listOf types.anything;
      default = [ ];
      description = "Overlays (ignored by the mini nixpkgs).";
    };
    pkgs = mkOption {
      type = types.attrsOf types.anything;
      default = import ../../../pkgs { system = platformSystem cfg.hostPlatform; };
      description = "The package set; by default the mini nixpkgs for hostPlatform.";
    };
  };
  config._module.args.pkgs = cfg.pkgs;
}

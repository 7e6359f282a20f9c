# nix.*: /etc/nix/nix.conf from nix.settings, with the interface of NixOS's
# nixos/modules/config/nix.nix (a freeform `settings`, its typed
# trusted-users and allowed-users, extraOptions, `trusted-users = [ "root" ]`
# always in).  The daemon is services/system/nix-daemon.nix.
#
# Rig only: the guest's Nix is Debian's 2.8, with no build users and no
# sandbox, and no binary cache is reachable; so `build-users-group`,
# `sandbox` and `substituters` default (mkDefault) to what the rig image's
# own /etc/nix/nix.conf says, where NixOS has nixbld, true and
# cache.nixos.org.  Not done: checkConfig (NixOS runs `nix show-config` on
# the file at build time).
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption mkDefault types;
  cfg = config.nix;

  confAtom = types.nullOr (types.oneOf [ types.bool types.int types.float types.str types.path types.package ]);
  semanticConfType = types.attrsOf (types.either confAtom (types.listOf confAtom));

  mkValueString = v:
    if v == null then ""
    else if builtins.isInt v then toString v
    else if builtins.isBool v then lib.boolToString v
    else if builtins.isList v then toString v
    else toString v;

  mkKeyValuePairs = attrs:
    lib.concatStringsSep "\n" (lib.mapAttrsToList (k: v: "${lib.escape [ "=" ] k} = ${mkValueString v}") attrs);

  isExtra = key: lib.hasPrefix "extra-" key;

  # As NixOS writes it: the extra-* settings after their counterparts.
  nixConf = pkgs.writeText "nix.conf" ''
    # WARNING: this file is generated from the nix.* options in
    # your NixOS configuration, typically
    # /etc/nixos/configuration.nix.  Do not edit it!
    ${mkKeyValuePairs (lib.filterAttrs (k: _: !(isExtra k)) cfg.settings)}
    ${mkKeyValuePairs (lib.filterAttrs (k: _: isExtra k) cfg.settings)}
    ${cfg.extraOptions}
  '';
in
{
  options.nix = {
    enable = mkOption { type = types.bool; default = true; description = "Whether Nix is usable on the machine."; };
    package = mkOption { type = types.package; default = pkgs.nix; description = "The Nix package."; };
    extraOptions = mkOption { type = types.lines; default = ""; description = "Additional text appended to nix.conf."; };
    settings = mkOption {
      type = types.submodule {
        freeformType = semanticConfType;
        options = {
          trusted-users = mkOption {
            type = types.listOf types.str;
            example = [ "root" "alice" "@wheel" ];
            description = ''
              A list of names of users that have additional rights when
              connecting to the Nix daemon, such as the ability to specify
              additional binary caches, or to import unsigned NARs. You
              can also specify groups by prefixing them with
              `@`; for instance,
              `@wheel` means all users in the wheel
              group.
            '';
          };
          allowed-users = mkOption {
            type = types.listOf types.str;
            default = [ "*" ];
            example = [ "@wheel" "@builders" "alice" "bob" ];
            description = "Users (or `@groups`) allowed to connect to the Nix daemon; `*`: all. Trusted users always may.";
          };
        };
      };
      default = { };
      description = "Configuration for Nix (nix.conf), key = value as Nix expects it.";
    };
  };

  config = lib.mkIf cfg.enable {
    environment.etc."nix/nix.conf".source = nixConf;
    nix.settings = {
      trusted-users = [ "root" ];
      # The rig's guest (see the top).
      build-users-group = mkDefault "";
      sandbox = mkDefault false;
      substituters = mkDefault [ ];
    };
  };
}

# A plain string that is not a store path is not a package.
{ lib }:
let
  inherit (lib) mkOption types;
  c = (lib.evalModules {
    modules = [
      { options.environment.shellPackage = mkOption { type = types.package; }; }
      { _file = "/etc/nixos/configuration.nix"; environment.shellPackage = "bash"; }
    ];
  }).config;
in
c.environment.shellPackage

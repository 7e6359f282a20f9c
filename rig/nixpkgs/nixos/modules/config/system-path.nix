# environment.systemPackages → the toplevel's `sw`.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
in
{
  options.environment = {
    systemPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
      description = "Packages installed in the system profile (/run/current-system/sw).";
    };
    pathsToLink = mkOption {
      type = types.listOf types.str;
      default = [ "/bin" "/sbin" "/share" "/lib" "/etc" ];
      description = "Directories of the packages linked into the system profile.";
    };
  };
  options.system.path = mkOption {
    type = types.package;
    internal = true;
    description = "The system profile's package tree.";
  };
  config.system.path = pkgs.buildEnv {
    name = "system-path";
    paths = config.environment.systemPackages;
    inherit (config.environment) pathsToLink;
  };
}

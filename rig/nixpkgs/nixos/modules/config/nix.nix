{ lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
in
{
  options.nix = {
    enable = mkOption { type = types.bool; default = true; description = "Whether Nix is usable on the machine."; };
    package = mkOption { type = types.package; default = pkgs.nix; description = "The Nix package."; };
    settings = mkOption { type = types.attrsOf types.anything; default = { }; description = "nix.conf settings (recorded only)."; };
  };
}

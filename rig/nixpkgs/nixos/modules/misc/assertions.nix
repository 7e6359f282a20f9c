# assertions and warnings, checked when the toplevel is built.
{ lib, ... }:
let
  inherit (lib) mkOption types;
in
{
  options = {
    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
      internal = true;
      description = "Conditions that must hold: { assertion = bool; message = str; }.";
    };
    warnings = mkOption {
      type = types.listOf types.str;
      default = [ ];
      internal = true;
      description = "Messages printed when the system is built.";
    };
  };
}

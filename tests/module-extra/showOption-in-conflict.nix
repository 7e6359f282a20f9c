# The quoted component shows up in the conflict message of an attrsOf entry;
# definitions are listed in reverse module order, as for top-level options.
{ lib }:
let
  inherit (lib) mkOption types;
  c = (lib.evalModules {
    modules = [
      { options.home.file = mkOption { type = types.attrsOf (types.submodule { options.text = mkOption { type = types.str; }; }); default = { }; }; }
      { _file = "/home/alice/base.nix"; home.file.".bashrc".text = "one"; }
      { _file = "/home/alice/extra.nix"; home.file.".bashrc".text = "two"; }
    ];
  }).config;
in
c.home.file.".bashrc".text

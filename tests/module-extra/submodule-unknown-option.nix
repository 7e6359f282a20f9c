# A definition of an option that the submodule does not declare is reported
# with its full path (the submodule's prefix, quoted where needed) and the
# file of the definition.
{ lib }:
let
  inherit (lib) mkOption types;
  c = (lib.evalModules {
    modules = [
      { options.home.file = mkOption {
          type = types.attrsOf (types.submodule {
            options.source = mkOption { type = types.str; };
            options.text = mkOption { type = types.nullOr types.lines; default = null; };
          });
          default = { };
        }; }
      { _file = "/home/alice/home.nix"; home.file.".bashrc".sourc = "/etc/skel/.bashrc"; }
    ];
  }).config;
in
c.home.file.".bashrc".text

# Same through two levels of submodules, the inner one a plain `submodule`
# option, and for a definition that is itself an attribute set: only the
# first path component that has no declaration is named.
{ lib }:
let
  inherit (lib) mkOption types;
  instance = { name, ... }: {
    options.settings = mkOption {
      type = types.submodule { options.port = mkOption { type = types.port; default = 80; }; };
      default = { };
    };
  };
  c = (lib.evalModules {
    modules = [
      { options.services.web.instances = mkOption { type = types.attrsOf (types.submodule instance); default = { }; }; }
      { _file = "/etc/nixos/web.nix"; services.web.instances."example.org".settings.tls.enable = true; }
    ];
  }).config;
in
c.services.web.instances."example.org".settings.port

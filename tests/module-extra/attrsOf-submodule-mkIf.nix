# attrsOf (submodule ...) with mkIf / mkForce at every level: around a whole
# entry, around an attribute inside an entry, and around an option value.
# An entry whose only definition is `mkIf false` does not exist at all.
{ lib }:
let
  inherit (lib) mkOption types;
  user = { name, ... }: {
    options.shell = mkOption { type = types.str; default = "/bin/sh"; };
    options.home = mkOption { type = types.str; default = "/home/${name}"; };
    options.extraGroups = mkOption { type = types.listOf types.str; default = [ ]; };
  };
  c = (lib.evalModules {
    modules = [
      { options.users = mkOption { type = types.attrsOf (types.submodule user); default = { }; };
        options.wheel.enable = mkOption { type = types.bool; default = false; }; }
      ({ config, ... }: {
        users.alice = lib.mkIf config.wheel.enable { extraGroups = [ "wheel" ]; };
        users.bob.shell = lib.mkIf (!config.wheel.enable) "/bin/zsh";
        users.carol = { extraGroups = lib.mkIf config.wheel.enable [ "wheel" ]; home = lib.mkForce "/srv/carol"; };
        users.dave = lib.mkIf false { shell = "/bin/fish"; };
      })
      { wheel.enable = true; users.alice.shell = "/bin/bash"; users.carol.home = "/home/carol2"; }
    ];
  }).config;
in
c.users

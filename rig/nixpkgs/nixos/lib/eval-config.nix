# Evaluate a NixOS configuration: the base modules of the mini nixpkgs plus
# the given ones.  Same arguments as the real nixos/lib/eval-config.nix; the
# result is the module evaluation (config, options, extendModules, type …)
# plus `pkgs`.
{ system ? builtins.currentSystem
, pkgs ? null
, baseModules ? import ../modules/module-list.nix
, extraArgs ? { }
, specialArgs ? { }
, modules
, modulesLocation ? (builtins.unsafeGetAttrPos "modules" evalConfigArgs).file or null
, extraModules ? [ ]
, check ? true
, prefix ? [ ]
, lib ? import ../../lib
, ...
}@evalConfigArgs:
let
  # Where `system` and `pkgs` enter the evaluation, at default priority so a
  # configuration's own `nixpkgs.hostPlatform` wins (as in the real one).
  pkgsModule = {
    _file = ./eval-config.nix;
    key = ./eval-config.nix;
    config = {
      nixpkgs.system = lib.mkIf (system != null) (lib.mkDefault system);
      nixpkgs.pkgs = lib.mkIf (pkgs != null) (lib.mkForce pkgs);
      _module.check = lib.mkDefault check;
    };
  };

  withExtraArgs = { _file = ./eval-config.nix; key = "extraArgs"; config._module.args = extraArgs; };

  evaluated = lib.evalModules {
    inherit prefix;
    modules = baseModules ++ extraModules ++ [ pkgsModule withExtraArgs ] ++ modules;
    specialArgs = { modulesPath = builtins.toString ../modules; } // specialArgs;
  };
in
evaluated // {
  pkgs = evaluated.config._module.args.pkgs;
}

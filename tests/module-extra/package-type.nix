# types.package takes a derivation as it is (nullOr/listOf around it too);
# mkPackageOption makes a package option defaulting to pkgs.NAME.
{ lib }:
let
  inherit (lib) mkOption types;
  hello = derivation { name = "hello-2.12.1"; system = "x86_64-linux"; builder = "/bin/sh"; };
  pkgs = { inherit hello; };
  ev = lib.evalModules {
    modules = [
      ({ pkgs, ... }: {
        options.programs.hello.package = lib.mkPackageOption pkgs "hello" { };
        options.shell = mkOption { type = types.nullOr types.package; default = null; };
        options.packages = mkOption { type = types.listOf types.package; default = [ ]; };
        config.packages = [ pkgs.hello ];
      })
      { _module.args.pkgs = pkgs; }
      { shell = hello; packages = [ hello ]; }
    ];
  };
  c = ev.config;
in
{
  default = c.programs.hello.package.name;
  isDrv = lib.isDerivation c.shell;
  shell = c.shell.name;
  packages = map (p: p.name) c.packages;
  sameOutPath = c.shell.outPath == hello.outPath;
  description = ev.options.programs.hello.package.description;
  typeDescription = ev.options.programs.hello.package.type.description;
}

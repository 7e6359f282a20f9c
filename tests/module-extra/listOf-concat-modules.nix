# listOf concatenates the definitions of all modules, in the order the
# definitions arrive: modules are collected breadth-first (imports come after
# the whole list that contains their importer) and the result is reversed.
# mkBefore/mkAfter and mkIf work on whole definitions; the default ([])
# only applies when nothing else is defined.
{ lib }:
let
  inherit (lib) mkOption types;
  ev = modules: (lib.evalModules { inherit modules; }).config;
  decl = { options.xs = mkOption { type = types.listOf types.str; default = [ "default" ]; }; };
in
{
  flat = (ev [ decl { xs = [ "a1" "a2" ]; } { xs = [ "b" ]; } { xs = [ "c" ]; } ]).xs;
  imports = (ev [ decl { imports = [ { xs = [ "a-imported" ]; } ]; xs = [ "a" ]; } { xs = [ "b" ]; } ]).xs;
  ordered = (ev [ decl { xs = lib.mkAfter [ "last" ]; } { xs = [ "mid" ]; } { xs = lib.mkBefore [ "first" ]; } { xs = lib.mkIf false [ "never" ]; } ]).xs;
  onlyDefault = (ev [ decl { xs = lib.mkIf false [ "never" ]; } ]).xs;
  elementMkIf = (ev [ decl { xs = [ "x" (lib.mkIf false "y") (lib.mkIf true "z") ]; } ]).xs;
}

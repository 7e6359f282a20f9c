# `lines` joins definitions with "\n": definitions arrive in reverse module
# order (the module list is reversed before merging), then a stable sort by
# mkOrder puts mkBefore (500) first and mkAfter (1500) last.  The option
# default ("", at mkOptionDefault priority) loses to the real definitions,
# and a `mkIf false` definition contributes nothing.
{ lib }:
let
  inherit (lib) mkOption types;
  c = (lib.evalModules {
    modules = [
      { options.script = mkOption { type = types.lines; default = ""; }; }
      { script = "a"; }
      { script = lib.mkBefore "b-before"; }
      { script = lib.mkAfter "c-after"; }
      { script = "d"; }
      { script = lib.mkIf false "e-never"; }
      { script = lib.mkMerge [ "f1" (lib.mkOrder 1200 "f2-1200") ]; }
    ];
  }).config;
in
c.script

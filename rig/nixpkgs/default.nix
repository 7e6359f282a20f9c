# `import <nixpkgs> {}`: the package set of the mini nixpkgs.
# Like the real one it takes `system` (and ignores `config`/`overlays`, which
# the rig's configurations do not need).
{ system ? builtins.currentSystem, config ? { }, overlays ? [ ], ... }:
import ./pkgs { inherit system; }

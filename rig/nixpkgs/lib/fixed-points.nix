# Fixed points and overlays-style extension (lib/fixed-points.nix).
{ lib }:

{
  fix = f: let x = f x; in x;

  # Like `fix`, but the result also records the unfixed function.
  fix' = f: let x = f x // { __unfix__ = f; }; in x;

  # `extends overlay f`: apply an overlay `final: prev: { ... }` on top of `f`.
  extends = overlay: f: final:
    let prev = f final; in prev // overlay final prev;

  composeExtensions = f: g: final: prev:
    let
      fApplied = f final prev;
      prev' = prev // fApplied;
    in
    fApplied // g final prev';

  composeManyExtensions = builtins.foldl' (acc: e: lib.composeExtensions acc e) (final: prev: { });

  toExtension = f:
    if lib.isFunction f then
      final: prev:
        let fPrev = f prev; in
        if lib.isFunction fPrev then f final prev else fPrev
    else final: prev: f;

  makeExtensible = lib.makeExtensibleWithCustomName "extend";

  makeExtensibleWithCustomName = extenderName: rattrs:
    lib.fix' (self: (rattrs self) // {
      ${extenderName} = f: lib.makeExtensibleWithCustomName extenderName (lib.extends (lib.toExtension f) rattrs);
    });
}

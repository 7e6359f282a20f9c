# The mini nixpkgs `lib`: `import ./lib` (no arguments) gives an attribute
# set shaped like the real nixpkgs lib — sub-libraries (lib.lists,
# lib.strings, lib.attrsets, lib.trivial, lib.options, lib.modules, lib.types,
# lib.fixedPoints, lib.generators ...) and their functions at the top level.
#
# `lib` is a fixpoint: every sub-library gets the final `lib` and refers to
# other functions through it, lazily.  The flat top level is the `//` of the
# sub-libraries; this only forces each sub-library's attribute *names*, which
# is why the sub-library files return literal attribute sets.
#
# As in the real one, the fixpoint is extensible: `lib.extend (final: prev:
# { ... })` rebuilds every sub-library against the extended lib.
let
  # (fixed-points.nix needs a lib to be loaded, so the bootstrap is local.)
  makeExtensible = rattrs:
    let
      self = rattrs self // {
        extend = f: makeExtensible (final:
          let prev = rattrs final; in
          prev // f final prev);
      };
    in
    self;

  mkLib = lib:
    let
      callLibs = file: import file { inherit lib; };

      sub = {
        trivial = callLibs ./trivial.nix;
        fixedPoints = callLibs ./fixed-points.nix;
        lists = callLibs ./lists.nix;
        strings = callLibs ./strings.nix;
        attrsets = callLibs ./attrsets.nix;
        generators = callLibs ./generators.nix;
        options = callLibs ./options.nix;
        modules = callLibs ./modules.nix;
        typesLib = callLibs ./types.nix;
        asserts = callLibs ./asserts.nix;
      };

      # Later sets win on name clashes: the string `hasPrefix`/`removePrefix`
      # (strings) over the list ones (lists), as in the real flat lib.
      flat =
        sub.fixedPoints
        // sub.lists
        // sub.attrsets
        // sub.strings
        // sub.trivial
        // sub.options
        // sub.modules
        // {
          inherit (sub.typesLib) isType setType isOptionType mkOptionType defaultFunctor defaultTypeMerge;
        };
    in
    flat // {
      inherit (sub) trivial fixedPoints lists strings attrsets generators options modules asserts;
      inherit (sub.typesLib) types;
      # The real lib also has these names for the same functions.
      debug = sub.trivial;
      versions = sub.trivial.versions;

      # Enough of lib.systems for modules that only look at the double.
      systems = {
        elaborate = system:
          let s = if builtins.isString system then { inherit system; } else system; in
          s // { config = s.config or s.system; };
        flakeExposed = [ "x86_64-linux" "aarch64-linux" ];
      };
    };
in
makeExtensible mkLib

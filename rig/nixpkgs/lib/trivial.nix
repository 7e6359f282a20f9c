# Small general-purpose functions (the counterpart of nixpkgs' lib/trivial.nix).
#
# Every sub-library of this mini lib is a function `{ lib }: { ... }` whose
# result is a *literal* attribute set: default.nix merges the sub-libraries
# with `//` to build the flat top-level `lib`, which forces the attribute
# *names* of each file while `lib` itself is still being built.  So nothing at
# the top level of these files may depend on `lib` other than lazily (inside
# values).
{ lib }:

let
  inherit (builtins) getEnv elem isString;
  # The NixOS release of this mini nixpkgs' flavour (../flavour.nix).
  flavour = import ../flavour.nix;
in
{
  id = x: x;
  const = x: _: x;
  flip = f: a: b: f b a;
  pipe = value: fns: builtins.foldl' (acc: f: f acc) value fns;
  concat = a: b: a ++ b;
  or = a: b: a || b;
  and = a: b: a && b;
  xor = a: b: a != b;
  bitAnd = builtins.bitAnd;
  bitOr = builtins.bitOr;
  bitXor = builtins.bitXor;
  mergeAttrs = a: b: a // b;
  boolToString = b: if b then "true" else "false";
  min = a: b: if a < b then a else b;
  max = a: b: if a > b then a else b;
  mod = base: int: base - (int * (builtins.div base int));
  compare = a: b: if a < b then -1 else if a > b then 1 else 0;
  defaultTo = default: maybeValue: if maybeValue != null then maybeValue else default;
  mapNullable = f: a: if a == null then a else f a;

  seq = builtins.seq;
  deepSeq = builtins.deepSeq;
  inherit (builtins) pathExists readFile isBool isInt isFloat isString isList isAttrs isPath typeOf
    toString trace tryEval addErrorContext unsafeGetAttrPos genericClosure add sub lessThan
    compareVersions parseDrvName;

  # `importJSON` / `importTOML` as in the real lib.
  importJSON = path: builtins.fromJSON (builtins.readFile path);
  importTOML = path: builtins.fromTOML (builtins.readFile path);

  # Release information: this is a mini re-implementation, so the suffix
  # makes it obvious in traces which lib is in use.
  version = "${flavour.release}-mini";
  release = flavour.release;
  oldestSupportedRelease = 2505;
  codeName = flavour.codeName;
  versionSuffix = "-mini";
  nixpkgsVersion = "${flavour.release}-mini";
  isInOldestRelease = release: release <= 2505;

  # --- functions and their argument sets --------------------------------

  # A set with `__functor` is callable too; the module system relies on
  # recognising those as modules-as-functions.
  isFunction = f: builtins.isFunction f || (f ? __functor && lib.isFunction (f.__functor f));

  # `functionArgs` must see through `__functor`s that carry `__functionArgs`
  # (set by `setFunctionArgs`), because module argument resolution uses it.
  functionArgs = f:
    if f ? __functor
    then f.__functionArgs or (lib.functionArgs (f.__functor f))
    else builtins.functionArgs f;

  setFunctionArgs = f: args: {
    __functor = self: f;
    __functionArgs = args;
  };

  mirrorFunctionArgs = f: g: lib.setFunctionArgs g (lib.functionArgs f);

  toFunction = v: if lib.isFunction v then v else _: v;

  # --- warnings and assertions ------------------------------------------

  # As nixpkgs' lib/trivial.nix: `builtins.warn` where Nix has it (2.23+);
  # otherwise (Nix 2.8 here) a trace with the "evaluation warning: " prefix,
  # fatal with NIX_ABORT_ON_WARN. Not eta-reduced, and the message must be a
  # string, as for `builtins.warn`.
  warn =
    builtins.warn or (
      let
        mustAbort = elem (getEnv "NIX_ABORT_ON_WARN") [ "1" "true" "yes" ];
      in
      msg: v:
      assert isString msg;
      if mustAbort then
        builtins.trace "evaluation warning: ${msg}"
          (abort "NIX_ABORT_ON_WARN=true; warnings are treated as unrecoverable errors.")
      else
        builtins.trace "evaluation warning: ${msg}" v
    );
  warnIf = cond: msg: if cond then lib.warn msg else x: x;
  warnIfNot = cond: msg: if cond then x: x else lib.warn msg;
  throwIf = cond: msg: if cond then throw msg else x: x;
  throwIfNot = cond: msg: if cond then x: x else throw msg;
  info = msg: builtins.trace "INFO: ${msg}";

  # Each warning through `warn`, the first one printed first.
  showWarnings = warnings: res: lib.foldr (w: x: lib.warn w x) res warnings;

  checkListOfEnum = msg: valid: given:
    let unexpected = lib.subtractLists valid given; in
    lib.throwIfNot (unexpected == [ ])
      "${msg}: ${builtins.concatStringsSep ", " (map builtins.toString unexpected)} unexpected; valid ones: ${builtins.concatStringsSep ", " (map builtins.toString valid)}";

  # --- debug-style helpers (lib/debug.nix in the real one) --------------
  traceVal = x: builtins.trace x x;
  traceValFn = f: x: builtins.trace (f x) x;
  traceSeq = x: y: builtins.trace (builtins.deepSeq x x) y;
  traceValSeq = x: builtins.trace (builtins.deepSeq x x) x;
  traceIf = pred: msg: x: if pred then builtins.trace msg x else x;
  assertMsg = pred: msg: pred || throw msg;
  assertOneOf = name: val: xs:
    lib.assertMsg (elem val xs)
      "${name} must be one of ${lib.generators.toPretty { } xs}, but is: ${lib.generators.toPretty { } val}";

  # --- versions ---------------------------------------------------------
  versionOlder = v1: v2: builtins.compareVersions v2 v1 == 1;
  versionAtLeast = v1: v2: !(lib.versionOlder v1 v2);
  splitVersion = builtins.splitVersion;
  versions = {
    major = v: builtins.elemAt (builtins.splitVersion v) 0;
    minor = v: builtins.elemAt (builtins.splitVersion v) 1;
    patch = v: builtins.elemAt (builtins.splitVersion v) 2;
    majorMinor = v:
      let parts = builtins.splitVersion v; in
      "${builtins.elemAt parts 0}.${builtins.elemAt parts 1}";
  };
}

# Attribute-set functions (lib/attrsets.nix).
{ lib }:

let
  inherit (builtins) head tail length attrNames attrValues mapAttrs listToAttrs
    isAttrs hasAttr getAttr foldl' filter concatMap;
in
{
  inherit (builtins) attrNames attrValues mapAttrs listToAttrs hasAttr getAttr
    removeAttrs intersectAttrs catAttrs isAttrs zipAttrsWith;

  attrByPath = attrPath: default: set:
    let
      len = length attrPath;
      go = n: s:
        if n == len then s
        else
          let name = builtins.elemAt attrPath n; in
          if isAttrs s && s ? ${name} then go (n + 1) s.${name} else default;
    in
    go 0 set;

  hasAttrByPath = attrPath: e:
    let
      len = length attrPath;
      go = n: s:
        if n == len then true
        else
          let name = builtins.elemAt attrPath n; in
          isAttrs s && s ? ${name} && go (n + 1) s.${name};
    in
    go 0 e;

  setAttrByPath = attrPath: value:
    let
      len = length attrPath;
      go = n: if n == len then value else { ${builtins.elemAt attrPath n} = go (n + 1); };
    in
    go 0;

  getAttrFromPath = attrPath: set:
    lib.attrByPath attrPath (abort ("cannot find attribute '" + builtins.concatStringsSep "." attrPath + "'")) set;

  attrVals = nameList: set: map (x: set.${x}) nameList;
  getAttrs = names: attrs: lib.genAttrs names (name: attrs.${name});

  nameValuePair = name: value: { inherit name value; };

  filterAttrs = pred: set:
    removeAttrs set (filter (name: !pred name set.${name}) (attrNames set));
  filterAttrsRecursive = pred: set:
    listToAttrs (concatMap
      (name:
        let v = set.${name}; in
        if pred name v then [
          (lib.nameValuePair name (if isAttrs v then lib.filterAttrsRecursive pred v else v))
        ] else [ ])
      (attrNames set));

  foldAttrs = op: nul: list_of_attrs:
    foldl'
      (a: n: foldl' (acc: name: acc // { ${name} = op n.${name} (a.${name} or nul); }) a (attrNames n))
      { }
      (lib.reverseList list_of_attrs);

  foldlAttrs = f: init: set: foldl' (acc: name: f acc name set.${name}) init (attrNames set);

  collect = pred: attrs:
    if pred attrs then [ attrs ]
    else if isAttrs attrs then concatMap (lib.collect pred) (attrValues attrs)
    else [ ];

  mapAttrs' = f: set: listToAttrs (map (attr: f attr set.${attr}) (attrNames set));
  mapAttrsToList = f: attrs: map (name: f name attrs.${name}) (attrNames attrs);
  attrsToList = mapAttrs (name: value: { inherit name value; });
  concatMapAttrs = f: v: foldl' (a: b: a // b) { } (attrValues (mapAttrs f v));

  mapAttrsRecursive = f: set: lib.mapAttrsRecursiveCond (as: true) f set;
  # `cond` decides whether to descend into a nested set; the module system
  # uses it with `v: !isOption v` to turn the option tree into `config`.
  mapAttrsRecursiveCond = cond: f: set:
    let
      recurse = path: mapAttrs (name: value:
        if isAttrs value && cond value
        then recurse (path ++ [ name ]) value
        else f (path ++ [ name ]) value);
    in
    recurse [ ] set;

  genAttrs = names: f: listToAttrs (map (n: lib.nameValuePair n (f n)) names);

  isDerivation = value: value.type or null == "derivation";

  # A store path string as a minimal derivation-looking set (used by the
  # `package` option type for store-path definitions).  The real one goes
  # through builtins.storePath; here the path is kept as it is, so a path
  # that is not (yet) in the store does not make evaluation fail.
  toDerivation = path:
    let
      path' = toString path;
      res = {
        type = "derivation";
        name = lib.sanitizeDerivationName (builtins.substring 33 (-1) (baseNameOf path'));
        outPath = path';
        outputs = [ "out" ];
        out = res;
        outputName = "out";
      };
    in
    res;

  optionalAttrs = cond: as: if cond then as else { };

  zipAttrsWithNames = names: f: sets:
    listToAttrs (map (name: {
      inherit name;
      value = f name (builtins.catAttrs name sets);
    }) names);
  zipAttrs = builtins.zipAttrsWith (name: values: values);

  recursiveUpdateUntil = pred: lhs: rhs:
    let
      f = attrPath: builtins.zipAttrsWith (n: values:
        let here = attrPath ++ [ n ]; in
        if length values == 1
          || pred here (builtins.elemAt values 1) (head values)
        then head values
        else f here values);
    in
    f [ ] [ rhs lhs ];

  recursiveUpdate = lhs: rhs:
    lib.recursiveUpdateUntil (path: lhs: rhs: !(isAttrs lhs && isAttrs rhs)) lhs rhs;

  matchAttrs = pattern: attrs:
    builtins.all (name:
      let pat = pattern.${name}; in
      attrs ? ${name} && (if isAttrs pat then isAttrs attrs.${name} && lib.matchAttrs pat attrs.${name} else pat == attrs.${name}))
      (attrNames pattern);

  overrideExisting = old: new: mapAttrs (name: value: new.${name} or value) old;

  unionOfDisjoint = x: y:
    let intersection = builtins.intersectAttrs x y; in
    if intersection == { } then x // y
    else throw "unionOfDisjoint: collision on ${builtins.toString (attrNames intersection)}";

  mergeAttrsList = list: foldl' (a: b: a // b) { } list;

  getOutput = output: pkg:
    if !(pkg ? outputSpecified) || !pkg.outputSpecified
    then pkg.${output} or pkg.out or pkg
    else pkg;
  getBin = lib.getOutput "bin";
  getLib = lib.getOutput "lib";
  getDev = lib.getOutput "dev";
  getMan = lib.getOutput "man";
  getExe' = x: y: "${lib.getBin x}/bin/${y}";
  getExe = x: lib.getExe' x (x.meta.mainProgram or (lib.getName x));

  recurseIntoAttrs = attrs: attrs // { recurseForDerivations = true; };
  dontRecurseIntoAttrs = attrs: attrs // { recurseForDerivations = false; };

  cartesianProduct = attrsOfLists:
    foldl' (listOfAttrs: attrName:
      concatMap (attrs: map (listValue: attrs // { ${attrName} = listValue; }) attrsOfLists.${attrName}) listOfAttrs)
      [ { } ]
      (attrNames attrsOfLists);
}

# Option types (lib/types.nix).
#
# A type is an attribute set made by `mkOptionType`:
#   name, description     for messages ("A definition ... is not of type `DESCRIPTION'")
#   check                 value -> bool, applied to every definition
#   merge                 loc -> [ { file; value } ] -> value
#   getSubOptions         for documentation / `type.getSubOptions prefix`
#   getSubModules, substSubModules
#                         the modules of submodule-like types, so that the
#                         module system can tag them with declaration files
#   functor, typeMerge    how two declarations of one option merge their types
#   emptyValue            what a lazy attrsOf yields for an entry whose
#                         definitions were all mkIf false
{ lib }:

let
  inherit (builtins) head tail length elemAt isAttrs isList isString isInt isFloat
    isBool isPath filter all any attrNames foldl' concatLists mapAttrs
    zipAttrsWith elem;
  inherit (lib) isFunction isDerivation isStorePath toDerivation last imap1
    optionalAttrs showOption showFiles showDefs getFiles mergeEqualOption
    mergeOneOption mergeUniqueOption mergeDefaultOption concatMapStringsSep
    escapeNixString hasInfix removeSuffix isStringLike;

  # Type-level helpers, used below and exported (also at the top of lib).
  isType = type: x: (x._type or "") == type;

  # How two types of one option merge: same name, and their payloads (or
  # wrapped types) merge too; `type` rebuilds the type from the merged parts.
  # A type whose name is not a `types.*` constructor cannot be merged.
  defaultFunctor = name: {
    inherit name;
    type = lib.types.${name} or null;
    wrapped = null;
    payload = null;
    binOp = a: b: null;
  };

  defaultTypeMerge = f: f':
    if f.name != f'.name then null
    else if f.payload != null then
      if f'.payload == null then null
      else
        let mergedPayload = f.binOp f.payload f'.payload; in
        if mergedPayload == null then null else f.type mergedPayload
    else if f.wrapped != null then
      if f'.wrapped == null then null
      else
        let mergedWrapped = f.wrapped.typeMerge f'.wrapped.functor; in
        if mergedWrapped == null then null else f.type mergedWrapped
    else f.type;

  # Functor of the one-element-type constructors (listOf, nullOr, ...).
  elemTypeFunctor = name: payload: {
    inherit name payload;
    wrapped = payload.elemType;
    type = null; # set by each constructor
    binOp = a: b:
      let merged = a.elemType.typeMerge b.elemType.functor; in
      if merged == null then null else a // { elemType = merged; };
  };

  mkOptionType =
    { name
    , description ? null
    , descriptionClass ? null
    , check ? (x: true)
    , merge ? mergeDefaultOption
    , emptyValue ? { }
    , getSubOptions ? prefix: { }
    , getSubModules ? null
    , substSubModules ? m: null
    , typeMerge ? defaultTypeMerge functor
    , functor ? defaultFunctor name
    , deprecationMessage ? null
    , nestedTypes ? { }
    }:
    {
      _type = "option-type";
      inherit name check merge emptyValue getSubOptions getSubModules substSubModules
        typeMerge functor deprecationMessage nestedTypes descriptionClass;
      description = if description == null then name else description;
    };

  # Parenthesise a type's description inside another one unless its class
  # reads well there: "list of string" but "list of (submodule)".
  optionDescriptionPhrase = unparenthesize: t:
    if unparenthesize (t.descriptionClass or null) then t.description else "(${t.description})";

  isNoun = class: class == "noun";
  isNounOrComposite = class: class == "noun" || class == "composite";
  isNounOrConjunction = class: class == "noun" || class == "conjunction";

  betweenDesc = lowest: highest: "${toString lowest} and ${toString highest} (both inclusive)";

  # Elements of definitions: keep the file of the definition with each value.
  pushPositions = map (def: mapAttrs (n: v: { inherit (def) file; value = v; }) def.value);

  types = rec {
    inherit isType mkOptionType defaultFunctor defaultTypeMerge optionDescriptionPhrase;
    isOptionType = isType "option-type";
    setType = typeName: value: value // { _type = typeName; };

    # --- anything-goes types ------------------------------------------------

    raw = mkOptionType {
      name = "raw";
      description = "raw value";
      descriptionClass = "noun";
      check = value: true;
      merge = mergeOneOption;
    };

    anything = mkOptionType {
      name = "anything";
      description = "anything";
      descriptionClass = "noun";
      check = value: true;
      # Sets merge recursively, functions merge their results, packages and
      # everything else must be equal.
      merge = loc: defs:
        let
          getType = value: if isAttrs value && isStringLike value then "stringCoercibleSet" else builtins.typeOf value;
          commonType = foldl'
            (type: def:
              if getType def.value == type then type
              else throw "The option `${showOption loc}' has conflicting option types in ${showFiles (getFiles defs)}")
            (getType (head defs).value)
            defs;
          mergeFunction = {
            set = (attrsOf anything).merge;
            stringCoercibleSet = mergeOneOption;
            lambda = loc: defs: arg: anything.merge (loc ++ [ "<function body>" ])
              (map (def: { file = def.file; value = def.value arg; }) defs);
          }.${commonType} or mergeEqualOption;
        in
        mergeFunction loc defs;
    };

    unspecified = mkOptionType {
      name = "unspecified";
      description = "unspecified value";
      descriptionClass = "noun";
    };

    # --- scalars ----------------------------------------------------------

    bool = mkOptionType {
      name = "bool";
      description = "boolean";
      descriptionClass = "noun";
      check = isBool;
      merge = mergeEqualOption;
    };

    boolByOr = mkOptionType {
      name = "boolByOr";
      description = "boolean (merged using or)";
      descriptionClass = "noun";
      check = isBool;
      merge = loc: defs: foldl' (result: def: result || def.value) false defs;
    };

    int = mkOptionType {
      name = "int";
      description = "signed integer";
      descriptionClass = "noun";
      check = isInt;
      merge = mergeEqualOption;
    };

    ints =
      let
        between = lowest: highest:
          assert lib.assertMsg (lowest <= highest) "ints.between: lowest must be smaller than highest";
          addCheck int (x: x >= lowest && x <= highest) // {
            name = "intBetween";
            description = "integer between ${betweenDesc lowest highest}";
          };
        ign = lowest: highest: name: docStart:
          between lowest highest // {
            inherit name;
            description = docStart + "; between ${betweenDesc lowest highest}";
          };
        unsign = bit: range: ign 0 (range - 1) "unsignedInt${toString bit}" "${toString bit} bit unsigned integer";
        sign = bit: range: ign (0 - (range / 2)) (range / 2 - 1) "signedInt${toString bit}" "${toString bit} bit signed integer";
      in
      {
        inherit between;
        unsigned = addCheck int (x: x >= 0) // {
          name = "unsignedInt";
          description = "unsigned integer, meaning >=0";
          descriptionClass = "nonRestrictiveClause";
        };
        positive = addCheck int (x: x > 0) // {
          name = "positiveInt";
          description = "positive integer, meaning >0";
          descriptionClass = "nonRestrictiveClause";
        };
        u8 = unsign 8 256;
        u16 = unsign 16 65536;
        u32 = unsign 32 4294967296;
        s8 = sign 8 256;
        s16 = sign 16 65536;
        s32 = sign 32 4294967296;
      };

    port = ints.u16;

    float = mkOptionType {
      name = "float";
      description = "floating point number";
      descriptionClass = "noun";
      check = isFloat;
      merge = mergeEqualOption;
    };

    number = either int float;

    numbers =
      let
        between = lowest: highest:
          addCheck number (x: x >= lowest && x <= highest) // {
            name = "numberBetween";
            description = "integer or floating point number between ${betweenDesc lowest highest}";
          };
      in
      {
        inherit between;
        nonnegative = addCheck number (x: x >= 0) // {
          name = "numberNonnegative";
          description = "nonnegative integer or floating point number, meaning >=0";
        };
        positive = addCheck number (x: x > 0) // {
          name = "numberPositive";
          description = "positive integer or floating point number, meaning >0";
        };
      };

    # --- strings ------------------------------------------------------------

    str = mkOptionType {
      name = "str";
      description = "string";
      descriptionClass = "noun";
      check = isString;
      merge = mergeEqualOption;
    };

    nonEmptyStr = mkOptionType {
      name = "nonEmptyStr";
      description = "non-empty string";
      descriptionClass = "noun";
      check = x: str.check x && builtins.match "[ \t\n]*" x == null;
      inherit (str) merge;
    };

    # One line, optionally with a trailing newline that merging removes
    # (handy for values read from files).
    singleLineStr =
      let inherit (strMatching "[^\n\r]*\n?") check merge; in
      mkOptionType {
        name = "singleLineStr";
        description = "(optionally newline-terminated) single-line string";
        descriptionClass = "noun";
        inherit check;
        merge = loc: defs: removeSuffix "\n" (merge loc defs);
      };

    strMatching = pattern: mkOptionType {
      name = "strMatching ${escapeNixString pattern}";
      description = "string matching the pattern ${pattern}";
      descriptionClass = "noun";
      check = x: str.check x && builtins.match pattern x != null;
      inherit (str) merge;
      functor = defaultFunctor "strMatching" // {
        type = payload: strMatching payload.pattern;
        payload = { inherit pattern; };
        binOp = lhs: rhs: if lhs == rhs then lhs else null;
      };
    };

    # Definitions are joined with `sep`, in definition order after mkOrder
    # sorting (mkBefore first, mkAfter last).
    separatedString = sep: mkOptionType {
      name = "separatedString";
      description =
        if sep == "" then "Concatenated string"
        else "strings concatenated with ${builtins.toJSON sep}";
      descriptionClass = "noun";
      check = isString;
      merge = loc: defs: builtins.concatStringsSep sep (lib.getValues defs);
      functor = defaultFunctor "separatedString" // {
        type = separatedString;
        payload = sep;
        binOp = sepLhs: sepRhs: if sepLhs == sepRhs then sepLhs else null;
      };
    };

    lines = separatedString "\n";
    commas = separatedString ",";
    envVar = separatedString ":";

    string = separatedString "" // {
      name = "string";
      deprecationMessage = "See https://github.com/NixOS/nixpkgs/pull/66346 for better alternative types.";
    };

    passwdEntry = entryType: addCheck entryType (s: !(hasInfix ":" s || hasInfix "\n" s)) // {
      name = "passwdEntry ${entryType.name}";
      description = "${optionDescriptionPhrase isNoun entryType}, not containing newlines or colons";
      descriptionClass = "nonRestrictiveClause";
    };

    # --- sets, packages, paths ------------------------------------------------

    attrs = mkOptionType {
      name = "attrs";
      description = "attribute set";
      check = isAttrs;
      merge = loc: foldl' (res: def: res // def.value) { };
      emptyValue = { value = { }; };
    };

    # A derivation, or a store path that is turned into a derivation-like set.
    package = mkOptionType {
      name = "package";
      descriptionClass = "noun";
      check = x: isDerivation x || isStorePath x;
      merge = loc: defs:
        let res = mergeOneOption loc defs; in
        if isPath res || (isString res && !builtins.hasContext res)
        then toDerivation res
        else res;
    };

    shellPackage = package // {
      check = x: isDerivation x && x ? shellPath;
    };

    pkgs = addCheck
      (unique { message = "A Nixpkgs pkgs set can not be merged with another pkgs set."; } attrs // {
        name = "pkgs";
        descriptionClass = "noun";
        description = "Nixpkgs package set";
      })
      (x: (x._type or null) == "pkgs");

    pathWith = { inStore ? null, absolute ? null }:
      lib.throwIf (inStore != null && absolute != null && inStore && !absolute)
        "In pathWith, inStore means the path must be absolute"
        mkOptionType {
          name = "path";
          description =
            (if absolute == null then "" else (if absolute then "absolute " else "relative "))
            + "path"
            + (if inStore == null then "" else (if inStore then " in the Nix store" else " not in the Nix store"));
          descriptionClass = "noun";
          merge = mergeEqualOption;
          functor = defaultFunctor "path" // {
            type = pathWith;
            payload = { inherit inStore absolute; };
            binOp = lhs: rhs: if lhs == rhs then lhs else null;
          };
          check = x:
            let
              s = toString x;
              storePrefix = "${builtins.storeDir}/";
              isInStore = lib.hasPrefix storePrefix s && builtins.stringLength s > builtins.stringLength storePrefix;
              isAbsolute = builtins.substring 0 1 s == "/";
              isExpectedType = if inStore == null || inStore then isStringLike x else isString x;
            in
            isExpectedType
            && (inStore == null || inStore == isInStore)
            && (absolute == null || absolute == isAbsolute);
        };

    path = pathWith { absolute = true; };
    pathInStore = pathWith { inStore = true; };

    # --- containers -------------------------------------------------------------

    # Definitions are concatenated; each element is merged on its own, so
    # mkIf / mkOverride work on elements and element type errors name the
    # element (`xs."[definition 1-entry 2]"`).
    listOf = elemType: mkOptionType rec {
      name = "listOf";
      description = "list of ${optionDescriptionPhrase isNounOrComposite elemType}";
      descriptionClass = "composite";
      check = isList;
      merge = loc: defs:
        map (x: x.value) (filter (x: x ? value) (concatLists (imap1
          (n: def: imap1
            (m: def': (lib.mergeDefinitions
              (loc ++ [ "[definition ${toString n}-entry ${toString m}]" ])
              elemType
              [ { inherit (def) file; value = def'; } ]).optionalValue)
            def.value)
          defs)));
      emptyValue = { value = [ ]; };
      getSubOptions = prefix: elemType.getSubOptions (prefix ++ [ "*" ]);
      getSubModules = elemType.getSubModules;
      substSubModules = m: listOf (elemType.substSubModules m);
      functor = elemTypeFunctor name { inherit elemType; } // {
        type = payload: listOf payload.elemType;
      };
      nestedTypes.elemType = elemType;
    };

    nonEmptyListOf = elemType:
      let list = addCheck (listOf elemType) (l: l != [ ]); in
      list // {
        description = "non-empty ${optionDescriptionPhrase isNoun list}";
        emptyValue = { };
        substSubModules = m: nonEmptyListOf (elemType.substSubModules m);
      };

    attrsOf = elemType: attrsWith { inherit elemType; };
    lazyAttrsOf = elemType: attrsWith { inherit elemType; lazy = true; };

    # Each attribute is merged on its own (mkIf / mkOverride work per
    # attribute).  The strict variant drops attributes whose definitions all
    # vanished (mkIf false), which needs their conditions; the lazy one keeps
    # every name and only evaluates an attribute when it is read.
    attrsWith = { elemType, lazy ? false, placeholder ? "name" }: mkOptionType {
      name = if lazy then "lazyAttrsOf" else "attrsOf";
      description = (if lazy then "lazy attribute set" else "attribute set")
        + " of ${optionDescriptionPhrase isNounOrComposite elemType}";
      descriptionClass = "composite";
      check = isAttrs;
      merge =
        if lazy then
          loc: defs:
            zipAttrsWith
              (name: defs:
                let merged = lib.mergeDefinitions (loc ++ [ name ]) elemType defs; in
                # mergedValue throws the right error when read.
                merged.optionalValue.value or elemType.emptyValue.value or merged.mergedValue)
              (pushPositions defs)
        else
          loc: defs:
            mapAttrs (n: v: v.value) (lib.filterAttrs (n: v: v ? value) (zipAttrsWith
              (name: defs: (lib.mergeDefinitions (loc ++ [ name ]) elemType defs).optionalValue)
              (pushPositions defs)));
      emptyValue = { value = { }; };
      getSubOptions = prefix: elemType.getSubOptions (prefix ++ [ "<${placeholder}>" ]);
      getSubModules = elemType.getSubModules;
      substSubModules = m: attrsWith { elemType = elemType.substSubModules m; inherit lazy placeholder; };
      functor = defaultFunctor "attrsWith" // {
        wrapped = elemType;
        payload = { inherit elemType lazy placeholder; };
        type = payload: attrsWith payload;
        binOp = lhs: rhs:
          let elemType = lhs.elemType.typeMerge rhs.elemType.functor; in
          if elemType == null || lhs.lazy != rhs.lazy || lhs.placeholder != rhs.placeholder then null
          else lhs // { inherit elemType; };
      };
      nestedTypes.elemType = elemType;
    };

    # Only one definition allowed (after priorities).
    uniq = unique { message = ""; };
    unique = { message }: type: mkOptionType rec {
      name = "unique";
      inherit (type) description descriptionClass check;
      merge = mergeUniqueOption { inherit message; inherit (type) merge; };
      emptyValue = type.emptyValue;
      getSubOptions = type.getSubOptions;
      getSubModules = type.getSubModules;
      substSubModules = m: unique { inherit message; } (type.substSubModules m);
      functor = elemTypeFunctor name { elemType = type; } // {
        type = payload: unique { inherit message; } payload.elemType;
      };
      nestedTypes.elemType = type;
    };

    nullOr = elemType: mkOptionType rec {
      name = "nullOr";
      description = "null or ${optionDescriptionPhrase isNounOrConjunction elemType}";
      descriptionClass = "conjunction";
      check = x: x == null || elemType.check x;
      merge = loc: defs:
        let nrNulls = lib.count (def: def.value == null) defs; in
        if nrNulls == length defs then null
        else if nrNulls != 0 then
          throw "The option `${showOption loc}` is defined both null and not null, in ${showFiles (getFiles defs)}."
        else elemType.merge loc defs;
      emptyValue = { value = null; };
      getSubOptions = elemType.getSubOptions;
      getSubModules = elemType.getSubModules;
      substSubModules = m: nullOr (elemType.substSubModules m);
      functor = elemTypeFunctor name { inherit elemType; } // {
        type = payload: nullOr payload.elemType;
      };
      nestedTypes.elemType = elemType;
    };

    # Function definitions merge into one function whose result merges the
    # results of all definitions.
    functionTo = elemType: mkOptionType {
      name = "functionTo";
      description = "function that evaluates to a(n) ${optionDescriptionPhrase isNounOrComposite elemType}";
      descriptionClass = "composite";
      check = isFunction;
      merge = loc: defs: fnArgs:
        (lib.mergeDefinitions (loc ++ [ "<function body>" ]) elemType
          (map (fn: { inherit (fn) file; value = fn.value fnArgs; }) defs)).mergedValue;
      getSubOptions = prefix: elemType.getSubOptions (prefix ++ [ "<function body>" ]);
      getSubModules = elemType.getSubModules;
      substSubModules = m: functionTo (elemType.substSubModules m);
      functor = elemTypeFunctor "functionTo" { inherit elemType; } // {
        type = payload: functionTo payload.elemType;
      };
      nestedTypes.elemType = elemType;
    };

    # --- modules as values ------------------------------------------------------

    submodule = modules: submoduleWith {
      shorthandOnlyDefinesConfig = true;
      modules = lib.toList modules;
    };

    # The value is the `config` of an evaluation of `modules` plus one module
    # per definition (keeping the definition's file), with the option's path
    # as prefix, and `name` = the last path component (the attribute name
    # under attrsOf).
    submoduleWith =
      { modules
      , specialArgs ? { }
      , shorthandOnlyDefinesConfig ? false
      , description ? null
      , class ? null
      }@attrs:
      let
        allModules = defs: map
          ({ value, file }:
            if isAttrs value && shorthandOnlyDefinesConfig
            then { _file = file; config = value; }
            else { _file = file; imports = [ value ]; })
          defs;

        base = lib.evalModules {
          inherit class specialArgs;
          modules = [ {
            # Placeholder `name` for documentation and defaults that use it.
            _module.args.name = lib.mkOptionDefault "‹name›";
          } ] ++ modules;
        };

        freeformType = base._module.freeformType;

        name = "submodule";
      in
      mkOptionType {
        inherit name;
        description =
          if description != null then description
          else if freeformType != null then "open submodule of ${optionDescriptionPhrase isNounOrComposite freeformType}"
          else name;
        check = x: isAttrs x || isFunction x || path.check x;
        merge = loc: defs:
          (base.extendModules {
            modules = [ { _module.args.name = last loc; } ] ++ allModules defs;
            prefix = loc;
          }).config;
        emptyValue = { value = { }; };
        getSubOptions = prefix:
          (base.extendModules { inherit prefix; }).options
          // optionalAttrs (freeformType != null) {
            _freeformOptions = freeformType.getSubOptions prefix;
          };
        getSubModules = modules;
        substSubModules = m: submoduleWith (attrs // { modules = m; });
        nestedTypes = optionalAttrs (freeformType != null) { inherit freeformType; };
        functor = defaultFunctor name // {
          type = submoduleWith;
          payload = { inherit modules class specialArgs shorthandOnlyDefinesConfig description; };
          binOp = lhs: rhs: {
            class =
              if lhs.class == null then rhs.class
              else if rhs.class == null then lhs.class
              else if lhs.class == rhs.class then lhs.class
              else throw "A submoduleWith option is declared multiple times with conflicting class values \"${toString lhs.class}\" and \"${toString rhs.class}\".";
            modules = lhs.modules ++ rhs.modules;
            specialArgs =
              let intersecting = builtins.intersectAttrs lhs.specialArgs rhs.specialArgs; in
              if intersecting == { } then lhs.specialArgs // rhs.specialArgs
              else throw "A submoduleWith option is declared multiple times with the same specialArgs \"${toString (attrNames intersecting)}\"";
            shorthandOnlyDefinesConfig =
              if lhs.shorthandOnlyDefinesConfig == null then rhs.shorthandOnlyDefinesConfig
              else if rhs.shorthandOnlyDefinesConfig == null then lhs.shorthandOnlyDefinesConfig
              else if lhs.shorthandOnlyDefinesConfig == rhs.shorthandOnlyDefinesConfig then lhs.shorthandOnlyDefinesConfig
              else throw "A submoduleWith option is declared multiple times with conflicting shorthandOnlyDefinesConfig values";
            description =
              if lhs.description == null then rhs.description
              else if rhs.description == null then lhs.description
              else if lhs.description == rhs.description then lhs.description
              else throw "A submoduleWith option is declared multiple times with conflicting descriptions";
          };
        };
      };

    # A module as a value, to be imported elsewhere later.
    deferredModule = deferredModuleWith { };
    deferredModuleWith = attrs@{ staticModules ? [ ] }: mkOptionType {
      name = "deferredModule";
      description = "module";
      descriptionClass = "noun";
      check = x: isAttrs x || isFunction x || path.check x;
      merge = loc: defs: {
        imports = staticModules ++ map
          (def: lib.setDefaultModuleLocation "${def.file}, via option ${showOption loc}" def.value)
          defs;
      };
      inherit (submoduleWith { modules = staticModules; }) getSubOptions;
      getSubModules = staticModules;
      substSubModules = m: deferredModuleWith (attrs // { staticModules = m; });
      functor = defaultFunctor "deferredModuleWith" // {
        type = deferredModuleWith;
        payload = { inherit staticModules; };
        binOp = lhs: rhs: { staticModules = lhs.staticModules ++ rhs.staticModules; };
      };
    };

    # A type as a value (e.g. `_module.freeformType`); several definitions
    # merge like several declarations of one option would.
    optionType = mkOptionType {
      name = "optionType";
      description = "optionType";
      descriptionClass = "noun";
      check = value: value._type or null == "option-type";
      merge = loc: defs:
        if length defs == 1 then (head defs).value
        else
          let
            optionModules = map ({ value, file }: { _file = file; options = lib.mkOption { type = value; }; }) defs;
            mergedOption = lib.fixupOptionType loc (lib.mergeOptionDecls loc optionModules);
          in
          mergedOption.type;
    };

    # --- choices ----------------------------------------------------------------

    enum = values:
      let
        show = v:
          if isString v then ''"${v}"''
          else if isInt v then toString v
          else if isBool v then lib.boolToString v
          else "<${builtins.typeOf v}>";
      in
      mkOptionType rec {
        name = "enum";
        description =
          if values == [ ] then "impossible (empty enum)"
          else if length values == 1 then "value ${show (head values)} (singular enum)"
          else "one of ${concatMapStringsSep ", " show values}";
        descriptionClass = if length values < 2 then "noun" else "conjunction";
        check = x: elem x values;
        merge = mergeEqualOption;
        functor = defaultFunctor name // {
          type = payload: enum payload.values;
          payload = { inherit values; };
          binOp = a: b: { values = lib.unique (a.values ++ b.values); };
        };
      };

    # All definitions of the first type that fits all of them; otherwise only
    # one definition is allowed.
    either = t1: t2: mkOptionType rec {
      name = "either";
      description =
        if t1.descriptionClass or null == "nonRestrictiveClause"
        then "${t1.description}, or ${optionDescriptionPhrase isNounOrConjunction t2}"
        else "${optionDescriptionPhrase isNounOrConjunction t1} or ${optionDescriptionPhrase (class: class == "noun" || class == "conjunction" || class == "composite") t2}";
      descriptionClass = "conjunction";
      check = x: t1.check x || t2.check x;
      merge = loc: defs:
        let defList = map (d: d.value) defs; in
        if all (x: t1.check x) defList then t1.merge loc defs
        else if all (x: t2.check x) defList then t2.merge loc defs
        else mergeOneOption loc defs;
      typeMerge = f':
        if f'.name != name || f'.wrapped == null then null
        else
          let
            mt1 = t1.typeMerge (elemAt f'.wrapped 0).functor;
            mt2 = t2.typeMerge (elemAt f'.wrapped 1).functor;
          in
          if mt1 != null && mt2 != null then either mt1 mt2 else null;
      functor = defaultFunctor name // { wrapped = [ t1 t2 ]; };
      nestedTypes.left = t1;
      nestedTypes.right = t2;
    };

    oneOf = ts:
      let
        head' = if ts == [ ] then throw "types.oneOf needs to get at least one type in its argument" else head ts;
        tail' = tail ts;
      in
      foldl' either head' tail';

    # Values of `coercedType` are converted with `coerceFunc` before merging
    # as `finalType`.
    coercedTo = coercedType: coerceFunc: finalType:
      assert lib.assertMsg (coercedType.getSubModules == null)
        "coercedTo: coercedType must not have submodules (it's a ${coercedType.description})";
      mkOptionType rec {
        name = "coercedTo";
        description = "${optionDescriptionPhrase isNoun finalType} or ${optionDescriptionPhrase isNoun coercedType} convertible to it";
        check = x: (coercedType.check x && finalType.check (coerceFunc x)) || finalType.check x;
        merge = loc: defs:
          let coerceVal = val: if coercedType.check val then coerceFunc val else val; in
          finalType.merge loc (map (def: def // { value = coerceVal def.value; }) defs);
        emptyValue = finalType.emptyValue;
        getSubOptions = finalType.getSubOptions;
        getSubModules = finalType.getSubModules;
        substSubModules = m: coercedTo coercedType coerceFunc (finalType.substSubModules m);
        typeMerge = t: null;
        functor = defaultFunctor name // { wrapped = finalType; };
        nestedTypes.coercedType = coercedType;
        nestedTypes.finalType = finalType;
      };

    # The same type with an extra check.
    addCheck = elemType: check: elemType // { check = x: elemType.check x && check x; };
  };
in
{
  inherit types isType mkOptionType defaultFunctor defaultTypeMerge optionDescriptionPhrase;
  inherit (types) isOptionType setType;
}

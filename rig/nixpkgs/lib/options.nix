# Option declarations and the generic merge functions (lib/options.nix).
{ lib }:

let
  inherit (builtins) length head tail foldl' filter isList isAttrs isString
    concatStringsSep all;

  # Appended to every "conflicting / multiple definitions" error, on its own
  # line, exactly as the real lib words it.
  prioritySuggestion = ''
    Use `lib.mkForce value` or `lib.mkDefault value` to change the priority on any of these definitions.
  '';
in
{
  isOption = lib.isType "option";

  # Only the given attributes are kept (plus `_type`): the module system tests
  # `opt ? default`, `opt ? apply` ..., so absent and null must differ.
  mkOption =
    { default ? null
    , defaultText ? null
    , example ? null
    , description ? null
    , relatedPackages ? null
    , type ? null
    , apply ? null
    , internal ? null
    , visible ? null
    , readOnly ? null
    } @ attrs:
    attrs // { _type = "option"; };

  mkEnableOption = name: lib.mkOption {
    default = false;
    example = true;
    description = "Whether to enable ${name}.";
    type = lib.types.bool;
  };

  mkPackageOption = pkgs: name:
    { nullable ? false
    , default ? name
    , example ? null
    , extraDescription ? ""
    , pkgsText ? "pkgs"
    }:
    let
      name' = if isList name then lib.last name else name;
      default' = if isList default then default else [ default ];
      defaultText = concatStringsSep "." default';
      defaultValue = lib.attrByPath default'
        (throw "${defaultText} cannot be found in ${pkgsText}") pkgs;
    in
    lib.mkOption ({
      type = if nullable then lib.types.nullOr lib.types.package else lib.types.package;
      description = "The ${name'} package to use."
        + (if extraDescription == "" then "" else " ") + extraDescription;
    } // (if default != null then {
      default = defaultValue;
      defaultText = lib.literalExpression ("${pkgsText}." + defaultText);
    } else if nullable then {
      default = null;
    } else { })
    // lib.optionalAttrs (example != null) {
      example = lib.literalExpression
        (if isList example then "${pkgsText}." + concatStringsSep "." example else example);
    });
  mkPackageOptionMD = lib.mkPackageOption;

  # Accepts anything, produces nothing: for sharing modules across module sets.
  mkSinkUndeclaredOptions = attrs: lib.mkOption ({
    internal = true;
    visible = false;
    default = false;
    description = "Sink for option definitions.";
    type = lib.types.mkOptionType {
      name = "sink";
      check = x: true;
      merge = loc: defs: false;
    };
    apply = x: throw "Option value is not readable because the option is not declared.";
  } // attrs);

  # --- generic merge functions used by option types ----------------------

  mergeDefaultOption = loc: defs:
    let list = lib.getValues defs; in
    if length list == 1 then head list
    else if all lib.isFunction list then x: lib.mergeDefaultOption loc (map (f: f x) list)
    else if all isList list then lib.concatLists list
    else if all isAttrs list then foldl' lib.mergeAttrs { } list
    else if all builtins.isBool list then foldl' lib.or false list
    else if all isString list then lib.concatStrings list
    else if all builtins.isInt list && all (x: x == head list) list then head list
    else throw "Cannot merge definitions of `${lib.showOption loc}'. Definition values:${lib.showDefs defs}";

  mergeUniqueOption = { message, merge ? loc: defs: (head defs).value }: loc: defs:
    if length defs == 1 then merge loc defs
    else
      assert length defs > 1;
      throw "The option `${lib.showOption loc}' is defined multiple times while it's expected to be unique.\n${message}\nDefinition values:${lib.showDefs defs}\n${prioritySuggestion}";

  mergeOneOption = lib.mergeUniqueOption { message = ""; };

  # Equal definitions merge; the first two differing ones are reported, in
  # the order the definitions arrive (which is reverse module order: see
  # evalModules in modules.nix).
  mergeEqualOption = loc: defs:
    if defs == [ ] then abort "This case should never happen."
    # One definition: return it as is (this also allows functions, which
    # cannot be compared with `!=`).
    else if length defs == 1 then (head defs).value
    else (foldl'
      (first: def:
        if def.value != first.value then
          throw "The option `${lib.showOption loc}' has conflicting definition values:${lib.showDefs [ first def ]}\n${prioritySuggestion}"
        else first)
      (head defs)
      (tail defs)).value;

  getValues = map (x: x.value);
  getFiles = map (x: x.file);

  # --- rendering ---------------------------------------------------------

  # Option path as users write it: components that are not valid Nix
  # identifiers are quoted (home.file.".bashrc".source), except the
  # placeholders `*` and `<name>` used in documentation paths.
  showOption = parts:
    let
      escapeOptionPart = part:
        if part == "*" || builtins.match "<(.*)>" part != null
        then part
        else lib.escapeNixIdentifier part;
    in
    concatStringsSep "." (map escapeOptionPart parts);

  showFiles = files: concatStringsSep " and " (map (f: "`${f}'") files);

  # "\n- In `FILE': VALUE" per definition; the value is pretty-printed (at
  # most 5 lines, indented), put on its own lines when it spans several, and
  # left out entirely when printing it throws.
  showDefs = defs: lib.concatMapStrings
    (def:
      let
        prettyEval = builtins.tryEval (lib.generators.toPretty { }
          (lib.generators.withRecursion { depthLimit = 10; throwOnDepthLimit = false; } def.value));
        lines = filter (v: !isList v) (builtins.split "\n" prettyEval.value);
        value = concatStringsSep "\n    " (lib.take 5 lines ++ lib.optional (length lines > 5) "...");
        result =
          if !prettyEval.success then ""
          else if length lines > 1 then ":\n    " + value
          else ": " + value;
      in
      "\n- In `${def.file}'${result}")
    defs;

  unknownModule = "<unknown-file>";

  # --- documentation helpers ----------------------------------------------
  literalExpression = text:
    if !isString text then throw "literalExpression expects a string."
    else { _type = "literalExpression"; inherit text; };
  literalExample = lib.literalExpression;
  literalMD = text:
    if !isString text then throw "literalMD expects a string."
    else { _type = "literalMD"; inherit text; };
  mdDoc = x: x;

  # Flat list of visible options, for simple documentation listings.
  optionAttrSetToDocList = lib.optionAttrSetToDocList' [ ];
  optionAttrSetToDocList' = _: options:
    lib.concatMap (opt:
      let
        docOption = {
          loc = opt.loc;
          name = lib.showOption opt.loc;
          description = opt.description or null;
          declarations = filter (x: x != lib.unknownModule) opt.declarations;
          internal = opt.internal or false;
          visible = if opt ? visible && opt.visible == "shallow" then true else opt.visible or true;
          readOnly = opt.readOnly or false;
          type = opt.type.description or "unspecified";
        }
        // lib.optionalAttrs (opt ? example) { example = opt.example; }
        // lib.optionalAttrs (opt ? defaultText || opt ? default) { default = opt.defaultText or opt.default; };
        subOptions =
          let ss = opt.type.getSubOptions opt.loc; in
          if ss != { } then lib.optionAttrSetToDocList' opt.loc ss else [ ];
        subOptionsVisible = docOption.visible && opt.visible or null != "shallow";
      in
      [ docOption ] ++ lib.optionals subOptionsVisible subOptions)
      (lib.collect lib.isOption options);

  scrubOptionValue = x:
    if lib.isDerivation x then { type = "derivation"; drvPath = x.name; outPath = x.name; name = x.name; }
    else if isList x then map lib.scrubOptionValue x
    else if isAttrs x then lib.mapAttrs (n: v: lib.scrubOptionValue v) (removeAttrs x [ "_args" ])
    else x;
}

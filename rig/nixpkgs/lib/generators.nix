# Value printers (lib/generators.nix).  The module system uses `toPretty`
# (through `withRecursion`) to print definition values in its error messages,
# so its layout matters: multi-line sets/lists, two-space indentation,
# `{ }`/`[ ]` for empty ones, `<derivation NAME>`, `<function>`.
{ lib }:

let
  inherit (builtins) isInt isFloat isString isList isAttrs isPath isBool
    attrNames concatStringsSep filter length split toJSON;
in
{
  toPretty = { allowPrettyValues ? false, multiline ? true, indent ? "" }:
    let
      go = indent: v:
        let
          introSpace = if multiline then "\n${indent}  " else " ";
          outroSpace = if multiline then "\n${indent}" else " ";
        in
        if isInt v then toString v
        else if isFloat v then toJSON v
        else if isString v then
          let
            lines = filter (l: !isList l) (split "\n" v);
            escapeSingleline = lib.escape [ "\\" "\"" "\${" ];
            escapeMultiline = builtins.replaceStrings [ "\${" "''" ] [ "''\${" "'''" ];
            singlelineResult = "\"" + concatStringsSep "\\n" (map escapeSingleline lines) + "\"";
            multilineResult =
              let
                escapedLines = map escapeMultiline lines;
                lastLine = lib.last escapedLines;
              in
              "''" + introSpace + concatStringsSep introSpace (lib.init escapedLines)
              + (if lastLine == "" then outroSpace else introSpace + lastLine) + "''";
          in
          if multiline && length lines > 1 then multilineResult else singlelineResult
        else if true == v then "true"
        else if false == v then "false"
        else if null == v then "null"
        else if isPath v then toString v
        else if isList v then
          if v == [ ] then "[ ]"
          else "[" + introSpace + concatStringsSep introSpace (map (go (indent + "  ")) v) + outroSpace + "]"
        else if lib.isFunction v then
          let
            fna = lib.functionArgs v;
            showFnas = concatStringsSep ", "
              (lib.mapAttrsToList (name: hasDefVal: if hasDefVal then name + "?" else name) fna);
          in
          if fna == { } then "<function>" else "<function, args: {${showFnas}}>"
        else if isAttrs v then
          if allowPrettyValues && v ? __pretty && v ? val then v.__pretty v.val
          else if v == { } then "{ }"
          else if v ? type && v.type == "derivation" then "<derivation ${v.name or "???"}>"
          else "{" + introSpace
            + concatStringsSep introSpace (lib.mapAttrsToList
              (name: value: "${lib.escapeNixIdentifier name} = ${
                builtins.addErrorContext "while evaluating an attribute `${name}`" (go (indent + "  ") value)};")
              v)
            + outroSpace + "}"
        else abort "generators.toPretty: should never happen (v = ${v})";
    in
    go indent;

  # Replace everything deeper than `depthLimit` by "<unevaluated>" (or throw),
  # so that printing a definition never walks e.g. a whole package set.
  withRecursion = { depthLimit, throwOnDepthLimit ? true }:
    let
      specialAttrs = [ "__functor" "__functionArgs" "__toString" "__pretty" ];
      stepIntoAttr = evalNext: name: if builtins.elem name specialAttrs then (x: x) else evalNext;
      transform = depth:
        if depthLimit != null && depth > depthLimit then
          if throwOnDepthLimit
          then throw "Exceeded maximum eval-depth limit of ${toString depthLimit} while trying to evaluate with `generators.withRecursion'!"
          else (_: "<unevaluated>")
        else (x: x);
      mapAny = depth: v:
        let evalNext = x: mapAny (depth + 1) (transform (depth + 1) x); in
        if isAttrs v then builtins.mapAttrs (stepIntoAttr evalNext) v
        else if isList v then map evalNext v
        else transform (depth + 1) v;
    in
    mapAny 0;

  toJSON = { }: builtins.toJSON;
  toYAML = { }: builtins.toJSON;

  mkValueStringDefault = { }: v:
    if isInt v then toString v
    else if isString v then v
    else if true == v then "true"
    else if false == v then "false"
    else if null == v then "null"
    else if isFloat v then lib.strings.floatToString or toString v
    else if lib.isStringLike v then toString v
    else throw "generators.mkValueStringDefault: cannot convert a value of type ${builtins.typeOf v}";

  mkKeyValueDefault = { mkValueString ? lib.generators.mkValueStringDefault { } }: sep: k: v:
    "${lib.escape [ sep ] k}${sep}${mkValueString v}";

  toKeyValue = { mkKeyValue ? lib.generators.mkKeyValueDefault { } "=", listsAsDuplicateKeys ? false, indent ? "" }:
    attrs:
    let
      mkLine = k: v: indent + mkKeyValue k v + "\n";
      mkLines = if listsAsDuplicateKeys
        then k: v: map (mkLine k) (if isList v then v else [ v ])
        else k: v: [ (mkLine k v) ];
    in
    lib.concatStrings (lib.concatLists (lib.mapAttrsToList mkLines attrs));

  toINI = { mkSectionName ? (name: lib.escape [ "[" "]" ] name), mkKeyValue ? lib.generators.mkKeyValueDefault { } "=", listsAsDuplicateKeys ? false }:
    attrsOfAttrs:
    let
      mkSection = sectName: sectValues: ''
        [${mkSectionName sectName}]
      '' + lib.generators.toKeyValue { inherit mkKeyValue listsAsDuplicateKeys; } sectValues;
    in
    concatStringsSep "\n" (lib.mapAttrsToList mkSection attrsOfAttrs);
}

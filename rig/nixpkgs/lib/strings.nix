# String functions (lib/strings.nix).
{ lib }:

let
  inherit (builtins) length elemAt genList filter isString isPath isList typeOf
    stringLength substring replaceStrings match split concatStringsSep;
in
{
  inherit (builtins) stringLength substring replaceStrings concatStringsSep
    match split hashString baseNameOf dirOf unsafeDiscardStringContext
    hasContext getContext appendContext;

  concatStrings = builtins.concatStringsSep "";
  concatMapStrings = f: list: builtins.concatStringsSep "" (map f list);
  concatMapStringsSep = sep: f: list: builtins.concatStringsSep sep (map f list);
  concatImapStrings = f: list: builtins.concatStringsSep "" (lib.imap1 f list);
  concatImapStringsSep = sep: f: list: builtins.concatStringsSep sep (lib.imap1 f list);
  # Each line is terminated, so the result ends with "\n" (unless empty).
  concatLines = list: builtins.concatStringsSep "" (map (l: l + "\n") list);
  intersperse = separator: list:
    if list == [ ] || length list == 1 then list
    else builtins.tail (builtins.concatMap (x: [ separator x ]) list);

  replaceString = from: to: replaceStrings [ from ] [ to ];

  optionalString = cond: string: if cond then string else "";

  hasPrefix = pref: str: substring 0 (stringLength pref) str == pref;
  hasSuffix = suffix: content:
    let
      lenContent = stringLength content;
      lenSuffix = stringLength suffix;
    in
    lenContent >= lenSuffix && substring (lenContent - lenSuffix) lenContent content == suffix;
  hasInfix = infix: content:
    builtins.match ".*${lib.escapeRegex infix}.*" "${content}" != null;

  removePrefix = prefix: str:
    let preLen = stringLength prefix; in
    if substring 0 preLen str == prefix
    then substring preLen (stringLength str - preLen) str
    else str;
  removeSuffix = suffix: str:
    let
      sufLen = stringLength suffix;
      sLen = stringLength str;
    in
    if sufLen <= sLen && suffix == substring (sLen - sufLen) sufLen str
    then substring 0 (sLen - sufLen) str
    else str;

  stringToCharacters = s: genList (p: substring p 1 s) (stringLength s);
  stringAsChars = f: s: builtins.concatStringsSep "" (map f (lib.stringToCharacters s));

  escape = list: replaceStrings list (map (c: "\\${c}") list);
  escapeRegex = lib.escape (lib.stringToCharacters "\\[{()^$?*+|.");
  escapeC = list: replaceStrings list (map (c: "\\x${lib.toLower (lib.toHexString (lib.charToInt c))}") list);

  # Quoted only when needed, like the real (newer) escapeShellArg.
  escapeShellArg = arg:
    let string = toString arg; in
    if match "[[:alnum:],._+:@%/-]+" string == null
    then "'${replaceStrings [ "'" ] [ "'\\''" ] string}'"
    else string;
  escapeShellArgs = list: builtins.concatStringsSep " " (map lib.escapeShellArg list);

  escapeNixString = s: lib.escape [ "$" ] (builtins.toJSON s);
  # An attribute name that is a valid Nix identifier is shown bare, any other
  # one as a quoted string: this is what makes `home.file.".bashrc".source`.
  escapeNixIdentifier = s:
    if match "[a-zA-Z_][a-zA-Z0-9_'-]*" s != null then s else lib.escapeNixString s;
  escapeXML = replaceStrings [ "\"" "'" "<" ">" "&" ] [ "&quot;" "&apos;" "&lt;" "&gt;" "&amp;" ];

  toUpper = replaceStrings
    (lib.stringToCharacters "abcdefghijklmnopqrstuvwxyz")
    (lib.stringToCharacters "ABCDEFGHIJKLMNOPQRSTUVWXYZ");
  toLower = replaceStrings
    (lib.stringToCharacters "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    (lib.stringToCharacters "abcdefghijklmnopqrstuvwxyz");

  splitString = sep: s:
    filter isString (split (lib.escapeRegex (toString sep)) (toString s));

  trimWith = { start ? false, end ? false }: s:
    let
      regex =
        if start && end then "[[:space:]]*(.*[^[:space:]])[[:space:]]*"
        else if start then "[[:space:]]*(.*)"
        else if end then "(.*[^[:space:]])[[:space:]]*"
        else "(.*)";
      res = match regex s;
    in
    if res == null then (if start || end then "" else s) else builtins.head res;
  trim = lib.trimWith { start = true; end = true; };

  isStringLike = x: isString x || isPath x || x ? outPath || x ? __toString;
  isConvertibleWithToString = x:
    lib.isStringLike x
    || builtins.elem (typeOf x) [ "null" "int" "float" "bool" ]
    || (isList x && builtins.all lib.isConvertibleWithToString x);

  isStorePath = x:
    if lib.isStringLike x then
      let str = toString x; in
      substring 0 1 str == "/" && dirOf str == builtins.storeDir
    else false;

  # Strict decimal parsing as in the real toInt: surrounding whitespace is
  # allowed, leading zeros are rejected (they would be ambiguous with octal).
  toInt = str:
    let
      m = match "[[:space:]]*(-?[0-9]+)[[:space:]]*" str;
      digits = builtins.head m;
      bad = throw "toInt: Could not convert ${lib.escapeNixString str} to int.";
    in
    if m == null then bad
    else if match "-?0[0-9]+" digits != null
    then throw "toInt: Ambiguity in interpretation of ${lib.escapeNixString str} between octal and zero padded integer."
    else builtins.fromJSON digits;
  toIntBase10 = str:
    let m = match "[[:space:]]*-?0*([0-9]+)[[:space:]]*" str; in
    if m == null then throw "toIntBase10: Could not convert ${lib.escapeNixString str} to int."
    else (if match "[[:space:]]*-.*" str != null then -1 else 1) * builtins.fromJSON (builtins.head m);

  fileContents = file: lib.removeSuffix "\n" (builtins.readFile file);

  makeSearchPath = subDir: paths:
    builtins.concatStringsSep ":" (map (path: path + "/" + subDir) (filter (x: x != null) paths));
  makeSearchPathOutput = output: subDir: pkgs:
    lib.makeSearchPath subDir (map (p: p.${output} or p) pkgs);
  makeBinPath = lib.makeSearchPathOutput "bin" "bin";
  makeLibraryPath = lib.makeSearchPathOutput "lib" "lib";

  getName = x: (builtins.parseDrvName (if isString x then x else x.name)).name;
  getVersion = x: (builtins.parseDrvName (if isString x then x else x.name)).version;

  enableFeature = flag: feature: (if flag then "--enable-" else "--disable-") + feature;
  withFeature = flag: feature: (if flag then "--with-" else "--without-") + feature;

  # The store-name rules: allowed characters only, no leading dot, at most
  # 207 characters, "unknown" when nothing is left.
  sanitizeDerivationName = string:
    let
      s1 = lib.concatStrings (map (c: if builtins.isList c then "-" else c)
        (split "[^[:alnum:]+._?=-]+" (builtins.head (match "\\.*(.*)" string))));
      s2 = if stringLength s1 > 207 then substring (stringLength s1 - 207) 207 s1 else s1;
    in
    if s2 == "" then "unknown" else s2;

  # ASCII code of a single printable character (plus tab, newline, return).
  charToInt = c:
    let
      printable = lib.stringToCharacters
        " !\"#\$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";
      table = builtins.listToAttrs (lib.imap0 (i: ch: { name = ch; value = i + 32; }) printable)
        // { "\t" = 9; "\n" = 10; "\r" = 13; };
    in
    table.${c};

  toHexString = i:
    let
      digits = lib.stringToCharacters "0123456789ABCDEF";
      go = n: if n < 16 then elemAt digits n else go (n / 16) + elemAt digits (n - (n / 16) * 16);
    in
    go i;

  fixedWidthString = width: filler: str:
    let strw = stringLength str; in
    if strw >= width then str else lib.fixedWidthString width filler (filler + str);
  fixedWidthNumber = width: n: lib.fixedWidthString width "0" (toString n);

  addContextFrom = src: target: substring 0 0 src + target;
}

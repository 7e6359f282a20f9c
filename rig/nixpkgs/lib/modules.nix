# The module system (lib/modules.nix): evalModules, the properties
# (mkIf, mkMerge, mkOverride, mkOrder ...) and the option-renaming helpers.
#
# The overall shape follows the real one, because observable behaviour
# depends on it:
#   * modules are collected breadth-first (builtins.genericClosure) and then
#     REVERSED before merging; every list of definitions therefore arrives in
#     reverse module order.  That is the order in which conflicts are listed,
#     `listOf` values are concatenated and `lines` are joined.
#   * the attribute names of `config` come only from option *declarations*,
#     never from definitions, so `config` can be a fixpoint: a module can read
#     `config.a` while defining `config.b`, and `mkIf config.x.enable {...}` is
#     pushed down to the leaves and only evaluated per option.
{ lib }:

let
  inherit (builtins) head tail length elem filter concatLists concatMap attrNames
    mapAttrs isAttrs isList isString isBool foldl' zipAttrsWith genericClosure
    addErrorContext seq typeOf;
  inherit (lib) isFunction functionArgs reverseList imap1 optional optionalAttrs
    mkOption types isOption showOption showFiles showDefs setAttrByPath
    getAttrFromPath attrByPath mapAttrsRecursiveCond recursiveUpdate last
    mapAttrsToList sort;

  # File name used for modules that come without one (anonymous modules in
  # the top-level list).
  unknownModule = "<unknown-file>";
in
rec {

  # --- evaluation ----------------------------------------------------------

  evalModules = evalModulesArgs@{ modules
    , prefix ? [ ]
    , # Arguments that must be known while the module structure is still
      # being resolved (e.g. used in `imports`); everything else should go
      # through `_module.args`.
      specialArgs ? { }
    , # Deprecated: use `_module.args` / `_module.check` instead.
      args ? { }
    , check ? true
    , class ? null
    }:
    let
      # The deprecated arguments become ordinary definitions, only when given.
      legacyModules =
        optional (evalModulesArgs ? args) { config._module.args = args; }
        ++ optional (evalModulesArgs ? check) { config._module.check = mkDefault check; };
      regularModules = modules ++ legacyModules;

      # Options of the module system itself, declared like any other module.
      internalModule = {
        _file = "lib/modules.nix";
        key = "lib/modules.nix";
        options = {
          _module.args = mkOption {
            # lazyAttrsOf: an argument such as `pkgs` is only evaluated when a
            # module actually uses it.  (mkIf inside it is pointless anyway:
            # a module cannot test which arguments it got.)
            type = types.lazyAttrsOf types.raw;
            internal = true;
            description = "Additional arguments passed to each module in addition to ones like `lib`, `config`, and `pkgs`, `modulesPath`.";
          };
          _module.check = mkOption {
            type = types.bool;
            internal = true;
            default = true;
            description = "Whether to check whether all option definitions have matching declarations.";
          };
          _module.freeformType = mkOption {
            type = types.nullOr types.optionType;
            internal = true;
            default = null;
            description = "If set, merge all definitions that don't have an associated option together using this type.";
          };
          _module.specialArgs = mkOption {
            readOnly = true;
            internal = true;
            description = "Externally provided module arguments that can't be modified from within a configuration, but can be used in module imports.";
          };
        };
        config = {
          _module.args = {
            inherit extendModules;
            moduleType = type;
          };
          _module.specialArgs = specialArgs;
        };
      };

      merged =
        let
          collected = collectModules class (specialArgs.modulesPath or "")
            (regularModules ++ [ internalModule ])
            ({ inherit lib options config specialArgs; _class = class; } // specialArgs);
        in
        # Reversed for backward compatibility with the original module
        # system; this is why definitions are listed last-module-first.
        mergeModules prefix (reverseList collected);

      options = merged.matchedOptions;

      config =
        let
          # Definitions that have an associated option.
          declaredConfig = mapAttrsRecursiveCond (v: !isOption v) (_: v: v.value) options;
          # With a freeform type, definitions without an option are merged
          # with it instead of being rejected.
          freeformConfig =
            let
              defs = map (def: {
                file = def.file;
                value = setAttrByPath def.prefix def.value;
              }) merged.unmatchedDefns;
            in
            if defs == [ ] then { }
            else declaredConfig._module.freeformType.merge prefix defs;
        in
        if declaredConfig._module.freeformType == null then declaredConfig
        # freeformConfig only holds paths without options, so declared
        # values are never overridden here.
        else recursiveUpdate freeformConfig declaredConfig;

      checkUnmatched =
        if config._module.check && config._module.freeformType == null && merged.unmatchedDefns != [ ] then
          let
            firstDef = head merged.unmatchedDefns;
            optText = showOption (prefix ++ firstDef.prefix);
            defText =
              addErrorContext "while evaluating the error message for definitions for `${optText}', which is an option that does not exist"
                (addErrorContext "while evaluating a definition from `${firstDef.file}'" (showDefs [ firstDef ]));
            baseMsg = "The option `${optText}' does not exist. Definition values:${defText}";
          in
          if attrNames options == [ "_module" ] then
            throw ''
              ${baseMsg}

              However there are no options defined in `${showOption prefix}'. Are you sure you've
              declared your options properly? This can happen if you e.g. declared your options in `types.submodule'
              under `config' rather than `options'.
            ''
          else throw baseMsg
        else null;

      checked = seq checkUnmatched;

      extendModules = extendArgs@{ modules ? [ ], specialArgs ? { }, prefix ? [ ] }:
        evalModules (evalModulesArgs // {
          inherit class;
          modules = regularModules ++ modules;
          specialArgs = evalModulesArgs.specialArgs or { } // specialArgs;
          prefix = extendArgs.prefix or evalModulesArgs.prefix or [ ];
        });

      # The whole evaluation as an option type: definitions of an option of
      # this type are evaluated as extra modules on top of `modules`, with the
      # option's path as prefix (this is how `virtualisation.vmVariant` works).
      type = types.submoduleWith {
        inherit class specialArgs;
        modules = regularModules;
      };

      result = {
        _type = "configuration";
        options = checked options;
        config = checked (removeAttrs config [ "_module" ]);
        _module = checked config._module;
        inherit extendModules type class;
      };
    in
    result;

  # --- collecting modules ---------------------------------------------------

  # collectModules :: class -> modulesPath -> [ module ] -> args -> [ module ]
  # Loads all modules and, recursively, their imports; drops disabled ones and
  # duplicates (by key); returns them in breadth-first order.
  collectModules = class:
    let
      loadModule = args: fallbackFile: fallbackKey: m:
        if isFunction m then
          unifyModuleSyntax fallbackFile fallbackKey (applyModuleArgs fallbackKey m args)
        else if isAttrs m then
          if m._type or "module" == "module" then unifyModuleSyntax fallbackFile fallbackKey m
          # A bare `mkIf ...` / `mkOverride ...` as a module: its config.
          else if m._type == "if" || m._type == "override" then
            loadModule args fallbackFile fallbackKey { config = m; }
          else throw "Could not load a value as a module, because it is of type ${lib.strings.escapeNixString m._type}, in file ${toString fallbackFile}."
        else if isList m then
          let defs = [ { file = fallbackFile; value = m; } ]; in
          throw "Module imports can't be nested lists. Perhaps you meant to remove one level of lists? Definitions: ${showDefs defs}"
        else
          # A path (or a string path): its file name is both file and key.
          let file = toString m; in
          unifyModuleSyntax file file (applyModuleArgsIfFunction file (import m) args);

      checkModule =
        if class != null then
          m:
          if m._class == null || m._class == class then m
          else throw "The module `${m._file or m.key}' (class: ${lib.strings.escapeNixString m._class}) cannot be imported into a module evaluation that expects class ${lib.strings.escapeNixString class}."
        else m: m;

      # Tree of { key, module, modules = imported ones, disabled }.
      collectStructuredModules =
        let
          collectResults = modules: {
            disabled = concatLists (builtins.catAttrs "disabled" modules);
            inherit modules;
          };
        in
        parentFile: parentKey: initialModules: args:
          collectResults (imap1
            (n: x:
              let
                module = checkModule (loadModule args parentFile "${parentKey}:anon-${toString n}" x);
                collectedImports = collectStructuredModules module._file module.key module.imports args;
              in
              {
                key = module.key;
                inherit module;
                modules = collectedImports.modules;
                disabled =
                  (if module.disabledModules != [ ]
                   then [ { file = module._file; disabled = module.disabledModules; } ]
                   else [ ])
                  ++ collectedImports.disabled;
              })
            initialModules);

      filterModules = modulesPath: { disabled, modules }:
        let
          moduleKey = file: m:
            if isString m then
              if builtins.substring 0 1 m == "/" then m
              else toString modulesPath + "/" + m
            else if lib.isConvertibleWithToString m then
              if m ? key && m.key != toString m
              then throw "Module `${file}' contains a disabledModules item that is an attribute set that can be converted to a string (${toString m}) but also has a `.key' attribute (${m.key}) with a different value. This makes it ambiguous which module should be disabled."
              else toString m
            else if m ? key then m.key
            else if isAttrs m then throw "Module `${file}' contains a disabledModules item that is an attribute set, presumably a module, that does not have a `key' attribute. This means that the module system doesn't have any means to identify the module that should be disabled. Make sure that you've put the correct value in disabledModules: a string path relative to modulesPath, a path value, or an attribute set with a `key' attribute."
            else throw "Each disabledModules item must be a path, string, or a attribute set with a key attribute, or a value supported by toString. However, one of the disabledModules items in `${toString file}' is none of that, but is of type ${typeOf m}.";
          disabledKeys = concatMap ({ file, disabled }: map (moduleKey file) disabled) disabled;
          keyFilter = filter (attrs: !elem attrs.key disabledKeys);
        in
        map (attrs: attrs.module) (genericClosure {
          startSet = keyFilter modules;
          operator = attrs: keyFilter attrs.modules;
        });
    in
    modulesPath: initialModules: args:
      filterModules modulesPath (collectStructuredModules unknownModule "" initialModules args);

  # Wraps a module so that it gets `file` as its default location.
  setDefaultModuleLocation = file: m: { _file = file; imports = [ m ]; };

  # Canonical form { _file, key, _class, disabledModules, imports, options, config }.
  unifyModuleSyntax = file: key: m:
    let
      addMeta = config: if m ? meta then mkMerge [ config { meta = m.meta; } ] else config;
      addFreeformType = config:
        if m ? freeformType then mkMerge [ config { _module.freeformType = m.freeformType; } ] else config;
    in
    if m ? config || m ? options then
      let
        badAttrs = removeAttrs m [ "_class" "_file" "key" "disabledModules" "imports" "options" "config" "meta" "freeformType" ];
      in
      if badAttrs != { } then
        throw "Module `${key}' has an unsupported attribute `${head (attrNames badAttrs)}'. This is caused by introducing a top-level `config' or `options' attribute. Add configuration attributes immediately on the top level instead, or move all of them (namely: ${toString (attrNames badAttrs)}) into the explicit `config' attribute."
      else {
        _file = toString m._file or file;
        _class = m._class or null;
        key = toString m.key or key;
        disabledModules = m.disabledModules or [ ];
        imports = m.imports or [ ];
        options = m.options or { };
        config = addFreeformType (addMeta (m.config or { }));
      }
    else
      # Shorthand: everything that is not a module attribute is config.
      lib.throwIfNot (isAttrs m) "module ${file} (${key}) does not look like a module."
      {
        _file = toString m._file or file;
        _class = m._class or null;
        key = toString m.key or key;
        disabledModules = m.disabledModules or [ ];
        imports = m.require or [ ] ++ m.imports or [ ];
        options = { };
        config = addFreeformType (removeAttrs m [ "_class" "_file" "key" "disabledModules" "require" "imports" "freeformType" ]);
      };

  applyModuleArgsIfFunction = key: f: args:
    if isFunction f then applyModuleArgs key f args else f;

  # A module function is called with an attribute set that contains exactly
  # the arguments it names (besides lib/config/options/specialArgs): each is
  # looked up lazily in specialArgs, then in `config._module.args`.  Building
  # the set from `functionArgs` (and not by passing `config._module.args`
  # itself) keeps the destructuring from forcing `_module.args` — which would
  # be an infinite recursion, as its definitions come from the modules.
  applyModuleArgs = key: f: args@{ config, ... }:
    let
      context = name: ''while evaluating the module argument `${name}' in "${key}":'';
      extraArgs = mapAttrs
        (name: _: addErrorContext (context name) (args.${name} or config._module.args.${name}))
        (functionArgs f);
    in
    f (args // extraArgs);

  # --- merging ---------------------------------------------------------------

  mergeModules = prefix: modules:
    mergeModules' prefix modules
      (concatMap (m: map (config: { file = m._file; inherit config; }) (pushDownProperties m.config)) modules);

  # modules: [ { _file; options = subtree } ]   (declarations at `prefix`)
  # configs: [ { file; config = subtree } ]     (definitions at `prefix`)
  mergeModules' = prefix: modules: configs:
    let
      # name => [ { _file; options } ]: who declares something under `name`.
      declsByName = zipAttrsWith (n: concatLists) (map
        (module:
          let subtree = module.options; in
          if !(isAttrs subtree) then
            throw "An option declaration for `${builtins.concatStringsSep "." prefix}' has type `${typeOf subtree}' rather than an attribute set. Did you mean to define this outside of `options'?"
          else mapAttrs (n: option: [ { inherit (module) _file; options = option; } ]) subtree)
        modules);

      # The root of every definition must be an attribute set.
      checkedConfigs =
        assert builtins.all
          (c:
            isAttrs c.config || throw ''
              In module `${c.file}', you're trying to define a value of type `${typeOf c.config}'
              rather than an attribute set for the option
              `${builtins.concatStringsSep "." prefix}'!

              This usually happens if `${builtins.concatStringsSep "." prefix}' has option
              definitions inside that are not matched. Please check how to properly define
              this option by e.g. referring to `man 5 configuration.nix'!
            '')
          configs;
        configs;

      # name => definitions with mkIf/mkOverride pushed into the children;
      # used to descend into non-option subtrees.
      pushedDownDefinitionsByName = zipAttrsWith (n: concatLists) (map
        (module: mapAttrs
          (n: value: map (config: { inherit (module) file; inherit config; }) (pushDownProperties value))
          module.config)
        checkedConfigs);
      # name => raw definitions; for options (mergeDefinitions discharges).
      rawDefinitionsByName = zipAttrsWith (n: concatLists) (map
        (module: mapAttrs (n: value: [ { inherit (module) file; inherit value; } ]) module.config)
        checkedConfigs);

      # An option tree declared below a submodule-typed option is merged into
      # that submodule.
      optionTreeToOption = decl:
        if isOption decl.options then decl
        else decl // {
          options = mkOption {
            type = types.submoduleWith {
              modules = [ { options = decl.options; } ];
              shorthandOnlyDefinesConfig = null;
            };
          };
        };

      resultsByName = mapAttrs
        (name: decls:
          let
            loc = prefix ++ [ name ];
            defns = pushedDownDefinitionsByName.${name} or [ ];
            defns' = rawDefinitionsByName.${name} or [ ];
            optionDecls = filter
              (m: m.options ? _type && (m.options._type == "option"
                || throw "In module `${m._file}', the option `${showOption loc}' is a value of type `${m.options._type}' where an option declaration (mkOption) was expected."))
              decls;
          in
          if length optionDecls == length decls then
            let opt = fixupOptionType loc (mergeOptionDecls loc decls); in
            {
              matchedOptions = evalOptionValue loc opt defns';
              unmatchedDefns = [ ];
            }
          else if optionDecls != [ ] then
            if builtins.all (x: x.options.type.name or null == "submodule") optionDecls then
              let opt = fixupOptionType loc (mergeOptionDecls loc (map optionTreeToOption decls)); in
              {
                matchedOptions = evalOptionValue loc opt defns';
                unmatchedDefns = [ ];
              }
            else
              let
                firstOption = head optionDecls;
                firstNonOption = head (filter (m: !isOption m.options) decls);
              in
              throw "The option `${showOption loc}' in module `${firstOption._file}' would be a parent of the following options, but its type `${firstOption.options.type.description or "<no description>"}' does not support nested options.\n- option(s) with prefix `${showOption (loc ++ [ (head (attrNames firstNonOption.options)) ])}' in module `${firstNonOption._file}'"
          else
            mergeModules' loc decls defns)
        declsByName;

      matchedOptions = mapAttrs (n: v: v.matchedOptions) resultsByName;

      # name => unmatched definitions: those from nested option sets, plus
      # the definitions at this level that have no declaration at all.
      unmatchedDefnsByName =
        mapAttrs (n: v: v.unmatchedDefns) resultsByName
        // removeAttrs rawDefinitionsByName (attrNames matchedOptions);
    in
    {
      inherit matchedOptions;

      unmatchedDefns =
        if configs == [ ] then [ ]
        else concatLists (mapAttrsToList
          (name: defs: map (def: def // {
            # Where the definition first left declared territory.
            prefix = [ name ] ++ (def.prefix or [ ]);
          }) defs)
          unmatchedDefnsByName);
    };

  # Merge the declarations of one option.  Only one of them may carry a
  # default/example/description/apply; types are merged when their functors
  # allow it (e.g. two `attrsOf (submodule ...)` declarations), and the
  # submodules of every declaration are collected, each tagged with the file
  # that declared it.
  mergeOptionDecls = loc: opts:
    foldl'
      (res: opt:
        let
          t = res.type;
          t' = opt.options.type;
          mergedType = t.typeMerge t'.functor;
          typesMergeable = mergedType != null;
          bothHave = k: opt.options ? ${k} && res ? ${k};
          typeSet = if bothHave "type" && typesMergeable then { type = mergedType; } else { };
        in
        if bothHave "default" || bothHave "example" || bothHave "description" || bothHave "apply"
          || (bothHave "type" && !typesMergeable)
        then throw "The option `${showOption loc}' in `${opt._file}' is already declared in ${showFiles res.declarations}."
        else
          let
            getSubModules = opt.options.type.getSubModules or null;
            submodules =
              if getSubModules != null
              then map (setDefaultModuleLocation opt._file) getSubModules ++ res.options
              else res.options;
          in
          opt.options // res // {
            declarations = res.declarations ++ [ opt._file ];
            options = submodules;
          } // typeSet)
      { inherit loc; declarations = [ ]; options = [ ]; }
      opts;

  # Give submodule-carrying types the collected (location-tagged) modules.
  fixupOptionType = loc: opt:
    if opt.type.getSubModules or null == null
    then opt // { type = opt.type or types.unspecified; }
    else opt // { type = opt.type.substSubModules opt.options; options = [ ]; };

  # The final value of one option, plus what `options.<path>` exposes.
  evalOptionValue = loc: opt: defs:
    let
      # The default is just one more definition, at mkOptionDefault priority.
      defs' =
        (optional (opt ? default) { file = head opt.declarations; value = mkOptionDefault opt.default; })
        ++ defs;

      res =
        if opt.readOnly or false && length defs' > 1 then
          let
            # Show each value as if it were the only definition.
            separateDefs = map (def: def // { value = (mergeDefinitions loc opt.type [ def ]).mergedValue; }) defs';
          in
          throw "The option `${showOption loc}' is read-only, but it's set multiple times. Definition values:${showDefs separateDefs}"
        else mergeDefinitions loc opt.type defs';

      value = if opt ? apply then opt.apply res.mergedValue else res.mergedValue;

      warnDeprecation =
        lib.warnIf (opt.type.deprecationMessage or null != null)
          "The type `types.${opt.type.name}' of option `${showOption loc}' defined in ${showFiles opt.declarations} is deprecated. ${opt.type.deprecationMessage}";
    in
    warnDeprecation opt // {
      value = addErrorContext "while evaluating the option `${showOption loc}':" value;
      inherit (res.defsFinal') highestPrio;
      definitions = map (def: def.value) res.defsFinal;
      files = map (def: def.file) res.defsFinal;
      definitionsWithLocations = res.defsFinal;
      inherit (res) isDefined;
      # "${options.foo.bar}" gives the option's name.
      __toString = _: showOption loc;
    };

  # Merge definitions [ { file; value } ] of an option of type `type`:
  # discharge mkMerge/mkIf, keep the highest-priority (lowest number)
  # mkOverride group, sort by mkOrder, type-check, then `type.merge`.
  mergeDefinitions = loc: type: defs: rec {
    defsFinal' =
      let
        defs' = concatMap
          (m: map
            (value: if value._type or null == "definition" then value else { inherit (m) file; inherit value; })
            (addErrorContext "while evaluating definitions from `${m.file}':" (dischargeProperties m.value)))
          defs;
        defs'' = filterOverrides' defs';
        # Only sort when needed: the sort is stable, so without mkOrder the
        # definition order is kept as is.
        defs''' =
          if builtins.any (def: def.value._type or "" == "order") defs''.values
          then sortProperties defs''.values
          else defs''.values;
      in
      {
        values = defs''';
        inherit (defs'') highestPrio;
      };
    defsFinal = defsFinal'.values;

    mergedValue =
      if isDefined then
        if builtins.all (def: type.check def.value) defsFinal then type.merge loc defsFinal
        else
          let allInvalid = filter (def: !type.check def.value) defsFinal; in
          throw "A definition for option `${showOption loc}' is not of type `${type.description}'. Definition values:${showDefs allInvalid}"
      else
        # (nixos-option recognises this exact text.)
        throw "The option `${showOption loc}' was accessed but has no value defined. Try setting the option.";

    isDefined = defsFinal != [ ];

    optionalValue = if isDefined then { value = mergedValue; } else { };
  };

  # Expand mkMerge and push mkIf/mkOverride down into attribute values,
  # without evaluating any condition:
  #   mkMerge [ { a = x; } (mkIf c { a = y; b = z; }) ]
  #   => [ { a = x; } { a = mkIf c y; b = mkIf c z; } ]
  # This is what lets a condition read the configuration it is part of.
  pushDownProperties = cfg:
    if cfg._type or "" == "merge" then concatMap pushDownProperties cfg.contents
    else if cfg._type or "" == "if" then
      map (mapAttrs (n: v: mkIf cfg.condition v)) (pushDownProperties cfg.content)
    else if cfg._type or "" == "override" then
      map (mapAttrs (n: v: mkOverride cfg.priority v)) (pushDownProperties cfg.content)
    else [ cfg ];

  # At an option: expand mkMerge and evaluate mkIf conditions.
  #   mkMerge [ 1 (mkIf true 2) (mkIf true (mkIf false 3)) ] => [ 1 2 ]
  dischargeProperties = def:
    if def._type or "" == "merge" then concatMap dischargeProperties def.contents
    else if def._type or "" == "if" then
      if isBool def.condition then
        if def.condition then dischargeProperties def.content else [ ]
      else throw "‘mkIf’ called with a non-Boolean condition"
    else [ def ];

  # Keep the definitions with the highest priority (numerically lowest),
  # stripping their mkOverride; plain definitions have priority 100.
  filterOverrides = defs: (filterOverrides' defs).values;
  filterOverrides' = defs:
    let
      getPrio = def: if def.value._type or "" == "override" then def.value.priority else defaultOverridePriority;
      highestPrio = foldl' (prio: def: lib.min (getPrio def) prio) 9999 defs;
      strip = def: if def.value._type or "" == "override" then def // { value = def.value.content; } else def;
    in
    {
      values = concatMap (def: if getPrio def == highestPrio then [ (strip def) ] else [ ]) defs;
      inherit highestPrio;
    };

  # Stable sort by mkOrder priority (default 1000, mkBefore 500, mkAfter 1500).
  sortProperties = defs:
    let
      strip = def:
        if def.value._type or "" == "order"
        then def // { value = def.value.content; inherit (def.value) priority; }
        else def;
      defs' = map strip defs;
      compare = a: b: (a.priority or defaultOrderPriority) < (b.priority or defaultOrderPriority);
    in
    sort compare defs';

  # --- properties ------------------------------------------------------------

  mkIf = condition: content: { _type = "if"; inherit condition content; };
  mkAssert = assertion: message: content:
    mkIf (if assertion then true else throw "\nFailed assertion: ${message}") content;
  mkMerge = contents: { _type = "merge"; inherit contents; };
  mkDefinition = args@{ file, value }: args // { _type = "definition"; };

  mkOverride = priority: content: { _type = "override"; inherit priority content; };
  defaultOverridePriority = 100;
  defaultPriority = defaultOverridePriority;
  mkOptionDefault = mkOverride 1500; # priority of option defaults
  mkDefault = mkOverride 1000; # for non-user modules to set a default
  mkImageMediaOverride = mkOverride 60; # image media profiles
  mkForce = mkOverride 50;
  mkVMOverride = mkOverride 10; # used by `nixos-rebuild build-vm`
  mkFixStrictness = lib.warn "lib.mkFixStrictness has no effect and will be removed. It returns its argument unmodified, so you can just remove any calls." (x: x);

  mkOrder = priority: content: { _type = "order"; inherit priority content; };
  defaultOrderPriority = 1000;
  mkBefore = mkOrder 500;
  mkAfter = mkOrder 1500;

  # --- aliases and renames ----------------------------------------------------

  mkAliasDefinitions = mkAliasAndWrapDefinitions (x: x);
  mkAliasAndWrapDefinitions = wrap: option:
    mkAliasIfDef option (wrap (mkMerge option.definitions));
  # Like the above, but the definitions keep the priority they had.
  mkAliasAndWrapDefsWithPriority = wrap: option:
    let
      prio = option.highestPrio or defaultOverridePriority;
      defsWithPrio = map (mkOverride prio) option.definitions;
    in
    mkIf option.isDefined (wrap (mkMerge defsWithPrio));
  mkAliasIfDef = option: mkIf (isOption option && option.isDefined);

  # A value derived from another option, at that option's priority.
  mkDerivedConfig = opt: f: mkOverride (opt.highestPrio or defaultOverridePriority) (f opt.value);

  # The removed option still exists (hidden) so that setting it is not an
  # "option does not exist" error; reading it throws, and setting it fails
  # the `assertions` check when the configuration declares `assertions`.
  mkRemovedOptionModule = optionName: replacementInstructions:
    { options, ... }:
    {
      options = setAttrByPath optionName (mkOption {
        visible = false;
        apply = x: throw "The option `${showOption optionName}' can no longer be used since it's been removed. ${replacementInstructions}";
      });
      config =
        if options ? assertions then {
          assertions =
            let opt = getAttrFromPath optionName options; in
            [{
              assertion = !opt.isDefined;
              message = ''
                The option definition `${showOption optionName}' in ${showFiles opt.files} no longer has any effect; please remove it.
                ${replacementInstructions}
              '';
            }];
        } else { };
    };

  mkRenamedOptionModule = from: to: doRename {
    inherit from to;
    visible = false;
    warn = true;
    use = builtins.trace "Obsolete option `${showOption from}' is used. It was renamed to `${showOption to}'.";
  };
  mkRenamedOptionModuleWith = { from, to, sinceRelease }: doRename {
    inherit from to;
    visible = false;
    warn = lib.isInOldestRelease sinceRelease;
    use = lib.warnIf (lib.isInOldestRelease sinceRelease)
      "Obsolete option `${showOption from}' is used. It was renamed to `${showOption to}'.";
  };
  mkAliasOptionModule = from: to: doRename {
    inherit from to;
    visible = true;
    warn = false;
    use = x: x;
  };
  mkAliasOptionModuleMD = mkAliasOptionModule;

  # The new option gets the definitions of the old one through `convert`.
  mkChangedOptionModule = from: to: changeFn:
    mkMergedOptionModule [ from ] to changeFn;
  mkMergedOptionModule = from: to: mergeFn:
    { config, options, ... }:
    {
      options = lib.foldl' lib.recursiveUpdate { } (map (path: setAttrByPath path (mkOption {
        visible = false;
        # To use the value in mergeFn without triggering errors
        default = "_mkMergedOptionModule";
      })) from);
      config =
        (optionalAttrs (options ? warnings) {
          warnings = lib.filter (x: x != "") (map (f:
            let val = getAttrFromPath f config; opt = getAttrFromPath f options; in
            lib.optionalString (val != "_mkMergedOptionModule")
              "The option `${showOption f}' defined in ${showFiles opt.files} has been changed to `${showOption to}' that has a different type. Please read `${showOption to}' documentation and update your configuration accordingly.")
            from);
        })
        // setAttrByPath to (mkMerge (optional
          (builtins.any (f: (getAttrFromPath f config) != "_mkMergedOptionModule") from)
          (mergeFn config)));
    };

  doRename = { from, to, visible, warn, use, withPriority ? true, condition ? true }:
    { config, options, ... }:
    let
      fromOpt = getAttrFromPath from options;
      toOf = attrByPath to (abort "Renaming error: option `${showOption to}' does not exist.");
      toType = let opt = attrByPath to { } options; in opt.type or (types.submodule { });
    in
    {
      options = setAttrByPath from (mkOption {
        inherit visible;
        description = "Alias of {option}`${showOption to}`.";
        apply = x: use (toOf config);
      } // optionalAttrs (toType != null) {
        type = toType;
      });
      config = mkIf condition (mkMerge [
        (optionalAttrs (options ? warnings) {
          warnings = optional (warn && fromOpt.isDefined)
            "The option `${showOption from}' defined in ${showFiles fromOpt.files} has been renamed to `${showOption to}'.";
        })
        (if withPriority
         then mkAliasAndWrapDefsWithPriority (setAttrByPath to) fromOpt
         else mkAliasAndWrapDefinitions (setAttrByPath to) fromOpt)
      ]);
    };

  # Legacy entry point.
  fixMergeModules = modules: args: evalModules { inherit modules args; check = false; };
}

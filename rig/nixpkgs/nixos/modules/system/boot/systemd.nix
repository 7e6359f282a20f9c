# systemd.services → unit files in /etc/systemd/system, one etc entry per
# unit and per `wantedBy` link, in the shape NixOS gives them (X-* keys that
# switch-to-configuration reads, restart triggers folded into the unit text
# so a changed trigger changes the unit).
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;

  nixosConfig = config;

  # NixOS's unitOption (systemd-unit-options.nix): definitions that are
  # lists concatenate; otherwise they must all be equal, so `script` and a
  # `serviceConfig.ExecStart` of one's own conflict ("has conflicting
  # definition values"), as on NixOS.
  unitValue = lib.mkOptionType {
    name = "systemd option";
    merge = loc: defs:
      let defs' = lib.filterOverrides defs; in
      if lib.any (def: builtins.isList def.value) defs'
      then lib.concatMap (def: lib.toList def.value) defs'
      else lib.mergeEqualOption loc defs';
  };

  serviceOpts = { name, config, ... }: {
    options = {
      enable = mkOption { type = types.bool; default = true; description = "If false, the unit is masked."; };
      description = mkOption { type = types.str; default = ""; description = "Description= of the unit."; };
      documentation = mkOption { type = types.listOf types.str; default = [ ]; description = "Documentation=."; };
      wantedBy = mkOption { type = types.listOf types.str; default = [ ]; description = "Units that want this one."; };
      requiredBy = mkOption { type = types.listOf types.str; default = [ ]; description = "Units that require this one."; };
      after = mkOption { type = types.listOf types.str; default = [ ]; description = "After=."; };
      before = mkOption { type = types.listOf types.str; default = [ ]; description = "Before=."; };
      wants = mkOption { type = types.listOf types.str; default = [ ]; description = "Wants=."; };
      requires = mkOption { type = types.listOf types.str; default = [ ]; description = "Requires=."; };
      bindsTo = mkOption { type = types.listOf types.str; default = [ ]; description = "BindsTo=."; };
      partOf = mkOption { type = types.listOf types.str; default = [ ]; description = "PartOf=."; };
      conflicts = mkOption { type = types.listOf types.str; default = [ ]; description = "Conflicts=."; };
      environment = mkOption {
        type = types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ]));
        default = { };
        description = "Environment variables of the service.";
      };
      path = mkOption { type = types.listOf (types.either types.package types.str); default = [ ]; description = "Packages whose bin/ and sbin/ are added to PATH."; };
      script = mkOption { type = types.lines; default = ""; description = "Shell commands run as ExecStart."; };
      preStart = mkOption { type = types.lines; default = ""; description = "Shell commands run as ExecStartPre."; };
      postStart = mkOption { type = types.lines; default = ""; description = "Shell commands run as ExecStartPost."; };
      preStop = mkOption { type = types.lines; default = ""; description = "Shell commands run as ExecStop."; };
      postStop = mkOption { type = types.lines; default = ""; description = "Shell commands run as ExecStopPost."; };
      serviceConfig = mkOption { type = types.attrsOf unitValue; default = { }; description = "Keys of [Service]."; };
      unitConfig = mkOption { type = types.attrsOf unitValue; default = { }; description = "Keys of [Unit]."; };
      restartTriggers = mkOption { type = types.listOf types.unspecified; default = [ ]; description = "Values whose change restarts the unit."; };
      reloadTriggers = mkOption { type = types.listOf types.unspecified; default = [ ]; description = "Values whose change reloads the unit."; };
      restartIfChanged = mkOption { type = types.bool; default = true; description = "Restart the unit when it changes."; };
      reloadIfChanged = mkOption { type = types.bool; default = false; description = "Reload instead of restart when it changes."; };
      stopIfChanged = mkOption {
        type = types.bool;
        default = true;
        description = "Stop the old unit before activation and start the new one after it, rather than restart.";
      };
      startAt = mkOption {
        type = types.either types.str (types.listOf types.str);
        default = [ ];
        description = "When the service runs (systemd.time(7) calendar events): a `<name>.timer` wanted by timers.target.";
      };
    };
    # As NixOS's systemd-lib.nix (stage2ServiceConfig, serviceConfig) and
    # systemd.nix: the default PATH, and the scripts as Exec* keys.
    config = lib.mkMerge [
      {
        path = lib.mkAfter (with pkgs; [ coreutils findutils gnugrep gnused nixosConfig.systemd.package ]);
        environment.PATH = lib.mkIf (config.path != [ ])
          "${lib.makeBinPath config.path}:${lib.makeSearchPathOutput "bin" "sbin" config.path}";
      }
      (lib.mkIf (config.preStart != "") { serviceConfig.ExecStartPre = [ "${shellScript "${name}-pre-start" config.preStart}" ]; })
      (lib.mkIf (config.script != "") { serviceConfig.ExecStart = "${shellScript "${name}-start" config.script}"; })
      (lib.mkIf (config.postStart != "") { serviceConfig.ExecStartPost = [ "${shellScript "${name}-post-start" config.postStart}" ]; })
      (lib.mkIf (config.preStop != "") { serviceConfig.ExecStop = "${shellScript "${name}-pre-stop" config.preStop}"; })
      (lib.mkIf (config.postStop != "") { serviceConfig.ExecStopPost = "${shellScript "${name}-post-stop" config.postStop}"; })
    ];
  };

  render = v:
    if builtins.isBool v then lib.boolToString v
    else toString v;

  keyLines = attrs: lib.concatStrings (lib.mapAttrsToList (k: v:
    if builtins.isList v then lib.concatMapStrings (x: "${k}=${render x}\n") v
    else "${k}=${render v}\n") attrs);

  # "@" (template units) may not appear in a store path's name.
  shellScript = name: text: pkgs.writeScript (builtins.replaceStrings [ "@" ] [ "-" ] name) ''
    #!${pkgs.runtimeShell} -e
    ${text}
  '';

  unitText = name: s:
    let
      triggers = builtins.hashString "sha256" (builtins.toJSON (map toString s.restartTriggers));
      reloads = builtins.hashString "sha256" (builtins.toJSON (map toString s.reloadTriggers));
      env = lib.filterAttrs (_: v: v != null) s.environment;
    in
    ''
      [Unit]
    ''
    + lib.optionalString (s.description != "") "Description=${s.description}\n"
    + keyLines (lib.filterAttrs (_: v: v != [ ]) {
      Documentation = s.documentation; After = s.after; Before = s.before; Wants = s.wants;
      Requires = s.requires; BindsTo = s.bindsTo; PartOf = s.partOf; Conflicts = s.conflicts;
    })
    + lib.optionalString (s.restartTriggers != [ ]) "X-Restart-Triggers=${triggers}\n"
    + lib.optionalString (s.reloadTriggers != [ ]) "X-Reload-Triggers=${reloads}\n"
    + lib.optionalString (!s.restartIfChanged) "X-RestartIfChanged=false\n"
    + lib.optionalString s.reloadIfChanged "X-ReloadIfChanged=true\n"
    + lib.optionalString (!s.stopIfChanged) "X-StopIfChanged=false\n"
    + keyLines s.unitConfig
    + ''

      [Service]
    ''
    + lib.concatStrings (lib.mapAttrsToList (k: v: "Environment=\"${k}=${toString v}\"\n") env)
    + keyLines s.serviceConfig;

  unitFile = name: s:
    let file = "${name}.service"; in
    if s.enable then
      "${pkgs.writeTextFile { name = "unit-${builtins.replaceStrings [ "@" ] [ "-" ] file}"; text = unitText name s; destination = "/${file}"; }}/${file}"
    else "/dev/null";

  services = config.systemd.services;

  # systemd.sockets, as NixOS has them (listenStreams or
  # socketConfig.ListenStream, Accept …).
  socketOpts = { name, ... }: {
    options = {
      enable = mkOption { type = types.bool; default = true; description = "If false, the unit is masked."; };
      description = mkOption { type = types.str; default = ""; description = "Description= of the unit."; };
      wantedBy = mkOption { type = types.listOf types.str; default = [ ]; description = "Units that want this one."; };
      requiredBy = mkOption { type = types.listOf types.str; default = [ ]; description = "Units that require this one."; };
      after = mkOption { type = types.listOf types.str; default = [ ]; description = "After=."; };
      before = mkOption { type = types.listOf types.str; default = [ ]; description = "Before=."; };
      wants = mkOption { type = types.listOf types.str; default = [ ]; description = "Wants=."; };
      listenStreams = mkOption { type = types.listOf types.str; default = [ ]; description = "ListenStream= addresses."; };
      listenDatagrams = mkOption { type = types.listOf types.str; default = [ ]; description = "ListenDatagram= addresses."; };
      socketConfig = mkOption { type = types.attrsOf unitValue; default = { }; description = "Keys of [Socket]."; };
      unitConfig = mkOption { type = types.attrsOf unitValue; default = { }; description = "Keys of [Unit]."; };
    };
  };

  socketText = s:
    "[Unit]\n"
    + lib.optionalString (s.description != "") "Description=${s.description}\n"
    + keyLines (lib.filterAttrs (_: v: v != [ ]) { After = s.after; Before = s.before; Wants = s.wants; })
    + keyLines s.unitConfig
    + "\n[Socket]\n"
    + keyLines (lib.filterAttrs (_: v: v != [ ]) { ListenStream = s.listenStreams; ListenDatagram = s.listenDatagrams; })
    + keyLines s.socketConfig;

  unitLinks = suffix: file: name: s:
    {
      "systemd/system/${name}.${suffix}".source = file;
    }
    // lib.listToAttrs (map (t: lib.nameValuePair "systemd/system/${t}.wants/${name}.${suffix}" { source = file; })
      (lib.optionals s.enable s.wantedBy))
    // lib.listToAttrs (map (t: lib.nameValuePair "systemd/system/${t}.requires/${name}.${suffix}" { source = file; })
      (lib.optionals s.enable s.requiredBy));

  socketFile = name: s:
    let file = "${name}.socket"; in
    if s.enable then
      "${pkgs.writeTextFile { name = "unit-${file}"; text = socketText s; destination = "/${file}"; }}/${file}"
    else "/dev/null";

  # startAt: NixOS's systemd.nix makes a timer for the service through
  # systemd.timers (wanted by timers.target, OnCalendar= each event). A
  # calendar event systemd cannot parse is not checked here (nor by NixOS):
  # the guest's systemd refuses the timer when the switch starts it.
  startAtServices = lib.filterAttrs (_: s: s.enable && s.startAt != [ ]) services;
  # systemd.timers, as NixOS has them (timerConfig: the keys of [Timer]; no
  # Unit= means the service of the same name).
  timerOpts = { name, ... }: {
    options = {
      enable = mkOption { type = types.bool; default = true; description = "If false, the unit is masked."; };
      description = mkOption { type = types.str; default = ""; description = "Description= of the unit."; };
      wantedBy = mkOption { type = types.listOf types.str; default = [ ]; description = "Units that want this one."; };
      requiredBy = mkOption { type = types.listOf types.str; default = [ ]; description = "Units that require this one."; };
      after = mkOption { type = types.listOf types.str; default = [ ]; description = "After=."; };
      before = mkOption { type = types.listOf types.str; default = [ ]; description = "Before=."; };
      wants = mkOption { type = types.listOf types.str; default = [ ]; description = "Wants=."; };
      timerConfig = mkOption {
        type = types.attrsOf unitValue;
        default = { };
        example = { OnCalendar = "Sun 14:00:00"; Unit = "foo.service"; };
        description = "Keys of [Timer] (systemd.timer(5)).";
      };
      unitConfig = mkOption { type = types.attrsOf unitValue; default = { }; description = "Keys of [Unit]."; };
    };
  };

  timerText = s:
    "[Unit]\n"
    + lib.optionalString (s.description != "") "Description=${s.description}\n"
    + keyLines (lib.filterAttrs (_: v: v != [ ]) { After = s.after; Before = s.before; Wants = s.wants; })
    + keyLines s.unitConfig
    + "\n[Timer]\n"
    + keyLines s.timerConfig;

  timerFile = name: s:
    let file = "${name}.timer"; in
    if s.enable then
      "${pkgs.writeTextFile { name = "unit-${file}"; text = timerText s; destination = "/${file}"; }}/${file}"
    else "/dev/null";
in
{
  options.systemd = {
    timers = mkOption {
      type = types.attrsOf (types.submodule timerOpts);
      default = { };
      description = "systemd timers.";
    };
    services = mkOption {
      type = types.attrsOf (types.submodule serviceOpts);
      default = { };
      description = "systemd services.";
    };
    sockets = mkOption {
      type = types.attrsOf (types.submodule socketOpts);
      default = { };
      description = "systemd sockets.";
    };
    package = mkOption { type = types.package; default = pkgs.systemd; description = "The systemd package."; };
  };

  config.systemd.timers = lib.mapAttrs
    (_: s: { wantedBy = [ "timers.target" ]; timerConfig.OnCalendar = s.startAt; })
    startAtServices;

  config.environment.etc = lib.mkMerge (
    lib.mapAttrsToList (name: s: unitLinks "service" (unitFile name s) name s) services
    ++ lib.mapAttrsToList (name: s: unitLinks "socket" (socketFile name s) name s) config.systemd.sockets
    ++ lib.mapAttrsToList (name: s: unitLinks "timer" (timerFile name s) name s) config.systemd.timers);
}

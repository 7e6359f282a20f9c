# security.sudo: the options of NixOS's nixos/modules/security/sudo.nix, its
# /etc/sudoers (mode 0440) and its PAM service.  The program is the rig
# guest image's (Debian's sudo, setuid root, /usr/bin/sudo), which reads
# these; NixOS installs its own as the setuid wrapper /run/wrappers/bin/sudo.
# The build-time check runs pkgs.sudo's visudo: the host's (Debian's sudo).
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.security.sudo;

  toUserString = user: if builtins.isInt user then "#${toString user}" else user;
  toGroupString = group: if builtins.isInt group then "%#${toString group}" else "%${group}";
  toCommandOptionsString = options:
    "${lib.concatStringsSep ":" options}${lib.optionalString (options != [ ]) ":"} ";
  toCommandsString = commands: lib.concatStringsSep ", " (map (command:
    if builtins.isString command then command
    else "${toCommandOptionsString command.options}${command.command}") commands);

  ruleLines = lib.concatStringsSep "\n" (lib.concatMap (rule:
    lib.optionals (rule.commands != [ ]) (
      map (user: "${toUserString user}\t${rule.host}=(${rule.runAs})\t${toCommandsString rule.commands}") rule.users
      ++ map (group: "${toGroupString group}\t${rule.host}=(${rule.runAs})\t${toCommandsString rule.commands}") rule.groups
    )) cfg.extraRules);

  defaultRule = { users ? [ ], groups ? [ ], opts ? [ ] }: [ {
    inherit users groups;
    commands = [ { command = "ALL"; options = opts ++ cfg.defaultOptions; } ];
  } ];
in
{
  options.security.sudo = {
    enable = mkOption { type = types.bool; default = true; description = "Whether to enable the sudo command."; };
    wheelNeedsPassword = mkOption {
      type = types.bool;
      default = true;
      description = "Whether users of the wheel group must provide a password to run commands as super user via sudo.";
    };
    execWheelOnly = mkOption { type = types.bool; default = false; description = "Only allow members of the wheel group to execute sudo."; };
    keepTerminfo = mkOption { type = types.bool; default = true; description = "Whether to keep TERMINFO and TERMINFO_DIRS for root and %wheel."; };
    defaultOptions = mkOption { type = types.listOf types.str; default = [ "SETENV" ]; description = "Options of the default rules."; };
    configFile = mkOption { type = types.lines; description = "The contents of the sudoers file."; };
    extraRules = mkOption {
      type = types.listOf (types.submodule {
        options = {
          users = mkOption { type = types.listOf (types.either types.str types.int); default = [ ]; description = "User names or UIDs."; };
          groups = mkOption { type = types.listOf (types.either types.str types.int); default = [ ]; description = "Group names or GIDs."; };
          host = mkOption { type = types.str; default = "ALL"; description = "The host the rule applies to."; };
          runAs = mkOption { type = types.str; default = "ALL:ALL"; description = "Users and groups commands may run as."; };
          commands = mkOption {
            type = types.listOf (types.either types.str (types.submodule {
              options = {
                command = mkOption { type = types.str; description = "A command."; };
                options = mkOption { type = types.listOf types.str; default = [ ]; description = "Its tags (NOPASSWD …)."; };
              };
            }));
            description = "Commands of the rule.";
          };
        };
      });
      default = [ ];
      description = "sudoers rules.";
    };
    extraConfig = mkOption { type = types.lines; default = ""; description = "Extra sudoers text."; };
  };

  config = lib.mkIf cfg.enable {
    security.sudo.extraRules = lib.mkMerge [
      (lib.mkOrder 400 (defaultRule { users = [ "root" ]; }))
      (lib.mkOrder 600 (defaultRule {
        groups = [ "wheel" ];
        opts = lib.optional (!cfg.wheelNeedsPassword) "NOPASSWD";
      }))
    ];

    # NixOS's terminfo.nix adds this when keepTerminfo is set.
    security.sudo.extraConfig = lib.mkIf cfg.keepTerminfo ''

      # Keep terminfo database for root and %wheel.
      Defaults:root,%wheel env_keep+=TERMINFO_DIRS
      Defaults:root,%wheel env_keep+=TERMINFO
    '';

    security.sudo.configFile = ''
      # Don't edit this file. Set the NixOS options ‘security.sudo.configFile’
      # or ‘security.sudo.extraRules’ instead.
    ''
    + ruleLines + "\n"
    + lib.optionalString (cfg.extraConfig != "") ''
      # extraConfig
      ${cfg.extraConfig}
    '';

    security.pam.services.sudo = { };

    # As NixOS: the file is checked at build time (`visudo -c`), so a
    # sudoers syntax error fails the system's build, not sudo on the server.
    environment.etc.sudoers = {
      source = pkgs.runCommand "sudoers" {
        src = pkgs.writeText "sudoers-in" cfg.configFile;
      } "${pkgs.sudo}/bin/visudo -f $src -c && cp $src $out";
      mode = "0440";
    };
  };
}

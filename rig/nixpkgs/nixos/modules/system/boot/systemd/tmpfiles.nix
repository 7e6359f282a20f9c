# systemd.tmpfiles: the options of NixOS's system/boot/systemd/tmpfiles.nix.
# `rules` go to /etc/tmpfiles.d/00-nixos.conf, each `settings.<name>` to
# /etc/tmpfiles.d/<name>.conf (a line per path and type, its fields quoted, its argument C-escaped);
# systemd-tmpfiles-resetup.service applies them (--create --remove) at boot
# and again on a switch that changes them (its restart trigger).
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.systemd.tmpfiles;

  entryOpts = { name, ... }: {
    options = {
      type = mkOption { type = types.str; default = name; example = "d"; description = "The tmpfiles.d(5) line type."; };
      mode = mkOption { type = types.str; default = "-"; example = "0755"; description = "The file access mode."; };
      user = mkOption { type = types.str; default = "-"; example = "root"; description = "The owner."; };
      group = mkOption { type = types.str; default = "-"; example = "root"; description = "The group."; };
      age = mkOption { type = types.str; default = "-"; example = "10d"; description = "When the entry is cleaned up."; };
      argument = mkOption { type = types.str; default = ""; description = "The argument field (type specific)."; };
    };
  };

  # As tmpfiles.nix: the fields quoted as they are, the argument C-escaped
  # (lib.strings.escapeC [ "\t" "\n" "\r" " " "\\" ]).
  escapeArgument = builtins.replaceStrings [ "\t" "\n" "\r" " " "\\" ] [ "\\x09" "\\x0a" "\\x0d" "\\x20" "\\x5c" ];
  line = path: e: "'${e.type}' '${path}' '${e.mode}' '${e.user}' '${e.group}' '${e.age}' ${escapeArgument e.argument}\n";
  settingsText = paths: lib.concatStrings (lib.mapAttrsToList (path: entries:
    lib.concatStrings (lib.mapAttrsToList (_: line path) entries)) paths);

  files = lib.optionalAttrs (cfg.rules != [ ]) {
    "tmpfiles.d/00-nixos.conf".text = ''
      # This file is created automatically and should not be modified.
      # Please change the option ‘systemd.tmpfiles.rules’ instead.
      ${lib.concatStringsSep "\n" cfg.rules}
    '';
  } // lib.mapAttrs' (name: paths: lib.nameValuePair "tmpfiles.d/${name}.conf" { text = settingsText paths; }) cfg.settings;
in
{
  options.systemd.tmpfiles = {
    rules = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "d /tmp 1777 root root 10d" ];
      description = "Rules for creation, deletion and cleaning of volatile and temporary files (tmpfiles.d(5)).";
    };
    settings = mkOption {
      type = types.attrsOf (types.attrsOf (types.attrsOf (types.submodule entryOpts)));
      default = { };
      example = { "10-mypackage"."/var/lib/my-service/statefolder".d = { mode = "0755"; user = "root"; group = "root"; }; };
      description = "tmpfiles.d files: settings.<file>.<path>.<type>.";
    };
  };

  config = {
    environment.etc = files;
    systemd.services.systemd-tmpfiles-resetup = {
      description = "Re-setup tmpfiles on a system that is already running";
      wantedBy = [ "sysinit.target" ];
      after = [ "local-fs.target" "systemd-sysusers.service" "systemd-journald.service" ];
      before = [ "sysinit.target" "shutdown.target" ];
      conflicts = [ "shutdown.target" ];
      unitConfig.DefaultDependencies = false;
      restartTriggers = lib.mapAttrsToList (_: f: f.text) files;
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        ExecStart = "/bin/systemd-tmpfiles --create --remove --exclude-prefix=/dev";
        SuccessExitStatus = "DATAERR CANTCREAT";
      };
    };
  };
}

# environment.etc: files of /etc, gathered into the toplevel's `etc` tree and
# installed at activation by setup-etc.py (links into /etc/static, copies
# for entries with a mode).
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;

  etcOpts = { name, config, ... }: {
    options = {
      enable = mkOption { type = types.bool; default = true; description = "Whether this file is created."; };
      target = mkOption { type = types.str; default = name; description = "Its path relative to /etc."; };
      text = mkOption { type = types.nullOr types.lines; default = null; description = "Its text."; };
      source = mkOption { type = types.path; description = "The file it is."; };
      mode = mkOption {
        type = types.str;
        default = "symlink";
        description = "`symlink`, or an octal mode: then the file is copied with that mode.";
      };
      uid = mkOption { type = types.int; default = 0; description = "Owner of a copied file."; };
      gid = mkOption { type = types.int; default = 0; description = "Group of a copied file."; };
      user = mkOption { type = types.str; default = "+${toString config.uid}"; description = "Owner of a copied file, by name."; };
      group = mkOption { type = types.str; default = "+${toString config.gid}"; description = "Group of a copied file, by name."; };
    };
    config.source = lib.mkIf (config.text != null) (lib.mkDefault
      (pkgs.writeText "etc-${builtins.baseNameOf name}" config.text));
  };

  enabled = lib.filter (e: e.enable) (lib.attrValues config.environment.etc);

  spec = builtins.toJSON (map (e: {
    inherit (e) target mode user group;
    source = toString e.source;
  }) enabled);
in
{
  options.environment.etc = mkOption {
    type = types.attrsOf (types.submodule etcOpts);
    default = { };
    description = "Files in /etc.";
  };

  # system.checks (NixOS declares it in top-level.nix): derivations built
  # with the system, to validate some part of its configuration, without
  # becoming part of it.  Here they are inputs of the etc tree, which the
  # toplevel is built from, so a failing check fails the toplevel's build.
  options.system.checks = mkOption {
    type = types.listOf types.package;
    default = [ ];
    description = "Packages built with the system to validate its configuration; not part of it.";
  };

  config = {
    system.build.etc = pkgs.runCommand "etc" {
      inherit spec;
      passAsFile = [ "spec" ];
      passedChecks = lib.concatStringsSep " " (map toString config.system.checks);
    } ''
      python3 - "$specPath" "$out" <<'PY'
      import json, os, sys
      spec, out = json.load(open(sys.argv[1])), sys.argv[2]
      os.makedirs(os.path.join(out, "etc"), exist_ok=True)
      # Copied entries, one per line: TARGET<tab>MODE<tab>USER<tab>GROUP, as
      # NixOS's .uid/.gid files: a name, or +N for an id (the guest's
      # minimal python3 has no json module).
      with open(os.path.join(out, "etc", ".rig-etc-modes"), "w") as modes:
          for e in spec:
              link = os.path.join(out, "etc", e["target"])
              os.makedirs(os.path.dirname(link), exist_ok=True)
              os.symlink(e["source"], link)
              if e["mode"] != "symlink":
                  modes.write(f"{e['target']}\t{e['mode']}\t{e['user']}\t{e['group']}\n")
      PY
    '';

    # After the accounts, as NixOS (stringAfter [ "users" "groups" ]): an
    # entry's user and group are looked up by name.
    system.activationScripts.etc = {
      deps = [ "users" ];
      text = ''
        echo "setting up /etc..."
        /usr/bin/python3 ${./setup-etc.py} "$systemConfig/etc"
      '';
    };
  };
}

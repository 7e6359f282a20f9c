# users.users / users.groups, applied at activation by a small script.
# Authorized SSH keys go to /etc/ssh/authorized_keys.d/<user>, as in NixOS.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.users;

  userOpts = { name, config, ... }: {
    options = {
      name = mkOption { type = types.str; default = name; description = "The user name."; };
      uid = mkOption { type = types.nullOr types.int; default = null; description = "The user id."; };
      isNormalUser = mkOption { type = types.bool; default = false; description = "A user with a home and a login shell."; };
      isSystemUser = mkOption { type = types.bool; default = false; description = "A system user."; };
      description = mkOption { type = types.str; default = ""; description = "The GECOS field."; };
      group = mkOption { type = types.str; default = ""; description = "The primary group."; };
      extraGroups = mkOption { type = types.listOf types.str; default = [ ]; description = "More groups."; };
      home = mkOption {
        type = types.str;
        default = if name == "root" then "/root" else if config.isNormalUser then "/home/${name}" else "/var/empty";
        description = "The home directory.";
      };
      createHome = mkOption { type = types.bool; default = config.isNormalUser; description = "Create the home directory."; };
      shell = mkOption { type = types.nullOr (types.either types.package types.str); default = null; description = "The login shell."; };
      hashedPassword = mkOption { type = types.nullOr types.str; default = null; description = "The password hash (crypt(3))."; };
      initialHashedPassword = mkOption { type = types.nullOr types.str; default = null; description = "The password hash set when the user is created."; };
      password = mkOption { type = types.nullOr types.str; default = null; description = "A clear-text password (world-readable in the store)."; };
      initialPassword = mkOption { type = types.nullOr types.str; default = null; description = "A clear-text password set when the user is created."; };
      hashedPasswordFile = mkOption { type = types.nullOr types.str; default = null; description = "A file holding the password hash."; };
      openssh.authorizedKeys = {
        keys = mkOption { type = types.listOf types.singleLineStr; default = [ ]; description = "Public keys that may log in as this user."; };
        keyFiles = mkOption { type = types.listOf types.path; default = [ ]; description = "Files of public keys that may log in as this user."; };
      };
    };
  };

  groupOpts = { name, ... }: {
    options = {
      name = mkOption { type = types.str; default = name; description = "The group name."; };
      gid = mkOption { type = types.nullOr types.int; default = null; description = "The group id."; };
      members = mkOption { type = types.listOf types.str; default = [ ]; description = "Members."; };
    };
  };

  # Read by update-users.py with ast.literal_eval (the guest's python3 may
  # be a minimal one, without json): JSON without true/false/null is a
  # Python literal, so booleans are 0/1 and a missing value is "" or -1.
  str' = v: if v == null then "" else toString v;
  int' = v: if v == null then -1 else v;
  bit = b: if b then 1 else 0;
  spec = pkgs.writeText "users-groups.spec" (builtins.toJSON {
    mutableUsers = bit cfg.mutableUsers;
    users = lib.mapAttrsToList (_: u: {
      inherit (u) name description home extraGroups;
      uid = int' u.uid;
      isNormalUser = bit u.isNormalUser;
      createHome = bit u.createHome;
      hashedPassword = str' u.hashedPassword;
      initialHashedPassword = str' u.initialHashedPassword;
      group = if u.group != "" then u.group else if u.isNormalUser then "users" else "";
      shell = str' u.shell;
    }) cfg.users;
    groups = lib.mapAttrsToList (_: g: { inherit (g) name members; gid = int' g.gid; }) cfg.groups;
  });

  keysOf = u: u.openssh.authorizedKeys.keys ++ map lib.fileContents u.openssh.authorizedKeys.keyFiles;
in
{
  options.users = {
    mutableUsers = mkOption {
      type = types.bool;
      default = true;
      description = "Whether users may be changed outside the configuration (passwd, useradd).";
    };
    users = mkOption { type = types.attrsOf (types.submodule userOpts); default = { }; description = "User accounts."; };
    groups = mkOption { type = types.attrsOf (types.submodule groupOpts); default = { }; description = "Groups."; };
  };

  config = {
    users.users.root = { uid = 0; description = "System administrator"; home = "/root"; group = "root"; };
    users.groups = { root.gid = 0; users.gid = 100; wheel.gid = 1; };

    environment.etc = lib.mapAttrs' (name: u:
      lib.nameValuePair "ssh/authorized_keys.d/${name}" {
        mode = "0444";
        text = lib.concatMapStrings (k: k + "\n") (keysOf u);
      }) (lib.filterAttrs (_: u: keysOf u != [ ]) cfg.users);

    system.activationScripts.users = ''
      /usr/bin/python3 ${./update-users.py} ${spec}
    '';
  };
}

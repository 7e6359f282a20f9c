# users.users / users.groups with the interface and the checks of NixOS's
# nixos/modules/config/users-groups.nix (assertions and warnings with its
# messages), applied at activation by update-users.py.  Authorized SSH keys
# go to /etc/ssh/authorized_keys.d/<user>, a copy of mode 0444, as in NixOS.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption mkDefault types;
  cfg = config.users;

  # Whether a password hash lets someone log in (NixOS's allowsLogin).
  allowsLogin = hash:
    hash == "" # login without password
    || !(builtins.elem hash [
      null # password login disabled
      "!" # password login disabled
      "!!" # a variant of "!"
      "*" # password unset
    ]);

  config' = config;
  userOpts = { name, config, ... }: {
    options = {
      name = mkOption {
        type = types.str;
        default = name;
        apply = x: assert (lib.stringLength x < 32 || abort "Username '${x}' is longer than 31 characters which is not allowed!"); x;
        description = "The user name.";
      };
      uid = mkOption { type = types.nullOr types.int; default = null; description = "The account UID; null: chosen at creation."; };
      isNormalUser = mkOption {
        type = types.bool;
        default = false;
        description = "A normal user: group users, a home in /home made at creation, a login shell.";
      };
      isSystemUser = mkOption { type = types.bool; default = false; description = "A system user (a UID below 1000)."; };
      description = mkOption { type = types.str; default = ""; description = "The GECOS field."; };
      group = mkOption {
        type = types.str;
        default = "";
        apply = x: assert (lib.stringLength x < 32 || abort "Group name '${x}' is longer than 31 characters which is not allowed!"); x;
        description = "The user's primary group.";
      };
      extraGroups = mkOption { type = types.listOf types.str; default = [ ]; description = "The user's auxiliary groups."; };
      home = mkOption { type = types.str; default = "/var/empty"; description = "The user's home directory."; };
      createHome = mkOption { type = types.bool; default = false; description = "Create the home directory at activation."; };
      useDefaultShell = mkOption { type = types.bool; default = false; description = "Use users.defaultUserShell."; };
      shell = mkOption { type = types.nullOr (types.either types.package types.str); default = null; description = "The login shell."; };
      hashedPassword = mkOption { type = types.nullOr types.str; default = null; description = "The password hash (crypt(3))."; };
      initialHashedPassword = mkOption { type = types.nullOr types.str; default = null; description = "The password hash set when the user is created."; };
      password = mkOption { type = types.nullOr types.str; default = null; description = "A clear-text password (world-readable in the store)."; };
      initialPassword = mkOption { type = types.nullOr types.str; default = null; description = "A clear-text password set when the user is created."; };
      hashedPasswordFile = mkOption { type = types.nullOr types.str; default = null; description = "A file holding the password hash."; };
      linger = mkOption {
        type = types.nullOr types.bool;
        # NixOS: null from stateVersion 25.11 on, false before.
        default = if lib.versionAtLeast config'.system.stateVersion "25.11" then null else false;
        description = "Whether the user's systemd manager runs from boot, without a login; null: left as it is.";
      };
      openssh.authorizedKeys = {
        keys = mkOption {
          type = types.listOf types.singleLineStr;
          default = [ ];
          description = "Verbatim OpenSSH public keys added to the user's authorized keys.";
        };
        keyFiles = mkOption {
          type = types.listOf types.path;
          default = [ ];
          description = "Files of OpenSSH public keys added to the user's authorized keys.";
        };
      };
    };
    config = lib.mkMerge [
      (lib.mkIf config.isNormalUser {
        group = mkDefault "users";
        createHome = mkDefault true;
        home = mkDefault "/home/${config.name}";
        useDefaultShell = mkDefault true;
        isSystemUser = mkDefault false;
      })
      # With immutable users, the initial passwords are the passwords.
      (lib.mkIf (!cfg.mutableUsers && config.initialPassword != null) {
        password = mkDefault config.initialPassword;
      })
      (lib.mkIf (!cfg.mutableUsers && config.initialHashedPassword != null) {
        hashedPassword = mkDefault config.initialHashedPassword;
      })
    ];
  };

  groupOpts = { name, ... }: {
    options = {
      name = mkOption { type = types.str; default = name; description = "The group name."; };
      gid = mkOption { type = types.nullOr types.int; default = null; description = "The group id."; };
      members = mkOption { type = types.listOf types.str; default = [ ]; description = "Members."; };
    };
  };

  # Read by update-users.py with ast.literal_eval (the guest's python3 is a
  # minimal one, without json): JSON without true/false/null is a Python
  # literal, so booleans are 0/1 and a missing value is "" or -1.
  str' = v: if v == null then "" else toString v;
  int' = v: if v == null then -1 else v;
  bit = b: if b then 1 else 0;
  spec = pkgs.writeText "users-groups.spec" (builtins.toJSON {
    mutableUsers = bit cfg.mutableUsers;
    users = lib.mapAttrsToList (_: u: {
      inherit (u) name description home extraGroups group;
      uid = int' u.uid;
      isNormalUser = bit u.isNormalUser;
      isSystemUser = bit u.isSystemUser;
      createHome = bit u.createHome;
      hashedPassword = str' u.hashedPassword;
      initialHashedPassword = str' u.initialHashedPassword;
      password = str' u.password;
      initialPassword = str' u.initialPassword;
      hashedPasswordFile = str' u.hashedPasswordFile;
      shell = if u.shell == null && u.useDefaultShell then str' cfg.defaultUserShell else str' u.shell;
    }) cfg.users;
    groups = lib.mapAttrsToList (_: g: { inherit (g) name members; gid = int' g.gid; }) cfg.groups;
  });

  hasKeys = u: u.openssh.authorizedKeys.keys != [ ] || u.openssh.authorizedKeys.keyFiles != [ ];

  # NixOS's idsAreUnique: false at the first id two entries share, traced
  # as "Duplicate uid N" / "Duplicate gid N" (a foldr: from the last name).
  idsUnique = set: idAttr:
    let
      step = acc: name:
        if acc == null then null
        else
          let id = toString set.${name}.${idAttr}; in
          if acc ? ${id} then builtins.trace "Duplicate ${idAttr} ${id}" null
          else acc // { ${id} = true; };
    in
    builtins.foldl' step { } (lib.reverseList (builtins.attrNames set)) != null;
  uidsUnique = idsUnique (lib.filterAttrs (_: u: u.uid != null) cfg.users) "uid";
  gidsUnique = idsUnique (lib.filterAttrs (_: g: g.gid != null) cfg.groups) "gid";

  groupNames = lib.mapAttrsToList (_: g: g.name) cfg.groups;
  usersWithoutGroup = lib.filterAttrs (_: u: u.group != "" && !builtins.elem u.group groupNames) cfg.users;

  # shadow's is_valid_name, without the trailing $ (as NixOS has it).
  nameRegex = "[a-zA-Z0-9_.][a-zA-Z0-9_.-]*";

  # The password options NixOS counts for its "multiple of the options"
  # warning; with immutable users the initial ones set the others.
  passwordOptions = [ "hashedPassword" "hashedPasswordFile" "password" ]
    ++ lib.optionals cfg.mutableUsers [ "initialHashedPassword" "initialPassword" ];
  precedence =
    if cfg.mutableUsers
    then "{option}`initialHashedPassword` -> {option}`initialPassword` -> {option}`hashedPassword` -> {option}`password` -> {option}`hashedPasswordFile`"
    else "{option}`initialHashedPassword` -> {option}`hashedPassword` -> {option}`initialPassword` -> {option}`password` -> {option}`hashedPasswordFile`";

  # The hash format NixOS accepts without a warning (a subset of the Modular
  # Crypt Format).
  mcf =
    let
      sep = "\\$";
      base64 = "[a-zA-Z0-9./]+";
      id = "[a-z0-9-]+";
      value = "[a-zA-Z0-9/+.-]+";
      options = "${id}(=${value})?(,${id}=${value})*";
      scheme = "${id}(${sep}${options})?";
      content = "${base64}${sep}${base64}(${sep}${base64})?";
    in "^${sep}${scheme}${sep}${content}$";
in
{
  options.users = {
    mutableUsers = mkOption {
      type = types.bool;
      default = true;
      description = "Whether users may be changed outside the configuration (passwd, useradd).";
    };
    enforceIdUniqueness = mkOption {
      type = types.bool;
      default = true;
      description = "Whether to require that no two users/groups share the same uid/gid.";
    };
    manageLingering = mkOption {
      type = types.bool;
      default = true;
      description = "Whether to manage whether users linger or not.";
    };
    allowNoPasswordLogin = mkOption {
      type = types.bool;
      default = false;
      description = "Disable the check that some privileged account has a password or an SSH key (with mutableUsers = false).";
    };
    defaultUserShell = mkOption {
      type = types.nullOr (types.either types.package types.str);
      default = null;
      description = "The shell of users with useDefaultShell (the rig: the guest's bash).";
    };
    users = mkOption { type = types.attrsOf (types.submodule userOpts); default = { }; description = "User accounts."; };
    groups = mkOption { type = types.attrsOf (types.submodule groupOpts); default = { }; description = "Groups."; };
  };

  config = {
    users.users.root = {
      uid = 0;
      description = "System administrator";
      home = "/root";
      group = "root";
      initialHashedPassword = mkDefault "!";
    };
    users.users.nobody = {
      uid = 65534;
      isSystemUser = true;
      description = "Unprivileged account (don't use!)";
      group = "nogroup";
    };
    users.groups = { root.gid = 0; wheel.gid = 1; users.gid = 100; nogroup.gid = 65534; };

    environment.etc = lib.mapAttrs' (_: u:
      lib.nameValuePair "ssh/authorized_keys.d/${u.name}" {
        mode = "0444";
        source = pkgs.writeText "${u.name}-authorized_keys" ''
          ${lib.concatStringsSep "\n" u.openssh.authorizedKeys.keys}
          ${lib.concatMapStrings (f: builtins.readFile f + "\n") u.openssh.authorizedKeys.keyFiles}
        '';
      }) (lib.filterAttrs (_: hasKeys) cfg.users);

    # NixOS's linger-users.service.  The rig's guest has no D-Bus and its
    # logind is masked: instead of loginctl it writes logind's state,
    # /var/lib/systemd/linger/<user>, itself, and does not require
    # systemd-logind.service (NixOS does).
    systemd.services.linger-users = lib.mkIf cfg.manageLingering {
      wantedBy = [ "multi-user.target" ];
      after = [ "systemd-logind.service" ];
      script =
        let names = v: lib.concatStringsSep " " (lib.mapAttrsToList (_: u: lib.escapeShellArg u.name) (lib.filterAttrs (_: u: u.linger == v) cfg.users));
        in ''
          for user in * .[!.]*; do
            [ -e "$user" ] || continue
            if ! id "$user" >/dev/null; then
              echo "Removing linger for missing user $user" >&2
              rm -- "$user"
            fi
          done
          for user in ${names false}; do rm -f -- "$user"; done
          for user in ${names true}; do id "$user" >/dev/null && touch -- "$user"; done
        '';
      serviceConfig = {
        Type = "oneshot";
        StateDirectory = "systemd/linger";
        WorkingDirectory = "/var/lib/systemd/linger";
      };
    };

    system.activationScripts.users = ''
      install -m 0700 -d /root
      install -m 0755 -d /home
      /usr/bin/python3 ${./update-users.py} ${spec}
    '';

    assertions = [
      {
        assertion = !cfg.enforceIdUniqueness || (uidsUnique && gidsUnique);
        message = "UIDs and GIDs must be unique!";
      }
      {
        assertion = usersWithoutGroup == { };
        message = ''
          The following users have a primary group that is undefined: ${lib.concatStringsSep " " (builtins.attrNames usersWithoutGroup)}
          Hint: Add this to your NixOS configuration:
            ${lib.concatStringsSep "\n  " (map (g: "users.groups.${g} = {};")
              (lib.unique (lib.mapAttrsToList (_: u: u.group) usersWithoutGroup)))}
        '';
      }
      {
        # With immutable users, some privileged account (root, or a member
        # of wheel) must be able to log in.
        assertion = !cfg.mutableUsers -> !cfg.allowNoPasswordLogin -> lib.any (x: x) (lib.mapAttrsToList (name: u:
          (name == "root" || u.group == "wheel" || builtins.elem "wheel" u.extraGroups)
          && (allowsLogin u.hashedPassword
            || u.password != null
            || u.hashedPasswordFile != null
            || hasKeys u)
        ) cfg.users);
        message = ''
          Neither the root account nor any wheel user has a password or SSH authorized key.
          You must set one to prevent being locked out of your system.
          If you really want to be locked out of your system, set users.allowNoPasswordLogin = true;
          However you are most probably better off by setting users.mutableUsers = true; and
          manually running passwd root to set the root password.
        '';
      }
    ] ++ lib.concatLists (lib.mapAttrsToList (_: user: [
      {
        assertion = builtins.match nameRegex user.name != null;
        message = "The username \"${user.name}\" is not valid, it does not match the regex \"${nameRegex}\".";
      }
      {
        assertion = user.linger != null -> cfg.manageLingering;
        message = ''
          users.manageLingering is set to false, but
          users.users.${user.name}.linger is configured.

          If you want NixOS to manage whether user accounts linger or
          not, you must set users.manageLingering to true.  This is the
          default setting.

          If you do not want NixOS to manage whether user accounts linger
          or not, you must set users.users.${user.name}.linger to null.
          This is the default setting provided system.stateVersion is at
          least "25.11".
        '';
      }
      {
        assertion = user.hashedPassword != null -> builtins.match ".*:.*" user.hashedPassword == null;
        message = ''
          The password hash of user "${user.name}" contains a ":" character.
          This is invalid and would break the login system because the fields
          of /etc/shadow (file where hashes are stored) are colon-separated.
          Please check the value of option `users.users."${user.name}".hashedPassword`.'';
      }
      {
        assertion = user.isNormalUser && user.uid != null -> user.uid >= 1000;
        message = ''
          A user cannot have a users.users.${user.name}.uid set below 1000 and set users.users.${user.name}.isNormalUser.
          Either users.users.${user.name}.isSystemUser must be set to true instead of users.users.${user.name}.isNormalUser
          or users.users.${user.name}.uid must be changed to 1000 or above.
        '';
      }
      {
        assertion =
          let
            xor = a: b: a && !b || b && !a;
            isEffectivelySystemUser = user.isSystemUser || (user.uid != null && user.uid < 1000 && !user.isNormalUser);
          in xor isEffectivelySystemUser user.isNormalUser;
        message = ''
          Exactly one of users.users.${user.name}.isSystemUser and users.users.${user.name}.isNormalUser must be set.
        '';
      }
      {
        assertion = user.group != "";
        message = ''
          users.users.${user.name}.group is unset. This used to default to
          nogroup, but this is unsafe. For example you can create a group
          for this user with:
          users.users.${user.name}.group = "${user.name}";
          users.groups.${user.name} = {};
        '';
      }
    ]) cfg.users);

    warnings = lib.concatMap (user:
      lib.optional (lib.length (builtins.filter (o: user.${o} != null) passwordOptions) > 1) ''
        The user '${user.name}' has multiple of the options
        `initialHashedPassword`, `hashedPassword`, `initialPassword`, `password`
        & `hashedPasswordFile` set to a non-null value.

        If multiple of these password options are set at the same time then a
        specific order of precedence is followed, which can lead to surprising
        results. The order of precedence differs depending on whether the
        {option}`users.mutableUsers` option is set.

        If the option {option}`users.mutableUsers` is
        `${lib.boolToString cfg.mutableUsers}`, then the order of precedence is as shown
        below, where values on the left are overridden by values on the right:
        ${precedence}

        The values of these options are:
        ${lib.concatMapStringsSep "\n" (o: "* users.users.\"${user.name}\".${o}: ${lib.generators.toPretty { } user.${o}}") passwordOptions}
      '') (lib.attrValues cfg.users)
    ++ builtins.filter (x: x != null) (lib.mapAttrsToList (_: user:
      if allowsLogin user.hashedPassword
        && user.hashedPassword != "" # login without password
        && builtins.match mcf user.hashedPassword == null
      then ''
        The password hash of user "${user.name}" may be invalid. You must set a
        valid hash or the user will be locked out of their account. Please
        check the value of option `users.users."${user.name}".hashedPassword`.''
      else null) cfg.users);
  };
}

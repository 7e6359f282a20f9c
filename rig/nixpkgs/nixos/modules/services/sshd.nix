# services.openssh: sshd as a unit of the system (the guest's Debian sshd,
# OpenSSH 9.2, configured by this module) with the interface of NixOS's
# nixos/modules/services/networking/ssh/sshd.nix:
#  - `settings`, a freeform submodule rendered as "Key value" lines (sorted
#    by name, null values left out, booleans as yes/no; Ciphers,
#    KexAlgorithms and Macs joined by commas, AllowUsers & co by spaces),
#    followed by the generated part (Banner, AddressFamily, Port,
#    ListenAddress, Subsystem, AuthorizedKeysFile, HostKey) and extraConfig;
#  - the old options renamed into `settings` (mkRenamedOptionModule);
#  - host keys made by sshd-keygen.service, before sshd.service (or before
#    each sshd@.service of the socket with startWhenNeeded);
#  - the configuration checked at build time (`check-sshd-config`, see
#    system.checks in etc.nix): real NixOS runs `sshd -G -T` on it.
# Like NixOS: stopIfChanged = false and KillMode=process, so open sessions
# survive a restart of sshd.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.services.openssh;

  # pkgs.formats.keyValue's value type (what `settings` accepts freely).
  atom = types.nullOr (types.oneOf [ types.bool types.int types.float types.str ]);

  mkValueString = v:
    if builtins.isInt v then toString v
    else if builtins.isString v then v
    else if v == true then "yes"
    else if v == false then "no"
    else throw "unsupported type ${builtins.typeOf v}: ${lib.generators.toPretty { } v}";

  # OpenSSH wants commas between some list values and spaces between others.
  commaSeparated = [ "Ciphers" "KexAlgorithms" "Macs" ];
  spaceSeparated = [ "AuthorizedKeysFile" "AllowGroups" "AllowUsers" "DenyGroups" "DenyUsers" ];

  renderSettings = settings: lib.concatStrings (lib.mapAttrsToList (key: val:
    let
      value =
        if builtins.isList val then
          if builtins.elem key commaSeparated then lib.concatStringsSep "," val
          else if builtins.elem key spaceSeparated then lib.concatStringsSep " " val
          else throw "list value for unknown key ${key}: ${lib.generators.toPretty { } val}"
        else val;
    in "${key} ${mkValueString value}\n") (lib.filterAttrs (_: v: v != null) settings));

  configFile = pkgs.writeText "sshd.conf-settings" (renderSettings cfg.settings);
  sshconf = pkgs.runCommand "sshd.conf-final" { extraConfig = cfg.extraConfig; passAsFile = [ "extraConfig" ]; } ''
    cat ${configFile} "$extraConfigPath" > "$out"
  '';

  # The build-time check.  Real NixOS runs its own sshd (`sshd -G -T -C
  # lport=…`).  The rig's sshd is the guest's; when the build host has one
  # (/usr/sbin/sshd, same Debian release) it is run like that, otherwise
  # check-sshd-config.py checks the file the way OpenSSH 9.2's parser does
  # (keywords, values, algorithm names from the host's `ssh -Q`) and fails
  # with sshd's messages.
  connectionSpecs =
    map (p: "lport=${toString p}") cfg.ports
    ++ lib.concatMap (la: map (p: "laddr=${la.addr},lport=${toString p}")
      (if la.port != null then [ la.port ] else cfg.ports)) cfg.listenAddresses;
  checkSshdConfig = pkgs.runCommand "check-sshd-config" {
    specs = connectionSpecs;
    checker = ./check-sshd-config.py;
  } ''
    for spec in $specs; do
      if [ -x /usr/sbin/sshd ]; then
        /usr/sbin/sshd -G -T -C "$spec" -f ${sshconf} > /dev/null
      else
        python3 "$checker" ${sshconf} "$spec"
      fi
    done
    touch "$out"
  '';

  keygenScript = lib.concatMapStrings (k: ''
    if ! [ -s "${k.path}" ]; then
        if ! [ -h "${k.path}" ]; then
            rm -f "${k.path}"
        fi
        mkdir -p "$(dirname '${k.path}')"
        chmod 0755 "$(dirname '${k.path}')"
        ssh-keygen \
          -t "${k.type}" \
          ${lib.optionalString (k ? bits) "-b ${toString k.bits}"} \
          ${lib.optionalString (k ? rounds) "-a ${toString k.rounds}"} \
          ${lib.optionalString (k ? comment) "-C '${k.comment}'"} \
          ${lib.optionalString (k ? openSSHFormat && k.openSSHFormat) "-o"} \
          -f "${k.path}" \
          -N ""
    fi
  '') cfg.hostKeys;

  sshdExe = "${pkgs.openssh}/bin/sshd";

  nullOrList = description: mkOption {
    type = types.nullOr (types.listOf types.str);
    default = null;
    inherit description;
  };

  settingsModule = { ... }: {
    freeformType = types.attrsOf atom;
    options = {
      AuthorizedPrincipalsFile = mkOption {
        type = types.nullOr types.str;
        default = "none";
        description = "File that lists principal names accepted for certificate authentication (`none`: no file).";
      };
      LogLevel = mkOption {
        type = types.nullOr (types.enum [ "QUIET" "FATAL" "ERROR" "INFO" "VERBOSE" "DEBUG" "DEBUG1" "DEBUG2" "DEBUG3" ]);
        default = "INFO";
        description = "The verbosity level of sshd's log.";
      };
      UsePAM = mkOption {
        type = types.nullOr types.bool;
        default = true;
        example = true;
        description = "Whether to enable PAM authentication.";
      };
      UseDns = mkOption {
        type = types.nullOr types.bool;
        default = false;
        description = "Whether sshd looks up the remote host name and checks that it maps back to the address.";
      };
      X11Forwarding = mkOption {
        type = types.nullOr types.bool;
        default = false;
        description = "Whether to allow X11 connections to be forwarded.";
      };
      PasswordAuthentication = mkOption {
        type = types.nullOr types.bool;
        default = true;
        description = "Specifies whether password authentication is allowed.";
      };
      PermitRootLogin = mkOption {
        type = types.nullOr (types.enum [ "yes" "without-password" "prohibit-password" "forced-commands-only" "no" ]);
        default = "prohibit-password";
        description = "Whether the root user can login using ssh.";
      };
      KbdInteractiveAuthentication = mkOption {
        type = types.nullOr types.bool;
        default = true;
        description = "Specifies whether keyboard-interactive authentication is allowed.";
      };
      GatewayPorts = mkOption {
        type = types.nullOr types.str;
        default = "no";
        description = "Whether remote hosts may connect to ports forwarded for the client.";
      };
      KexAlgorithms = mkOption {
        type = types.nullOr (types.listOf types.str);
        # NixOS's list begins with mlkem768x25519-sha256, which its own
        # OpenSSH (9.9 or later) knows; the rig's sshd is OpenSSH 9.2, which
        # would refuse that name, so the list here starts after it.
        default = [
          "sntrup761x25519-sha512"
          "sntrup761x25519-sha512@openssh.com"
          "curve25519-sha256"
          "curve25519-sha256@libssh.org"
          "diffie-hellman-group-exchange-sha256"
        ];
        description = "Allowed key exchange algorithms.";
      };
      Macs = mkOption {
        type = types.nullOr (types.listOf types.str);
        default = [ "hmac-sha2-512-etm@openssh.com" "hmac-sha2-256-etm@openssh.com" "umac-128-etm@openssh.com" ];
        description = "Allowed MACs.";
      };
      StrictModes = mkOption {
        type = types.nullOr types.bool;
        default = true;
        description = "Whether sshd should check file modes and ownership of directories.";
      };
      Ciphers = mkOption {
        type = types.nullOr (types.listOf types.str);
        default = [
          "chacha20-poly1305@openssh.com"
          "aes256-gcm@openssh.com"
          "aes128-gcm@openssh.com"
          "aes256-ctr"
          "aes192-ctr"
          "aes128-ctr"
        ];
        description = "Allowed ciphers.";
      };
      AllowUsers = nullOrList "If specified, login is allowed only for the listed users.";
      DenyUsers = nullOrList "If specified, login is denied for all listed users.";
      AllowGroups = nullOrList "If specified, login is allowed only for users of the listed groups.";
      DenyGroups = nullOrList "If specified, login is denied for all users of the listed groups.";
      # Disabled by default, since pam_motd handles this.
      PrintMotd = mkOption {
        type = types.nullOr types.bool;
        default = false;
        example = true;
        description = "Whether to enable printing /etc/motd when a user logs in interactively.";
      };
    };
  };

  renamed = from: to: lib.mkRenamedOptionModule [ "services" "openssh" from ] [ "services" "openssh" "settings" to ];
in
{
  imports = [
    (lib.mkAliasOptionModule [ "services" "sshd" "enable" ] [ "services" "openssh" "enable" ])
    (lib.mkRenamedOptionModule [ "services" "openssh" "challengeResponseAuthentication" ] [ "services" "openssh" "kbdInteractiveAuthentication" ])
    (renamed "kbdInteractiveAuthentication" "KbdInteractiveAuthentication")
    (renamed "passwordAuthentication" "PasswordAuthentication")
    (renamed "useDns" "UseDns")
    (renamed "permitRootLogin" "PermitRootLogin")
    (renamed "logLevel" "LogLevel")
    (renamed "macs" "Macs")
    (renamed "ciphers" "Ciphers")
    (renamed "kexAlgorithms" "KexAlgorithms")
    (renamed "gatewayPorts" "GatewayPorts")
    (renamed "forwardX11" "X11Forwarding")
  ];

  options.services.openssh = {
    enable = mkOption {
      type = types.bool;
      default = false;
      description = "Whether to enable the OpenSSH secure shell daemon, which allows secure remote logins.";
    };
    package = mkOption { type = types.package; default = pkgs.openssh; description = "The OpenSSH package."; };
    startWhenNeeded = mkOption {
      type = types.bool;
      default = false;
      description = "If set, sshd is socket-activated: systemd starts an instance for each incoming connection.";
    };
    allowSFTP = mkOption { type = types.bool; default = true; description = "Whether to enable the SFTP subsystem."; };
    sftpServerExecutable = mkOption {
      type = types.str;
      # NixOS: ${cfg.package}/libexec/sftp-server; the rig's is the guest's.
      default = "/usr/lib/openssh/sftp-server";
      description = "The sftp server executable (a path or internal-sftp).";
    };
    sftpFlags = mkOption { type = types.listOf types.str; default = [ ]; description = "Command line flags of sftp-server."; };
    ports = mkOption { type = types.listOf types.port; default = [ 22 ]; description = "Specifies on which ports the SSH daemon listens."; };
    openFirewall = mkOption {
      type = types.bool;
      default = true;
      description = "Whether to automatically open the specified ports in the firewall.";
    };
    listenAddresses = mkOption {
      type = types.listOf (types.submodule {
        options = {
          addr = mkOption { type = types.nullOr types.str; default = null; description = "Host, IPv4 or IPv6 address to listen to."; };
          port = mkOption { type = types.nullOr types.int; default = null; description = "Port to listen to."; };
        };
      });
      default = [ ];
      description = "Addresses and ports to listen on (ListenAddress); without a port, every port of `ports`.";
    };
    hostKeys = mkOption {
      type = types.listOf types.attrs;
      # NixOS also lists an RSA key; the rig keeps ed25519 only, because
      # generating a 4096-bit RSA key under software emulation takes long.
      default = [ { type = "ed25519"; path = "/etc/ssh/ssh_host_ed25519_key"; } ];
      description = "Host keys: { type, path, bits?, rounds?, comment?, openSSHFormat? }; generated when missing.";
    };
    banner = mkOption { type = types.nullOr types.lines; default = null; description = "Message shown before authentication."; };
    authorizedKeysFiles = mkOption { type = types.listOf types.str; default = [ ]; description = "Files from which authorized keys are read."; };
    authorizedKeysInHomedir = mkOption {
      type = types.bool;
      default = true;
      description = "Whether ~/.ssh/authorized_keys is read.";
    };
    authorizedKeysCommand = mkOption { type = types.nullOr types.str; default = null; description = "A program that looks up a user's public keys."; };
    authorizedKeysCommandUser = mkOption { type = types.str; default = "nobody"; description = "The user the AuthorizedKeysCommand runs as."; };
    settings = mkOption {
      type = types.submodule settingsModule;
      default = { };
      description = "Configuration for sshd_config(5).";
    };
    extraConfig = mkOption { type = types.lines; default = ""; description = "Verbatim contents of sshd_config."; };
  };

  config = lib.mkIf cfg.enable {
    users.users.sshd = {
      isSystemUser = true;
      group = "sshd";
      description = "SSH privilege separation user";
    };
    users.groups.sshd = { };

    environment.etc."ssh/sshd_config".source = sshconf;
    environment.systemPackages = [ cfg.package ];

    system.checks = [ checkSshdConfig ];

    systemd.sockets.sshd = lib.mkIf cfg.startWhenNeeded {
      description = "SSH Socket";
      wantedBy = [ "sockets.target" ];
      socketConfig.ListenStream =
        if cfg.listenAddresses != [ ] then
          lib.concatMap ({ addr, port }:
            if port != null then [ "${addr}:${toString port}" ]
            else map (p: "${addr}:${toString p}") cfg.ports) cfg.listenAddresses
        else cfg.ports;
      socketConfig.Accept = true;
      # Brute-force attempts must not shut the socket down.
      socketConfig.TriggerLimitIntervalSec = 0;
    };

    systemd.services."sshd@" = lib.mkIf cfg.startWhenNeeded {
      description = "SSH per-connection Daemon";
      after = [ "network.target" "sshd-keygen.service" ];
      wants = [ "sshd-keygen.service" ];
      stopIfChanged = false;
      path = [ cfg.package ];
      serviceConfig = {
        ExecStart = "-${sshdExe} -i -D -f /etc/ssh/sshd_config";
        KillMode = "process";
        StandardInput = "socket";
        StandardError = "journal";
      };
    };

    systemd.services.sshd = lib.mkIf (!cfg.startWhenNeeded) {
      description = "SSH Daemon";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" "sshd-keygen.service" ];
      wants = [ "sshd-keygen.service" ];
      stopIfChanged = false;
      path = [ cfg.package ];
      restartTriggers = [ sshconf ];
      serviceConfig = {
        ExecStart = "${sshdExe} -D -f /etc/ssh/sshd_config";
        KillMode = "process";
        Restart = "always";
        Type = "simple";
        # No RuntimeDirectory: Debian's sshd's privilege separation
        # directory /run/sshd comes from the image's tmpfiles and must outlive
        # this unit (other sshd instances need it too), as /var/empty does on NixOS.
      };
    };

    systemd.services.sshd-keygen = {
      description = "SSH Host Keys Generation";
      unitConfig.ConditionFileNotEmpty = map (k: "|!${k.path}") cfg.hostKeys;
      serviceConfig.Type = "oneshot";
      path = [ cfg.package ];
      script = keygenScript;
    };

    networking.firewall.allowedTCPPorts = lib.optionals cfg.openFirewall cfg.ports;

    security.pam.services.sshd = lib.mkIf (cfg.settings.UsePAM == true) {
      startSession = true;
      unixAuth = cfg.settings.PasswordAuthentication == true;
    };

    services.openssh.authorizedKeysFiles =
      lib.optional cfg.authorizedKeysInHomedir "%h/.ssh/authorized_keys" ++ [ "/etc/ssh/authorized_keys.d/%u" ];

    services.openssh.extraConfig = lib.mkOrder 0 ''
      Banner ${if cfg.banner == null then "none" else pkgs.writeText "ssh_banner" cfg.banner}

      AddressFamily ${if config.networking.enableIPv6 or true then "any" else "inet"}
      ${lib.concatMapStrings (port: ''
        Port ${toString port}
      '') cfg.ports}

      ${lib.concatMapStrings ({ port, addr, ... }: ''
        ListenAddress ${addr}${lib.optionalString (port != null) (":" + toString port)}
      '') cfg.listenAddresses}

      ${lib.optionalString cfg.allowSFTP ''
        Subsystem sftp ${cfg.sftpServerExecutable} ${lib.concatStringsSep " " cfg.sftpFlags}
      ''}
      AuthorizedKeysFile ${toString cfg.authorizedKeysFiles}
      ${lib.optionalString (cfg.authorizedKeysCommand != null) ''
        AuthorizedKeysCommand ${cfg.authorizedKeysCommand}
        AuthorizedKeysCommandUser ${cfg.authorizedKeysCommandUser}
      ''}

      ${lib.concatMapStrings (k: ''
        HostKey ${k.path}
      '') cfg.hostKeys}
    '';

    assertions = [
      {
        assertion = if cfg.settings.X11Forwarding == true then false else true;
        message = "cannot enable X11 forwarding without setting xauth location";
      }
      (
        # Keys that sshd reads as one (it ignores case): "(UseDns, UseDNS)".
        let
          duplicates = builtins.filter (names: lib.length names > 1)
            (lib.attrValues (builtins.groupBy lib.toLower (builtins.attrNames cfg.settings)));
        in
        {
          assertion = duplicates == [ ];
          message = "Duplicate sshd config key; does your capitalization match the option's? Duplicate keys: "
            + lib.concatMapStringsSep ", " (names: "(${lib.concatStringsSep ", " names})") duplicates;
        }
      )
    ] ++ map ({ addr, ... }: {
      assertion = addr != null;
      message = "addr must be specified in each listenAddresses entry";
    }) cfg.listenAddresses;
  };
}

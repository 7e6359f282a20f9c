# services.openssh: sshd as a unit of the system (the guest's Debian sshd
# binary, configured by this module), so a configuration can change or stop
# it like on NixOS.  Like NixOS: stopIfChanged = false and KillMode=process,
# so open sessions survive a restart of sshd.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.services.openssh;

  render = v: if builtins.isBool v then (if v then "yes" else "no") else toString v;

  sshdConfig = pkgs.writeText "sshd_config" (''
    # Written by the NixOS configuration (services.openssh).
    UsePAM yes
    AuthorizedKeysFile ${lib.concatStringsSep " " cfg.authorizedKeysFiles}
    PermitRootLogin ${cfg.permitRootLogin}
    PasswordAuthentication ${render (cfg.settings.PasswordAuthentication or true)}
    KbdInteractiveAuthentication ${render (cfg.settings.KbdInteractiveAuthentication or true)}
    PrintMotd no
    AcceptEnv LANG LC_*
    Subsystem sftp /usr/lib/openssh/sftp-server
  ''
  + lib.concatMapStrings (p: "Port ${toString p}\n") cfg.ports
  + lib.concatMapStrings (k: "HostKey ${k.path}\n") cfg.hostKeys
  + lib.concatStrings (lib.mapAttrsToList (k: v: "${k} ${render v}\n")
      (removeAttrs cfg.settings [ "PasswordAuthentication" "KbdInteractiveAuthentication" "PermitRootLogin" ]))
  + cfg.extraConfig);
in
{
  options.services.openssh = {
    enable = mkOption { type = types.bool; default = false; description = "Whether to enable the OpenSSH daemon."; };
    ports = mkOption { type = types.listOf types.port; default = [ 22 ]; description = "Ports sshd listens on."; };
    openFirewall = mkOption { type = types.bool; default = true; description = "Open the ports in the firewall."; };
    permitRootLogin = mkOption {
      type = types.enum [ "yes" "without-password" "prohibit-password" "forced-commands-only" "no" ];
      default = "prohibit-password";
      description = "Whether root may log in over SSH.";
    };
    settings = mkOption {
      type = types.attrsOf (types.oneOf [ types.bool types.int types.str ]);
      default = { };
      description = "sshd_config settings (PasswordAuthentication … ).";
    };
    hostKeys = mkOption {
      type = types.listOf (types.attrsOf types.anything);
      # NixOS also lists an RSA key; the rig keeps ed25519 only, because
      # generating a 4096-bit RSA key under software emulation takes long.
      default = [ { type = "ed25519"; path = "/etc/ssh/ssh_host_ed25519_key"; } ];
      description = "Host keys: { type, path, bits? }; generated at start when missing.";
    };
    authorizedKeysFiles = mkOption {
      type = types.listOf types.str;
      default = [ "%h/.ssh/authorized_keys" "/etc/ssh/authorized_keys.d/%u" ];
      description = "Where sshd looks for authorized keys.";
    };
    extraConfig = mkOption { type = types.lines; default = ""; description = "More sshd_config text."; };
  };

  config = lib.mkIf cfg.enable {
    environment.etc."ssh/sshd_config".source = sshdConfig;
    environment.systemPackages = [ pkgs.openssh ];

    systemd.services.sshd = {
      description = "SSH Daemon";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ];
      stopIfChanged = false;
      restartTriggers = [ sshdConfig ];
      preStart = lib.concatMapStrings (k: ''
        if ! [ -s ${k.path} ]; then
          mkdir -m 0755 -p "$(dirname ${k.path})"
          ${pkgs.openssh}/bin/ssh-keygen -t ${k.type} ${lib.optionalString (k ? bits) "-b ${toString k.bits}"} -q -f ${k.path} -N ""
        fi
      '') cfg.hostKeys;
      serviceConfig = {
        ExecStart = "${pkgs.openssh}/bin/sshd -D -f /etc/ssh/sshd_config";
        KillMode = "process";
        Restart = "always";
        Type = "simple";
        # No RuntimeDirectory: Debian's sshd's privilege separation
        # directory /run/sshd comes from the image's tmpfiles and must outlive
        # this unit (other sshd instances need it too), as /var/empty does on NixOS.
      };
    };
  };
}

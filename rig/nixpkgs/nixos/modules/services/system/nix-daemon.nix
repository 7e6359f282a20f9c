# The Nix daemon, as NixOS's nixos/modules/services/system/nix-daemon.nix
# runs it: nix-daemon.socket (wanted by sockets.target) starts
# nix-daemon.service on the first connection; restarted, not stopped, when
# nix.conf changes.  Through it a user who may not write the store (on NixOS
# every user but root) reaches it: Nix picks the daemon when it cannot write
# /nix/var/nix; nix.settings.trusted-users says who may import unsigned
# paths (`nix-copy-closure --to`).
#
# NixOS takes both units from the Nix package (systemd.packages) and the
# socket's directory from its tmpfiles.d; the mini nixpkgs writes the same
# units here and makes the directory at activation.  The rig's guest runs
# the daemon as root without build users (nix.nix).
{ config, lib, pkgs, ... }:
let
  cfg = config.nix;
  nixPackage = cfg.package;
in
{
  config = lib.mkIf cfg.enable {
    systemd.sockets.nix-daemon = {
      description = "Nix Daemon Socket";
      wantedBy = [ "sockets.target" ];
      before = [ "multi-user.target" ];
      listenStreams = [ "/nix/var/nix/daemon-socket/socket" ];
      unitConfig = {
        RequiresMountsFor = "/nix/store";
        ConditionPathIsReadWrite = "/nix/var/nix/daemon-socket";
      };
    };

    systemd.services.nix-daemon = {
      description = "Nix Daemon";
      documentation = [ "man:nix-daemon" "https://nixos.org/manual" ];
      unitConfig = {
        RequiresMountsFor = [ "/nix/store" "/nix/var" "/nix/var/nix/db" ];
        ConditionPathIsReadWrite = "/nix/var/nix/daemon-socket";
      };
      serviceConfig = {
        ExecStart = "@${nixPackage}/bin/nix-daemon nix-daemon --daemon";
        KillMode = "process";
        LimitNOFILE = 1048576;
      };
      restartTriggers = [ config.environment.etc."nix/nix.conf".source ];
      stopIfChanged = false;
    };

    system.activationScripts.nix-daemon = ''
      install -m 0755 -d /nix/var/nix/daemon-socket
    '';
  };
}

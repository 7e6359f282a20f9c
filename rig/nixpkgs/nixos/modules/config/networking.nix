{ config, lib, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.networking;
in
{
  options.networking = {
    hostName = mkOption {
      type = types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$";
      default = "nixos";
      description = "The host name of the machine.";
    };
    domain = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "The domain of the machine.";
    };
    fqdn = mkOption {
      type = types.str;
      readOnly = true;
      default = if cfg.domain != null && cfg.domain != "" then "${cfg.hostName}.${cfg.domain}" else cfg.hostName;
      description = "The fully qualified domain name.";
    };
    usePredictableInterfaceNames = mkOption {
      type = types.bool;
      default = true;
      description = "Whether to name network interfaces by their hardware position (enp0s3) rather than eth0.";
    };
    useDHCP = mkOption { type = types.bool; default = true; description = "Use DHCP on every interface."; };
    interfaces = mkOption {
      type = types.attrsOf (types.submodule {
        options.useDHCP = mkOption { type = types.nullOr types.bool; default = null; description = "Use DHCP on this interface."; };
      });
      default = { };
      description = "Per-interface settings.";
    };
    nameservers = mkOption { type = types.listOf types.str; default = [ ]; description = "DNS servers."; };
    firewall = {
      enable = mkOption { type = types.bool; default = true; description = "Whether to enable the firewall (the mini nixpkgs records it only)."; };
      allowedTCPPorts = mkOption { type = types.listOf types.port; default = [ ]; description = "Open TCP ports."; };
      allowedUDPPorts = mkOption { type = types.listOf types.port; default = [ ]; description = "Open UDP ports."; };
    };
  };

  config = {
    environment.etc.hostname.text = "${cfg.hostName}\n";
    environment.etc.hosts.text = ''
      127.0.0.1 localhost
      ::1 localhost
      127.0.0.2 ${cfg.fqdn} ${cfg.hostName}
    '';
    system.activationScripts.hostname = ''
      hostname ${lib.escapeShellArg cfg.hostName}
    '';
  };
}

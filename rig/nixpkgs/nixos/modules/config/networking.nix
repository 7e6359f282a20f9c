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

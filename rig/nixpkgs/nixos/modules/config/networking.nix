# networking.{hostName, domain, fqdn} and /etc/hosts: networking.hosts,
# networking.extraHosts and networking.hostFiles as in NixOS's
# config/networking.nix (the same file, line for line: localhost first, then
# networking.hosts by address, then extraHosts).
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.networking;

  localhostMultiple = lib.any (lib.elem "localhost") (lib.attrValues (removeAttrs cfg.hosts [ "127.0.0.1" "::1" ]));
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
    hosts = mkOption {
      type = types.attrsOf (types.listOf types.str);
      example = { "127.0.0.1" = [ "foo.bar.baz" ]; "192.168.0.2" = [ "fileserver.local" "nameserver.local" ]; };
      description = "Locally defined maps of hostnames to IP addresses.";
    };
    hostFiles = mkOption {
      type = types.listOf types.path;
      description = "Files that should be concatenated together to form /etc/hosts.";
    };
    extraHosts = mkOption {
      type = types.lines;
      default = "";
      example = "192.168.0.1 lanlocalhost";
      description = ''
        Additional verbatim entries to be appended to /etc/hosts.
        For adding hosts from derivation results, use networking.hostFiles instead.
      '';
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
    assertions = [
      {
        assertion = !localhostMultiple;
        message = ''
          `networking.hosts` maps "localhost" to something other than "127.0.0.1"
          or "::1". This will break some applications. Please use
          `networking.extraHosts` if you really want to add such a mapping.
        '';
      }
    ];

    # These entries are required for "hostname -f" and to resolve both the
    # hostname and FQDN correctly (the FQDN, canonical hostname, first).
    networking.hosts =
      let
        hostnames =
          lib.optional (cfg.hostName != "" && cfg.domain != null) "${cfg.hostName}.${cfg.domain}"
          ++ lib.optional (cfg.hostName != "") cfg.hostName;
      in
      { "127.0.0.2" = hostnames; } // lib.optionalAttrs cfg.enableIPv6 { "::1" = hostnames; };

    networking.hostFiles =
      let
        # localhost first, so that 127.0.0.1 resolves back to "localhost".
        localhostHosts = pkgs.writeText "localhost-hosts" ''
          127.0.0.1 localhost
          ${lib.optionalString cfg.enableIPv6 "::1 localhost"}
        '';
        stringHosts =
          let
            oneToString = set: ip: ip + " " + lib.concatStringsSep " " set.${ip} + "\n";
            allToString = set: lib.concatMapStrings (oneToString set) (lib.attrNames set);
          in
          pkgs.writeText "string-hosts" (allToString (lib.filterAttrs (_: v: v != [ ]) cfg.hosts));
        extraHosts = pkgs.writeText "extra-hosts" cfg.extraHosts;
      in
      lib.mkBefore [ localhostHosts stringHosts extraHosts ];

    environment.etc.hosts.source = pkgs.concatText "hosts" cfg.hostFiles;
    system.activationScripts.hostname = ''
      hostname ${lib.escapeShellArg cfg.hostName}
    '';
  };
}

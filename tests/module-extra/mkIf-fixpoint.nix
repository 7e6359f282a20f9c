# `config` is a fixpoint: modules read other options while defining theirs.
# mkIf conditions are pushed down to the individual options and evaluated
# only there, so a whole-module `mkIf config.x.enable { ... }` that defines
# options next to `x` is no infinite recursion; the content of a false mkIf
# at an option is never evaluated.
{ lib }:
let
  inherit (lib) mkOption types;
  c = (lib.evalModules {
    modules = [
      ({ config, ... }: {
        options.services.web.enable = lib.mkEnableOption "the web server";
        options.services.web.port = mkOption { type = types.port; default = 8080; };
        options.services.web.tls = mkOption { type = types.bool; default = false; };
        options.networking.firewall.allowedTCPPorts = mkOption { type = types.listOf types.port; default = [ ]; };
        options.networking.hostName = mkOption { type = types.str; default = "nixos"; };
        options.motd = mkOption { type = types.str; default = "welcome to ${config.networking.hostName}"; };
      })
      ({ config, ... }: {
        networking.firewall.allowedTCPPorts = lib.mkIf config.services.web.enable [ config.services.web.port ];
      })
      # The whole module is conditional on an option it also sits next to.
      ({ config, ... }: lib.mkIf config.services.web.tls {
        services.web.port = 443;
        services.web.enable = true;
      })
      ({ config, ... }: {
        networking.hostName = lib.mkIf (config.services.web.port == 443) "secure-web";
        motd = lib.mkIf false (throw "never evaluated");
      })
      { services.web.tls = true; }
    ];
  }).config;
in
{
  inherit (c) motd;
  ports = c.networking.firewall.allowedTCPPorts;
  host = c.networking.hostName;
  enabled = c.services.web.enable;
}

# networking.nat: the options and checks of NixOS's
# services/networking/nat.nix, applied as nat-iptables.nix applies them
# (the default backend): with the firewall enabled, the NAT rules are set up
# by the firewall's extraCommands and removed by its extraStopCommands (a NAT
# that cannot be set up fails the firewall); with the firewall disabled, by
# nat.service.  The guest has no iptables: the rules are nft's, in a table
# `ip nixos-nat` (chains pre, post, out as nixos-nat-pre/-post/-out).
# IP forwarding is switched on by the setup (NixOS: boot.kernel.sysctl).
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.networking.nat;

  fwdOpts = {
    options = {
      sourcePort = mkOption {
        type = types.either types.port (types.strMatching "[[:digit:]]+:[[:digit:]]+");
        example = 8080;
        description = "Source port of the external interface; a range as \"60000:61000\".";
      };
      destination = mkOption { type = types.str; example = "10.0.0.1:80"; description = "Forward to this IP:port (or IP:port-port)."; };
      proto = mkOption { type = types.str; default = "tcp"; example = "udp"; description = "The protocol forwarded."; };
      loopbackIPs = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "55.1.2.3" ];
        description = "Public IPs for NAT reflection: connections to them from the host or the internal network are forwarded too.";
      };
    };
  };

  isIPv6 = ip: builtins.length (lib.splitString ":" ip) > 2;
  forwards = builtins.filter (f: !(isIPv6 f.destination)) cfg.forwardPorts;

  dest = if cfg.externalIP == null then "masquerade" else "snat to ${cfg.externalIP}";
  oif = lib.optionalString (cfg.externalInterface != null) ''oifname "${cfg.externalInterface}" '';
  ports = p: builtins.replaceStrings [ ":" ] [ "-" ] (toString p);

  reflection = fwd: ip:
    let
      m = builtins.match "([0-9.]+):([0-9-]+)" fwd.destination;
      target = if m == null then throw "bad ip:ports `${fwd.destination}'" else m;
    in ''
      add rule ip nixos-nat out ip daddr ${ip} ${fwd.proto} dport ${ports fwd.sourcePort} dnat to ${fwd.destination}
      add rule ip nixos-nat pre ip daddr ${ip} ${fwd.proto} dport ${ports fwd.sourcePort} dnat to ${fwd.destination}
      add rule ip nixos-nat post ip daddr ${builtins.elemAt target 0} ${fwd.proto} dport ${builtins.elemAt target 1} snat to ${ip}
    '';

  rules = pkgs.writeText "nixos-nat.nft" (''
    table ip nixos-nat {
      chain pre { type nat hook prerouting priority dstnat; }
      chain post { type nat hook postrouting priority srcnat; }
      chain out { type nat hook output priority -100; }
    }
  ''
  + lib.concatMapStrings (i: ''
    add rule ip nixos-nat post iifname "${i}" ${oif}${dest}
  '') cfg.internalInterfaces
  + lib.concatMapStrings (r: ''
    add rule ip nixos-nat post ip saddr ${r} ${oif}${dest}
  '') cfg.internalIPs
  + lib.concatMapStrings (fwd: ''
    add rule ip nixos-nat pre iifname "${toString cfg.externalInterface}" ${fwd.proto} dport ${ports fwd.sourcePort} dnat to ${fwd.destination}
  '' + lib.concatMapStrings (reflection fwd) fwd.loopbackIPs) forwards
  + lib.optionalString (cfg.dmzHost != null) ''
    add rule ip nixos-nat pre iifname "${cfg.externalInterface}" dnat to ${cfg.dmzHost}
  '');

  flushNat = ''
    nft delete table ip nixos-nat 2>/dev/null || true
    ${cfg.extraStopCommands}
  '';
  setupNat = ''
    echo 1 > /proc/sys/net/ipv4/conf/all/forwarding
    echo 1 > /proc/sys/net/ipv4/conf/default/forwarding
    nft -f ${rules}
    ${cfg.extraCommands}
  '';
in
{
  options.networking.nat = {
    enable = mkOption { type = types.bool; default = false; description = "Whether to enable Network Address Translation (NAT)."; };
    enableIPv6 = mkOption { type = types.bool; default = false; description = "Whether to enable IPv6 NAT (not in the rig)."; };
    internalInterfaces = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "eth0" ];
      description = "Interfaces whose packets to the external interface are rewritten.";
    };
    internalIPs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "192.168.1.0/24" ];
      description = "Address ranges whose packets to the external interface are rewritten.";
    };
    internalIPv6s = mkOption { type = types.listOf types.str; default = [ ]; description = "IPv6 ranges (not in the rig)."; };
    externalInterface = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "eth1";
      description = "The name of the external network interface.";
    };
    externalIP = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "203.0.113.123";
      description = "The address packets from the local network are rewritten to; null: the external interface's.";
    };
    externalIPv6 = mkOption { type = types.nullOr types.str; default = null; description = "IPv6 (not in the rig)."; };
    forwardPorts = mkOption {
      type = types.listOf (types.submodule fwdOpts);
      default = [ ];
      example = [ { sourcePort = 8080; destination = "10.0.0.1:80"; proto = "tcp"; } ];
      description = "Ports forwarded from the external interface to internal destinations (DNAT).";
    };
    dmzHost = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "10.0.0.1";
      description = "Where all traffic that matches no forwarding rule is forwarded.";
    };
    extraCommands = mkOption {
      type = types.lines;
      default = "";
      description = "Shell commands run by the NAT set-up.";
    };
    extraStopCommands = mkOption {
      type = types.lines;
      default = "";
      description = "Shell commands run by the NAT teardown.";
    };
  };

  config = lib.mkIf (!config.networking.nftables.enable) (lib.mkMerge [
    # As nat-iptables.nix: the firewall flushes the NAT rules whenever it
    # starts, NAT on or off.
    { networking.firewall.extraCommands = lib.mkBefore flushNat; }
    (lib.mkIf cfg.enable {
      assertions = [
        {
          assertion = cfg.enableIPv6 -> config.networking.enableIPv6 or true;
          message = "networking.nat.enableIPv6 requires networking.enableIPv6";
        }
        {
          assertion = (cfg.dmzHost != null) -> (cfg.externalInterface != null);
          message = "networking.nat.dmzHost requires networking.nat.externalInterface";
        }
        {
          assertion = (cfg.forwardPorts != [ ]) -> (cfg.externalInterface != null);
          message = "networking.nat.forwardPorts requires networking.nat.externalInterface";
        }
      ];

      networking.firewall = lib.mkIf config.networking.firewall.enable {
        extraCommands = setupNat;
        extraStopCommands = flushNat;
      };

      systemd.services = lib.mkIf (!config.networking.firewall.enable) {
        nat = {
          description = "Network Address Translation";
          wantedBy = [ "network.target" ];
          after = [ "network-pre.target" "systemd-modules-load.service" ];
          unitConfig.ConditionCapability = "CAP_NET_ADMIN";
          serviceConfig = { Type = "oneshot"; RemainAfterExit = true; };
          script = flushNat + setupNat;
          postStop = flushNat;
        };
      };
    })
  ]);
}

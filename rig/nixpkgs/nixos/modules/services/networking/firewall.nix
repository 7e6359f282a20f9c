# networking.firewall: the options of NixOS's services/networking/firewall.nix
# (names, types, defaults, apply), enforced in the rig's guest with nftables.
# With the default backend (iptables), what firewall-iptables.nix does:
# extraInputRules (an option of firewall-nftables.nix) is unused,
# extraCommands run in the start script before the final refusal,
# extraStopCommands in the stop and reload scripts, and a reload whose
# start fails prints "Failed to reload firewall... Stopping", runs the stop
# script (the firewall is then open) and exits 1.  The guest has no
# iptables: its rules are nft's, so extraCommands that call iptables fail.
#
# The ruleset is the one of NixOS's firewall-nftables.nix (table inet
# nixos-fw: rpfilter, input with policy drop, input-allow).  The unit is
# NixOS's firewall.service of firewall-iptables.nix (the default backend):
# wanted by sysinit.target, before network-pre.target, reloaded when its
# rules change, its stop removes the rules.  With networking.nftables.enable
# (backend "nftables") NixOS loads the same table from nftables.service; the
# rig names the unit so, and flushes the whole ruleset on start like NixOS's
# nftables.service does.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.networking.firewall;

  canonicalizePortList = ports: lib.unique (builtins.sort builtins.lessThan ports);

  portOptions = direction: {
    allowedTCPPorts = mkOption {
      type = types.listOf types.port;
      default = [ ];
      apply = canonicalizePortList;
      example = [ 22 80 ];
      description = "TCP ports on which ${direction} connections are accepted.";
    };
    allowedTCPPortRanges = mkOption {
      type = types.listOf (types.attrsOf types.port);
      default = [ ];
      example = [ { from = 8999; to = 9003; } ];
      description = "Ranges of TCP ports on which ${direction} connections are accepted.";
    };
    allowedUDPPorts = mkOption {
      type = types.listOf types.port;
      default = [ ];
      apply = canonicalizePortList;
      example = [ 53 ];
      description = "UDP ports on which ${direction} packets are accepted.";
    };
    allowedUDPPortRanges = mkOption {
      type = types.listOf (types.attrsOf types.port);
      default = [ ];
      example = [ { from = 60000; to = 61000; } ];
      description = "Ranges of UDP ports on which ${direction} packets are accepted.";
    };
  };

  incoming = portOptions "incoming";

  quoted = names: lib.concatMapStringsSep ", " (n: ''"${n}"'') names;

  portSet = ports: ranges:
    lib.concatStringsSep ", " (map toString ports ++ map (r: "${toString r.from}-${toString r.to}") ranges);

  allowRules = lib.concatStrings (lib.mapAttrsToList (iface: c:
    let
      match = lib.optionalString (iface != "default") ''iifname "${iface}" '';
      tcp = portSet c.allowedTCPPorts c.allowedTCPPortRanges;
      udp = portSet c.allowedUDPPorts c.allowedUDPPortRanges;
    in
    lib.optionalString (tcp != "") "    ${match}tcp dport { ${tcp} } accept\n"
    + lib.optionalString (udp != "") "    ${match}udp dport { ${udp} } accept\n"
  ) cfg.allInterfaces);

  # The iptables backend takes iptables' syntax ("--limit 1/minute
  # --limit-burst 5"), said in nft's; what else it is goes as it is (and a
  # wrong one fails the firewall's start, as iptables would).
  pingLimit =
    if cfg.backend != "iptables" then cfg.pingLimit
    else builtins.replaceStrings [ "--limit-burst " "--limit " ] [ "burst " "" ] cfg.pingLimit
      + lib.optionalString (lib.hasInfix "--limit-burst" cfg.pingLimit) " packets";

  rpfilter = lib.optionalString (cfg.checkReversePath != false) ''
    chain rpfilter {
      type filter hook prerouting priority mangle + 10; policy drop;
      meta nfproto ipv4 udp sport . udp dport { 67 . 68, 68 . 67 } accept comment "DHCPv4 client/server"
      fib saddr . mark${lib.optionalString (cfg.checkReversePath != "loose") " . iif"} oif exists accept
      jump rpfilter-allow
    ${lib.optionalString cfg.logReversePathDrops ''  log level info prefix "rpfilter drop: "''}
    }
  '';

  # One nft transaction: the table is replaced atomically (nothing leaks
  # while the rules change, as NixOS's reload with its nixos-drop chain).
  ruleset = pkgs.writeText "nixos-fw.nft" ''
    table inet nixos-fw
    delete table inet nixos-fw
    table inet nixos-fw {
    ${rpfilter}
      chain rpfilter-allow {
    ${cfg.extraReversePathFilterRules}
      }

      chain input {
        type filter hook input priority filter; policy drop;
    ${lib.optionalString (cfg.trustedInterfaces != [ ])
      "    iifname { ${quoted cfg.trustedInterfaces} } accept comment \"trusted interfaces\""}
        ct state vmap { invalid : drop, established : accept, related : accept, new : jump input-allow, untracked : jump input-allow }
    ${lib.optionalString cfg.logRefusedConnections
      ''    tcp flags syn / fin,syn,rst,ack log level info prefix "refused connection: "''}
    ${lib.optionalString (cfg.logRefusedPackets && !cfg.logRefusedUnicastsOnly) ''
        pkttype broadcast log level info prefix "refused broadcast: "
        pkttype multicast log level info prefix "refused multicast: "''}
    ${lib.optionalString cfg.logRefusedPackets
      ''    pkttype host log level info prefix "refused packet: "''}
    ${lib.optionalString cfg.rejectPackets ''
        meta l4proto tcp reject with tcp reset
        reject''}
      }

      chain input-allow {
    ${allowRules}
    ${lib.optionalString cfg.allowPing
      "    icmp type echo-request ${lib.optionalString (cfg.pingLimit != null) "limit rate ${pingLimit} "}accept comment \"allow ping\""}
        icmpv6 type != { nd-redirect, 139 } accept comment "ICMPv6 except redirects and node information queries (RFC 4890, 4.4)"
        ip6 daddr fe80::/64 udp dport 546 accept comment "DHCPv6 client"
    ${lib.optionalString (cfg.backend == "nftables") cfg.extraInputRules}
      }
    }
  '';

  unitName = if cfg.backend == "nftables" then "nftables" else "firewall";

  iptables = cfg.backend == "iptables";

  start = ''
    ${lib.optionalString (cfg.backend == "nftables") "nft flush ruleset"}
    nft -f ${ruleset}
    ${lib.optionalString iptables cfg.extraCommands}
  '';
  stop = ''
    nft delete table inet nixos-fw 2>/dev/null || true
    ${lib.optionalString iptables cfg.extraStopCommands}
  '';

  script = name: shell: text: "${pkgs.writeScript name "#!${pkgs.runtimeShell}${shell}\n${text}"}";
  startScript = script "firewall-start" " -e" start;
  stopScript = script "firewall-stop" "" stop;
  # firewall-iptables.nix's reload: a start that fails leaves no firewall.
  reload = if !iptables then start else ''
    ${cfg.extraStopCommands}
    if ! ${startScript}; then
      echo "Failed to reload firewall... Stopping"
      ${stopScript}
      exit 1
    fi
  '';
  # The firewall's own PATH (NixOS: cfg.package ++ extraPackages).
  fwPath = cfg.extraPackages;
in
{
  options.networking.nftables.enable = mkOption {
    type = types.bool;
    default = false;
    description = "Whether to enable nftables; the firewall then uses its nftables backend.";
  };

  options.networking.firewall = {
    enable = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Whether to enable the firewall: a simple stateful firewall that
        blocks connection attempts to unauthorised TCP or UDP ports.
      '';
    };
    backend = mkOption {
      type = types.enum [ "iptables" "nftables" "firewalld" ];
      default = if config.networking.nftables.enable then "nftables" else "iptables";
      description = "Underlying implementation of the firewall service (the rig uses nft for both).";
    };
    logRefusedConnections = mkOption { type = types.bool; default = true; description = "Log refused incoming connections."; };
    extraCommands = mkOption {
      type = types.lines;
      default = "";
      example = "iptables -A INPUT -p icmp -j ACCEPT";
      description = "Shell commands run by the firewall's start script (iptables backend only).";
    };
    extraStopCommands = mkOption {
      type = types.lines;
      default = "";
      example = "iptables -P INPUT ACCEPT";
      description = "Shell commands run by the firewall's stop script (iptables backend only).";
    };
    extraPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
      description = "Packages on the PATH of extraCommands.";
    };
    logRefusedPackets = mkOption { type = types.bool; default = false; description = "Log all refused incoming packets."; };
    logRefusedUnicastsOnly = mkOption {
      type = types.bool;
      default = true;
      description = "With logRefusedPackets, log only packets directed at this machine.";
    };
    rejectPackets = mkOption {
      type = types.bool;
      default = false;
      description = ''
        If set, refused packets are rejected (ICMP port unreachable, TCP
        reset) rather than dropped.
      '';
    };
    trustedInterfaces = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "enp0s2" ];
      description = "Traffic from these interfaces is accepted unconditionally; lo always is.";
    };
    allowPing = mkOption {
      type = types.bool;
      default = true;
      description = "Whether to answer incoming ICMPv4 echo requests; ICMPv6 pings are always allowed.";
    };
    pingLimit = mkOption {
      type = types.nullOr (types.separatedString " ");
      default = null;
      example = "2/second";
      description = "Rate limit of allowed pings, nftables syntax (\"2/second\").";
    };
    checkReversePath = mkOption {
      type = types.either types.bool (types.enum [ "strict" "loose" ]);
      default = true;
      description = "Reverse path filter: true or \"strict\", \"loose\", or false.";
    };
    logReversePathDrops = mkOption { type = types.bool; default = false; description = "Log packets dropped by the reverse path filter."; };
    extraInputRules = mkOption {
      type = types.lines;
      default = "";
      example = "ip6 saddr { fc00::/7, fe80::/10 } tcp dport 24800 accept";
      description = "More nftables rules at the end of the input-allow chain.";
    };
    extraReversePathFilterRules = mkOption {
      type = types.lines;
      default = "";
      description = "More nftables rules in the rpfilter-allow chain.";
    };
    interfaces = mkOption {
      default = { };
      type = types.attrsOf (types.submodule [ { options = incoming; } ]);
      description = "Interface-specific open ports.";
    };
    allInterfaces = mkOption {
      internal = true;
      visible = false;
      default = { default = lib.mapAttrs (name: _: cfg.${name}) incoming; } // cfg.interfaces;
      type = types.attrsOf (types.submodule [ { options = incoming; } ]);
      description = "All open ports.";
    };
  } // incoming;

  config = lib.mkMerge [
    # NixOS's services/networking/ssh/sshd.nix:
    #   networking.firewall.allowedTCPPorts = optionals cfg.openFirewall cfg.ports;
    # Here rather than in the rig's sshd.nix (kept by someone else); the
    # option's apply de-duplicates if sshd.nix sets it too.
    (lib.mkIf (config.services.openssh.enable && config.services.openssh.openFirewall) {
      networking.firewall.allowedTCPPorts = config.services.openssh.ports;
    })

    (lib.mkIf cfg.enable {
      assertions = [
        {
          assertion = cfg.backend != "firewalld";
          message = "the rig's mini nixpkgs has no firewalld";
        }
        {
          # firewall-nftables.nix's (the iptables backend takes "--limit …")
          assertion = cfg.backend != "nftables" || cfg.pingLimit == null || !(lib.hasPrefix "--" cfg.pingLimit);
          message = "nftables syntax like \"2/second\" should be used in networking.firewall.pingLimit";
        }
      ];

      networking.firewall.trustedInterfaces = [ "lo" ];

      systemd.services.${unitName} = {
        description = if unitName == "nftables" then "nftables firewall" else "Firewall";
        wantedBy = [ "sysinit.target" ];
        wants = [ "network-pre.target" ];
        after = [ "systemd-modules-load.service" ];
        before = [ "network-pre.target" "shutdown.target" ];
        conflicts = [ "shutdown.target" ];
        unitConfig.ConditionCapability = "CAP_NET_ADMIN";
        unitConfig.DefaultDependencies = false;
        reloadIfChanged = true;
        path = [ pkgs.nftables ] ++ fwPath;
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = "@${startScript} firewall-start";
          ExecReload = "@${script "firewall-reload" " -e" reload} firewall-reload";
          ExecStop = "@${stopScript} firewall-stop";
        };
      };
    })
  ];
}

# networking.{useDHCP, interfaces, defaultGateway, nameservers, ...}: the
# options of NixOS's tasks/network-interfaces.nix, obeyed by the rig's guest.
#
# NixOS's default is scripted networking (network-interfaces-scripted.nix:
# dhcpcd, network-setup.service, resolvconf).  The guest runs
# systemd-networkd, so the same semantics are written as networkd files:
#   - an interface does DHCP when its useDHCP says so, else when the global
#     useDHCP is true and it has no static IPv4 address (dhcpcd.nix's
#     ignoredInterfaces / network-interfaces-systemd.nix's dhcpStr);
#   - the global useDHCP = true does DHCP on every other ethernet interface
#     (networkd's 99-ethernet-default-dhcp of network-interfaces-systemd.nix);
#   - the image's fallback (80-rig-fallback.network, DHCP on en*/eth*) is
#     masked: nothing does DHCP that the configuration does not ask for;
#   - defaultGateway: a route in the network of its interface (with no
#     interface: of the interfaces whose static subnet holds it, as
#     `ip route replace default via` of network-setup.service would);
#   - /etc/resolv.conf: nameservers first, then what DHCP gives (QEMU's
#     10.0.2.3) when some interface does DHCP, as resolvconf merges them.
# Changed files are applied at activation (NixOS restarts the network units
# when a switch changes them).
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.networking;

  addrOpts = v: {
    options = {
      address = mkOption { type = types.str; description = "IPv${toString v} address of the interface."; };
      prefixLength = mkOption {
        type = types.addCheck types.int (n: n >= 0 && n <= (if v == 4 then 32 else 128));
        description = "Subnet mask of the interface, as a prefix length (${if v == 4 then "24" else "64"}).";
      };
    };
  };

  routeOpts = v: {
    options = {
      address = mkOption { type = types.str; description = "IPv${toString v} address of the network."; };
      prefixLength = mkOption {
        type = types.addCheck types.int (n: n >= 0 && n <= (if v == 4 then 32 else 128));
        description = "Prefix length of the network.";
      };
      via = mkOption { type = types.nullOr types.str; default = null; description = "IPv${toString v} address of the next hop."; };
    };
  };

  gatewayCoerce = address: { inherit address; };

  gatewayOpts = {
    options = {
      address = mkOption { type = types.str; description = "The default gateway address."; };
      interface = mkOption { type = types.nullOr types.str; default = null; example = "enp0s3"; description = "The default gateway interface."; };
      metric = mkOption { type = types.nullOr types.int; default = null; example = 42; description = "The default gateway metric/preference."; };
      source = mkOption { type = types.nullOr types.str; default = null; description = "The default source address."; };
    };
  };

  interfaceOpts = { name, ... }: {
    options = {
      name = mkOption { type = types.str; example = "eth0"; description = "Name of the interface."; };
      useDHCP = mkOption {
        type = types.nullOr types.bool;
        default = null;
        description = ''
          Whether this interface should be configured with DHCP. Overrides
          the default set by networking.useDHCP. If null (the default),
          DHCP is enabled if the interface has no IPv4 addresses configured
          with networking.interfaces.<name>.ipv4.addresses, and disabled
          otherwise.
        '';
      };
      ipv4.addresses = mkOption {
        type = types.listOf (types.submodule (addrOpts 4));
        default = [ ];
        example = [ { address = "10.0.0.1"; prefixLength = 16; } ];
        description = "List of IPv4 addresses that will be statically assigned to the interface.";
      };
      ipv6.addresses = mkOption {
        type = types.listOf (types.submodule (addrOpts 6));
        default = [ ];
        description = "List of IPv6 addresses that will be statically assigned to the interface.";
      };
      ipv4.routes = mkOption { type = types.listOf (types.submodule (routeOpts 4)); default = [ ]; description = "Static IPv4 routes of the interface."; };
      ipv6.routes = mkOption { type = types.listOf (types.submodule (routeOpts 6)); default = [ ]; description = "Static IPv6 routes of the interface."; };
      mtu = mkOption { type = types.nullOr types.int; default = null; example = 9000; description = "MTU of the interface."; };
    };
    config.name = lib.mkDefault name;
  };

  gatewayType = types.nullOr (types.coercedTo types.str gatewayCoerce (types.submodule gatewayOpts));

  interfaces = lib.attrValues cfg.interfaces;

  # dhcpcd.nix / network-interfaces-systemd.nix: an explicit useDHCP wins;
  # otherwise the global one, unless the interface has static addresses.
  doesDHCP = i: if i.useDHCP != null then i.useDHCP else cfg.useDHCP && i.ipv4.addresses == [ ];

  # --- IPv4 arithmetic, to find the interface of a gateway without one ---
  ipv4ToInt = a:
    let parts = lib.splitString "." a; in
    if builtins.length parts != 4 then null
    else lib.foldl' (acc: p: acc * 256 + lib.toInt p) 0 parts;
  pow2 = n: if n == 0 then 1 else 2 * pow2 (n - 1);
  inSubnet = gw: addr:
    let
      g = ipv4ToInt gw;
      a = ipv4ToInt addr.address;
      size = pow2 (32 - addr.prefixLength);
    in
    g != null && a != null && g / size == a / size;

  gateways = lib.filter (g: g != null) [ cfg.defaultGateway cfg.defaultGateway6 ];

  gatewayIfaces = g:
    if g.interface != null then [ g.interface ]
    else
      let holders = map (i: i.name) (lib.filter (i: lib.any (inSubnet g.address) i.ipv4.addresses) interfaces);
      in if holders != [ ] then holders else null; # null: every network of the system

  routeOf = g:
    "\n[Route]\nGateway=${g.address}\n"
    + lib.optionalString (g.metric != null) "Metric=${toString g.metric}\n"
    + lib.optionalString (g.source != null) "PreferredSource=${g.source}\n";

  gatewayRoutes = name: lib.concatMapStrings routeOf
    (lib.filter (g: let is = gatewayIfaces g; in is == null || lib.elem name is) gateways);

  ifaceNames = lib.unique (map (i: i.name) interfaces
    ++ lib.concatMap (g: lib.optionals (g.interface != null) [ g.interface ]) gateways);

  byName = lib.listToAttrs (map (i: lib.nameValuePair i.name i) interfaces);

  networkFile = name:
    let
      i = byName.${name} or null;
      dhcp = if i != null then doesDHCP i else cfg.useDHCP;
      addrs = lib.optionals (i != null) (i.ipv4.addresses ++ lib.optionals cfg.enableIPv6 i.ipv6.addresses);
      routes = lib.optionals (i != null) (i.ipv4.routes ++ lib.optionals cfg.enableIPv6 i.ipv6.routes);
    in
    ''
      # networking.interfaces.${name} (NixOS configuration)
      [Match]
      Name=${name}

    ''
    + lib.optionalString (i != null && i.mtu != null) "[Link]\nMTUBytes=${toString i.mtu}\n\n"
    + ''
      [Network]
      DHCP=${if dhcp then "yes" else "no"}
      IPv6PrivacyExtensions=kernel
    ''
    + lib.concatMapStrings (a: "Address=${a.address}/${toString a.prefixLength}\n") addrs
    + lib.concatMapStrings (r: "\n[Route]\nDestination=${r.address}/${toString r.prefixLength}\n"
        + lib.optionalString (r.via != null) "Gateway=${r.via}\n") routes
    + gatewayRoutes name;

  defaultDHCPFile = ''
    # networking.useDHCP = true: DHCP on every ethernet interface not configured otherwise
    [Match]
    Type=ether
    Kind=!*

    [Network]
    DHCP=yes
    IPv6PrivacyExtensions=kernel
  ''
  + lib.concatMapStrings routeOf (lib.filter (g: gatewayIfaces g == null) gateways);

  networkFiles =
    { "systemd/network/80-rig-fallback.network".source = "/dev/null"; }
    // lib.listToAttrs (map (n: lib.nameValuePair "systemd/network/40-${n}.network" { text = networkFile n; }) ifaceNames)
    // lib.optionalAttrs cfg.useDHCP { "systemd/network/99-ethernet-default-dhcp.network".text = defaultDHCPFile; };

  # Interfaces that ask for DHCP by name (the global useDHCP covers every
  # ethernet interface; a named one counts only if the guest has it).
  dhcpIfaces = map (i: i.name) (lib.filter doesDHCP interfaces);

  # What openresolv writes: static nameservers (resolvconf -m 1 -a static),
  # then the DHCP client's; QEMU's user network hands out 10.0.2.3.
  resolvHead = "# Generated by resolvconf\n"
    + lib.optionalString (cfg.search != [ ]) "search ${lib.concatStringsSep " " cfg.search}\n"
    + lib.concatMapStrings (ns: "nameserver ${ns}\n") cfg.nameservers;
in
{
  options.networking = {
    useDHCP = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Whether to use DHCP to obtain an IP address and other
        configuration for all network interfaces that do not have any
        manually configured IPv4 addresses.
      '';
    };
    interfaces = mkOption {
      type = types.attrsOf (types.submodule interfaceOpts);
      default = { };
      example = { eth0.ipv4.addresses = [ { address = "131.211.84.78"; prefixLength = 25; } ]; };
      description = "The configuration for each network interface.";
    };
    defaultGateway = mkOption {
      type = gatewayType;
      default = null;
      example = { address = "131.211.84.1"; interface = "enp3s0"; };
      description = ''
        The default gateway. It can be left empty if it is auto-detected
        through DHCP. It can be specified as a string or an option set
        along with a network interface.
      '';
    };
    defaultGateway6 = mkOption {
      type = gatewayType;
      default = null;
      example = { address = "2001:4d0:1e04:895::1"; interface = "enp0s3"; };
      description = "The default IPv6 gateway, as a string or an option set with a network interface.";
    };
    nameservers = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "130.161.158.4" "130.161.33.17" ];
      description = "The list of nameservers. It can be left empty if it is auto-detected through DHCP.";
    };
    search = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "example.com" "home.arpa" ];
      description = "The list of search paths used when resolving domain names.";
    };
    usePredictableInterfaceNames = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Whether to assign predictable names to network interfaces (enp0s3)
        rather than the kernel's (eth0).
      '';
    };
    enableIPv6 = mkOption { type = types.bool; default = true; description = "Whether to enable support for IPv6."; };
    useNetworkd = mkOption {
      type = types.bool;
      default = false;
      description = "Whether to configure the network with systemd-networkd rather than scripts.";
    };
  };

  config = {
    assertions =
      map (i: {
        # IFNAMSIZ: 16 bytes with the trailing null byte.
        assertion = lib.stringLength i.name < 16;
        message = ''
          The name of networking.interfaces."${i.name}" is too long, it needs to be less than 16 characters.
        '';
      }) interfaces
      ++ lib.optionals cfg.useNetworkd [
        {
          assertion = cfg.defaultGateway != null -> cfg.defaultGateway.interface != null;
          message = "networking.defaultGateway.interface is not optional when using networkd.";
        }
        {
          assertion = cfg.defaultGateway6 != null -> cfg.defaultGateway6.interface != null;
          message = "networking.defaultGateway6.interface is not optional when using networkd.";
        }
      ];

    environment.etc = networkFiles;

    # NixOS restarts its network units when a switch changes them; here:
    # systemd-networkd is restarted.  A link networkd configured and that
    # no file matches any more loses its addresses, as an interface does
    # when dhcpcd stops on NixOS; links networkd never managed are left alone.
    system.activationScripts.network-setup = {
      # udev-net-names (services/hardware/udev.nix): NICs get their names first.
      deps = [ "etc" "udev-net-names" ];
      text = ''
        sum=$(cat /etc/systemd/network/* 2>/dev/null | sha256sum | cut -d' ' -f1)
        mkdir -p /run/rig
        if [ "$(cat /run/rig/networkd-sum 2>/dev/null)" != "$sum" ]; then
          echo "applying the network configuration..."
          # Links networkd configures now: the ones it may leave behind.
          managed=""
          for f in /sys/class/net/*/ifindex; do
            if grep -qx 'ADMIN_STATE=\(configur.*\|failed\|linger\)' "/run/systemd/netif/links/$(cat "$f")" 2>/dev/null; then
              managed="$managed $(basename "$(dirname "$f")")"
            fi
          done
          # networkctl reload needs D-Bus, which the guest lacks.
          systemctl restart systemd-networkd.service
          # Wait until networkd has decided about every link, then remove
          # what an unmanaged link kept.
          for _ in $(seq 50); do
            pending=0
            for f in /sys/class/net/*/ifindex; do
              state=$(sed -n 's/^ADMIN_STATE=//p' "/run/systemd/netif/links/$(cat "$f")" 2>/dev/null)
              case "$state" in pending|initialized|"") pending=1 ;; esac
            done
            [ "$pending" = 0 ] && break
            sleep 0.1
          done
          for link in $managed; do
            f=/sys/class/net/$link/ifindex
            [ -e "$f" ] || continue
            if grep -qx ADMIN_STATE=unmanaged "/run/systemd/netif/links/$(cat "$f")" 2>/dev/null; then
              ip -4 addr flush dev "$link" scope global
              ip -6 addr flush dev "$link" scope global
            fi
          done
          echo "$sum" > /run/rig/networkd-sum
        fi
      '';
    };

    # /etc/resolv.conf is resolvconf's file, not a link into /etc/static.
    system.activationScripts.resolvconf = ''
      dhcp=${if cfg.useDHCP then "1" else "0"}
      for i in ${lib.escapeShellArgs dhcpIfaces}; do
        [ -e "/sys/class/net/$i" ] && dhcp=1
      done
      {
        printf %s ${lib.escapeShellArg resolvHead}
        [ "$dhcp" = 1 ] && echo "nameserver 10.0.2.3"
        echo "options edns0"
      } > /etc/resolv.conf.tmp
      if cmp -s /etc/resolv.conf.tmp /etc/resolv.conf; then
        rm /etc/resolv.conf.tmp
      else
        chmod 0644 /etc/resolv.conf.tmp
        mv -f /etc/resolv.conf.tmp /etc/resolv.conf
      fi
    '';
  };
}

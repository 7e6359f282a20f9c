# boot.initrd.services.udev.rules: the option of NixOS's
# services/hardware/udev.nix (udev rules of stage 1, scripted or systemd
# initrd alike). NixOS's test framework names each test NIC with one there:
#   SUBSYSTEM=="net",ACTION=="add",ATTR{address}=="52:54:00:12:01:02",NAME="eth1"
#
# The rig boots its guest image's initrd, which has no udev: of these rules
# the rig honours the ones that name a network interface by its MAC address
# (SUBSYSTEM=="net", ATTR{address}=="…", NAME="…"), at activation, before
# the network is set up: a NIC with that MAC under another name is taken
# down and renamed (the boot's activation does it before networkd
# configures the new name). Other rules are recorded, not applied.
{ config, lib, ... }:
let
  inherit (lib) mkOption types;

  rules = lib.filter (l: l != "") (lib.splitString "\n" config.boot.initrd.services.udev.rules);

  # [ mac name ] of a naming rule, or null.
  naming = line:
    let
      net = builtins.match ''.*SUBSYSTEM=="net".*'' line;
      mac = builtins.match ''.*ATTR[{]address[}]=="([0-9a-fA-F:]+)".*'' line;
      name = builtins.match ''.*NAME="([^"]+)".*'' line;
    in
    if net != null && mac != null && name != null then [ (lib.toLower (lib.head mac)) (lib.head name) ] else null;

  names = lib.filter (n: n != null) (map naming rules);
in
{
  options.boot.initrd.services.udev.rules = mkOption {
    type = types.lines;
    default = "";
    description = ''
      udev rules to include in the initrd. The rig applies the rules that
      name a network interface by its MAC address.
    '';
  };

  config.system.activationScripts.udev-net-names = lib.mkIf (names != [ ]) ''
    # Rename in two steps (to a temporary name, then to the wanted one), so
    # two NICs may swap names.
    ifaceOf() {
      for f in /sys/class/net/*/address; do
        if [ "$(cat "$f")" = "$1" ]; then basename "$(dirname "$f")"; return; fi
      done
    }
    i=0
    ${lib.concatMapStrings (p: ''
      cur=$(ifaceOf ${lib.escapeShellArg (lib.elemAt p 0)})
      if [ -n "$cur" ] && [ "$cur" != ${lib.escapeShellArg (lib.elemAt p 1)} ]; then
        echo "renaming network interface $cur (${lib.elemAt p 0}) to ${lib.elemAt p 1}"
        ip link set dev "$cur" down
        ip link set dev "$cur" name "rigtmp$i"
      fi
      i=$((i + 1))
    '') names}
    i=0
    ${lib.concatMapStrings (p: ''
      if [ -e "/sys/class/net/rigtmp$i" ]; then
        ip link set dev "rigtmp$i" name ${lib.escapeShellArg (lib.elemAt p 1)}
      fi
      i=$((i + 1))
    '') names}
  '';
}

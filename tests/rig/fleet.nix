# Several machines' VMs on shared private LANs: what NixOS's test framework
# adds to each node (nixos/lib/testing/network.nix), restated for VMs built
# from server configurations. This is the rig's stand-in for what rehearse
# will add to each machine of a fleet (issue 14); the machinery is the
# nixpkgs' own (virtualisation.allInterfaces, nixos/lib/qemu-common.nix,
# boot.initrd.services.udev.rules, networking.extraHosts).
#
#   import ./fleet.nix { machines = { db = ./db.nix; web = ./web.nix; }; }
#   → { db = { vm; config; }; web = …; }     (config: the VM variant's)
#
# Per machine, in its VM variant (virtualisation.vmVariant):
# - its number: the rank of its name among the machines' (1, 2, …), as the
#   test framework's nodeNumber;
# - a NIC per interface of virtualisation.allInterfaces (vlans = [ 1 ] by
#   default: eth1 on VLAN 1), qemuNICFlags: MAC 52:54:00:12:<vlan>:<number>,
#   on the vde_switch whose socket directory is $QEMU_VDE_SOCKET_<vlan> when
#   the runner starts; a udev rule names it by its MAC;
# - the address of an interface with assignIP: 192.168.<vlan>.<number>/24,
#   as in the test framework, but at mkDefault priority: an address that the
#   configuration declares for that interface wins (the test framework adds
#   its own beside);
# - networking.primaryIPAddress: the first IPv4 address of the first LAN
#   interface that has one (declared or assigned; the test framework only
#   counts assigned ones), and every machine's "<primary> [<fqdn>] <hostName>"
#   in networking.extraHosts, as the test framework writes them.
# IPv6 (2001:db8:<vlan>::<number>, newer test frameworks) is left out.
{ machines, nixpkgs ? <nixpkgs> }:
let
  lib = import (nixpkgs + "/lib");
  qemu-common = import (nixpkgs + "/nixos/lib/qemu-common.nix") { inherit lib; pkgs = null; };

  names = lib.attrNames machines;
  nodeNumbers = lib.listToAttrs (lib.zipListsWith lib.nameValuePair names (lib.range 1 254));

  fleetModule = name: { config, lib, ... }:
    let
      nodeNumber = nodeNumbers.${name};
      interfaces = lib.attrValues config.virtualisation.allInterfaces;
      interfacesNumbered = lib.zipLists interfaces (lib.range 1 255);
      addressesOf = i: (config.networking.interfaces.${i.name} or { ipv4.addresses = [ ]; }).ipv4.addresses;
      withAddress = lib.filter (i: addressesOf i != [ ]) interfaces;
    in
    {
      networking.hostName = lib.mkDefault name;

      virtualisation.qemu.options = lib.flatten (lib.forEach interfacesNumbered ({ fst, snd }:
        qemu-common.qemuNICFlags snd fst.vlan nodeNumber));

      # MAC addresses for QEMU network devices are lowercase, and udev
      # string comparison is case-sensitive.
      boot.initrd.services.udev.rules = lib.concatMapStrings (i:
        ''SUBSYSTEM=="net",ACTION=="add",ATTR{address}=="${lib.toLower (qemu-common.qemuNicMac i.vlan nodeNumber)}",NAME="${i.name}"''
        + "\n") interfaces;

      networking.interfaces = lib.listToAttrs (lib.forEach (lib.filter (i: i.assignIP) interfaces) (i:
        lib.nameValuePair i.name {
          ipv4.addresses = lib.mkDefault [ { address = "192.168.${toString i.vlan}.${toString nodeNumber}"; prefixLength = 24; } ];
        }));

      networking.primaryIPAddress =
        lib.optionalString (withAddress != [ ]) (lib.head (addressesOf (lib.head withAddress))).address;

      networking.extraHosts = lib.concatMapStrings (m:
        let c = vms.${m}.config; in
        lib.optionalString (c.networking.primaryIPAddress != "") (
          "${c.networking.primaryIPAddress} "
          + lib.optionalString (c.networking.domain != null) "${c.networking.hostName}.${c.networking.domain} "
          + "${c.networking.hostName}\n")) names;
    };

  evaluated = lib.mapAttrs (name: configuration: import (nixpkgs + "/nixos") {
    configuration = {
      imports = [ configuration ];
      virtualisation.vmVariant = fleetModule name;
    };
  }) machines;

  vms = lib.mapAttrs (_: e: {
    vm = e.config.system.build.vm;
    config = e.config.virtualisation.vmVariant;
  }) evaluated;
in
vms

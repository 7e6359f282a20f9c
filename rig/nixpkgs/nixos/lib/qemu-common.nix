# QEMU-related utilities shared between various Nix expressions: the part of
# NixOS's nixos/lib/qemu-common.nix that puts VMs on the test networks.
#
#   qemuNicMac VLAN MACHINE    52:54:00:12:<vlan, 2 hex digits>:<machine, 2 hex digits>
#   qemuNICFlags NIC VLAN MACHINE
#     [ "-device virtio-net-pci,netdev=vlan<NIC>,mac=<qemuNicMac VLAN MACHINE>"
#       "-netdev vde,id=vlan<NIC>,sock=\"$QEMU_VDE_SOCKET_<VLAN>\"" ]
#
# NIC numbers the VM's NICs (1, 2, …: the netdev's id), VLAN chooses the
# switch: the run script reads the socket directory of VLAN's vde_switch from
# $QEMU_VDE_SOCKET_<VLAN> when it starts QEMU. MACHINE is the VM's number in
# the fleet (1 to 255), so that MACs are unique on a VLAN.
#
# Called as in NixOS, with `{ lib, pkgs }` (25.11) or `{ lib, stdenv }`
# (later): only lib is used.
{ lib, ... }:
let
  zeroPad = n:
    lib.optionalString (n < 16) "0"
    + (if n > 255 then throw "Can't have more than 255 nets or nodes!" else lib.toHexString n);
in
rec {
  qemuNicMac = net: machine: "52:54:00:12:${zeroPad net}:${zeroPad machine}";

  qemuNICFlags = nic: net: machine: [
    "-device virtio-net-pci,netdev=vlan${toString nic},mac=${qemuNicMac net machine}"
    ''-netdev vde,id=vlan${toString nic},sock="$QEMU_VDE_SOCKET_${toString net}"''
  ];

  qemuSerialDevice = "ttyS0";
}

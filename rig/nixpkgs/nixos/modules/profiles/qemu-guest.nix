# Common configuration for virtual machines running under QEMU (using
# virtio): the same settings as nixpkgs' nixos/modules/profiles/qemu-guest.nix
# (imported by the hardware-configuration.nix that nixos-generate-config
# writes for a VM, e.g. a VPS).
#
# In the rig these are recorded, not built: every rig machine (the VM
# runner's and rig/server's stand-in for a server) boots the kernel and
# initrd of the rig's guest image, whose initrd holds virtio_pci,
# virtio_blk and ext4, and whose root file system has the other virtio
# drivers (loaded by udev) and 9p/virtiofs (loaded by rig-store).  Nothing
# else is needed for a server stand-in: its disks are virtio-blk.
{ config, lib, ... }:

{
  boot.initrd.availableKernelModules = [ "virtio_net" "virtio_pci" "virtio_mmio" "virtio_blk" "virtio_scsi" "9p" "9pnet_virtio" ];
  boot.initrd.kernelModules = [ "virtio_balloon" "virtio_console" "virtio_rng" "virtio_gpu" ];
}

# Kernel modules a QEMU guest needs (imported by hardware-configuration.nix
# files that nixos-generate-config writes for VMs).
{ ... }:
{
  boot.initrd.availableKernelModules = [ "virtio_net" "virtio_pci" "virtio_mmio" "virtio_blk" "virtio_scsi" "9p" "9pnet_virtio" ];
  boot.initrd.kernelModules = [ "virtio_balloon" "virtio_console" "virtio_rng" ];
}

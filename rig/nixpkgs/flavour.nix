# The NixOS release this mini nixpkgs stands for. rig/nixpkgs-26.11 shares
# every other file with this one (its lib/, nixos/ and pkgs/ are links to
# these directories; Nix resolves a relative path through a linked directory
# from the link's side) and has a flavour.nix of its own.
{
  release = "25.11";
  codeName = "Xantusia";
  # How the VM runner shares host directories (the store, xchg, shared) with
  # the guest: 9p up to NixOS 25.11; virtiofs from 26.11 on (nixpkgs PR
  # #552774: a virtiofsd per shared directory, and a shared-memory backend
  # for QEMU, PR #563324).
  share = "9p";
}

# The NixOS 26.11 flavour of the rig's mini nixpkgs: rig/nixpkgs with the
# store and the other shared directories over virtiofs (see
# rig/nixpkgs/flavour.nix).
{
  release = "26.11";
  codeName = "26.11-mini";
  share = "virtiofs";
}

# The seed's default.nix ("Building the config for VM use"): the configuration
# evaluated with qemu-vm.nix added, its toplevel exposed as `vmSystem`.
{ configuration
, system ? builtins.currentSystem
}:

let
  eval = modules: import <nixpkgs/nixos/lib/eval-config.nix> {
    inherit system modules;
  };

in {

  vmSystem =
    (eval [ configuration <nixpkgs/nixos/modules/virtualisation/qemu-vm.nix> ]).config.system.build.toplevel;

}

# How rehearse evaluates a NixOS configuration for a VM, classic or flake.
#
# Modern nixpkgs: the configuration is extended with rehearse's module inside
# `virtualisation.vmVariant` (nothing of it reaches the server's own system),
# and the VM is `config.virtualisation.vmVariant.system.build.vm`, its system
# `…vmVariant.system.build.toplevel`.  nixpkgs too old for vmVariant: the
# configuration is evaluated with qemu-vm.nix added, as `nixos-rebuild
# build-vm` did then.
{ configuration ? null   # path of a configuration.nix (classic)
, flake ? null           # flake reference (flake)
, attr ? null            # nixosConfigurations attribute (flake)
, settings ? null        # path of rehearse's JSON settings for its module; null: without the module
}:
let
  withModule = settings != null;
  rehearseModule = import ./vm-module.nix { settings = builtins.fromJSON (builtins.readFile settings); };
  extraModules = if withModule then [ rehearseModule ] else [ ];

  configurationPath = /. + configuration;

  base =
    if flake != null then (builtins.getFlake flake).nixosConfigurations.${attr}
    else import <nixpkgs/nixos/lib/eval-config.nix> { modules = [ configurationPath ]; };

  modern = base ? extendModules && base.options ? virtualisation && base.options.virtualisation ? vmVariant;

  vmConfig =
    if modern then
      (base.extendModules {
        modules = map (m: { virtualisation.vmVariant = m; }) extraModules;
      }).config.virtualisation.vmVariant
    else if flake == null then
      (import <nixpkgs/nixos/lib/eval-config.nix> {
        modules = [ configurationPath <nixpkgs/nixos/modules/virtualisation/qemu-vm.nix> ] ++ extraModules;
      }).config
    else throw "nixosConfigurations.${attr} has no virtualisation.vmVariant: this nixpkgs is too old for rehearse's flake support";
in
{
  vm = vmConfig.system.build.vm;
  toplevel = vmConfig.system.build.toplevel;
  info = {
    name = vmConfig.system.name;
    hostName = vmConfig.networking.hostName;
    inherit modern;
    forwardPorts = map (f: { inherit (f) from proto; host = { inherit (f.host) address port; }; guest = { inherit (f.guest) address port; }; })
      (vmConfig.virtualisation.forwardPorts or [ ]);
  };
}

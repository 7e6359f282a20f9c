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
  rehearseModule = import ./vm-module.nix {
    settings = builtins.fromJSON (builtins.readFile settings);
    serverUsers = if modern then keyUsers else [ ];
  };
  extraModules = if withModule then [ rehearseModule ] else [ ];

  configurationPath = /. + configuration;

  base =
    if flake != null then (builtins.getFlake flake).nixosConfigurations.${attr}
    else import <nixpkgs/nixos/lib/eval-config.nix> { modules = [ configurationPath ]; };

  modern = base ? extendModules && base.options ? virtualisation && base.options.virtualisation ? vmVariant;

  # The server's own system (modern nixpkgs only: older ones have no
  # separate VM variant).
  server = base.config;
  keyUsers = builtins.filter (n:
    let keys = server.users.users.${n}.openssh.authorizedKeys or { }; in
    (keys.keys or [ ]) != [ ] || (keys.keyFiles or [ ]) != [ ]
  ) (builtins.attrNames server.users.users);

  # What the VM variant overrides of the server's settings (vm-module.nix).
  net = server.networking;
  gateway = g: if g == null then null else if builtins.isString g then g else g.address or null;
  overrides =
    (if gateway (net.defaultGateway or null) != null
     then [ "networking.defaultGateway = ${gateway net.defaultGateway}: not set in the VM (QEMU's user network routes through 10.0.2.2)" ]
     else [ ])
    ++ (if gateway (net.defaultGateway6 or null) != null
     then [ "networking.defaultGateway6 = ${gateway net.defaultGateway6}: not set in the VM" ]
     else [ ])
    ++ (let
          ifaces = builtins.attrNames (net.interfaces or { });
          eth0 = net.interfaces.eth0 or { };
          dhcp = (net.useDHCP or true) || (eth0.useDHCP or null) == true;
        in (if dhcp then [ ] else [ "networking.interfaces.eth0.useDHCP = true in the VM (its NIC on QEMU's user network)" ])
           ++ map (i: "networking.interfaces.${i}: no such interface in the VM (its NIC is eth0)")
                (builtins.filter (i: i != "eth0" && i != "lo") ifaces))
    ++ (if (server.virtualisation.forwardPorts or [ ]) != [ ]
     then [ "virtualisation.forwardPorts: replaced by rehearse's forwards, on 127.0.0.1 only" ]
     else [ ]);

  # The server's interfaces with an IPv4 address (lo and eth0, the VM's NIC
  # on QEMU's user network, apart): a fleet's LAN interface is one of them.
  lanCandidates =
    let
      ifaces = net.interfaces or { };
      addressed = builtins.filter (i: i != "eth0" && i != "lo" && (ifaces.${i}.ipv4.addresses or [ ]) != [ ])
        (builtins.attrNames ifaces);
    in map (i: { name = i; address = (builtins.head ifaces.${i}.ipv4.addresses).address; }) addressed;

  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) (server.assertions or [ ]));

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
    domain = vmConfig.networking.domain or null;
    memorySize = vmConfig.virtualisation.memorySize or null;
    lanCandidates = if modern then lanCandidates else [ ];
    inherit modern;
    overrides = if modern then overrides else [ ];
    forwardPorts = map (f: { inherit (f) from proto; host = { inherit (f.host) address port; }; guest = { inherit (f.guest) address port; }; })
      (vmConfig.virtualisation.forwardPorts or [ ]);
  };
  # The server's own system, evaluated apart from the VM's: what it would
  # refuse to build (its assertions) and warn about; its derivation, which
  # names this revision of the configuration (its files, inputs and nixpkgs)
  # for the rehearsal guard of `promote` (null when it does not evaluate);
  # and the system itself, which `promote` builds.
  # (`server` is read whole with --strict: the system itself is apart, in
  # serverToplevel, so that reading it neither evaluates every attribute of
  # the derivation nor fails on a failed assertion.)
  server =
    if modern then {
      inherit failedAssertions;
      drvPath = let r = builtins.tryEval server.system.build.toplevel.drvPath; in if r.success then r.value else null;
    } else { failedAssertions = [ ]; drvPath = null; };
  serverToplevel =
    if modern then server.system.build.toplevel
    else throw "this nixpkgs is too old for rehearse promote (no virtualisation.vmVariant)";
}

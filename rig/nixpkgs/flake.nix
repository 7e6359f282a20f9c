{
  description = "The rehearse test rig's mini nixpkgs: NixOS's VM interfaces, built without downloads";

  outputs = { self }:
    let
      lib = import ./lib;
      systems = [ "x86_64-linux" ];
    in
    {
      # As in nixpkgs' flake.nix: lib with nixosSystem, which evaluates
      # modules through nixos/lib/eval-config.nix with `system = null`
      # (the configuration names its platform: nixpkgs.hostPlatform).
      lib = lib // {
        nixosSystem = args:
          import ./nixos/lib/eval-config.nix (
            { inherit lib; system = null; }
            // args
            // {
              modules = (args.modules or [ ]) ++ [
                {
                  _file = "${self}/flake.nix";
                  system.nixos.versionSuffix =
                    ".${builtins.substring 0 8 (self.lastModifiedDate or "19700101")}.${self.shortRev or "dirty"}";
                }
              ];
            }
          );
      };

      legacyPackages = lib.genAttrs systems (system: import ./. { inherit system; });

      nixosModules.notDetected = ./nixos/modules/installer/scan/not-detected.nix;
    };
}

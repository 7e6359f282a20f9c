# The seed's server as it is (its plain `services.timesyncd.enable = true;`
# included), with the fix rehearse suggests for the VM only: the VM's value
# of timesyncd is settled under virtualisation.vmVariant, and the server's
# own system is unchanged.
{ lib, ... }:
{
  imports = [ ../fripon/configuration.nix ];

  virtualisation.vmVariant.services.timesyncd.enable = lib.mkForce false;
}

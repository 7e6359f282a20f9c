# The seed's server, fripon: the same options as the seed's configuration.nix.
{ config, pkgs, lib, ... }:

{
  imports = [
    ./hardware-configuration.nix
  ];

  boot.loader.grub.enable = true;
  boot.loader.grub.version = 2;
  boot.loader.grub.device = "/dev/vda";

  networking.hostName = "fripon";
  networking.domain = "";

  i18n.defaultLocale = "en_US.UTF-8";
  time.timeZone = "Europe/Paris";

  services.openssh.enable = true;
  services.openssh.permitRootLogin = "yes";
  services.timesyncd.enable = true;

  environment.systemPackages = with pkgs; [
    vim htop dnsutils inetutils
  ];

  users.mutableUsers = false;
  # The seed sets a password hash here; this one locks the password (no
  # password login) and lets the admin in with a key instead (its private
  # half is not anywhere: an example). With neither, NixOS refuses to build
  # the system ("Neither the root account nor any wheel user has a password
  # or SSH authorized key."). rehearse reaches the VM through a channel of
  # its own, and adds its key, in the VM only, to the users listed here.
  users.users.root.hashedPassword = "!";
  users.users.root.openssh.authorizedKeys.keys = [
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINdvGS2XehxQ8w713eaq+iyhIoRCHb2OX2egolaHX1B5 admin@laptop"
  ];

  # This value determines the NixOS release with which your system is to be
  # compatible, in order to avoid breaking some software such as database
  # servers. You should change this only after NixOS release notes say you
  # should.
  system.stateVersion = "18.09"; # Did you read the comment?
}

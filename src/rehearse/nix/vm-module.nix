# The module rehearse adds to every VM (inside virtualisation.vmVariant, so
# only the VM gets it).  It arranges login without passwords and without
# trust on first use:
#  - root accepts rehearse's per-VM client key;
#  - sshd uses the host key rehearse generated for this VM, which reaches the
#    guest through the shared directory (/tmp/shared, made anew by rehearse
#    at each start) and is installed root-owned 0600 before sshd starts, so
#    the first connection is checked against the known_hosts file rehearse
#    already wrote; then it is removed from the share, where it has no
#    business staying (the installed copy serves later sshd restarts);
#  - port forwards are given by rehearse at start (QEMU_NET_OPTS, bound to
#    127.0.0.1), so the configuration's own forwardPorts are taken over.
{ settings }:
{ config, lib, ... }:
let
  hostKey = "/etc/ssh/rehearse_host_ed25519_key";
in
{
  users.users.root.openssh.authorizedKeys.keys = [ settings.publicKey ];

  services.openssh.enable = lib.mkDefault true;
  services.openssh.hostKeys = [ { type = "ed25519"; path = hostKey; } ];

  systemd.services.sshd = lib.mkIf config.services.openssh.enable {
    preStart = lib.mkBefore ''
      if [ -s /tmp/shared/ssh_host_ed25519_key ]; then
        install -D -m 0600 -o root -g root /tmp/shared/ssh_host_ed25519_key ${hostKey}
        install -D -m 0644 -o root -g root /tmp/shared/ssh_host_ed25519_key.pub ${hostKey}.pub
        rm -f /tmp/shared/ssh_host_ed25519_key /tmp/shared/ssh_host_ed25519_key.pub
      fi
    '';
  };

  # rehearse forwards ports itself, each on 127.0.0.1 (an empty host address
  # would listen on every interface).
  virtualisation.forwardPorts = lib.mkForce [ ];
}

# The module rehearse adds to every VM (inside virtualisation.vmVariant, so
# only the VM gets it, never the server).
#
# The management channel: rehearse reaches the VM through an sshd instance
# of its own (`rehearse-sshd.service`), not through the server's sshd, so
# the server's SSH settings (root login off, other ports, AllowUsers, socket
# activation, sshd off), its firewall and its network set-up can all be
# rehearsed without cutting rehearse off — the NixOS test driver's model,
# whose backdoor shell does not depend on the services under test.
#  - it listens on guest port `settings.managementPort`, opened in the
#    firewall of the VM; rehearse forwards it from 127.0.0.1 only;
#  - it accepts only root with rehearse's per-VM key (its own
#    AuthorizedKeysFile), no passwords;
#  - its host key is the one rehearse generated and pinned for this VM; it
#    reaches the guest through the shared directory (/tmp/shared, made anew
#    by rehearse at each start), is installed root-owned 0600 before the
#    daemon starts, and is then removed from the share;
#  - its PAM service is its own (`rehearse-sshd`): OpenSSH ≥ 9.8 takes it
#    from PAMServiceName, older ones from the program's name;
#  - it is restarted by a switch only like the server's sshd (not stopped
#    first), and open sessions survive that (KillMode=process).
#
# The network: QEMU's user network hands the VM's NIC (eth0: qemu-vm.nix
# names interfaces eth0…) an address by DHCP and routes through 10.0.2.2, so
# the VM's eth0 uses DHCP and the server's default gateway is dropped,
# whatever the server declares for its own interfaces (they are not in the
# VM). `rehearse status` lists what was overridden (eval.nix).
#
# Isolation (settings.restrictNetwork, `up --isolate`): QEMU's user network
# lets a guest reach every service bound to the host's loopback, as
# 10.0.2.2 (other VMs' forwards included), and the outside. With
# virtualisation.restrictNetwork (QEMU's restrict=on) it reaches neither;
# the host's forwards to it (rehearse's channel among them) still work.
#
# A fleet's LAN (settings.lan, rehearse's lan.py): a second NIC on the
# fleet's vde hub, whose socket directory the runner reads from
# $QEMU_VDE_SOCKET_1 (as NixOS's qemu-common.nix's NIC flags do), named by a
# udev rule after the server's LAN interface (its own settings then apply
# unchanged), or eth1 with an address rehearse assigns; and every machine of
# the fleet in /etc/hosts.
#
# The server's own sshd stays as configured. For the check rehearse runs
# after each deploy, rehearse's key is added to the users the server
# already authorizes with keys (`serverUsers`), so a login through the
# server's sshd proves that these users could log in.
{ settings, serverUsers ? [ ] }:
{ config, lib, pkgs, options, ... }:
let
  port = settings.managementPort;
  pamName = "rehearse-sshd";
  hostKey = "/var/lib/rehearse/ssh_host_ed25519_key";
  openssh = pkgs.openssh;
  lan = settings.lan or null;
  hasPAMServiceName = lib.versionAtLeast (lib.getVersion openssh) "9.8";

  # sshd re-executes itself by its argv[0], which must be absolute; a link
  # named rehearse-sshd gives older OpenSSH its PAM service name.
  daemon = pkgs.runCommand "rehearse-sshd" { } ''
    mkdir -p $out/bin
    ln -s ${openssh}/bin/sshd $out/bin/${pamName}
  '';

  sshdConfig = pkgs.writeText "rehearse-sshd_config" (''
    # rehearse's management channel (the VM only; see rehearse's vm-module.nix).
    Port ${toString port}
    HostKey ${hostKey}
    PidFile /run/rehearse-sshd.pid
    AuthorizedKeysFile /etc/rehearse/authorized_keys
    AllowUsers root
    PermitRootLogin prohibit-password
    PubkeyAuthentication yes
    PasswordAuthentication no
    KbdInteractiveAuthentication no
    UsePAM yes
    UseDNS no
    PrintMotd no
    X11Forwarding no
    # `rehearse cp` (scp over SFTP): sshd's own server, no program in the guest.
    Subsystem sftp internal-sftp
  '' + lib.optionalString hasPAMServiceName ''
    PAMServiceName ${pamName}
  '');
in
{
  config = lib.mkMerge [
    {
      environment.etc."rehearse/authorized_keys" = {
        text = settings.publicKey + "\n";
        mode = "0444";
      };

      security.pam.services.${pamName} = { unixAuth = false; };

      systemd.services.rehearse-sshd = {
        description = "rehearse's management channel (sshd of the VM only)";
        wantedBy = [ "multi-user.target" ];
        after = [ "network.target" ];
        stopIfChanged = false;
        preStart = ''
          if [ -s /tmp/shared/ssh_host_ed25519_key ]; then
            install -D -m 0600 -o root -g root /tmp/shared/ssh_host_ed25519_key ${hostKey}
            install -D -m 0644 -o root -g root /tmp/shared/ssh_host_ed25519_key.pub ${hostKey}.pub
            rm -f /tmp/shared/ssh_host_ed25519_key /tmp/shared/ssh_host_ed25519_key.pub
          fi
        '';
        serviceConfig = {
          ExecStart = "${daemon}/bin/${pamName} -D -e -f ${sshdConfig}";
          KillMode = "process";
          Restart = "always";
          RestartSec = "1";
          Type = "simple";
        };
      };

      networking.firewall.allowedTCPPorts = [ port ];

      # The VM's NIC on QEMU's user network.
      networking.interfaces.eth0.useDHCP = lib.mkVMOverride true;

      users.users = lib.genAttrs serverUsers (_: { openssh.authorizedKeys.keys = [ settings.publicKey ]; });

      # rehearse forwards ports itself, each on 127.0.0.1 (an empty host address
      # would listen on every interface).
      virtualisation.forwardPorts = lib.mkForce [ ];
    }
    (lib.optionalAttrs (settings.restrictNetwork or false) {
      virtualisation.restrictNetwork = true;
    })
    (lib.optionalAttrs (lan != null) {
      virtualisation.qemu.options = [
        "-device virtio-net-pci,netdev=rehearse-lan,mac=${lan.mac}"
        ''-netdev vde,id=rehearse-lan,sock="$QEMU_VDE_SOCKET_1"''
      ];
      boot.initrd.services.udev.rules = ''
        SUBSYSTEM=="net",ACTION=="add",ATTR{address}=="${lan.mac}",NAME="${lan.interface}"
      '';
      networking.interfaces.${lan.interface}.ipv4.addresses =
        lib.mkIf (lan.address != null) [ { address = lan.address; prefixLength = 24; } ];
      networking.extraHosts = lan.hosts;
    })
    (lib.optionalAttrs (options.networking ? defaultGateway) {
      networking.defaultGateway = lib.mkVMOverride null;
    })
    (lib.optionalAttrs (options.networking ? defaultGateway6) {
      networking.defaultGateway6 = lib.mkVMOverride null;
    })
  ];
}

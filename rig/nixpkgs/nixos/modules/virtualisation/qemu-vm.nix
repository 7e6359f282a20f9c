# A VM of the configuration: the module nixos-rebuild build-vm adds, with the
# interface of nixos/modules/virtualisation/qemu-vm.nix — the same options
# and the same run-<name>-vm script variables (NIX_DISK_IMAGE, TMPDIR and
# USE_TMPDIR, SHARED_DIR, QEMU_OPTS, QEMU_NET_OPTS, QEMU_KERNEL_PARAMS).
#
# What differs, because the rig cannot build NixOS: the VM boots the kernel
# and root file system of the rig's Debian guest image (built by
# rig/image/build into /var/cache/rehearse-rig/guest); the disk image is
# created as a copy-on-write overlay of that image; the guest mounts the
# host store like NixOS does (over 9p, or over virtiofs in the 26.11
# flavour: rig/flavours/26.11), registers the closure from regInfo=,
# and activates the system named by rig.toplevel= at boot.
{ config, lib, pkgs, options, ... }:
let
  inherit (lib) mkOption types mkVMOverride;
  cfg = config.virtualisation;
  hostPkgs = pkgs;
  qemu = cfg.qemu.package;
  toplevel = config.system.build.toplevel;

  guestImage = "/var/cache/rehearse-rig/guest";

  # 9p up to NixOS 25.11; virtiofs from 26.11 on (../../../flavour.nix).
  flavour = import ../../../flavour.nix;
  virtiofs = flavour.share == "virtiofs";
  virtiofsd = hostPkgs.virtiofsd;
  shares = cfg.sharedDirectories;

  consoles = lib.concatMapStringsSep " " (c: "console=${c}") cfg.qemu.consoles;

  regInfo = hostPkgs.closureInfo { rootPaths = cfg.additionalPaths; };

  forwardPortOpts = { ... }: {
    options = {
      from = mkOption { type = types.enum [ "host" "guest" ]; default = "host"; description = "Which side listens."; };
      proto = mkOption { type = types.enum [ "tcp" "udp" ]; default = "tcp"; description = "The protocol."; };
      host.address = mkOption { type = types.str; default = ""; description = "Host address; empty means every interface."; };
      host.port = mkOption { type = types.port; description = "Host port."; };
      guest.address = mkOption { type = types.str; default = ""; description = "Guest address."; };
      guest.port = mkOption { type = types.port; description = "Guest port."; };
    };
  };

  sharedDirOpts = { ... }: {
    options = {
      source = mkOption { type = types.str; description = "The host directory (shell words allowed, as in NixOS)."; };
      target = mkOption { type = types.path; description = "Where the guest mounts it."; };
      securityModel = mkOption { type = types.enum [ "passthrough" "mapped-xattr" "mapped-file" "none" ]; default = "mapped-xattr"; description = "9p security model."; };
    };
  };

  forwardingOptions = lib.concatMapStrings ({ proto, from, host, guest, ... }:
    if from == "host"
    then "hostfwd=${proto}:${host.address}:${toString host.port}-${guest.address}:${toString guest.port},"
    else "'guestfwd=${proto}:${guest.address}:${toString guest.port}-cmd:nc ${host.address} ${toString host.port}',"
  ) cfg.forwardPorts;

  # NixOS 26.11: a virtiofsd per shared directory, each on a socket in
  # $TMPDIR, started before QEMU, which connects to them; each ends when its
  # connection closes. QEMU's guest memory must be shared with them (a memfd
  # backend).
  startVirtiofsd = ''
    # Start a virtiofsd for each shared directory.
    ${lib.concatStrings (lib.mapAttrsToList (tag: share: ''
      rm -f "$TMPDIR/virtiofsd-${tag}.sock"
      ${virtiofsd}/bin/virtiofsd --socket-path="$TMPDIR/virtiofsd-${tag}.sock" --shared-dir=${share.source} --cache=auto &
    '') shares)}
    # Wait for their sockets.
    for tag in ${lib.concatStringsSep " " (lib.attrNames shares)}; do
      i=0
      while ! test -S "$TMPDIR/virtiofsd-$tag.sock"; do
        if [ $i -ge 100 ]; then
          echo "virtiofsd for $tag did not start" >&2
          exit 1
        fi
        sleep 0.1
        i=$((i + 1))
      done
    done
  '';

  virtiofsOptions = [
    "-object memory-backend-memfd,id=mem,size=${toString cfg.memorySize}M,share=on"
    "-machine memory-backend=mem"
  ] ++ lib.concatLists (lib.mapAttrsToList (tag: share: [
    "-chardev socket,id=fs-${tag},path=\"$TMPDIR/virtiofsd-${tag}.sock\""
    "-device vhost-user-fs-pci,chardev=fs-${tag},tag=${tag}"
  ]) shares);

  # The kernel under the rig boots the guest image's; the probe and the
  # disk's backing file decide the rest at run time.
  startVM = ''
    #! ${hostPkgs.runtimeShell}

    export PATH=/usr/bin:/bin''${PATH:+:}$PATH

    set -e

    guestImage=${guestImage}

    # The rig's stand-in for NixOS's empty root file system: a copy-on-write
    # overlay of the guest image.
    createDiskImage() {
      local base
      base=$(readlink -f "$guestImage/base.qcow2") || true
      if ! test -e "$base"; then
        echo "no guest image at $guestImage (build it with rig/image/build)" >&2
        exit 1
      fi
      ${qemu}/bin/qemu-img create -q -f qcow2 -F qcow2 -b "$base" "$1"
    }

    NIX_DISK_IMAGE=$(readlink -f "''${NIX_DISK_IMAGE:-${toString cfg.diskImage}}") || test -z "$NIX_DISK_IMAGE"

    if test -n "$NIX_DISK_IMAGE" && ! test -e "$NIX_DISK_IMAGE"; then
        echo "Disk image do not exist, creating the virtualisation disk image..."
        createDiskImage "$NIX_DISK_IMAGE"
        echo "Virtualisation disk image created."
    fi

    # Boot the kernel that matches the modules on the disk: the one beside
    # the disk's base image.
    bootDir=$(dirname "$(${qemu}/bin/qemu-img info -U --output=json "$NIX_DISK_IMAGE" \
      | python3 -c 'import json, sys; print(json.load(sys.stdin).get("full-backing-filename", ""))')")
    if ! test -e "$bootDir/vmlinuz"; then
        echo "$NIX_DISK_IMAGE is not an overlay of a rig guest image" >&2
        exit 1
    fi

    # Create a directory for storing temporary data of the running VM.
    if [ -z "$TMPDIR" ] || [ -z "$USE_TMPDIR" ]; then
        TMPDIR=$(mktemp -d nix-vm.XXXXXXXXXX --tmpdir)
    fi

    # Create a directory for exchanging data with the VM.
    mkdir -p "$TMPDIR/xchg"

    # KVM only when it really runs a guest: here /dev/kvm may exist and hang
    # (the probe never hangs, and keeps its answer for the host's boot).
    if ${hostPkgs.runtimeShell} ${../../lib/kvm-probe.sh} >/dev/null 2>&1; then accel=kvm:tcg; else accel=tcg; fi

    cd "$TMPDIR"
    ${lib.optionalString virtiofs startVirtiofsd}
    # Start QEMU.
    exec ${qemu}/bin/qemu-system-x86_64 -machine accel=$accel -cpu max \
        -name ${config.system.name} \
        -m ${toString cfg.memorySize} \
        -smp ${toString cfg.cores} \
        -device virtio-rng-pci \
        ${lib.concatStringsSep " " cfg.qemu.networkingOptions} \
        ${lib.concatStringsSep " \\\n    " (if virtiofs then virtiofsOptions else lib.mapAttrsToList (tag: share:
          "-virtfs local,path=${share.source},security_model=${share.securityModel},mount_tag=${tag}")
          shares)} \
        -drive cache=writeback,file="$NIX_DISK_IMAGE",id=drive1,if=none,index=1,werror=report \
        -device virtio-blk-pci,bootindex=1,drive=drive1,serial=root \
        ${lib.concatStringsSep " \\\n    " cfg.qemu.options} \
        $QEMU_OPTS \
        "$@"
  '';
in
{
  # virtualisation.{vlans,interfaces,allInterfaces}: options only, as in
  # NixOS (the NICs are added by whoever runs the VMs together).
  imports = [ ./guest-networking-options.nix ];

  options = {
    virtualisation.memorySize = mkOption { type = types.ints.positive; default = 1024; description = "Memory of the VM in MiB."; };
    virtualisation.cores = mkOption { type = types.ints.positive; default = 1; description = "Number of virtual CPUs."; };
    virtualisation.diskSize = mkOption { type = types.ints.positive; default = 1024; description = "Disk size in MiB (the rig's disk is the guest image's size)."; };
    virtualisation.diskImage = mkOption {
      type = types.nullOr types.str;
      default = "./${config.system.name}.qcow2";
      description = "The root disk image; created at start when missing.";
    };
    virtualisation.msize = mkOption { type = types.ints.positive; default = 16384; description = "9p msize (9p only: NixOS up to 25.11)."; };
    virtualisation.graphics = mkOption {
      type = types.bool;
      default = true;
      description = "Whether the VM has a display; false adds -nographic (serial console on the terminal).";
    };
    virtualisation.forwardPorts = mkOption {
      type = types.listOf (types.submodule forwardPortOpts);
      default = [ ];
      description = "Port forwards of QEMU's user-mode network. An empty host.address listens on every interface.";
    };
    virtualisation.restrictNetwork = mkOption { type = types.bool; default = false; description = "Cut the guest off from the outside."; };
    virtualisation.sharedDirectories = mkOption {
      type = types.attrsOf (types.submodule sharedDirOpts);
      default = { };
      description = "Host directories shared with the guest, by mount tag: over 9p up to NixOS 25.11, over virtiofs (a virtiofsd each) from 26.11 on.";
    };
    virtualisation.additionalPaths = mkOption {
      type = types.listOf types.path;
      default = [ ];
      description = "Store paths registered in the guest's Nix database at boot.";
    };
    virtualisation.writableStore = mkOption { type = types.bool; default = true; description = "An overlay makes /nix/store writable."; };
    virtualisation.writableStoreUseTmpfs = mkOption { type = types.bool; default = true; description = "The overlay's upper layer is a tmpfs."; };
    virtualisation.mountHostNixStore = mkOption { type = types.bool; default = true; description = "Mount the host store over 9p."; };
    virtualisation.useBootLoader = mkOption { type = types.bool; default = false; description = "Boot through a boot loader (not supported by the rig)."; };
    virtualisation.useNixStoreImage = mkOption { type = types.bool; default = false; description = "Use a store image instead of 9p (not supported by the rig)."; };
    virtualisation.qemu = {
      package = mkOption { type = types.package; default = hostPkgs.qemu; description = "QEMU."; };
      options = mkOption { type = types.listOf types.str; default = [ ]; description = "More QEMU arguments."; };
      networkingOptions = mkOption { type = types.listOf types.str; default = [ ]; description = "QEMU network arguments."; };
      consoles = mkOption {
        type = types.listOf types.str;
        default = let c = [ "ttyS0,115200n8" "tty0" ]; in if cfg.graphics then c else lib.reverseList c;
        description = "Kernel consoles; the last one is /dev/console.";
      };
    };
  };

  config = {
    # The same overrides as NixOS's qemu-vm.nix, at the same priorities: a
    # server file's plain `services.timesyncd.enable = true` conflicts.
    services.timesyncd.enable = false;
    networking.usePredictableInterfaceNames = false;

    fileSystems = mkVMOverride {
      "/" = { device = "/dev/vda"; fsType = "ext4"; };
      "/nix/.ro-store" = if virtiofs
        then { device = "nix-store"; fsType = "virtiofs"; neededForBoot = true; }
        else { device = "nix-store"; fsType = "9p"; options = [ "trans=virtio" "version=9p2000.L" "msize=${toString cfg.msize}" "cache=loose" ]; neededForBoot = true; };
      "/nix/.rw-store" = { device = "tmpfs"; fsType = "tmpfs"; options = [ "mode=0755" ]; neededForBoot = true; };
      "/nix/store" = { device = "overlay"; fsType = "overlay"; options = [ "lowerdir=/nix/.ro-store" "upperdir=/nix/.rw-store/store" "workdir=/nix/.rw-store/work" ]; neededForBoot = true; };
      "/tmp/xchg" = if virtiofs then { device = "xchg"; fsType = "virtiofs"; }
        else { device = "xchg"; fsType = "9p"; options = [ "trans=virtio" "version=9p2000.L" ]; };
      "/tmp/shared" = if virtiofs then { device = "shared"; fsType = "virtiofs"; }
        else { device = "shared"; fsType = "9p"; options = [ "trans=virtio" "version=9p2000.L" ]; };
    };
    swapDevices = mkVMOverride [ ];
    boot.loader.grub.device = mkVMOverride "/dev/vda";
    # The rig's VM boots its kernel directly (QEMU -kernel) and never reads
    # a boot menu: switch-to-configuration switch|boot installs nothing
    # ("no boot loader to install (direct boot)").
    system.build.installBootLoader = mkVMOverride "";

    boot.postBootCommands = ''
      if [[ "$(cat /proc/cmdline)" =~ regInfo=([^ ]*) ]]; then
        nix-store --load-db < ''${BASH_REMATCH[1]}
      fi
    '';

    virtualisation.additionalPaths = [ toplevel ];

    virtualisation.sharedDirectories = {
      nix-store = lib.mkIf cfg.mountHostNixStore { source = builtins.storeDir; target = "/nix/.ro-store"; securityModel = "none"; };
      xchg = { source = ''"$TMPDIR"/xchg''; securityModel = "none"; target = "/tmp/xchg"; };
      shared = { source = ''"''${SHARED_DIR:-$TMPDIR/xchg}"''; target = "/tmp/shared"; securityModel = "none"; };
    };

    virtualisation.qemu.networkingOptions = [
      "-net nic,netdev=user.0,model=virtio"
      "-netdev user,id=user.0,${forwardingOptions}${lib.optionalString cfg.restrictNetwork "restrict=on,"}\"$QEMU_NET_OPTS\""
    ];

    virtualisation.qemu.options = lib.mkMerge [
      [
        "-kernel \"$bootDir/vmlinuz\""
        "-initrd \"$bootDir/initrd.img\""
        ''-append "$(cat ${toplevel}/kernel-params) root=/dev/vda rw regInfo=${regInfo}/registration rig.toplevel=${toplevel} ${consoles} $QEMU_KERNEL_PARAMS"''
      ]
      (lib.mkIf cfg.graphics [ "-device virtio-keyboard" "-usb" "-device usb-tablet,bus=usb-bus.0" ])
      (lib.mkIf (!cfg.graphics) [ "-nographic" ])
    ];

    system.build.vm = hostPkgs.runCommand "nixos-vm" { runner = hostPkgs.writeScript "run-nixos-vm" startVM; } ''
      mkdir -p "$out/bin"
      ln -s ${toplevel} "$out/system"
      ln -s "$runner" "$out/bin/run-${config.system.name}-vm"
    '';
  };
}

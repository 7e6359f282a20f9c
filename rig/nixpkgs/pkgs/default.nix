# The package set of the mini nixpkgs.
#
# No binary cache and no source download can be reached where the rig runs,
# so every package here is built from nothing: tiny stand-ins whose programs
# print who they are, and thin wrappers that hand over to programs of the
# Debian guest (sshd, nix, python3) or of the Debian host (qemu).  Builders
# run /bin/bash from the host, which is fine because the rig's Nix builds
# with `sandbox = false`.
{ system ? builtins.currentSystem }:
let
  lib = import ../lib;

  # The host programs a builder may use (coreutils, sed, python3 …).
  hostPath = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";

  # The script ends with a builtin on purpose: bash execs the last command
  # of `-c` in its own process, and a coreutils program closes stderr before
  # it exits; Nix 2.8 takes that EOF for the builder's end and SIGKILLs it
  # while it still runs ("failed due to signal 9"), now and then.
  runCommand = name: env: buildCommand:
    derivation ({
      inherit name system;
      builder = "/bin/bash";
      args = [ "-euc" (buildCommand + "\n:\n") ];
      PATH = hostPath;
    } // env);

  writeTextFile = { name, text, executable ? false, destination ? "" }:
    runCommand name {
      inherit text destination;
      executable = if executable then "1" else "";
      passAsFile = [ "text" ];
    } ''
      target="$out$destination"
      mkdir -p "$(dirname "$target")"
      cp "$textPath" "$target"
      if [ -n "$executable" ]; then chmod +x "$target"; fi
    '';

  writeText = name: text: writeTextFile { inherit name text; };
  writeTextDir = path: text: writeTextFile {
    name = builtins.baseNameOf path; inherit text; destination = "/${path}";
  };
  writeScript = name: text: writeTextFile { inherit name text; executable = true; };
  writeScriptBin = name: text: writeTextFile {
    inherit name text; executable = true; destination = "/bin/${name}";
  };
  writeShellScript = name: text: writeScript name ''
    #!${runtimeShell}
    ${text}
  '';
  writeShellScriptBin = name: text: writeScriptBin name ''
    #!${runtimeShell}
    ${text}
  '';

  # As nixpkgs' writeShellApplication (without its shellcheck check phase:
  # no shellcheck here): bin/NAME, strict bash, runtimeInputs on PATH.
  writeShellApplication = { name, text, runtimeInputs ? [ ] }:
    writeTextFile {
      inherit name;
      executable = true;
      destination = "/bin/${name}";
      text = ''
        #!${runtimeShell}
        set -o errexit
        set -o nounset
        set -o pipefail
      '' + lib.optionalString (runtimeInputs != [ ]) ''

        export PATH="${lib.makeBinPath runtimeInputs}:$PATH"
      '' + ''

        ${text}
      '';
    } // { meta.mainProgram = name; };

  # The guest and the host are both Debian: bash is at the same place.
  runtimeShell = "/bin/bash";

  # A merged tree of packages, like buildEnv / symlinkJoin: one symlink per
  # file, directories merged.
  buildEnv = { name, paths, pathsToLink ? [ "/" ], extraOutputsToInstall ? [ ], ignoreCollisions ? false, ... }:
    runCommand name {
      paths = map toString paths;
      pathsToLink = pathsToLink;
    } ''
      mkdir -p "$out"
      for p in $paths; do
        for sub in $pathsToLink; do
          [ -d "$p$sub" ] || continue
          (cd "$p$sub" && find . -type f -o -type l) | while read -r f; do
            rel="''${sub%/}/''${f#./}"
            mkdir -p "$(dirname "$out$rel")"
            ln -sfn "$p$rel" "$out$rel"
          done
        done
      done
    '';
  symlinkJoin = { name, paths, ... }: buildEnv { inherit name paths; };

  # trivial-builders' concatTextFile / concatText: the files, concatenated.
  concatTextFile = { name, files, executable ? false, destination ? "" }:
    runCommand name { inherit files executable destination; } ''
      file=$out$destination
      mkdir -p "$(dirname "$file")"
      cat $files > "$file"
      if [ -n "$executable" ]; then chmod +x "$file"; fi
    '';
  concatText = name: files: concatTextFile { inherit name files; };

  # Registration data for `nix-store --load-db`, as nixpkgs' closureInfo
  # makes it: `registration` (path, narHash, narSize, deriver, references)
  # and `store-paths`.  The closure comes from exportReferencesGraph.
  closureInfo = { rootPaths }:
    derivation {
      name = "closure-info";
      inherit system;
      builder = "/usr/bin/python3";
      __structuredAttrs = true;
      exportReferencesGraph.closure = rootPaths;
      args = [ ./closure-info.py ];
    };

  # A stand-in package: `bin/<name>` for each program, each printing the
  # package name and version, so a test can see which version is installed.
  standIn = { pname, version, programs ? [ pname ] }:
    runCommand "${pname}-${version}" { inherit pname version programs; } ''
      mkdir -p "$out/bin" "$out/share/${pname}"
      for p in $programs; do
        printf '#!/bin/sh\necho "%s %s (rehearse rig stand-in for %s)"\n' "$p" "$version" "$pname" > "$out/bin/$p"
        chmod +x "$out/bin/$p"
      done
      echo "$version" > "$out/share/${pname}/version"
    '' // { inherit pname version; meta.mainProgram = pname; };

  # A package whose programs hand over to a program installed elsewhere
  # (the Debian guest's /usr/sbin/sshd, the host's qemu …).
  wrapExisting = { pname, version, programs }:
    runCommand "${pname}-${version}" {
      wrappers = lib.concatStringsSep " " (lib.mapAttrsToList (n: t: "${n}=${t}") programs);
    } ''
      mkdir -p "$out/bin"
      for w in $wrappers; do
        # A link, not a script: the program sees its own name as argv[0],
        # as a real package's binary does (sshd re-executes itself by it).
        ln -s "''${w#*=}" "$out/bin/''${w%%=*}"
      done
    '' // { inherit pname version; };

  # wrapExisting for the programs of a Debian package: { "/bin" = [ "ls" … ]; … }.
  debianPrograms = { pname, version, dirs }: wrapExisting {
    inherit pname version;
    programs = lib.foldl' (acc: dir: acc // lib.genAttrs dirs.${dir} (n: "${dir}/${n}")) { } (builtins.attrNames dirs);
  };

  self = {
    inherit lib system runCommand writeTextFile writeText writeTextDir writeScript
      writeScriptBin writeShellScript writeShellScriptBin writeShellApplication runtimeShell buildEnv
      symlinkJoin closureInfo standIn concatTextFile concatText;
    runCommandLocal = runCommand;
    stdenv = {
      hostPlatform = { inherit system; isLinux = true; isx86 = true; isx86_64 = true; isAarch = false; is32bit = false; };
      buildPlatform = self.stdenv.hostPlatform;
      isLinux = true;
      inherit system;
    };
    pkgs = self;

    # The packages the seed's configuration names.
    vim = standIn { pname = "vim"; version = "9.1.0707"; programs = [ "vim" "vi" "xxd" ]; };
    htop = standIn { pname = "htop"; version = "3.3.0"; };
    dnsutils = standIn { pname = "dnsutils"; version = "9.18.28"; programs = [ "dig" "nslookup" "nsupdate" ]; };
    inetutils = standIn { pname = "inetutils"; version = "2.5"; programs = [ "telnet" "ftp" "whois" ]; };
    hello = standIn { pname = "hello"; version = "2.12.1"; };
    jq = standIn { pname = "jq"; version = "1.7.1"; };
    curl = standIn { pname = "curl"; version = "8.9.1"; };
    git = standIn { pname = "git"; version = "2.46.0"; };
    tmux = standIn { pname = "tmux"; version = "3.4"; };

    # Programs of the Debian guest, under the names NixOS modules use.
    openssh = wrapExisting {
      pname = "openssh"; version = "9.2p1";
      programs = { sshd = "/usr/sbin/sshd"; ssh-keygen = "/usr/bin/ssh-keygen"; ssh = "/usr/bin/ssh"; };
    };
    nix = wrapExisting {
      pname = "nix"; version = "2.8.0";
      programs = { nix-store = "/usr/bin/nix-store"; nix-env = "/usr/bin/nix-env"; nix-build = "/usr/bin/nix-build"; nix = "/usr/bin/nix";
        nix-copy-closure = "/usr/bin/nix-copy-closure"; nix-daemon = "/usr/bin/nix-daemon"; };
    };
    systemd = debianPrograms { pname = "systemd"; version = "252"; dirs = { "/bin" = [ "journalctl" "loginctl" "networkctl" "systemctl" "systemd-ask-password" "systemd-creds" "systemd-escape" "systemd-firstboot" "systemd-inhibit" "systemd-machine-id-setup" "systemd-notify" "systemd-repart" "systemd-sysext" "systemd-sysusers" "systemd-tmpfiles" "systemd-tty-ask-password-agent" ]; "/usr/bin" = [ "busctl" "hostnamectl" "kernel-install" "localectl" "systemd-analyze" "systemd-cat" "systemd-cgls" "systemd-cgtop" "systemd-cryptenroll" "systemd-delta" "systemd-detect-virt" "systemd-id128" "systemd-mount" "systemd-path" "systemd-run" "systemd-socket-activate" "systemd-stdio-bridge" "systemd-umount" "timedatectl" ]; }; } // {
      # As nixpkgs' systemd passthru: NixOS writes "systemd <this>" to the
      # toplevel's init-interface-version; switch-to-configuration refuses to
      # switch at runtime to a system whose value differs (exit 100).
      interfaceVersion = 2;
    };
    # The packages of NixOS's default service PATH (systemd-lib.nix): every
    # program of the guest's Debian package, at the path Debian installs it.
    coreutils = debianPrograms { pname = "coreutils"; version = "9.1"; dirs = { "/bin" = [ "cat" "chgrp" "chmod" "chown" "cp" "date" "dd" "df" "dir" "echo" "false" "ln" "ls" "mkdir" "mknod" "mktemp" "mv" "pwd" "readlink" "rm" "rmdir" "sleep" "stty" "sync" "touch" "true" "uname" "vdir" ]; "/usr/bin" = [ "[" "arch" "b2sum" "base32" "base64" "basename" "basenc" "chcon" "cksum" "comm" "csplit" "cut" "dircolors" "dirname" "du" "env" "expand" "expr" "factor" "fmt" "fold" "groups" "head" "hostid" "id" "install" "join" "link" "logname" "md5sum" "mkfifo" "nice" "nl" "nohup" "nproc" "numfmt" "od" "paste" "pathchk" "pinky" "pr" "printenv" "printf" "ptx" "realpath" "runcon" "seq" "sha1sum" "sha224sum" "sha256sum" "sha384sum" "sha512sum" "shred" "shuf" "sort" "split" "stat" "stdbuf" "sum" "tac" "tail" "tee" "test" "timeout" "tr" "truncate" "tsort" "tty" "unexpand" "uniq" "unlink" "users" "wc" "who" "whoami" "yes" ]; "/usr/sbin" = [ "chroot" ]; }; };
    findutils = debianPrograms { pname = "findutils"; version = "4.9.0"; dirs = { "/usr/bin" = [ "find" "xargs" ]; }; };
    gnugrep = debianPrograms { pname = "gnugrep"; version = "3.8"; dirs = { "/bin" = [ "egrep" "fgrep" "grep" ]; "/usr/bin" = [ "rgrep" ]; }; };
    gnused = debianPrograms { pname = "gnused"; version = "4.9"; dirs = { "/bin" = [ "sed" ]; }; };
    # visudo checks the sudoers file at build time (on the host, which has
    # Debian's sudo too: ./run and rig/host/recipe install it).
    sudo = wrapExisting {
      pname = "sudo"; version = "1.9.13p3";
      programs = { sudo = "/usr/bin/sudo"; visudo = "/usr/sbin/visudo"; };
    };
    nftables = wrapExisting { pname = "nftables"; version = "1.0.6"; programs = { nft = "/usr/sbin/nft"; }; };
    # QEMU of the host, for the VM runner.
    qemu = wrapExisting {
      pname = "qemu"; version = "7.2";
      programs = { qemu-system-x86_64 = "/usr/bin/qemu-system-x86_64"; qemu-img = "/usr/bin/qemu-img"; };
    };
    qemu_kvm = self.qemu;
    # The host's virtiofsd (the Rust one, as Debian 13 installs it), for the
    # 26.11 flavour's VM runner.
    virtiofsd = wrapExisting {
      pname = "virtiofsd"; version = "1.13.2";
      programs = { virtiofsd = "/usr/libexec/virtiofsd"; };
    };
  };
in
self

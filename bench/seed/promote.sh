#!/usr/bin/env bash
# The seed's deploy script (deploy.sh) turned toward the real server: what
# `nixos-rebuild switch --target-host TARGET` does, step by step, by hand —
# the server's own system (not vmSystem), copied, set as the system profile,
# switched to (boot entry included). Run in the directory that holds
# configuration.nix, with nixpkgs on NIX_PATH:
#
#     NIX_SSHOPTS="-p PORT -i KEY -o UserKnownHostsFile=FILE" ./promote.sh root@HOST
#
# Both nix-copy-closure and ssh reach the server with NIX_SSHOPTS. Unlike
# nixos-rebuild, each ssh step opens a connection of its own (no ControlMaster),
# as the seed's script does.

set -e

TARGET=$1
PROFILE=/nix/var/nix/profiles/system

# Build the server's system
outPath=$(nix-build '<nixpkgs/nixos>' -A system --arg configuration ./configuration.nix)
# Upload to the server
nix-copy-closure --to "$TARGET" --gzip $outPath
# Activate the new system, and make it the boot default
ssh $NIX_SSHOPTS "$TARGET" nix-env --profile "$PROFILE" --set "$outPath"
ssh $NIX_SSHOPTS "$TARGET" $outPath/bin/switch-to-configuration switch

#!/usr/bin/env bash
# The seed's deploy script, as the seed writes it (run in the directory that
# holds default.nix and configuration.nix). The bench gives ssh a key through
# its own ssh wrapper instead of a typed password; nothing else differs.

set -e

PROFILE=/nix/var/nix/profiles/system

# Build the VM system
outPath=$(nix-build -A vmSystem --arg configuration ./configuration.nix)
# Upload to the VM
NIX_SSHOPTS="-p 2221" nix-copy-closure --to "root@localhost" --gzip $outPath
# Activate the new system
ssh -p 2221 root@localhost nix-env --profile "$PROFILE" --set "$outPath"
ssh -p 2221 root@localhost $outPath/bin/switch-to-configuration test

#!/bin/sh
# Before a copy into a VM's store:
#
#   room.sh PATH...
#
# prints the bytes free for /nix/store (in a NixOS VM, its writable layer: a
# tmpfs by default), then those of PATHs that the store lacks, a line each.
df -P -B1 /nix/store | tail -n 1 | (read -r _ _ _ avail _ && echo "$avail")
nix-store --check-validity --print-invalid -- "$@"

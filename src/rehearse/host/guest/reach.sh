#!/bin/sh
# The first word with a server (promote), one round trip:
#
#   reach.sh RUNS_DIR TIMEOUT SETTLE_SCRIPT
#
# settles what an interrupted promote left pending (SETTLE_SCRIPT, i.e.
# guest/settle.sh, prints "settled …" lines and "current SYSTEM"), then
# prints "nix" when the server has Nix.
sh -c "$3" settle "$1" "$2"
command -v nix-store >/dev/null && echo nix
true

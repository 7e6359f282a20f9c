#!/bin/sh
# Starts an activation (guest/activate.sh) in the guest, and is rehearse's
# line to it for the rest of the deploy, over one SSH session:
#
#   start.sh DIR NONCE SCRIPT_BYTES REGISTRATION_BYTES ACTIVATE_ARGS [PATH...]
#
# stdin: activate.sh (SCRIPT_BYTES), then the `nix-store --dump-db` data of
# PATHs (REGISTRATION_BYTES, maybe 0), then rehearse's word, a line each:
#   confirm          the new system is healthy: SIGUSR1 to the activation,
#                    sent again until its verdict is out (a signal that came
#                    before the activation began to wait is not lost)
#   reject REASON    roll back: SIGUSR2, REASON in DIR/reject
# stdout: the activation's log (DIR/log), from its start, as it grows.
#
# PATHs (what the new closure adds) must be visible through the host store
# the VM mounts (/nix/.ro-store, under the writable overlay /nix/store): their
# registration goes to RUN_DIR/registration, which the activation loads once
# its verdict is out. One of them not visible: "@@rehearse-NONCE missing
# PATH" for each, exit 3, nothing started (rehearse copies them and starts
# again). ACTIVATE_ARGS: activate.sh's arguments, split on spaces.
set -eu
dir=$1 nonce=$2 script_bytes=$3 registration_bytes=$4 args=$5
shift 5
umask 077
mkdir -p "$dir"
# head -c reads no more than it writes: what follows stays on stdin.
head -c "$script_bytes" >"$dir/activate.sh"
if [ "$registration_bytes" -gt 0 ]; then
  head -c "$registration_bytes" >"$dir/registration.new"
  shared=no missing=0
  if grep -q ' /nix/.ro-store ' /proc/mounts; then shared=yes; fi
  for p in "$@"; do
    if [ $shared = yes ] && [ -e "/nix/.ro-store/${p#/nix/store/}" ] && [ -e "$p" ]; then :; else
      echo "@@rehearse-$nonce missing $p"
      missing=1
    fi
  done
  [ $missing = 0 ] || { rm -f "$dir/registration.new"; exit 3; }
  cat "$dir/registration.new" >>"${dir%/*}/registration"
  rm -f "$dir/registration.new"
fi
: >"$dir/log"
# shellcheck disable=SC2086 # ACTIVATE_ARGS are split on purpose
systemd-run --unit="rehearse-activate-${dir##*/}" --collect --no-ask-password --quiet --service-type=exec \
  -E LOCALE_ARCHIVE -E NIXOS_INSTALL_BOOTLOADER -E NIXOS_NO_CHECK /bin/sh "$dir/activate.sh" $args
set +e
tail -n +1 -f "$dir/log" &
follower=$!
while read -r word reason; do
  case $word in
  confirm)
    i=0
    while [ ! -s "$dir/result" ] && [ $i -lt 50 ] && kill -USR1 "$(cat "$dir/pid")" 2>/dev/null; do
      sleep 0.1
      i=$((i + 1))
    done
    ;;
  reject)
    echo "$reason" >"$dir/reject"
    kill -USR2 "$(cat "$dir/pid")" 2>/dev/null
    ;;
  esac
done
kill "$follower" 2>/dev/null

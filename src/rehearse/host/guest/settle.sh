#!/bin/sh
# Run by rehearse in the guest before it plans a deploy or a rollback:
#
#   settle.sh RUNS_DIR TIMEOUT
#
# An activation whose deployer was interrupted still waits in the guest for
# a confirmation that will not come (guest/activate.sh). The new deploy must
# not overlap it, nor plan against a system that is about to be rolled back:
# reject each pending one (it rolls back, as it would have at its timeout),
# wait up to TIMEOUT seconds for its verdict, then say what runs.
# Prints "settled ID VERDICT" per activation settled, then "current PATH".
set -u
runs=$1 timeout=$2
for p in "$runs"/*/pid; do
  d=${p%/pid}
  [ -s "$p" ] && [ ! -s "$d/result" ] || continue
  pid=$(cat "$p")
  kill -0 "$pid" 2>/dev/null || continue
  echo superseded >"$d/reject"
  kill -USR2 "$pid" 2>/dev/null
  # Rare, and short (one switch back): a plain wait loop is fine here.
  i=0
  while [ ! -s "$d/result" ] && kill -0 "$pid" 2>/dev/null && [ $i -lt $((timeout * 5)) ]; do
    sleep 0.2
    i=$((i + 1))
    # A signal that came before the script's wait began is sent again.
    [ $((i % 10)) = 0 ] && kill -USR2 "$pid" 2>/dev/null
  done
  echo "settled ${d##*/} $(cat "$d/result" 2>/dev/null || echo unknown)"
done
echo "current $(readlink -- /run/current-system)"

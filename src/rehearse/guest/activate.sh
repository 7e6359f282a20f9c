#!/bin/sh
# rehearse's activation, run inside the guest as a transient systemd unit
# (systemd-run), so a dropped SSH session cannot kill it half-way:
#
#   activate.sh DIR NEW_SYSTEM CONFIRM_TIMEOUT [GENERATION]
#
# 1. remember the running system and generation, point the system profile at
#    NEW (a new generation; or switch to GENERATION, which holds NEW: a
#    rollback) and run NEW/bin/switch-to-configuration test;
# 2. if that fails, go back to the previous generation at once;
# 3. else create DIR/canary and wait CONFIRM_TIMEOUT seconds for rehearse to
#    confirm (delete the canary, over a *fresh* SSH connection) or to reject
#    (create DIR/reject with a reason); no word in time → go back: the new
#    configuration may have cut SSH off (magic rollback, as deploy-rs does).
# Progress goes to DIR/log; the outcome to DIR/rc (switch's exit code) and
# DIR/result ("confirmed" or "rolled-back REASON RC").
set -u
dir=$1 new=$2 timeout=$3 target=${4:-}
profile=/nix/var/nix/profiles/system
exec >>"$dir/log" 2>&1

# Resolve the tools now: after the switch /run/current-system is another system.
PATH=/run/current-system/sw/bin:/nix/var/nix/profiles/default/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
# nix-env may be a link to the multi-call `nix`, which dispatches on its
# name: follow links only while they keep that name.
nixenv=$(command -v nix-env)
while [ -L "$nixenv" ]; do
  t=$(readlink "$nixenv")
  [ "$(basename "$t")" = nix-env ] || break
  case $t in /*) nixenv=$t ;; *) nixenv=$(dirname "$nixenv")/$t ;; esac
done
prev=$(readlink -f /run/current-system)
echo "$prev" >"$dir/previous"

generation() { readlink "$profile" | sed -n 's/^.*-\([0-9]*\)-link$/\1/p'; }

prevgen=$(generation)

rollback() {
  reason=$1
  echo "rehearse: rolling back to $prev ($reason)"
  bad=$(generation)
  if [ -n "$prevgen" ] && [ "$(readlink -f "$profile-$prevgen-link")" = "$prev" ]; then
    "$nixenv" -p "$profile" --switch-generation "$prevgen" >/dev/null 2>&1
  else
    "$nixenv" -p "$profile" --set "$prev"
  fi
  # A generation made by this deploy goes; an old one switched to stays.
  if [ -z "$target" ] && [ -n "$bad" ] && [ "$bad" != "$(generation)" ]; then
    "$nixenv" -p "$profile" --delete-generations "$bad" >/dev/null 2>&1
  fi
  "$prev/bin/switch-to-configuration" test
  prc=$?
  echo "rolled-back $reason $prc" >"$dir/result"
  exit 0
}

if [ -n "$target" ]; then
  set_profile() { "$nixenv" -p "$profile" --switch-generation "$target"; }
else
  set_profile() { "$nixenv" -p "$profile" --set "$new"; }
fi
if ! set_profile; then
  echo 1 >"$dir/rc"
  echo "rolled-back profile 0" >"$dir/result"
  exit 0
fi
"$new/bin/switch-to-configuration" test
rc=$?
echo "$rc" >"$dir/rc"
[ "$rc" -eq 0 ] || rollback "activation-exit-$rc"

touch "$dir/canary"
end=$(($(date +%s) + timeout))
while [ "$(date +%s)" -lt "$end" ]; do
  if [ ! -e "$dir/canary" ]; then
    echo confirmed >"$dir/result"
    exit 0
  fi
  if [ -e "$dir/reject" ]; then
    rollback "$(cat "$dir/reject")"
  fi
  sleep 0.1
done
rollback not-confirmed

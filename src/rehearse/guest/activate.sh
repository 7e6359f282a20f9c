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
# 3. else wait CONFIRM_TIMEOUT seconds for rehearse to confirm (SIGUSR1, sent
#    over a *fresh* SSH connection) or to reject (SIGUSR2, reason in
#    DIR/reject); no word in time → go back: the new configuration may have
#    cut SSH off (magic rollback, as deploy-rs does it).
# Everything goes to DIR/log, which rehearse follows; marker lines carry the
# outcome: "@@rehearse generation=N" (the profile's new generation),
# "@@rehearse rc=N" (switch's exit code) and "@@rehearse result=confirmed" or
# "@@rehearse result=rolled-back REASON RC".
# No polling loops: the guest may have one emulated CPU.
set -u
dir=$1 new=$2 timeout=$3 target=${4:-}
profile=/nix/var/nix/profiles/system
confirmed=0 rejected=0
trap 'confirmed=1' USR1
trap 'rejected=1' USR2
exec >>"$dir/log" 2>&1
echo $$ >"$dir/pid"

# Resolve the tools now: after the switch /run/current-system is another
# system. nix-env may be a link to the multi-call `nix`, which dispatches on
# its name: follow links only while they keep that name.
PATH=/run/current-system/sw/bin:/nix/var/nix/profiles/default/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
nixenv=$(command -v nix-env)
while [ -L "$nixenv" ]; do
  t=$(readlink "$nixenv")
  case $t in */nix-env) ;; *) break ;; esac
  case $t in /*) nixenv=$t ;; *) nixenv=${nixenv%/*}/$t ;; esac
done
prev=$(readlink -f /run/current-system)
echo "$prev" >"$dir/previous"

generation() {
  g=$(readlink "$profile")
  g=${g%-link}
  echo "${g##*-}"
}
prevgen=$(generation)

result() {
  echo "$*" >"$dir/result"
  echo "@@rehearse result=$*"
  exit 0
}

rollback() {
  echo "rehearse: rolling back to $prev ($1)"
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
  result "rolled-back $1 $?"
}

if [ -n "$target" ]; then
  "$nixenv" -p "$profile" --switch-generation "$target"
else
  "$nixenv" -p "$profile" --set "$new"
fi || { echo "@@rehearse rc=1"; result "rolled-back profile 0"; }
echo "@@rehearse generation=$(generation)"
"$new/bin/switch-to-configuration" test
rc=$?
echo "@@rehearse rc=$rc"
[ "$rc" -eq 0 ] || rollback "activation-exit-$rc"

# Wait for rehearse's word; a trapped signal ends `wait` at once (and
# rehearse sends it again if it came just before the wait began).
sleep "$timeout" &
sleeper=$!
while [ "$confirmed$rejected" = 00 ] && kill -0 "$sleeper" 2>/dev/null; do
  wait "$sleeper"
done
kill "$sleeper" 2>/dev/null
[ "$confirmed" = 1 ] && result confirmed
[ "$rejected" = 1 ] && rollback "$(cat "$dir/reject")"
rollback not-confirmed

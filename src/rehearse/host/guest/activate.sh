#!/bin/sh
# rehearse's activation, run inside the guest as a transient systemd unit
# (systemd-run), so a dropped SSH session cannot kill it half-way:
#
#   activate.sh [--keep-failed] DIR NONCE NEW_SYSTEM CONFIRM_TIMEOUT ACTIVATION_TIMEOUT ACTION [GENERATION|keep]
#
# ACTION is switch-to-configuration's: `test` for a VM (direct boot: no boot
# loader), `switch` or `boot` for a real server (`promote`), whose rollback
# then installs the previous system's boot entry again the same way.
# `keep` (a server's `promote --test`, as `nixos-rebuild test`): the system
# profile is not touched — no new generation, the boot menu as it was — and
# a rollback switches (test) back to the system that ran.
#
# 0. one activation at a time: an earlier activation still waiting for its
#    verdict (its deployer was interrupted) is rejected — it rolls back — and
#    this one waits for the lock it holds until that verdict;
# 1. remember the running system and generation, point the system profile at
#    NEW (a new generation; or switch to GENERATION, which holds NEW: a
#    rollback) and run NEW/bin/switch-to-configuration ACTION, for at most
#    ACTIVATION_TIMEOUT seconds;
# 2. if that fails, go back to the previous generation at once (exit 100,
#    "reboot required", changed nothing: the profile keeps NEW);
# 3. else wait CONFIRM_TIMEOUT seconds — counted from the end of the switch,
#    so a slow but healthy activation is not rolled back — for rehearse to
#    confirm (SIGUSR1, once rehearse reached the new system over a new
#    connection; guest/start.sh passes it on) or to reject (SIGUSR2, reason
#    in DIR/reject); no word in time → go back: the new
#    configuration may have cut SSH off (magic rollback, as deploy-rs does it).
# Everything goes to DIR/log, which rehearse follows; marker lines carry the
# outcome, prefixed with "@@rehearse-NONCE" (a per-activation nonce, so
# nothing a unit prints during the switch can pass for one):
# "generation=N" (the profile's new generation), "failed=UNIT…" (after a
# good switch: the units failed by then), "rc=N" (switch's exit code) and "result=confirmed" or "result=rolled-back REASON RC".
# --keep-failed (deploy --keep-failed): a failed switch, or a rejection by
# rehearse (a failed unit or check), leaves the new system in place to be
# looked at: "result=kept REASON", no rollback. No word in time (rehearse
# cannot reach the new system) still rolls back.
# No polling loops: the guest may have one emulated CPU.
set -u
keep_failed=0
[ "$1" = --keep-failed ] && keep_failed=1 && shift
dir=$1 nonce=$2 new=$3 timeout=$4 activation_timeout=$5 action=$6 target=${7:-}
case $action in test | switch | boot) ;; *) echo "activate.sh: unknown action $action" >&2; exit 2 ;; esac
keep=0
[ "$target" = keep ] && keep=1 target=
profile=/nix/var/nix/profiles/system
runs=${dir%/*}
confirmed=0 rejected=0
trap 'confirmed=1' USR1
trap 'rejected=1' USR2
exec >>"$dir/log" 2>&1
echo $$ >"$dir/pid"
mark() { echo "@@rehearse-$nonce $*"; }

# (The lock's descriptor, 9, is closed for every child: a daemon started by
# the switch must not hold it after this script's end.)
PATH=/run/current-system/sw/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin

# The system profile, changed as `nix-env -p PROFILE --set/--switch-generation/
# --delete-generations` changes it, without starting Nix (seconds under
# emulation): generation N is the link PROFILE-N-link to its system, and
# PROFILE is a relative link to the current one, replaced atomically. The
# profiles directory is a GC root of Nix, so each generation keeps its system.
profile_switch() {
  ln -sfn "${profile##*/}-$1-link" "$profile.rehearse-tmp" && mv -T "$profile.rehearse-tmp" "$profile"
}
profile_set() {
  n=0
  for l in "$profile"-*-link; do
    [ -L "$l" ] || continue
    g=${l%-link}
    g=${g##*-}
    [ "$g" -gt "$n" ] && n=$g
  done
  n=$((n + 1))
  ln -sfn "$1" "$profile-$n-link" && profile_switch "$n"
}

# 0. Take the lock. Held by another activation: that one still waits for its
# verdict (its deployer was interrupted; rehearse's settle.sh normally
# settles it before planning, this covers a race): reject it, then wait.
exec 9>"$runs/lock"
if ! flock -n 9; then
  for p in "$runs"/*/pid; do
    other=${p%/pid}
    [ "$other" = "$dir" ] || [ -s "$other/result" ] || [ ! -s "$p" ] && continue
    pid=$(cat "$p")
    kill -0 "$pid" 2>/dev/null || continue
    echo "rehearse: an earlier activation (${other##*/}) still waits for its verdict; it rolls back first"
    echo superseded >"$other/reject"
    kill -USR2 "$pid" 2>/dev/null
  done
  if ! flock -w "$activation_timeout" 9; then
    mark "rc=1"
    echo "rehearse: another activation held the lock for $activation_timeout s"
    echo "rolled-back busy 0" >"$dir/result"
    mark "result=rolled-back busy 0"
    exit 0
  fi
fi

prev=$(readlink -f /run/current-system)
echo "$prev" >"$dir/previous"

generation() {
  g=$(readlink "$profile")
  g=${g%-link}
  echo "${g##*-}"
}
prevgen=$(generation)

# NixOS does not set the system profile at boot: the system the VM runs
# (the booted one, before the first deploy) becomes a generation first, so
# that `rehearse rollback` can return to it. (A VM's: action test. A server
# that runs a system its profile does not hold ran a `promote --test`: that
# one is no generation of its.)
if [ -z "$target" ] && [ "$action" = test ] && [ $keep = 0 ] && [ "$(readlink -f "$profile" 2>/dev/null)" != "$prev" ]; then
  profile_set "$prev" && prevgen=$(generation)
fi

# The registration of the new paths that rehearse's push left (their
# `nix-store --dump-db` data, for a VM that sees them through the host
# store): loaded once the verdict is out, so starting Nix (seconds under
# emulation) is off the deploy's path. The switch needs no registration.
register() {
  [ -s "$runs/registration" ] || return 0
  mv -f "$runs/registration" "$dir/registration" \
    && nice -n 19 nix-store --load-db <"$dir/registration" \
    || echo "rehearse: registering the new paths failed" >&2
}

# The verdict is out: the lock goes (the next activation needs nothing from
# the registration), and the registration yields the CPU to anything else
# (on a VM with one emulated CPU, the next deploy's switch).
result() {
  echo "$*" >"$dir/result"
  mark "result=$*"
  exec 9>&-
  register
  exit 0
}

# A failure, kept in place when asked (--keep-failed); else rolled back.
failed() {
  if [ $keep_failed = 1 ]; then
    echo "rehearse: keeping the failed system ($1), as asked; $prev is the one to roll back to"
    result "kept $1"
  fi
  rollback "$1"
}

rollback() {
  echo "rehearse: rolling back to $prev ($1)"
  if [ $keep = 1 ]; then # the profile was not touched
    "$prev/bin/switch-to-configuration" test 9>&-
    result "rolled-back $1 $?"
  fi
  bad=$(generation)
  # A server's profile goes back to its generation even when it ran another
  # system (a `promote --test`'s); a VM's to the system that ran.
  if [ -n "$prevgen" ] && [ -L "$profile-$prevgen-link" ] \
    && { [ "$action" != test ] || [ "$(readlink -f "$profile-$prevgen-link")" = "$prev" ]; }; then
    profile_switch "$prevgen"
  else
    profile_set "$prev"
  fi
  # A generation made by this deploy goes; an old one switched to stays.
  if [ -z "$target" ] && [ -n "$bad" ] && [ "$bad" != "$(generation)" ]; then
    rm -f "$profile-$bad-link"
  fi
  if [ "$(readlink -f "$profile")" = "$prev" ]; then
    "$prev/bin/switch-to-configuration" "$action" 9>&-
    result "rolled-back $1 $?"
  fi
  # The server ran a system its profile does not hold: the boot entry goes
  # back to the profile's system, and the system that ran runs again.
  rc=0
  if [ "$action" != test ]; then "$profile/bin/switch-to-configuration" boot 9>&- || rc=$?; fi
  if [ "$action" != boot ]; then "$prev/bin/switch-to-configuration" test 9>&- || rc=$?; fi
  result "rolled-back $1 $rc"
}

if [ $keep = 1 ]; then
  :
elif [ -n "$target" ]; then
  profile_switch "$target"
else
  profile_set "$new"
fi || { mark "rc=1"; result "rolled-back profile 0"; }
# (keep: no generation of this activation's)
if [ $keep = 1 ]; then mark "generation="; else mark "generation=$(generation)"; fi
# The activation's own clock: a switch that hangs is stopped and undone.
timeout "$activation_timeout" "$new/bin/switch-to-configuration" "$action" 9>&-
rc=$?
# The first look after a good switch, taken here (no SSH round trip): the
# units that failed by now.
if [ "$rc" -eq 0 ]; then
  mark "failed=$(systemctl list-units --failed --plain --no-legend --full | awk '{printf "%s ", $1}')"
fi
mark "rc=$rc"
[ "$rc" -eq 124 ] && failed "activation-timeout-${activation_timeout}s"
# 100: the new system's init interface differs; switch-to-configuration
# changed nothing and the new system takes effect at the next boot (the
# profile keeps it, as `nixos-rebuild switch` would). Not a failure to undo.
if [ "$rc" -eq 100 ]; then
  echo "rehearse: the new system needs a reboot (switch-to-configuration exited 100); the VM still runs $prev"
  result "reboot-required 100"
fi
[ "$rc" -eq 0 ] || failed "activation-exit-$rc"

# The confirmation clock starts now. Wait for rehearse's word; a trapped
# signal ends `wait` at once (and rehearse sends it again if it came just
# before the wait began).
sleep "$timeout" 9>&- &
sleeper=$!
while [ "$confirmed$rejected" = 00 ] && kill -0 "$sleeper" 2>/dev/null; do
  wait "$sleeper"
done
kill "$sleeper" 2>/dev/null
if [ "$rejected" = 1 ]; then
  reason=$(cat "$dir/reject")
  # Superseded (an interrupted deploy's, settled) or refused: never kept.
  case $reason in superseded | "rehearse refused"*) rollback "$reason" ;; esac
  failed "$reason"
fi
[ "$confirmed" = 1 ] && result confirmed
rollback not-confirmed

#!/bin/sh
# The system's generations, for `generations` and `rollback`:
#
#   generations.sh PROFILE
#
# prints "LINK SYSTEM MTIME" per generation of PROFILE, then "current LINK",
# "running SYSTEM", "booted SYSTEM" and "booted-at MTIME" (stage 2 makes the
# link /run/booted-system at boot: its mtime is the boot's time).
profile=$1
for l in "$profile"-*-link; do
  [ -e "$l" ] || continue
  echo "$l $(readlink -f -- "$l") $(stat -c %Y -- "$l")"
done
echo "current $(readlink -- "$profile")"
echo "running $(readlink -- /run/current-system)"
echo "booted $(readlink -- /run/booted-system)"
echo "booted-at $(stat -c %Y -- /run/booted-system 2>/dev/null || echo 0)"

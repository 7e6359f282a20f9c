#!/bin/sh
# The system's generations, for `generations` and `rollback`:
#
#   generations.sh PROFILE
#
# prints "LINK SYSTEM MTIME" per generation of PROFILE, then "current LINK",
# "running SYSTEM" and "booted SYSTEM".
profile=$1
for l in "$profile"-*-link; do
  [ -e "$l" ] || continue
  echo "$l $(readlink -f -- "$l") $(stat -c %Y -- "$l")"
done
echo "current $(readlink -- "$profile")"
echo "running $(readlink -- /run/current-system)"
echo "booted $(readlink -- /run/booted-system)"

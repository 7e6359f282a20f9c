#!/bin/sh
# The first look at a system after a good switch, over a new SSH session:
#
#   look.sh wait|confirm DIR CONFIRM_SCRIPT
#
# Units failed by now: prints "failed units: UNIT…". Else "healthy" (wait:
# rehearse has more to check), or, with `confirm` (nothing more to check),
# confirms at once through CONFIRM_SCRIPT (guest/confirm.sh) in the same
# session and prints what it prints.
failed=$(systemctl list-units --failed --plain --no-legend --full | awk '{print $1}' | tr '\n' ' ')
if [ -n "$failed" ]; then
  echo "failed units: $failed"
  exit 0
fi
if [ "$1" = confirm ]; then exec sh -c "$3" confirm "$2"; fi
echo healthy

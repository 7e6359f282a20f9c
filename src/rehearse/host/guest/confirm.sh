#!/bin/sh
# Confirm a new system to its waiting activation, over a new SSH session
# (when the session that started it, guest/start.sh, is gone):
#
#   confirm.sh DIR
#
# SIGUSR1 to the activation (guest/activate.sh), sent again while no verdict
# is out (a signal that came before it began to wait is not lost); then
# prints "healthy RESULT", RESULT being the verdict (empty if not out yet).
d=$1
kill -USR1 "$(cat "$d/pid")"
i=0
while [ ! -s "$d/result" ] && [ $i -lt 50 ]; do
  sleep 0.1
  i=$((i + 1))
  [ $((i % 10)) = 0 ] && kill -USR1 "$(cat "$d/pid")" 2>/dev/null
done
echo "healthy $(cat "$d/result" 2>/dev/null)"

#!/bin/sh
# Reject a new system (its activation rolls back), over a new SSH session:
#
#   reject.sh DIR REASON
echo "$2" >"$1/reject"
kill -USR2 "$(cat "$1/pid")"

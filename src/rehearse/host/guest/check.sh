#!/bin/sh
# A `cmd` check of rehearse.toml, run in the guest or on the server:
#
#   check.sh LIMIT COMMAND
#
# Under coreutils' `timeout` when there is one, so a try that takes too long
# ends there too instead of piling up while rehearse tries again (rehearse's
# own limit, a little longer, still counts when the connection hangs).
if command -v timeout >/dev/null 2>&1; then exec timeout -k 5 "$1" sh -c "$2"; fi
exec sh -c "$2"

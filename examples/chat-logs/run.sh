#!/usr/bin/env bash
# One load of the chat logs: download what is new in the container, then merge it
# into the database. Safe to run from cron every 5 minutes: a run that overlaps the
# previous one exits 5 at once (the run lease), and a crashed run is finished by the
# next one, every row exactly once.
set -uo pipefail
cd "$(dirname "$0")"
A=${ANCHOVY_BIN:-anchovy}
"$A" start -op blob.JsonDownloader --id chat_logs -c config.yaml --compact >/dev/null
down=$?
# Upload even after a partial download: what was committed is complete.
ACHVY_CNXN__DB__URI="${ACHVY_CNXN__DB__URI:-sqlite://}" "$A" start -op sql.Uploader --id chat_warehouse -U chat_logs -c config.yaml --compact >/dev/null
up=$?
# 5 = the previous run is still going: not a failure for cron.
for c in $down $up; do
  if [ "$c" != 0 ] && [ "$c" != 5 ]; then exit "$c"; fi
done

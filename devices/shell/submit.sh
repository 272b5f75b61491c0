#!/bin/sh
# Submit one word-count task and print its result, with mosquitto clients only.
# mosquitto_rr subscribes to the reply topic, publishes the task with MQTT 5
# Response Topic + Correlation Data, and prints the one result it waits for.
#
#   HOST=127.0.0.1 PORT=1883 ./submit.sh Fables
#   SWARMQ_USERNAME=dev1 SWARMQ_PASSWORD=sqt_... ./submit.sh Fables   # as an identity
set -eu
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-1883}
WORD=${1:-Fables}
set --
REPLY="replies/shell-$$"
if [ -n "${SWARMQ_USERNAME:-}" ]; then
  # An identity reads its replies under replies/<name>/ only.
  set -- -u "$SWARMQ_USERNAME" -P "${SWARMQ_PASSWORD:-}" -i "$SWARMQ_USERNAME:submit-$$"
  REPLY="replies/$SWARMQ_USERNAME/shell-$$"
fi
[ -n "${CAFILE:-}" ] && set -- "$@" --cafile "$CAFILE"

mosquitto_rr -h "$HOST" -p "$PORT" "$@" -q 1 -W 30 \
  -t tasks/word_count -e "$REPLY" \
  -m "{\"task\":\"mapper\",\"args\":[\"$WORD\"]}"

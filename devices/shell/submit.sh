#!/bin/sh
# Submit one word-count task and print its result, with mosquitto clients only.
# mosquitto_rr subscribes to the reply topic, publishes the task with MQTT 5
# Response Topic + Correlation Data, and prints the one result it waits for.
#
#   HOST=127.0.0.1 PORT=1883 ./submit.sh Fables
set -eu
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-1883}
WORD=${1:-Fables}

mosquitto_rr -h "$HOST" -p "$PORT" -q 1 -W 30 \
  -t tasks/word_count -e "replies/shell-$$" \
  -m "{\"task\":\"mapper\",\"args\":[\"$WORD\"]}"

#!/bin/sh
# A swarmq worker in plain shell: mosquitto_sub takes tasks, jq computes the
# word-count mapper, mosquitto_pub answers. MQTT 3.1.1, so the reply topic and
# the task id come in the JSON ("reply_to", "id") and the id goes back in it.
#
#   HOST=127.0.0.1 PORT=1883 ./worker.sh
#
# Needs mosquitto-clients and jq.
set -eu
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-1883}
QUEUE=${QUEUE:-word_count}
ID=${ID:-shell-worker-$$}

mosquitto_sub -h "$HOST" -p "$PORT" -i "$ID" -q 1 -t "\$share/shell/tasks/$QUEUE" |
while IFS= read -r task; do
  reply_to=$(printf '%s' "$task" | jq -r '.reply_to')
  # mapper(word) = [word, 1] if len(word) >= 5 else null
  reply=$(printf '%s' "$task" | jq -c '{id: .id, result: (.args[0] as $w | if ($w | length) >= 5 then [$w, 1] else null end)}')
  mosquitto_pub -h "$HOST" -p "$PORT" -i "$ID-pub" -q 1 -t "$reply_to" -m "$reply"
done

#!/bin/sh
# A swarmq worker in plain shell: mosquitto_sub takes tasks, jq computes the
# word-count mapper, mosquitto_pub answers. MQTT 3.1.1, so the reply topic and
# the task id come in the JSON ("reply_to", "id") and the id goes back in it.
#
#   HOST=127.0.0.1 PORT=1883 ./worker.sh
#   SWARMQ_USERNAME=w1 SWARMQ_PASSWORD=sqt_... ./worker.sh      # as an identity
#   CAFILE=ca.pem CERT=w1.pem KEY=w1.key PORT=8883 ./worker.sh  # TLS, client certificate
#
# Needs mosquitto-clients and jq.
set -eu
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-1883}
QUEUE=${QUEUE:-word_count}
# An identity's client ids are its name or begin with `<name>:`.
if [ -n "${SWARMQ_USERNAME:-}" ]; then
  ID=${ID:-$SWARMQ_USERNAME:shell-$$}
else
  ID=${ID:-shell-worker-$$}
fi
set --
[ -n "${SWARMQ_USERNAME:-}" ] && set -- "$@" -u "$SWARMQ_USERNAME"
[ -n "${SWARMQ_PASSWORD:-}" ] && set -- "$@" -P "$SWARMQ_PASSWORD"
[ -n "${CAFILE:-}" ] && set -- "$@" --cafile "$CAFILE"
[ -n "${CERT:-}" ] && set -- "$@" --cert "$CERT" --key "$KEY"

mosquitto_sub -h "$HOST" -p "$PORT" "$@" -i "$ID" -q 1 -t "\$share/shell/tasks/$QUEUE" |
while IFS= read -r task; do
  reply_to=$(printf '%s' "$task" | jq -r '.reply_to')
  # mapper(word) = [word, 1] if len(word) >= 5 else null
  reply=$(printf '%s' "$task" | jq -c '{id: .id, result: (.args[0] as $w | if ($w | length) >= 5 then [$w, 1] else null end)}')
  mosquitto_pub -h "$HOST" -p "$PORT" "$@" -i "$ID-pub" -q 1 -t "$reply_to" -m "$reply"
done

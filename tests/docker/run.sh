#!/usr/bin/env bash
# End-to-end test of the container deployment on a real Docker engine:
# builds the image from local artifacts, starts docker-compose.yml, and checks
#   0. authentication is on: the env file's tokens let the services in, an
#      anonymous client is refused;
#   1. the producer container prints the original word-count top 5;
#   2. workers scaled from 4 to 8 mid-run take tasks;
#   3. a worker killed mid-run (docker kill) loses no task: every task completes once;
#   4. tasks queued while no worker runs survive a kill -9 of the broker container,
#      and so does the dashboard's task history;
#   5. simulated devices (profile "devices") get their tasks done;
#   6. MQTT over TLS: a broker container given a certificate by environment
#      variables serves 8883 to a worker container (mqtts://, --ca-file) and
#      to mosquitto_rr on the host;
#   7. where swarm mode works, docker-stack.yml deploys and runs the word count.
# Tears everything down at the end, pass or fail.
set -Eeuo pipefail
cd "$(dirname "$0")/../.."
export COMPOSE_PROJECT_NAME=swarmqtest
export SWARMQ_MQTT_PORT=127.0.0.1:${TEST_MQTT_PORT:-21883}
export SWARMQ_HTTP_PORT=127.0.0.1:${TEST_HTTP_PORT:-28080}
export WORKERS=4
HTTP="http://$SWARMQ_HTTP_PORT"
ENV_FILE=$(mktemp)
compose() { docker-compose --env-file "$ENV_FILE" "$@"; }
pass=0
fail() {
  echo "FAIL: $*" >&2
  compose logs --tail 30 broker >&2 || true
  docker logs --tail 30 swarmqtest-tls >&2 2>/dev/null || true
  exit 1
}
ok() { echo "ok: $*"; pass=$((pass + 1)); }
CONSUMERS='swarmq_queue_consumers{queue="word_count"}'
WAITING='swarmq_queue_waiting{queue="word_count"}'
SUCCESS='swarmq_tasks_finished_total{status="success"}'
metric() { curl -fsS "$HTTP/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
wait_for() { # description, condition (evaluated anew at each poll); up to 60 s
  local what=$1 cond=$2
  for _ in $(seq 600); do eval "$cond" >/dev/null 2>&1 && return 0; sleep 0.1; done
  fail "timed out waiting for $what"
}
TLS_DIR=$(mktemp -d)
cleanup() {
  docker rm -f swarmqtest-tls swarmqtest-tls-worker >/dev/null 2>&1 || true
  compose --profile tools down -v --remove-orphans >/dev/null 2>&1 || true
}
# No silent exits: any failing command names its line.
trap 'fail "line $LINENO: $BASH_COMMAND"' ERR
trap 'cleanup; rm -rf "$TLS_DIR" "$ENV_FILE"' EXIT
cleanup

tests/docker/build-image.sh
# The documented one-liner makes the tokens (here into a temporary env file).
docker run --rm swarmq:local swarmq identity compose-env >"$ENV_FILE"
set -a; . "$ENV_FILE"; set +a
ADMIN=(-H "Authorization: Bearer $SWARMQ_ADMIN_TOKEN")
compose up -d
wait_for "broker healthy and 4 workers" 'test "$(metric "$CONSUMERS")" = 4'

# 0. Authentication is on.
MQTT_PORT=${SWARMQ_MQTT_PORT##*:}
if mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -q 1 -t tasks/word_count -m '{}' 2>/dev/null; then
  fail "an anonymous client was accepted"
fi
mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -u device -P "$SWARMQ_DEVICE_TOKEN" -q 1 -t tasks/word_count \
  -m '{"task":"mapper","args":["Fables"]}' || fail "the device token was refused"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$HTTP/api/v1/overview")" = 401 ] || fail "the API is open"
curl -fsS "${ADMIN[@]}" "$HTTP/api/v1/identities" | jq -e '[.identities[].name] | sort == ["admin","device","producer","worker"]' >/dev/null \
  || fail "the identities of config/docker-compose.toml"
ok "authentication on: 4 workers and a device connected with the env file's tokens, anonymous and unauthenticated API refused"

# 1. The original experiment, from a producer container.
out=$(compose run --rm producer 2>/dev/null)
[ "$(echo "$out" | sed -n '1,5p' | paste -sd, -)" = "would 12,which 8,their 8,caught 6,Farmer 6" ] || fail "top 5: $out"
ok "producer printed the original top 5 ($(echo "$out" | tail -1))"

# 2. Scale 4 -> 8 while gulliver.txt (104k tasks) runs.
big() { compose run -d --name "$1" producer word-count count --url mqtt://broker:1883 /usr/share/swarmq/text/gulliver.txt >/dev/null; }
big swarmqtest_big1
wait_for "the run to get going" 'test "$(metric swarmq_tasks_submitted_total | cut -d. -f1)" -gt 5000'
compose up -d --no-recreate --scale worker=8 worker 2>/dev/null
wait_for "8 workers" 'test "$(metric "$CONSUMERS")" = 8'
[ "$(docker inspect -f '{{.State.Running}}' swarmqtest_big1)" = true ] || fail "the run ended before the scale-up took effect"
[ "$(docker wait swarmqtest_big1)" = 0 ] || fail "gulliver run failed: $(docker logs swarmqtest_big1 2>&1 | tail -3)"
top=$(docker logs swarmqtest_big1 2>/dev/null | sed -n '1,5p' | paste -sd, -)
[ "$top" = "which 838,their 646,could 385,would 370,great 280" ] || fail "gulliver top 5: $top"
docker rm swarmqtest_big1 >/dev/null
compose stop -t 10 worker >/dev/null 2>&1
for i in 5 6 7 8; do
  n=$(docker logs "${COMPOSE_PROJECT_NAME}_worker_$i" 2>&1 | sed -n 's/^worker stopped: \([0-9]*\) completed.*/\1/p' | tail -1)
  [ "${n:-0}" -gt 0 ] || fail "worker_$i (added mid-run) completed no task"
  echo "    worker_$i, added mid-run, completed $n tasks"
done
ok "workers added mid-run took tasks"

# 3. docker kill a worker in the middle of a run.
compose up -d --no-recreate --scale worker=4 worker >/dev/null 2>&1
wait_for "4 workers again" 'test "$(metric "$CONSUMERS")" = 4'
before_ok=$(metric "$SUCCESS")
before_sub=$(metric swarmq_tasks_submitted_total)
before_red=$(metric swarmq_tasks_redelivered_total)
big swarmqtest_big2
wait_for "the run to get going" 'test "$(( $(metric swarmq_tasks_submitted_total) - before_sub ))" -gt 20000'
victim=$(compose ps -q worker | sed -n 1p)
docker kill "$victim" >/dev/null
[ "$(docker wait swarmqtest_big2)" = 0 ] || fail "run with a killed worker failed: $(docker logs swarmqtest_big2 2>&1 | tail -3)"
top=$(docker logs swarmqtest_big2 2>/dev/null | sed -n '1,5p' | paste -sd, -)
[ "$top" = "which 838,their 646,could 385,would 370,great 280" ] || fail "top 5 after a kill: $top"
docker rm swarmqtest_big2 >/dev/null
done_ok=$(( $(metric "$SUCCESS") - before_ok ))
submitted=$(( $(metric swarmq_tasks_submitted_total) - before_sub ))
redelivered=$(( $(metric swarmq_tasks_redelivered_total) - before_red ))
[ "$submitted" = 104110 ] && [ "$done_ok" = 104110 ] || fail "submitted $submitted, completed $done_ok"
ok "worker killed mid-run: 104110 submitted, 104110 completed once, $redelivered redelivered"

# 4. Tasks queued with no worker survive kill -9 of the broker.
compose stop -t 10 worker >/dev/null 2>&1
wait_for "no workers" 'test "$(metric "$CONSUMERS")" = 0'
for i in $(seq 50); do
  mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -u device -P "$SWARMQ_DEVICE_TOKEN" -q 1 -t tasks/word_count \
    -m "{\"id\":\"restart-$i\",\"task\":\"mapper\",\"args\":[\"word$i\"]}"
done
[ "$(metric "$WAITING")" = 50 ] || fail "50 tasks not queued"
compose kill -s SIGKILL broker >/dev/null 2>&1
compose up -d broker >/dev/null 2>&1
wait_for "broker back with 50 queued tasks" 'test "$(metric "$WAITING")" = 50'
compose start worker >/dev/null 2>&1
wait_for "the 50 tasks done after the restart" 'test "$(metric "$SUCCESS")" = 50'
ok "50 queued tasks survived kill -9 of the broker container and ran after it"
# The dashboard's history lives in the same volume: it kept the earlier runs.
wait_for "restart-7 in the history" 'test "$(curl -fsS "${ADMIN[@]}" "$HTTP/api/v1/tasks/restart-7" | jq -r .status)" = success'
retained=$(curl -fsS "${ADMIN[@]}" "$HTTP/api/v1/overview" | jq .history.retained)
[ "$retained" -ge 210000 ] || fail "history kept $retained tasks across the kill, expected the earlier runs' 210,000+"
curl -fsS "$HTTP/" | grep -q 'src="/app.js"' || fail "no dashboard at $HTTP/"
ok "dashboard served; its history ($retained tasks) survived kill -9 of the broker container"

# 5. Simulated devices (compose profile "devices") submit at their rate and get results.
before=$(metric "$SUCCESS")
DEVICES=2 DEVICE_RATE=50 compose --profile devices up -d device >/dev/null 2>&1
wait_for "simulated devices' tasks completing" 'test "$(( $(metric "$SUCCESS") - before ))" -ge 200'
compose --profile devices stop -t 10 device >/dev/null 2>&1
ok "2 simulated devices at 50 tasks/s: $(( $(metric "$SUCCESS") - before )) tasks done"

# 6. MQTT over TLS: a test CA and a certificate for localhost/127.0.0.1,
# mounted read-only and named by the two SWARMQ__MQTT__TLS_* variables.
(
  cd "$TLS_DIR"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout ca.key -out ca.pem -subj /CN=swarmq-test-ca -days 2
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout server.key -out server.csr -subj /CN=localhost
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >ext.cnf
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
    -out server.pem -days 2 -extfile ext.cnf
  chmod a+rx . && chmod a+r ./*  # the broker runs as uid 10001
) >/dev/null 2>&1 || fail "openssl could not make the test certificates"
TLS_PORT=${TEST_TLS_PORT:-28883}
docker run -d --name swarmqtest-tls -p "127.0.0.1:$TLS_PORT:8883" -v "$TLS_DIR:/tls:ro" \
  -e SWARMQ__MQTT__TLS_CERT_FILE=/tls/server.pem -e SWARMQ__MQTT__TLS_KEY_FILE=/tls/server.key \
  swarmq:local >/dev/null
# grep without -q reads to the end: an early exit would fail the pipe (pipefail).
wait_for "the TLS broker listening" 'docker logs swarmqtest-tls 2>&1 | grep "mqtts=0.0.0.0:8883"'
docker run -d --name swarmqtest-tls-worker --network container:swarmqtest-tls -v "$TLS_DIR:/tls:ro" \
  swarmq:local word-count worker --url mqtts://localhost:8883 --ca-file /tls/ca.pem >/dev/null
tls_rr() { mosquitto_rr --cafile "$TLS_DIR/ca.pem" -h localhost -p "$TLS_PORT" -W 2 \
  -t tasks/word_count -e replies/docker-tls -m '{"task":"mapper","args":["Fables"]}'; }
wait_for "a result over TLS" 'tls_rr | jq -e ".status == \"success\" and .result == [\"Fables\", 1]"'
if mosquitto_pub -h 127.0.0.1 -p "$TLS_PORT" -q 1 -t tasks/word_count -m '{}' 2>/dev/null; then
  fail "plain MQTT was accepted on the TLS port"
fi
ok "MQTT over TLS from a container: worker on mqtts:// with --ca-file, mosquitto_rr --cafile answered $(tls_rr | jq -c .result)"
docker rm -f swarmqtest-tls swarmqtest-tls-worker >/dev/null

# 7. Docker Swarm: the stack file, deployed on this engine as a one-node swarm.
cleanup
# The stack publishes plain port numbers (host mode), not address:port.
export SWARMQ_MQTT_PORT=${SWARMQ_MQTT_PORT##*:} SWARMQ_HTTP_PORT=${SWARMQ_HTTP_PORT##*:}
HTTP="http://127.0.0.1:$SWARMQ_HTTP_PORT"
docker-compose -f docker-stack.yml config >/dev/null || fail "docker-stack.yml does not validate"
swarm_was=$(docker info -f '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo unknown)
if [ "$swarm_was" = active ] || docker swarm init --advertise-addr 127.0.0.1 >/dev/null 2>&1; then
  stack_down() {
    docker stack rm swarmqtest >/dev/null 2>&1 || true
    for _ in $(seq 100); do [ -z "$(docker ps -q --filter label=com.docker.stack.namespace=swarmqtest)" ] && break; sleep 0.2; done
    for r in admin producer worker device; do docker secret rm "swarmq_${r}_token" >/dev/null 2>&1 || true; done
    [ "$swarm_was" = active ] || docker swarm leave --force >/dev/null 2>&1 || true
  }
  trap 'stack_down; cleanup; rm -rf "$TLS_DIR" "$ENV_FILE"' EXIT
  docker node update --label-add swarmq.broker=true "$(docker info -f '{{.Swarm.NodeID}}')" >/dev/null
  # The documented loop: one Docker secret per identity, from the env file.
  for r in admin producer worker device; do
    docker secret rm "swarmq_${r}_token" >/dev/null 2>&1 || true
    grep "^SWARMQ_$(echo $r | tr a-z A-Z)_TOKEN=" "$ENV_FILE" | cut -d= -f2- | tr -d '\n' |
      docker secret create "swarmq_${r}_token" - >/dev/null
  done
  docker stack deploy -c docker-stack.yml swarmqtest >/dev/null
  wait_for "the stack's broker healthy" 'curl -fsS "$HTTP/healthz"'
  wait_for "the stack's workers" 'test "$(metric "$CONSUMERS")" -ge 1'
  out=$(docker run --rm --network swarmqtest_swarmq \
    -e SWARMQ_USERNAME=producer -e SWARMQ_PASSWORD="$SWARMQ_PRODUCER_TOKEN" swarmq:local \
    word-count count --url mqtt://broker:1883 --words 2190 /usr/share/swarmq/text/aesop11.txt 2>/dev/null)
  [ "$(echo "$out" | sed -n '1,5p' | paste -sd, -)" = "would 12,which 8,their 8,caught 6,Farmer 6" ] || fail "stack top 5: $out"
  ok "docker stack deploy with Docker secrets: $(metric "$CONSUMERS") workers, word count through the overlay network ($(echo "$out" | tail -1))"
else
  echo "SKIPPED the Swarm part: this engine cannot run swarm mode (docker-stack.yml validated only)"
fi

echo "docker: $pass passed, 0 failed"

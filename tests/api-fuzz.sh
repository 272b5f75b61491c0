#!/usr/bin/env bash
# Property-based check of the JSON API against its own OpenAPI document with
# schemathesis (PyPI): thousands of generated requests, each answer checked
# against the document (status codes, schemas, content types, auth).
#
#   tests/api-fuzz.sh            # installs schemathesis if missing
#
# Runs the release binary with one admin user on ephemeral ports. /logout is
# left out (it would end the session the run uses) and /events too (an
# endless stream; tests/integration/api.rs covers it). One false positive is
# expected and tolerated: `since` after `until` is schema-valid but a 400.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import schemathesis' 2>/dev/null || python3 -m pip install -q schemathesis
cargo build --release -q -p swarmq
BIN=target/release
DIR=$(mktemp -d)
trap 'kill "$broker" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"' EXIT
printf '[[auth.users]]\nname = "fuzz"\nrole = "admin"\npassword_hash = "%s"\n' \
  "$(echo fuzz-password | "$BIN/swarmq" hash-password)" >"$DIR/users.toml"
"$BIN/swarmq" serve --mqtt-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --data-dir "$DIR/data" \
  --config "$DIR/users.toml" >"$DIR/log" 2>&1 &
broker=$!
for _ in $(seq 100); do grep -q listening "$DIR/log" && break; sleep 0.1; done
HTTP="http://$(grep -o 'http=[0-9.:]*' "$DIR/log" | head -1 | cut -d= -f2)"
TOKEN=$(curl -s -X POST "$HTTP/api/v1/login" -H 'content-type: application/json' \
  -d '{"username":"fuzz","password":"fuzz-password"}' | jq -r .token)
schemathesis run "$HTTP/api/v1/openapi.json" --url "$HTTP/api/v1" --max-examples "${EXAMPLES:-100}" \
  -H "Authorization: Bearer $TOKEN" --exclude-path /logout --exclude-path /events

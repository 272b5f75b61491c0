#!/usr/bin/env bash
# Builds the swarmq image from local artifacts only (no base image is pulled):
# release binaries, the shared libraries they link (from this machine), the
# word-count texts and config/docker.toml, assembled into target/docker/rootfs
# and copied onto `scratch`.
#
#   tests/docker/build-image.sh [TAG]      # default tag: swarmq:local
set -euo pipefail
cd "$(dirname "$0")/../.."
TAG=${1:-swarmq:local}

cargo build --release --locked -p swarmq -p word-count
ROOT=target/docker/rootfs
rm -rf "$ROOT"
mkdir -p "$ROOT/usr/local/bin" "$ROOT/etc/swarmq" "$ROOT/usr/share/swarmq/text" "$ROOT/data" "$ROOT/tmp"
for bin in swarmq word-count; do
  cp "target/release/$bin" "$ROOT/usr/local/bin/$bin"
  strip "$ROOT/usr/local/bin/$bin"
done
# The dynamic loader and every library the binaries link, at their own paths.
for lib in $(ldd target/release/swarmq target/release/word-count | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u); do
  cp --parents -L "$lib" "$ROOT"
done
cp config/docker.toml "$ROOT/etc/swarmq/docker.toml"
cp devices/word-count/text/*.txt "$ROOT/usr/share/swarmq/text/"
printf 'root:x:0:0::/:/sbin/nologin\nswarmq:x:10001:10001::/data:/sbin/nologin\n' >"$ROOT/etc/passwd"
printf 'root:x:0:\nswarmq:x:10001:\n' >"$ROOT/etc/group"
printf 'hosts: files dns\n' >"$ROOT/etc/nsswitch.conf"
chmod 1777 "$ROOT/tmp"

docker build -q -t "$TAG" . >/dev/null
echo "built $TAG: $(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.1f MB", $1/1e6}')"

#!/usr/bin/env bash
# Raspberry Pi builds, built and run here: cross-compiles `swarmq` and
# `word-count` for aarch64 (Pi 3/4/5 on a 64-bit OS) and armv7 (Pi 2/3 on a
# 32-bit OS), then runs the word count under emulation (qemu-user): an
# arm64 broker, an armv7 worker and an arm64 producer, 2,190 words, and
# checks the original top 5. With a Docker engine it also builds the arm64
# image (tests/docker/build-image.sh) and runs the same word count with the
# image's own binaries and libraries, from its root filesystem, under qemu.
#
#   tests/pi/run.sh
#
# Installs what it needs on Debian 12 (root): Debian's Rust 1.96
# (rustc-web, cargo-web) with its standard library for both targets
# (libstd-rust-web-dev:arm64/armhf), the cross C compilers and qemu-user.
# Builds go to target/pi/ (Debian's compiler, apart from rustup's).
# PROFILE=dev builds unoptimised binaries instead of release ones: the same
# code and toolchain, several times faster to compile, slower to run; CI
# uses it to stay within its time budget.
set -euo pipefail
cd "$(dirname "$0")/../.."
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive

if ! [ -x /usr/bin/cargo ] || ! [ -d /usr/lib/rustlib/aarch64-unknown-linux-gnu ] ||
   ! [ -d /usr/lib/rustlib/armv7-unknown-linux-gnueabihf ] || ! command -v qemu-arm-static >/dev/null ||
   ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v arm-linux-gnueabihf-gcc >/dev/null; then
  echo "installing Debian's Rust with arm64/armhf standard libraries, cross compilers, qemu-user"
  $SUDO dpkg --add-architecture arm64
  $SUDO dpkg --add-architecture armhf
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq rustc-web cargo-web libstd-rust-web-dev:arm64 libstd-rust-web-dev:armhf \
    gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross \
    qemu-user-static >/dev/null
fi
echo "$(/usr/bin/rustc --version) (Debian), $(qemu-aarch64-static --version | head -1)"

export CARGO_TARGET_DIR=target/pi
export RUSTC=/usr/bin/rustc CARGO=/usr/bin/cargo
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc
export CC_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-gcc AR_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-ar
# Both targets in one cargo run: the build scripts and proc macros (built
# for this machine) are compiled once, not once per target, and each
# target's long serial steps (rmqtt, swarmq itself) overlap the other's.
. tests/cargo-profile.sh
start=$SECONDS
/usr/bin/cargo build --profile "$PROFILE" --locked --quiet --target aarch64-unknown-linux-gnu \
  --target armv7-unknown-linux-gnueabihf -p swarmq -p word-count
for target in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
  echo "built $target ($PROFILE): $(file -b "$CARGO_TARGET_DIR/$target/$DIR/swarmq" | cut -d, -f1-2)"
done
echo "built both targets in $((SECONDS - start)) s"
ARM64=$CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/$DIR
ARMV7=$CARGO_TARGET_DIR/armv7-unknown-linux-gnueabihf/$DIR

# The binaries find their C libraries where Debian's multiarch packages put
# them (/lib/aarch64-linux-gnu, /lib/arm-linux-gnueabihf), as on a Pi. (Not
# qemu's -L with the cross sysroot: its loader and the multiarch libc would
# not match, and threads crash.)
DATA=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# word_count LABEL BROKER WORKER PRODUCER: each a command prefix (emulator
# and binary directory) for swarmq / word-count; runs the 2,190-word count
# and checks the original top 5.
word_count() {
  local label=$1 broker=$2 worker=$3 producer=$4
  local mqtt http out top n=${#pids[@]}
  mqtt=$(port); http=$(port)
  $broker/swarmq serve --mqtt-listen "127.0.0.1:$mqtt" --http-listen "127.0.0.1:$http" \
    --data-dir "$DATA/data-$mqtt" >"$DATA/broker-$mqtt.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 300); do curl -fs "http://127.0.0.1:$http/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fs "http://127.0.0.1:$http/healthz" >/dev/null || { cat "$DATA/broker-$mqtt.log"; echo "FAILED: $label: the broker did not start"; exit 1; }
  $worker/word-count worker --url "mqtt://127.0.0.1:$mqtt" --concurrency 8 >"$DATA/worker-$mqtt.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 300); do curl -fs "http://127.0.0.1:$http/api/v1/workers" | grep -q '"online":true' && break; sleep 0.1; done
  out=$(timeout 300 $producer/word-count count --url "mqtt://127.0.0.1:$mqtt" --words 2190 \
    devices/word-count/text/aesop11.txt 2>/dev/null) || true
  top=$(echo "$out" | head -5 | paste -sd, -)
  for p in "${pids[@]:$n}"; do kill "$p" 2>/dev/null || true; done
  if [ "$top" != "would 12,which 8,their 8,caught 6,Farmer 6" ]; then
    echo "FAILED: $label: the word count gave top 5 '$top'"; cat "$DATA/worker-$mqtt.log" | tail -5; exit 1
  fi
  echo "pi: $label: top 5 $top; $(echo "$out" | tail -1)"
}

# The binaries find their C libraries where Debian's multiarch packages put
# them (/lib/aarch64-linux-gnu, /lib/arm-linux-gnueabihf), as on a Pi. (Not
# qemu's -L with the cross sysroot: its loader and the multiarch libc would
# not match, and the first thread would crash.)
word_count "arm64 broker, armv7 worker, arm64 producer (emulated)" \
  "qemu-aarch64-static $ARM64" "qemu-arm-static $ARMV7" "qemu-aarch64-static $ARM64"

# The arm64 image, when a Docker engine answers.
if timeout 10 docker info >/dev/null 2>&1; then
  TARGET=aarch64-unknown-linux-gnu PLATFORM=linux/arm64 tests/docker/build-image.sh swarmq:arm64
  arch=$(docker image inspect -f '{{.Os}}/{{.Architecture}}' swarmq:arm64)
  [ "$arch" = linux/arm64 ] || { echo "FAILED: swarmq:arm64 is $arch"; exit 1; }
  # No binfmt handler here to run the container itself: run the image's
  # binaries from its exported root filesystem, with its own loader and
  # libraries (LD_LIBRARY_PATH keeps the loader off this machine's cache).
  rootfs="$DATA/rootfs"; mkdir -p "$rootfs"
  cid=$(docker create --platform linux/arm64 swarmq:arm64 swarmq --version)
  docker export "$cid" | tar -x -C "$rootfs"
  docker rm "$cid" >/dev/null
  image="qemu-aarch64-static -L $rootfs -E LD_LIBRARY_PATH=/lib $rootfs/usr/local/bin"
  echo "pi: image swarmq:arm64 is $arch, $($image/swarmq --version)"
  word_count "the swarmq:arm64 image's binaries (emulated)" "$image" "$image" "$image"
else
  echo "SKIPPED the arm64 image: no Docker engine answers"
fi

#!/usr/bin/env bash
# Builds the swarmq image from local artifacts only (no base image is pulled):
# release binaries, the shared libraries they link, the word-count texts and
# config/docker.toml, assembled into target/docker/rootfs and copied onto
# `scratch`. The Dockerfile has no RUN step, so an image for another
# architecture needs no emulation, only binaries and libraries for it.
#
#   tests/docker/build-image.sh [TAG]                     # this machine's architecture, tag swarmq:local
#   TARGET=aarch64-unknown-linux-gnu PLATFORM=linux/arm64 \
#     SYSROOT=/usr/aarch64-linux-gnu tests/docker/build-image.sh swarmq:arm64
#
# PROFILE=dev builds the binaries unoptimised (target/.../debug): minutes
# faster to compile, which is how CI builds its test images; release (the
# default) is what to deploy.
#
# TARGET needs the target's standard library (`rustup target add $TARGET`, or
# Debian's libstd-rust-web-dev for it with CARGO=/usr/bin/cargo: see
# tests/pi/run.sh, which builds this way), a cross linker
# (CARGO_TARGET_<TRIPLE>_LINKER) and the target's C library under SYSROOT
# (Debian: gcc-aarch64-linux-gnu / gcc-arm-linux-gnueabihf).
set -euo pipefail
cd "$(dirname "$0")/../.."
TAG=${1:-swarmq:local}
TARGET=${TARGET:-}

CARGO=${CARGO:-cargo}
. tests/cargo-profile.sh
if [ -n "$TARGET" ]; then
  "$CARGO" build --profile "$PROFILE" --locked --target "$TARGET" -p swarmq -p word-count
  OUT=${CARGO_TARGET_DIR:-target}/$TARGET/$DIR
  # Debian's name for the target: aarch64-linux-gnu, arm-linux-gnueabihf.
  GNU=$(echo "$TARGET" | sed 's/-unknown//; s/^armv7/arm/')
  SYSROOT=${SYSROOT:-/usr/$GNU}
else
  cargo build --profile "$PROFILE" --locked -p swarmq -p word-count
  OUT=${CARGO_TARGET_DIR:-target}/$DIR
  SYSROOT=""
fi
ROOT=target/docker/rootfs
rm -rf "$ROOT"
mkdir -p "$ROOT/usr/local/bin" "$ROOT/etc/swarmq" "$ROOT/usr/share/swarmq/text" "$ROOT/data" "$ROOT/tmp"
for bin in swarmq word-count; do
  cp "$OUT/$bin" "$ROOT/usr/local/bin/$bin"
done

if [ -z "$SYSROOT" ]; then
  # Native: ask the loader which libraries the binaries use.
  libs=$(ldd "$OUT/swarmq" "$OUT/word-count" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u)
  for lib in $libs; do cp --parents -L "$lib" "$ROOT"; done
  strip "$ROOT/usr/local/bin/"*
else
  # Cross: read the NEEDED entries and the interpreter, find them in SYSROOT.
  needed=$(for b in "$OUT/swarmq" "$OUT/word-count"; do readelf -d "$b" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'; done | sort -u)
  interp=$(readelf -l "$OUT/swarmq" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
  mkdir -p "$ROOT/lib" "$ROOT$(dirname "$interp")"
  for lib in $needed; do
    src=$(find "$SYSROOT" -name "$lib" | head -n1)
    [ -n "$src" ] || { echo "cannot find $lib under $SYSROOT" >&2; exit 1; }
    cp -L "$src" "$ROOT/lib/$lib"
  done
  cp -L "$(find "$SYSROOT" -name "$(basename "$interp")" | head -n1)" "$ROOT$interp"
  cross_strip=$(command -v "$GNU-strip" || true)
  if [ -n "$cross_strip" ]; then "$cross_strip" "$ROOT/usr/local/bin/"*; fi
fi

cp config/docker.toml config/docker-compose.toml config/docker-stack.toml "$ROOT/etc/swarmq/"
cp devices/word-count/text/*.txt "$ROOT/usr/share/swarmq/text/"
printf 'root:x:0:0::/:/sbin/nologin\nswarmq:x:10001:10001::/data:/sbin/nologin\n' >"$ROOT/etc/passwd"
printf 'root:x:0:\nswarmq:x:10001:\n' >"$ROOT/etc/group"
printf 'hosts: files dns\n' >"$ROOT/etc/nsswitch.conf"
chmod 1777 "$ROOT/tmp"

if [ -n "${PLATFORM:-}" ] && docker buildx version >/dev/null 2>&1; then
  docker buildx build --platform "$PLATFORM" -t "$TAG" --load .
elif [ -n "${PLATFORM:-}" ]; then
  # The classic builder takes --platform too; the Dockerfile has no RUN step.
  docker build -q --platform "$PLATFORM" -t "$TAG" . >/dev/null
else
  docker build -q -t "$TAG" . >/dev/null
fi
echo "built $TAG: $(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.1f MB", $1/1e6}')"

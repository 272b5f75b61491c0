#!/usr/bin/env bash
# Runs every check swarmq has: formatting, clippy, and all tests (unit,
# integration against the real broker, the device programs, doctests, and
# the dashboard in headless Chromium).
# Installs what the tests need when it is missing: mosquitto-clients, jq,
# chromium and chromium-driver (Debian packages), paho-mqtt, pytest and
# selenium (PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mosquitto_pub >/dev/null || need_apt+=(mosquitto-clients)
command -v jq >/dev/null || need_apt+=(jq)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
if ((${#need_apt[@]})); then
  echo "installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
pip_install() {
  python3 -m pip install -q "$@" 2>/dev/null ||
    python3 -m pip install -q --break-system-packages "$@"
}
if ! python3 -c 'import paho.mqtt' 2>/dev/null; then
  echo "installing paho-mqtt"
  pip_install 'paho-mqtt>=2,<3'
fi
if ! python3 -c 'import pytest' 2>/dev/null; then
  echo "installing pytest"
  pip_install 'pytest>=7'
fi
if ! python3 -c 'import selenium' 2>/dev/null; then
  echo "installing selenium"
  pip_install 'selenium>=4.20,<5'
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked 2>&1 | tee "$log" || status=$?
# The dashboard in a real browser, against the binaries just built.
cargo build --workspace --locked --quiet
python3 tests/browser/test_dashboard.py 2>&1 | tee -a "$log" || status=$?
# The Python package and the MicroPython board code (under CPython, with
# the shim), with pytest against the broker binary just built.
python3 -m pytest -q -p no:cacheprovider devices 2>&1 | tee -a "$log" || status=$?
# One closing line for the whole run (cargo prints one per test binary, and
# the last of them is often a crate's empty doctest run).
awk '/^test result:/ || /^=* ?[0-9]+ (passed|failed).* in [0-9.]+s/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\nswarmq: %d passed, %d failed\n", p, f }' "$log"
exit "$status"

#!/usr/bin/env bash
# Runs the server with the demo on a fresh Debian machine: installs the missing build
# dependencies and the audience page's player (hls.js), then `cargo run --release`.
# Extra arguments go to cohost (see `cohost --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
[ -d web-demo/node_modules/mpegts.js ] || npm ci --prefix web-demo --no-audit --no-fund --silent
exec cargo run --release -- "$@"

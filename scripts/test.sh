#!/usr/bin/env bash
# Runs every cohost test on a fresh Debian machine: installs the build and test-only
# dependencies that are missing (needs root or sudo for apt-get), then the whole workspace's
# tests. Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh --test
# Browser test driver and third-party WHIP/WHEP clients (playwright-core, whip-whep; pinned by
# tests/browser/package-lock.json).
if [ ! -d tests/browser/node_modules/playwright-core ] || [ ! -d tests/browser/node_modules/whip-whep ]; then
  (cd tests/browser && npm ci --no-audit --no-fund --silent)
fi
# hls.js and mpegts.js for the audience page (pinned by web-demo/package-lock.json; served at
# /vendor/hls.min.js and /vendor/mpegts.js).
if [ ! -d web-demo/node_modules/hls.js ] || [ ! -d web-demo/node_modules/mpegts.js ]; then
  (cd web-demo && npm ci --no-audit --no-fund --silent)
fi
# aiortc, a third-party WebRTC stack (tests/aiortc_interop.rs), pinned by tests/aiortc/requirements.txt.
if [ ! -f target/aiortc-venv/.installed ]; then
  python3 -m venv target/aiortc-venv
  target/aiortc-venv/bin/pip install --quiet --no-deps -r tests/aiortc/requirements.txt
  touch target/aiortc-venv/.installed
fi
# Tests that start servers and peers are few per binary; two threads fit this 2-core box.
cargo test --workspace --no-fail-fast "$@" -- --test-threads=2

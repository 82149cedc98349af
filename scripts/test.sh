#!/usr/bin/env bash
# Runs every cohost test on a fresh Debian machine: installs the build and test-only
# dependencies that are missing (needs root or sudo for apt-get), then the whole workspace's
# tests. Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh --test
# Browser test driver (playwright-core, pinned by tests/browser/package-lock.json).
if [ ! -d tests/browser/node_modules ]; then
  (cd tests/browser && npm ci --no-audit --no-fund --silent)
fi
# hls.js for the audience page (pinned by web-demo/package-lock.json; served at /vendor/hls.min.js).
if [ ! -d web-demo/node_modules ]; then
  (cd web-demo && npm ci --no-audit --no-fund --silent)
fi
# Tests that start servers and peers are few per binary; two threads fit this 2-core box.
cargo test --workspace --no-fail-fast "$@" -- --test-threads=2

#!/usr/bin/env bash
# Runs every cohost test on a fresh Debian machine: installs the build and test-only
# dependencies that are missing (needs root or sudo for apt-get), then the whole workspace's
# tests. Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
# Build: nasm (OpenH264 SIMD), cmake (bundled codecs), libopus-dev + pkg-config (opus crate).
# Tests: ffmpeg/ffprobe (decode what we produce), chromium (browser pages), nginx +
# libnginx-mod-rtmp (a real RTMP server), iproute2 (network namespaces), nodejs/npm
# (playwright-core driving Chromium).
command -v nasm >/dev/null || need+=(nasm)
command -v cmake >/dev/null || need+=(cmake)
command -v pkg-config >/dev/null || need+=(pkg-config)
pkg-config --exists opus 2>/dev/null || need+=(libopus-dev)
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v chromium >/dev/null || need+=(chromium)
command -v nginx >/dev/null || need+=(nginx)
[ -f /usr/lib/nginx/modules/ngx_rtmp_module.so ] || need+=(libnginx-mod-rtmp)
command -v ip >/dev/null || need+=(iproute2)
command -v unshare >/dev/null || need+=(util-linux)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
  # openh264-sys2 silently builds without SIMD when nasm was missing: rebuild it with nasm.
  if printf '%s\n' "${need[@]}" | grep -qx nasm; then cargo clean -p openh264-sys2 2>/dev/null || true; fi
fi
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

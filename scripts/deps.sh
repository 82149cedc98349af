#!/usr/bin/env bash
# Installs, with apt-get, the Debian packages cohost needs that are missing (root or sudo).
# Usage: scripts/deps.sh          build and run dependencies (npm for the audience page's player,
#                                  fonts for the program's labels)
#        scripts/deps.sh --test   also what the tests use
set -euo pipefail

need=()
# Build: nasm (OpenH264 SIMD), cmake (bundled codecs), libopus-dev + pkg-config (opus crate);
# npm installs hls.js for the audience page.
command -v nasm >/dev/null || need+=(nasm)
command -v cmake >/dev/null || need+=(cmake)
command -v pkg-config >/dev/null || need+=(pkg-config)
pkg-config --exists opus 2>/dev/null || need+=(libopus-dev)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
# Run (and test): the fonts of the program's tile labels (mixer::text::DEFAULT_FONT_PATHS):
# DejaVu Sans Bold, then WenQuanYi Micro Hei for CJK.
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf ] || need+=(fonts-dejavu-core)
[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need+=(fonts-wqy-microhei)
if [ "${1:-}" = "--test" ]; then
  # Tests: ffmpeg/ffprobe (decode what we produce), chromium (browser pages), nginx +
  # libnginx-mod-rtmp (a real RTMP server), iproute2 + util-linux (network namespaces).
  command -v ffmpeg >/dev/null || need+=(ffmpeg)
  command -v chromium >/dev/null || need+=(chromium)
  command -v nginx >/dev/null || need+=(nginx)
  [ -f /usr/lib/nginx/modules/ngx_rtmp_module.so ] || need+=(libnginx-mod-rtmp)
  command -v ip >/dev/null || need+=(iproute2)
  command -v unshare >/dev/null || need+=(util-linux)
  # coturn (a real TURN server), python3-venv (aiortc, a third-party WebRTC stack, from PyPI).
  command -v turnserver >/dev/null || need+=(coturn)
  # redis-server: the cluster tests start their own on a free port, no persistence.
  command -v redis-server >/dev/null || need+=(redis-server)
  python3 -c "import ensurepip, venv" 2>/dev/null || need+=(python3-venv)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
  # openh264-sys2 silently builds without SIMD when nasm was missing: rebuild it with nasm.
  if printf '%s\n' "${need[@]}" | grep -qx nasm; then cargo clean -p openh264-sys2 2>/dev/null || true; fi
fi

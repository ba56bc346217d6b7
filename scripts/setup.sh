#!/usr/bin/env bash
# Idempotent setup for a fresh Debian machine: FFmpeg's shared libraries (torchcodec), a virtualenv in
# .venv with the project and its test extras. Reruns are cheap: pip runs only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

FFMPEG_LIBS=(libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8)
missing=()
for lib in "${FFMPEG_LIBS[@]}"; do
  dpkg -s "$lib" >/dev/null 2>&1 || missing+=("$lib")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]} (FFmpeg shared libraries for torchcodec)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
  echo "setup: installing the project into .venv (first run: several minutes, torch is large)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi

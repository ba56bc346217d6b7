#!/usr/bin/env bash
# Pack this project's GPU-side dependencies for a machine without network access that already has
# python3.12 + torch (the GPU machine of the device tool): DALI, webdataset, PyAV, pytorchvideo, zarr.
#
#   bash scripts/offline_bundle.sh [OUT_DIR]   # here, with network: 4 min 3 s on 2 cores (mostly xz)
#
# Produces OUT_DIR (default .gpu_bundle2, git-ignored) holding part_00.. (each < 60 MB, so that each
# fits one device call's 64 MiB next to the working tree), SHA256 of the joined parts and install.sh.
# On the GPU machine, one call per part while the machine stays warm, then install and run:
#   sh .gpu_bundle2/install.sh stash .gpu_bundle2/part_00      # carry: that part, install.sh, SHA256
#   ...
#   sh .gpu_bundle2/install.sh install && bash scripts/gpu_checks.sh
# What it leaves out of the wheels to fit 3 parts: DALI's extension modules for other Pythons and
# libnvcomp (DALI loads it only for compressed numpy reads; no NEEDED entry of DALI names it).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-.gpu_bundle2}
PY=3.12
WORK=$(mktemp -d /tmp/offline_bundle.XXXX)
trap 'rm -rf "$WORK"' EXIT
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
BINARY=(nvidia-dali-cuda130==2.4.0 nvidia-nvimgcodec-cu13==0.9.0.20 nvidia-nvjpeg==13.3.2.43
        nvidia-nvjpeg2k-cu13==0.11.0.51 nvidia-nvtiff-cu13==0.8.0.82 astunparse==1.6.3 gast==0.7.0 optree==0.20.0
        nvtx==0.2.17 makefun==1.16.0 libcst==1.9.0 webdataset==1.0.2 braceexpand==0.1.7 av==18.1.0 zarr==3.1.6
        numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 parameterized==0.9.0 yacs==0.1.8 termcolor==3.3.0)
# (the versions that ran on the H200 on 2026-11-26)
SOURCE_ONLY=(pytorchvideo==0.1.5 fvcore==0.1.5.post20221221 iopath==0.1.10)  # sdists: built here (pure Python)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
    "${PLATFORMS[@]}" -d "$WORK/wheels" "${BINARY[@]}"
python3 -m pip wheel -q --no-deps -w "$WORK/wheels" "${SOURCE_ONLY[@]}"
python3 -m pip install -q --no-index --no-deps --no-compile --ignore-requires-python --target "$WORK/site" --python-version "$PY" \
    --implementation cp --only-binary=:all: "${PLATFORMS[@]}" "$WORK"/wheels/*.whl
# prune: other Pythons' binaries, libnvcomp, headers and tools of the CUDA wheels, bytecode
find "$WORK/site" -name '*cpython-3*.so' ! -name "*cpython-${PY/./}*" -delete
rm -rf "$WORK"/site/nvidia/libnvcomp "$WORK"/site/nvidia_libnvcomp_cu13-*.dist-info
find "$WORK/site/nvidia" -mindepth 2 -maxdepth 2 -type d \( -name include -o -name bin -o -name tools \) \
    ! -path '*/dali/*' -exec rm -rf {} +
find "$WORK/site" -name __pycache__ -prune -exec rm -rf {} +
echo "site-packages: $(du -sh "$WORK/site" | cut -f1); compressing (xz -9, all cores)"
tar -C "$WORK" -cf - site | xz -T0 -9 > "$WORK/site.tar.xz"
rm -rf "$OUT" && mkdir -p "$OUT"
split -b 60000000 -d -a 2 "$WORK/site.tar.xz" "$OUT/part_"
sha256sum "$WORK/site.tar.xz" | cut -d' ' -f1 > "$OUT/SHA256"
cat > "$OUT/install.sh" <<'EOF'
#!/bin/sh
# sh install.sh stash PART...   copy parts into /tmp/bundle2 (one device call per part)
# sh install.sh install          join, check, unpack to /tmp/site, make nvidia.* a shared namespace
BUNDLE_DIR=/tmp/bundle2
HERE=$(dirname "$0")
case "$1" in
stash)
  shift; mkdir -p $BUNDLE_DIR
  for p in "$@"; do cp "$p" $BUNDLE_DIR/ && echo "stashed $(basename "$p")"; done ;;
install)
  if [ ! -f /tmp/site/.installed ]; then
    want=$(cat "$HERE/SHA256")
    got=$(cat $BUNDLE_DIR/part_* | sha256sum | cut -d' ' -f1)
    [ "$got" = "$want" ] || { echo "bundle sha256 $got != $want; parts: $(ls $BUNDLE_DIR)"; exit 1; }
    cat $BUNDLE_DIR/part_* | python3 -c "import sys, tarfile; tarfile.open(fileobj=sys.stdin.buffer, mode='r|xz').extractall('/tmp')" || exit 1
    # the image's nvidia.* wheels (cu13, cudnn, ...) and ours must share one namespace package
    echo "__path__ = __import__('pkgutil').extend_path(__path__, __name__)" > /tmp/site/nvidia/__init__.py
    # DALI looks for CUDA libraries in $ORIGIN/../cu13/lib: link the image's there
    img=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    if [ -d "$img/nvidia/cu13/lib" ]; then
      mkdir -p /tmp/site/nvidia/cu13/lib
      for f in "$img"/nvidia/cu13/lib/*; do
        [ -e "/tmp/site/nvidia/cu13/lib/$(basename "$f")" ] || ln -s "$f" /tmp/site/nvidia/cu13/lib/
      done
    fi
    touch /tmp/site/.installed
  fi
  PYTHONPATH=/tmp/site python3 -c "import nvidia.dali, webdataset, av, pytorchvideo.models, zarr; print('bundle ok: dali', nvidia.dali.__version__)" ;;
*) echo "usage: install.sh stash PART... | install" >&2; exit 2 ;;
esac
EOF
ls -la "$OUT"

#!/usr/bin/env bash
# The GPU check in one command, from a fresh checkout: install noisykd, then benchmarks/gpu_check.py (speed of
# CE and BKD on PreAct-ResNet-18 and full CIFAR-10, the classic DataLoader for the ratio, a profile, detection
# time, and a shortened CIFAR-10N worst run of CE / BKD / BKD with the authors' gradients in what is left).
#
#   bash benchmarks/gpu_check.sh --fill .data          # here, before: copy the data it needs from ../shared/data
#   bash benchmarks/gpu_check.sh .data [--budget S] [--out DIR]   # on the GPU machine (< 9 min, install included)
#   bash benchmarks/gpu_check.sh --smoke [--out DIR]   # anywhere (CI): fake data, CPU, the plumbing only
#
# The data folder is git-ignored (.data/): cifar10/ (build_cifar10.py, its JPEG tarball, headers and labels,
# about 20 MB), cifar-n/CIFAR-10_human.pt and tinyimagenet/ (the tarball, 29 MB, for modul_gpu.sh): 51 MB, which
# the device tool carries (`carry: [".data"]`, 64 MiB at most).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg

if [[ "${1:-}" == "--fill" ]]; then
  dest="${2:?usage: gpu_check.sh --fill DEST}"
  shared="${SHARED_DATA:-../shared/data}"
  mkdir -p "$dest/cifar10" "$dest/cifar-n" "$dest/tinyimagenet"
  cp "$shared"/cifar10/{build_cifar10.py,batch-headers.tar,cifar10-jpeg.tar.gz,labels.npz} "$dest/cifar10/"
  cp "$shared"/cifar-n/CIFAR-10_human.pt "$dest/cifar-n/"
  cp "$shared"/tinyimagenet/tinyimagenet-val-test-jpeg.tar.gz "$dest/tinyimagenet/"  # MODUL's open-set pool
  du -sh "$dest"
  exit 0
fi

args=()
if [[ $# -gt 0 && "$1" != --* ]]; then  # the data folder comes first
  args+=(--data "$1"); shift
fi
args+=("$@")

# noisykd itself, without dependencies (a GPU image has torch, numpy, typer, ... and cannot download); nothing to
# do where it is installed already (CI), and PYTHONPATH when pip cannot install it
if ! python3 -c "import noisykd" 2>/dev/null; then
  python3 -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null \
    || export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
  torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
exec python3 benchmarks/gpu_check.py "${args[@]}"

#!/usr/bin/env bash
# CMD's GPU run (issue "CMD, complete"): CIFAR-10, all 50,000 images, ResNet-34 (the CIFAR variant), 40% symmetric
# noise, CMD's 100-epoch schedule shortened to EPOCHS (lr /10 at 50% and 80%), CE against CMD-P + Mconf, one seed.
#
#   bash benchmarks/gpu_check.sh --fill .data                  # here, before (the same data as the GPU check)
#   # device run: command "bash benchmarks/cmd_gpu.sh .data $OUT 15", carry [".data"], timeout_s 560
#
# Writes OUT/cmd-cifar10-sym40-gpu.md and .json (commit them under benchmarks/results/ with the GPU's name).
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_run_env.sh
data="${1:?usage: cmd_gpu.sh DATA OUT [EPOCHS]}" out="${2:?usage: cmd_gpu.sh DATA OUT [EPOCHS]}" epochs="${3:-15}"
cifar="$(build_cifar10 "$data")"
python3 benchmarks/bkd_vs_ce.py --preset cifar10-sym40 --cifar-root "$cifar" --train-subset 0 --device cuda \
  --set amp=bf16 --set channels_last=true --epochs "$epochs" --eval-every 2 --seeds 0 \
  --methods ce cmd_p_mconf=cmd:self_kd=mconf,knowledge=progressive --out "$out/cmd-cifar10-sym40-gpu"

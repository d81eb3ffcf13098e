#!/usr/bin/env bash
# NRD's GPU run (issue "NRD, complete"): CIFAR-10, all 50,000 images, 40% symmetric noise over all classes
# (sym-all:0.4), GJS's PreActResNet-34 (preact_resnet34_gjs), NRD's 400-epoch schedule shortened to EPOCHS (lr /10 at
# 50% and 75%), RandAugment + Cutout 16 for every method: CE vs GJS vs NRD, one seed, each with NRD Table 5's lr,
# weight decay and loss hyperparameters for CIFAR-10 sym 40% (the cifar10-noisy preset applies them).
#
#   bash benchmarks/gpu_check.sh --fill .data                  # here, before (the same data as the GPU check)
#   # device run: command "bash benchmarks/nrd_gpu.sh .data $OUT 10", carry [".data"], timeout_s 560
#
# First the augmentation speed on the GPU (batched RandAugment / AugMix against their per-image PIL loops, about a
# minute), then the training. Writes OUT/augment-speed-gpu.{md,json} and OUT/nrd-cifar10-sym40-gpu.{md,json} with
# -reliability.png (commit them under benchmarks/results/ with the GPU's name).
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_run_env.sh
data="${1:?usage: nrd_gpu.sh DATA OUT [EPOCHS]}" out="${2:?usage: nrd_gpu.sh DATA OUT [EPOCHS]}" epochs="${3:-10}"
python3 benchmarks/augment_speed.py --device cuda --threads 4 --repeats 20 --out "$out/augment-speed-gpu"
cifar="$(build_cifar10 "$data")"
python3 benchmarks/bkd_vs_ce.py --preset cifar10-noisy --label-sets sym-all:0.4 --cifar-root "$cifar" \
  --train-subset 0 --model preact_resnet34_gjs --device cuda --set amp=bf16 --set channels_last=true \
  --set data.val_fraction=0 --epochs "$epochs" --eval-every 2 --seeds 0 --methods ce gjs nrd \
  --out "$out/nrd-cifar10-sym40-gpu"

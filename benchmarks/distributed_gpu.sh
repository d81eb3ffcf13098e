#!/usr/bin/env bash
# Multi-GPU issue's GPU run: the overhead of the distributed code path on one GPU (python -m noisykd train against
# torchrun --nproc_per_node=1, and --nproc_per_node=N when the machine has N > 1 GPUs), BKD on the full CIFAR-10N
# worst set with PreAct-ResNet-18, bf16 + channels_last, 3 epochs per run, 3 interleaved repeats (about 3-4 min on
# an H100-class GPU; each run loads the data again).
#
#   bash benchmarks/gpu_check.sh --fill .data                  # here, before (the same data as the GPU check)
#   # device run: command "bash benchmarks/distributed_gpu.sh .data $OUT", carry [".data"], timeout_s 400
#
# Writes OUT/speed-distributed-gpu.{md,json} (commit them under benchmarks/results/ with the GPU's name).
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_run_env.sh
data="${1:?usage: distributed_gpu.sh DATA OUT}" out="${2:?usage: distributed_gpu.sh DATA OUT}"
cifar="$(build_cifar10 "$data")"
gpus="$(python3 -c 'import torch; print(max(1, torch.cuda.device_count()))')"
python3 benchmarks/speed_distributed.py --device cuda --devices "$gpus" --epochs 3 --repeats 3 \
  --config bkd/cifar10n-worst --set "data.spec=cifar10:$cifar" \
  --set "data.labels=cifar10n:$data/cifar-n/CIFAR-10_human.pt:worst" --set amp=bf16 --set channels_last=true \
  --set eval_every=3 --set 'optim.milestones=[2]' --out "$out/speed-distributed-gpu"

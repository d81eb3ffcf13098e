#!/usr/bin/env bash
# MODUL's GPU run (issue "MODUL, complete"): a ResNet-34 teacher trained on the clean CIFAR-10 training set, then a
# ResNet-18 student on CIFAR-10 with universal noise rho1 = rho2 = 0.5 whose open-set images come from Tiny ImageNet
# (the 24 classes that overlap CIFAR-10's excluded): CE, VKD, DFND and MODUL, one seed, MODUL's 200-epoch schedule
# shortened (lr 0.1 /10 at 40% and 80%, batch 64, wd 1e-4; configs/modul/cifar10-*-cpu.yaml with the networks and
# sizes changed here). The paper (Table I, CIFAR-10 + ImageNet, 0.5 / 0.5): MODUL 95.81, DFND 93.41, VKD 87.53.
#
#   bash benchmarks/gpu_check.sh --fill .data                  # here, before (CIFAR-10, CIFAR-N, Tiny ImageNet)
#   # device run: command "bash benchmarks/modul_gpu.sh .data $OUT 8 15", carry [".data"], timeout_s 560
#
# Arguments: DATA OUT [EPOCHS (students, default 8)] [TEACHER_EPOCHS (default 15)]. DEVICE (default cuda) and
# SUBSET (training images, default 0: all 50,000) in the environment allow a CPU smoke run:
#   DEVICE=cpu SUBSET=300 bash benchmarks/modul_gpu.sh .data /tmp/modul-smoke 1 1
# Writes OUT/modul-teacher/ (the teacher run) and OUT/modul-cifar10-openset-gpu.{md,json} (commit them under
# benchmarks/results/ with the GPU's name).
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_run_env.sh
usage="usage: modul_gpu.sh DATA OUT [EPOCHS] [TEACHER_EPOCHS]"
data="${1:?$usage}" out="${2:?$usage}" epochs="${3:-8}" teacher_epochs="${4:-15}"
device="${DEVICE:-cuda}" subset="${SUBSET:-0}"
fast=()
[[ "$device" == cuda* ]] && fast=(--set amp=bf16 --set channels_last=true)
cifar="$(build_cifar10 "$data")"
pool="$(cd "$data" && pwd)/tinyimagenet/tinyimagenet-val-test-jpeg.tar.gz"
milestones() { python3 -c "import sys; e = int(sys.argv[1]); print(sorted({max(1, round(0.4 * e)), max(1, round(0.8 * e))}))" "$1"; }
teacher_subset="null"; [[ "$subset" != 0 ]] && teacher_subset="$subset"
python3 -m noisykd train --config modul/cifar10-teacher-cpu --out "$out/modul-teacher" --device "$device" \
  --set "data.spec=cifar10:$cifar" --set "data.train_subset=$teacher_subset" --set model.name=resnet34 \
  --set model.kwargs={} --set "optim.epochs=$teacher_epochs" --set "optim.milestones=$(milestones "$teacher_epochs")" \
  --set eval_every=5 "${fast[@]}"
python3 benchmarks/bkd_vs_ce.py --preset cifar10-openset --label-sets openset:0.5:0.5 --cifar-root "$cifar" \
  --ood "$pool" --teacher "$out/modul-teacher" --train-subset "$subset" --model resnet18 --device "$device" \
  --epochs "$epochs" --eval-every 2 --seeds 0 --methods ce vkd dfnd modul "${fast[@]}" \
  --out "$out/modul-cifar10-openset-gpu"

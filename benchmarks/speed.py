"""Training throughput: noisykd's on-device batched input pipeline vs a classic per-sample PIL DataLoader.

Usage:
    python benchmarks/speed.py [--device cpu|cuda] [--model small_cnn] [--image-size 32] [--n 4096]
                               [--batch-size 128] [--repeats 5] [--workers 2] [--data SPEC] [--threads T]
                               [--no-engine]
                               [--out benchmarks/results/speed-cpu]

The same network (same initial weights), batch size and optimiser (SGD, momentum 0.9) train with plain
cross-entropy under each input pipeline:

* ``ours``:    the noisykd way. The uint8 N x H x W x C training set lives on the device
               (``noisykd.engine.feed.ImageFeed``); each epoch draws a random permutation, gathers batches by
               index and applies ``AugmentPipeline("weak", ..., padding=4, padding_mode="reflect")`` to the
               whole batch on the device, then forward / backward / step.
* ``classic``: what reference implementations do. A per-sample ``torch.utils.data.Dataset`` whose
               ``__getitem__`` turns one uint8 HWC image into a PIL image, pads 4 px (reflect), random-crops
               back to size, random-flips horizontally (as torchvision's RandomCrop / RandomHorizontalFlip on
               a PIL image), converts to a float CHW tensor and normalises (ToTensor + Normalize); served by
               ``DataLoader(shuffle=True, num_workers=--workers, persistent_workers=True, pin_memory on
               cuda)``.
* ``engine``:  (unless ``--no-engine``) the full ``noisykd.engine.Trainer`` running method ``ce`` with the
               same network, batch size and optimiser; its own per-epoch ``img_per_s`` (training loop only,
               evaluation and checkpoint writing excluded).

Protocol: one warm-up epoch per pipeline, then ``--repeats`` timed epochs per pipeline, interleaved
(ours, classic, engine, ours, classic, engine, ...) so that background load on a shared machine hits all
alike; then the same for the data pipelines alone (batches + augmentation, no network). Reported: medians.
On CUDA the device is synchronised before every clock read.

Data: synthetic random uint8 images (N = --n, 10 classes, --image-size square, 3 channels), so nothing needs
to be on disk; ``--data SPEC`` (e.g. ``cifar10:ROOT``) uses a real noisykd data source instead, subset to
--n (stratified, seed 0).

Outputs: a Markdown table on stdout, and ``--out`` + ``.json`` (every raw timing, medians, ratios, config,
environment, the exact command) and ``.md`` (the table and the command that produced it).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from noisykd.augment import CIFAR10_MEAN, CIFAR10_STD, AugmentPipeline
from noisykd.data import ImageDataset, ImageSplit, Normalization, load_dataset
from noisykd.engine.feed import ImageFeed
from noisykd.engine.report import cpu_model  # noqa: F401  (also used by the other benchmarks)
from noisykd.engine.setup import stratified_pick
from noisykd.models import count_parameters, create_model

LR, MOMENTUM, WEIGHT_DECAY = 0.02, 0.9, 5e-4  # the engine's defaults (noisykd.config.OptimConfig)
PADDING, PAD_MODE = 4, "reflect"


# --------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------

def make_data(args) -> tuple[ImageDataset, tuple[float, ...], tuple[float, ...]]:
    """The training set (no test split) and its normalisation constants."""
    if args.data:
        source = load_dataset(args.data)
        train = source.train
        if args.n < len(train):
            train = train.subset(stratified_pick(train.labels, args.n, np.random.default_rng(0)))
        dataset = ImageDataset(source.name, source.classes, train, normalization=source.normalization)
        norm = source.normalization or Normalization.of_images(train.images)  # CIFAR's constants, else the images'
        return dataset, norm.mean, norm.std
    rng = np.random.default_rng(0)
    s = args.image_size
    images = rng.integers(0, 256, (args.n, s, s, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, args.n).astype(np.int64)
    train = ImageSplit(images, labels, np.arange(args.n, dtype=np.int64))
    return ImageDataset("synthetic", tuple(str(c) for c in range(10)), train), CIFAR10_MEAN, CIFAR10_STD


class ClassicDataset(torch.utils.data.Dataset):
    """Per-sample PIL augmentation, as torchvision's
    ``Compose([RandomCrop(size, padding=4, padding_mode="reflect"), RandomHorizontalFlip(), ToTensor(),
    Normalize(mean, std)])`` does it, written with PIL / numpy (torchvision is not a dependency).

    Random draws use torch's global RNG, as torchvision does (seeded per DataLoader worker)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean, std, padding: int = PADDING):
        self.images, self.labels, self.padding = images, labels, padding
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i])
        w, h = img.size
        p = self.padding
        # RandomCrop(padding_mode="reflect") on a PIL image: torchvision pads through numpy, then crops with PIL
        img = Image.fromarray(np.pad(np.asarray(img), ((p, p), (p, p), (0, 0)), mode="reflect"))
        top = int(torch.randint(0, h + 2 * p - h + 1, size=(1,)))
        left = int(torch.randint(0, w + 2 * p - w + 1, size=(1,)))
        img = img.crop((left, top, left + w, top + h))
        if torch.rand(1) < 0.5:  # RandomHorizontalFlip
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        # ToTensor: HWC uint8 -> CHW float in [0, 1]; Normalize
        x = torch.from_numpy(np.array(img, copy=True)).view(h, w, -1).permute(2, 0, 1).contiguous()
        x = x.to(torch.float32).div(255)
        return x.sub_(self.mean).div_(self.std), int(self.labels[i])


# --------------------------------------------------------------------------------------------------------
# The pipelines: each gives train_epoch() and data_epoch() -> images processed (timing is done outside)
# --------------------------------------------------------------------------------------------------------

def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


class _Pipeline:
    """A training loop over ``self._batches()`` (float images, labels on the device); subclasses differ only
    in how they produce the batches."""

    def train_epoch(self) -> int:
        self.model.train()
        seen = 0
        for x, y in self._batches():
            train_step(self.model, self.optimizer, x, y)
            seen += len(y)
        return seen

    def data_epoch(self) -> int:
        return sum(len(y) for _, y in self._batches())


class Ours(_Pipeline):
    """uint8 set on the device, permutation, gather by index, batched ``weak`` augmentation on the device."""

    name = "ours"

    def __init__(self, dataset: ImageDataset, mean, std, model: nn.Module, device: torch.device, batch_size: int):
        h, w, _ = dataset.image_shape
        self.feed = ImageFeed(dataset.train, device, on_device="yes")
        self.pipe = AugmentPipeline("weak", mean, std, image_size=(h, w), padding=PADDING, padding_mode=PAD_MODE)
        self.gen_shuffle = torch.Generator().manual_seed(0)
        self.gen_augment = torch.Generator(device=device).manual_seed(1)
        self.model, self.optimizer, self.batch_size = model, make_optimizer(model), batch_size

    def _batches(self):
        order = torch.randperm(len(self.feed), generator=self.gen_shuffle)
        for images, labels, _ in self.feed.batches(order, self.batch_size, fold_lone_last=True):
            yield self.pipe(images, self.gen_augment), labels



class Classic(_Pipeline):
    """Per-sample PIL Dataset behind a multi-worker DataLoader."""

    name = "classic"

    def __init__(self, dataset: ImageDataset, mean, std, model: nn.Module, device: torch.device, batch_size: int,
                 workers: int):
        train = dataset.train
        self.loader = torch.utils.data.DataLoader(
            ClassicDataset(train.images, train.labels, mean, std), batch_size=batch_size, shuffle=True,
            num_workers=workers, persistent_workers=workers > 0, pin_memory=device.type == "cuda",
            drop_last=True, generator=torch.Generator().manual_seed(0))
        self.device = device
        self.non_blocking = device.type == "cuda"
        self.model, self.optimizer = model, make_optimizer(model)

    def _batches(self):
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=self.non_blocking), y.to(self.device, non_blocking=self.non_blocking)



class Engine:
    """The full ``noisykd.engine.Trainer`` (method ``ce``), one epoch per call; reports the engine's own timing.

    Drives ``Trainer.build()`` and then the per-epoch loop ``train_epoch``, so that its epochs can be
    interleaved with the other pipelines; each epoch also evaluates (nothing: no test split), checkpoints and
    logs, outside the engine's own timed window.
    """

    name = "engine"

    def __init__(self, dataset: ImageDataset, model_name: str, device: torch.device, batch_size: int,
                 epochs: int, model: nn.Module):
        from noisykd.config import RunConfig
        from noisykd.engine import Trainer
        from noisykd.engine.setup import prepare_data

        self.tmp = tempfile.TemporaryDirectory(prefix="noisykd-speed-")
        cfg = RunConfig(method="ce", device=str(device), out_dir=self.tmp.name)
        cfg.model.name = model_name
        cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay = LR, MOMENTUM, WEIGHT_DECAY
        cfg.optim.batch_size, cfg.optim.epochs, cfg.optim.schedule = batch_size, epochs, "constant"
        cfg.augment.policy, cfg.augment.padding, cfg.augment.pad_mode = "weak", PADDING, PAD_MODE
        cfg.data_on_device = "yes"
        # the same initial weights as the other pipelines (the user-model path deep-copies it)
        self.trainer = Trainer(cfg, model=copy.deepcopy(model), data=prepare_data(cfg.data, dataset=dataset),
                               progress=False)
        self.trainer.build()
        Path(self.tmp.name).mkdir(parents=True, exist_ok=True)

    def train_epoch_timed(self) -> tuple[int, float]:
        t = self.trainer
        t.train_epoch(t.epoch)
        row = t.history[-1]
        return round(row["img_per_s"] * row["epoch_time_s"]), row["epoch_time_s"]

    def close(self) -> None:
        self.tmp.cleanup()


# --------------------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------------------

def timed(fn, sync) -> tuple[int, float]:
    sync()
    start = time.perf_counter()
    images = fn()
    sync()
    return images, time.perf_counter() - start


def measure(runs: dict, repeats: int, label: str) -> dict[str, list[dict]]:
    """One warm-up call per runner, then ``repeats`` rounds calling each runner once, interleaved."""
    out: dict[str, list[dict]] = {name: [] for name in runs}
    for name, fn in runs.items():
        images, sec = fn()
        print(f"  [{label}] warm-up {name}: {images / sec:,.0f} img/s ({sec:.2f} s)", file=sys.stderr)
    for r in range(repeats):
        for name, fn in runs.items():
            images, sec = fn()
            out[name].append({"images": images, "seconds": sec, "img_per_s": images / sec,
                              "loadavg_1min_after": os.getloadavg()[0]})
            print(f"  [{label}] repeat {r + 1}/{repeats} {name}: {images / sec:,.0f} img/s ({sec:.2f} s)",
                  file=sys.stderr)
    return out


def summarize(raw: list[dict]) -> dict:
    rates = [r["img_per_s"] for r in raw]
    return {"median_img_per_s": statistics.median(rates), "min_img_per_s": min(rates), "max_img_per_s": max(rates),
            "median_epoch_s": statistics.median(r["seconds"] for r in raw)}


def markdown(result: dict) -> str:
    cfg, env, res = result["config"], result["environment"], result["results"]
    where = env["gpu"] if env.get("gpu") else f"{env['cpu_model']}, {env['cpu_count']} cores"
    lines = [
        f"# Training throughput: {cfg['model']} on {cfg['data']}, {cfg['device']}",
        "",
        f"Command: `{result['command']}`",
        "",
        f"{result['date']}; {where}; torch {env['torch']} ({env['torch_num_threads']} intra-op threads); "
        f"batch {cfg['batch_size']}, N = {cfg['n']} images {cfg['image_shape'][0]}x{cfg['image_shape'][1]}x"
        f"{cfg['image_shape'][2]}, SGD momentum {MOMENTUM}, plain cross-entropy; {cfg['model_parameters']:,} "
        f"parameters. Medians of {cfg['repeats']} interleaved epochs per pipeline after one warm-up epoch each.",
        "",
        "| pipeline | train img/s (median) | min - max | epoch s (median) | data only img/s (median) |",
        "|---|---:|---:|---:|---:|",
    ]
    descriptions = {"ours": "ours: uint8 on device, gather by index, batched weak aug",
                    "classic": f"classic: per-sample PIL Dataset, DataLoader({cfg['workers']} workers)",
                    "engine": "noisykd Trainer (method ce), engine's own timing"}
    for name, train in res["train"].items():
        data = res["data_only"].get(name)
        data_cell = f"{data['median_img_per_s']:,.0f}" if data else "(as ours)"
        lines.append(f"| {descriptions[name]} | {train['median_img_per_s']:,.0f} | "
                     f"{train['min_img_per_s']:,.0f} - {train['max_img_per_s']:,.0f} | "
                     f"{train['median_epoch_s']:.2f} | {data_cell} |")
    loads = [r["loadavg_1min_after"] for runs in result["raw"].values() for raw in runs.values() for r in raw]
    lines += ["", f"1-min load average of the machine during the timed epochs: {min(loads):.1f} - {max(loads):.1f} "
              f"(on {env['cpu_count']} cores; includes this benchmark's own load)."]
    ratios = result["ratios"]
    lines += ["", f"- Training speed-up, ours / classic (medians, same run): **{ratios['train_ours_over_classic']:.2f}x**",
              f"- Data pipeline alone, ours / classic: {ratios['data_ours_over_classic']:.2f}x"]
    if "train_engine_over_classic" in ratios:
        lines.append(f"- Full engine / classic: {ratios['train_engine_over_classic']:.2f}x")
    lines += ["", "The machine may be shared with other work: absolute numbers are noisy; the ratio, measured in "
              "the same run with interleaved epochs, is the meaningful figure. Raw timings: the `.json` file "
              "next to this one.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--image-size", type=int, default=32, help="side of the synthetic images")
    parser.add_argument("--n", type=int, default=4096, help="training images")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the classic pipeline")
    parser.add_argument("--data", default=None, help="a noisykd data spec (e.g. cifar10:ROOT) instead of synthetic")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads in the training process (default: leave torch's default)")
    parser.add_argument("--no-engine", action="store_true", help="skip the full-Trainer line")
    parser.add_argument("--out", default="benchmarks/results/speed-cpu", help="output prefix (.json and .md)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.n < 2 * args.batch_size:
        parser.error("need --repeats >= 1 and --n >= 2 x --batch-size")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda but CUDA is not available")
        sync = lambda: torch.cuda.synchronize(device)  # noqa: E731
    else:
        sync = lambda: None  # noqa: E731

    load_at_start = os.getloadavg()
    dataset, mean, std = make_data(args)
    h, w, c = dataset.image_shape
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=dataset.num_classes, in_channels=c, image_size=(h, w))
    ours = Ours(dataset, mean, std, copy.deepcopy(model).to(device), device, args.batch_size)
    classic = Classic(dataset, mean, std, copy.deepcopy(model).to(device), device, args.batch_size, args.workers)
    engine = None if args.no_engine else Engine(dataset, args.model, device, args.batch_size, 1 + args.repeats, model)

    print(f"{args.model} ({count_parameters(model):,} params), {len(dataset.train)} images {h}x{w}x{c}, "
          f"batch {args.batch_size}, {device}, {torch.get_num_threads()} threads", file=sys.stderr)
    train_runs = {"ours": lambda: timed(ours.train_epoch, sync), "classic": lambda: timed(classic.train_epoch, sync)}
    if engine is not None:
        train_runs["engine"] = engine.train_epoch_timed
    try:
        raw_train = measure(train_runs, args.repeats, "train")
        raw_data = measure({"ours": lambda: timed(ours.data_epoch, sync),
                            "classic": lambda: timed(classic.data_epoch, sync)}, args.repeats, "data only")
    finally:
        if engine is not None:
            engine.close()

    train = {k: summarize(v) for k, v in raw_train.items()}
    data = {k: summarize(v) for k, v in raw_data.items()}
    ratios = {"train_ours_over_classic": train["ours"]["median_img_per_s"] / train["classic"]["median_img_per_s"],
              "data_ours_over_classic": data["ours"]["median_img_per_s"] / data["classic"]["median_img_per_s"]}
    if "engine" in train:
        ratios["train_engine_over_classic"] = (train["engine"]["median_img_per_s"]
                                               / train["classic"]["median_img_per_s"])
    env = {"torch": torch.__version__, "numpy": np.__version__, "pillow": PIL.__version__,
           "python": platform.python_version(), "platform": platform.platform(), "cpu_model": cpu_model(),
           "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
           "torch_num_threads": torch.get_num_threads(), "torch_num_interop_threads": torch.get_num_interop_threads(),
           "loadavg_at_start": list(load_at_start), "loadavg_at_end": list(os.getloadavg())}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    result = {
        "benchmark": "speed: ours (on-device uint8 + batched augmentation) vs classic (per-sample PIL DataLoader)",
        "command": "python " + shlex.join([sys.argv[0]] + (sys.argv[1:] if argv is None else list(argv))),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "config": {"device": str(device), "model": args.model, "model_parameters": count_parameters(model),
                   "data": args.data or "synthetic", "n": len(dataset.train), "image_shape": [h, w, c],
                   "num_classes": dataset.num_classes, "batch_size": args.batch_size, "repeats": args.repeats,
                   "warmup_epochs": 1, "workers": args.workers, "interleaved": True,
                   "threads": args.threads if args.threads is not None else "torch default",
                   "optimizer": {"name": "sgd", "lr": LR, "momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY},
                   "augmentation": {"policy": "weak", "padding": PADDING, "padding_mode": PAD_MODE, "flip_p": 0.5},
                   "mean": list(mean), "std": list(std), "engine_line": engine is not None},
        "environment": env,
        "results": {"train": train, "data_only": data},
        "ratios": ratios,
        "raw": {"train": raw_train, "data_only": raw_data},
    }
    text = markdown(result)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_name(out.name + ".json").write_text(json.dumps(result, indent=2) + "\n")
        out.with_name(out.name + ".md").write_text(text)
        print(f"wrote {out}.json and {out}.md", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()

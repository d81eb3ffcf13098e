"""Throughput of the batched policies vs per-image PIL / numpy loops (what DataLoader workers do).

Usage: python benchmarks/augment_speed.py [--batch 512] [--repeats 30] [--threads 2] [--device cpu|cuda]
                                          [--per-op] [--out benchmarks/results/augment-speed-cpu]

Prints images/s (median over repeats) for each variant and the speed-up of each batched policy over its
per-image loop: ``weak`` against a PIL and a numpy crop + flip loop; the NRD student view
``randaugment(n=1, m=3, cutout_size=16)`` against torchvision's RandAugment(1, 3) written out with PIL, then crop,
flip, normalise and cutout per image; the NRD teacher view ``augmix(severity=3, width=3)`` against AugMix's
``aug()`` (google-research/augmix) written out with PIL, then crop, flip and normalise per image. The loops run
single-threaded in this process, like one DataLoader worker; multiply their rate by the number of workers for
a whole host. ``--per-op`` adds the cost of each AugMix op alone, applied to every image of the batch (ours, per
image of the batch) against the same op on one PIL image at a time. Timings on a shared machine are noisy: read the medians, and the load averages recorded before
and after the run (with --out: OUT.json and OUT.md, with the command, machine and torch version).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

from noisykd.augment import (AUGMIX_OPS, CIFAR10_MEAN, CIFAR10_STD, RANDAUGMENT_OPS, AugmentPipeline,
                             randaugment_magnitudes)
from noisykd.augment.augmix import _augmix_op

MEAN = np.array(CIFAR10_MEAN, dtype=np.float32)
STD = np.array(CIFAR10_STD, dtype=np.float32)


def pil_loop(images: np.ndarray, rng: np.random.Generator, padding: int = 4) -> np.ndarray:
    """torchvision-style RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize, per image."""
    out = np.empty((len(images), images.shape[3], images.shape[1], images.shape[2]), dtype=np.float32)
    h, w = images.shape[1:3]
    for i, img in enumerate(images):
        pil = ImageOps.expand(Image.fromarray(img), border=padding, fill=0)
        dy, dx = rng.integers(0, 2 * padding + 1, size=2)
        pil = pil.crop((dx, dy, dx + w, dy + h))
        if rng.random() < 0.5:
            pil = pil.transpose(Image.FLIP_LEFT_RIGHT)
        arr = np.asarray(pil, dtype=np.float32) / 255.0
        out[i] = ((arr - MEAN) / STD).transpose(2, 0, 1)
    return out


def numpy_loop(images: np.ndarray, rng: np.random.Generator, padding: int = 4) -> np.ndarray:
    """The same in plain numpy, per image (a faster loop than PIL, still one image at a time)."""
    out = np.empty((len(images), images.shape[3], images.shape[1], images.shape[2]), dtype=np.float32)
    h, w = images.shape[1:3]
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    for i in range(len(images)):
        dy, dx = rng.integers(0, 2 * padding + 1, size=2)
        crop = padded[i, dy:dy + h, dx:dx + w]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out[i] = ((crop.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)
    return out


def _crop_flip_normalize(arr: np.ndarray, rng: np.random.Generator, padding: int = 4) -> np.ndarray:
    """H x W x C array (uint8 or float 0-255) -> normalised float32 C x H x W: zero-pad crop, flip, normalise."""
    h, w = arr.shape[:2]
    padded = np.pad(arr, ((padding, padding), (padding, padding), (0, 0)))
    dy, dx = rng.integers(0, 2 * padding + 1, size=2)
    crop = padded[dy:dy + h, dx:dx + w]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return ((crop.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)


_ENHANCERS = {"brightness": ImageEnhance.Brightness, "color": ImageEnhance.Color,
              "contrast": ImageEnhance.Contrast, "sharpness": ImageEnhance.Sharpness}


def _pil_randaugment_op(im: Image.Image, name: str, v: float) -> Image.Image:
    """torchvision's ``_apply_op`` on a PIL image (NEAREST, fill 0)."""
    size, affine = im.size, Image.Transform.AFFINE
    if name == "identity":
        return im
    if name == "shear_x":
        return im.transform(size, affine, (1, v, 0, 0, 1, 0), Image.Resampling.NEAREST)
    if name == "shear_y":
        return im.transform(size, affine, (1, 0, 0, v, 1, 0), Image.Resampling.NEAREST)
    if name == "translate_x":
        return im.transform(size, affine, (1, 0, -int(v), 0, 1, 0), Image.Resampling.NEAREST)
    if name == "translate_y":
        return im.transform(size, affine, (1, 0, 0, 0, 1, -int(v)), Image.Resampling.NEAREST)
    if name == "rotate":
        return im.rotate(v, Image.Resampling.NEAREST)
    if name in _ENHANCERS:
        return _ENHANCERS[name](im).enhance(1.0 + v)
    if name == "posterize":
        return ImageOps.posterize(im, int(v))
    if name == "solarize":
        return ImageOps.solarize(im, v)
    return getattr(ImageOps, name)(im)  # autocontrast, equalize


def pil_randaugment_loop(images: np.ndarray, rng: np.random.Generator, n: int = 1, m: int = 3,
                         cutout_size: int = 16) -> np.ndarray:
    """torchvision's RandAugment(n, m) on each PIL image, then crop 32 pad 4, flip, normalise, Cutout."""
    h, w = images.shape[1:3]
    table = {name: (float(v[m]) if v is not None else 0.0, signed)
             for name, (v, signed) in randaugment_magnitudes(31, h, w).items()}
    out = np.empty((len(images), images.shape[3], h, w), dtype=np.float32)
    for i, img in enumerate(images):
        im = Image.fromarray(img)
        for _ in range(n):
            name = RANDAUGMENT_OPS[rng.integers(len(RANDAUGMENT_OPS))]
            v, signed = table[name]
            if signed and rng.random() < 0.5:
                v = -v
            im = _pil_randaugment_op(im, name, v)
        x = _crop_flip_normalize(np.asarray(im), rng)
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        x[:, max(cy - cutout_size // 2, 0):max(cy - cutout_size // 2 + cutout_size, 0),
          max(cx - cutout_size // 2, 0):max(cx - cutout_size // 2 + cutout_size, 0)] = 0.0
        out[i] = x
    return out


def _pil_augmix_op(im: Image.Image, name: str, severity: float, rng: np.random.Generator) -> Image.Image:
    """AugMix's ``augmentations.<name>(img, severity)``: level ~ U(0.1, severity), PIL BILINEAR geometry."""
    level = rng.uniform(0.1, severity)
    size, affine, bilinear = im.size, Image.Transform.AFFINE, Image.Resampling.BILINEAR
    if name == "autocontrast":
        return ImageOps.autocontrast(im)
    if name == "equalize":
        return ImageOps.equalize(im)
    if name == "posterize":
        return ImageOps.posterize(im, 4 - int(level * 4 / 10))
    if name == "solarize":
        return ImageOps.solarize(im, 256 - int(level * 256 / 10))
    sign = -1 if rng.uniform() > 0.5 else 1
    if name == "rotate":
        return im.rotate(sign * int(level * 30 / 10), resample=bilinear)
    if name == "shear_x":
        return im.transform(size, affine, (1, sign * level * 0.3 / 10, 0, 0, 1, 0), resample=bilinear)
    if name == "shear_y":
        return im.transform(size, affine, (1, 0, 0, sign * level * 0.3 / 10, 1, 0), resample=bilinear)
    if name == "translate_x":
        return im.transform(size, affine, (1, 0, sign * int(level * size[0] / 3 / 10), 0, 1, 0), resample=bilinear)
    return im.transform(size, affine, (1, 0, 0, 0, 1, sign * int(level * size[1] / 3 / 10)), resample=bilinear)


def pil_augmix_loop(images: np.ndarray, rng: np.random.Generator, severity: float = 3, width: int = 3,
                    alpha: float = 1.0) -> np.ndarray:
    """AugMix's ``aug()`` per PIL image (depth 1-3), mixed in float, then crop 32 pad 4, flip, normalise."""
    out = np.empty((len(images), images.shape[3], images.shape[1], images.shape[2]), dtype=np.float32)
    for i, img in enumerate(images):
        ws = np.float32(rng.dirichlet([alpha] * width))
        m = np.float32(rng.beta(alpha, alpha))
        im = Image.fromarray(img)
        mix = np.zeros(img.shape, dtype=np.float32)
        for k in range(width):
            aug = im
            for _ in range(rng.integers(1, 4)):
                aug = _pil_augmix_op(aug, AUGMIX_OPS[rng.integers(len(AUGMIX_OPS))], severity, rng)
            mix += ws[k] * np.asarray(aug, dtype=np.float32)
        out[i] = _crop_flip_normalize((1 - m) * img.astype(np.float32) + m * mix, rng)
    return out


def augmix_op_costs(images: np.ndarray, batch: torch.Tensor, repeats: int, rng: np.random.Generator,
                    sync=lambda: None, severity: float = 3) -> dict[str, tuple[float, float]]:
    """{op: (our microseconds per image, PIL's)}: each AugMix op alone on every image of the batch (levels ~
    U(0.1, severity), random signs, as AugMix draws them) against the same op on one PIL image at a time."""
    b = len(images)
    x = batch.permute(0, 3, 1, 2).contiguous()  # uint8 B x C x H x W, as the policies hold it
    levels = torch.from_numpy(rng.uniform(0.1, severity, b)).to(x.device)
    negative = torch.from_numpy(rng.random(b) > 0.5).to(x.device)
    everyone = torch.arange(b, device=x.device)
    pil_images = [Image.fromarray(img) for img in images]
    costs = {}
    for name in AUGMIX_OPS:
        op = _augmix_op(name, levels, negative)
        ours = median_seconds(lambda: op(x, everyone), repeats, sync) / b
        pil = median_seconds(lambda: [_pil_augmix_op(im, name, severity, rng) for im in pil_images],
                             max(3, repeats // 5)) / b
        costs[name] = (1e6 * ours, 1e6 * pil)
    return costs


def median_seconds(fn, repeats: int, sync=lambda: None) -> float:
    for _ in range(3):  # warm-up: allocator, caches, kernels
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--per-op", action="store_true", help="also time each AugMix op alone, ours vs PIL")
    parser.add_argument("--out", default=None, help="write OUT.json and OUT.md (command, machine, load, rates)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch, 32, 32, 3), dtype=np.uint8)
    batch = torch.from_numpy(images).to(device)
    g = torch.Generator(device=device).manual_seed(0)

    rates = {}
    for name in ("weak", "weak_cutout", "two_weak"):
        for mode in ("constant", "reflect"):
            pipe = AugmentPipeline(name, CIFAR10_MEAN, CIFAR10_STD, 32, padding_mode=mode)
            sec = median_seconds(lambda: pipe(batch, g), args.repeats, sync)
            rates[f"batched {name} ({mode}, {device.type}, {args.threads} thr)"] = args.batch / sec
    strong = {"randaugment": ("randaugment(n=1, m=3, cutout_size=16)", dict(n=1, m=3, cutout_size=16)),
              "augmix": ("augmix(severity=3, width=3)", dict(severity=3, width=3))}
    for name, (label, options) in strong.items():
        pipe = AugmentPipeline(name, CIFAR10_MEAN, CIFAR10_STD, 32, padding_mode="constant", **options)
        sec = median_seconds(lambda: pipe(batch, g), args.repeats, sync)
        rates[f"batched {label} ({device.type}, {args.threads} thr)"] = args.batch / sec
    loop_repeats = max(3, args.repeats // 5)
    rates["per-image PIL loop (1 thread)"] = args.batch / median_seconds(lambda: pil_loop(images, rng), loop_repeats)
    rates["per-image numpy loop (1 thread)"] = args.batch / median_seconds(lambda: numpy_loop(images, rng),
                                                                          loop_repeats)
    rates["per-image PIL RandAugment(1, 3) + crop/flip/cutout (1 thread)"] = args.batch / median_seconds(
        lambda: pil_randaugment_loop(images, rng), loop_repeats)
    rates["per-image PIL AugMix(3, 3) + crop/flip (1 thread)"] = args.batch / median_seconds(
        lambda: pil_augmix_loop(images, rng), loop_repeats)

    weak = rates[f"batched weak (constant, {device.type}, {args.threads} thr)"]
    speedups = {"batched weak over the PIL loop": weak / rates["per-image PIL loop (1 thread)"],
                "batched weak over the numpy loop": weak / rates["per-image numpy loop (1 thread)"]}
    for name, loop in (("randaugment", "per-image PIL RandAugment(1, 3) + crop/flip/cutout (1 thread)"),
                       ("augmix", "per-image PIL AugMix(3, 3) + crop/flip (1 thread)")):
        ours = rates[f"batched {strong[name][0]} ({device.type}, {args.threads} thr)"]
        speedups[f"batched {name} over its PIL loop"] = ours / rates[loop]
    width = max(map(len, rates))
    lines = [f"{label:<{width}}  {rate:>12,.0f} img/s  ({1e6 / rate:7.2f} us/img)" for label, rate in rates.items()]
    lines += [f"speed-up of {what}: {ratio:.1f}x" for what, ratio in speedups.items()]
    op_costs = augmix_op_costs(images, batch, args.repeats, rng, sync) if args.per_op else {}
    if op_costs:
        lines += ["", f"AugMix ops alone, microseconds per image (ours: the whole batch at once, {args.threads} thr; "
                      "PIL: one image at a time, 1 thread):"]
        lines += [f"  {name:<12} ours {ours:8.1f}   PIL {pil:8.1f}   ratio PIL/ours {pil / ours:5.2f}"
                  for name, (ours, pil) in op_costs.items()]
    print("\n".join(lines))
    if args.out:
        write_results(Path(args.out), args, rates, speedups, lines, load_before, os.getloadavg(), op_costs)


def write_results(out: Path, args, rates: dict, speedups: dict, lines: list[str], load_before, load_after,
                  op_costs: dict | None = None) -> None:
    """OUT.json (every rate and ratio, with the command, machine and load) and OUT.md (the same as text)."""
    from speed import cpu_model  # benchmarks/speed.py: the CPU's model name

    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else cpu_model()
    header = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "command": "python " + " ".join(sys.argv), "device": device, "torch": torch.__version__,
              "threads": args.threads, "batch": args.batch, "repeats": args.repeats,
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in load_after]}
    out.parent.mkdir(parents=True, exist_ok=True)
    per_op = {name: {"ours_us_per_image": a, "pil_us_per_image": b} for name, (a, b) in (op_costs or {}).items()}
    Path(f"{out}.json").write_text(json.dumps({**header, "img_per_s": rates, "speedup": speedups,
                                               **({"augmix_op_us_per_image": per_op} if per_op else {})}, indent=1))
    Path(f"{out}.md").write_text("\n".join([
        "# Augmentation speed: batched policies vs per-image loops", "",
        f"Command: `{header['command']}`", "",
        f"{header['date']}; {device}; torch {header['torch']}; batch {args.batch}, median of {args.repeats} "
        f"repeats (loops: of {max(3, args.repeats // 5)}); load average (1, 5, 15 min) before "
        f"{header['load_average_before']}, after {header['load_average_after']}.", "",
        "```", *lines, "```", "",
        "The per-image loops run single-threaded in this process, like one DataLoader worker; the batched "
        "policies use the threads above.", ""]))


if __name__ == "__main__":
    main()

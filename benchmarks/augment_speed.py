"""Throughput of the batched ``weak`` policy vs a per-image PIL / numpy loop (what DataLoader workers do).

Usage: python benchmarks/augment_speed.py [--batch 512] [--repeats 30] [--threads 2] [--device cpu|cuda]

Prints images/s (median over repeats) for each variant and the speed-up of the batched policy over the
per-image loops. The loops run single-threaded in this process, like one DataLoader worker; multiply their
rate by the number of workers for a whole host. Timings on a shared machine are noisy: read the medians.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from PIL import Image, ImageOps

from noisykd.augment import CIFAR10_MEAN, CIFAR10_STD, AugmentPipeline

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
    args = parser.parse_args()
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
    loop_repeats = max(3, args.repeats // 5)
    rates["per-image PIL loop (1 thread)"] = args.batch / median_seconds(lambda: pil_loop(images, rng), loop_repeats)
    rates["per-image numpy loop (1 thread)"] = args.batch / median_seconds(lambda: numpy_loop(images, rng),
                                                                          loop_repeats)

    width = max(map(len, rates))
    for label, rate in rates.items():
        print(f"{label:<{width}}  {rate:>12,.0f} img/s  ({1e6 / rate:7.2f} us/img)")
    weak = rates[f"batched weak (constant, {device.type}, {args.threads} thr)"]
    print(f"speed-up of batched weak over the PIL loop:   {weak / rates['per-image PIL loop (1 thread)']:.1f}x")
    print(f"speed-up of batched weak over the numpy loop: {weak / rates['per-image numpy loop (1 thread)']:.1f}x")


if __name__ == "__main__":
    main()

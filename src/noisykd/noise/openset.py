"""Universal (closed- plus open-set) label noise, as in MODUL: some images are replaced by out-of-distribution ones.

Of the N training samples, ``round(ρ1·N)`` become noisy; of those, ``round(ρ2·noisy)`` become open-set (their
image is swapped for one from an OOD pool, their in-distribution label is kept) and the rest closed-set
(symmetric noise: a uniformly drawn *other* class).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from PIL import Image

from ..data.base import ImageSplit, validate_labels
from ..errors import DataError
from .labels import NoisyLabels, _as_int64, check_rate, check_seed, rate_from_text


#: the noise spec of universal noise on the command line and in configs
OPENSET_SPEC = "openset:RHO1:RHO2"


def parse_openset_spec(spec: str) -> tuple[float, float]:
    """``openset:RHO1:RHO2`` -> (rho1, rho2): RHO1 of the samples are noisy, RHO2 of those open-set; both in
    [0, 1]. A DataError names the spec and what was expected."""
    kind, _, rest = str(spec).strip().lower().partition(":")
    parts = rest.split(":")
    if kind != "openset" or len(parts) != 2:
        raise DataError(f"noise spec {spec!r}: expected {OPENSET_SPEC} (e.g. openset:0.5:0.5: half the samples "
                        "noisy, half of those with an out-of-distribution image)")
    rates = []
    for name, text in zip(("RHO1", "RHO2"), parts):
        try:
            rates.append(check_rate(rate_from_text(text), name))
        except ValueError as exc:  # not a number, or out of [0, 1] (DataError is a ValueError)
            detail = exc if isinstance(exc, DataError) else f"{name} {text!r} is not a number"
            raise DataError(f"noise spec {spec!r}: {detail}") from None
    return rates[0], rates[1]


def open_set_counts(n: int, noisy_fraction: float, open_fraction: float) -> tuple[int, int]:
    """(noisy, open-set) sample counts of ``open_set`` on n samples: round(ρ1·n) and round(ρ2·noisy), halves up."""
    n_noisy = _round_half_up(noisy_fraction * n)
    return n_noisy, _round_half_up(open_fraction * n_noisy)


def open_set(split: ImageSplit, num_classes: int, noisy_fraction: float, open_fraction: float,
             ood_images: np.ndarray, seed: int, ood_labels: np.ndarray | None = None,
             exclude_ood_classes=None, allow_reuse: bool = True) -> tuple[ImageSplit, NoisyLabels]:
    """Corrupt ``split`` with closed- and open-set noise. Returns ``(new_split, noisy_labels)``.

    split:          the clean training split (N x H x W x C uint8); never modified.
    noisy_fraction: ρ1 in [0, 1], the fraction of noisy samples (exactly ``round(ρ1·N)``).
    open_fraction:  ρ2 in [0, 1], the fraction of the noisy samples that are open-set.
    ood_images:     uint8 M x h x w [x c] (c in 1, 3), the out-of-distribution pool (a memmap is fine: only
                    the rows used are read). Pool images are resized to H x W with PIL bilinear when the size
                    differs, and converted grey→RGB (replicated) or RGB→grey (PIL's ITU-R 601-2 luma) as needed.
    ood_labels:     int M, the pool's own classes; needed only for ``exclude_ood_classes``.
    exclude_ood_classes: pool classes to drop first (e.g. ImageNet classes that overlap CIFAR's).

    Pool images are drawn without replacement; if the pool is smaller than the number of open-set samples,
    every pool image is used once before any is used again (a warning says so), or, with ``allow_reuse``
    False, that is an error naming both counts. An empty pool (after exclusion) with open-set samples to fill
    is an error.

    The returned split has a copy of the images (with the open-set rows replaced) and the new labels; indices
    are kept. The NoisyLabels (kind ``"open_set"``) has ``clean`` = the original labels (for an open-set sample
    this is the label it carries, not a true class: MODUL's convention), ``is_open_set`` marking the swapped
    images (they count as noisy), and in ``params["ood_rows"]`` the pool row used for each open-set sample in
    increasing sample order, so the images can be rebuilt from the saved file.
    """
    if not isinstance(split, ImageSplit):
        raise DataError(f"open_set expects an ImageSplit as split, got {type(split).__name__}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise DataError(f"num_classes must be a positive integer, got {num_classes!r}")
    num_classes = int(num_classes)
    clean = validate_labels(split.labels, num_classes, source="open_set split.labels",
                            expected_len=len(split.images))
    rho1, rho2 = check_rate(noisy_fraction, "noisy_fraction"), check_rate(open_fraction, "open_fraction")
    seed = check_seed(seed)
    target_shape = tuple(int(s) for s in split.images.shape[1:])
    if len(target_shape) != 3 or target_shape[2] not in (1, 3):
        raise DataError(f"open_set: split.images must be N x H x W x C with C in (1, 3), got {split.images.shape}")

    n = len(clean)
    n_noisy, n_open = open_set_counts(n, rho1, rho2)
    n_closed = n_noisy - n_open
    if n_closed and num_classes < 2:
        raise DataError("open_set: closed-set noise needs num_classes >= 2")
    if not isinstance(ood_images, np.ndarray):  # a memmap is an ndarray and stays one
        ood_images = np.asarray(ood_images)
    pool = _ood_pool(ood_images, ood_labels, exclude_ood_classes, n_open)
    if n_open > len(pool) and not allow_reuse:
        what = " after the exclusions" if exclude_ood_classes is not None and len(exclude_ood_classes) else ""
        raise DataError(f"the out-of-distribution pool has {len(pool):,} images{what} but {n_open:,} open-set "
                        f"samples need one each (RHO1 {rho1} x RHO2 {rho2} of {n:,}): give a larger pool, lower "
                        "RHO1 or RHO2, or allow images to repeat (data.ood_reuse=true)")

    rng = np.random.Generator(np.random.PCG64(seed))
    order = rng.permutation(n)
    open_rows = np.sort(order[:n_open])
    closed_rows = np.sort(order[n_open:n_noisy])
    ood_rows = _draw_pool(rng, pool, n_open)
    labels = clean.copy()
    if n_closed:
        # Uniform non-zero offset mod C: a uniformly drawn *other* class (closed-set noise is always wrong).
        labels[closed_rows] = (clean[closed_rows] + rng.integers(1, num_classes, size=n_closed)) % num_classes

    images = np.array(split.images, copy=True)  # also materialises a memmap: the input stays untouched
    if n_open:
        images[open_rows] = fit_images(ood_images[ood_rows], target_shape)
    is_open = np.zeros(n, dtype=bool)
    is_open[open_rows] = True

    excluded = [] if exclude_ood_classes is None else sorted(int(c) for c in np.unique(exclude_ood_classes))
    noisy = NoisyLabels(
        labels=labels, clean=clean, is_open_set=is_open, kind="open_set",
        params={"noisy_fraction": rho1, "open_fraction": rho2, "seed": seed, "num_classes": num_classes,
                "num_noisy": n_noisy, "num_open": n_open, "num_closed": n_closed,
                "closed_noise": "symmetric-other", "ood_pool_size": int(len(pool)),
                "exclude_ood_classes": excluded, "ood_reused": bool(n_open > len(pool)),
                "ood_rows": ood_rows.tolist()},
    )
    return ImageSplit(images, labels, np.array(split.indices, dtype=np.int64, copy=True)), noisy


def fit_images(images: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 K x H x W x C: ``images`` (uint8 K x h x w [x c]) converted to ``shape`` = (H, W, C).

    Channels: grey→RGB replicates, RGB→grey uses PIL's luma ("L"). Size: PIL bilinear resize when (h, w)
    differs. Images already of the right shape are copied unchanged.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    height, width, channels = shape
    if images.shape[1:] == (height, width, channels):
        return images.copy()
    mode = "RGB" if channels == 3 else "L"
    out = np.empty((len(images), height, width, channels), dtype=np.uint8)
    for k, img in enumerate(images):
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).convert(mode)
        if pil.size != (width, height):
            pil = pil.resize((width, height), Image.BILINEAR)
        arr = np.asarray(pil, dtype=np.uint8)
        out[k] = arr[..., None] if channels == 1 else arr
    return out


def _ood_pool(ood_images: np.ndarray, ood_labels, exclude, n_open: int) -> np.ndarray:
    """int64: the rows of ``ood_images`` that may be used, after dropping excluded classes."""
    if ood_images.dtype != np.uint8 or ood_images.ndim not in (3, 4) or (
            ood_images.ndim == 4 and ood_images.shape[-1] not in (1, 3)):
        raise DataError(f"ood_images must be uint8 M x h x w or M x h x w x C with C in (1, 3), "
                        f"got dtype {ood_images.dtype} and shape {ood_images.shape}")
    rows = np.arange(len(ood_images), dtype=np.int64)
    if exclude is not None:
        if ood_labels is None:
            raise DataError("exclude_ood_classes needs ood_labels (the class of each OOD image)")
        labels = _as_int64(ood_labels, "ood_labels")
        if len(labels) != len(ood_images):
            raise DataError(f"ood_labels has {len(labels)} entries for {len(ood_images)} ood_images; counts must match")
        excluded = _as_int64(np.atleast_1d(np.asarray(exclude)), "exclude_ood_classes")
        rows = rows[~np.isin(labels, excluded)]
    elif ood_labels is not None and len(ood_labels) != len(ood_images):
        raise DataError(f"ood_labels has {len(ood_labels)} entries for {len(ood_images)} ood_images; counts must match")
    if n_open and not len(rows):
        what = "after excluding classes " if exclude is not None else ""
        raise DataError(f"the OOD pool is empty {what}but {n_open} open-set images are needed")
    return rows


def _draw_pool(rng: np.random.Generator, pool: np.ndarray, k: int) -> np.ndarray:
    """k rows of ``pool``: without replacement when k <= len(pool), else whole shuffled passes of the pool."""
    if k <= len(pool):
        return rng.choice(pool, size=k, replace=False)
    warnings.warn(f"OOD pool has {len(pool)} images for {k} open-set samples; some images are used more than once",
                  stacklevel=3)
    passes = math.ceil(k / len(pool))
    return np.concatenate([rng.permutation(pool) for _ in range(passes)])[:k]


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))

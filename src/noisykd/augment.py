"""Batched, per-sample-random image augmentation on whatever device the batch lives on.

Why: reference implementations crop and flip one PIL image at a time on CPU workers, which cannot feed a GPU
(engineering.md, "Speed"). Here the data set stays on the device as uint8 and every op transforms a whole batch
with index arithmetic: no per-image Python loop, no host round trip.

Layout convention (one rule, two sides of it):

* A **stored batch** is uint8 ``B x H x W x C``, exactly as the engine keeps the data set and gathers a batch by
  index. :class:`AugmentPipeline`, every policy, and :func:`dataset_stats` take this layout.
* The **ops** (:func:`random_crop`, :func:`random_flip`, :func:`random_crop_flip`, :func:`cutout`,
  :func:`to_float_normalized`) take and return ``B x C x H x W``, the torch model layout. Turn a stored batch
  into that layout with :func:`channels_first` (a free ``permute`` view, no copy).
* What comes out of a policy is float32 ``B x C x H x W``, normalised with the data set's (mean, std).

Randomness: every random draw comes from the ``torch.Generator`` passed in, never from the global RNG, so
the engine can checkpoint and restore generator states and replay a run exactly. Draws happen on the
generator's device and are moved to the batch's device; on a GPU pass ``torch.Generator(device="cuda")`` to
keep them there. A CPU and a CUDA generator with the same seed give different (each reproducible) streams.

Order inside the ``weak`` policies (as in torchvision / DeVries & Taylor reference code): crop and flip on the
uint8 image (so zero padding is black, as ``RandomCrop(32, padding=4)`` on a PIL image), then normalise,
then cutout (so the erased square is 0 after normalisation, i.e. the data set's mean colour).

RandAugment (torchvision's table, :class:`RandAugment`, policy ``randaugment``; GJS's, from
ildoonet/pytorch-randaugment, :class:`GJSRandAugment`, policy ``randaugment_gjs``) and AugMix (:class:`AugMix`) give
every image its own ops, drawn from the generator, and apply each op to the images that drew it (a loop over
op types, chain depth and mixture width, never over images); the ops, with PIL's semantics, are in
:mod:`noisykd.augment_ops`.

Adding a policy::

    @register_policy("my_policy")
    def _my_policy(*, mean, std, image_size, strength=1.0):
        return MyPolicy(mean, std, strength)       # a Policy: (batch_u8 BHWC, generator) -> BCHW float

A library that only draws from the global RNG (e.g. kornia's augmentations) can be wrapped in
:func:`global_rng_from`, which seeds a forked global RNG from the generator and restores it afterwards.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

# The normalisation constants and statistics belong to the data layer; re-exported here for convenience.
from .data.normalization import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, dataset_stats
from . import augment_ops as O
from .errors import ConfigError, DataError
from .registry import Registry

PADDING_MODES = ("constant", "reflect", "replicate")


# --------------------------------------------------------------------------------------------------------
# Layout and normalisation
# --------------------------------------------------------------------------------------------------------

def channels_first(batch: torch.Tensor) -> torch.Tensor:
    """B x H x W x C -> B x C x H x W as a view (no copy; the result has channels-last strides)."""
    _check_4d(batch, "batch")
    return batch.permute(0, 3, 1, 2)


def to_float_normalized(batch_u8: torch.Tensor, mean: Sequence[float] | torch.Tensor,
                        std: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """uint8 B x C x H x W in 0-255 -> float32 B x C x H x W, ``(x / 255 - mean) / std`` per channel.

    mean, std: C values in [0, 1] units (or tensors of C values). The memory format of the input is kept
    (a channels-last view stays channels-last), so no transposing copy is made here.
    """
    _check_4d(batch_u8, "batch_u8")
    if batch_u8.dtype != torch.uint8:
        raise DataError(f"to_float_normalized: batch_u8 must be uint8 (0-255), got dtype {batch_u8.dtype}")
    scale, bias = _affine(mean, std, batch_u8.shape[1], batch_u8.device)
    return _normalize(batch_u8, scale, bias)


def _affine(mean, std, channels: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, bias), each 1 x C x 1 x 1 float32, with x_u8 * scale + bias == (x_u8 / 255 - mean) / std."""
    mean_t = torch.as_tensor(mean, dtype=torch.float64).flatten()
    std_t = torch.as_tensor(std, dtype=torch.float64).flatten()
    if mean_t.numel() != channels or std_t.numel() != channels:
        raise DataError(f"mean and std need {channels} values (one per channel), "
                        f"got {mean_t.numel()} and {std_t.numel()}")
    if bool((std_t <= 0).any()):
        raise ConfigError(f"std must be positive, got {std_t.tolist()}")
    # Folded in float64 so the single fused multiply-add loses no more precision than the textbook formula.
    scale = (1.0 / (255.0 * std_t)).to(torch.float32)
    bias = (-mean_t / std_t).to(torch.float32)
    return scale.view(1, -1, 1, 1).to(device), bias.view(1, -1, 1, 1).to(device)


def _normalize(batch_u8: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    # Conversion, then in-place multiply and add with the folded constants: fewer passes than /255, -mean,
    # /std, and (on CPU) about 3x faster than torch.addcmul with a broadcast ``self``.
    return batch_u8.float().mul_(scale).add_(bias)


# --------------------------------------------------------------------------------------------------------
# Random draws (all from the generator passed in)
# --------------------------------------------------------------------------------------------------------

def _check_generator(generator) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise ConfigError("augmentation needs an explicit torch.Generator (it never uses the global RNG), "
                          f"got {type(generator).__name__}")
    return generator


def _randint(high: int, size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """int64 tensor of ``size`` values uniform in [0, high), drawn on the generator's device, on ``device``."""
    draw = torch.randint(0, high, (size,), generator=generator, device=generator.device)
    return draw.to(device, non_blocking=True)


def _bernoulli(p: float, size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """bool tensor of ``size`` values, each True with probability p (p=1 always, p=0 never: rand < 1)."""
    draw = torch.rand((size,), generator=generator, device=generator.device) < p
    return draw.to(device, non_blocking=True)


def _uniform(size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """float64 tensor of ``size`` values uniform in [0, 1), drawn on the generator's device, on ``device``."""
    draw = torch.rand((size,), generator=generator, device=generator.device, dtype=torch.float64)
    return draw.to(device, non_blocking=True)


_GAMMA_BLOCK = 4  # Marsaglia-Tsang candidates drawn per value at once (each accepted with probability > 0.95)


def sample_log_gamma(shape: float, size: int, generator: torch.Generator) -> torch.Tensor:
    """log of ``size`` Gamma(shape, 1) samples, float64 on the generator's device, drawn from ``generator`` only.

    Why not ``torch._standard_gamma`` / ``torch.distributions``: they take no generator (global RNG only), so a
    run could not be replayed from its generator state. This is Marsaglia & Tsang (2000): d = a - 1/3,
    c = 1/sqrt(9d); with z ~ N(0, 1), u ~ U(0, 1) and v = (1 + cz)^3, accept d*v when v > 0 and
    log u < z^2/2 + d - dv + d log v. Vectorised: every round draws ``_GAMMA_BLOCK`` candidates (normals, then
    uniforms) for all ``size`` values and each value takes its first accepted one; rounds repeat (rarely) until all
    are accepted, so the number of draws is a function of the generator state alone and replays exactly. For
    shape < 1: Gamma(a) = Gamma(a + 1) * U^(1/a), with the extra U (size values, in (0, 1]) drawn last.
    Returned as a log so that tiny shapes cannot underflow to 0 (log Dirichlet / Beta stay finite).
    """
    if not shape > 0 or not math.isfinite(shape):
        raise ConfigError(f"a Gamma shape must be a positive finite number, got {shape!r}")
    gdev = generator.device
    boost = shape < 1
    a = shape + 1.0 if boost else float(shape)
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.zeros(size, dtype=torch.float64, device=gdev)
    done = torch.zeros(size, dtype=torch.bool, device=gdev)
    while not bool(done.all()):  # one round almost always suffices: a sync per round, not per value
        z = torch.randn((_GAMMA_BLOCK, size), generator=generator, device=gdev, dtype=torch.float64)
        u = torch.rand((_GAMMA_BLOCK, size), generator=generator, device=gdev, dtype=torch.float64)
        v = (1.0 + c * z) ** 3
        log_v = torch.log(v.clamp(min=1e-300))  # v <= 0 is rejected below; the clamp only avoids nan
        ok = (v > 0) & (torch.log(u) < 0.5 * z * z + d - d * v + d * log_v)
        first = ok.to(torch.uint8).argmax(0, keepdim=True)  # the first accepted candidate (argmax: first max)
        value = math.log(d) + log_v.gather(0, first).squeeze(0)
        take = ok.any(0) & ~done
        out = torch.where(take, value, out)
        done |= take
    if boost:
        u = 1.0 - torch.rand((size,), generator=generator, device=gdev, dtype=torch.float64)  # in (0, 1]
        out = out + torch.log(u) / shape
    return out


def sample_dirichlet(alpha: float, rows: int, k: int, generator: torch.Generator,
                     device: torch.device) -> torch.Tensor:
    """``rows`` x ``k`` float32 on ``device``, each row ~ Dirichlet(alpha * ones(k)): normalised Gamma(alpha)
    samples (a softmax of their logs), drawn with :func:`sample_log_gamma` from ``generator``."""
    log_g = sample_log_gamma(alpha, rows * k, generator).view(rows, k)
    return torch.softmax(log_g, dim=1).to(device=device, dtype=torch.float32)


def sample_beta(a: float, b: float, size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """``size`` float32 values ~ Beta(a, b) on ``device``: X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b) (X drawn
    first), computed as sigmoid(log X - log Y)."""
    log_x = sample_log_gamma(a, size, generator)
    log_y = sample_log_gamma(b, size, generator)
    return torch.sigmoid(log_x - log_y).to(device=device, dtype=torch.float32)


# --------------------------------------------------------------------------------------------------------
# Ops on B x C x H x W
# --------------------------------------------------------------------------------------------------------

def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator, mode: str = "constant",
                fill: float = 0) -> torch.Tensor:
    """Pad each image by ``padding`` pixels on every side, crop back to H x W at a random offset per sample.

    x: B x C x H x W, any dtype. Returns a new contiguous B x C x H x W tensor of the same dtype. Equivalent
    to torchvision's ``RandomCrop((H, W), padding, padding_mode=mode)`` per image: offsets dy, dx uniform in
    [0, 2*padding].
    mode: 'constant' (pixels outside the image are ``fill``), 'reflect' (mirror without repeating the edge,
    as ``torch.nn.functional.pad``; any padding works, it reflects again past the far edge) or 'replicate'.
    The padded image is never built: each output pixel reads its source pixel by index arithmetic.
    padding=0 returns ``x`` unchanged and draws nothing. Draw order: dy then dx (B values each).
    """
    return random_crop_flip(x, padding, generator, mode=mode, fill=fill, p=None)


def random_flip(x: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Flip each image horizontally with probability p, independently per sample.

    x: B x C x H x W, any dtype. Returns a new B x C x H x W tensor. Draws B uniforms (also when p is 0 or 1,
    so the generator advances the same way whatever p is).
    """
    _check_4d(x, "x")
    _check_probability(p)
    generator = _check_generator(generator)
    flip = _bernoulli(p, x.shape[0], generator, x.device)
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def random_crop_flip(x: torch.Tensor, padding: int, generator: torch.Generator, mode: str = "constant",
                     fill: float = 0, p: float | None = 0.5) -> torch.Tensor:
    """:func:`random_crop` then :func:`random_flip` (if p is not None) in a single gather.

    Same draws in the same order as the two calls in sequence, so the output is identical to
    ``random_flip(random_crop(x, padding, g, mode, fill), g, p)``; one read of ``x`` instead of two passes.
    x: B x C x H x W, any dtype -> a new contiguous B x C x H x W tensor of the same dtype.
    """
    _check_4d(x, "x")
    _check_padding(padding, mode)
    generator = _check_generator(generator)
    b, _, h, w = x.shape
    dev = x.device
    if padding > 0:
        dy = _randint(2 * padding + 1, b, generator, dev)
        dx = _randint(2 * padding + 1, b, generator, dev)
    if p is not None:
        _check_probability(p)
        flip = _bernoulli(p, b, generator, dev)
    if padding == 0 and p is None:
        return x
    # Source row/col of every output pixel, per sample: output (i, j) reads padded (i + dy, j + dx), i.e.
    # original (i + dy - padding, j + dx - padding).
    rows = torch.arange(h, device=dev).expand(b, h)
    cols = torch.arange(w, device=dev).expand(b, w)
    if padding > 0:
        rows = rows + (dy - padding).unsqueeze(1)
        cols = cols + (dx - padding).unsqueeze(1)
    if p is not None:
        # A horizontal flip of the crop reads its columns in reverse order.
        cols = torch.where(flip.unsqueeze(1), cols.flip(1), cols)
    rows, row_ok = _source_index(rows, h, mode)
    cols, col_ok = _source_index(cols, w, mode)
    # Gather whole pixels (C values each) from a channels-last copy by flat index: index_select of rows of
    # a (B*H*W) x C matrix was about 8x faster on CPU than 3-tensor advanced indexing (512 x 32 x 32 x 3).
    # The stored B x H x W x C layout makes this copy free (x is then just a permuted view of it).
    pixels = x.permute(0, 2, 3, 1).contiguous().view(b * h * w, -1)
    base = torch.arange(b, device=dev).view(b, 1, 1) * (h * w)
    flat = base + rows.unsqueeze(2) * w + cols.unsqueeze(1)  # B x H x W
    out = pixels.index_select(0, flat.view(-1)).view(b, h, w, -1)
    # Back to B x C x H x W memory now (a cheap copy at the input's width, e.g. uint8): the mask below and
    # later ops then broadcast over C with long contiguous inner loops, several times faster on CPU.
    out = out.permute(0, 3, 1, 2).contiguous()
    if mode == "constant" and padding > 0:
        inside = row_ok.unsqueeze(2) & col_ok.unsqueeze(1)  # B x H x W
        out = _fill_outside(out, inside.unsqueeze(1), fill, inplace=True)
    return out


def _fill_outside(x: torch.Tensor, keep: torch.Tensor, fill: float, inplace: bool) -> torch.Tensor:
    """x where ``keep`` (B x 1 x H x W, broadcast over C) else ``fill``.

    For fill 0 a multiply by the mask: on CPU several times faster than masked_fill with a broadcast mask
    (assumes finite x, as images are: inf * 0 would be nan).
    """
    if fill == 0 and x.dtype != torch.bool:
        return x.mul_(keep) if inplace else x * keep
    return x.masked_fill_(~keep, fill) if inplace else x.masked_fill(~keep, fill)


def _source_index(idx: torch.Tensor, n: int, mode: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Map (possibly out-of-range) indices into [0, n) for the padding mode; also the in-range mask."""
    if mode == "reflect":
        if n == 1:
            return torch.zeros_like(idx), None
        period = 2 * (n - 1)
        idx = idx.remainder(period)  # non-negative for a positive divisor
        return torch.where(idx >= n, period - idx, idx), None
    if mode == "replicate":
        return idx.clamp(0, n - 1), None
    inside = (idx >= 0) & (idx < n)
    return idx.clamp(0, n - 1), inside


def cutout(x: torch.Tensor, size: int, generator: torch.Generator, fill: float = 0.0) -> torch.Tensor:
    """Set a size x size square to ``fill`` at a random centre per sample (DeVries & Taylor 2017).

    x: B x C x H x W, any dtype. Returns a new tensor of the same shape and dtype. The centre (cy, cx) is
    uniform over all pixels; the square spans rows [cy - size//2, cy - size//2 + size) and likewise for
    columns, clipped at the borders (so a square near an edge is smaller), exactly as the reference code for
    even sizes. Apply it after normalisation so that fill 0 is the mean colour, as the reference does.
    size=0 returns ``x`` unchanged and draws nothing. Draw order: cy then cx (B values each).
    """
    _check_4d(x, "x")
    if not isinstance(size, int) or size < 0:
        raise ConfigError(f"cutout size must be a non-negative int, got {size!r}")
    generator = _check_generator(generator)
    if size == 0:
        return x
    b, _, h, w = x.shape
    dev = x.device
    cy = _randint(h, b, generator, dev)
    cx = _randint(w, b, generator, dev)
    in_rows = _window_mask(cy - size // 2, size, h)
    in_cols = _window_mask(cx - size // 2, size, w)
    square = in_rows.unsqueeze(2) & in_cols.unsqueeze(1)  # B x H x W
    return _fill_outside(x, ~square.unsqueeze(1), fill, inplace=False)


def _window_mask(start: torch.Tensor, size: int, n: int) -> torch.Tensor:
    """B x n bool, True where start <= i < start + size (the clipping at 0 and n comes for free)."""
    i = torch.arange(n, device=start.device)
    start = start.unsqueeze(1)
    return (i >= start) & (i < start + size)


# --------------------------------------------------------------------------------------------------------
# Policies: (batch_u8 B x H x W x C, generator) -> float B x C x H x W, or a tuple of views
# --------------------------------------------------------------------------------------------------------

class Policy:
    """A random augmentation of a stored batch.

    Call: ``policy(batch_u8, generator)`` with batch_u8 uint8 B x H x W x C on any device; returns float32
    B x C x H x W normalised with (mean, std), or a tuple of ``num_views`` such tensors.
    """

    num_views: int = 1

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        _affine(self.mean, self.std, len(self.mean), torch.device("cpu"))  # validate now, not mid-training
        self._affine_cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def normalize(self, batch_u8_chw: torch.Tensor) -> torch.Tensor:
        """uint8 B x C x H x W -> normalised float32 B x C x H x W (constants cached per device)."""
        dev = batch_u8_chw.device
        if dev not in self._affine_cache:
            self._affine_cache[dev] = _affine(self.mean, self.std, len(self.mean), dev)
        return _normalize(batch_u8_chw, *self._affine_cache[dev])

    def __call__(self, batch_u8: torch.Tensor, generator: torch.Generator):
        raise NotImplementedError

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


class NormalizeOnly(Policy):
    """No augmentation: normalise only. Draws nothing from the generator."""

    def __call__(self, batch_u8: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.normalize(channels_first(batch_u8))


class CropFlipCutout(Policy):
    """Random crop (pad ``padding``, ``padding_mode``), horizontal flip with ``flip_p``, optional cutout.

    The ``weak`` augmentation of the shared protocol is CropFlipCutout(padding=4, cutout_size=0). Crop and
    flip run on uint8 (constant padding is black, as torchvision on a PIL image); cutout runs after
    normalisation (the square is the mean colour, as DeVries & Taylor). Draws: dy, dx, flip, [cy, cx].
    """

    def __init__(self, mean, std, padding: int = 4, padding_mode: str = "constant", flip_p: float = 0.5,
                 cutout_size: int = 0):
        super().__init__(mean, std)
        _check_padding(padding, padding_mode)
        _check_probability(flip_p)
        if not isinstance(cutout_size, int) or cutout_size < 0:
            raise ConfigError(f"cutout_size must be a non-negative int, got {cutout_size!r}")
        self.padding, self.padding_mode, self.flip_p, self.cutout_size = padding, padding_mode, flip_p, cutout_size

    def __call__(self, batch_u8: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = random_crop_flip(channels_first(batch_u8), self.padding, generator, mode=self.padding_mode,
                             p=self.flip_p)
        x = self.normalize(x)
        return cutout(x, self.cutout_size, generator)

    def extra_repr(self) -> str:
        return (f"padding={self.padding}, padding_mode={self.padding_mode!r}, flip_p={self.flip_p}, "
                f"cutout_size={self.cutout_size}")


class MultiView(Policy):
    """Several views of the same batch, one per sub-policy, drawn one after another from the generator.

    Returns a tuple of float32 B x C x H x W tensors (nested multi-view sub-policies are flattened), so the
    views are independent samples of their policies. Sub-policies may differ (e.g. a student RandAugment view
    and a teacher AugMix view).
    """

    def __init__(self, policies: Sequence[Policy]):
        if not policies:
            raise ConfigError("MultiView needs at least one policy")
        super().__init__(policies[0].mean, policies[0].std)
        self.policies = tuple(policies)
        self.num_views = sum(p.num_views for p in self.policies)

    def __call__(self, batch_u8: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        views: list[torch.Tensor] = []
        for policy in self.policies:  # a loop over views (2-4), not over images
            out = policy(batch_u8, generator)
            views.extend(out if isinstance(out, tuple) else (out,))
        return tuple(views)

    def extra_repr(self) -> str:
        return ", ".join(repr(p) for p in self.policies)


# --------------------------------------------------------------------------------------------------------
# RandAugment and AugMix (per-image random op choice, batched; ops in noisykd.augment_ops)
# --------------------------------------------------------------------------------------------------------

#: torchvision's RandAugment op list, in its order (``RandAugment._augmentation_space``).
RANDAUGMENT_OPS = ("identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color",
                   "contrast", "sharpness", "posterize", "solarize", "autocontrast", "equalize")


def randaugment_magnitudes(num_bins: int, height: int, width: int) -> dict[str, tuple[torch.Tensor | None, bool]]:
    """op name -> (the ``num_bins`` magnitudes, float32, or None for ops without one; whether the op is signed).

    The ranges of torchvision's ``transforms.RandAugment._augmentation_space(num_bins, (H, W))``:
    Identity none; ShearX/ShearY linspace(0, 0.3) (shear factor); TranslateX linspace(0, 150/331 * W),
    TranslateY linspace(0, 150/331 * H) (pixels, truncated to int when applied); Rotate linspace(0, 30)
    (degrees); Brightness/Color/Contrast/Sharpness linspace(0, 0.9) (PIL factor 1 + v); Posterize
    8 - round(arange(num_bins) / ((num_bins - 1) / 4)) (bits kept); Solarize linspace(255, 0) (threshold);
    AutoContrast and Equalize none. Signed (sign flipped with probability 1/2): shears, translations, rotation
    and the four enhance ops. Float32 as torchvision's tensors, so that magnitude m is bit-identical.
    """
    def lin(hi: float, lo: float = 0.0) -> torch.Tensor:
        return torch.linspace(lo, hi, num_bins, dtype=torch.float32)

    enhance = lin(0.9)
    posterize_bits = (8 - (torch.arange(num_bins) / ((num_bins - 1) / 4)).round().int()).float()
    return {
        "identity": (None, False),
        "shear_x": (lin(0.3), True), "shear_y": (lin(0.3), True),
        "translate_x": (lin(150.0 / 331.0 * width), True), "translate_y": (lin(150.0 / 331.0 * height), True),
        "rotate": (lin(30.0), True),
        "brightness": (enhance, True), "color": (enhance, True), "contrast": (enhance, True),
        "sharpness": (enhance, True),
        "posterize": (posterize_bits, False),
        "solarize": (torch.linspace(255.0, 0.0, num_bins, dtype=torch.float32), False),
        "autocontrast": (None, False), "equalize": (None, False),
    }


class RandAugment(Policy):
    """RandAugment (Cubuk et al. 2020) as torchvision's ``RandAugment(num_ops=n, magnitude=m, num_bins)`` on a PIL
    image, per image, batched; then crop + flip (as :class:`CropFlipCutout`), normalise, and cutout.

    Each image draws its own ``n`` ops uniformly with replacement from :data:`RANDAUGMENT_OPS` (14 ops, identity
    included) and, for each, a sign (probability 1/2 each); the magnitude index ``m`` is fixed (torchvision's
    ``magnitude``: the m-th of ``num_bins`` values, :func:`randaugment_magnitudes`). Ops run in sequence on the
    uint8 image with PIL's semantics (:mod:`noisykd.augment_ops`; geometry with NEAREST and fill 0,
    torchvision's defaults). The NRD / GJS student view is ``randaugment(n=1, m=3, cutout_size=16)``:
    RandAugment(N=1, M=3) -> crop 32 pad 4 -> flip -> Cutout 16.

    Draws, in order: for each of the n rounds, the ops (B values) then the signs (B values; drawn for every image,
    signed op or not, so the stream does not depend on the images); then crop dy, dx, flip; then cutout cy, cx.
    """

    def __init__(self, mean, std, n: int = 2, m: int = 9, num_bins: int = 31, padding: int = 4,
                 padding_mode: str = "constant", flip_p: float = 0.5, cutout_size: int = 0):
        super().__init__(mean, std)
        _check_int_option("randaugment", "n", n, 0)
        _check_int_option("randaugment", "num_bins", num_bins, 2)
        _check_int_option("randaugment", "m", m, 0)
        if m >= num_bins:
            raise ConfigError(f"randaugment option m (magnitude index) must be below num_bins = {num_bins}, got {m}")
        self.n, self.m, self.num_bins = n, m, num_bins
        self.weak = CropFlipCutout(mean, std, padding=padding, padding_mode=padding_mode, flip_p=flip_p,
                                   cutout_size=cutout_size)
        self._magnitudes: dict[tuple[int, int], dict[str, tuple[float, bool]]] = {}

    def magnitudes(self, height: int, width: int) -> dict[str, tuple[float, bool]]:
        """op name -> (its magnitude at index m, as a Python float from the float32 table; signed?)."""
        if (height, width) not in self._magnitudes:
            table = randaugment_magnitudes(self.num_bins, height, width)
            self._magnitudes[(height, width)] = {
                name: (float(v[self.m].item()) if v is not None else 0.0, signed)
                for name, (v, signed) in table.items()}
        return self._magnitudes[(height, width)]

    def draw(self, b: int, generator: torch.Generator, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(ops, negative): ``n`` x B int64 indices into :data:`RANDAUGMENT_OPS` and ``n`` x B bool signs (True:
        the magnitude is negated, for signed ops), on ``device``."""
        ops, negative = [], []
        for _ in range(self.n):  # a loop over rounds, not images
            ops.append(_randint(len(RANDAUGMENT_OPS), b, generator, device))
            negative.append(_bernoulli(0.5, b, generator, device))
        if not ops:
            empty = torch.zeros((0, b), dtype=torch.int64, device=device)
            return empty, empty.bool()
        return torch.stack(ops), torch.stack(negative)

    def apply(self, x: torch.Tensor, ops: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """The RandAugment ops alone: uint8 B x C x H x W -> uint8 B x C x H x W, image i getting ops[r, i] with
        sign negative[r, i] in round r = 0 .. n-1 (as drawn by :meth:`draw`)."""
        mags = self.magnitudes(x.shape[2], x.shape[3])
        for r in range(ops.shape[0]):
            sign = torch.where(negative[r], -1.0, 1.0).to(torch.float64)
            x = O.apply_per_image(x, ops[r], [_randaugment_op(name, *mags[name], sign)
                                              for name in RANDAUGMENT_OPS])
        return x

    def __call__(self, batch_u8: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        generator = _check_generator(generator)
        x = channels_first(batch_u8)
        ops, negative = self.draw(x.shape[0], generator, x.device)
        return self.weak(self.apply(x, ops, negative).permute(0, 2, 3, 1), generator)

    def extra_repr(self) -> str:
        return f"n={self.n}, m={self.m}, num_bins={self.num_bins}, {self.weak.extra_repr()}"


def _randaugment_op(name: str, magnitude: float, signed: bool, sign: torch.Tensor) -> O.OpFn:
    """fn(images, idx) applying torchvision's ``_apply_op(name, ±magnitude)`` to the images at positions idx."""

    def value(idx: torch.Tensor) -> torch.Tensor:  # the per-image magnitude, signed as drawn (float64)
        return sign.index_select(0, idx) * magnitude if signed else torch.full_like(idx, magnitude, dtype=torch.float64)

    if name == "identity":
        return lambda x, idx: x
    if name in ("shear_x", "shear_y", "rotate"):
        op = getattr(O, name)
        return lambda x, idx: op(x, value(idx), "nearest")
    if name in ("translate_x", "translate_y"):
        op = getattr(O, name)
        # torchvision: translate=[int(magnitude), 0], int() truncating towards 0 (the sign commutes with it).
        return lambda x, idx: op(x, value(idx).trunc(), "nearest")
    if name in ("brightness", "color", "contrast", "sharpness"):
        op = getattr(O, name)
        return lambda x, idx: op(x, 1.0 + value(idx))  # PIL factor 1 + v (float32 inside, as PIL's C float)
    if name == "posterize":
        return lambda x, idx: O.posterize(x, int(magnitude))
    if name == "solarize":
        return lambda x, idx: O.solarize(x, magnitude)
    return lambda x, idx: getattr(O, name)(x)  # autocontrast, equalize


# --------------------------------------------------------------------------------------------------------
# RandAugment as GJS's code installs it (ildoonet/pytorch-randaugment)
# --------------------------------------------------------------------------------------------------------

#: ildoonet/pytorch-randaugment's ``augment_list()`` (commit 48b8f50, the EfficientNet list it cites), in its
#: order: op name -> (min, max) of the value at magnitude M, ``value = M / 30 * (max - min) + min``. 16 ops, no
#: identity; Invert, SolarizeAdd and CutoutAbs are not in torchvision's list. GJS (Englesson & Azizpour 2021)
#: installs this package for its RandAugment(N=1, M=3), and NRD uses GJS's code.
GJS_RANDAUGMENT_RANGES: dict[str, tuple[float, float]] = {
    "autocontrast": (0.0, 1.0), "equalize": (0.0, 1.0), "invert": (0.0, 1.0),
    "rotate": (0.0, 30.0),             # degrees, random sign, NEAREST, fill 0 (PIL ``img.rotate(v)``)
    "posterize": (0.0, 4.0),           # bits kept: max(1, int(v)), so 1 bit for M < 15
    "solarize": (0.0, 256.0),          # threshold (values >= v inverted)
    "solarize_add": (0.0, 110.0),      # add v, clip to 0-255, truncate, then solarize at 128
    "color": (0.1, 1.9), "contrast": (0.1, 1.9), "brightness": (0.1, 1.9), "sharpness": (0.1, 1.9),  # PIL factor, no sign
    "shear_x": (0.0, 0.3), "shear_y": (0.0, 0.3),  # shear factor, random sign, NEAREST, fill 0
    "cutout_abs": (0.0, 40.0),         # side in pixels of a square of colour (125, 123, 114)
    "translate_x_abs": (0.0, 100.0), "translate_y_abs": (0.0, 100.0),  # pixels (not a fraction), random sign
}
GJS_RANDAUGMENT_OPS = tuple(GJS_RANDAUGMENT_RANGES)
#: the ops whose value gets a random sign (``if random.random() > 0.5: v = -v`` in the package)
GJS_SIGNED_OPS = frozenset({"rotate", "shear_x", "shear_y", "translate_x_abs", "translate_y_abs"})
#: CutoutAbs's fill colour (RGB); a grey image gets 123, PIL's ``convert("L")`` of it.
GJS_CUTOUT_FILL = (125, 123, 114)
_GJS_MAX_M = 30  # the package's magnitude scale: M in [0, 30]
#: ops whose value is in pixels: the package's values are for GJS's 32-px CIFAR images; other sizes scale them
#: by min(H, W) / 32 (as NRD's Cutout 16 -> 4 on 8-px digits), so a 10-px shift does not empty an 8-px image
GJS_PIXEL_OPS = frozenset({"cutout_abs", "translate_x_abs", "translate_y_abs"})
_GJS_IMAGE_SIDE = 32


def gjs_randaugment_values(m: float) -> dict[str, float]:
    """op name -> the value ildoonet/pytorch-randaugment passes to the op at magnitude ``m`` (0-30), before any
    sign flip: ``m / 30 * (max - min) + min`` in double precision (:data:`GJS_RANDAUGMENT_RANGES`).

    At M = 3 (GJS / NRD): rotate 3 degrees, posterize int(0.4) -> 1 bit, solarize 25.6, solarize_add 11, enhance
    factor 0.28, shear 0.03, cutout 4 px, translate 10 px.
    """
    return {name: (float(m) / _GJS_MAX_M) * float(hi - lo) + lo for name, (lo, hi) in GJS_RANDAUGMENT_RANGES.items()}


@dataclass(frozen=True)
class GJSRandAugmentDraw:
    """What GJS's RandAugment draws for B images and ``n`` rounds, on the batch's device.

    ops: n x B int64 indices into :data:`GJS_RANDAUGMENT_OPS`; negative: n x B bool (the sign of a signed op);
    cutout_x, cutout_y: n x B float64 in (1, W] and (1, H], the CutoutAbs centre (the package's
    ``np.random.uniform(w)``, i.e. uniform between w and 1). Every image gets every draw, whatever op it drew, so
    the stream does not depend on the images.
    """

    ops: torch.Tensor
    negative: torch.Tensor
    cutout_x: torch.Tensor
    cutout_y: torch.Tensor


class GJSRandAugment(Policy):
    """RandAugment as in GJS's code (ildoonet/pytorch-randaugment ``RandAugment(n, m)``), per image, batched; then
    crop + flip (:class:`CropFlipCutout`), normalise and Cutout, GJS's student pipeline.

    Each image draws ``n`` ops uniformly with replacement from the 16 of :data:`GJS_RANDAUGMENT_OPS`
    (``random.choices``); op values from :func:`gjs_randaugment_values` (fixed by ``m``; a random sign for
    :data:`GJS_SIGNED_OPS`). With PIL's semantics (:mod:`noisykd.augment_ops`): geometry NEAREST with fill 0;
    ``translate_*_abs`` read the input at x + v (PIL ``(1, 0, v, 0, 1, 0)``); CutoutAbs draws PIL's inclusive
    rectangle from (x0, y0) = (int(max(0, cx - v/2)), int(max(0, cy - v/2))) to min(W, x0 + v) (coordinates
    truncated, Pillow 13), in :data:`GJS_CUTOUT_FILL`. Much stronger than torchvision's table at small M
    (:class:`RandAugment`): at M = 3 translate 10 px instead of 1, posterize 1 bit instead of 8, solarize at 25.6
    instead of 229.5, enhance factor 0.28 instead of 1 +- 0.09. Values in pixels (translate, CutoutAbs) are the
    package's on 32-px images and scale with min(H, W) / 32 on others (:meth:`pixel_scaled_values`).

    The NRD / GJS student view: ``randaugment_gjs(n=1, m=3, cutout_size=16)``. Draws, in order, for each round:
    ops (B), signs (B), cutout x (B), cutout y (B); then crop dy, dx, flip; then Cutout cy, cx.
    """

    def __init__(self, mean, std, n: int = 1, m: float = 3, padding: int = 4, padding_mode: str = "constant",
                 flip_p: float = 0.5, cutout_size: int = 0):
        super().__init__(mean, std)
        _check_int_option("randaugment_gjs", "n", n, 0)
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 <= m <= _GJS_MAX_M:
            raise ConfigError(f"randaugment_gjs option m must be a number in [0, {_GJS_MAX_M}] (the package's "
                              f"magnitude scale; its ops assert their ranges beyond it), got {m!r}")
        self.n, self.m = n, m
        self.values = gjs_randaugment_values(m)
        self.weak = CropFlipCutout(mean, std, padding=padding, padding_mode=padding_mode, flip_p=flip_p,
                                   cutout_size=cutout_size)

    def pixel_scaled_values(self, height: int, width: int) -> dict[str, float]:
        """The op values on H x W images: the package's on 32-px sides; :data:`GJS_PIXEL_OPS` scaled by
        min(H, W) / 32 otherwise."""
        scale = min(height, width) / _GJS_IMAGE_SIDE
        if scale == 1:
            return self.values
        return {name: v * scale if name in GJS_PIXEL_OPS else v for name, v in self.values.items()}

    def draw(self, b: int, generator: torch.Generator, device: torch.device, height: int,
             width: int) -> GJSRandAugmentDraw:
        """The ops, signs and cutout centres of B images (see :class:`GJSRandAugmentDraw`)."""
        ops, negative, cx, cy = [], [], [], []
        for _ in range(self.n):  # a loop over rounds, not images
            ops.append(_randint(len(GJS_RANDAUGMENT_OPS), b, generator, device))
            negative.append(_bernoulli(0.5, b, generator, device))
            # np.random.uniform(w) = uniform(low=w, high=1.0) = w + (1 - w) * U, U in [0, 1)
            cx.append(width + (1.0 - width) * _uniform(b, generator, device).double())
            cy.append(height + (1.0 - height) * _uniform(b, generator, device).double())
        if not ops:
            empty = torch.zeros((0, b), dtype=torch.int64, device=device)
            return GJSRandAugmentDraw(empty, empty.bool(), empty.double(), empty.double())
        return GJSRandAugmentDraw(torch.stack(ops), torch.stack(negative), torch.stack(cx), torch.stack(cy))

    def apply(self, x: torch.Tensor, draw: GJSRandAugmentDraw) -> torch.Tensor:
        """The RandAugment ops alone: uint8 B x C x H x W -> uint8 B x C x H x W, image i getting op ops[r, i] in
        round r = 0 .. n-1 (as drawn by :meth:`draw`)."""
        values = self.pixel_scaled_values(x.shape[2], x.shape[3])
        for r in range(draw.ops.shape[0]):
            fns = [_gjs_randaugment_op(name, values[name], draw.negative[r], draw.cutout_x[r],
                                       draw.cutout_y[r]) for name in GJS_RANDAUGMENT_OPS]
            x = O.apply_per_image(x, draw.ops[r], fns)
        return x

    def __call__(self, batch_u8: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        generator = _check_generator(generator)
        x = channels_first(batch_u8)
        draw = self.draw(x.shape[0], generator, x.device, x.shape[2], x.shape[3])
        return self.weak(self.apply(x, draw).permute(0, 2, 3, 1), generator)

    def extra_repr(self) -> str:
        return f"n={self.n}, m={self.m}, {self.weak.extra_repr()}"


def cutout_abs(x: torch.Tensor, side: float, centre_x: torch.Tensor, centre_y: torch.Tensor,
               fill: Sequence[int] = GJS_CUTOUT_FILL) -> torch.Tensor:
    """ildoonet/pytorch-randaugment's ``CutoutAbs(img, side)`` with the centres given: uint8 B x C x H x W ->
    uint8, each image with a square of ``fill`` from (x0, y0) = (int(max(0, cx - side/2)), int(max(0, cy - side/2)))
    to (x0 + int(side), y0 + int(side)) inclusive, clipped to the image (PIL's ``ImageDraw.rectangle`` includes
    both corners and truncates float coordinates, Pillow 13). centre_x, centre_y: (B,) float. A negative side
    leaves the images alone (the package's check); side 0 paints one pixel, as the package does.
    """
    if side < 0:
        return x
    b, c, h, w = x.shape
    x0 = (centre_x.to(x.device, torch.float64) - side / 2).clamp(min=0).floor().long()
    y0 = (centre_y.to(x.device, torch.float64) - side / 2).clamp(min=0).floor().long()
    # x1 = min(w, x0 + side), truncated by PIL, inclusive: columns x0 .. x0 + int(side) inside the image
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    span = int(math.floor(side))
    inside = ((cols >= x0.view(b, 1, 1)) & (cols <= x0.view(b, 1, 1) + span)
              & (rows >= y0.view(b, 1, 1)) & (rows <= y0.view(b, 1, 1) + span))
    colour = torch.tensor(fill if c == 3 else (_grey(fill),) * c, dtype=torch.uint8, device=x.device)
    return torch.where(inside.unsqueeze(1), colour.view(1, c, 1, 1), x)


def _grey(rgb: Sequence[int]) -> int:
    """PIL's ``convert("L")`` of one colour: (19595 R + 38470 G + 7471 B + 32768) >> 16."""
    r, g, b = rgb
    return (19595 * r + 38470 * g + 7471 * b + 32768) >> 16


def solarize_add(x: torch.Tensor, addition: float, threshold: int = 128) -> torch.Tensor:
    """ildoonet/pytorch-randaugment's ``SolarizeAdd(img, addition)``: add ``addition`` (a float), clip to 0-255,
    truncate to uint8 (numpy's ``astype``), then PIL's solarize at ``threshold`` (values >= 128 inverted)."""
    added = (x.to(torch.float64) + addition).clamp_(0, 255).to(torch.uint8)
    return O.solarize(added, threshold)


def _gjs_randaugment_op(name: str, value: float, negative: torch.Tensor, centre_x: torch.Tensor,
                        centre_y: torch.Tensor) -> O.OpFn:
    """fn(images, idx) applying the package's op ``name`` with ``value`` (sign per image where the op has one)."""

    def signed(idx: torch.Tensor) -> torch.Tensor:
        return torch.where(negative.index_select(0, idx), -value, value).to(torch.float64)

    if name == "rotate":
        return lambda x, idx: O.rotate(x, signed(idx), "nearest")
    if name in ("shear_x", "shear_y"):
        op = getattr(O, name)
        return lambda x, idx: op(x, signed(idx), "nearest")
    if name in ("translate_x_abs", "translate_y_abs"):
        # PIL (1, 0, v, 0, 1, 0) reads the input at x + v: the content moves by -v, O.translate_x's sign
        op = O.translate_x if name == "translate_x_abs" else O.translate_y
        return lambda x, idx: op(x, -signed(idx), "nearest")
    if name == "posterize":
        return lambda x, idx: O.posterize(x, max(1, int(value)))
    if name == "solarize":
        return lambda x, idx: O.solarize(x, value)
    if name == "solarize_add":
        return lambda x, idx: solarize_add(x, value)
    if name in ("color", "contrast", "brightness", "sharpness"):
        op = getattr(O, name)
        return lambda x, idx: op(x, value)  # the PIL factor itself, no sign
    if name == "invert":
        return lambda x, idx: 255 - x
    if name == "cutout_abs":
        return lambda x, idx: cutout_abs(x, value, centre_x.index_select(0, idx), centre_y.index_select(0, idx))
    return lambda x, idx: getattr(O, name)(x)  # autocontrast, equalize


#: The original AugMix op list (google-research/augmix ``augmentations.augmentations``): without the ops that
#: overlap the CIFAR-10-C / ImageNet-C corruptions (colour, contrast, brightness, sharpness).
AUGMIX_OPS = ("autocontrast", "equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y", "translate_x",
              "translate_y")
#: ``augmentations.augmentations_all`` (AugMix's ``--all-ops``).
AUGMIX_ALL_OPS = AUGMIX_OPS + ("color", "contrast", "brightness", "sharpness")
#: where AugMix's crop + flip go: before the mixture (AugMix's CIFAR code, default) or after it
AUGMIX_CROP_FLIP = ("before", "after")
_AUGMIX_MAX_DEPTH = 3  # depth -1: uniform in 1..3 (np.random.randint(1, 4) in AugMix's ``aug``)


@dataclass(frozen=True)
class AugMixDraw:
    """Everything AugMix draws for a batch of B images (width chains, up to D ops each), on the batch's device.

    weights: B x width float32, Dirichlet(alpha); mix: (B,) float32, Beta(alpha, alpha); depth: width x B int64
    (ops in each chain, 1..3 or the fixed depth); ops: width x D x B int64 indices into the op list; levels:
    width x D x B float64, uniform in [0.1, severity); negative: width x D x B bool (sign flips).
    """

    weights: torch.Tensor
    mix: torch.Tensor
    depth: torch.Tensor
    ops: torch.Tensor
    levels: torch.Tensor
    negative: torch.Tensor


class AugMix(Policy):
    """AugMix (Hendrycks et al. 2020), as google-research/augmix's ``aug()`` per image, batched, with crop + flip
    (before the mixture by default, as AugMix's CIFAR code) and normalisation.

    Per image: ``width`` chains, each of ``depth`` ops (-1: uniform in 1..3 per chain and image) drawn uniformly
    with replacement from :data:`AUGMIX_OPS` (or :data:`AUGMIX_ALL_OPS` with ``all_ops``) and applied in sequence
    to the uint8 image; weights w ~ Dirichlet(alpha * ones(width)), m ~ Beta(alpha, alpha);
    ``(1 - m) * x + m * sum_i w_i * chain_i(x)`` in float 0-255 (AugMix mixes after ToTensor + Normalize; a convex
    combination commutes with that affine map). Magnitudes as in AugMix's ``augmentations.py``: every op
    application draws level ~ U(0.1, severity); rotate int(level * 3) degrees, shear level * 0.03, translate
    int(level * size / 30) pixels (size = H or W; AugMix's IMAGE_SIZE), each with a random sign, geometry with
    PIL BILINEAR and fill 0 (as AugMix's code; RandAugment uses NEAREST); posterize to 4 - int(level * 0.4) bits;
    solarize at 256 - int(level * 25.6); all_ops enhance factor level * 0.18 + 0.1; autocontrast, equalize.

    Crop (``padding``, ``padding_mode``) + flip (``flip_p``): ``crop_flip="before"`` (default) on the uint8 image
    before the mixture, as AugMix's own CIFAR code (``RandomHorizontalFlip`` and ``RandomCrop(32, padding=4)`` in
    the data set's transform, then ``aug()``: the black padding takes part in the ops and the mixture);
    ``crop_flip="after"`` on the mixed float image, as NRD's WebVision appendix words it ("AugMix followed by
    random crop and horizontal flip"). Flip-then-crop and crop-then-flip give the same distribution (the crop
    offsets are symmetric), so both use :func:`random_crop_flip`. ``padding=0, flip_p=0`` gives AugMix alone.

    Draws, in order: (with ``before``) crop dy, dx, flip; Dirichlet weights (Gamma draws, :func:`sample_dirichlet`),
    m (:func:`sample_beta`), the depths (width x B, only when depth is -1), ops (width x D x B), level uniforms
    (width x D x B), signs (width x D x B; D = 3 when depth is -1, for every image whatever its depth); (with
    ``after``) crop dy, dx, flip.
    """

    def __init__(self, mean, std, severity: float = 3, width: int = 3, depth: int = -1, alpha: float = 1.0,
                 all_ops: bool = False, padding: int = 4, padding_mode: str = "constant", flip_p: float = 0.5,
                 crop_flip: str = "before"):
        super().__init__(mean, std)
        if crop_flip not in AUGMIX_CROP_FLIP:
            raise ConfigError(f"augmix option crop_flip must be one of {', '.join(AUGMIX_CROP_FLIP)} (crop + flip "
                              f"before the mixture, as AugMix's CIFAR code, or after it), got {crop_flip!r}")
        self.crop_flip_order = crop_flip
        if isinstance(severity, bool) or not isinstance(severity, (int, float)) or not 0 < severity <= 10:
            raise ConfigError(f"augmix option severity must be a number in (0, 10] (AugMix levels are out of 10), "
                              f"got {severity!r}")
        _check_int_option("augmix", "width", width, 1)
        if isinstance(depth, bool) or not isinstance(depth, int) or not (depth == -1 or 1 <= depth <= MAX_AUGMENT_COUNT):
            raise ConfigError(f"augmix option depth must be -1 (uniform in 1..3) or an int in [1, {MAX_AUGMENT_COUNT}], "
                              f"got {depth!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < math.inf:
            raise ConfigError(f"augmix option alpha must be a positive number, got {alpha!r}")
        if not isinstance(all_ops, bool):
            raise ConfigError(f"augmix option all_ops must be true or false, got {all_ops!r}")
        self.severity, self.width, self.depth, self.alpha = float(severity), width, depth, float(alpha)
        self.all_ops = all_ops
        self.op_names = AUGMIX_ALL_OPS if all_ops else AUGMIX_OPS
        self.crop_flip = CropFlipCutout(mean, std, padding=padding, padding_mode=padding_mode, flip_p=flip_p)

    @property
    def max_depth(self) -> int:
        return _AUGMIX_MAX_DEPTH if self.depth == -1 else self.depth

    def draw(self, b: int, generator: torch.Generator, device: torch.device) -> AugMixDraw:
        """Everything the mixing of B images needs (see the class docstring for the order)."""
        k, d = self.width, self.max_depth
        weights = sample_dirichlet(self.alpha, b, k, generator, device)
        mix = sample_beta(self.alpha, self.alpha, b, generator, device)
        if self.depth == -1:
            depth = _randint(_AUGMIX_MAX_DEPTH, k * b, generator, device).view(k, b) + 1
        else:
            depth = torch.full((k, b), self.depth, dtype=torch.int64, device=device)
        ops = _randint(len(self.op_names), k * d * b, generator, device).view(k, d, b)
        # np.random.uniform(0.1, severity) = 0.1 + (severity - 0.1) * U
        levels = 0.1 + (self.severity - 0.1) * _uniform(k * d * b, generator, device).view(k, d, b)
        negative = _bernoulli(0.5, k * d * b, generator, device).view(k, d, b)
        return AugMixDraw(weights, mix, depth, ops, levels, negative)

    def chain(self, x: torch.Tensor, draw: AugMixDraw, i: int) -> torch.Tensor:
        """Chain i alone: uint8 B x C x H x W -> uint8 B x C x H x W, image j getting ops[i, s, j] for
        s < depth[i, j]."""
        for s in range(self.max_depth):  # a loop over chain depth, not images
            op_index = torch.where(draw.depth[i] > s, draw.ops[i, s], -1)
            fns = [_augmix_op(name, draw.levels[i, s], draw.negative[i, s]) for name in self.op_names]
            x = O.apply_per_image(x, op_index, fns)
        return x

    def apply(self, x: torch.Tensor, draw: AugMixDraw) -> torch.Tensor:
        """The AugMix mixture: uint8 B x C x H x W -> float32 B x C x H x W in 0-255 (not normalised)."""
        mixed = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        for i in range(self.width):  # a loop over the mixture width, not images
            mixed.add_(self.chain(x, draw, i).float() * _col(draw.weights[:, i]))
        m = _col(draw.mix)
        return x.float().mul_(1.0 - m).add_(mixed.mul_(m))

    def __call__(self, batch_u8: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        generator = _check_generator(generator)
        x = channels_first(batch_u8)
        cf = self.crop_flip
        if self.crop_flip_order == "before":  # AugMix's CIFAR code: flip, crop, then aug() on the result
            x = random_crop_flip(x, cf.padding, generator, mode=cf.padding_mode, p=cf.flip_p)
        mixed = self.apply(x, self.draw(x.shape[0], generator, x.device))
        if self.crop_flip_order == "after":
            mixed = random_crop_flip(mixed, cf.padding, generator, mode=cf.padding_mode, p=cf.flip_p)
        return self.normalize(mixed)  # a float 0-255 input normalises like uint8 (in place: mixed is ours)

    def extra_repr(self) -> str:
        return (f"severity={self.severity}, width={self.width}, depth={self.depth}, alpha={self.alpha}, "
                f"all_ops={self.all_ops}, padding={self.crop_flip.padding}, "
                f"padding_mode={self.crop_flip.padding_mode!r}, flip_p={self.crop_flip.flip_p}, "
                f"crop_flip={self.crop_flip_order!r}")


def _col(t: torch.Tensor) -> torch.Tensor:
    return t.view(-1, 1, 1, 1)


def _augmix_op(name: str, levels: torch.Tensor, negative: torch.Tensor) -> O.OpFn:
    """fn(images, idx): AugMix's ``augmentations.<name>(img, level)`` with the drawn levels of the images idx."""

    def level(idx: torch.Tensor) -> torch.Tensor:
        return levels.index_select(0, idx)

    def signed(idx: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        # AugMix: ``if np.random.uniform() > 0.5: level = -level``
        return torch.where(negative.index_select(0, idx), -value, value)

    def int_parameter(idx: torch.Tensor, maxval: float) -> torch.Tensor:
        return (level(idx) * maxval / 10).trunc()  # int(level * maxval / 10)

    if name == "autocontrast":
        return lambda x, idx: O.autocontrast(x)
    if name == "equalize":
        return lambda x, idx: O.equalize(x)
    if name == "posterize":
        return lambda x, idx: O.posterize(x, 4 - int_parameter(idx, 4).long())
    if name == "solarize":
        return lambda x, idx: O.solarize(x, 256 - int_parameter(idx, 256))
    if name == "rotate":
        return lambda x, idx: O.rotate(x, signed(idx, int_parameter(idx, 30)), "bilinear")
    if name in ("shear_x", "shear_y"):
        op = getattr(O, name)
        return lambda x, idx: op(x, signed(idx, level(idx) * 0.3 / 10), "bilinear")
    if name == "translate_x":
        # AugMix: transform (1, 0, level, 0, 1, 0), i.e. the content moves left by level: translate_x(-level).
        return lambda x, idx: O.translate_x(x, -signed(idx, int_parameter(idx, x.shape[3] / 3)), "bilinear")
    if name == "translate_y":
        return lambda x, idx: O.translate_y(x, -signed(idx, int_parameter(idx, x.shape[2] / 3)), "bilinear")
    op = getattr(O, name)  # color, contrast, brightness, sharpness (all_ops): float_parameter(level, 1.8) + 0.1
    return lambda x, idx: op(x, level(idx) * 1.8 / 10 + 0.1)


#: the largest count an augmentation option takes (ops per image, bins, mixing chains): 100,000 ops per image would
#: run for hours per batch
MAX_AUGMENT_COUNT = 64


def _check_int_option(policy: str, name: str, value, minimum: int, maximum: int = MAX_AUGMENT_COUNT) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ConfigError(f"{policy} option {name} must be an int in [{minimum}, {maximum}], got {value!r}")


# --------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------

PolicyFactory = Callable[..., Policy]
_CONTEXT_ARGS = frozenset({"mean", "std", "image_size"})  # what every factory gets from the pipeline
#: Policy factories by name; each entry's metadata holds ``options``, the option names it accepts.
POLICIES: Registry[PolicyFactory] = Registry("augmentation policy", context_params=tuple(_CONTEXT_ARGS))


def register_policy(name: str, overwrite: bool = False, options: Sequence[str] | None = None
                    ) -> Callable[[PolicyFactory], PolicyFactory]:
    """Decorator: register ``factory(*, mean, std, image_size, **options) -> Policy`` under ``name``.

    ``options``: the option names the policy accepts (see :func:`policy_options`); by default read from the
    factory's keyword parameters. Give them explicitly for a factory that takes ``**kwargs``.
    """

    def wrap(factory: PolicyFactory) -> PolicyFactory:
        accepted = frozenset(options) if options is not None else _keyword_options(factory)
        return POLICIES.register(name, factory, overwrite=overwrite, options=accepted)

    return wrap


def _keyword_options(factory: PolicyFactory) -> frozenset[str]:
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        raise ConfigError(f"policy factory {factory.__name__} takes **kwargs: pass options=... to register_policy")
    return frozenset(p.name for p in params
                     if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)) - _CONTEXT_ARGS


def available_policies() -> tuple[str, ...]:
    """Names of the registered policies, sorted."""
    return tuple(POLICIES.names())


def policy_options(name: str) -> frozenset[str]:
    """The option names policy ``name`` accepts (besides mean, std, image_size), e.g. for ``weak``:
    {'padding', 'padding_mode', 'flip_p'}. Lets a caller pass only the configured options a policy knows."""
    return POLICIES.meta(name)["options"]


def get_policy(name: str, **kw) -> Policy:
    """Build the registered policy ``name``; ``kw`` must hold mean, std and image_size plus its options."""
    factory = POLICIES[name]
    accepted = policy_options(name)
    unknown = set(kw) - _CONTEXT_ARGS - accepted
    if unknown:
        raise ConfigError(f"augmentation policy {name!r} has no option(s) {', '.join(sorted(unknown))}; "
                          f"it accepts: {', '.join(sorted(accepted)) or 'none'}")
    try:
        return factory(**kw)
    except TypeError as exc:  # e.g. mean or std missing: say which policy it was for
        raise ConfigError(f"augmentation policy {name!r}: {exc}") from exc


@register_policy("none")
def _none(*, mean, std, image_size=None) -> Policy:
    return NormalizeOnly(mean, std)


@register_policy("weak")
def _weak(*, mean, std, image_size=None, padding: int = 4, padding_mode: str = "constant",
          flip_p: float = 0.5) -> Policy:
    # methods.md: crop with 4-pixel padding (zero; reflect for CIFAR-10 in BKD) + horizontal flip.
    return CropFlipCutout(mean, std, padding=padding, padding_mode=padding_mode, flip_p=flip_p)


@register_policy("weak_cutout")
def _weak_cutout(*, mean, std, image_size=None, padding: int = 4, padding_mode: str = "constant",
                 flip_p: float = 0.5, cutout_size: int = 16) -> Policy:
    return CropFlipCutout(mean, std, padding=padding, padding_mode=padding_mode, flip_p=flip_p,
                          cutout_size=cutout_size)


@register_policy("two_weak")
def _two_weak(*, mean, std, image_size=None, padding: int = 4, padding_mode: str = "constant",
              flip_p: float = 0.5) -> Policy:
    # Two independent weak views of each image (co-training / consistency methods).
    return MultiView([_weak(mean=mean, std=std, padding=padding, padding_mode=padding_mode, flip_p=flip_p)
                      for _ in range(2)])



@register_policy("randaugment")
def _randaugment(*, mean, std, image_size=None, n: int = 2, m: int = 9, num_bins: int = 31, padding: int = 4,
                 padding_mode: str = "constant", flip_p: float = 0.5, cutout_size: int = 0) -> Policy:
    # torchvision's defaults (num_ops 2, magnitude 9, 31 bins); the NRD/GJS student: randaugment(n=1, m=3,
    # cutout_size=16). Translation magnitudes follow each batch's H and W, so image_size is not needed.
    return RandAugment(mean, std, n=n, m=m, num_bins=num_bins, padding=padding, padding_mode=padding_mode,
                       flip_p=flip_p, cutout_size=cutout_size)


@register_policy("randaugment_gjs")
def _randaugment_gjs(*, mean, std, image_size=None, n: int = 1, m: float = 3, padding: int = 4,
                     padding_mode: str = "constant", flip_p: float = 0.5, cutout_size: int = 0) -> Policy:
    # GJS's code (ildoonet/pytorch-randaugment): the NRD / GJS student view is randaugment_gjs(n=1, m=3,
    # cutout_size=16), GJS's defaults N = 1, M = 3.
    return GJSRandAugment(mean, std, n=n, m=m, padding=padding, padding_mode=padding_mode, flip_p=flip_p,
                          cutout_size=cutout_size)


@register_policy("augmix")
def _augmix(*, mean, std, image_size=None, severity: float = 3, width: int = 3, depth: int = -1,
            alpha: float = 1.0, all_ops: bool = False, padding: int = 4, padding_mode: str = "constant",
            flip_p: float = 0.5, crop_flip: str = "before") -> Policy:
    # AugMix's CIFAR defaults (severity 3, width 3, depth 1-3, alpha 1) = the NRD teacher view; flip + crop before
    # the mixture as AugMix's CIFAR code (crop_flip=after: after it).
    return AugMix(mean, std, severity=severity, width=width, depth=depth, alpha=alpha, all_ops=all_ops,
                  padding=padding, padding_mode=padding_mode, flip_p=flip_p, crop_flip=crop_flip)

# --------------------------------------------------------------------------------------------------------
# Pipeline: what the engine holds
# --------------------------------------------------------------------------------------------------------

class AugmentPipeline:
    """A named policy bound to a data set's (mean, std) and image size.

    ``pipeline(batch_u8, generator)``: uint8 B x H x W x C (as stored) -> float32 B x C x H x W, or a tuple
    of ``num_views`` of them for multi-view policies. ``pipeline.eval_transform(batch_u8)``: normalise only,
    no randomness. Outputs are contiguous (or channels-last-contiguous with ``channels_last=True``).
    ``count``: the number of views wanted; a one-view policy is then drawn ``count`` times, one draw after
    another (a policy that makes another number of views is a ConfigError). None: whatever the policy makes.

    Example::

        pipe = AugmentPipeline("weak", CIFAR10_MEAN, CIFAR10_STD, 32, padding_mode="reflect")
        g = torch.Generator(device=images.device).manual_seed(0)
        x = pipe(images[idx], g)               # B x 3 x 32 x 32 float32
    """

    def __init__(self, policy_name: str, mean: Sequence[float], std: Sequence[float],
                 image_size: int | tuple[int, int], channels_last: bool = False, count: int | None = None,
                 **policy_kwargs):
        self.policy_name = policy_name
        self.image_size = _as_hw(image_size)
        self.policy_kwargs = dict(policy_kwargs)
        self.policy = get_policy(policy_name, mean=mean, std=std, image_size=self.image_size, **policy_kwargs)
        if count is not None and count != self.policy.num_views:
            if self.policy.num_views != 1 or not isinstance(count, int) or count < 1:
                raise ConfigError(f"policy {policy_name!r} makes {self.policy.num_views} views of each image, not "
                                  f"{count}")
            # k independent draws of a one-view policy, one after another from the generator
            self.policy = MultiView([self.policy] + [
                get_policy(policy_name, mean=mean, std=std, image_size=self.image_size, **policy_kwargs)
                for _ in range(count - 1)])
        self._eval = NormalizeOnly(mean, std)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    @property
    def num_views(self) -> int:
        return self.policy.num_views

    @property
    def mean(self) -> tuple[float, ...]:
        return self.policy.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.policy.std

    def __call__(self, batch_u8: torch.Tensor, generator: torch.Generator):
        self._check_batch(batch_u8)
        _check_generator(generator)
        out = self.policy(batch_u8, generator)
        if isinstance(out, tuple):
            return tuple(v.contiguous(memory_format=self.memory_format) for v in out)
        return out.contiguous(memory_format=self.memory_format)

    def eval_transform(self, batch_u8: torch.Tensor) -> torch.Tensor:
        """uint8 B x H x W x C -> normalised float32 B x C x H x W; no randomness."""
        self._check_batch(batch_u8)
        return self._eval(batch_u8).contiguous(memory_format=self.memory_format)

    def config(self) -> dict:
        """Plain-data description, for the resolved run config."""
        return {"policy": self.policy_name, "mean": list(self.mean), "std": list(self.std),
                "image_size": list(self.image_size), **self.policy_kwargs}

    def __repr__(self) -> str:
        return f"AugmentPipeline({self.policy_name!r}, image_size={self.image_size}, policy={self.policy!r})"

    def _check_batch(self, batch_u8: torch.Tensor) -> None:
        _check_4d(batch_u8, "batch_u8")
        if batch_u8.dtype != torch.uint8:
            raise DataError(f"augmentation input must be uint8 B x H x W x C, got dtype {batch_u8.dtype}")
        _, h, w, c = batch_u8.shape
        if (h, w) != self.image_size or c != len(self.mean):
            raise DataError(f"augmentation input must be B x {self.image_size[0]} x {self.image_size[1]} x "
                            f"{len(self.mean)} (channels last, as stored), got {tuple(batch_u8.shape)}")


# --------------------------------------------------------------------------------------------------------
# Views: the augmented images a method asks for, written as specs
# --------------------------------------------------------------------------------------------------------

_SPEC_PATTERN = re.compile(r"^\s*([A-Za-z_][\w-]*)\s*(?:\((.*)\))?\s*$", re.DOTALL)


@dataclass(frozen=True)
class ViewSpec:
    """A policy and its own options, e.g. ``randaugment(n=1, m=3)``: policy ``randaugment``, options
    ``{"n": 1, "m": 3}``. Options not given here come from the run (:class:`CommonOptions`) or the policy's
    defaults."""

    policy: str
    options: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{self.policy}({inner})" if inner else self.policy


def parse_view_spec(spec: str | Mapping | ViewSpec) -> ViewSpec:
    """``"weak"``, ``"weak_cutout(cutout_size=8)"`` or ``{"policy": "weak", "padding": 2}`` -> :class:`ViewSpec`.

    Option values are read as YAML scalars or flow lists (``1``, ``0.5``, ``true``, ``reflect``, ``[1, 2]``).
    The policy must be registered and accept every option given (ConfigError otherwise, naming the spec).
    """
    if isinstance(spec, ViewSpec):
        parsed = spec
    elif isinstance(spec, Mapping):
        options = dict(spec)
        policy = options.pop("policy", None)
        if not isinstance(policy, str):
            raise ConfigError(f"view spec {dict(spec)!r} needs a 'policy' name")
        parsed = ViewSpec(policy, options)
    elif isinstance(spec, str):
        match = _SPEC_PATTERN.match(spec)
        if match is None:
            raise ConfigError(f"view spec {spec!r} is not of the form policy or policy(option=value, ...)")
        parsed = ViewSpec(match.group(1), _parse_options(match.group(2) or "", spec))
    else:
        raise ConfigError(f"a view spec is a string like 'weak' or 'randaugment(n=1, m=3)', got {spec!r}")
    accepted = policy_options(parsed.policy)  # also the unknown-policy error
    unknown = sorted(set(parsed.options) - accepted)
    if unknown:
        raise ConfigError(f"view spec {str(spec)!r}: policy {parsed.policy!r} has no option(s) {', '.join(unknown)}; "
                          f"it accepts: {', '.join(sorted(accepted)) or 'none'}")
    return parsed


def _parse_options(text: str, spec: str) -> dict[str, Any]:
    """``"n=1, m=[3, 4]"`` -> {"n": 1, "m": [3, 4]}: split at the commas outside brackets."""
    import yaml

    from .config import load_yaml

    items, depth, current = [], 0, ""
    for char in text:
        if char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    items.append(current)
    options: dict[str, Any] = {}
    for item in (i.strip() for i in items):
        if not item:
            continue
        key, sep, raw = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ConfigError(f"view spec {spec!r}: expected option=value, got {item!r}")
        if key.strip() in options:
            raise ConfigError(f"view spec {spec!r}: the option {key.strip()!r} is given twice; give it once")
        try:
            options[key.strip()] = load_yaml(raw.strip())
        except yaml.YAMLError:
            raise ConfigError(f"view spec {spec!r}: cannot read the value of {key.strip()!r}: {raw.strip()!r}") from None
    return options


@dataclass(frozen=True)
class CommonOptions:
    """Options of the run (the config's ``augment`` section) offered to every view whose policy accepts them.

    padding:      crop padding in pixels; None: :func:`default_padding` of the image size.
    padding_mode: ``reflect`` (BKD's CIFAR-10 choice) or ``constant`` (zero).
    cutout_size:  cutout square side, 0 for none. Set, it must be accepted by at least one view's policy
                  (otherwise it would silently do nothing).
    """

    padding: int | None = None
    padding_mode: str = "reflect"
    cutout_size: int = 0


def default_padding(image_size: int | tuple[int, int]) -> int:
    """4 pixels for images of 32 px and more (the CIFAR convention, methods.md), 1 for small ones (8x8 digits)."""
    h, w = _as_hw(image_size)
    return 4 if min(h, w) >= 32 else 1


def build_views(views: Mapping[str, tuple[str | Mapping | ViewSpec, int]], mean: Sequence[float],
                std: Sequence[float], image_size: int | tuple[int, int], common: CommonOptions = CommonOptions(),
                channels_last: bool = False) -> dict[str, AugmentPipeline]:
    """One :class:`AugmentPipeline` per view: ``views`` maps a view name to (spec, count), count being the
    number of images per sample the view must give (1: a tensor; k: a tuple of k tensors).

    Each policy gets, in order of precedence, the options of its spec, the common options it accepts, and its
    own defaults. Raises ConfigError naming the view when a spec makes another number of views than asked for
    (e.g. ``two_weak`` for a view of one image) or when ``common.cutout_size`` is set and no view can apply it.
    """
    hw = _as_hw(image_size)
    offered = {"padding": common.padding if common.padding is not None else default_padding(hw),
               "padding_mode": common.padding_mode}
    if common.cutout_size:
        offered["cutout_size"] = common.cutout_size
    pipelines: dict[str, AugmentPipeline] = {}
    for name, (spec, count) in views.items():
        parsed = parse_view_spec(spec)
        accepted = policy_options(parsed.policy)
        options = {**{k: v for k, v in offered.items() if k in accepted}, **parsed.options}
        made = get_policy(parsed.policy, mean=mean, std=std, image_size=hw, **options).num_views
        if made != count and made != 1:
            advice = (f"use a one-image policy such as 'weak', or a method that takes {made} views" if count == 1
                      else f"use a one-image policy (it is drawn {count} times) or one that makes {count}")
            raise ConfigError(f"view {name!r} takes {_images(count)} per sample, but {str(parsed)!r} makes "
                              f"{_images(made)}; {advice}")
        pipelines[name] = AugmentPipeline(parsed.policy, mean, std, hw, channels_last=channels_last, count=count,
                                          **options)
    if common.cutout_size and not any("cutout_size" in policy_options(p.policy_name) for p in pipelines.values()):
        names = ", ".join(f"{n}: {p.policy_name}" for n, p in pipelines.items())
        raise ConfigError(f"augment.cutout is set but no view's policy has a cutout ({names}); use weak_cutout")
    return pipelines


def _images(count: int) -> str:
    return "one image" if count == 1 else f"{count} images"


# --------------------------------------------------------------------------------------------------------
# RNG helpers
# --------------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def global_rng_from(generator: torch.Generator, device: torch.device | str | None = None) -> Iterator[None]:
    """Run a block that uses the global RNG (e.g. kornia augmentations) reproducibly from ``generator``.

    Draws one seed from ``generator``, seeds the global CPU RNG (and the RNG of ``device`` if it is a CUDA
    device) with it inside a fork, and restores the previous global states on exit: the global RNG is left
    exactly as it was, and the block's randomness is a function of the generator state only.
    """
    generator = _check_generator(generator)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    device = torch.device(device) if device is not None else None
    cuda = device is not None and device.type == "cuda"
    cuda_index = (device.index if device.index is not None else torch.cuda.current_device()) if cuda else None
    with torch.random.fork_rng(devices=[cuda_index] if cuda else [], device_type="cuda"):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(cuda_index):
                torch.cuda.manual_seed(seed)
        yield


# --------------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------------

def _check_4d(x, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise DataError(f"{name} must be a 4-D batch, got shape {tuple(x.shape)}")


def _check_padding(padding: int, mode: str) -> None:
    if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
        raise ConfigError(f"padding must be a non-negative int, got {padding!r}")
    if mode not in PADDING_MODES:
        raise ConfigError(f"padding mode must be one of {', '.join(PADDING_MODES)}, got {mode!r}")


def _check_probability(p: float) -> None:
    if not 0.0 <= float(p) <= 1.0:
        raise ConfigError(f"probability must lie in [0, 1], got {p!r}")


def _as_hw(image_size) -> tuple[int, int]:
    if isinstance(image_size, int):
        return (image_size, image_size)
    try:
        h, w = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ConfigError(f"image_size must be an int or (H, W), got {image_size!r}") from None
    return (h, w)


__all__ = [
    "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD", "PADDING_MODES",
    "channels_first", "to_float_normalized", "random_crop", "random_flip", "random_crop_flip", "cutout",
    "Policy", "NormalizeOnly", "CropFlipCutout", "MultiView", "RandAugment", "AugMix", "AugMixDraw",
    "RANDAUGMENT_OPS", "GJSRandAugment", "GJSRandAugmentDraw", "GJS_RANDAUGMENT_OPS",
    "GJS_RANDAUGMENT_RANGES", "GJS_SIGNED_OPS", "GJS_CUTOUT_FILL", "GJS_PIXEL_OPS", "gjs_randaugment_values", "cutout_abs", "solarize_add",
    "AUGMIX_OPS", "AUGMIX_ALL_OPS", "randaugment_magnitudes", "sample_log_gamma",
    "sample_dirichlet", "sample_beta", "register_policy", "get_policy", "POLICIES",
    "available_policies", "policy_options", "AugmentPipeline", "dataset_stats", "global_rng_from",
    "ViewSpec", "parse_view_spec", "CommonOptions", "default_padding", "build_views",
]

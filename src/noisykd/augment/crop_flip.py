"""Layout, normalisation and the ops of the ``weak`` policies: random crop, horizontal flip, cutout.

Ops take and return ``B x C x H x W`` (the model layout); :func:`channels_first` turns a stored ``B x H x W x C``
batch into it without a copy. Crop and flip run on uint8 (zero padding is black, as torchvision's
``RandomCrop(32, padding=4)`` on a PIL image); cutout runs after normalisation (the square is 0, the mean colour).
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import ConfigError, DataError
from .sampling import _bernoulli, _check_generator, _randint


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

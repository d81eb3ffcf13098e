"""Batched image ops with per-image parameters, with PIL's semantics: the building blocks of RandAugment and AugMix.

Why: the reference RandAugment (torchvision) and AugMix (google-research/augmix) apply PIL operations to one
image at a time on CPU workers. Here each op transforms a whole uint8 ``B x C x H x W`` batch on its device, every
image with its own parameter (a tensor of shape ``(B,)``, or one Python number for all), so a policy can give each
image its own op and magnitude without a per-image Python loop (:func:`apply_per_image`).

Conventions:

* Input and output: uint8 ``B x C x H x W`` (0-255), the model layout of :mod:`noisykd.augment`; C is 1 (grey) or 3
  (RGB) for the ops that need a grey image (``color``, ``contrast``). Every op returns a new tensor (or ``x``
  itself where it is the identity) and leaves ``x`` untouched.
* Per-image parameters: a 1-D tensor of B values (any device: moved to the batch's device) or a Python number.
* Semantics are PIL's (Pillow 13 checked), because torchvision's RandAugment and AugMix run on PIL images:

  - geometric ops (:func:`affine`, :func:`shear_x`, ...) are ``Image.transform(size, Image.AFFINE, data)`` and
    ``Image.rotate``: output pixel (row i, col j) reads the input at ``(a*(j+.5) + b*(i+.5) + c,
    d*(j+.5) + e*(i+.5) + f)`` (PIL's coordinates: pixel corners on integers), nearest = floor of that point in
    PIL's own 16.16 fixed point, bilinear = PIL's bilinear filter (edge pixels replicated inside the image,
    truncated to uint8), ``fill`` outside;
  - enhance ops are ``ImageEnhance``: ``Image.blend(degenerate, image, factor)`` in float32, clipped to 0-255 and
    truncated (not rounded) to uint8, as PIL's C code;
  - grey is PIL's ``convert("L")``: ``(19595 R + 38470 G + 7471 B + 32768) >> 16``, i.e. R*299/1000 +
    G*587/1000 + B*114/1000 rounded (the documented formula; PIL computes it in fixed point).

Deviations from PIL (Pillow 13, measured on 64 random/gradient/low-contrast 32 x 32 images): none for every op at
all 31 RandAugment magnitudes and both signs; bilinear shears and rotations differ by 1 grey level in about 2 of
a million values (an interpolated value within 1e-14 of an integer, truncated the other way: PIL's C code
evaluates the same double expressions in another order).

GPU note: :func:`apply_per_image` finds the images of each op with ``nonzero`` (one device sync per op type).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..errors import ConfigError, DataError

INTERPOLATIONS = ("nearest", "bilinear")


# --------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------

def _check_images(x, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise DataError(f"{name} must be a 4-D uint8 batch B x C x H x W, got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        raise DataError(f"{name} must be uint8 (0-255) B x C x H x W, got dtype {x.dtype}")


def per_image(value, b: int, device: torch.device, dtype: torch.dtype, name: str) -> torch.Tensor:
    """A parameter as a ``(B,)`` tensor of ``dtype`` on ``device``: a Python number is repeated B times."""
    if isinstance(value, torch.Tensor):
        if value.ndim == 0:
            value = value.expand(b)
        if value.ndim != 1 or value.shape[0] != b:
            raise DataError(f"{name}: expected one value per image ({b}), got shape {tuple(value.shape)}")
        return value.to(device=device, dtype=dtype)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number or a tensor of one value per image, got {value!r}")
    return torch.full((b,), value, dtype=dtype, device=device)


def _col(t: torch.Tensor) -> torch.Tensor:
    """(B,) -> B x 1 x 1 x 1, to broadcast over an image batch."""
    return t.view(-1, 1, 1, 1)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """uint8 B x C x H x W (C = 1 or 3) -> uint8 B x 1 x H x W, PIL's ``convert("L")`` (a grey image is itself)."""
    _check_images(x)
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise DataError(f"a grey version needs 1 or 3 channels (PIL modes L, RGB), got {x.shape[1]}")
    r, g, b = x.to(torch.int32).unbind(1)
    # PIL's fixed point (libImaging/Convert.c, L24): bit-exact, unlike the truncated doc formula (off by 1 in ~half)
    return ((r * 19595 + g * 38470 + b * 7471 + 32768) >> 16).to(torch.uint8).unsqueeze(1)


# --------------------------------------------------------------------------------------------------------
# Geometric ops (PIL Image.transform AFFINE / Image.rotate)
# --------------------------------------------------------------------------------------------------------

def affine(x: torch.Tensor, matrix: torch.Tensor, interpolation: str = "nearest", fill: int = 0) -> torch.Tensor:
    """Warp each image with its own inverse affine map, as PIL's ``Image.transform(size, Image.AFFINE, data)``.

    x: uint8 B x C x H x W. matrix: B x 6 (a, b, c, d, e, f) per image, PIL's ``data``: the output pixel at (row i,
    col j) reads the input at ``(a*(j+.5) + b*(i+.5) + c, d*(j+.5) + e*(i+.5) + f)`` in PIL's coordinates
    (integers on pixel corners).
    interpolation: 'nearest' (PIL NEAREST: the pixel containing the sample point, computed as PIL does, in 16.16
    fixed point for maps with a shear or rotation part, see :func:`_nearest_source`) or 'bilinear' (PIL BILINEAR:
    the sample point, in float64, must lie inside the image, neighbours past the edge are the edge pixel, the
    result is truncated to uint8).
    fill: the value (0-255, every channel) of output pixels whose sample point is outside the image.
    Returns uint8 B x C x H x W.
    """
    _check_images(x)
    if interpolation not in INTERPOLATIONS:
        raise ConfigError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    if not isinstance(fill, int) or not 0 <= fill <= 255:
        raise ConfigError(f"fill must be an int in 0-255, got {fill!r}")
    b, c, h, w = x.shape
    dev = x.device
    if not isinstance(matrix, torch.Tensor) or tuple(matrix.shape) != (b, 6):
        raise DataError(f"affine matrix must be a B x 6 tensor (B = {b}), got "
                        f"{tuple(matrix.shape) if isinstance(matrix, torch.Tensor) else type(matrix).__name__}")
    m = matrix.to(device=dev, dtype=torch.float64)
    # Gather whole pixels from a (B*H*W) x C matrix by flat index (the layout random_crop_flip uses too).
    pixels = x.permute(0, 2, 3, 1).contiguous().view(b * h * w, c)
    base = torch.arange(b, device=dev).view(b, 1, 1) * (h * w)

    def gather(iy: torch.Tensor, ix: torch.Tensor) -> torch.Tensor:
        return pixels.index_select(0, (base + iy * w + ix).view(-1)).view(b, h, w, c)

    if interpolation == "nearest":
        ix, iy = _nearest_source(m, h, w)
        inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
        out = gather(iy.clamp_(0, h - 1), ix.clamp_(0, w - 1))  # clamped to stay addressable; masked below
    else:
        # PIL's generic path (affine_transform in Geometry.c): a*x + b*y + c at the pixel centre, in double.
        a_, b_, c_, d_, e_, f_ = m.view(b, 6, 1, 1).unbind(1)  # six B x 1 x 1
        cols = torch.arange(w, device=dev, dtype=torch.float64).view(1, 1, w) + 0.5
        rows = torch.arange(h, device=dev, dtype=torch.float64).view(1, h, 1) + 0.5
        sx = a_ * cols + b_ * rows + c_  # B x H x W
        sy = d_ * cols + e_ * rows + f_
        inside = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)  # the point itself must lie in the image
        # PIL's bilinear_filter (Geometry.c): shift by half a pixel, floor, clip the 4 neighbours to the image.
        fx, fy = sx - 0.5, sy - 0.5
        x0f, y0f = fx.floor(), fy.floor()
        dx, dy = (fx - x0f).unsqueeze(-1), (fy - y0f).unsqueeze(-1)
        x0, y0 = x0f.long(), y0f.long()
        x1, y1 = (x0 + 1).clamp_(0, w - 1), (y0 + 1).clamp_(0, h - 1)
        x0, y0 = x0.clamp_(0, w - 1), y0.clamp_(0, h - 1)
        p00, p01 = gather(y0, x0).double(), gather(y0, x1).double()
        p10, p11 = gather(y1, x0).double(), gather(y1, x1).double()
        top = p00 + (p01 - p00) * dx
        bottom = p10 + (p11 - p10) * dx
        # Values stay in [0, 255] (convex combination); the cast truncates, as PIL's (UINT8) cast.
        out = (top + (bottom - top) * dy).to(torch.uint8)
    out = torch.where(inside.unsqueeze(-1), out, torch.tensor(fill, dtype=torch.uint8, device=dev))
    return out.permute(0, 3, 1, 2).contiguous()


def _nearest_source(m: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ix, iy), each B x H x W int64: the input pixel PIL's NEAREST affine reads for every output pixel.

    PIL (ImagingTransformAffine, Geometry.c) has two nearest paths, reproduced exactly here:

    * a map with a shear or rotation part (b or d non-zero): ``affine_fixed``, 16.16 fixed point. Each entry
      becomes FIX(v) = floor(v * 65536 + 0.5), the start c + a/2 + b/2 likewise; the source column is
      (FIX(start) + i * FIX(b) + j * FIX(a)) >> 16. Integer sums, so the closed form equals PIL's running sums.
      This matters: computed in float64 instead, sample points within 2^-17 of a pixel edge (whole rows for
      shear factors like 0.04 or 0.2) land on the other pixel, 0.75% of the values of RandAugment's shears.
      (PIL falls back to doubles when a corner maps beyond +-32768 px: not reproduced, no image here is that big.)
    * a pure scale / translation (b = d = 0): ``ImagingScaleAffine``, doubles: column floor(c + a/2 + j*a)
      (PIL adds a per column; identical for the integer shifts the policies use).
    """
    a, b, c, d, e, f = (v.view(-1, 1, 1) for v in m.unbind(1))  # each B x 1 x 1 float64
    cols = torch.arange(w, device=m.device).view(1, 1, w)
    rows = torch.arange(h, device=m.device).view(1, h, 1)

    def fix(v: torch.Tensor) -> torch.Tensor:
        return (v * 65536.0 + 0.5).floor().long()

    fixed_x = (fix(c + a * 0.5 + b * 0.5) + rows * fix(b) + cols * fix(a)) >> 16  # arithmetic shift: floor
    fixed_y = (fix(f + d * 0.5 + e * 0.5) + rows * fix(e) + cols * fix(d)) >> 16
    scale_x = (c + a * 0.5 + cols * a).floor().long()
    scale_y = (f + e * 0.5 + rows * e).floor().long()
    use_fixed = (b != 0) | (d != 0)
    return torch.where(use_fixed, fixed_x, scale_x), torch.where(use_fixed, fixed_y, scale_y)


def _matrix(batch: int, device: torch.device, **entries: torch.Tensor) -> torch.Tensor:
    """B x 6 float64 identity affine data with some entries (a..f) replaced by per-image values."""
    names = "abcdef"
    m = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], dtype=torch.float64, device=device).repeat(batch, 1)
    for key, value in entries.items():
        m[:, names.index(key)] = value
    return m


def shear_x(x: torch.Tensor, factor, interpolation: str = "nearest", fill: int = 0) -> torch.Tensor:
    """Horizontal shear about the top-left corner: PIL ``transform(AFFINE, (1, factor, 0, 0, 1, 0))``.

    factor: (B,) or a number; output (row i, col j) reads input col j + factor * (i + .5). This is what
    torchvision's RandAugment does for ShearX (``F.affine(shear=[degrees(atan(v)), 0], center=[0, 0])`` gives this
    matrix) and what AugMix's ``shear_x`` does.
    """
    _check_images(x)
    v = per_image(factor, x.shape[0], x.device, torch.float64, "shear factor")
    return affine(x, _matrix(x.shape[0], x.device, b=v), interpolation, fill)


def shear_y(x: torch.Tensor, factor, interpolation: str = "nearest", fill: int = 0) -> torch.Tensor:
    """Vertical shear about the top-left corner: PIL ``transform(AFFINE, (1, 0, 0, factor, 1, 0))``."""
    _check_images(x)
    v = per_image(factor, x.shape[0], x.device, torch.float64, "shear factor")
    return affine(x, _matrix(x.shape[0], x.device, d=v), interpolation, fill)


def translate_x(x: torch.Tensor, pixels, interpolation: str = "nearest", fill: int = 0) -> torch.Tensor:
    """Move the content ``pixels`` to the right (negative: left), ``fill`` entering: PIL ``(1, 0, -pixels, 0, 1, 0)``.

    The sign is torchvision's (``F.affine(translate=[t, 0])``); AugMix's ``(1, 0, level, 0, 1, 0)`` is
    ``translate_x(x, -level)``. Integer pixels give an exact shift.
    """
    _check_images(x)
    v = per_image(pixels, x.shape[0], x.device, torch.float64, "translate pixels")
    return affine(x, _matrix(x.shape[0], x.device, c=-v), interpolation, fill)


def translate_y(x: torch.Tensor, pixels, interpolation: str = "nearest", fill: int = 0) -> torch.Tensor:
    """Move the content ``pixels`` down (negative: up): PIL ``(1, 0, 0, 0, 1, -pixels)``."""
    _check_images(x)
    v = per_image(pixels, x.shape[0], x.device, torch.float64, "translate pixels")
    return affine(x, _matrix(x.shape[0], x.device, f=-v), interpolation, fill)


def rotation_matrix(degrees: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """B x 6 float64: PIL ``Image.rotate(degrees)``'s affine data (counter-clockwise about (W/2, H/2), PIL's
    coordinates, i.e. the true image centre; entries rounded to 15 decimals as PIL does)."""
    angle = -torch.deg2rad(degrees.to(torch.float64))
    cos, sin = torch.round(torch.cos(angle), decimals=15), torch.round(torch.sin(angle), decimals=15)
    cx, cy = w / 2, h / 2
    a, b_, d, e = cos, sin, -sin, cos
    c = a * (-cx) + b_ * (-cy) + cx
    f = d * (-cx) + e * (-cy) + cy
    return torch.stack([a, b_, c, d, e, f], dim=1)


def rotate(x: torch.Tensor, degrees, interpolation: str = "nearest", fill: int = 0) -> torch.Tensor:
    """Rotate each image counter-clockwise by ``degrees`` about its centre, same size, ``fill`` in the corners:
    PIL ``Image.rotate(degrees, resample, fillcolor=fill)`` (torchvision's ``F.rotate`` on a PIL image)."""
    _check_images(x)
    v = per_image(degrees, x.shape[0], x.device, torch.float64, "rotation degrees")
    return affine(x, rotation_matrix(v, x.shape[2], x.shape[3]), interpolation, fill)


# --------------------------------------------------------------------------------------------------------
# Colour ops (PIL ImageEnhance: blend with a degenerate image)
# --------------------------------------------------------------------------------------------------------

def blend(degenerate: torch.Tensor, x: torch.Tensor, factor) -> torch.Tensor:
    """PIL ``Image.blend(degenerate, x, factor)``: ``degenerate + factor * (x - degenerate)`` in float32, clipped
    to 0-255, truncated to uint8. degenerate: uint8 broadcastable to x (e.g. B x 1 x H x W, B x 1 x 1 x 1)."""
    _check_images(x)
    f = _col(per_image(factor, x.shape[0], x.device, torch.float32, "enhance factor"))
    d = degenerate.to(torch.float32)
    # Two roundings (multiply, then add), as PIL's C expression in float; no fused multiply-add.
    out = (x.to(torch.float32) - d).mul_(f).add_(d)
    return out.clamp_(0, 255).to(torch.uint8)


def brightness(x: torch.Tensor, factor) -> torch.Tensor:
    """PIL ``ImageEnhance.Brightness(img).enhance(factor)``: blend with black. factor: (B,) or a number,
    1 = identity."""
    _check_images(x)
    return blend(torch.zeros((), dtype=torch.uint8, device=x.device), x, factor)


def color(x: torch.Tensor, factor) -> torch.Tensor:
    """PIL ``ImageEnhance.Color`` (saturation): blend with the image's grey version. factor 0: grey, 1: identity."""
    return blend(grayscale(x), x, factor)


def contrast(x: torch.Tensor, factor) -> torch.Tensor:
    """PIL ``ImageEnhance.Contrast``: blend with a flat image of the grey version's mean, rounded to an integer."""
    g = grayscale(x)
    b, _, h, w = g.shape
    # PIL: int(ImageStat.Stat(L).mean[0] + 0.5), the mean from an exact integer sum, in double precision.
    mean = (g.view(b, -1).sum(1, dtype=torch.int64).double() / (h * w) + 0.5).floor()
    return blend(_col(mean).to(torch.uint8), x, factor)


def smooth(x: torch.Tensor) -> torch.Tensor:
    """PIL ``img.filter(ImageFilter.SMOOTH)``: the 3x3 kernel [[1,1,1],[1,5,1],[1,1,1]] / 13, rounded, per channel;
    the one-pixel border is the input's (PIL does not filter it). Images under 3 x 3 come back unchanged."""
    _check_images(x)
    b, c, h, w = x.shape
    out = x.clone()
    if h < 3 or w < 3:
        return out
    xi = x.to(torch.int32)
    acc = 4 * xi[:, :, 1:-1, 1:-1]  # centre weight 5 = 4 + the 1 of the 3x3 box sum below
    for dy in range(3):  # a loop over the 9 kernel taps, not over images
        for dx in range(3):
            acc = acc + xi[:, :, dy:dy + h - 2, dx:dx + w - 2]
    # floor(acc / 13 + 0.5), exactly in integers (PIL: float sum + 0.5, truncated; acc/13 never ends in .5).
    out[:, :, 1:-1, 1:-1] = ((2 * acc + 13) // 26).to(torch.uint8)
    return out


def sharpness(x: torch.Tensor, factor) -> torch.Tensor:
    """PIL ``ImageEnhance.Sharpness``: blend with :func:`smooth` (factor 0: blurred, 1: identity, 2: sharpened;
    the border pixels never change, since there the degenerate image equals the input)."""
    return blend(smooth(x), x, factor)


# --------------------------------------------------------------------------------------------------------
# Tone ops (PIL ImageOps)
# --------------------------------------------------------------------------------------------------------

def posterize(x: torch.Tensor, bits) -> torch.Tensor:
    """PIL ``ImageOps.posterize(img, bits)``: keep the ``bits`` high bits of every value. bits: (B,) ints in 0-8
    (0 gives black, as older Pillow; Pillow 13 refuses 0)."""
    _check_images(x)
    k = per_image(bits, x.shape[0], x.device, torch.int64, "posterize bits")
    if bool(((k < 0) | (k > 8)).any()):
        raise ConfigError(f"posterize bits must lie in 0-8, got {k.tolist()}")
    mask = (255 << (8 - k)) & 255
    return x & _col(mask.to(torch.uint8))


def solarize(x: torch.Tensor, threshold) -> torch.Tensor:
    """PIL ``ImageOps.solarize(img, threshold)``: invert (255 - v) every value v >= threshold. threshold: (B,) or a
    number, may be fractional (torchvision's RandAugment passes linspace(255, 0) values); 256 = identity."""
    _check_images(x)
    t = _col(per_image(threshold, x.shape[0], x.device, torch.float64, "solarize threshold"))
    return torch.where(x.to(torch.float64) >= t, 255 - x, x)


def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageOps.autocontrast(img)`` (cutoff 0): per image and channel, map [min, max] linearly onto [0, 255]
    (``int(v * scale - min * scale)``, scale = 255 / (max - min), in float64 as PIL's Python); a channel with a
    single value is left alone."""
    _check_images(x)
    b, c, h, w = x.shape
    flat = x.reshape(b, c, h * w)
    lo, hi = flat.amin(2, keepdim=True).double(), flat.amax(2, keepdim=True).double()
    flat_ok = hi > lo
    # A true division (``255.0 / tensor`` would multiply by a reciprocal: 248 * scale gave 254.99..., PIL 255).
    scale = torch.full_like(hi, 255.0).div_(torch.where(flat_ok, hi - lo, torch.ones_like(hi)))
    offset = -lo * scale
    out = (flat.double() * scale + offset).trunc_().clamp_(0, 255).to(torch.uint8)
    return torch.where(flat_ok, out, flat).view(b, c, h, w)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageOps.equalize(img)``: per image and channel, histogram equalisation with PIL's integer lookup table.

    For each channel's 256-bin histogram hist: step = (number of pixels - count of the highest occupied bin) // 255;
    lut[v] = (step // 2 + number of pixels below v) // step, clipped at 255 (``Image.point`` clips); identity when
    at most one bin is occupied or step is 0. Histograms of all images at once: one ``bincount`` of
    (image, channel)-offset values.
    """
    _check_images(x)
    b, c, h, w = x.shape
    dev = x.device
    n = b * c
    flat = x.reshape(n, h * w).long()
    offset = torch.arange(n, device=dev).unsqueeze(1) * 256
    index = (flat + offset).view(-1)
    hist = torch.bincount(index, minlength=n * 256).view(n, 256)
    occupied = hist > 0
    levels = torch.arange(256, device=dev)
    last = torch.where(occupied, levels, -1).amax(1, keepdim=True)  # the highest occupied bin
    step = (h * w - hist.gather(1, last)) // 255
    below = hist.cumsum(1) - hist  # pixels strictly below each value
    lut = ((step // 2 + below) // step.clamp(min=1)).clamp_(max=255)
    keep = (occupied.sum(1, keepdim=True) <= 1) | (step == 0)
    lut = torch.where(keep, levels, lut)
    return lut.view(-1).index_select(0, index).to(torch.uint8).view(b, c, h, w)


def identity(x: torch.Tensor, *_unused) -> torch.Tensor:
    """The image unchanged (RandAugment's Identity op)."""
    _check_images(x)
    return x


# --------------------------------------------------------------------------------------------------------
# Per-image op choice
# --------------------------------------------------------------------------------------------------------

OpFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def apply_per_image(x: torch.Tensor, op_index: torch.Tensor, ops: Sequence[OpFn | None]) -> torch.Tensor:
    """Apply to each image the op it drew: image i gets ``ops[op_index[i]]``; index -1 (or an op None) leaves it.

    x: uint8 B x C x H x W. op_index: (B,) int on x's device. ops[k]: ``fn(images, idx) -> images``, called once
    with the sub-batch of every image that drew k and those images' positions ``idx`` in the batch (to pick their
    parameters). A loop over op types, not over images. Returns a new tensor (x untouched).
    """
    out = x.clone()
    for k, fn in enumerate(ops):
        if fn is None:
            continue
        idx = (op_index == k).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        out.index_copy_(0, idx, fn(x.index_select(0, idx), idx))
    return out


__all__ = [
    "INTERPOLATIONS", "per_image", "grayscale", "affine", "shear_x", "shear_y", "translate_x", "translate_y",
    "rotation_matrix", "rotate", "blend", "brightness", "color", "contrast", "smooth", "sharpness", "posterize",
    "solarize", "autocontrast", "equalize", "identity", "apply_per_image",
]

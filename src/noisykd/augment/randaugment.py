"""RandAugment, batched with per-image ops: torchvision's table (policy ``randaugment``) and the table of
ildoonet/pytorch-randaugment that GJS's code installs (policy ``randaugment_gjs``, the NRD / GJS student view).

Both give every image its own ops, drawn from the generator, and apply each op to the images that drew it (a loop
over op types, never over images), with PIL's semantics (:mod:`noisykd.augment.ops`), then crop + flip, normalise
and Cutout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import ConfigError
from . import ops as O
from .policies import CropFlipCutout, Policy, _check_int_option, register_policy
from .crop_flip import channels_first
from .sampling import _bernoulli, _check_generator, _randint, _uniform


# --------------------------------------------------------------------------------------------------------
# RandAugment with torchvision's table (per-image random op choice, batched; ops in noisykd.augment.ops)
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
    uint8 image with PIL's semantics (:mod:`noisykd.augment.ops`; geometry with NEAREST and fill 0,
    torchvision's defaults). Not GJS's table: the NRD / GJS student view is :class:`GJSRandAugment`
    (``randaugment_gjs``); ``randaugment(n=1, m=3, cutout_size=16)`` is its torchvision counterpart (NRD's
    ``student_randaugment=torchvision``), about a quarter of its pixel change at M = 3.

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
    # the PIL enhance factor itself, no sign
    "color": (0.1, 1.9), "contrast": (0.1, 1.9), "brightness": (0.1, 1.9), "sharpness": (0.1, 1.9),
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
    :data:`GJS_SIGNED_OPS`). With PIL's semantics (:mod:`noisykd.augment.ops`): geometry NEAREST with fill 0;
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
    colour = torch.tensor(fill, dtype=torch.uint8, device=x.device).view(1, 3, 1, 1)
    if c != 3:  # a grey image: PIL's convert("L") of the colour
        colour = O.grayscale(colour).expand(1, c, 1, 1)
    return torch.where(inside.unsqueeze(1), colour, x)


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


@register_policy("randaugment")
def _randaugment(*, mean, std, image_size=None, n: int = 2, m: int = 9, num_bins: int = 31, padding: int = 4,
                 padding_mode: str = "constant", flip_p: float = 0.5, cutout_size: int = 0) -> Policy:
    # torchvision's defaults (num_ops 2, magnitude 9, 31 bins); NRD/GJS use GJS's table (randaugment_gjs), this
    # one with student_randaugment=torchvision. Translation magnitudes follow each batch's H and W.
    return RandAugment(mean, std, n=n, m=m, num_bins=num_bins, padding=padding, padding_mode=padding_mode,
                       flip_p=flip_p, cutout_size=cutout_size)


@register_policy("randaugment_gjs")
def _randaugment_gjs(*, mean, std, image_size=None, n: int = 1, m: float = 3, padding: int = 4,
                     padding_mode: str = "constant", flip_p: float = 0.5, cutout_size: int = 0) -> Policy:
    # GJS's code (ildoonet/pytorch-randaugment): the NRD / GJS student view is randaugment_gjs(n=1, m=3,
    # cutout_size=16), GJS's defaults N = 1, M = 3.
    return GJSRandAugment(mean, std, n=n, m=m, padding=padding, padding_mode=padding_mode, flip_p=flip_p,
                          cutout_size=cutout_size)

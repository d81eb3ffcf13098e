"""AugMix (Hendrycks et al. 2020), batched with per-image chains (policy ``augmix``, the NRD teacher view).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from . import ops as O
from .crop_flip import channels_first, random_crop_flip
from .policies import MAX_AUGMENT_COUNT, CropFlipCutout, Policy, _check_int_option, register_policy
from .sampling import _bernoulli, _check_generator, _randint, _uniform, sample_beta, sample_dirichlet


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


@register_policy("augmix")
def _augmix(*, mean, std, image_size=None, severity: float = 3, width: int = 3, depth: int = -1,
            alpha: float = 1.0, all_ops: bool = False, padding: int = 4, padding_mode: str = "constant",
            flip_p: float = 0.5, crop_flip: str = "before") -> Policy:
    # AugMix's CIFAR defaults (severity 3, width 3, depth 1-3, alpha 1) = the NRD teacher view; flip + crop before
    # the mixture as AugMix's CIFAR code (crop_flip=after: after it).
    return AugMix(mean, std, severity=severity, width=width, depth=depth, alpha=alpha, all_ops=all_ops,
                  padding=padding, padding_mode=padding_mode, flip_p=flip_p, crop_flip=crop_flip)

"""Policies, the base of every augmentation, and their registry.

A policy maps a stored batch (uint8 ``B x H x W x C``) and a generator to normalised float32 ``B x C x H x W``
(or a tuple of views). Here: the base class, ``none`` / ``weak`` / ``weak_cutout`` / ``two_weak``, several views
of one batch, and the registry (:func:`register_policy`, :func:`get_policy`); RandAugment and AugMix register
themselves from their own modules.
"""

from __future__ import annotations

import inspect
from typing import Callable, Sequence

import torch

from ..errors import ConfigError
from ..registry import Registry
from .crop_flip import _affine, _check_padding, _check_probability, _normalize, channels_first, cutout, random_crop_flip


def _import_builtin_policies() -> None:
    from . import augmix, randaugment  # noqa: F401  (importing registers them)


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
POLICIES: Registry[PolicyFactory] = Registry("augmentation policy", context_params=tuple(_CONTEXT_ARGS),
                                             builtins=_import_builtin_policies)


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

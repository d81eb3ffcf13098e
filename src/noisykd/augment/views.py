"""Views: the augmented images a method asks for, written as specs (``"randaugment_gjs(n=1, m=3)"``), parsed,
checked against the policies' options and built into pipelines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..errors import ConfigError
from .crop_flip import _as_hw
from .pipeline import AugmentPipeline
from .policies import get_policy, policy_options


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

    from ..config import load_yaml

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


#: GJS's Cutout side on 32-px CIFAR images (GJS's code; the NRD appendix says 5)
GJS_CUTOUT = 16
#: GJS's student RandAugment by table: GJS's (ildoonet/pytorch-randaugment) or torchvision's
RANDAUGMENT_VARIANTS = {"gjs": "randaugment_gjs", "torchvision": "randaugment"}


def gjs_student_view(variant: str, cutout_size: int | None, image_shape: tuple[int, int, int]) -> str:
    """The view spec of GJS's (and NRD's) student: RandAugment(N=1, M=3) of table ``variant`` (a key of
    :data:`RANDAUGMENT_VARIANTS`) -> crop (zero padding) -> flip -> Cutout. cutout_size: its side, or None for
    GJS's 16 px scaled to the image (16 on 32 px, 4 on 8 px). image_shape: (H, W, C)."""
    return (f"{RANDAUGMENT_VARIANTS[variant]}(n=1, m=3, cutout_size={gjs_cutout_size(cutout_size, image_shape)}, "
            f"padding_mode=constant)")


def gjs_cutout_size(given: int | None, image_shape: tuple[int, int, int]) -> int:
    """The student Cutout side: ``given``, or GJS's 16 px scaled to the image side. image_shape: (H, W, C)."""
    if given is not None:
        return given
    h, w, _ = image_shape
    return max(1, round(GJS_CUTOUT * min(h, w) / 32))


def _images(count: int) -> str:
    return "one image" if count == 1 else f"{count} images"

"""Named losses and their papers' hyperparameters, combined by :func:`get_loss`.

``LOSSES`` maps a loss name to its function; ``LOSS_PRESETS`` maps a preset name to hyperparameters. A preset
name is ``LOSS`` (the loss's default, from its original paper) or ``LOSS/VARIANT``; the part before ``/``
names the loss. Variants:

* ``sce/cifar10``, ``sce/cifar100``, ``nce_rce/cifar10``, ``nce_rce/cifar100``: the original papers' values.
* ``LOSS/DATASET-SETTING`` with DATASET in {cifar10, cifar100} and SETTING in {clean, sym20, sym40, sym60,
  sym80, asym20, asym40}: NRD Table 5 (Appendix A.1), whose baseline values "are identical to" the GJS paper's
  [6]. Learning rate and weight decay of the same table: :func:`nrd_table5_optimizer`.
* ``js/webvision``, ``gjs/webvision``, ``nrd/webvision``: the GJS authors' WebVision configs and NRD A.2.

Example::

    loss_fn = get_loss("sce/cifar100-sym40")          # alpha, beta, log_clamp from NRD Table 5
    loss = loss_fn(logits, labels)
    loss_fn = get_loss("gce", q=0.5)                  # override a hyperparameter
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Callable

import torch

from ..errors import ConfigError
from ..registry import Registry
from .divergence import gjs_loss, js_loss
from .robust import (
    bootstrapping_hard,
    bootstrapping_soft,
    confidence_penalty,
    cross_entropy,
    generalized_cross_entropy,
    label_smoothing,
    nce_rce,
    normalized_cross_entropy,
    reverse_cross_entropy,
    soft_cross_entropy,
    symmetric_cross_entropy,
)

__all__ = [
    "LOSSES",
    "ALIASES",
    "LOSS_PRESETS",
    "TABLE5_SETTINGS",
    "CMD_SELF_KD_EPSILON_GRID",
    "get_loss",
    "list_presets",
    "nrd_table5_optimizer",
]

# Every loss is called as fn(logits, labels, **hyperparameters); for js/gjs/nrd ``logits`` is what the
# function takes (one (B, C) tensor for js, a list of views for gjs and nrd).
_LOSS_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "ce": cross_entropy,
    "soft_ce": soft_cross_entropy,
    "ls": label_smoothing,
    "cp": confidence_penalty,
    "boot": bootstrapping_soft,
    "boot_hard": bootstrapping_hard,
    "gce": generalized_cross_entropy,
    "rce": reverse_cross_entropy,
    "sce": symmetric_cross_entropy,
    "nce": normalized_cross_entropy,
    "nce_rce": nce_rce,
    "js": js_loss,
    "gjs": gjs_loss,
    # NRD's loss is GJS over (onehot(y), student view, EMA-teacher view); the caller detaches the teacher.
    "nrd": gjs_loss,
}
#: Loss functions by name (read like a dict); ``get_loss`` binds one to its hyperparameters.
LOSSES: Registry[Callable[..., torch.Tensor]] = Registry("loss")
for _name, _fn in _LOSS_FUNCTIONS.items():
    LOSSES.register(_name, _fn)

# Names used in the papers' tables.
ALIASES = {"bs": "boot", "boot_soft": "boot", "nce+rce": "nce_rce", "label_smoothing": "ls"}

# ln(1e-4) = -9.21: the value the SCE, Active-Passive-Losses and GJS reference codes use for ln 0 in RCE
# (they clip the one-hot label at 1e-4); the SCE paper writes A = -4. Table-5 presets use the code's value
# because those alpha/beta were tuned with it.
CODE_LOG_CLAMP = math.log(1e-4)

# ProSelfLC/CMD code base sweep for the fixed eps of LS, CP and Boot-soft (ProSelfLC-AT,
# tests/convnets/test_trainer_cnn_vision_cifar100_lscplc_covnets.py); CMD reports no chosen value.
CMD_SELF_KD_EPSILON_GRID = (0.125, 0.25, 0.375, 0.5)

LOSS_PRESETS: dict[str, dict] = {
    "ce": {},
    "soft_ce": {},
    "nce": {},
    # Szegedy et al. 2016, the original label smoothing: eps = 0.1.
    "ls": {"epsilon": 0.1},
    # No published value fits: Pereyra et al. 2017 tune beta per task, CMD reports none. 0.25 is a point of the
    # CMD/ProSelfLC grid above, chosen by this project, not a paper's optimum: tune it.
    "cp": {"beta": 0.25},
    # Reed et al. 2015: soft bootstrapping beta = 0.95, hard bootstrapping beta = 0.8 (beta weighs the label).
    "boot": {"beta": 0.95},
    "boot_hard": {"beta": 0.8},
    # Zhang & Sabuncu 2018: q = 0.7.
    "gce": {"q": 0.7},
    # Wang et al. 2019: A = -4 (paper text).
    "rce": {"log_clamp": -4.0},
    # Wang et al. 2019 (paper and their train_models.py): CIFAR-10 alpha 0.1, beta 1.0; CIFAR-100 6.0, 0.1.
    "sce": {"alpha": 0.1, "beta": 1.0, "log_clamp": -4.0},
    "sce/cifar10": {"alpha": 0.1, "beta": 1.0, "log_clamp": -4.0},
    "sce/cifar100": {"alpha": 6.0, "beta": 0.1, "log_clamp": -4.0},
    # Ma et al. 2020: CIFAR-10 alpha 1, beta 1; CIFAR-100 alpha 10, beta 0.1.
    "nce_rce": {"alpha": 1.0, "beta": 1.0},
    "nce_rce/cifar10": {"alpha": 1.0, "beta": 1.0},
    "nce_rce/cifar100": {"alpha": 10.0, "beta": 0.1},
    # Equal weights: the symmetric JS and GJS (label, view 1, view 2) = (0.5, 0.25, 0.25). No single default
    # exists: Englesson & Azizpour tune pi1 per setting (the Table-5 presets below).
    "js": {"pi1": 0.5},
    "gjs": {"pis": 0.5},
    # NRD Table 5: (0.2, 0.6, 0.2) is its value for 9 of the 14 CIFAR columns.
    "nrd": {"pis": (0.2, 0.6, 0.2)},
    # GJS authors' scripts/WebVision/{js,gjs}.yaml: weights (0.1, 0.9) and (0.1, 0.45, 0.45), loss "JSWC",
    # i.e. *without* the 1/Z scaling (their CIFAR configs use the scaled "JSWCS").
    "js/webvision": {"pi1": 0.1, "scale": False},
    "gjs/webvision": {"pis": (0.1, 0.45, 0.45), "scale": False},
    # NRD Appendix A.2: pi = (0.1, 0.8, 0.1). Unscaled by inference: NRD copies GJS's WebVision learning rate
    # (0.1), which was tuned for the unscaled loss; the paper does not say.
    "nrd/webvision": {"pis": (0.1, 0.8, 0.1), "scale": False},
}

# --- NRD Table 5 (Appendix A.1): per-setting hyperparameters of every CIFAR baseline ----------------------------

TABLE5_SETTINGS = ("clean", "sym20", "sym40", "sym60", "sym80", "asym20", "asym40")

# Transcribed column by column from NRD Table 5, in TABLE5_SETTINGS order. Table names: BS -> boot,
# NCE+RCE -> nce_rce. BS values are the weight of the *prediction* (see _table5_params).
_TABLE5 = {
    "cifar10": {
        "boot": (0.5, 0.5, 0.7, 0.7, 0.9, 0.7, 0.5),
        "ls": (0.1, 0.5, 0.9, 0.7, 0.1, 0.1, 0.1),
        "sce": ((0.2, 0.1), (0.05, 0.1), (0.1, 0.1), (0.2, 1.0), (0.1, 1.0), (0.1, 0.1), (0.2, 1.0)),
        "gce": (0.5, 0.7, 0.7, 0.7, 0.9, 0.1, 0.1),
        "nce_rce": ((10, 0.1), (10, 0.1), (10, 0.1), (1.0, 0.1), (10, 1.0), (10, 0.1), (1.0, 0.1)),
        "js": (0.1, 0.7, 0.7, 0.9, 0.9, 0.3, 0.3),
        "gjs": (0.5, 0.3, 0.9, 0.1, 0.1, 0.3, 0.3),
        "nrd": (
            (0.2, 0.6, 0.2), (0.2, 0.6, 0.2), (0.2, 0.6, 0.2), (0.25, 0.5, 0.25),
            (0.25, 0.5, 0.25), (0.1, 0.8, 0.1), (0.15, 0.7, 0.15),
        ),
    },
    "cifar100": {
        "boot": (0.7, 0.5, 0.5, 0.5, 0.9, 0.3, 0.3),
        "ls": (0.1, 0.7, 0.7, 0.7, 0.9, 0.5, 0.7),
        "sce": ((0.1, 0.1), (0.1, 0.1), (0.1, 0.1), (0.1, 1.0), (0.1, 0.1), (0.1, 1.0), (0.1, 1.0)),
        "gce": (0.5, 0.5, 0.5, 0.7, 0.7, 0.7, 0.7),
        "nce_rce": ((20, 0.1), (20, 0.1), (20, 0.1), (20, 0.1), (20, 0.1), (20, 0.1), (10, 0.1)),
        "js": (0.1, 0.1, 0.3, 0.5, 0.3, 0.5, 0.5),
        "gjs": (0.3, 0.3, 0.5, 0.9, 0.1, 0.5, 0.1),
        "nrd": (
            (0.2, 0.6, 0.2), (0.2, 0.6, 0.2), (0.2, 0.6, 0.2), (0.2, 0.6, 0.2),
            (0.15, 0.7, 0.15), (0.25, 0.5, 0.25), (0.4, 0.2, 0.4),
        ),
    },
}

# NRD Table 5, [LR, WD] for symmetric (and clean) and asymmetric noise. The paper's text (Sec. 5.1) says weight
# decay 1e-4; the table is per method and is what the GJS configs use (checked: gjs/js C10 sym40, C100 asym40).
_TABLE5_OPTIM = {
    "cifar10": {
        "ce": ((0.05, 1e-3), (0.1, 1e-3)),
        "boot": ((0.1, 1e-3), (0.1, 1e-3)),
        "ls": ((0.1, 5e-4), (0.1, 1e-3)),
        "sce": ((0.01, 5e-4), (0.05, 1e-3)),
        "gce": ((0.01, 5e-4), (0.1, 1e-3)),
        "nce_rce": ((0.005, 1e-3), (0.05, 1e-4)),
        "js": ((0.01, 5e-4), (0.1, 1e-3)),
        "gjs": ((0.1, 5e-4), (0.1, 1e-3)),
        "nrd": ((0.1, 5e-4), (0.1, 1e-3)),
    },
    "cifar100": {
        "ce": ((0.4, 1e-4), (0.2, 1e-4)),
        "boot": ((0.4, 1e-4), (0.4, 1e-4)),
        "ls": ((0.2, 5e-5), (0.4, 1e-4)),
        "sce": ((0.2, 1e-4), (0.4, 5e-5)),
        "gce": ((0.4, 1e-5), (0.2, 1e-4)),
        "nce_rce": ((0.2, 5e-5), (0.2, 5e-5)),
        "js": ((0.2, 1e-4), (0.1, 1e-4)),
        "gjs": ((0.2, 5e-5), (0.4, 1e-4)),
        "nrd": ((0.2, 5e-5), (0.4, 1e-4)),
    },
}


def _table5_params(loss: str, value) -> dict:
    """Translate one Table-5 entry into keyword arguments of our loss functions."""
    if loss == "boot":
        # The GJS code computes (1 - t) * onehot + t * p with t the table value and p not detached: t weighs the
        # prediction (it grows with the noise rate), so Reed's beta = 1 - t, and the gradient runs through p.
        return {"beta": round(1.0 - value, 10), "detach_prediction": False}
    if loss == "ls":
        return {"epsilon": value}
    if loss == "gce":
        return {"q": value}
    if loss in ("sce", "nce_rce"):
        alpha, beta = value
        return {"alpha": float(alpha), "beta": float(beta), "log_clamp": CODE_LOG_CLAMP}
    if loss == "js":
        return {"pi1": value}
    if loss == "gjs":
        return {"pis": (value, round((1.0 - value) / 2, 10), round((1.0 - value) / 2, 10))}  # two views
    if loss == "nrd":
        return {"pis": tuple(value)}
    raise AssertionError(loss)


def _add_table5_presets() -> None:
    for dataset, losses in _TABLE5.items():
        for loss, column in losses.items():
            assert len(column) == len(TABLE5_SETTINGS), (dataset, loss)
            for setting, value in zip(TABLE5_SETTINGS, column):
                LOSS_PRESETS[f"{loss}/{dataset}-{setting}"] = _table5_params(loss, value)
        for setting in TABLE5_SETTINGS:  # CE has no hyperparameters, listed for completeness
            LOSS_PRESETS[f"ce/{dataset}-{setting}"] = {}


_add_table5_presets()


def nrd_table5_optimizer(dataset: str, loss: str, setting: str) -> dict[str, float]:
    """Learning rate and weight decay from NRD Table 5, e.g. ``nrd_table5_optimizer('cifar10', 'gjs', 'sym40')``
    -> ``{'lr': 0.1, 'weight_decay': 5e-4}``. The table has one column for symmetric noise (used here for
    ``clean`` too, an assumption: the table gives none for 0%) and one for asymmetric noise."""
    loss = ALIASES.get(loss, loss)
    if dataset not in _TABLE5_OPTIM:
        raise ConfigError(f"NRD Table 5 covers datasets {sorted(_TABLE5_OPTIM)}, got {dataset!r}")
    if loss not in _TABLE5_OPTIM[dataset]:
        raise ConfigError(f"NRD Table 5 covers losses {sorted(_TABLE5_OPTIM[dataset])}, got {loss!r}")
    if setting not in TABLE5_SETTINGS:
        raise ConfigError(f"NRD Table 5 settings are {TABLE5_SETTINGS}, got {setting!r}")
    lr, wd = _TABLE5_OPTIM[dataset][loss][1 if setting.startswith("asym") else 0]
    return {"lr": lr, "weight_decay": wd}


# --- lookup ---------------------------------------------------------------------------------------------------


def list_presets(loss: str | None = None) -> list[str]:
    """All preset names, or those of one loss (e.g. ``list_presets('gce')``), sorted."""
    if loss is None:
        return sorted(LOSS_PRESETS)
    loss = ALIASES.get(loss, loss)
    return sorted(n for n in LOSS_PRESETS if n.split("/", 1)[0] == loss)


def _resolve(name: str) -> tuple[str, str]:
    """Return (loss name, canonical preset name) for a loss or preset name, aliases resolved."""
    if not isinstance(name, str):
        raise ConfigError(f"loss name must be a string, got {type(name).__name__}")
    head, sep, variant = name.strip().lower().partition("/")
    loss = ALIASES.get(head, head)
    if loss not in LOSSES:
        raise ConfigError(LOSSES.unknown(name))
    preset = loss + sep + variant
    if preset not in LOSS_PRESETS and sep:
        known = ", ".join(list_presets(loss))
        raise ConfigError(f"unknown preset {name!r} for loss {loss!r}; its presets: {known}")
    return loss, preset


def _hyperparameters(fn: Callable) -> dict[str, inspect.Parameter]:
    """Keyword parameters of a loss after its two inputs (logits, labels)."""
    return dict(list(inspect.signature(fn).parameters.items())[2:])


def _dry_run(loss: str, fn: Callable, params: dict) -> None:
    """Call the loss once on a 2x3 example so that bad values fail here, with the preset named, not mid-run."""
    logits = torch.zeros(2, 3)
    labels = torch.tensor([0, 1])
    inputs = logits
    if fn is gjs_loss:  # as many views as the weights ask for (label weight first), else two
        pis = params.get("pis")
        num_views = len(pis) - 1 if isinstance(pis, (list, tuple)) and len(pis) > 1 else 2
        inputs = [logits] * num_views
    if loss == "soft_ce":
        labels = torch.full((2, 3), 1.0 / 3)
    fn(inputs, labels, **params)


def get_loss(name: str, **overrides) -> Callable[..., torch.Tensor]:
    """A loss with its preset hyperparameters bound: ``get_loss(name, **overrides)(logits, labels)``.

    ``name``: a loss (``'gce'``: its original paper's values) or a preset (``'gce/cifar10-sym40'``); see
    :func:`list_presets`. ``overrides`` replace preset values or add the remaining keyword arguments of the
    loss (e.g. ``reduction='none'``, ``detach_prediction=False``). Raises :class:`~noisykd.errors.ConfigError`
    (a ValueError) for an unknown name, an unknown or missing hyperparameter, or an invalid value.
    For ``gjs``/``nrd`` the returned callable takes a list of view logits in place of ``logits``.
    """
    loss, preset = _resolve(name)
    fn = LOSSES[loss]
    accepted = _hyperparameters(fn)
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise ConfigError(
            f"loss {loss!r} ({fn.__name__}) has no hyperparameter {', '.join(map(repr, unknown))}; "
            f"it takes: {', '.join(accepted)}"
        )
    params = {**LOSS_PRESETS.get(preset, {}), **overrides}
    missing = [k for k, p in accepted.items() if p.default is inspect.Parameter.empty and k not in params]
    if missing:
        raise ConfigError(f"loss {name!r} needs a value for {', '.join(missing)} (no preset gives one)")
    try:
        _dry_run(loss, fn, params)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"invalid hyperparameters for {name!r} {params}: {err}") from err
    return functools.partial(fn, **params)

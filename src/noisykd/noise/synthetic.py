"""Seeded synthetic label noise: symmetric, class-dependent (CIFAR-10/100 asymmetric, pair-flip), instance-dependent.

Every generator is ``fn(clean_labels, num_classes, rate, seed, ...) -> NoisyLabels`` with numpy in and out,
a ``numpy.random.Generator(PCG64(seed))`` of its own (no global random state is read or changed), and the
same seed giving the same labels on every machine.

Selection of the samples to corrupt
-----------------------------------
``exact=False`` (default, the protocol of ``docs/methods.md``: "each sample with probability r"): every sample
is corrupted independently with probability ``rate``; the realised rate is reported by
``NoisyLabels.noise_rate``. ``exact=True``: exactly ``round(rate * n)`` samples are corrupted, ``n`` being the
number of samples the noise can touch (all of them for symmetric and pair-flip noise, those of the mapped
classes for the asymmetric maps), as in DivideMix-style code that shuffles and takes the first ``r·N``.
Symmetric noise also has ``count="ceil"`` (spec ``sym-all-exact:R``): exactly ceil(R·N) samples, GJS's count
(``ErikEnglesson/GJS``, ``datasets/cifar.py``, ``symmetric_noise``: a permutation of the N indices, and the
i-th one, 0-based, is redrawn while ``i < percent * N``, i.e. ceil(R·N) of them with R·N in float64, so
0.07 · 100 = 7.000000000000001 redraws 8), each redrawn label uniform among **all** C classes
(``np.random.randint(C)``: about 1/C of them keep their label). Only the random stream differs from GJS's
(numpy's global RandomState there): the same count, the same law, other samples.
In all modes one uniform number ``u_i`` per sample decides (``u_i < rate``, or the ``k`` smallest ``u_i``),
so for a fixed seed the noisy set at a lower rate is a subset of the noisy set at a higher rate, with the same
new labels: runs at 20/40/60 % differ only by the extra noise.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats

from ..data.registry import LabelSet
from ..errors import DataError
from ..registry import Registry
from .labels import NoisyLabels, _as_int64, check_clean_labels, check_rate, check_seed, rate_from_text

SYMMETRIC_CONVENTIONS = ("other", "all")
#: How ``exact=True`` counts the samples to corrupt: round(R·n) (default) or ceil(R·n) (GJS's code).
EXACT_COUNTS = ("round", "ceil")

#: CIFAR-10 asymmetric noise (Patrini et al. 2017): truck→automobile, bird→airplane, cat↔dog, deer→horse.
CIFAR10_ASYM_MAP: dict[int, int] = {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}

#: The 20 CIFAR-100 superclasses (coarse label = position in this tuple) and their 5 fine labels each, in
#: increasing fine-label order. Fine labels are the standard ones (class names sorted alphabetically:
#: 0 apple, 1 aquarium_fish, 2 baby, ... 99 worm), as in the ``fine_labels`` of the python version of the data.
CIFAR100_SUPERCLASSES: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("aquatic_mammals", (4, 30, 55, 72, 95)),            # beaver dolphin otter seal whale
    ("fish", (1, 32, 67, 73, 91)),                       # aquarium_fish flatfish ray shark trout
    ("flowers", (54, 62, 70, 82, 92)),                   # orchid poppy rose sunflower tulip
    ("food_containers", (9, 10, 16, 28, 61)),            # bottle bowl can cup plate
    ("fruit_and_vegetables", (0, 51, 53, 57, 83)),       # apple mushroom orange pear sweet_pepper
    ("household_electrical_devices", (22, 39, 40, 86, 87)),  # clock keyboard lamp telephone television
    ("household_furniture", (5, 20, 25, 84, 94)),        # bed chair couch table wardrobe
    ("insects", (6, 7, 14, 18, 24)),                     # bee beetle butterfly caterpillar cockroach
    ("large_carnivores", (3, 42, 43, 88, 97)),           # bear leopard lion tiger wolf
    ("large_man-made_outdoor_things", (12, 17, 37, 68, 76)),  # bridge castle house road skyscraper
    ("large_natural_outdoor_scenes", (23, 33, 49, 60, 71)),   # cloud forest mountain plain sea
    ("large_omnivores_and_herbivores", (15, 19, 21, 31, 38)),  # camel cattle chimpanzee elephant kangaroo
    ("medium_mammals", (34, 63, 64, 66, 75)),            # fox porcupine possum raccoon skunk
    ("non-insect_invertebrates", (26, 45, 77, 79, 99)),  # crab lobster snail spider worm
    ("people", (2, 11, 35, 46, 98)),                     # baby boy girl man woman
    ("reptiles", (27, 29, 44, 78, 93)),                  # crocodile dinosaur lizard snake turtle
    ("small_mammals", (36, 50, 65, 74, 80)),             # hamster mouse rabbit shrew squirrel
    ("trees", (47, 52, 56, 59, 96)),                     # maple oak palm pine willow
    ("vehicles_1", (8, 13, 48, 58, 90)),                 # bicycle bus motorcycle pickup_truck train
    ("vehicles_2", (41, 69, 81, 85, 89)),                # lawn_mower rocket streetcar tank tractor
)


def _coarse_of_fine() -> np.ndarray:
    coarse = np.full(100, -1, dtype=np.int64)
    for c, (_, fines) in enumerate(CIFAR100_SUPERCLASSES):
        coarse[list(fines)] = c
    assert (coarse >= 0).all(), "every CIFAR-100 fine class belongs to exactly one superclass"
    return coarse


#: int64 100: the superclass (coarse label) of each CIFAR-100 fine label.
CIFAR100_COARSE_LABELS: np.ndarray = _coarse_of_fine()
CIFAR100_COARSE_LABELS.flags.writeable = False

CIFAR100_GROUPINGS = ("superclass", "consecutive")


# ---- targets of the class-dependent maps ----------------------------------------------------------------

def cifar10_asym_targets() -> np.ndarray:
    """int64 10: the label each CIFAR-10 class flips to (itself where untouched)."""
    targets = np.arange(10, dtype=np.int64)
    for src, dst in CIFAR10_ASYM_MAP.items():
        targets[src] = dst
    return targets


def cifar100_asym_targets(grouping: str = "superclass") -> np.ndarray:
    """int64 100: the label each CIFAR-100 fine class flips to.

    ``"superclass"`` (default, the papers' wording): within each true superclass, a fine class flips to the
    next fine class of that superclass in increasing fine-label order, the last one back to the first
    (e.g. people: baby 2 → boy 11 → girl 35 → man 46 → woman 98 → baby 2).
    ``"consecutive"``: what the widely copied reference code does (Patrini et al.'s ``build_for_cifar100``,
    reused by Co-teaching, GCE, ELR ...): blocks of 5 consecutive fine labels, i → i+1 cyclic within
    [5k, 5k+5). On the standard alphabetical fine labels those blocks are *not* superclasses (0-4 are apple,
    aquarium_fish, baby, bear, beaver); use it only to reproduce numbers from that code.
    """
    if grouping == "superclass":
        targets = np.empty(100, dtype=np.int64)
        for _, fines in CIFAR100_SUPERCLASSES:
            targets[list(fines)] = np.roll(fines, -1)
        return targets
    if grouping == "consecutive":
        fine = np.arange(100, dtype=np.int64)
        return 5 * (fine // 5) + (fine % 5 + 1) % 5
    raise DataError(f"grouping must be one of {CIFAR100_GROUPINGS}, got {grouping!r}")


# ---- generators -----------------------------------------------------------------------------------------

def symmetric(clean_labels: np.ndarray, num_classes: int, rate: float, seed: int, *,
              convention: str = "other", exact: bool = False, count: str = "round") -> NoisyLabels:
    """Symmetric (uniform) noise.

    Each selected sample (probability ``rate``, or exactly k of them with ``exact=True``) gets a label
    drawn uniformly among the **other** C-1 classes (``convention="other"``, default; CMD, MODUL: realised
    rate ≈ rate) or among **all** C classes (``convention="all"``; GJS/NRD: the label may stay the same, so the
    realised rate ≈ rate·(C-1)/C).

    count (with ``exact=True``): ``"round"`` (default) k = round(rate·N), halves up; ``"ceil"`` k =
    min(N, ceil(rate·N)) with rate·N in float64, GJS's ``i < percent * len(data)`` (see the module docstring).
    clean_labels: int N in [0, C). Returns NoisyLabels of kind ``"symmetric"`` (params record ``count`` when
    it is ``"ceil"``).
    """
    clean, rate, seed, num_classes = _check_common(clean_labels, num_classes, rate, seed)
    if convention not in SYMMETRIC_CONVENTIONS:
        raise DataError(f"convention must be one of {SYMMETRIC_CONVENTIONS}, got {convention!r}")
    if count not in EXACT_COUNTS:
        raise DataError(f"count must be one of {EXACT_COUNTS}, got {count!r}")
    if count != "round" and not exact:
        raise DataError(f"count={count!r} is the number of samples of exact=True; exact is False")
    rng = _rng(seed)
    chosen = _select(rng, np.ones(len(clean), dtype=bool), rate, exact, count)
    if convention == "other":
        # A uniform non-zero offset mod C is a uniform draw among the other C-1 classes.
        proposal = (clean + rng.integers(1, num_classes, size=len(clean))) % num_classes
    else:
        proposal = rng.integers(0, num_classes, size=len(clean))
    labels = np.where(chosen, proposal, clean)
    extra = {"count": count} if count != "round" else {}
    return _result(labels, clean, "symmetric", rate=rate, seed=seed, num_classes=num_classes,
                   convention=convention, exact=bool(exact), **extra)


def asymmetric_cifar10(clean_labels: np.ndarray, num_classes: int, rate: float, seed: int, *,
                       exact: bool = False) -> NoisyLabels:
    """CIFAR-10 asymmetric noise: with probability ``rate`` truck→automobile, bird→airplane, cat→dog, dog→cat,
    deer→horse (9→1, 2→0, 3→5, 5→3, 4→7); the other five classes are never touched.

    With ``exact=True`` exactly ``round(rate·n)`` of the n samples of those five classes flip.
    """
    if num_classes != 10:
        raise DataError(f"asymmetric_cifar10 needs num_classes=10 (the CIFAR-10 classes), got {num_classes!r}")
    return _class_map_noise(clean_labels, num_classes, rate, seed, cifar10_asym_targets(), exact,
                            "asymmetric_cifar10", map={str(k): v for k, v in CIFAR10_ASYM_MAP.items()})


def asymmetric_cifar100(clean_labels: np.ndarray, num_classes: int, rate: float, seed: int, *,
                        grouping: str = "superclass", exact: bool = False) -> NoisyLabels:
    """CIFAR-100 asymmetric noise: with probability ``rate`` a fine class flips to the next fine class of its
    superclass (cyclic). See :func:`cifar100_asym_targets` for ``grouping`` (``"superclass"``, default, the
    true superclasses; ``"consecutive"``, the reference code's blocks of 5 consecutive labels).
    """
    if num_classes != 100:
        raise DataError(f"asymmetric_cifar100 needs num_classes=100 (the CIFAR-100 fine classes), "
                        f"got {num_classes!r}")
    return _class_map_noise(clean_labels, num_classes, rate, seed, cifar100_asym_targets(grouping), exact,
                            "asymmetric_cifar100", grouping=grouping)


def pair_flip(clean_labels: np.ndarray, num_classes: int, rate: float, seed: int, *,
              exact: bool = False) -> NoisyLabels:
    """Pair-flip noise (Co-teaching): with probability ``rate`` class c → c+1 mod C."""
    num_classes = _check_num_classes_for_noise(num_classes)
    targets = (np.arange(num_classes, dtype=np.int64) + 1) % num_classes
    return _class_map_noise(clean_labels, num_classes, rate, seed, targets, exact, "pair_flip")


def instance_dependent(clean_labels: np.ndarray, num_classes: int, rate: float, seed: int, *,
                       features: np.ndarray, norm_std: float = 0.1, chunk_size: int = 4096) -> NoisyLabels:
    """Instance-dependent noise of Xia et al. 2020 ("Part-dependent label noise", NeurIPS; the widely used
    ``get_instance_noisy_label``).

    1. Per-sample flip rate q_i ~ N(rate, norm_std²) truncated to [0, 1] (``scipy.stats.truncnorm``).
    2. One random projection per clean class, W[c] ~ N(0, 1) of shape D x C (drawn in class order 0..C-1).
    3. For sample i with clean label y: s = x_i · W[y] (C scores), s[y] = -inf, p = q_i · softmax(s),
       p[y] = 1 - q_i; the new label is drawn from p.

    So a sample keeps its label with probability 1 - q_i and otherwise flips to a class that depends on its
    features (with raw-pixel features the softmax is nearly one-hot: each image has "its" wrong class).
    The expected noise rate is E[q_i] ≈ rate (the truncation shifts it when rate is near 0 or 1: at
    rate 0.9 about 0.89). ``rate == 0`` means no noise at all (the reference would still draw q_i from a
    half-normal with mean ≈ 0.08). ``norm_std == 0`` gives q_i = rate for every sample.

    features: N x D floats (any N x ... array is flattened), e.g. flattened images scaled to [0, 1];
              uint8 input is taken as images and scaled by 1/255. The reference code feeds normalised image
              tensors; what you pass decides which classes a sample flips to, not how many flip.
    chunk_size: rows projected at once (memory only, not results).
    Draws, in order: q (N), u (N, for sampling), W[0], ..., W[C-1].
    """
    clean, rate, seed, num_classes = _check_common(clean_labels, num_classes, rate, seed)
    x = _check_features(features, len(clean))
    if isinstance(norm_std, bool) or not isinstance(norm_std, (int, float)) or not 0 <= norm_std < math.inf:
        raise DataError(f"norm_std must be a finite number >= 0, got {norm_std!r}")
    rng = _rng(seed)
    q = _instance_flip_rates(rng, rate, float(norm_std), len(clean))
    u = rng.random(len(clean))
    labels = clean.copy()
    for c in range(num_classes):
        w_c = rng.standard_normal((x.shape[1], num_classes))  # drawn even for empty classes: fixed stream
        rows = np.flatnonzero(clean == c)
        for start in range(0, len(rows), max(1, int(chunk_size))):
            part = rows[start:start + max(1, int(chunk_size))]
            probs = _instance_probs(_rows_as_float(x, part) @ w_c, c, q[part])
            labels[part] = _sample_categorical(probs, u[part])
    return _result(labels, clean, "instance_dependent", rate=rate, seed=seed, num_classes=num_classes,
                   norm_std=float(norm_std), num_features=int(x.shape[1]))


def no_noise(clean_labels: np.ndarray, num_classes: int) -> NoisyLabels:
    """The clean labels unchanged, as a NoisyLabels of kind ``"none"`` (a baseline run with the same plumbing)."""
    clean = check_clean_labels(clean_labels, num_classes)
    return _result(clean.copy(), clean, "none", num_classes=int(num_classes))


def from_labelset(labelset: LabelSet, num_classes: int | None = None) -> NoisyLabels:
    """Real (human) noisy labels, e.g. CIFAR-10N, as NoisyLabels of kind ``"real"`` (clean when known).

    ``num_classes``, when given, is checked against the labels and recorded.
    """
    if not isinstance(labelset, LabelSet):
        raise DataError(f"from_labelset expects a LabelSet, got {type(labelset).__name__}")
    name = f"label set {labelset.name!r}"
    if num_classes is None:
        noisy = _as_int64(labelset.noisy, f"{name}: noisy")
        clean = None if labelset.clean is None else _as_int64(labelset.clean, f"{name}: clean")
    else:
        noisy = check_clean_labels(labelset.noisy, num_classes, name=f"{name}: noisy")
        clean = None if labelset.clean is None else check_clean_labels(labelset.clean, num_classes,
                                                                       name=f"{name}: clean")
    if clean is not None and len(clean) != len(noisy):
        raise DataError(f"{name}: {len(noisy)} noisy labels but {len(clean)} clean ones; lengths must match")
    params = {"name": labelset.name}
    if num_classes is not None:
        params["num_classes"] = int(num_classes)
    return NoisyLabels(labels=noisy, clean=clean, kind="real", params=params)


# ---- CLI specs ------------------------------------------------------------------------------------------

#: Spec forms accepted by :func:`make_noise`, for CLI help.
def _symmetric_other(clean, num_classes, rate, seed, *, features=None, **options) -> NoisyLabels:
    """symmetric: with probability R a label becomes one of the *other* classes (CMD, MODUL)."""
    return symmetric(clean, num_classes, rate, seed, convention="other", **options)


def _symmetric_all(clean, num_classes, rate, seed, *, features=None, **options) -> NoisyLabels:
    """symmetric over all classes, the label possibly staying the same (GJS/NRD; realised rate R(C-1)/C)."""
    return symmetric(clean, num_classes, rate, seed, convention="all", **options)


def _symmetric_all_exact(clean, num_classes, rate, seed, *, features=None, **options) -> NoisyLabels:
    """GJS's symmetric noise: exactly ceil(R·N) labels redrawn among all classes (some stay the same)."""
    fixed = sorted(set(options) & {"convention", "exact", "count"})
    if fixed:
        raise DataError(f"sym-all-exact fixes convention, exact and count; got {fixed}")
    return symmetric(clean, num_classes, rate, seed, convention="all", exact=True, count="ceil", **options)


def _asymmetric(clean, num_classes, rate, seed, *, features=None, **options) -> NoisyLabels:
    """asymmetric: CIFAR-10 truck->automobile, bird->airplane, cat<->dog, deer->horse; CIFAR-100 next in superclass.

    The map is chosen by the number of classes (10 or 100); other data sets have none.
    """
    if num_classes == 10:
        return asymmetric_cifar10(clean, num_classes, rate, seed, **options)
    if num_classes == 100:
        return asymmetric_cifar100(clean, num_classes, rate, seed, **options)
    raise DataError(f"asymmetric maps exist for CIFAR-10 (10 classes) and CIFAR-100 (100 classes), not for "
                    f"{num_classes} classes; try pairflip:{rate}")


def _pair_flip(clean, num_classes, rate, seed, *, features=None, **options) -> NoisyLabels:
    """pair-flip: class c -> c+1 mod C with probability R."""
    return pair_flip(clean, num_classes, rate, seed, **options)


def _instance(clean, num_classes, rate, seed, *, features=None, **options) -> NoisyLabels:
    """instance-dependent (Xia et al. 2020, part-dependent generator); needs the images as features."""
    if features is None:
        raise DataError("instance-dependent noise needs features (e.g. the training images, N x H x W x C)")
    return instance_dependent(clean, num_classes, rate, seed, features=features, **options)


#: Synthetic noise kinds (the part of a noise spec before ':'); each entry's metadata holds its usage.
NOISE_KINDS: Registry = Registry("noise kind", error=DataError)
for _kind, _fn in (("sym", _symmetric_other), ("sym-all", _symmetric_all),
                   ("sym-all-exact", _symmetric_all_exact), ("asym", _asymmetric),
                   ("pairflip", _pair_flip), ("instance", _instance)):
    NOISE_KINDS.register(_kind, _fn, usage=f"{_kind}:R")

#: Every noise spec form and what it does (``noisykd data kinds``, error messages).
NOISE_SPECS = {"none": "clean labels",
               **{NOISE_KINDS.meta(k)["usage"]: NOISE_KINDS.describe(k).summary for k in NOISE_KINDS.names()}}


def make_noise(spec: str, clean: np.ndarray, num_classes: int, seed: int, *,
               features: np.ndarray | None = None, dataset: str | None = None, **options) -> NoisyLabels:
    """Build noise from a CLI spec: ``none``, ``sym:0.4``, ``sym-all:0.4``, ``sym-all-exact:0.4``, ``asym:0.4``,
    ``pairflip:0.45``, ``instance:0.4``. R is a fraction in [0, 1].

    ``options`` go to the generator (``exact=True``, ``grouping="consecutive"``, ``norm_std=0.2``);
    ``features`` is required by ``instance``. ``dataset``: the data set's name; ``asym`` is refused for one
    other than cifar10 / cifar100 (its maps are by class meaning: a 10-class digits set has none). The spec is
    recorded in ``params["spec"]``.
    """
    if not isinstance(spec, str):
        raise DataError(f"noise spec must be a string like 'sym:0.4', got {spec!r}")
    text = spec.strip().lower()
    if text == "none":
        if options:
            raise DataError(f"noise spec 'none' takes no options, got {sorted(options)}")
        noisy = no_noise(clean, num_classes)
        return dataclasses.replace(noisy, params={**noisy.params, "spec": text})
    kind, sep, arg = text.partition(":")
    if kind not in NOISE_KINDS or not sep:
        raise DataError(f"unknown noise spec {spec!r}: expected one of {', '.join(NOISE_SPECS)} "
                        f"(R a fraction in [0, 1])")
    if kind == "asym" and dataset is not None and dataset not in ("cifar10", "cifar100"):
        raise DataError(f"noise spec {spec!r}: the asymmetric maps are defined for CIFAR-10 and CIFAR-100 (by class "
                        f"meaning), not for {dataset!r}; use pairflip:R or sym:R")
    try:
        rate = check_rate(rate_from_text(arg))
    except ValueError as exc:  # float() of a non-number, or DataError (a ValueError) for a rate out of range
        detail = exc if isinstance(exc, DataError) else f"the rate {arg!r} is not a number (expected e.g. {kind}:0.4)"
        raise DataError(f"noise spec {spec!r}: {detail}") from None
    try:
        noisy = NOISE_KINDS[kind](clean, num_classes, rate, seed, features=features, **options)
    except DataError as exc:
        raise DataError(f"noise spec {spec!r}: {exc}") from None
    return dataclasses.replace(noisy, params={**noisy.params, "spec": text})


# ---- internals ------------------------------------------------------------------------------------------

def _rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def _check_num_classes_for_noise(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise DataError(f"num_classes must be an integer >= 2 (label noise needs another class), got {num_classes!r}")
    return int(num_classes)


def _check_common(clean_labels, num_classes, rate, seed) -> tuple[np.ndarray, float, int, int]:
    num_classes = _check_num_classes_for_noise(num_classes)
    return check_clean_labels(clean_labels, num_classes), check_rate(rate), check_seed(seed), num_classes


def _select(rng: np.random.Generator, eligible: np.ndarray, rate: float, exact: bool,
            count: str = "round") -> np.ndarray:
    """bool N: which eligible samples to corrupt. One uniform per sample (drawn for all N, eligible or not,
    so the stream does not depend on the labels' order of classes); nested across rates for a fixed seed.
    With ``exact``: the k samples of smallest u, k by ``count`` (see :func:`exact_count`)."""
    u = rng.random(len(eligible))
    if not exact:
        return eligible & (u < rate)
    candidates = np.flatnonzero(eligible)
    k = exact_count(rate, len(candidates), count)
    chosen = np.zeros(len(eligible), dtype=bool)
    chosen[candidates[np.argsort(u[candidates], kind="stable")[:k]]] = True
    return chosen


def exact_count(rate: float, n: int, count: str = "round") -> int:
    """How many of n samples ``exact=True`` corrupts: ``"round"``, round(rate·n) with halves up (not Python's
    banker's rounding); ``"ceil"``, the number of i in 0..n-1 with i < rate·n in float64 = min(n, ceil(rate·n))
    (GJS's loop; 0.07 · 100 = 7.000000000000001 gives 8, 0.2 · 7 = 1.4 gives 2)."""
    if count == "ceil":
        return min(n, math.ceil(rate * n))
    return int(math.floor(rate * n + 0.5))


def _class_map_noise(clean_labels, num_classes, rate, seed, targets: np.ndarray, exact: bool, kind: str,
                     **extra) -> NoisyLabels:
    """Flip each selected sample of class c to ``targets[c]``; classes with targets[c] == c are untouched."""
    clean, rate, seed, num_classes = _check_common(clean_labels, num_classes, rate, seed)
    rng = _rng(seed)
    mapped = targets[clean]
    chosen = _select(rng, mapped != clean, rate, exact)
    labels = np.where(chosen, mapped, clean)
    return _result(labels, clean, kind, rate=rate, seed=seed, num_classes=num_classes, exact=bool(exact), **extra)


def _result(labels: np.ndarray, clean: np.ndarray, kind: str, **params) -> NoisyLabels:
    return NoisyLabels(labels=labels.astype(np.int64, copy=False), clean=clean, kind=kind, params=params)


def _check_features(features: np.ndarray, n: int) -> np.ndarray:
    """N x D view of ``features`` (no copy when possible: a memmap of images stays on disk)."""
    if features is None:
        raise DataError("features are required for instance-dependent noise (N x D floats, e.g. flattened images)")
    x = features if isinstance(features, np.ndarray) else np.asarray(features)
    if x.ndim < 2 or len(x) != n:
        raise DataError(f"features must be an array of N={n} rows (N x D or N x H x W x C), got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DataError(f"features must be numeric, got dtype {x.dtype}")
    x = x.reshape(n, -1)
    if x.shape[1] == 0:
        raise DataError("features must have at least one column")
    return x


def _rows_as_float(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    block = np.asarray(x[rows], dtype=np.float64)
    if x.dtype == np.uint8:
        block /= 255.0
    if not np.all(np.isfinite(block)):
        raise DataError("features contain NaN or infinite values")
    return block


def _instance_flip_rates(rng: np.random.Generator, rate: float, std: float, n: int) -> np.ndarray:
    """q_i ~ N(rate, std²) truncated to [0, 1]; exactly 0 when rate is 0, exactly ``rate`` when std is 0."""
    if rate == 0.0 or std == 0.0:
        return np.full(n, rate)
    dist = stats.truncnorm((0.0 - rate) / std, (1.0 - rate) / std, loc=rate, scale=std)
    return np.clip(dist.rvs(size=n, random_state=rng), 0.0, 1.0)


def _instance_probs(scores: np.ndarray, c: int, q: np.ndarray) -> np.ndarray:
    """Rows p = q·softmax(scores with column c masked), p[c] = 1 - q. scores: M x C, q: M."""
    scores = scores.copy()
    scores[:, c] = -np.inf
    scores -= scores.max(axis=1, keepdims=True)  # stable softmax; the max is finite since C >= 2
    expd = np.exp(scores)
    probs = expd / expd.sum(axis=1, keepdims=True) * q[:, None]
    probs[:, c] = 1.0 - q
    return probs


def _sample_categorical(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw of one class per row from ``probs`` (M x C) with uniforms ``u`` (M)."""
    cdf = np.cumsum(probs, axis=1)
    # Scale u by the row total (1 up to rounding) so it always lands, and never on a zero-probability class.
    return (u[:, None] * cdf[:, -1:] < cdf).argmax(axis=1)

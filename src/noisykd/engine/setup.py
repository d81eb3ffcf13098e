"""From a :class:`DataConfig` to the splits a run trains and evaluates on.

Order: load the source -> choose the training labels (saved file, label set, or synthetic noise on the clean
labels; universal noise also swaps images for out-of-distribution ones) -> optional stratified subset -> the
noisy validation split (the source's own, or held out from the training split, stratified by given label; 10%
by default) -> for a cross-validation fold run, the held-out fold. Every sample keeps its index in the source's
training split, which keys the per-sample store.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..config import DataConfig
from ..data import ImageDataset, ImageSplit, Normalization, load_dataset, load_labelset
from ..errors import ConfigError, DataError
from ..noise import NoisyLabels, fit_images, from_labelset, make_noise, open_set
from ..noise.openset import parse_openset_spec


@dataclass(frozen=True)
class PreparedData:
    """The splits of one run.

    train / val: the training samples (noisy labels) and the noisy validation samples, or None: held out
                 from the source's training split (their indices are dataset indices), or the source's own
                 validation split (its indices are positions in that split; ``held_out_val`` is None then).
    test:        the clean test split, or None.
    noisy:       the training labels of every sample of the source's train split (N = num_samples), with
                 the ground truth when known; saved with the run so that other runs can reuse it.
    heldout:     the fold a cross-validation fold run does not train on (``data.cv_fold``), or None.
    """

    dataset: ImageDataset
    train: ImageSplit
    val: ImageSplit | None
    test: ImageSplit | None
    noisy: NoisyLabels
    heldout: ImageSplit | None = None

    @property
    def held_out_val(self) -> ImageSplit | None:
        """The validation samples when they were held out of the training split (dataset indices; a run predicts
        them out of sample for its outputs), None when there are none or they are the source's own split."""
        return self.val if self.val is not None and self.val is not self.dataset.val else None

    @property
    def num_samples(self) -> int:
        return len(self.noisy.labels)

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    @property
    def clean_labels(self) -> np.ndarray | None:
        """int64 (num_samples,) ground truth by dataset index, or None when unknown."""
        return self.noisy.clean

    @cached_property
    def normalization(self) -> Normalization:
        """The source's prescribed constants (CIFAR's standard values), else the training images' statistics."""
        return self.dataset.normalization or Normalization.of_images(self.train.images)


def load_source(cfg: DataConfig) -> ImageDataset:
    """The data source ``cfg.spec`` names, resized as ``cfg.resize`` says (before any split or noise)."""
    return load_dataset(cfg.spec, **({"resize": cfg.resize} if cfg.resize is not None else {}))


def prepare_data(cfg: DataConfig, dataset: ImageDataset | None = None) -> PreparedData:
    """Load (unless ``dataset`` is given) and split the data as ``cfg`` says."""
    if dataset is None:
        dataset = load_source(cfg)
    source_train = dataset.train
    if cfg.universal_noise and not cfg.noise_file:
        source_train, noisy = open_set_noise(cfg, dataset)
    else:
        noisy = choose_training_labels(cfg, dataset)
        if noisy.is_open_set.any():  # a saved open-set file: its images are rebuilt from the same pool
            source_train = rebuild_open_set_images(cfg, dataset, noisy)
    train = source_train.with_labels(noisy.labels)
    rows = np.arange(len(train))
    rng = np.random.default_rng(cfg.val_seed)
    if cfg.train_subset is not None and cfg.train_subset > len(rows):  # a typo or the wrong data: never silent
        raise DataError(f"data.train_subset={cfg.train_subset:,} but {cfg.spec} has {len(rows):,} training images: "
                        "lower it, or leave it unset to train on all of them")
    if cfg.train_subset is not None and cfg.train_subset < len(rows):
        rows = stratified_pick(train.labels, cfg.train_subset, rng)
    val = None
    fraction = validation_fraction(cfg, len(rows), own_split=dataset.val is not None)
    if fraction is None:
        val = dataset.val
    elif fraction > 0:
        held = rows[stratified_holdout(train.labels[rows], fraction, rng)]
        if len(held) < 1:
            raise ConfigError(f"data.val_fraction={cfg.val_fraction} leaves no validation samples "
                              f"({len(rows)} training samples)")
        val = train.subset(np.sort(held))
        rows = np.setdiff1d(rows, held)
    heldout = None
    if cfg.cv_folds is not None:
        fold = stratified_folds(train.labels[rows], cfg.cv_folds, np.random.default_rng([cfg.val_seed, cfg.cv_folds]))
        if np.bincount(fold, minlength=cfg.cv_folds).min() < 1:
            raise ConfigError(f"data.cv_folds={cfg.cv_folds}: more folds than the {len(rows)} training samples")
        heldout = train.subset(np.sort(rows[fold == cfg.cv_fold]))
        rows = rows[fold != cfg.cv_fold]
    test = dataset.test
    if test is not None and cfg.test_subset is not None and cfg.test_subset < len(test):
        # its own generator: the training subset and validation split do not depend on this option
        test = test.subset(stratified_pick(test.labels, cfg.test_subset, np.random.default_rng(cfg.val_seed)))
    return PreparedData(dataset, train.subset(np.sort(rows)), val, test, noisy, heldout=heldout)


def validation_fraction(cfg: DataConfig, train_samples: int, own_split: bool) -> float | None:
    """The share of the training samples to hold out as noisy validation; None: use the source's own validation
    split. ``data.val_fraction`` when set; unset: the source's own split if it has one, else
    ``AUTO_VALIDATION_FRACTION`` (0 below ``MIN_AUTO_VALIDATION`` training samples)."""
    from ..config import AUTO_VALIDATION_FRACTION, MIN_AUTO_VALIDATION

    if cfg.val_fraction is not None:
        if own_split and cfg.val_fraction > 0:
            raise ConfigError(f"data.val_fraction={cfg.val_fraction} holds out part of the training images, but "
                              f"{cfg.spec!r} has its own validation split (val/): leave data.val_fraction unset to "
                              "validate on it, or set it to 0 for no validation")
        return cfg.val_fraction
    if own_split:
        return None
    return AUTO_VALIDATION_FRACTION if train_samples >= MIN_AUTO_VALIDATION else 0.0


def stratified_holdout(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Positions of ``round(fraction * N)`` samples drawn in proportion to each label's share, never a class's
    last sample (a class keeps at least one training sample); sorted.
    Example: 100 labels, 90 of class 0 and 10 of class 1, fraction 0.1 -> 9 of class 0 and 1 of class 1."""
    return stratified_pick(labels, int(round(fraction * len(labels))), rng, keep_per_class=1)


def stratified_folds(labels: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """A fold id in [0, folds) per sample, each label's samples dealt round-robin over the folds in a random
    order (scikit-learn's StratifiedKFold idea): fold sizes differ by at most one per class."""
    fold = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        fold[members] = (offset + np.arange(len(members))) % folds
        offset += len(members)  # the next class continues the deal, so that small classes spread over folds
    return fold


def choose_training_labels(cfg: DataConfig, dataset: ImageDataset) -> NoisyLabels:
    """The labels to train on, for every sample of the source's train split."""
    n, c = len(dataset.train), dataset.num_classes
    clean = dataset.train.labels
    if cfg.noise_file:
        return NoisyLabels.load(cfg.noise_file, num_samples=n, num_classes=c)
    if cfg.labels:
        if cfg.noise not in ("none", ""):
            raise ConfigError("data.labels and data.noise are both set: use a label set or synthetic noise, not both")
        labelset = load_labelset(cfg.labels, num_samples=n)
        return from_labelset(labelset, num_classes=c)
    if cfg.noise in ("none", "") and not dataset.labels_are_truth:
        # the user's own labels: they are what we train on, and whether they are right is what we do not know
        return NoisyLabels(clean, clean=None, kind="given", params={"num_classes": int(c)})
    if cfg.universal_noise:
        return open_set_noise(cfg, dataset)[1]
    features = None
    if cfg.noise.startswith("instance"):
        # Xia et al.'s generator projects the flattened image; uint8 is scaled to [0, 1] there, in chunks.
        features = dataset.train.images.reshape(n, -1)
    return make_noise(cfg.noise, clean, c, seed=cfg.noise_seed, features=features, dataset=dataset.name)


@dataclass(frozen=True)
class OODPool:
    """The out-of-distribution pool of universal noise: ``images`` uint8 (M, h, w[, c]) and ``labels`` int (M,)
    of ``spec``'s training split, ``excluded`` the class ids never drawn."""

    spec: str
    images: np.ndarray
    labels: np.ndarray
    excluded: list[int]


def load_ood_pool(cfg: DataConfig) -> OODPool:
    """``data.ood``'s training split, with ``data.ood_exclude`` (names or ids) resolved to class ids."""
    if not cfg.ood:
        raise ConfigError(f"data.noise={cfg.noise!r} needs an out-of-distribution pool: --ood SPEC (data.ood)")
    try:
        pool = load_dataset(cfg.ood)
    except (DataError, ConfigError, OSError) as exc:
        raise ConfigError(f"data.ood={cfg.ood!r} does not load: {exc}") from None
    excluded = []
    for item in cfg.ood_exclude:
        if isinstance(item, int) or (isinstance(item, str) and item.strip().isdigit()
                                     and item.strip() not in pool.classes):
            cid = int(item)
            if not 0 <= cid < pool.num_classes:
                raise ConfigError(f"data.ood_exclude: class id {cid} is outside the pool's 0..{pool.num_classes - 1}")
        else:
            ids = pool.meta.get("wnids") or ()  # Tiny ImageNet: its WordNet ids name classes too
            matches = [k for k, name in enumerate(pool.classes) if name.lower() == str(item).strip().lower()] or \
                [k for k, wnid in enumerate(ids) if wnid == str(item).strip()]
            if not matches:
                shown = ", ".join(pool.classes[:8]) + (", ..." if pool.num_classes > 8 else "")
                raise ConfigError(f"data.ood_exclude: the pool {cfg.ood!r} has no class named {item!r} "
                                  f"(its classes: {shown})")
            cid = matches[0]
        excluded.append(cid)
    return OODPool(cfg.ood, pool.train.images, pool.train.labels, sorted(set(excluded)))


def open_set_noise(cfg: DataConfig, dataset: ImageDataset) -> tuple[ImageSplit, NoisyLabels]:
    """Universal noise (``openset:RHO1:RHO2``) on the source's training split: the split with the open-set rows'
    images swapped for pool images (fitted to the split's size and channels), and the labels (MODUL's setting)."""
    rho1, rho2 = parse_openset_spec(cfg.noise)
    if rho1 * rho2 > 0 or cfg.ood:
        pool = load_ood_pool(cfg)
        images, labels, excluded = pool.images, pool.labels, pool.excluded
    else:  # no open-set samples: closed-set noise alone needs no pool
        images, labels, excluded = np.zeros((0, 1, 1), dtype=np.uint8), None, []
    try:
        return open_set(dataset.train, dataset.num_classes, rho1, rho2, images, seed=cfg.noise_seed,
                        ood_labels=labels, exclude_ood_classes=excluded or None, allow_reuse=cfg.ood_reuse)
    except DataError as exc:
        raise ConfigError(f"data.noise={cfg.noise!r} with data.ood={cfg.ood!r}: {exc}") from None


def rebuild_open_set_images(cfg: DataConfig, dataset: ImageDataset, noisy: NoisyLabels) -> ImageSplit:
    """The training split of a saved open-set noise file (``data.noise_file``): its open-set rows get the pool
    images recorded in ``params["ood_rows"]``, from ``data.ood`` (the pool it was made from)."""
    rows = np.flatnonzero(noisy.is_open_set)
    ood_rows = np.asarray(noisy.params.get("ood_rows", []), dtype=np.int64)
    if not cfg.ood:
        raise ConfigError(f"data.noise_file={cfg.noise_file!r} holds {len(rows):,} open-set samples: give data.ood, "
                          "the out-of-distribution pool it was made from, so that their images can be rebuilt")
    pool = load_ood_pool(cfg)
    if len(ood_rows) != len(rows) or (len(ood_rows) and not 0 <= ood_rows.min() <= ood_rows.max() < len(pool.images)):
        raise ConfigError(f"data.noise_file={cfg.noise_file!r} does not match data.ood={cfg.ood!r}: it records "
                          f"{len(ood_rows):,} pool rows (up to {ood_rows.max() if len(ood_rows) else '-'}) for "
                          f"{len(rows):,} open-set samples, the pool has {len(pool.images):,} images")
    images = np.array(dataset.train.images, copy=True)
    images[rows] = fit_images(pool.images[ood_rows], tuple(int(d) for d in images.shape[1:]))
    return ImageSplit(images, dataset.train.labels, np.array(dataset.train.indices, copy=True))


def stratified_pick(labels: np.ndarray, count: int, rng: np.random.Generator, keep_per_class: int = 0) -> np.ndarray:
    """``count`` positions drawn without replacement, in proportion to each label's share (the remainder to the
    classes with the largest fractional parts, so that the total is exact), leaving at least ``keep_per_class``
    samples of every class undrawn; sorted."""
    classes, counts = np.unique(labels, return_counts=True)
    share = counts / counts.sum() * count
    cap = np.maximum(counts - keep_per_class, 0)
    quotas = np.minimum(np.floor(share).astype(int), cap)
    for c in np.argsort(-(share - np.floor(share)), kind="stable"):
        if quotas.sum() >= count:
            break
        if quotas[c] < cap[c]:
            quotas[c] += 1
    picked = [rng.choice(np.flatnonzero(labels == cls), size=q, replace=False) for cls, q in zip(classes, quotas)]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)

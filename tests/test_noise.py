"""noisykd.noise: realised rates, exact maps, determinism, files, bad input, open-set noise."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from noisykd.data.base import ImageSplit
from noisykd.data.registry import LabelSet
from noisykd.errors import DataError
from noisykd.noise import (
    CIFAR100_COARSE_LABELS,
    CIFAR100_SUPERCLASSES,
    NoisyLabels,
    asymmetric_cifar10,
    asymmetric_cifar100,
    cifar100_asym_targets,
    fit_images,
    from_labelset,
    instance_dependent,
    make_noise,
    open_set,
    pair_flip,
    symmetric,
)

N = 20000


def _labels(num_classes: int, n: int = N, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, num_classes, size=n)


def _features(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, d))


# Every generator as f(clean, C, rate, seed) on 10 classes, for the properties they all share.
GENERATORS = {
    "sym": lambda y, c, r, s: symmetric(y, c, r, s),
    "sym-all": lambda y, c, r, s: symmetric(y, c, r, s, convention="all"),
    "sym-exact": lambda y, c, r, s: symmetric(y, c, r, s, exact=True),
    "asym10": lambda y, c, r, s: asymmetric_cifar10(y, c, r, s),
    "pairflip": lambda y, c, r, s: pair_flip(y, c, r, s),
    "instance": lambda y, c, r, s: instance_dependent(y, c, r, s, features=_features(len(y))),
}


# ---- realised rates -------------------------------------------------------------------------------------

@pytest.mark.parametrize("rate", [0.2, 0.4, 0.8])
def test_symmetric_other_rate(rate):
    noisy = symmetric(_labels(10), 10, rate, seed=1)
    assert abs(noisy.noise_rate - rate) < 0.01
    changed = noisy.labels != noisy.clean
    assert np.array_equal(changed, noisy.is_noisy)


@pytest.mark.parametrize("num_classes", [2, 10, 100])
def test_symmetric_all_rate_is_scaled(num_classes):
    noisy = symmetric(_labels(num_classes), num_classes, 0.6, seed=2, convention="all")
    assert abs(noisy.noise_rate - 0.6 * (num_classes - 1) / num_classes) < 0.01


def test_symmetric_exact_count():
    y = _labels(10, n=1001)
    assert int(symmetric(y, 10, 0.4, seed=3, exact=True).is_noisy.sum()) == 400  # round(400.4)
    assert int(symmetric(y, 10, 0.5, seed=3, exact=True).is_noisy.sum()) == 501  # round(500.5): half up


def test_symmetric_other_is_uniform_over_other_classes():
    noisy = symmetric(np.zeros(N, dtype=np.int64), 5, 1.0, seed=4)
    counts = np.bincount(noisy.labels, minlength=5)
    assert counts[0] == 0
    assert np.all(np.abs(counts[1:] / N - 0.25) < 0.015)


def test_noise_is_nested_across_rates():
    y = _labels(10)
    low, high = symmetric(y, 10, 0.2, seed=5), symmetric(y, 10, 0.4, seed=5)
    assert np.all(high.is_noisy[low.is_noisy])
    assert np.array_equal(low.labels[low.is_noisy], high.labels[low.is_noisy])


def test_instance_dependent_rate_and_dependence_on_features():
    y = _labels(10, n=5000)
    noisy = instance_dependent(y, 10, 0.4, seed=6, features=_features(5000))
    assert abs(noisy.noise_rate - 0.4) < 0.03
    assert noisy.params["norm_std"] == 0.1
    other = instance_dependent(y, 10, 0.4, seed=6, features=_features(5000, seed=99))
    assert not np.array_equal(noisy.labels, other.labels)  # where a sample flips to depends on its features
    # uint8 images are accepted as features and scaled; the result is the same as passing x / 255.
    imgs = np.random.default_rng(0).integers(0, 256, size=(300, 4, 4, 3), dtype=np.uint8)
    a = instance_dependent(y[:300], 10, 0.5, seed=7, features=imgs)
    b = instance_dependent(y[:300], 10, 0.5, seed=7, features=imgs.reshape(300, -1) / 255.0)
    assert np.array_equal(a.labels, b.labels)


def test_instance_dependent_needs_matching_features():
    with pytest.raises(DataError, match="features"):
        instance_dependent(_labels(10, n=50), 10, 0.4, seed=0, features=_features(49))
    with pytest.raises(DataError, match="features"):
        make_noise("instance:0.4", _labels(10, n=50), 10, seed=0)


# ---- maps -----------------------------------------------------------------------------------------------

def test_asymmetric_cifar10_map():
    y = _labels(10)
    noisy = asymmetric_cifar10(y, 10, 0.4, seed=1)
    expected = {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}
    changed = noisy.labels != y
    assert set(np.unique(y[changed])) == set(expected)
    for src, dst in expected.items():
        assert np.all(noisy.labels[changed & (y == src)] == dst)
        assert abs(np.mean(changed[y == src]) - 0.4) < 0.04
    untouched = np.isin(y, [0, 1, 6, 7, 8])
    assert np.array_equal(noisy.labels[untouched], y[untouched])
    full = asymmetric_cifar10(y, 10, 1.0, seed=1)
    assert np.array_equal(full.labels[~untouched], np.vectorize(expected.get)(y[~untouched]))


def test_class_maps_exact_and_full_rate():
    y = _labels(10, n=1000)
    eligible = np.isin(y, [9, 2, 3, 5, 4])
    exact = asymmetric_cifar10(y, 10, 0.4, seed=1, exact=True)
    assert int(exact.is_noisy.sum()) == int(np.floor(0.4 * eligible.sum() + 0.5))  # of the mapped classes
    y100 = _labels(100, n=1000)
    assert np.array_equal(asymmetric_cifar100(y100, 100, 1.0, seed=1).labels, cifar100_asym_targets()[y100])
    const = instance_dependent(y, 10, 0.3, seed=1, features=_features(1000), norm_std=0.0)
    assert abs(const.noise_rate - 0.3) < 0.05


def test_pair_flip_targets_next_class():
    y = _labels(7)
    noisy = pair_flip(y, 7, 0.45, seed=2)
    changed = noisy.labels != y
    assert np.array_equal(noisy.labels[changed], (y[changed] + 1) % 7)
    assert abs(noisy.noise_rate - 0.45) < 0.01
    assert np.array_equal(pair_flip(y, 7, 1.0, seed=2).labels, (y + 1) % 7)


def test_cifar100_coarse_table_matches_reference():
    # The fine→coarse array as published with the data (python version, 'coarse_labels' per fine label).
    reference = np.array([
        4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7, 6, 13, 15, 3, 15,
        0, 11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18,
        17, 10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13, 16, 19, 2, 4, 6, 19, 5, 5, 8,
        19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13])
    assert np.array_equal(CIFAR100_COARSE_LABELS, reference)
    assert sorted(f for _, fines in CIFAR100_SUPERCLASSES for f in fines) == list(range(100))


def test_cifar100_targets_cycle_within_superclass():
    targets = cifar100_asym_targets()
    assert np.all(targets != np.arange(100))
    assert np.array_equal(CIFAR100_COARSE_LABELS[targets], CIFAR100_COARSE_LABELS)
    for _, fines in CIFAR100_SUPERCLASSES:
        # next fine class of the superclass in increasing order, the last back to the first
        assert [int(targets[f]) for f in fines] == list(fines[1:]) + [fines[0]]
    assert int(targets[2]) == 11 and int(targets[98]) == 2  # people: baby→boy, woman→baby
    consecutive = cifar100_asym_targets("consecutive")
    assert np.array_equal(consecutive[:10], [1, 2, 3, 4, 0, 6, 7, 8, 9, 5])


def test_asymmetric_cifar100_flips_to_target():
    y = _labels(100)
    noisy = asymmetric_cifar100(y, 100, 0.4, seed=3)
    changed = noisy.labels != y
    assert np.array_equal(noisy.labels[changed], cifar100_asym_targets()[y[changed]])
    assert np.array_equal(CIFAR100_COARSE_LABELS[noisy.labels], CIFAR100_COARSE_LABELS[y])
    assert abs(noisy.noise_rate - 0.4) < 0.01
    other = asymmetric_cifar100(y, 100, 0.4, seed=3, grouping="consecutive")
    changed = other.labels != y
    assert np.array_equal(other.labels[changed], cifar100_asym_targets("consecutive")[y[changed]])


def test_asymmetric_maps_need_their_class_count():
    with pytest.raises(DataError, match="num_classes=10"):
        asymmetric_cifar10(_labels(5, n=10), 5, 0.2, seed=0)
    with pytest.raises(DataError, match="num_classes=100"):
        asymmetric_cifar100(_labels(10, n=10), 10, 0.2, seed=0)
    with pytest.raises(DataError, match="grouping"):
        asymmetric_cifar100(_labels(100, n=10), 100, 0.2, seed=0, grouping="blocks")


# ---- determinism, limits --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_seeded_and_reproducible(name):
    gen, y = GENERATORS[name], _labels(10, n=2000)
    a, b, c = gen(y, 10, 0.4, 11), gen(y, 10, 0.4, 11), gen(y, 10, 0.4, 12)
    assert np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)
    assert a.params["seed"] == 11 and a.params["rate"] == 0.4
    np.random.seed(0)
    before = np.random.random()
    np.random.seed(0)
    gen(y, 10, 0.4, 11)
    assert np.random.random() == before  # the global numpy random state is neither read nor changed


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_rate_zero_changes_nothing(name):
    y = _labels(10, n=2000)
    noisy = GENERATORS[name](y, 10, 0.0, 1)
    assert np.array_equal(noisy.labels, y) and noisy.noise_rate == 0.0


def test_rate_one_symmetric_changes_every_label():
    y = _labels(10, n=2000)
    assert np.all(symmetric(y, 10, 1.0, seed=1).labels != y)
    assert np.all(symmetric(y, 10, 1.0, seed=1, exact=True).labels != y)


def test_inputs_are_not_modified_or_aliased():
    y = _labels(10, n=100)
    keep = y.copy()
    noisy = symmetric(y, 10, 0.5, seed=0)
    assert np.array_equal(y, keep)
    y[:] = 0
    assert np.array_equal(noisy.clean, keep)


# ---- NoisyLabels ----------------------------------------------------------------------------------------

def test_transition_matrix_hand_made():
    clean = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    given = np.array([0, 0, 1, 2, 1, 0, 2, 0])
    is_open = np.array([False, False, False, False, False, False, False, True])
    noisy = NoisyLabels(labels=given, clean=clean, is_open_set=is_open, kind="test")
    t = noisy.transition_matrix(4)
    expected = np.array([[0.5, 0.25, 0.25, 0], [0.5, 0.5, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 0]])
    np.testing.assert_allclose(t, expected)  # the open-set sample (2 → 0) is left out; class 3 is empty
    assert noisy.is_noisy.tolist() == [False, False, True, True, False, True, False, True]
    assert noisy.noise_rate == 0.5 and noisy.open_set_rate == 0.125 and noisy.closed_set_rate == 0.375
    summary = noisy.summary()
    assert summary["num_noisy"] == 4 and summary["num_open_set"] == 1


def test_without_clean_labels():
    noisy = NoisyLabels(labels=np.array([1, 2]), kind="real")
    assert noisy.is_noisy is None and noisy.noise_rate is None
    with pytest.raises(DataError, match="clean"):
        noisy.transition_matrix(3)


def test_noisy_labels_validation():
    with pytest.raises(DataError, match="lengths must match"):
        NoisyLabels(labels=np.array([0, 1, 2]), clean=np.array([0, 1]))
    with pytest.raises(DataError, match="is_open_set"):
        NoisyLabels(labels=np.array([0, 1]), is_open_set=np.array([0, 1]))
    with pytest.raises(DataError, match="JSON"):
        NoisyLabels(labels=np.array([0]), params={"f": object()})
    # numpy scalars and tuples are normalised to what a file gives back
    assert NoisyLabels(labels=np.array([0]), params={"r": np.float32(0.5), "t": (1, 2)}).params == {"r": 0.5, "t": [1, 2]}


def test_save_load_round_trip(tmp_path):
    y = _labels(10, n=500)
    noisy = symmetric(y, 10, 0.3, seed=8)
    path = noisy.save(tmp_path / "sym.noise")  # any name: nothing is appended
    assert path == tmp_path / "sym.noise" and os.listdir(tmp_path) == ["sym.noise"]  # no temp file left behind
    back = NoisyLabels.load(path, num_samples=500, num_classes=10)
    assert np.array_equal(back.labels, noisy.labels) and back.labels.dtype == np.int64
    assert np.array_equal(back.clean, noisy.clean)
    assert np.array_equal(back.is_open_set, noisy.is_open_set)
    assert back.kind == noisy.kind and back.params == noisy.params
    # without clean labels and with an open-set mask
    real = NoisyLabels(labels=y, is_open_set=y == 3, kind="real", params={"name": "x"})
    again = NoisyLabels.load(real.save(tmp_path / "real.npz"))
    assert again.clean is None and np.array_equal(again.is_open_set, y == 3) and again.params == {"name": "x"}
    # overwriting replaces the file whole
    symmetric(y, 10, 0.6, seed=9).save(path)
    assert NoisyLabels.load(path).params["rate"] == 0.6


def test_load_rejects_bad_files(tmp_path):
    y = _labels(10, n=200)
    good = symmetric(y, 10, 0.3, seed=1).save(tmp_path / "good.npz")

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated.npz"):
        NoisyLabels.load(truncated)

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match="garbage.npz"):
        NoisyLabels.load(garbage)

    with pytest.raises(DataError, match="not found"):
        NoisyLabels.load(tmp_path / "missing.npz")

    def write(name, **arrays):
        path = tmp_path / name
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
        return path

    with np.load(good) as f:
        fields = {k: f[k] for k in f.files}
    no_labels = write("nolabels.npz", **{k: v for k, v in fields.items() if k != "labels"})
    with pytest.raises(DataError, match=r"nolabels\.npz.*labels"):
        NoisyLabels.load(no_labels)
    floats = write("floats.npz", **{**fields, "labels": fields["labels"].astype(np.float32)})
    with pytest.raises(DataError, match=r"floats\.npz.*'labels'"):
        NoisyLabels.load(floats)
    short = write("short.npz", **{**fields, "clean": fields["clean"][:-1]})
    with pytest.raises(DataError, match=r"short\.npz.*'clean'"):
        NoisyLabels.load(short)
    bad_json = write("json.npz", **{**fields, "params": np.array("{not json")})
    with pytest.raises(DataError, match=r"json\.npz.*'params'"):
        NoisyLabels.load(bad_json)
    npy = tmp_path / "plain.npy"
    np.save(npy, y)
    with pytest.raises(DataError, match="not an .npz"):
        NoisyLabels.load(npy)

    with pytest.raises(DataError, match=r"good\.npz.*expected 201"):
        NoisyLabels.load(good, num_samples=201)
    with pytest.raises(DataError, match="num_classes=10"):
        NoisyLabels.load(good, num_classes=5)
    out_of_range = write("range.npz", **{**fields, "labels": np.full(200, 10, dtype=np.int64)})
    with pytest.raises(DataError, match=r"range\.npz.*'labels'"):
        NoisyLabels.load(out_of_range)  # params records num_classes=10


# ---- bad input to generators ----------------------------------------------------------------------------

@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan"), "0.4", None])
def test_bad_rate(rate):
    with pytest.raises(DataError, match="rate"):
        symmetric(_labels(10, n=10), 10, rate, seed=0)


def test_bad_labels_and_arguments():
    with pytest.raises(DataError, match=r"clean_labels.*\[0, 9\]"):
        symmetric(np.array([0, 10]), 10, 0.2, seed=0)
    with pytest.raises(DataError, match="clean_labels"):
        symmetric(np.array([0, -1]), 10, 0.2, seed=0)
    with pytest.raises(DataError, match="clean_labels"):
        symmetric(np.zeros((2, 2), dtype=int), 10, 0.2, seed=0)
    with pytest.raises(DataError, match="convention"):
        symmetric(np.array([0, 1]), 10, 0.2, seed=0, convention="others")
    with pytest.raises(DataError, match="seed"):
        symmetric(np.array([0, 1]), 10, 0.2, seed=-1)
    with pytest.raises(DataError, match="num_classes"):
        pair_flip(np.array([0, 0]), 1, 0.2, seed=0)


# ---- specs and real labels ------------------------------------------------------------------------------

def test_make_noise_specs():
    y10, y100 = _labels(10, n=1000), _labels(100, n=1000)
    assert make_noise("sym:0.4", y10, 10, seed=1).params["convention"] == "other"
    assert make_noise("sym-all:0.4", y10, 10, seed=1).params["convention"] == "all"
    assert make_noise("asym:0.4", y10, 10, seed=1).kind == "asymmetric_cifar10"
    assert make_noise("asym:0.4", y100, 100, seed=1).kind == "asymmetric_cifar100"
    assert make_noise("pairflip:0.45", y10, 10, seed=1).kind == "pair_flip"
    assert make_noise("instance:0.4", y10, 10, seed=1, features=_features(1000)).kind == "instance_dependent"
    none = make_noise("none", y10, 10, seed=1)
    assert none.kind == "none" and np.array_equal(none.labels, y10)
    exact = make_noise("sym:0.4", y10, 10, seed=1, exact=True)
    assert exact.params["spec"] == "sym:0.4" and int(exact.is_noisy.sum()) == 400
    assert np.array_equal(make_noise("sym:0.4", y10, 10, seed=1).labels, symmetric(y10, 10, 0.4, seed=1).labels)
    with pytest.raises(DataError, match="10 classes"):
        make_noise("asym:0.4", _labels(7, n=10), 7, seed=1)
    with pytest.raises(DataError, match="unknown noise spec"):
        make_noise("gauss:0.4", y10, 10, seed=1)
    with pytest.raises(DataError, match="not a number"):
        make_noise("sym:forty", y10, 10, seed=1)
    with pytest.raises(DataError, match="0.4"):
        make_noise("sym:40", y10, 10, seed=1)  # a percentage: the message suggests 0.4


def test_from_labelset():
    clean = np.array([0, 1, 2, 3])
    noisy = from_labelset(LabelSet("worst", np.array([0, 2, 2, 1]), clean), num_classes=4)
    assert noisy.kind == "real" and noisy.noise_rate == 0.5 and noisy.params == {"name": "worst", "num_classes": 4}
    assert from_labelset(LabelSet("h", np.array([1, 1]))).clean is None
    with pytest.raises(DataError, match="lengths must match"):
        from_labelset(LabelSet("bad", np.array([0, 1]), np.array([0])))
    with pytest.raises(DataError, match="noisy"):
        from_labelset(LabelSet("bad", np.array([0, 5])), num_classes=4)


# ---- open-set noise -------------------------------------------------------------------------------------

def _split(n=400, size=8, channels=3, num_classes=5):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 200, size=(n, size, size, channels), dtype=np.uint8)  # never 255
    labels = rng.integers(0, num_classes, size=n)
    return ImageSplit(images, labels, np.arange(1000, 1000 + n, dtype=np.int64))


def _pool(m=300, size=8, channels=3):
    """Pool image k is constant with value 255 - (k % 50) >= 206, so every pixel says which pool row it is
    (up to k mod 50) and bilinear resizing keeps it; in-distribution images never reach these values."""
    values = (255 - np.arange(m) % 50).astype(np.uint8)
    shape = (m, size, size) + ((channels,) if channels else ())
    return np.broadcast_to(values.reshape((m,) + (1,) * (len(shape) - 1)), shape).copy()


def test_open_set_counts_images_and_labels():
    split, pool = _split(), _pool()
    before = (split.images.copy(), split.labels.copy(), split.indices.copy())
    new, noisy = open_set(split, 5, 0.5, 0.25, pool, seed=3)
    # counts: 200 noisy, 50 open-set, 150 closed-set, 200 clean
    assert noisy.kind == "open_set" and int(noisy.is_open_set.sum()) == 50
    closed = (noisy.labels != noisy.clean) & ~noisy.is_open_set
    assert int(closed.sum()) == 150 and int(noisy.is_noisy.sum()) == 200
    assert noisy.params["num_open"] == 50 and noisy.params["num_closed"] == 150
    # open-set: image from the pool, label unchanged; pool rows used once each (pool is big enough)
    rows = np.array(noisy.params["ood_rows"])
    assert len(set(rows.tolist())) == 50
    assert np.array_equal(new.images[noisy.is_open_set], pool[rows])
    assert np.array_equal(new.labels[noisy.is_open_set], split.labels[noisy.is_open_set])
    # closed-set: original image, a different label; clean: untouched
    assert np.array_equal(new.images[~noisy.is_open_set], split.images[~noisy.is_open_set])
    assert np.all(new.labels[closed] != split.labels[closed])
    keep = ~noisy.is_noisy
    assert np.array_equal(new.labels[keep], split.labels[keep])
    assert np.array_equal(new.labels, noisy.labels) and np.array_equal(new.indices, split.indices)
    # the input split is untouched and not shared
    assert all(np.array_equal(a, b) for a, b in zip(before, (split.images, split.labels, split.indices)))
    assert not np.shares_memory(new.images, split.images)
    # reproducible
    again, noisy2 = open_set(split, 5, 0.5, 0.25, pool, seed=3)
    assert np.array_equal(again.images, new.images) and np.array_equal(noisy2.labels, noisy.labels)


def test_open_set_excluded_classes_never_used():
    split, pool = _split(), _pool()
    ood_labels = np.arange(len(pool)) % 3
    _, noisy = open_set(split, 5, 0.5, 0.5, pool, seed=1, ood_labels=ood_labels, exclude_ood_classes=[0, 2])
    rows = np.array(noisy.params["ood_rows"])
    assert len(rows) == 100 and np.all(ood_labels[rows] == 1)
    assert noisy.params["exclude_ood_classes"] == [0, 2] and noisy.params["ood_pool_size"] == 100
    with pytest.raises(DataError, match="empty"):
        open_set(split, 5, 0.5, 0.5, pool, seed=1, ood_labels=ood_labels, exclude_ood_classes=[0, 1, 2])
    with pytest.raises(DataError, match="ood_labels"):
        open_set(split, 5, 0.5, 0.5, pool, seed=1, exclude_ood_classes=[0])


def test_open_set_small_pool_reuses_evenly_with_warning():
    split, pool = _split(), _pool(m=30)
    with pytest.warns(UserWarning, match="more than once"):
        _, noisy = open_set(split, 5, 0.5, 0.5, pool, seed=2)  # 100 open-set samples, 30 pool images
    counts = np.bincount(noisy.params["ood_rows"], minlength=30)
    assert counts.min() >= 3 and counts.max() <= 4 and noisy.params["ood_reused"]


def test_open_set_resizes_and_converts_pool_images():
    split = _split(size=8, channels=3)
    grey_small = _pool(m=100, size=4, channels=0)  # M x 4 x 4 grey
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new, noisy = open_set(split, 5, 0.5, 0.5, grey_small, seed=4)
    assert new.images.shape == split.images.shape and new.images.dtype == np.uint8
    rows = np.array(noisy.params["ood_rows"])
    expected = 255 - rows % 50  # constant images stay constant through bilinear resize and grey→RGB
    assert np.array_equal(new.images[noisy.is_open_set], np.broadcast_to(expected[:, None, None, None],
                                                                          (len(rows), 8, 8, 3)))
    # non-constant content: matches PIL bilinear, and RGB → grey works
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(2, 16, 12, 3), dtype=np.uint8)
    from PIL import Image
    out = fit_images(rgb, (8, 6, 1))
    ref = np.asarray(Image.fromarray(rgb[1]).convert("L").resize((6, 8), Image.BILINEAR))
    assert out.shape == (2, 8, 6, 1) and np.array_equal(out[1, ..., 0], ref)


def test_open_set_bad_input():
    split, pool = _split(), _pool()
    with pytest.raises(DataError, match="noisy_fraction"):
        open_set(split, 5, 1.5, 0.5, pool, seed=0)
    with pytest.raises(DataError, match="open_fraction"):
        open_set(split, 5, 0.5, -0.1, pool, seed=0)
    with pytest.raises(DataError, match="ood_images"):
        open_set(split, 5, 0.5, 0.5, pool.astype(np.float32), seed=0)
    with pytest.raises(DataError, match="labels"):
        open_set(split, 3, 0.5, 0.5, pool, seed=0)  # split labels go up to 4
    no_open, noisy = open_set(split, 5, 0.4, 0.0, pool, seed=0)
    assert noisy.open_set_rate == 0.0 and abs(noisy.noise_rate - 0.4) < 1e-9

"""The loaders against the real data sets in ../shared/data (skipped when that folder is absent).

Expected figures come from /work/shared/data/README.md: class counts, and the CIFAR-N noise rates published
by Wei et al. (ICLR 2022).
"""

from __future__ import annotations

import numpy as np
import pytest

from noisykd.data import load_dataset, load_labelset

pytestmark = pytest.mark.shared_data


def noise_rate(labels) -> float:
    """Percentage of noisy labels that differ from the clean ones, rounded to 2 decimals."""
    return round(100.0 * float(np.mean(labels.noisy != labels.clean)), 2)


@pytest.fixture(scope="module")
def cifar10(cifar10_root):
    return load_dataset(f"cifar10:{cifar10_root}")


def test_cifar10_sizes_and_classes(cifar10):
    assert len(cifar10.train) == 50_000 and len(cifar10.test) == 10_000
    assert cifar10.image_shape == (32, 32, 3)
    assert cifar10.classes == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                               "truck")
    assert np.bincount(cifar10.train.labels, minlength=10).tolist() == [5_000] * 10
    assert np.bincount(cifar10.test.labels, minlength=10).tolist() == [1_000] * 10
    assert cifar10.train.images.dtype == np.uint8 and cifar10.train.images.flags.c_contiguous


def test_cifar10n_clean_labels_match_the_training_order(cifar10, cifar10n_file):
    labels = load_labelset(f"cifar10n:{cifar10n_file}:clean", num_samples=50_000)
    np.testing.assert_array_equal(labels.clean, cifar10.train.labels)


@pytest.mark.parametrize("name, rate", [("aggre", 9.01), ("rand1", 17.23), ("rand2", 18.12), ("rand3", 17.64),
                                        ("worst", 40.21)])
def test_cifar10n_noise_rates(name, rate, cifar10n_file):
    labels = load_labelset(f"cifar10n:{cifar10n_file}:{name}", num_samples=50_000)
    assert noise_rate(labels) == rate


def test_cifar100n_noise_rate(cifar100n_file):
    labels = load_labelset(f"cifar100n:{cifar100n_file}:noisy", num_samples=50_000)
    assert noise_rate(labels) == 40.20
    assert labels.noisy.max() == 99 and labels.clean.max() == 99
    coarse = load_labelset(f"cifar100n:{cifar100n_file}:coarse_noisy")
    assert coarse.noisy.max() == 19 and len(coarse.noisy) == 50_000


def test_fashion_mnist_sizes(fashion_mnist_root):
    data = load_dataset(f"fashion-mnist:{fashion_mnist_root}")
    assert len(data.train) == 60_000 and len(data.test) == 10_000
    assert data.image_shape == (28, 28, 1)
    assert np.bincount(data.train.labels, minlength=10).tolist() == [6_000] * 10
    assert np.bincount(data.test.labels, minlength=10).tolist() == [1_000] * 10
    assert data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot"

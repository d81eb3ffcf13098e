"""Every file loader against tiny fixtures written here in the real formats, plus bad and malicious input.

CIFAR batches are pickles (protocol 2) of dicts with bytes keys, as the official files; CIFAR-N files come from
``torch.save`` of a dict of numpy arrays, which writes the same zip + pickle layout as the official ``.pt``.
"""

from __future__ import annotations

import builtins
import gzip
import os
import pickle
import shlex
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from noisykd.data import dataset_kinds, labelset_kinds, load_dataset, load_labelset
from noisykd.errors import ConfigError, DataError, UnsafePickleError

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_BATCHES = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]


# ---------------------------------------------------------------- writers of the real formats


def write_pickle(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def cifar_batch(rows: np.ndarray, labels, label_key: str = "labels", str_keys: bool = False, **extra) -> dict:
    """A CIFAR batch dict as in the official files (bytes keys unless ``str_keys``)."""
    batch = {"batch_label": b"testing batch", label_key: [int(v) for v in labels], "data": rows,
             "filenames": [f"img_{i}.png".encode() for i in range(len(rows))], **extra}
    return batch if str_keys else {k.encode(): v for k, v in batch.items()}


def write_cifar10(root: Path, per_batch: int = 4, str_keys: bool = False, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Write ``root/cifar-10-batches-py`` with ``per_batch`` images per batch -> (all rows, all labels), train first."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rows = rng.integers(0, 256, size=(6 * per_batch, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, size=6 * per_batch)
    for k, name in enumerate(CIFAR10_BATCHES):
        part = slice(k * per_batch, (k + 1) * per_batch)
        write_pickle(folder / name, cifar_batch(rows[part], labels[part], str_keys=str_keys))
    meta = {"num_cases_per_batch": per_batch, "label_names": [n.encode() for n in CIFAR10_NAMES], "num_vis": 3072}
    write_pickle(folder / "batches.meta", meta if str_keys else {k.encode(): v for k, v in meta.items()})
    return rows, labels


def expected_images(rows: np.ndarray) -> np.ndarray:
    """The reference conversion, pixel by pixel: row[c * 1024 + y * 32 + x] is image[y, x, c]."""
    out = np.empty((len(rows), 32, 32, 3), np.uint8)
    for c in range(3):
        out[..., c] = rows[:, c * 1024:(c + 1) * 1024].reshape(-1, 32, 32)
    return out


def write_cifar100(root: Path, n: int = 5) -> dict:
    rng = np.random.default_rng(1)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for split in ("train", "test"):
        rows = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine, coarse = rng.integers(0, 100, n), rng.integers(0, 20, n)
        write_pickle(folder / split, cifar_batch(rows, fine, "fine_labels", coarse_labels=[int(c) for c in coarse]))
        out[split] = (rows, fine, coarse)
    write_pickle(folder / "meta", {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                                   b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]})
    return out


def write_idx(path: Path, array: np.ndarray, magic: int, gz: bool = False, cut: int = 0) -> Path:
    """An IDX file: big-endian magic and dimensions, then the bytes (``cut`` bytes dropped from the end)."""
    data = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    data = data[: len(data) - cut]
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def write_mnist(root: Path, gz: bool, n_train: int = 6, n_test: int = 4, cut: dict | None = None) -> dict:
    """The four official MNIST files under ``root`` -> {split: (images, labels)}."""
    rng = np.random.default_rng(2)
    root.mkdir(parents=True, exist_ok=True)
    cut = cut or {}
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte", images, 2051, gz, cut.get(f"{prefix}-images", 0))
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels, 2049, gz, cut.get(f"{prefix}-labels", 0))
        out[prefix] = (images, labels)
    return out


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def rgb(seed: int, size: tuple[int, int] = (6, 5)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)


def grey(seed: int, size: tuple[int, int] = (6, 5)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=size, dtype=np.uint8)


# ---------------------------------------------------------------- malicious pickles


class _RunsCommand:
    """Unpickling this runs a shell command (what a tampered data file could do to a user)."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.target))}",)


class _ExecsPython:
    """Unpickling this calls builtins.exec, which creates a file."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.target)!r}, 'w').close()",)


PAYLOADS = [_RunsCommand, _ExecsPython]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_malicious_payloads_are_live(tmp_path, payload):
    # Control: with plain pickle the payload does create its file, so the refusals below are meaningful.
    target = tmp_path / "pwned"
    pickle.loads(pickle.dumps({b"data": payload(target)}, protocol=2))
    assert target.exists()


@pytest.mark.parametrize("payload", PAYLOADS)
def test_malicious_cifar_batch_is_refused_and_never_runs(tmp_path, payload):
    write_cifar10(tmp_path, per_batch=2)
    target = tmp_path / "pwned"
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    write_pickle(batch, {b"data": payload(target), b"labels": [0, 1]})
    with pytest.raises(UnsafePickleError, match="data_batch_1"):
        load_dataset(f"cifar10:{tmp_path}")
    assert not target.exists()


@pytest.mark.parametrize("payload", PAYLOADS)
def test_malicious_cifar_n_file_is_refused_and_never_runs(tmp_path, payload):
    target = tmp_path / "pwned"
    path = tmp_path / "CIFAR-10_human.pt"
    torch.save({"clean_label": np.zeros(3, np.int64), "worse_label": payload(target)}, path)
    with pytest.raises(UnsafePickleError, match="CIFAR-10_human.pt"):
        load_labelset(f"cifar10n:{path}:worst")
    assert not target.exists()


def test_malicious_pickle_in_hand_made_torch_zip_is_refused(tmp_path):
    # The same attack packed by hand (no torch.save): an archive with only data.pkl.
    target = tmp_path / "pwned"
    path = tmp_path / "human.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"clean_label": _RunsCommand(target)}, protocol=2))
        archive.writestr("archive/version", "3\n")
    with pytest.raises(UnsafePickleError):
        load_labelset(f"cifar10n:{path}:clean")
    assert not target.exists()


# ---------------------------------------------------------------- registry


def test_every_loader_is_registered():
    assert {"cifar10", "cifar100", "mnist", "fashion-mnist", "folder", "npz", "digits"} <= set(dataset_kinds())
    assert {"cifar10n", "cifar100n"} <= set(labelset_kinds())


@pytest.mark.parametrize("spec", ["cifar10", "cifar100", "mnist", "fashion-mnist", "folder", "npz"])
def test_a_spec_without_its_path_says_what_it_needs(spec):
    with pytest.raises(DataError, match=spec):
        load_dataset(spec)


# ---------------------------------------------------------------- CIFAR-10 / CIFAR-100


@pytest.mark.parametrize("str_keys", [False, True])
def test_cifar10_reads_batches_in_order(tmp_path, str_keys):
    rows, labels = write_cifar10(tmp_path, str_keys=str_keys)
    data = load_dataset(f"cifar10:{tmp_path}")
    assert data.classes == tuple(CIFAR10_NAMES)
    assert len(data.train) == 20 and len(data.test) == 4
    assert data.train.images.shape == (20, 32, 32, 3) and data.train.images.flags.c_contiguous
    np.testing.assert_array_equal(data.train.images, expected_images(rows[:20]))
    np.testing.assert_array_equal(data.test.images, expected_images(rows[20:]))
    np.testing.assert_array_equal(data.train.labels, labels[:20])
    np.testing.assert_array_equal(data.test.labels, labels[20:])
    np.testing.assert_array_equal(data.train.indices, np.arange(20))


def test_cifar10_root_may_be_the_batches_folder_itself(tmp_path):
    rows, _ = write_cifar10(tmp_path)
    data = load_dataset(f"cifar10:{tmp_path / 'cifar-10-batches-py'}")
    np.testing.assert_array_equal(data.train.images[0], expected_images(rows[:1])[0])


def test_cifar100_fine_labels_and_coarse_meta(tmp_path):
    written = write_cifar100(tmp_path)
    data = load_dataset(f"cifar100:{tmp_path}")
    assert data.num_classes == 100 and data.classes[3] == "fine3"
    rows, fine, coarse = written["train"]
    np.testing.assert_array_equal(data.train.images, expected_images(rows))
    np.testing.assert_array_equal(data.train.labels, fine)
    np.testing.assert_array_equal(data.meta["train_coarse_labels"], coarse)
    np.testing.assert_array_equal(data.meta["test_coarse_labels"], written["test"][2])
    assert len(data.meta["coarse_classes"]) == 20


def test_cifar10_missing_batch_file_is_named(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3: missing CIFAR-10 batch file"):
        load_dataset(f"cifar10:{tmp_path}")


def test_cifar10_missing_meta_and_missing_root(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "batches.meta").unlink()
    with pytest.raises(DataError, match="batches.meta"):
        load_dataset(f"cifar10:{tmp_path}")
    with pytest.raises(DataError, match="no such folder"):
        load_dataset(f"cifar10:{tmp_path / 'nowhere'}")


def test_cifar10_missing_key_names_file_and_key(tmp_path):
    write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    write_pickle(batch, {b"data": np.zeros((2, 3072), np.uint8)})
    with pytest.raises(DataError, match=r"data_batch_2: missing key 'labels'"):
        load_dataset(f"cifar10:{tmp_path}")


def test_cifar10_wrong_row_size(tmp_path):
    write_cifar10(tmp_path)
    write_pickle(tmp_path / "cifar-10-batches-py" / "test_batch", cifar_batch(np.zeros((2, 3000), np.uint8), [0, 1]))
    with pytest.raises(DataError, match=r"test_batch: 'data' rows must hold 3072 bytes .* found 3000"):
        load_dataset(f"cifar10:{tmp_path}")


def test_cifar10_wrong_dtype(tmp_path):
    write_cifar10(tmp_path)
    write_pickle(tmp_path / "cifar-10-batches-py" / "test_batch", cifar_batch(np.zeros((2, 3072), np.int32), [0, 1]))
    with pytest.raises(DataError, match=r"test_batch: 'data' must be a uint8 array"):
        load_dataset(f"cifar10:{tmp_path}")


def test_cifar10_label_count_mismatch(tmp_path):
    write_cifar10(tmp_path)
    batch = cifar_batch(np.zeros((3, 3072), np.uint8), [0, 1, 2])
    batch[b"labels"] = [0, 1]
    write_pickle(tmp_path / "cifar-10-batches-py" / "data_batch_4", batch)
    with pytest.raises(DataError, match=r"data_batch_4.*2 labels for 3 images"):
        load_dataset(f"cifar10:{tmp_path}")


def test_cifar10_label_out_of_range(tmp_path):
    write_cifar10(tmp_path)
    write_pickle(tmp_path / "cifar-10-batches-py" / "data_batch_5", cifar_batch(np.zeros((2, 3072), np.uint8), [0, 10]))
    with pytest.raises(DataError, match=r"data_batch_5.*\[0, 9\]"):
        load_dataset(f"cifar10:{tmp_path}")


def test_cifar10_truncated_batch(tmp_path):
    write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(batch.read_bytes()[:5000])  # cut inside the pixel bytes
    with pytest.raises(DataError, match=r"data_batch_1: not a readable pickle"):
        load_dataset(f"cifar10:{tmp_path}")


# ---------------------------------------------------------------- CIFAR-10N / CIFAR-100N


def write_cifar10n(path: Path, n: int = 8, **override) -> dict:
    rng = np.random.default_rng(3)
    arrays = {key: rng.integers(0, 10, n).astype(np.int64) for key in
              ("clean_label", "aggre_label", "worse_label", "random_label1", "random_label2", "random_label3")}
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    torch.save(arrays, path)
    return arrays


@pytest.mark.parametrize("name, key", [("aggre", "aggre_label"), ("rand1", "random_label1"),
                                       ("rand2", "random_label2"), ("rand3", "random_label3"),
                                       ("worst", "worse_label"), ("clean", "clean_label"), (None, "worse_label")])
def test_cifar10n_label_sets(tmp_path, name, key):
    path = tmp_path / "CIFAR-10_human.pt"
    arrays = write_cifar10n(path)
    labels = load_labelset(f"cifar10n:{path}" + (f":{name}" if name else ""), num_samples=8)
    np.testing.assert_array_equal(labels.noisy, arrays[key])
    np.testing.assert_array_equal(labels.clean, arrays["clean_label"])
    assert labels.noisy.dtype == np.int64 and labels.name == f"cifar10n:{name or 'worst'}"


def test_cifar10n_path_may_contain_colons(tmp_path):
    folder = tmp_path / "a:b"
    folder.mkdir()
    arrays = write_cifar10n(folder / "x:y.pt")
    np.testing.assert_array_equal(load_labelset(f"cifar10n:{folder / 'x:y.pt'}:aggre").noisy, arrays["aggre_label"])
    np.testing.assert_array_equal(load_labelset(f"cifar10n:{folder / 'x:y.pt'}").noisy, arrays["worse_label"])


def test_cifar10n_unknown_name_lists_the_valid_ones(tmp_path):
    path = tmp_path / "CIFAR-10_human.pt"
    write_cifar10n(path)
    with pytest.raises(DataError, match=r"unknown label set 'wrost'.*aggre, rand1, rand2, rand3, worst, clean"):
        load_labelset(f"cifar10n:{path}:wrost")


def test_cifar10n_missing_key_and_missing_file(tmp_path):
    path = tmp_path / "CIFAR-10_human.pt"
    write_cifar10n(path, aggre_label=None)
    with pytest.raises(DataError, match=r"CIFAR-10_human.pt: missing key 'aggre_label'"):
        load_labelset(f"cifar10n:{path}:aggre")
    with pytest.raises(DataError, match="not found"):
        load_labelset(f"cifar10n:{tmp_path / 'absent.pt'}")


def test_cifar10n_length_mismatch(tmp_path):
    path = tmp_path / "CIFAR-10_human.pt"
    write_cifar10n(path, worse_label=np.zeros(7, np.int64))
    with pytest.raises(DataError, match=r"'worse_label' has 7 labels but 'clean_label' has 8"):
        load_labelset(f"cifar10n:{path}:worst")
    with pytest.raises(DataError, match="8 labels for a training set of 9 images"):
        load_labelset(f"cifar10n:{path}:aggre", num_samples=9)


def test_cifar10n_labels_out_of_range(tmp_path):
    path = tmp_path / "CIFAR-10_human.pt"
    write_cifar10n(path, aggre_label=np.array([0, 1, 2, 3, 4, 5, 6, 10]))
    with pytest.raises(DataError, match=r"aggre_label.*\[0, 9\]"):
        load_labelset(f"cifar10n:{path}:aggre")


def test_cifar10n_not_a_zip_archive(tmp_path):
    path = tmp_path / "CIFAR-10_human.pt"
    write_cifar10n(path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="CIFAR-10_human.pt"):
        load_labelset(f"cifar10n:{path}")


def test_cifar100n_fine_and_coarse(tmp_path):
    rng = np.random.default_rng(4)
    arrays = {"clean_label": rng.integers(0, 100, 6), "noisy_label": rng.integers(0, 100, 6),
              # the official file stores the coarse labels as plain lists
              "clean_coarse_label": [int(v) for v in rng.integers(0, 20, 6)],
              "noisy_coarse_label": [int(v) for v in rng.integers(0, 20, 6)]}
    path = tmp_path / "CIFAR-100_human.pt"
    torch.save(arrays, path)
    noisy = load_labelset(f"cifar100n:{path}")
    np.testing.assert_array_equal(noisy.noisy, arrays["noisy_label"])
    np.testing.assert_array_equal(noisy.clean, arrays["clean_label"])
    coarse = load_labelset(f"cifar100n:{path}:coarse_noisy")
    np.testing.assert_array_equal(coarse.noisy, arrays["noisy_coarse_label"])
    np.testing.assert_array_equal(coarse.clean, arrays["clean_coarse_label"])
    with pytest.raises(DataError, match="noisy, clean, coarse_noisy, coarse_clean"):
        load_labelset(f"cifar100n:{path}:worst")


# ---------------------------------------------------------------- MNIST / Fashion-MNIST (IDX)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_idx_files(tmp_path, gz):
    written = write_mnist(tmp_path, gz)
    data = load_dataset(f"mnist:{tmp_path}")
    assert data.classes == tuple("0123456789")
    assert data.image_shape == (28, 28, 1) and len(data.train) == 6 and len(data.test) == 4
    np.testing.assert_array_equal(data.train.images[..., 0], written["train"][0])
    np.testing.assert_array_equal(data.test.labels, written["t10k"][1])
    assert data.train.images.flags.writeable


def test_fashion_mnist_names_and_torchvision_layout(tmp_path):
    write_mnist(tmp_path / "FashionMNIST" / "raw", gz=True)
    data = load_dataset(f"fashion-mnist:{tmp_path}")
    assert data.classes == ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                            "Bag", "Ankle boot")


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_idx_names_file_and_sizes(tmp_path, gz):
    write_mnist(tmp_path, gz, n_train=6, cut={"train-images": 10})
    expected = 6 * 28 * 28
    with pytest.raises(DataError, match=rf"train-images-idx3-ubyte.*{expected} data bytes, found {expected - 10}"):
        load_dataset(f"mnist:{tmp_path}")


def test_truncated_gzip_stream(tmp_path):
    write_mnist(tmp_path, gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: corrupt or truncated gzip"):
        load_dataset(f"mnist:{tmp_path}")


def test_idx_wrong_magic_and_missing_file(tmp_path):
    write_mnist(tmp_path, gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros((4, 28, 28), np.uint8), 2051)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: IDX magic number 2051, expected 2049"):
        load_dataset(f"mnist:{tmp_path}")
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: missing IDX file"):
        load_dataset(f"mnist:{tmp_path}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no train-images-idx3-ubyte"):
        load_dataset(f"mnist:{tmp_path / 'empty'}")
    with pytest.raises(DataError, match="nowhere: no such folder"):
        load_dataset(f"mnist:{tmp_path / 'nowhere'}")


def test_idx_label_count_and_range(tmp_path):
    write_mnist(tmp_path, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5, np.uint8), 2049)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: 5 labels for the 6 images"):
        load_dataset(f"mnist:{tmp_path}")
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([0, 1, 2, 3, 4, 10], np.uint8), 2049)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.*\[0, 9\]"):
        load_dataset(f"mnist:{tmp_path}")


# ---------------------------------------------------------------- folder: class folders and CSV manifests


def test_folder_classes_sorted_and_extensions_case_insensitive(tmp_path):
    write_png(tmp_path / "dog" / "b.PNG", rgb(0))
    write_png(tmp_path / "dog" / "a.png", rgb(1))
    write_png(tmp_path / "cat" / "x.png", rgb(2))
    Image.fromarray(rgb(3)).save(tmp_path / "cat" / "y.JPEG")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    data = load_dataset(f"folder:{tmp_path}")
    assert data.classes == ("cat", "dog") and data.test is None
    assert data.train.images.shape == (4, 6, 5, 3)
    np.testing.assert_array_equal(data.train.labels, [0, 0, 1, 1])
    np.testing.assert_array_equal(data.train.images[0], rgb(2))  # cat/x.png comes first
    np.testing.assert_array_equal(data.train.images[2], rgb(1))  # then dog/a.png, dog/b.PNG
    assert data.meta["train_files"][3].endswith("b.PNG")


def test_folder_all_grey_gives_one_channel_and_mixed_gives_rgb(tmp_path):
    write_png(tmp_path / "grey" / "a" / "1.png", grey(0))
    write_png(tmp_path / "grey" / "b" / "2.png", grey(1))
    data = load_dataset(f"folder:{tmp_path / 'grey'}")
    assert data.image_shape == (6, 5, 1)
    np.testing.assert_array_equal(data.train.images[1, ..., 0], grey(1))
    write_png(tmp_path / "mixed" / "a" / "1.png", grey(0))
    write_png(tmp_path / "mixed" / "b" / "2.png", rgb(1))
    mixed = load_dataset(f"folder:{tmp_path / 'mixed'}")
    assert mixed.image_shape == (6, 5, 3)
    np.testing.assert_array_equal(mixed.train.images[0], np.repeat(grey(0)[..., None], 3, axis=2))


def test_folder_train_and_test_or_val_splits(tmp_path):
    for split, n in (("train", 3), ("val", 2)):
        for c in ("a", "b"):
            for i in range(n):
                write_png(tmp_path / split / c / f"{i}.png", rgb(i))
    data = load_dataset(f"folder:{tmp_path}")
    assert data.classes == ("a", "b") and len(data.train) == 6 and len(data.test) == 4
    np.testing.assert_array_equal(data.test.labels, [0, 0, 1, 1])
    write_png(tmp_path / "test" / "zebra" / "0.png", rgb(0))  # test/ wins over val/, and its class is unknown
    with pytest.raises(DataError, match="class 'zebra' is not among the train classes"):
        load_dataset(f"folder:{tmp_path}")


def test_folder_resize(tmp_path):
    write_png(tmp_path / "a" / "big.png", rgb(0, (40, 30)))
    write_png(tmp_path / "b" / "small.png", rgb(1, (8, 8)))
    data = load_dataset(f"folder:{tmp_path}", resize=16)
    assert data.train.images.shape == (2, 16, 16, 3)
    with pytest.raises(ConfigError, match="resize"):
        load_dataset(f"folder:{tmp_path}", resize=0)


def test_folder_sizes_must_agree_without_resize(tmp_path):
    write_png(tmp_path / "a" / "1.png", rgb(0, (6, 5)))
    write_png(tmp_path / "b" / "2.png", rgb(1, (7, 5)))
    with pytest.raises(DataError, match=r"2.png: image is 5x7 but .*1.png is 5x6.*resize"):
        load_dataset(f"folder:{tmp_path}")


def test_folder_unreadable_image_is_named(tmp_path):
    write_png(tmp_path / "a" / "1.png", rgb(0))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"broken.png: cannot read the image"):
        load_dataset(f"folder:{tmp_path}")


def test_folder_without_images_and_missing_root(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(DataError, match="class folder 'a' holds no images"):
        load_dataset(f"folder:{tmp_path}")
    (tmp_path / "a").rmdir()
    with pytest.raises(DataError, match="no images found"):
        load_dataset(f"folder:{tmp_path}")
    with pytest.raises(DataError, match="no such folder"):
        load_dataset(f"folder:{tmp_path / 'nowhere'}")


def test_folder_many_images_decode_in_threads_in_order(tmp_path):
    for i in range(80):  # above the thread-pool threshold
        write_png(tmp_path / f"c{i % 2}" / f"{i:03d}.png", rgb(i, (4, 4)))
    data = load_dataset(f"folder:{tmp_path}")
    assert len(data.train) == 80
    np.testing.assert_array_equal(data.train.images[0], rgb(0, (4, 4)))
    np.testing.assert_array_equal(data.train.images[40], rgb(1, (4, 4)))  # first file of c1


def test_csv_manifest_with_names_and_split(tmp_path):
    write_png(tmp_path / "img" / "0.png", rgb(0))
    write_png(tmp_path / "img" / "1.png", rgb(1))
    write_png(tmp_path / "img" / "2.png", rgb(2))
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,label,split\nimg/0.png,dog,train\nimg/1.png,cat,train\nimg/2.png,dog,test\n")
    data = load_dataset(f"folder:{manifest}")
    assert data.classes == ("cat", "dog")
    np.testing.assert_array_equal(data.train.labels, [1, 0])
    np.testing.assert_array_equal(data.test.labels, [1])
    np.testing.assert_array_equal(data.test.images[0], rgb(2))


def test_csv_manifest_with_integer_labels(tmp_path):
    write_png(tmp_path / "0.png", grey(0))
    write_png(tmp_path / "1.png", grey(1))
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,label\n0.png,3\n1.png,0\n")
    data = load_dataset(f"folder:{manifest}")
    assert data.classes == ("0", "1", "2", "3") and data.test is None
    np.testing.assert_array_equal(data.train.labels, [3, 0])


def test_csv_manifest_errors_name_the_line(tmp_path):
    write_png(tmp_path / "0.png", rgb(0))
    manifest = tmp_path / "list.csv"
    manifest.write_text("file,label\n0.png,a\n")
    with pytest.raises(DataError, match="'path' and 'label'"):
        load_dataset(f"folder:{manifest}")
    manifest.write_text("path,label\n0.png,a\nmissing.png,b\n")
    with pytest.raises(DataError, match=r"list.csv, line 3: image .*missing.png not found"):
        load_dataset(f"folder:{manifest}")
    manifest.write_text("path,label,split\n0.png,a,holdout\n")
    with pytest.raises(DataError, match=r"line 2: split 'holdout'"):
        load_dataset(f"folder:{manifest}")


# ---------------------------------------------------------------- npz


def test_npz_with_test_and_classes(tmp_path):
    rng = np.random.default_rng(5)
    x_train, x_test = rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8), rng.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    path = tmp_path / "set.npz"
    np.savez(path, x_train=x_train, y_train=np.array([0, 1, 2, 0, 1]), x_test=x_test, y_test=np.array([2, 2]),
             classes=np.array(["a", "b", "c", "d"]))
    data = load_dataset(f"npz:{path}")
    assert data.classes == ("a", "b", "c", "d")
    np.testing.assert_array_equal(data.train.images, x_train)
    np.testing.assert_array_equal(data.test.labels, [2, 2])


def test_npz_grey_without_test_or_classes(tmp_path):
    path = tmp_path / "set.npz"
    np.savez_compressed(path, x_train=np.zeros((3, 5, 5), np.uint8), y_train=np.array([0, 4, 1], np.uint8))
    data = load_dataset(f"npz:{path}")
    assert data.num_classes == 5 and data.test is None and data.image_shape == (5, 5, 1)


@pytest.mark.parametrize("arrays, message", [
    (dict(x_train=np.zeros((2, 4, 4), np.uint8)), r"missing array 'y_train'"),
    (dict(x_train=np.zeros((2, 4, 4), np.float32), y_train=np.array([0, 1])), r"'x_train' must be uint8"),
    (dict(x_train=np.zeros((2, 4, 4, 2), np.uint8), y_train=np.array([0, 1])), r"'x_train' must have shape"),
    (dict(x_train=np.zeros((2, 4, 4), np.uint8), y_train=np.array([0, 1, 1])), r"'y_train' has 3 labels for 2"),
    (dict(x_train=np.zeros((2, 4, 4), np.uint8), y_train=np.array([0.5, 1.0])), r"'y_train' must be 1-D integers"),
    (dict(x_train=np.zeros((2, 4, 4), np.uint8), y_train=np.array([0, -1])), r"'y_train' holds a negative label"),
    (dict(x_train=np.zeros((2, 4, 4), np.uint8), y_train=np.array([0, 2]), classes=np.array(["a", "b"])),
     r"array 'y_train'.*\[0, 1\]"),
    (dict(x_train=np.zeros((2, 4, 4), np.uint8), y_train=np.array([0, 1]), x_test=np.zeros((1, 4, 4), np.uint8)),
     r"has 'x_test' but not 'y_test'"),
    (dict(x_train=np.zeros((2, 4, 4), np.uint8), y_train=np.array([0, 1]), x_test=np.zeros((1, 5, 4), np.uint8),
          y_test=np.array([0])), r"'x_test' images are \(5, 4\)"),
    (dict(x_train=np.zeros((2, 4, 4), np.uint8), y_train=np.array([0, 1]), x_test=np.zeros((1, 4, 4), np.uint8),
          y_test=np.array([3]), classes=np.array(["a", "b"])), r"array 'y_test'.*\[0, 1\]"),
    (dict(x_train=np.zeros((2, 4, 4), np.uint8), y_train=np.array([0, 1]), classes=np.array(["a", 1], dtype=object)),
     r"array 'classes' cannot be read without pickle"),
])
def test_npz_bad_arrays_name_file_and_array(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=r"bad\.npz.*" + message):
        load_dataset(f"npz:{path}")


def test_npz_missing_and_corrupt_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_dataset(f"npz:{tmp_path / 'absent.npz'}")
    path = tmp_path / "corrupt.npz"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="corrupt.npz"):
        load_dataset(f"npz:{path}")

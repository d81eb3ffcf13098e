"""tinyimagenet: the Tiny ImageNet validation images (MODUL's open-set pool) from a real-format fixture (folder and
tar.gz), exclusion by WordNet id, bad input; the shared copy when it is there."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from noisykd.config import DataConfig
from noisykd.data import load_dataset
from noisykd.engine.setup import prepare_data
from noisykd.errors import ConfigError, DataError
from noisykd.noise.openset import open_set_counts

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyimagenet" / "tinyimagenet-val-test-jpeg.tar.gz"
WNIDS = ["n02123045", "n01443537", "n04285008"]  # tabby, goldfish, sports car (deliberately not sorted)
WORDS = "n01443537\tgoldfish, Carassius auratus\nn02123045\ttabby, tabby cat\nn04285008\tsports car, sport car\n" \
        "n09999999\tunused\n"


def jpeg(colour, grey: bool = False) -> bytes:
    image = Image.new("L", (64, 64), colour[0]) if grey else Image.new("RGB", (64, 64), colour)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def fixture_files(per_class: int = 4) -> dict[str, bytes]:
    """The official layout: words.txt, wnids.txt, val/val_annotations.txt, val/images/val_K.JPEG."""
    files = {"words.txt": WORDS.encode(), "wnids.txt": "\n".join(WNIDS).encode()}
    lines = []
    for k in range(per_class * len(WNIDS)):
        wnid = WNIDS[k % len(WNIDS)]
        colour = (40 * (k % 3) + 20, 10 * k, 200 - 10 * k)
        files[f"val/images/val_{k}.JPEG"] = jpeg(colour, grey=k == 5)
        lines.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t63\t63")
    files["val/val_annotations.txt"] = ("\n".join(lines) + "\n").encode()
    return files


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / "tiny-imagenet-200" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def write_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"tiny-imagenet-200/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("form", ["folder", "inner-folder", "tar"])
def test_loads_the_official_layout(tmp_path, form):
    files = fixture_files()
    if form == "tar":
        path = write_tar(tmp_path / "tiny.tar.gz", files)
    else:
        path = write_folder(tmp_path, files) / ("tiny-imagenet-200" if form == "inner-folder" else "")
    data = load_dataset(f"tinyimagenet:{path}")
    assert data.classes == ("goldfish", "tabby", "sports car")  # sorted wnids, first words.txt name
    assert data.meta["wnids"] == ("n01443537", "n02123045", "n04285008")
    assert data.train.images.shape == (12, 64, 64, 3) and data.test is None
    # file order kept; val_0 is the tabby (wnid index 1), val_1 goldfish, val_2 sports car
    assert data.train.labels[:3].tolist() == [1, 0, 2]
    assert np.abs(data.train.images[0].astype(int) - [20, 0, 200]).max() <= 3  # the JPEG's colour
    assert (data.train.images[5, ..., 0] == data.train.images[5, ..., 2]).all()  # grey image made RGB


def test_open_set_pool_excludes_classes_by_wnid_and_name(tmp_path):
    pool = write_tar(tmp_path / "tiny.tar.gz", fixture_files(per_class=20))
    cfg = DataConfig(spec="digits", noise="openset:0.01:1", ood=f"tinyimagenet:{pool}",
                     ood_exclude=["n02123045", "goldfish"])
    data = prepare_data(cfg)
    assert int(data.noisy.is_open_set.sum()) == open_set_counts(1257, 0.01, 1)[1] == 13  # digits: 1,257 images
    assert data.train.images.shape[1:] == (8, 8, 1)  # 64x64 RGB pool images fitted to the digits
    ood_rows = np.asarray(data.noisy.params["ood_rows"])
    assert set(ood_rows % 3) == {2}  # only the sports cars (every third file) were drawn
    with pytest.raises(ConfigError, match="has no class named 'n00000000'"):
        prepare_data(DataConfig(spec="digits", noise="openset:0.01:1", ood=f"tinyimagenet:{pool}",
                                ood_exclude=["n00000000"]))


@pytest.mark.parametrize("damage, message", [
    ("no-annotations", "no member tiny-imagenet-200/val/val_annotations.txt"),
    ("bad-line", "val/val_annotations.txt line 2: expected 'file<TAB>wnid<TAB>box...'"),
    ("bad-image", "val/images/val_3.JPEG: cannot read the image"),
])
def test_bad_archives_name_the_problem(tmp_path, damage, message):
    files = fixture_files()
    if damage == "no-annotations":
        del files["val/val_annotations.txt"]
    elif damage == "bad-line":
        lines = files["val/val_annotations.txt"].decode().splitlines()
        lines[1] = "val_1.JPEG"
        files["val/val_annotations.txt"] = "\n".join(lines).encode()
    else:
        files["val/images/val_3.JPEG"] = b"not a jpeg"
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load_dataset(f"tinyimagenet:{write_tar(tmp_path / 'tiny.tar.gz', files)}")
    with pytest.raises(DataError, match="no such folder or archive"):
        load_dataset(f"tinyimagenet:{tmp_path / 'absent'}")


@pytest.mark.skipif(not SHARED.is_file(), reason=f"Tiny ImageNet not found at {SHARED}")
def test_shared_copy_loads():
    data = load_dataset(f"tinyimagenet:{SHARED}")
    assert data.train.images.shape == (10_100, 64, 64, 3) and data.num_classes == 202
    counts = np.bincount(data.train.labels)
    assert counts.min() == counts.max() == 50  # 200 standard classes + the two extra ones, 50 images each
    assert "tabby" in data.classes and "n02123045" in data.meta["wnids"]

"""A frozen teacher from a finished run (MODUL's pre-trained teacher): rebuilt from the checkpoint, frozen, in eval
mode, re-normalising the student's batches, and a clear error for every way a teacher can be wrong."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from noisykd.config import load_config
from noisykd.data import Normalization, load_dataset
from noisykd.engine import train
from noisykd.errors import CheckpointError, ConfigError
from noisykd.predict import predict
from noisykd.teacher import load_teacher

DIGITS = load_dataset("digits")


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """A CE run on clean digits, 2 epochs: the teacher of these tests."""
    out = tmp_path_factory.mktemp("teacher") / "run"
    cfg = load_config(None, ["method=ce", "data.noise=none", "optim.epochs=2", f"out_dir={out}", "threads=1"])
    train(cfg, progress=False)
    return out


def _norm(run) -> Normalization:
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["normalization"]
    return Normalization(tuple(saved["mean"]), tuple(saved["std"]))


def _batch(norm: Normalization, images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (norm.mean, norm.std))
    return (x - mean) / std


def test_teacher_predicts_as_the_run_does_and_is_frozen(teacher_run):
    norm = _norm(teacher_run)
    teacher = load_teacher(teacher_run, classes=DIGITS.classes, image_shape=(8, 8, 1), normalization=norm)
    assert teacher.network == "net" and teacher.model == "small_cnn" and teacher.num_parameters > 1000
    assert not teacher.module.training and not any(m.training for m in teacher.module.modules())
    assert all(not p.requires_grad for p in teacher.module.parameters())
    images = DIGITS.test.images[:64]
    with torch.no_grad():
        probs = torch.softmax(teacher.module(_batch(norm, images)), 1).numpy()
    expected = predict(teacher_run, "digits").probs[-len(DIGITS.test):][:64]  # the test split comes after train
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    logits, features = teacher.module.forward_with_features(_batch(norm, images))
    assert logits.shape == (64, 10) and features.ndim == 2 and features.shape[0] == 64


def test_student_batches_are_renormalised_to_the_teachers_constants(teacher_run):
    own = _norm(teacher_run)
    student = Normalization((0.2,), (0.5,))
    images = DIGITS.test.images[:16]
    as_trained = load_teacher(teacher_run, classes=10, image_shape=(8, 8, 1), normalization=own)
    other = load_teacher(teacher_run, classes=10, image_shape=(8, 8, 1), normalization=student)
    with torch.no_grad():
        torch.testing.assert_close(other.module(_batch(student, images)), as_trained.module(_batch(own, images)),
                                   atol=1e-4, rtol=1e-4)
    assert as_trained.module.identity and not other.module.identity


def test_a_checkpoint_file_works_as_well_as_its_folder(teacher_run, tmp_path):
    teacher = load_teacher(teacher_run / "checkpoints" / "last.pt", classes=10, image_shape=(8, 8, 1),
                           normalization=_norm(teacher_run))
    assert teacher.checkpoint == teacher_run / "checkpoints" / "last.pt"
    best = load_teacher(teacher_run, best=True, classes=10, image_shape=(8, 8, 1), normalization=_norm(teacher_run))
    assert best.checkpoint == teacher_run / "checkpoints" / "best.pt"  # every run writes it now
    old = tmp_path / "old-run"  # a run of an earlier noisykd, without a noisy validation split, has none
    shutil.copytree(teacher_run, old)
    (old / "checkpoints" / "best.pt").unlink()
    with pytest.raises(CheckpointError, match="a folder without checkpoints/best.pt"):
        load_teacher(old, best=True, classes=10, image_shape=(8, 8, 1), normalization=_norm(teacher_run))


@pytest.mark.parametrize("change, message", [
    ({"classes": 7}, "was trained on 10 classes, this run has 7"),
    ({"classes": tuple("abcdefghij")}, "was trained on classes (0, 1, 2, 3, 4, ...; 10), this run has (a, b, c"),
    ({"image_shape": (32, 32, 3)}, "takes 8x8x1 images, this run's are 32x32x3"),
    ({"network": "a"}, "has no network 'a'; it holds ['net']"),
])
def test_a_mismatched_teacher_is_named(teacher_run, change, message):
    args = {"classes": DIGITS.classes, "image_shape": (8, 8, 1), "normalization": _norm(teacher_run), **change}
    with pytest.raises(ConfigError) as info:
        load_teacher(teacher_run, **args)
    assert message in str(info.value) and str(teacher_run) in str(info.value)


def test_missing_and_tampered_teachers(teacher_run, tmp_path):
    args = {"classes": 10, "image_shape": (8, 8, 1), "normalization": _norm(teacher_run)}
    with pytest.raises(CheckpointError, match="no such run folder or checkpoint file"):
        load_teacher(tmp_path / "nowhere", **args)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="a folder without checkpoints/last.pt"):
        load_teacher(tmp_path / "empty", **args)
    tampered = tmp_path / "tampered.pt"
    data = bytearray((teacher_run / "checkpoints" / "last.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="tampered.pt"):
        load_teacher(tampered, **args)


def test_a_run_of_several_networks_needs_the_name(tmp_path):
    out = tmp_path / "cmd"
    cfg = load_config(None, ["method=cmd", "optim.epochs=1", f"out_dir={out}", "threads=1"])
    train(cfg, progress=False)
    args = {"classes": 10, "image_shape": (8, 8, 1), "normalization": _norm(out)}
    with pytest.raises(ConfigError, match=r"holds the networks \['a', 'b'\]: name the one to use"):
        load_teacher(out, **args)
    assert load_teacher(out, network="b", **args).network == "b"

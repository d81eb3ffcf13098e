"""MODUL and DFND: the losses by hand, the universal-noise split on a synthetic three-mode sample, label
refinement, a MODUL run on digits with open-set noise (split report, detection, teacher untouched), bad input."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from noisykd.config import load_config
from noisykd.detect.universal import (CLEAN, CLOSED, OPEN, group_components, split_confusion,
                                      split_universal_noise)
from noisykd.engine import Trainer
from noisykd.errors import ConfigError, DataError
from noisykd.losses.contrastive import (class_prototypes, instance_contrastive_loss, prototypical_contrastive_loss,
                                        rotated_copies, rotation_loss, sl_loss)
from noisykd.methods.dfnd import NoiseAdaptation, small_loss_selection
from noisykd.methods.modul import MODULHeads

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_contract import contract_teacher  # noqa: E402  (one teacher run per session)

FASHION = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"


# --- losses -----------------------------------------------------------------------------------------------------

def test_sl_loss_by_hand():
    # logits (2, 0, -1): evidence (2, 0, 0), alpha (3, 1, 1), S = 5, p = (.6, .2, .2)
    logits = torch.tensor([[2.0, 0.0, -1.0], [2.0, 0.0, -1.0]])
    # label 0: (.4^2 + .2^2 + .2^2) + (3*2 + 1*4 + 1*4) / (25 * 6) = 0.24 + 14/150
    # label 1: (.6^2 + .8^2 + .2^2) + the same variance term = 1.04 + 14/150
    expected = torch.tensor([0.24 + 14 / 150, 1.04 + 14 / 150])
    torch.testing.assert_close(sl_loss(logits, torch.tensor([0, 1])), expected)
    # no evidence at all: p uniform, S = C: the largest loss a confident model never reaches
    flat = sl_loss(torch.full((1, 4), -3.0), torch.tensor([2]))
    assert flat.item() == pytest.approx((0.75 ** 2 + 3 * 0.25 ** 2) + 4 * 0.25 * 0.75 / 5)


def test_prototypes_are_normalised_class_means_and_an_empty_class_is_zero():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [0.6, 0.8]])
    protos = class_prototypes(z, torch.tensor([0, 0, 2, 2]), num_classes=3)
    s = math.sqrt(0.5)
    torch.testing.assert_close(protos, torch.tensor([[s, s], [0.0, 0.0], [0.6 / math.hypot(0.6, 0.2), -0.2 / math.hypot(0.6, 0.2)]]))


def test_prototypical_loss_and_its_mixup_form_by_hand():
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z = torch.tensor([[1.0, 0.0]])
    t = 0.5
    # logits z . proto / t = (2, 0): -log softmax = log(1 + e^-2) for class 0, log(1 + e^2) for class 1
    l0, l1 = math.log(1 + math.exp(-2)), math.log(1 + math.exp(2))
    assert prototypical_contrastive_loss(z, protos, torch.tensor([0]), t).item() == pytest.approx(l0, rel=1e-6)
    mixed = prototypical_contrastive_loss(z, protos, torch.tensor([0]), t, mixed_labels=torch.tensor([1]), lam=0.25)
    assert mixed.item() == pytest.approx(0.25 * l0 + 0.75 * l1, rel=1e-6)  # Eq. 15
    p = protos.clone().requires_grad_(True)
    prototypical_contrastive_loss(z.requires_grad_(True), p, torch.tensor([0]), t).backward()
    assert p.grad is None  # prototypes are constants


def test_instance_loss_is_eq_13():
    zs = F.normalize(torch.tensor([[1.0, 0.2], [0.1, 1.0], [-1.0, 0.3]]), dim=1)
    zt = F.normalize(torch.tensor([[0.9, 0.0], [0.0, 1.0], [-0.5, -0.5]]), dim=1)
    sim = zs @ zt.t()
    by_hand = [math.log(1 + sum(math.exp(sim[i, j] - sim[i, i]) for j in range(3) if j != i)) for i in range(3)]
    assert instance_contrastive_loss(zs, zt).item() == pytest.approx(sum(by_hand) / 3, rel=1e-6)
    assert instance_contrastive_loss(zs[:1], zt[:1]).item() == pytest.approx(0.0, abs=1e-7)  # no negatives: log 1


def test_rotated_copies_and_their_targets():
    image = torch.arange(4.0).view(1, 1, 2, 2)  # [[0, 1], [2, 3]]
    copies, targets = rotated_copies(torch.cat([image, image + 10]))
    assert targets.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert copies[0, 0].tolist() == [[0, 1], [2, 3]]
    assert copies[2, 0].tolist() == [[1, 3], [0, 2]]       # 90 degrees counter-clockwise
    assert copies[4, 0].tolist() == [[3, 2], [1, 0]]       # 180
    assert copies[6, 0].tolist() == [[2, 0], [3, 1]]       # 270
    logits = torch.zeros(8, 4)
    assert rotation_loss(logits, targets).item() == pytest.approx(math.log(4))
    with pytest.raises(ConfigError, match="square images"):
        rotated_copies(torch.zeros(1, 1, 2, 3))


def test_heads_adapt_widths_and_normalise_embeddings():
    heads = MODULHeads(student_dim=8, teacher_dim=12, projection_dim=5)
    adapted, zs, zt, rot = heads(torch.randn(6, 8), torch.randn(4, 12))
    assert adapted.shape == (6, 12) and zs.shape == (6, 5) and zt.shape == (4, 5) and rot.shape == (6, 4)
    torch.testing.assert_close(zs.norm(dim=1), torch.ones(6))
    assert isinstance(MODULHeads(8, 8, 5).adapter, torch.nn.Identity)


# --- the split ----------------------------------------------------------------------------------------------------

def test_split_recovers_three_modes():
    rng = np.random.default_rng(0)
    clean, open_set, closed = rng.normal(0.1, 0.03, 600), rng.normal(0.55, 0.05, 200), rng.normal(0.97, 0.01, 200)
    split = split_universal_noise(np.concatenate([clean, open_set, closed]) * 3.0 + 1.0)  # any scale: normalised
    truth = np.repeat([CLEAN, OPEN, CLOSED], [600, 200, 200])
    assert (split.group == truth).mean() > 0.97
    assert split.normalized.min() == 0 and split.normalized.max() == 1
    np.testing.assert_allclose(split.probabilities.sum(1), 1.0, atol=1e-9)
    assert set(split.sizes()) == {"clean", "closed", "open"} and sum(split.sizes().values()) == 1000
    again = split_universal_noise(np.concatenate([clean, open_set, closed]) * 3.0 + 1.0)
    assert np.array_equal(again.group, split.group)  # deterministic for a seed


def test_no_group_is_left_empty():
    # every component mean below 0.3 except the top: open and closed take the nearest components
    groups = group_components(np.array([0.0, 0.05, 0.1, 0.2, 0.25]))
    assert sorted(set(groups.tolist())) == [CLEAN, CLOSED, OPEN]
    assert groups.tolist()[-1] == CLOSED
    # two clear modes only (no open-set samples): the split still has a non-empty open group
    rng = np.random.default_rng(1)
    split = split_universal_noise(np.concatenate([rng.normal(0.05, 0.01, 300), rng.normal(0.95, 0.01, 100)]))
    assert min(split.sizes().values()) >= 1


def test_split_confusion_table():
    group = np.array([0, 0, 1, 2, 2])
    is_noisy = np.array([False, True, True, True, False])
    is_open = np.array([False, False, False, True, False])
    table = split_confusion(group, is_noisy, is_open)
    assert table.tolist() == [[1, 0, 1], [1, 1, 0], [0, 0, 1]]


def test_split_errors():
    with pytest.raises(DataError, match="needs at least as many samples"):
        split_universal_noise(np.arange(5.0))
    with pytest.raises(DataError, match="all 30 teacher scores equal"):
        split_universal_noise(np.ones(30))
    with pytest.raises(ConfigError, match="tau_min < tau_max"):
        split_universal_noise(np.arange(30.0), tau_min=0.9, tau_max=0.3)


# --- DFND pieces -----------------------------------------------------------------------------------------------

def test_noise_adaptation_starts_near_identity_and_stays_stochastic():
    layer = NoiseAdaptation(4, diagonal=0.7)
    q = layer.matrix()
    torch.testing.assert_close(q.diagonal(), torch.full((4,), 0.7))
    torch.testing.assert_close(q.sum(1), torch.ones(4))
    p = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(layer(p), q[:1])
    assert small_loss_selection(torch.tensor([3.0, 1.0, 2.0, 1.0, 5.0]), 0.5).tolist() == [False, True, True, True,
                                                                                            False]


# --- runs ------------------------------------------------------------------------------------------------------

def modul_run(tmp_path, *updates: str) -> Trainer:
    if not FASHION.is_dir():
        pytest.skip(f"Fashion-MNIST not found at {FASHION}")
    cfg = load_config(None, ["method=modul", f"method_args.teacher={contract_teacher()}", "optim.epochs=2",
                             f"out_dir={tmp_path / 'run'}", "data.noise=openset:0.5:0.5",
                             f"data.ood=fashion-mnist:{FASHION}", *updates])
    trainer = Trainer(cfg, progress=False)
    trainer.result = trainer.run()
    return trainer


def test_modul_run_splits_refines_and_reports(tmp_path):
    trainer = modul_run(tmp_path)
    method, store = trainer.method, trainer.store
    rows = method.ctx.train_indices
    group, target = store["modul_group"][rows], store["modul_target"][rows]
    assert set(group.tolist()) == {CLEAN, CLOSED, OPEN}
    noisy = np.load(tmp_path / "run" / "noisy_labels.npz")
    given = torch.from_numpy(noisy["labels"]).to(rows.device)[rows]
    teacher_labels = method._teacher_labels[rows]
    assert torch.equal(target[group == CLEAN], given[group == CLEAN])                 # kept
    assert torch.equal(target[group == CLOSED], teacher_labels[group == CLOSED])      # Eq. 6
    assert (target[group == OPEN] == -1).all()                                        # unlabelled
    assert not method.teacher.module.training
    assert all(p.grad is None and not p.requires_grad for p in method.teacher.module.parameters())
    out = tmp_path / "run"
    table = (out / "modul_split.csv").read_text().splitlines()
    assert table[0] == "group,samples,true_clean,true_closed,true_open,precision,recall" and len(table) == 4
    assert sum(int(line.split(",")[1]) for line in table[1:]) == len(rows)
    assert (out / "modul_split.png").stat().st_size > 10_000
    samples = np.load(out / "samples.npz")
    assert set(np.unique(samples["group"][rows.cpu().numpy()])) == {0, 1, 2}
    s = trainer.result.summary["method_summary"]
    assert sum(s["split"]["sizes"].values()) == len(rows) and s["prototypes"] == "every_epoch"
    row = trainer.result.history[-1]
    for name in ("loss_ce", "loss_kd", "loss_category", "loss_instance", "loss_rotation"):
        assert math.isfinite(row[f"train_{name}"])
    assert row["train_loss_rotation"] > 0 and 0 < row["train_labelled_share"] < 1
    assert 0 <= row["train_refined_label"] <= 1 and "test_acc_teacher" in row
    # noisykd detect on the run: both kinds of suspect ranked, each with its group; clean samples not flagged
    from typer.testing import CliRunner

    from noisykd.cli import app

    result = CliRunner().invoke(app, ["detect", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = (out / "label_issues-modul.csv").read_text().splitlines()
    assert lines[0].startswith("# detector modul: 20-component GMM on the teacher's normalised SL loss")
    ranked = [line.split(",") for line in lines[2:]]
    groups = {(r[8], r[9]) for r in ranked}
    assert groups == {("0", "0"), ("1", "1"), ("2", "1")}
    scores = [float(r[7]) for r in ranked]
    assert scores == sorted(scores, reverse=True) and len(ranked) == len(rows)


def test_modul_prototypes_once_are_kept_and_the_ablation_drops_terms(tmp_path):
    trainer = modul_run(tmp_path, "method_args.prototypes=once", "method_args.instance=false", "method_args.gamma=0")
    method = trainer.method
    first = method._compute_prototypes()
    assert not torch.allclose(first, method.prototypes)  # the heads trained since: once means the initial ones
    assert trainer.result.summary["method_summary"]["instance"] is False


@pytest.mark.parametrize("method", ["modul", "dfnd"])
def test_teacher_with_another_class_count_is_one_line(train_cli_error, tmp_path, method):
    from sklearn.datasets import load_digits

    digits = load_digits()
    five = digits.target < 5  # a 5-class set of the same 8 x 8 images
    images = (digits.images[five] * 16).clip(0, 255).astype(np.uint8)
    np.savez(tmp_path / "five.npz", x_train=images, y_train=digits.target[five])
    other = tmp_path / "teacher5"
    Trainer(load_config(None, ["method=ce", "data.noise=none", "optim.epochs=1", f"out_dir={other}",
                               f"data.spec=npz:{tmp_path / 'five.npz'}", "data.val_fraction=0"]), progress=False).run()
    line = train_cli_error(method, f"method_args.teacher={other}")
    assert "was trained on 5 classes, this run has 10" in line


@pytest.mark.parametrize("setting, message", [
    ("method_args.alpha=1.5", "method_args.alpha must lie in [0, 1]"),
    ("method_args.tau_min=0.95", "tau_min < tau_max"),
    ("method_args.components=2", "method_args.components must be >= 3"),
    ("method_args.prototypes=never", "prototypes"),
    ("method_args.beta=0.1", "method_args.teacher is required"),
])
def test_modul_bad_arguments_are_one_line(train_cli_error, setting, message):
    assert message in train_cli_error("modul", setting)


@pytest.mark.parametrize("setting, message", [
    ("method_args.keep_ratio=0", "method_args.keep_ratio must lie in (0, 1]"),
    ("method_args.transition_init=1", "method_args.transition_init must lie in (0, 1)"),
])
def test_dfnd_bad_arguments_are_one_line(train_cli_error, setting, message):
    assert message in train_cli_error("dfnd", setting)


def test_dfnd_run_keeps_the_half_the_teacher_is_surest_of(tmp_path):
    if not FASHION.is_dir():
        pytest.skip(f"Fashion-MNIST not found at {FASHION}")
    cfg = load_config(None, ["method=dfnd", f"method_args.teacher={contract_teacher()}", "optim.epochs=2",
                             f"out_dir={tmp_path / 'run'}", "data.noise=openset:0.5:0.5",
                             f"data.ood=fashion-mnist:{FASHION}"])
    trainer = Trainer(cfg, progress=False)
    result = trainer.run()
    rows = trainer.method.ctx.train_indices
    kept, loss = trainer.store["dfnd_kept"][rows], trainer.store["dfnd_teacher_loss"][rows]
    assert int(kept.sum()) == math.ceil(0.5 * len(rows))
    assert loss[kept].max() <= loss[~kept].min()  # the teacher's surest half
    samples = np.load(tmp_path / "run" / "samples.npz")
    assert samples["kept"][rows.cpu().numpy()].sum() == int(kept.sum())
    s = result.summary["method_summary"]
    assert 0 < s["noise_adaptation_diagonal_mean"] < 1 and s["keep_ratio"] == 0.5
    row = result.history[-1]
    assert 0.3 < row["train_kept_share"] < 0.7 and 0 <= row["train_pseudo_label_agrees_with_given"] <= 1


def test_modul_distils_across_architectures_through_the_adapter(tmp_path):
    """A small_cnn teacher (128 features) into an MLP student (256): the adapter maps the widths; the run trains."""
    trainer = modul_run(tmp_path, "optim.epochs=1", "model.name=mlp")
    heads = trainer.method.heads.module
    assert isinstance(heads.adapter, torch.nn.Linear)
    assert (heads.adapter.in_features, heads.adapter.out_features) == (256, 128)
    assert math.isfinite(trainer.result.history[-1]["train_loss_kd"])

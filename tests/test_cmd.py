"""CMD and self label correction: every equation against hand-computed values, the method's losses on a tiny
batch, the stop-gradients, the degenerate thresholds, whole runs on digits and the argument errors."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from noisykd.config import load_config
from noisykd.engine import Trainer
from noisykd.engine.checkpoint import load_checkpoint
from noisykd.errors import ConfigError
from noisykd.losses.selfkd import (confidence_penalty_target, confident_mask, distillation_loss, entropy,
                                   label_smoothing_target, logistic, mconf_global_trust, mean_certainty,
                                   normalized_entropy, proselflc_global_trust, refined_target, selection_threshold,
                                   self_trust, target_cross_entropy)
from noisykd.methods import Batch, MethodContext, Progress, Views, parse_method_args
from noisykd.methods.cmd import MutualConfidentDistillation
from noisykd.methods.selfkd import SelfCorrection
from tiny_nets import Scaled  # tests/tiny_nets.py (pytest puts tests/ on sys.path)

LN10 = math.log(10)


def log_probs_of(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64).log()


# ------------------------------------------------------------------------------------------------------------
# Eqs. 5, 6, 12 and Table 2, by hand

def test_logistic_by_hand():
    assert logistic(0.0, 6) == 0.5 and logistic(3.0, 0) == 0.5
    assert logistic(0.5, 6) == pytest.approx(1 / (1 + math.exp(-3)))          # 0.952574
    assert logistic(-0.5, 6) == pytest.approx(0.0474259, abs=1e-7)
    assert logistic(-1e6, 1) == 0.0 and logistic(1e6, 1) == 1.0                 # no overflow


def test_proselflc_global_trust_schedule_by_hand():
    """g(t) = h(t/Gamma - 0.5, b1): 0.5 at the transit point, rising with t."""
    assert proselflc_global_trust(500, 1000, b1=6) == 0.5
    assert proselflc_global_trust(750, 1000, b1=6) == pytest.approx(1 / (1 + math.exp(-1.5)))   # 0.817574
    assert proselflc_global_trust(0, 1000, b1=6) == pytest.approx(1 / (1 + math.exp(3)))        # 0.047426
    assert proselflc_global_trust(300, 1000, b1=6, transit=0.3) == 0.5


def test_entropy_and_self_trust_by_hand():
    # p = (0.7, 0.1, 0.1, 0.1): H = -(0.7 ln 0.7 + 0.3 ln 0.1) = 0.940448; H/ln 4 = 0.678390
    log_p = log_probs_of([0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(entropy(log_p).numpy(), [0.940448, math.log(4), 0.0], atol=1e-6)
    np.testing.assert_allclose(normalized_entropy(log_p).numpy(), [0.678390, 1.0, 0.0], atol=1e-6)
    # eps = g * (1 - H/H(u)) with g = 0.8: confident predictions are trusted, the uniform one not at all
    np.testing.assert_allclose(self_trust(0.8, log_p).numpy(), [0.8 * 0.321610, 0.0, 0.8], atol=1e-6)


def test_mconf_certainty_and_trust_by_hand():
    """r = 1 - mean normalised entropy; g(r) = h(r - rho, b1)."""
    assert mean_certainty(0.3) == pytest.approx(0.7)
    assert mconf_global_trust(0.7, rho=0.5, b1=6) == pytest.approx(1 / (1 + math.exp(-1.2)))  # 0.768525
    assert mconf_global_trust(0.5, rho=0.5, b1=6) == 0.5


def test_refined_labels_of_table2_by_hand():
    labels = torch.tensor([0, 2])
    p = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]], dtype=torch.float64)
    # (1 - eps) q + eps p, eps per sample
    np.testing.assert_allclose(refined_target(labels, p, torch.tensor([0.5, 0.25], dtype=torch.float64)).numpy(),
                               [[0.8, 0.15, 0.05], [0.05, 0.05, 0.9]])
    # LS: (1 - eps) q + eps / C
    np.testing.assert_allclose(label_smoothing_target(labels, 3, 0.3, torch.float64).numpy(),
                               [[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]])
    # CP: (1 - eps) q - eps p
    np.testing.assert_allclose(confidence_penalty_target(labels, p, 0.5).numpy(),
                               [[0.2, -0.15, -0.05], [-0.1, -0.1, 0.2]])


def test_confidence_penalty_target_gives_ce_minus_entropy():
    """H(q~_CP, p) = (1 - eps) CE - eps H(p), with the entropy's gradient kept."""
    logits = torch.tensor([[1.0, 0.2, -0.5], [0.0, 0.3, 0.1]], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 2])
    log_p = torch.log_softmax(logits, 1)
    loss = target_cross_entropy(confidence_penalty_target(labels, log_p.exp(), 0.25), log_p)
    expected = 0.75 * -log_p[[0, 1], labels] - 0.25 * entropy(log_p)
    torch.testing.assert_close(loss, expected)
    loss.sum().backward()
    grad_with_penalty = logits.grad.clone()
    logits.grad = None
    (0.75 * -torch.log_softmax(logits, 1)[[0, 1], labels]).sum().backward()
    assert not torch.allclose(grad_with_penalty, logits.grad)   # the penalty has a gradient


def test_selection_threshold_eq12_by_hand():
    # CMD-S (b2 = 0): H(u)/eta at every epoch
    assert all(selection_threshold(e, 10, 10, eta=2, b2=0) == pytest.approx(LN10 / 2) for e in range(10))
    # CMD-P (b2 = -5), Gamma = 10 epochs: ln10/2 * 2 h(t/10 - 0.5, -5)
    assert selection_threshold(0, 10, 10, eta=2, b2=-5) == pytest.approx(LN10 / (1 + math.exp(-2.5)))  # 2.127914
    assert selection_threshold(5, 10, 10, eta=2, b2=-5) == pytest.approx(LN10 / 2)
    assert selection_threshold(9, 10, 10, eta=2, b2=-5) == pytest.approx(LN10 / (1 + math.exp(2)))    # 0.274475
    # b2 > 0: the threshold rises
    assert selection_threshold(9, 10, 10, eta=2, b2=5) > selection_threshold(0, 10, 10, eta=2, b2=5)


def test_selection_mask_by_hand():
    # H(0.9, 0.1) = 0.325083, H(0.6, 0.4) = 0.673012, H(0.5, 0.5) = ln 2 = 0.693147
    log_p = log_probs_of([0.9, 0.1], [0.6, 0.4], [0.5, 0.5])
    assert confident_mask(log_p, 0.5).tolist() == [True, False, False]
    assert confident_mask(log_p, 0.68).tolist() == [True, True, False]
    h_first = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert confident_mask(log_p, h_first).tolist() == [False, False, False]     # strict: H < chi


def test_degenerate_thresholds():
    """eta <= 1 with b2 = 0: chi >= H(u) selects every prediction but the exactly uniform one (all knowledge,
    SyncMKD); chi <= 0 (eta < 0) selects none, not even a one-hot prediction (zero knowledge)."""
    log_p = torch.log_softmax(torch.randn(200, 10, generator=torch.Generator().manual_seed(0)) * 3, 1)
    chi_eta1 = selection_threshold(3, 10, 10, eta=1.0, b2=0)
    assert chi_eta1 == pytest.approx(LN10) and confident_mask(log_p, chi_eta1).all()
    assert confident_mask(log_p, selection_threshold(3, 10, 10, eta=0.5, b2=0)).all()
    one_hot_ish = log_probs_of([1.0, 0.0, 0.0], [0.98, 0.01, 0.01])
    for eta in (-1.0, -0.5):
        chi = selection_threshold(3, 10, 3, eta=eta, b2=0)
        assert chi <= 0 and not confident_mask(one_hot_ish, chi).any()
    assert not confident_mask(one_hot_ish, 0.0).any()


def test_distillation_term_sums_selected_and_divides_by_the_batch():
    """Appendix C: sum over the selected samples of H(q~_B, p_A), divided by B (not by the number selected)."""
    target_b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], requires_grad=True)
    log_p_a = log_probs_of([0.8, 0.2], [0.3, 0.7], [0.5, 0.5]).float().requires_grad_()
    selected = torch.tensor([True, False, True])
    loss = distillation_loss(target_b, log_p_a, selected)
    assert loss.item() == pytest.approx((-math.log(0.8) + math.log(2)) / 3)
    loss.backward()
    assert target_b.grad is None                       # the peer's label is detached: no gradient reaches it
    assert log_p_a.grad[1].abs().sum() == 0 and log_p_a.grad[0].abs().sum() > 0   # unselected: no gradient
    assert distillation_loss(target_b, log_p_a, torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_self_target_detach_gives_p_minus_target_gradient():
    """Default: p inside q~ is detached, so d H(q~, p)/d logits = p - q~. detach_target=False adds the gradient
    through q~ (ProSelfLC's older code)."""
    logits = torch.tensor([[2.0, 0.5, -1.0]], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([1])
    progress = Progress(epoch=0, step=80, step_in_epoch=0, steps_per_epoch=10, total_epochs=10)
    grads = {}
    for detach in (True, False):
        logits.grad = None
        correction = SelfCorrection("proselflc", 3, detach_target=detach)
        log_p = torch.log_softmax(logits, 1)
        target, eps = correction.target(labels, log_p, progress)
        target_cross_entropy(target, log_p).sum().backward()
        grads[detach] = logits.grad.clone()
        if detach:
            torch.testing.assert_close(grads[detach], (log_p.exp() - target).detach())
            # eps = h(0.8 - 0.5, 6) * (1 - H(p)/ln 3)
            expected_eps = logistic(0.3, 6) * (1 - normalized_entropy(log_p.detach()))
            torch.testing.assert_close(eps, expected_eps)
    assert not torch.allclose(grads[True], grads[False])


# ------------------------------------------------------------------------------------------------------------
# the method's losses on a tiny batch



def tiny_cmd(weights=(1.0, 2.0), **args) -> MutualConfidentDistillation:
    """CMD on C = 3 classes, 10 epochs of 5 steps, whose models output w_A * x and w_B * x."""
    built = iter(weights)
    ctx = MethodContext(num_classes=3, num_samples=4, train_indices=torch.arange(4), image_shape=(1, 1, 3),
                        normalization=None, device=torch.device("cpu"), store=None, generator=torch.Generator(),
                        build_model=lambda name=None, **kw: Scaled(next(built)), iterate_train=lambda: iter(()),
                        total_epochs=10, steps_per_epoch=5)
    return MutualConfidentDistillation(ctx, parse_method_args("cmd", args, 10))


X = torch.tensor([[2.0, 0.0, -1.0], [0.1, 0.0, 0.2], [0.0, 1.5, 0.0], [-0.5, 0.0, 0.4]])
Y = torch.tensor([0, 0, 1, 2])


def step(method, epoch=3, step_in_epoch=2):
    progress = Progress(epoch=epoch, step=epoch * 5 + step_in_epoch, step_in_epoch=step_in_epoch,
                        steps_per_epoch=5, total_epochs=10)
    return method.training_step(Batch(torch.arange(4), Y, Views({"train": X}), progress))


def test_cmd_all_knowledge_with_ce_doubles_each_cross_entropy():
    """self_kd=ce: q~ = q, so with every sample selected L_A = H(q, p_A) + H(q, p_A) = 2 CE_A (Eq. 10)."""
    out = step(tiny_cmd(self_kd="ce", knowledge="all"))
    ce = lambda w: -torch.log_softmax(w * X, 1)[torch.arange(4), Y].mean()
    torch.testing.assert_close(out.loss, 2 * ce(1.0) + 2 * ce(2.0))
    assert out.metrics["selected_b2a"].tolist() == [1.0] * 4


def test_cmd_losses_of_a_and_b_on_a_tiny_batch():
    """CMD-S with Boot-soft (eps = 0.05): Eqs. 8-11 written out with numpy."""
    method = tiny_cmd(self_kd="boot", knowledge="static", eta=2.0)
    out = step(method)
    chi = math.log(3) / 2
    x = X.double().numpy()
    p = {w: np.exp(w * x) / np.exp(w * x).sum(1, keepdims=True) for w in (1.0, 2.0)}
    q = np.eye(3)[Y.numpy()]
    target = {w: 0.95 * q + 0.05 * p[w] for w in p}
    h = {w: -(p[w] * np.log(p[w])).sum(1) for w in p}
    ce = lambda t, w: -(t * np.log(p[w])).sum(1)
    loss_a = ce(target[1.0], 1.0).mean() + (ce(target[2.0], 1.0) * (h[2.0] < chi)).sum() / 4
    loss_b = ce(target[2.0], 2.0).mean() + (ce(target[1.0], 2.0) * (h[1.0] < chi)).sum() / 4
    assert 0 < (h[2.0] < chi).sum() < 4 and 0 < (h[1.0] < chi).sum() < 4   # the mask matters in this batch
    assert out.loss.item() == pytest.approx(loss_a + loss_b, rel=1e-6)
    assert out.metrics["loss_a"].item() == pytest.approx(loss_a, rel=1e-6)
    assert out.metrics["loss_b"].item() == pytest.approx(loss_b, rel=1e-6)
    assert out.metrics["selected_b2a"].tolist() == (h[2.0] < chi).astype(float).tolist()
    assert out.metrics["chi"] == pytest.approx(chi)
    # the engine scores the peer's arg-max on the selected samples
    assert out.checks["selected_right_b2a"].predicted.tolist() == p[2.0].argmax(1).tolist()


def test_cmd_peer_target_is_detached():
    """No gradient of A's distillation term reaches B: with B's own loss removed (weights chosen so that B is
    the only confident one), dL/dw_B equals the gradient of B's own terms alone."""
    method = tiny_cmd(self_kd="boot", knowledge="all")
    out = step(method)
    out.loss.backward()
    grad_b = method.net_b.module.w.grad.clone()
    # B's own terms: its self loss and the distillation of A's (detached) label into B
    method.net_b.module.w.grad = None
    log_p_a = torch.log_softmax(1.0 * X, 1).detach()
    log_p_b = torch.log_softmax(method.net_b.module.w * X, 1)
    t_b = 0.95 * torch.eye(3)[Y] + 0.05 * log_p_b.exp().detach()
    t_a = 0.95 * torch.eye(3)[Y] + 0.05 * log_p_a.exp()
    (target_cross_entropy(t_b, log_p_b).mean() + target_cross_entropy(t_a, log_p_b).mean()).backward()
    torch.testing.assert_close(grad_b, method.net_b.module.w.grad)


def test_cmd_zero_knowledge_models_are_independent():
    """knowledge=zero: A's gradient does not depend on B's weights, nor B's on A's."""
    grads = []
    for weights in ((1.0, 2.0), (1.0, -3.0), (0.5, 2.0)):
        method = tiny_cmd(weights, self_kd="ce", knowledge="zero")
        step(method).loss.backward()
        grads.append((method.net_a.module.w.grad.item(), method.net_b.module.w.grad.item()))
    assert grads[0][0] == grads[1][0] and grads[0][1] != grads[1][1]
    assert grads[0][1] == grads[2][1] and grads[0][0] != grads[2][0]


def test_cmd_kdcl_distils_the_ensemble_on_every_sample():
    method = tiny_cmd(self_kd="ce", knowledge="kdcl")
    out = step(method)
    log_p_a, log_p_b = torch.log_softmax(X, 1), torch.log_softmax(2 * X, 1)
    ensemble = (log_p_a.exp() + log_p_b.exp()) / 2
    ce = lambda log_p: -log_p[torch.arange(4), Y].mean()
    expected = ce(log_p_a) + ce(log_p_b) + target_cross_entropy(ensemble, log_p_a).mean() \
        + target_cross_entropy(ensemble, log_p_b).mean()
    torch.testing.assert_close(out.loss, expected)


def test_mconf_uses_the_previous_epochs_certainty():
    method = tiny_cmd(self_kd="mconf")
    assert method.correction["a"].global_trust(None) == pytest.approx(mconf_global_trust(0.0, 0.5, 6))
    method.on_epoch_end(0, {"loss": 1.0, "norm_entropy_a": 0.2, "norm_entropy_b": 0.6})
    assert method.correction["a"].certainty == pytest.approx(0.8)
    assert method.correction["b"].certainty == pytest.approx(0.4)
    eps = step(method).metrics["epsilon_a"]
    torch.testing.assert_close(eps, mconf_global_trust(0.8, 0.5, 6) * (1 - normalized_entropy(torch.log_softmax(X, 1))))
    restored = tiny_cmd(self_kd="mconf")
    restored.load_state_dict(method.state_dict())
    assert restored.correction["b"].certainty == pytest.approx(0.4)


# ------------------------------------------------------------------------------------------------------------
# whole runs on digits

def cmd_config(out_dir, method="cmd", epochs=8, **method_args) -> dict:
    return load_config("digits/sym40", updates={
        "method": method, "method_args": method_args, "out_dir": str(out_dir),
        "optim": {"epochs": epochs}}).to_dict()


def run(cfg: dict, **kw):
    return Trainer(load_config(base=cfg), progress=False).run(**kw)


@pytest.fixture(scope="module")
def cmd_run(tmp_path_factory):
    return run(cmd_config(tmp_path_factory.mktemp("cmd") / "run"))


def test_cmd_run_reports_both_models_their_mean_and_the_selection(cmd_run):
    history = cmd_run.history
    for row in history:
        assert row["test_acc"] == pytest.approx((row["test_acc_a"] + row["test_acc_b"]) / 2)
        assert {"test_acc_ensemble", "val_acc", "train_epsilon_a", "train_epsilon_b"} <= set(row)
        assert 0 <= row["train_selected_b2a"] <= 1 and 0 <= row["train_selected_a2b"] <= 1
    # chi per epoch is Eq. 12 with the defaults (eta = 2, b2 = -5) over the 8 epochs
    assert [r["train_chi"] for r in history] == pytest.approx(
        [selection_threshold(e, 8, 10, 2.0, -5.0) for e in range(8)])
    # ProSelfLC's trust grows with time
    eps = [r["train_epsilon_a"] for r in history]
    assert eps[-1] > eps[0]
    # the paper's argument: confident peer knowledge is mostly right (here well above the 60% of the labels)
    late = [r["train_selected_right_b2a"] for r in history[2:] if r["train_selected_right_b2a"] is not None]
    assert late and min(late) > 0.8
    assert (cmd_run.out_dir / "cmd_selection.png").is_file()
    detection = cmd_run.summary["detection"]
    assert detection["detector"] == "cmd" and detection["f1"] > 0.5
    samples = np.load(cmd_run.out_dir / "samples.npz")
    rows = samples["in_train"] == 1
    np.testing.assert_allclose(samples["noise_score"][rows],
                               1 - (samples["p_given_a"][rows] + samples["p_given_b"][rows]) / 2, rtol=1e-5)


def test_cmd_zero_knowledge_model_a_is_a_ce_run(tmp_path):
    """knowledge=zero, self_kd=ce: model A follows exactly the trajectory of a CE run of the same seed (A is
    built first, from the same seed; B never touches it)."""
    cmd = run(cmd_config(tmp_path / "cmd", epochs=5, self_kd="ce", knowledge="zero"))
    ce = run(cmd_config(tmp_path / "ce", method="ce", epochs=5))
    assert [r["test_acc_a"] for r in cmd.history] == [r["test_acc"] for r in ce.history]
    assert [r["train_selected_b2a"] for r in cmd.history] == [0.0] * 5


def test_single_network_proselflc_and_mconf_train(tmp_path):
    for method in ("proselflc", "mconf"):
        result = run(cmd_config(tmp_path / method, method=method, epochs=4))
        eps = [r["train_epsilon"] for r in result.history]
        assert all(0 <= e <= 1 for e in eps) and eps[-1] > eps[0], (method, eps)
        assert result.history[-1]["test_acc"] > 0.5


def test_cmd_with_two_architectures(tmp_path):
    """Table 6: B may be another network (here an MLP next to A's small_cnn)."""
    result = run(cmd_config(tmp_path / "run", epochs=2, model_b="mlp"))
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["networks"]
    assert any("conv" in k or "stages" in k for k in state["a"]) and not any("stages" in k for k in state["b"])
    assert result.summary["method_summary"]["model_b"] == "mlp"


KILLER = """
import os, signal, sys, yaml
from noisykd.config import load_config
from noisykd.engine import Trainer
cfg = load_config(base=yaml.safe_load(open(sys.argv[1])))
def on_step(trainer, epoch, step):
    if epoch == 2 and step == 5:
        os.kill(os.getpid(), signal.SIGKILL)
Trainer(cfg, progress=False, on_step=on_step).run()
"""


def test_cmd_mconf_resumes_exactly_after_sigkill(tmp_path):
    """Mconf's certainty r lives in the method's state: a run killed mid-epoch 3 ends exactly as the reference."""
    cfg = cmd_config(tmp_path / "ref", epochs=4, self_kd="mconf")
    reference = run(cfg)
    killed = {**cfg, "out_dir": str(tmp_path / "killed")}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(killed))
    (tmp_path / "killer.py").write_text(KILLER)
    proc = subprocess.run([sys.executable, str(tmp_path / "killer.py"), str(tmp_path / "cfg.yaml")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    resumed = run(killed, resume=True)
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("img_per_s", "epoch_time_s")} for r in h]
    assert strip(resumed.history) == strip(reference.history)
    assert resumed.summary["method_summary"]["mconf_certainty_a"] == \
        reference.summary["method_summary"]["mconf_certainty_a"]


# ------------------------------------------------------------------------------------------------------------
# argument errors

@pytest.mark.parametrize("bad, message", [
    ({"self_kd": "magic"}, r"method_args.self_kd must be one of ce, ls, cp, boot, proselflc, mconf; got 'magic'"),
    ({"knowledge": "some"}, r"method_args.knowledge must be one of zero, all, static, progressive, kdcl; got 'some'"),
    ({"b1": -1}, r"method_args.b1 must be >= 0"),
    ({"eta": 0}, r"method_args.eta must be > 0"),
    ({"eta": -2}, r"method_args.eta must be > 0"),
    ({"b2": 0}, r"method_args.b2 must be != 0 for knowledge=progressive"),
    ({"model_b": "resnet9000"}, r"method_args.model_b must be one of .*small_cnn.*; got 'resnet9000'"),
    ({"epsilon": 0.2}, r"method_args.epsilon is the fixed eps of self_kd ls, cp or boot"),
    ({"self_kd": "ls", "epsilon": 1.5}, r"method_args.epsilon must lie in \[0, 1\]"),
])
def test_cmd_argument_errors(bad, message):
    with pytest.raises(ConfigError, match=message):
        parse_method_args("cmd", bad, 10)


@pytest.mark.parametrize("setting, message", [
    ("method_args.self_kd=magic", "method_args.self_kd must be one of ce, ls, cp, boot, proselflc, mconf; got 'magic'"),
    ("method_args.model_b=resnet9000", "method_args.model_b must be one of "),
])
def test_cmd_bad_argument_is_one_line_on_the_command_line(train_cli_error, setting, message):
    assert message in train_cli_error("cmd", setting)

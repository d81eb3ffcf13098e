"""Fidelity to the authors' code (issue 25), each behind an option whose default is the paper's semantics:
ProSelfLC / Mconf / CMD's ln(p + 1e-6) (``log_eps``) against hand-computed values and gradients, and GJS's
symmetric noise with exactly ceil(R N) labels redrawn among all classes (``sym-all-exact:R``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from noisykd.config import load_config
from noisykd.errors import ConfigError, DataError
from noisykd.losses.selfkd import (check_log_eps, confident_mask, distillation_loss, entropy, log_of_probs,
                                   logistic, target_cross_entropy)
from noisykd.methods import Batch, MethodContext, Progress, Views, parse_method_args
from noisykd.methods.cmd import MutualConfidentDistillation
from noisykd.methods.selfkd import ProSelfLC
from noisykd.noise import make_noise, symmetric
from noisykd.noise.synthetic import exact_count
from tiny_nets import Scaled  # tests/tiny_nets.py (pytest puts tests/ on sys.path)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# p = (1e-6, a, a) over C = 3 classes, given label 0: a noisy sample whose given label the model rejects.
A = (1 - 1e-6) / 2
LOGITS = [math.log(1e-6), math.log(A), math.log(A)]


def _logits(*rows, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(rows, dtype=dtype, requires_grad=True)


# ------------------------------------------------------------------------------------------------------------
# the loss functions: value and gradient at a given-label probability of 1e-6 (and 1e-8)

def test_cross_entropy_at_p_1e6_exact_and_official_log():
    """-ln p_y = 13.8155 (exact) vs -ln(p_y + 1e-6) = -ln(2e-6) = 13.1224; the gradient on the logit of y is
    -(1 - p_y) = -0.999999 exact and p_y / (p_y + 1e-6) = 1/2 of it with the official eps: -0.4999995; on the other
    logits p_j = 0.4999995 exact, 0.24999975 official."""
    onehot = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    expected = {None: (13.815510557964274, [-0.999999, 0.4999995, 0.4999995]),
                1e-6: (13.122363377404328, [-0.4999995, 0.24999975, 0.24999975])}
    for log_eps, (value, grad) in expected.items():
        logits = _logits(LOGITS)
        loss = target_cross_entropy(onehot, torch.log_softmax(logits, 1), log_eps).sum()
        loss.backward()
        assert loss.item() == pytest.approx(value, rel=1e-12)
        assert logits.grad[0].tolist() == pytest.approx(grad, rel=1e-9)
        # the distillation term (appendix C) with every sample selected is the same cross-entropy here
        logits.grad = None
        distillation_loss(onehot, torch.log_softmax(logits, 1), torch.tensor([True]), log_eps).backward()
        assert logits.grad[0].tolist() == pytest.approx(grad, rel=1e-9)


def test_official_log_at_p_1e8_is_a_hundredth_of_the_gradient():
    """p_y = 1e-8, eps = 1e-6: -ln(1.01e-6) = 13.80556 instead of -ln(1e-8) = 18.42068, and the gradient on the
    logit of y is p_y / (p_y + eps) = 1/101 of the exact -(1 - 1e-8): -0.00990099."""
    b = (1 - 1e-8) / 2
    onehot = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    for log_eps, value, grad_y in ((None, 18.420680743952367, -(1 - 1e-8)),
                                   (1e-6, 13.805560227111107, -0.00990099)):
        logits = _logits([math.log(1e-8), math.log(b), math.log(b)])
        loss = target_cross_entropy(onehot, torch.log_softmax(logits, 1), log_eps).sum()
        loss.backward()
        assert loss.item() == pytest.approx(value, rel=1e-12)
        assert logits.grad[0, 0].item() == pytest.approx(grad_y, rel=1e-9)


def test_log_eps_zero_or_none_is_the_exact_log_and_bad_values_are_refused():
    log_p = torch.log_softmax(torch.tensor([[30.0, 0.0, -30.0]], dtype=torch.float64), 1)
    assert log_of_probs(log_p, None) is log_p and log_of_probs(log_p, 0.0) is log_p   # no exp/log round trip
    assert torch.isfinite(log_of_probs(log_p, 1e-6)).all()
    assert log_of_probs(log_p, 1e-6)[0, 2].item() == pytest.approx(math.log(1e-6), rel=1e-9)  # p ~ 9e-27
    for bad in (-1e-6, math.nan, math.inf, True, "1e-6"):
        with pytest.raises(ConfigError, match="log_eps must be None"):
            check_log_eps(bad)


def test_selection_entropy_with_the_appendix_log():
    """Appendix C: hp = sum(-p * log(p + 1e-6)). For p = (1e-6, a, a): exact H = 0.6931553 (about ln 2), with
    eps H is smaller by 1e-6 ln 2 + 2a ln((a + 1e-6)/a) = 2.693e-6; a chi between the two selects the sample
    only under the appendix's entropy."""
    log_p = torch.log_softmax(torch.tensor([LOGITS], dtype=torch.float64), 1)
    exact = -(1e-6 * math.log(1e-6) + 2 * A * math.log(A))
    official = -(1e-6 * math.log(2e-6) + 2 * A * math.log(A + 1e-6))
    assert exact - official == pytest.approx(1e-6 * math.log(2) + 2 * A * math.log((A + 1e-6) / A), rel=1e-6)
    assert entropy(log_p).item() == pytest.approx(exact, rel=1e-12)
    assert entropy(log_p, 1e-6).item() == pytest.approx(official, rel=1e-12)
    chi = (exact + official) / 2
    assert confident_mask(log_p, chi).tolist() == [False]
    assert confident_mask(log_p, chi, 1e-6).tolist() == [True]


# ------------------------------------------------------------------------------------------------------------
# the methods

def _ctx(weights, total_epochs=10, steps_per_epoch=5) -> MethodContext:
    built = iter(weights)
    return MethodContext(num_classes=3, num_samples=2, train_indices=torch.arange(2), image_shape=(1, 1, 3),
                         normalization=None, device=torch.device("cpu"), store=None, generator=torch.Generator(),
                         build_model=lambda name=None, **kw: Scaled(next(built)), iterate_train=lambda: iter(()),
                         total_epochs=total_epochs, steps_per_epoch=steps_per_epoch)


def _batch(x, y, epoch=0, step_in_epoch=0) -> Batch:
    progress = Progress(epoch=epoch, step=epoch * 5 + step_in_epoch, step_in_epoch=step_in_epoch,
                        steps_per_epoch=5, total_epochs=10)
    return Batch(torch.arange(len(y)), y, Views({"train": x}), progress)


def test_proselflc_method_log_eps_value_and_gradient_by_hand():
    """ProSelfLC at step 0 of 50: g = h(-0.5, 6) = 1/(1 + e^3); eps = g (1 - H(p)/ln 3); q~ = (1 - eps) q + eps p
    (p detached). Loss -sum_k q~_k ln(p_k + e) and d/dz_j = -sum_k q~_k p_k/(p_k + e) (delta_kj - p_j), written
    out in floats: at p_y = 1e-6 the official eps halves the gradient on the given label's logit."""
    x, y = torch.tensor([LOGITS]), torch.tensor([0])
    p = [1e-6, A, A]
    h = -sum(pk * math.log(pk) for pk in p)
    eps = logistic(-0.5, 6) * (1 - h / math.log(3))
    assert logistic(-0.5, 6) == pytest.approx(1 / (1 + math.exp(3)))
    target = [(1 - eps) * (k == 0) + eps * p[k] for k in range(3)]
    grads = {}
    for log_eps in (None, 1e-6):
        e = log_eps or 0.0
        method = ProSelfLC(_ctx([1.0]), parse_method_args("proselflc", {"log_eps": log_eps}, 10))
        out = method.training_step(_batch(x, y))
        (grad,) = torch.autograd.grad(out.loss, out.logits)
        value = -sum(t * math.log(pk + e) for t, pk in zip(target, p))
        expected = [-sum(target[k] * p[k] / (p[k] + e) * ((k == j) - p[j]) for k in range(3)) for j in range(3)]
        assert out.loss.item() == pytest.approx(value, rel=1e-5)
        assert grad[0].tolist() == pytest.approx(expected, rel=1e-4, abs=1e-9)
        assert out.metrics["epsilon"].item() == pytest.approx(eps, rel=1e-4)  # eps keeps the exact entropy
        grads[log_eps] = grad[0, 0].item()
    assert grads[None] == pytest.approx(-(1 - eps) * (1 - 1e-6), rel=1e-4)     # exact: p_y - q~_y
    assert grads[1e-6] == pytest.approx(-(1 - eps) * (1 - 1e-6) / 2, rel=1e-4)  # official: half of it


def test_cmd_method_uses_the_appendix_log_everywhere():
    """CMD-S with Boot-soft and log_eps = 1e-6: Eqs. 8-11 with ln(p + 1e-6) in H(q~, p), in the distillation
    term and in the selection entropy, written out with numpy (the appendix C snippet)."""
    x = torch.tensor([LOGITS, [2.0, 0.0, -1.0], [0.1, 0.0, 0.2]])
    y = torch.tensor([0, 0, 2])
    method = MutualConfidentDistillation(_ctx([1.0, 2.0]), parse_method_args(
        "cmd", {"self_kd": "boot", "knowledge": "static", "eta": 2.0, "log_eps": 1e-6}, 10))
    out = method.training_step(_batch(x, y, epoch=3, step_in_epoch=2))
    chi = math.log(3) / 2
    xs = x.double().numpy()
    p = {w: np.exp(w * xs) / np.exp(w * xs).sum(1, keepdims=True) for w in (1.0, 2.0)}
    q = np.eye(3)[y.numpy()]
    target = {w: 0.95 * q + 0.05 * p[w] for w in p}
    h = {w: -(p[w] * np.log(p[w] + 1e-6)).sum(1) for w in p}
    ce = lambda t, w: -(t * np.log(p[w] + 1e-6)).sum(1)
    loss_a = ce(target[1.0], 1.0).mean() + (ce(target[2.0], 1.0) * (h[2.0] < chi)).sum() / 3
    loss_b = ce(target[2.0], 2.0).mean() + (ce(target[1.0], 2.0) * (h[1.0] < chi)).sum() / 3
    assert 0 < (h[2.0] < chi).sum() < 3                    # the mask matters in this batch
    assert out.loss.item() == pytest.approx(loss_a + loss_b, rel=1e-5)
    assert out.metrics["loss_a"].item() == pytest.approx(loss_a, rel=1e-5)
    assert out.metrics["selected_b2a"].tolist() == (h[2.0] < chi).astype(float).tolist()
    exact = MutualConfidentDistillation(_ctx([1.0, 2.0]), parse_method_args(
        "cmd", {"self_kd": "boot", "knowledge": "static", "eta": 2.0}, 10)).training_step(
        _batch(x, y, epoch=3, step_in_epoch=2))
    assert exact.loss.item() > out.loss.item() + 1.0       # the p_y = 1e-6 row: -ln 1e-6 vs -ln 2e-6, and more


@pytest.mark.parametrize("method", ["proselflc", "mconf", "cmd"])
def test_log_eps_is_a_validated_method_argument(method):
    assert parse_method_args(method, {}, 10).log_eps is None                   # the paper: the exact log
    assert parse_method_args(method, {"log_eps": 1e-6}, 10).log_eps == 1e-6
    assert parse_method_args(method, {"log_eps": 0}, 10).log_eps == 0.0
    with pytest.raises(ConfigError, match=r"method_args.log_eps must be None .* got -1e-06"):
        parse_method_args(method, {"log_eps": -1e-6}, 10)
    for bad in (math.nan, math.inf, True, "1e-6"):
        with pytest.raises(ConfigError, match="method_args.log_eps"):
            parse_method_args(method, {"log_eps": bad}, 10)


def test_cmd_paper_configs_use_the_official_log():
    for path in sorted((CONFIGS / "cmd").glob("*.yaml")):
        text = path.read_text()
        assert yaml.safe_load(text)["method_args"]["log_eps"] == 1e-6, path.name   # a float, not the string "1e-6"
        assert "1e-6" in text.split("log_eps:", 1)[1].splitlines()[0].split("#", 1)[1]   # the comment names it
        cfg = load_config(path, updates={"data": {"spec": "digits"}})
        assert parse_method_args(cfg.method, cfg.method_args, 100).log_eps == 1e-6


# ------------------------------------------------------------------------------------------------------------
# GJS's symmetric noise: exactly ceil(R N) indices redrawn among all classes

def _gjs_symmetric_noise(clean, num_classes, percent, permutation, draws):
    """GJS's ``symmetric_noise`` (datasets/cifar.py) restated from the facts of its source, with its permutation and its
    randint(C) draws given (ours come from our generator's stream instead of numpy's global state)."""
    targets_noisy = np.copy(clean)
    redrawn = 0
    for i, idx in enumerate(permutation):
        if i < percent * len(clean):
            targets_noisy[idx] = draws[idx]
            redrawn += 1
    return targets_noisy, redrawn


def test_exact_count_is_gjs_loop_count():
    # ceil, not round: 0.2 * 7 = 1.4 -> 2 (round: 1); float64 product: 0.07 * 100 = 7.000000000000001 -> 8
    assert exact_count(0.2, 7, "ceil") == 2 and exact_count(0.2, 7) == 1
    assert exact_count(0.07, 100, "ceil") == 8 and exact_count(0.07, 100) == 7
    assert exact_count(0.4, 50000, "ceil") == 20000 and exact_count(1.0, 9, "ceil") == 9
    for rate in (0.0, 0.07, 0.2, 0.4, 0.55, 0.8, 1.0):
        for n in (1, 7, 100, 1001):
            assert exact_count(rate, n, "ceil") == sum(1 for i in range(n) if i < rate * n)


@pytest.mark.parametrize(("n", "rate", "num_classes"), [(100, 0.07, 10), (1001, 0.4, 10), (5000, 0.8, 100)])
def test_sym_all_exact_reproduces_gjs_procedure(n, rate, num_classes):
    """The labels equal GJS's loop run on the same permutation (argsort of our uniforms) and the same draws
    among all C classes: ceil(R N) redrawn, those whose draw hits the clean label unchanged."""
    clean = np.random.default_rng(1).integers(0, num_classes, size=n)
    noisy = make_noise(f"sym-all-exact:{rate}", clean, num_classes, seed=5)
    stream = np.random.Generator(np.random.PCG64(5))
    u = stream.random(n)
    draws = stream.integers(0, num_classes, size=n)
    expected, redrawn = _gjs_symmetric_noise(clean, num_classes, rate, np.argsort(u, kind="stable"), draws)
    assert redrawn == math.ceil(rate * n)
    assert np.array_equal(noisy.labels, expected)
    chosen = np.zeros(n, dtype=bool)
    chosen[np.argsort(u, kind="stable")[:redrawn]] = True
    changed = int((noisy.labels != clean).sum())
    assert changed == int((chosen & (draws != clean)).sum()) and 0 < changed < redrawn  # some redraws kept
    assert noisy.params == {"rate": rate, "seed": 5, "num_classes": num_classes, "convention": "all",
                            "exact": True, "count": "ceil", "spec": f"sym-all-exact:{rate}"}


def test_sym_all_exact_hand_counts_and_options():
    clean = np.zeros(100, dtype=np.int64)
    changed = [int((symmetric(clean, 10, 0.07, seed, convention="all", exact=True, count="ceil").labels != 0).sum())
               for seed in range(40)]  # 0.07 * 100 -> 8 redrawn (GJS's float quirk), changed unless they drew 0
    assert max(changed) == 8 and min(changed) < 8
    assert int((make_noise("sym-all-exact:1", clean, 2, seed=0).labels != clean).sum()) < 100   # draws among all
    with pytest.raises(DataError, match="sym-all-exact fixes"):
        make_noise("sym-all-exact:0.4", clean, 10, seed=0, exact=False)
    with pytest.raises(DataError, match="count"):
        symmetric(clean, 10, 0.4, 0, count="ceil")          # count is for exact=True
    with pytest.raises(DataError, match="count must be one of"):
        symmetric(clean, 10, 0.4, 0, exact=True, count="floor")
    assert load_config("digits/sym40", updates={"data": {"noise": "sym-all-exact:0.4"}}).data.noise \
        == "sym-all-exact:0.4"

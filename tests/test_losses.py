"""Losses against hand arithmetic, limiting cases, gradients, reductions and the preset registry.

Hand values use the example logits l = [2, 0, -1] with label 0 (and a second row where needed), softmax
written out with math.exp; comparisons in float64.
"""

from __future__ import annotations

import copy

import math

import pytest
import torch
import torch.nn.functional as F

from noisykd.errors import ConfigError
from noisykd.losses import (
    LOSS_PRESETS,
    LOSSES,
    TABLE5_SETTINGS,
    bootstrapping_hard,
    bootstrapping_soft,
    confidence_penalty,
    cross_entropy,
    generalized_cross_entropy,
    generalized_jensen_shannon,
    get_loss,
    gjs_loss,
    gjs_scale,
    jensen_shannon,
    js_loss,
    kl_divergence,
    label_smoothing,
    list_presets,
    nce_rce,
    normalized_cross_entropy,
    nrd_table5_optimizer,
    reverse_cross_entropy,
    soft_cross_entropy,
    symmetric_cross_entropy,
)

D = torch.float64

# softmax([2, 0, -1]) by hand
_E = [math.exp(2.0), math.exp(0.0), math.exp(-1.0)]  # 7.389056, 1, 0.367879
P = [e / sum(_E) for e in _E]  # 0.843795, 0.114195, 0.042010
LN_P = [math.log(p) for p in P]
CE0 = -LN_P[0]  # 0.169846
H_P = -sum(p * lp for p, lp in zip(P, LN_P))  # entropy of P


def logits_example(requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor([[2.0, 0.0, -1.0]], dtype=D, requires_grad=requires_grad)


LABEL0 = torch.tensor([0])


def close(tensor: torch.Tensor, value: float, rel: float = 1e-12, abs_: float = 1e-12) -> bool:
    return tensor.item() == pytest.approx(value, rel=rel, abs=abs_)


def random_batch(b=5, c=4, seed=0, dtype=D):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, generator=g, dtype=dtype) * 2, torch.randint(0, c, (b,), generator=g)


# --- hand values --------------------------------------------------------------------------------------------


def test_softmax_by_hand_matches_torch():
    assert torch.allclose(torch.softmax(logits_example(), 1), torch.tensor([P], dtype=D))
    assert P[0] == pytest.approx(0.843795, abs=1e-6)


def test_cross_entropy_by_hand():
    assert close(cross_entropy(logits_example(), LABEL0), CE0)
    assert CE0 == pytest.approx(0.169846, abs=1e-6)


def test_soft_cross_entropy_by_hand():
    q = [0.5, 0.3, 0.2]
    expected = -(0.5 * LN_P[0] + 0.3 * LN_P[1] + 0.2 * LN_P[2])
    assert close(soft_cross_entropy(logits_example(), torch.tensor([q], dtype=D)), expected)


def test_label_smoothing_by_hand():
    eps = 0.3  # q~ = 0.7 * [1, 0, 0] + 0.3 * [1/3, 1/3, 1/3] = [0.8, 0.1, 0.1]
    expected = -(0.8 * LN_P[0] + 0.1 * LN_P[1] + 0.1 * LN_P[2])
    assert close(label_smoothing(logits_example(), LABEL0, eps), expected)
    # same convention as torch's built-in smoothing (uniform over all C classes)
    logits, labels = random_batch()
    assert torch.allclose(label_smoothing(logits, labels, 0.2), F.cross_entropy(logits, labels, label_smoothing=0.2))


def test_confidence_penalty_by_hand():
    assert close(confidence_penalty(logits_example(), LABEL0, 0.5), CE0 - 0.5 * H_P)
    # CMD / ProSelfLC form: (1 - beta) CE - beta H(p)
    assert close(confidence_penalty(logits_example(), LABEL0, 0.25, proselflc_form=True), 0.75 * CE0 - 0.25 * H_P)


def test_bootstrapping_soft_by_hand():
    beta = 0.8  # t = 0.8 * [1, 0, 0] + 0.2 * p
    t = [0.8 + 0.2 * P[0], 0.2 * P[1], 0.2 * P[2]]
    expected = -sum(tk * lp for tk, lp in zip(t, LN_P))
    assert close(bootstrapping_soft(logits_example(), LABEL0, beta), expected)
    # the value does not depend on the detach, only the gradient does
    assert close(bootstrapping_soft(logits_example(), LABEL0, beta, detach_prediction=False), expected)


def test_bootstrapping_hard_by_hand():
    logits = torch.tensor([[0.0, 2.0, -1.0]], dtype=D)  # argmax is class 1, label is 0
    p0, p1 = _E[1] / sum(_E), _E[0] / sum(_E)
    expected = -(0.8 * math.log(p0) + 0.2 * math.log(p1))
    assert close(bootstrapping_hard(logits, LABEL0, 0.8), expected)


def test_gce_by_hand():
    assert close(generalized_cross_entropy(logits_example(), LABEL0, q=0.7), (1 - P[0] ** 0.7) / 0.7)


def test_rce_and_sce_by_hand():
    # RCE = -sum_k p_k ln q_k with ln q_0 = ln 1 = 0 and ln q_1 = ln q_2 = A = -4
    rce = -(P[1] * -4.0 + P[2] * -4.0)
    assert close(reverse_cross_entropy(logits_example(), LABEL0), rce)
    assert close(symmetric_cross_entropy(logits_example(), LABEL0, alpha=0.1, beta=1.0), 0.1 * CE0 + 1.0 * rce)
    # the reference codes' A = ln(1e-4)
    rce_code = -(P[1] + P[2]) * math.log(1e-4)
    got = symmetric_cross_entropy(logits_example(), LABEL0, alpha=6.0, beta=0.1, log_clamp=math.log(1e-4))
    assert close(got, 6.0 * CE0 + 0.1 * rce_code)


def test_nce_and_nce_rce_by_hand():
    nce = -LN_P[0] / -(LN_P[0] + LN_P[1] + LN_P[2])
    assert close(normalized_cross_entropy(logits_example(), LABEL0), nce)
    rce = 4.0 * (P[1] + P[2])
    assert close(nce_rce(logits_example(), LABEL0, alpha=10.0, beta=0.1), 10.0 * nce + 0.1 * rce)


def test_kl_by_hand_and_zero_terms_skipped():
    p = torch.tensor([[0.5, 0.5, 0.0]], dtype=D)
    q = torch.tensor([[0.25, 0.25, 0.5]], dtype=D)
    # 0.5 ln(0.5/0.25) * 2 + 0 (the p = 0 term) = ln 2
    assert close(kl_divergence(p, q), math.log(2))
    assert close(kl_divergence(q, q), 0.0)


def test_js_by_hand():
    # disjoint supports: m = [0.5, 0.5], JS = 0.5 ln 2 + 0.5 ln 2 = ln 2, the maximum
    p = torch.tensor([[1.0, 0.0]], dtype=D)
    q = torch.tensor([[0.0, 1.0]], dtype=D)
    assert close(jensen_shannon(p, q), math.log(2))
    # weighted, explicit: pi1 = 0.3, p = [0.6, 0.4], q = [0.1, 0.9], m = [0.25, 0.75]
    p = torch.tensor([[0.6, 0.4]], dtype=D)
    q = torch.tensor([[0.1, 0.9]], dtype=D)
    kl_pm = 0.6 * math.log(0.6 / 0.25) + 0.4 * math.log(0.4 / 0.75)
    kl_qm = 0.1 * math.log(0.1 / 0.25) + 0.9 * math.log(0.9 / 0.75)
    assert close(jensen_shannon(p, q, pi1=0.3), 0.3 * kl_pm + 0.7 * kl_qm)


def test_gjs_by_hand_three_distributions():
    # label one-hot, two predictions; pi = (0.2, 0.6, 0.2)
    d1, d2, d3 = [1.0, 0.0, 0.0], [0.7, 0.2, 0.1], [0.5, 0.3, 0.2]
    pis = (0.2, 0.6, 0.2)
    m = [pis[0] * a + pis[1] * b + pis[2] * c for a, b, c in zip(d1, d2, d3)]  # [0.72, 0.18, 0.10]
    assert m == pytest.approx([0.72, 0.18, 0.10])
    kl = [sum(x * math.log(x / mk) for x, mk in zip(d, m) if x > 0) for d in (d1, d2, d3)]
    raw = sum(w * k for w, k in zip(pis, kl))
    z = -1.0 / (0.8 * math.log(0.8))
    dists = [torch.tensor([d], dtype=D) for d in (d1, d2, d3)]
    assert close(generalized_jensen_shannon(dists, pis, scale=False), raw)
    assert close(generalized_jensen_shannon(dists, pis), z * raw)


def test_js_loss_and_gjs_loss_by_hand():
    # js_loss: JS_(pi1, 1 - pi1)(onehot(0), p) * Z(pi1)
    pi1 = 0.4
    m = [pi1 + 0.6 * P[0], 0.6 * P[1], 0.6 * P[2]]
    raw = pi1 * math.log(1 / m[0]) + 0.6 * sum(p * math.log(p / mk) for p, mk in zip(P, m))
    z = -1.0 / (0.6 * math.log(0.6))
    assert close(js_loss(logits_example(), LABEL0, pi1), z * raw)
    assert close(js_loss(logits_example(), LABEL0, pi1, scale=False), raw)
    # gjs_loss with a single float splits 1 - pi1 evenly over the views
    views = [logits_example(), torch.tensor([[0.5, 0.0, 1.0]], dtype=D)]
    assert close(gjs_loss(views, LABEL0, 0.5), gjs_loss(views, LABEL0, (0.5, 0.25, 0.25)).item())
    # two identical views: GJS(onehot, p, p) with (pi1, a, b) = JS(onehot, p) with (pi1, a + b)
    same = [logits_example(), logits_example()]
    assert close(gjs_loss(same, LABEL0, (pi1, 0.3, 0.3)), z * raw)


def test_gjs_scale_values():
    assert gjs_scale(0.5) == pytest.approx(2 / math.log(2))  # 2.885390
    assert gjs_scale(0.2) == pytest.approx(-1 / (0.8 * math.log(0.8)))  # 5.601
    assert gjs_scale(0.2) == pytest.approx(5.6018, abs=1e-4)
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="0 < pi1 < 1"):
            gjs_scale(bad)


# --- limiting cases ---------------------------------------------------------------------------------------------


@pytest.fixture
def batch():
    return random_batch()


def test_ls_eps0_is_ce(batch):
    logits, labels = batch
    assert torch.allclose(label_smoothing(logits, labels, 0.0), cross_entropy(logits, labels))


def test_cp_beta0_is_ce(batch):
    logits, labels = batch
    assert torch.allclose(confidence_penalty(logits, labels, 0.0), cross_entropy(logits, labels))
    assert torch.allclose(confidence_penalty(logits, labels, 0.0, proselflc_form=True), cross_entropy(logits, labels))


def test_boot_beta1_is_ce(batch):
    logits, labels = batch
    for fn in (bootstrapping_soft, bootstrapping_hard):
        assert torch.allclose(fn(logits, labels, 1.0), cross_entropy(logits, labels))


def test_gce_limits(batch):
    logits, labels = batch
    ce = cross_entropy(logits, labels, reduction="none")
    assert torch.allclose(generalized_cross_entropy(logits, labels, q=1e-4, reduction="none"), ce, rtol=1e-3)
    p_y = torch.softmax(logits, 1).gather(1, labels[:, None]).squeeze(1)
    assert torch.allclose(generalized_cross_entropy(logits, labels, q=1.0, reduction="none"), 1 - p_y)


def test_js_of_identical_distributions_is_zero(batch):
    logits, _ = batch
    p = torch.softmax(logits, 1)
    assert torch.allclose(jensen_shannon(p, p, reduction="none"), torch.zeros(len(p), dtype=D), atol=1e-15)
    assert close(generalized_jensen_shannon([p, p, p], (0.2, 0.5, 0.3)), 0.0, abs_=1e-15)


def test_js_is_symmetric(batch):
    logits, _ = batch
    p = torch.softmax(logits, 1)
    q = torch.softmax(logits.flip(0), 1)
    assert torch.allclose(jensen_shannon(p, q, reduction="none"), jensen_shannon(q, p, reduction="none"))
    # weighted JS is symmetric under swapping the distributions and their weights
    assert torch.allclose(jensen_shannon(p, q, pi1=0.3), jensen_shannon(q, p, pi1=0.7))


def test_js_loss_tends_to_ce_and_mae(batch):
    logits, labels = batch
    ce = cross_entropy(logits, labels, reduction="none")
    assert torch.allclose(js_loss(logits, labels, 1e-6, reduction="none"), ce, rtol=1e-4)
    # pi1 -> 1: (1/2)||onehot - p||_1; slow (1/ln) convergence, and only without the 1e-7 clamp of m
    p = torch.softmax(logits, 1)
    e = F.one_hot(labels, 4).to(D)
    half_mae = (e - p).abs().sum(1) / 2
    rel_errors = [
        ((generalized_jensen_shannon([e, p], [1 - d, d], eps=1e-300, reduction="none") - half_mae) / half_mae)
        .abs()
        .max()
        for d in (1e-3, 1e-6, 1e-12)
    ]
    assert rel_errors[0] > rel_errors[1] > rel_errors[2]
    assert rel_errors[2] < 0.05


def test_gjs_one_hot_targets_finite_values_and_gradients():
    # saturated float32 predictions: exact zeros in p, one-hot label on a class the model says is impossible
    logits = torch.tensor([[100.0, -100.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    labels = torch.tensor([1, 2])
    loss = gjs_loss([logits, logits * 0.5], labels, (0.2, 0.6, 0.2))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    e = F.one_hot(labels, 3).float()
    value = generalized_jensen_shannon([e, e], (0.5, 0.5))
    assert value.item() == 0.0


def test_every_loss_finite_on_extreme_float32_logits():
    logits = torch.tensor([[100.0, -100.0, 0.0], [-80.0, 80.0, 0.0]], requires_grad=True)
    labels = torch.tensor([1, 2])  # both badly wrong
    for name in LOSSES:
        fn = get_loss(name)
        if name in ("gjs", "nrd"):
            value = fn([logits, logits], labels)
        elif name == "soft_ce":
            value = fn(logits, F.one_hot(labels, 3).float())
        else:
            value = fn(logits, labels)
        (grad,) = torch.autograd.grad(value, logits)
        assert torch.isfinite(value), name
        assert torch.isfinite(grad).all(), name


# --- gradients -------------------------------------------------------------------------------------------------


def test_bootstrapping_detach_gradient_is_ce_with_fixed_target():
    logits, labels = random_batch()
    beta = 0.8
    a = logits.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(bootstrapping_soft(a, labels, beta), a)

    b = logits.clone().requires_grad_(True)
    p = torch.softmax(b, 1)
    target = (beta * F.one_hot(labels, 4) + (1 - beta) * p).detach()
    (grad_ref,) = torch.autograd.grad(soft_cross_entropy(b, target), b)
    assert torch.allclose(grad, grad_ref)
    # and the closed form: d/dl H(t, softmax(l)) = (p - t) / B for a fixed t summing to 1
    assert torch.allclose(grad, (p.detach() - target) / len(labels))


def test_bootstrapping_without_detach_is_ce_plus_entropy():
    logits, labels = random_batch()
    beta = 0.8
    a = logits.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(bootstrapping_soft(a, labels, beta, detach_prediction=False), a)
    b = logits.clone().requires_grad_(True)
    log_p = torch.log_softmax(b, 1)
    ref = beta * cross_entropy(b, labels) + (1 - beta) * -(log_p.exp() * log_p).sum(1).mean()
    (grad_ref,) = torch.autograd.grad(ref, b)
    assert torch.allclose(grad, grad_ref)
    (grad_detached,) = torch.autograd.grad(bootstrapping_soft(a, labels, beta), a)
    assert not torch.allclose(grad, grad_detached)


def test_gradchecks():
    logits, labels = random_batch(b=3, c=3)
    logits = logits.requires_grad_(True)
    torch.autograd.gradcheck(lambda x: generalized_cross_entropy(x, labels, 0.7), (logits,))
    torch.autograd.gradcheck(lambda x: nce_rce(x, labels, 10.0, 0.1), (logits,))
    torch.autograd.gradcheck(lambda x: js_loss(x, labels, 0.3), (logits,))
    other = torch.randn(3, 3, dtype=D)
    torch.autograd.gradcheck(lambda x: gjs_loss([x, other], labels, (0.2, 0.6, 0.2)), (logits,))


def test_gjs_gradient_reaches_only_non_detached_views():
    logits, labels = random_batch()
    student = logits.clone().requires_grad_(True)
    teacher = (logits * 0.5).requires_grad_(True)
    gjs_loss([student, teacher.detach()], labels, (0.2, 0.6, 0.2)).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


# --- reductions and input checks ------------------------------------------------------------------------------

LOSS_CALLS = {
    "ce": lambda l, y, r: cross_entropy(l, y, reduction=r),
    "ls": lambda l, y, r: label_smoothing(l, y, 0.1, reduction=r),
    "cp": lambda l, y, r: confidence_penalty(l, y, 0.1, reduction=r),
    "boot": lambda l, y, r: bootstrapping_soft(l, y, 0.95, reduction=r),
    "boot_hard": lambda l, y, r: bootstrapping_hard(l, y, 0.8, reduction=r),
    "gce": lambda l, y, r: generalized_cross_entropy(l, y, 0.7, reduction=r),
    "sce": lambda l, y, r: symmetric_cross_entropy(l, y, 0.1, 1.0, reduction=r),
    "nce_rce": lambda l, y, r: nce_rce(l, y, 1.0, 1.0, reduction=r),
    "js": lambda l, y, r: js_loss(l, y, 0.5, reduction=r),
    "gjs": lambda l, y, r: gjs_loss([l, l.flip(1)], y, 0.5, reduction=r),
}


@pytest.mark.parametrize("name", sorted(LOSS_CALLS))
def test_reductions(name):
    logits, labels = random_batch(b=6)
    call = LOSS_CALLS[name]
    per_sample = call(logits, labels, "none")
    assert per_sample.shape == (6,)
    assert torch.allclose(call(logits, labels, "mean"), per_sample.mean())
    assert torch.allclose(call(logits, labels, "sum"), per_sample.sum())
    assert call(logits, labels, "mean").dim() == 0
    # per-sample values do not depend on the rest of the batch
    assert torch.allclose(call(logits[:2], labels[:2], "none"), per_sample[:2])
    with pytest.raises(ValueError, match="reduction"):
        call(logits, labels, "avg")


def test_kl_and_js_reductions(batch):
    logits, _ = batch
    p, q = torch.softmax(logits, 1), torch.softmax(-logits, 1)
    for fn in (kl_divergence, jensen_shannon):
        per = fn(p, q, reduction="none")
        assert per.shape == (5,)
        assert torch.allclose(fn(p, q), per.mean()) and torch.allclose(fn(p, q, reduction="sum"), per.sum())


def test_input_checks():
    logits, labels = random_batch()
    with pytest.raises(ValueError, match="integer tensor of class indices"):
        cross_entropy(logits, labels.double())
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        generalized_cross_entropy(logits, labels[:3])
    with pytest.raises(ValueError, match=r"shape \(B, C\)"):
        cross_entropy(logits[0], labels[0])
    with pytest.raises(ValueError, match="q must be in"):
        generalized_cross_entropy(logits, labels, q=0.0)
    with pytest.raises(ValueError, match="epsilon must be in"):
        label_smoothing(logits, labels, 1.5)
    with pytest.raises(ValueError, match="log_clamp"):
        reverse_cross_entropy(logits, labels, log_clamp=0.0)
    with pytest.raises(ValueError, match="sum to 1"):
        gjs_loss([logits, logits], labels, (0.2, 0.2, 0.2))
    with pytest.raises(ValueError, match="one weight per distribution"):
        gjs_loss([logits, logits], labels, (0.5, 0.5))
    with pytest.raises(ValueError, match="list of"):
        gjs_loss(logits, labels, 0.5)
    # int32 labels are accepted and treated as int64
    assert torch.allclose(cross_entropy(logits, labels.int()), cross_entropy(logits, labels))


def test_soft_targets_in_js_and_gjs(batch):
    logits, labels = batch
    onehot = F.one_hot(labels, 4).to(D)
    assert torch.allclose(js_loss(logits, onehot, 0.3), js_loss(logits, labels, 0.3))
    assert torch.allclose(gjs_loss([logits, logits], onehot, 0.3), gjs_loss([logits, logits], labels, 0.3))


# --- presets and get_loss ---------------------------------------------------------------------------------------


def test_base_presets_from_original_papers():
    assert LOSS_PRESETS["gce"] == {"q": 0.7}
    assert LOSS_PRESETS["ls"] == {"epsilon": 0.1}
    assert LOSS_PRESETS["boot"] == {"beta": 0.95}
    assert LOSS_PRESETS["boot_hard"] == {"beta": 0.8}
    assert LOSS_PRESETS["sce/cifar10"] == {"alpha": 0.1, "beta": 1.0, "log_clamp": -4.0}
    assert LOSS_PRESETS["sce/cifar100"] == {"alpha": 6.0, "beta": 0.1, "log_clamp": -4.0}
    assert LOSS_PRESETS["nce_rce/cifar10"] == {"alpha": 1.0, "beta": 1.0}
    assert LOSS_PRESETS["nce_rce/cifar100"] == {"alpha": 10.0, "beta": 0.1}


def test_nrd_table5_presets_spot_checks():
    ln_1e4 = math.log(1e-4)
    assert LOSS_PRESETS["sce/cifar10-sym40"] == {"alpha": 0.1, "beta": 0.1, "log_clamp": ln_1e4}
    assert LOSS_PRESETS["nce_rce/cifar100-asym40"] == {"alpha": 10.0, "beta": 0.1, "log_clamp": ln_1e4}
    assert LOSS_PRESETS["gce/cifar10-asym20"] == {"q": 0.1}
    assert LOSS_PRESETS["ls/cifar100-sym80"] == {"epsilon": 0.9}
    # BS: table value 0.9 is the prediction's weight -> Reed's beta 0.1, gradient through p as in the GJS code
    assert LOSS_PRESETS["boot/cifar10-sym80"] == {"beta": 0.1, "detach_prediction": False}
    assert LOSS_PRESETS["boot/cifar100-clean"] == {"beta": 0.3, "detach_prediction": False}
    assert LOSS_PRESETS["js/cifar10-sym40"] == {"pi1": 0.7}
    # GJS with two views: the GJS authors' scripts/C10/sym/gjs-40.yaml has js_weights 0.9 0.05 0.05
    assert LOSS_PRESETS["gjs/cifar10-sym40"] == {"pis": (0.9, 0.05, 0.05)}
    assert LOSS_PRESETS["nrd/cifar10-sym60"] == {"pis": (0.25, 0.5, 0.25)}
    assert LOSS_PRESETS["nrd/cifar100-asym40"] == {"pis": (0.4, 0.2, 0.4)}
    for dataset in ("cifar10", "cifar100"):
        for setting in TABLE5_SETTINGS:
            for loss in ("ce", "boot", "ls", "sce", "gce", "nce_rce", "js", "gjs", "nrd"):
                assert f"{loss}/{dataset}-{setting}" in LOSS_PRESETS
    assert nrd_table5_optimizer("cifar10", "gjs", "sym40") == {"lr": 0.1, "weight_decay": 5e-4}
    assert nrd_table5_optimizer("cifar100", "nce+rce", "asym20") == {"lr": 0.2, "weight_decay": 5e-5}
    with pytest.raises(ConfigError, match="settings"):
        nrd_table5_optimizer("cifar10", "gjs", "sym50")


def test_every_preset_resolves_and_runs():
    logits, labels = random_batch(c=3)
    for name in list_presets():
        fn = get_loss(name)
        loss = name.split("/")[0]
        if loss in ("gjs", "nrd"):
            value = fn([logits, logits.flip(0)], labels)
        elif loss == "soft_ce":
            value = fn(logits, F.one_hot(labels, 3).to(D))
        else:
            value = fn(logits, labels)
        assert value.dim() == 0 and torch.isfinite(value), name


def test_get_loss_binds_preset_and_overrides():
    logits, labels = random_batch()
    assert torch.allclose(get_loss("gce")(logits, labels), generalized_cross_entropy(logits, labels, 0.7))
    assert torch.allclose(get_loss("gce", q=0.3)(logits, labels), generalized_cross_entropy(logits, labels, 0.3))
    sce = get_loss("sce/cifar100")(logits, labels)
    assert torch.allclose(sce, symmetric_cross_entropy(logits, labels, 6.0, 0.1))
    assert get_loss("ce", reduction="none")(logits, labels).shape == (5,)
    # aliases from the papers' tables, case-insensitive
    assert torch.allclose(get_loss("BS")(logits, labels), bootstrapping_soft(logits, labels, 0.95))
    by_alias = get_loss("NCE+RCE/cifar10-sym20")(logits, labels)
    assert torch.allclose(by_alias, get_loss("nce_rce/cifar10-sym20")(logits, labels))
    # the registry is not mutated by overrides
    get_loss("gce", q=0.2)
    assert LOSS_PRESETS["gce"] == {"q": 0.7}


def test_get_loss_errors():
    with pytest.raises(ConfigError, match="unknown loss 'focal'; choose one of: .*gce"):
        get_loss("focal")
    with pytest.raises(ConfigError, match="unknown preset 'gce/cifar10-sym30'.*gce/cifar10-sym40"):
        get_loss("gce/cifar10-sym30")
    with pytest.raises(ConfigError, match="has no hyperparameter 'beta'.*it takes: q, reduction"):
        get_loss("gce", beta=0.5)
    with pytest.raises(ConfigError, match="q must be in"):
        get_loss("gce", q=0.0)
    with pytest.raises(ConfigError, match="sum to 1"):
        get_loss("nrd", pis=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError):  # ConfigError is a ValueError
        get_loss("sce", gamma=1.0)
    # four weights = three views: valid
    get_loss("gjs", pis=(0.4, 0.2, 0.2, 0.2))


def test_loss_baseline_names_resolve():
    # the names noisykd.methods.loss_baselines registers
    for name in ("ce", "ls", "cp", "boot", "gce", "sce", "nce_rce"):
        assert callable(get_loss(name))


# --------------------------------------------------------------------------------------------------------------
# JS and GJS as methods (NRD Table 2's baselines)

@pytest.mark.parametrize("args, one_batch, policy", [
    ({}, False, "randaugment_gjs"),  # GJS's scripts: one pass per view, GJS's RandAugment + Cutout views
    ({"one_batch": True, "randaugment": "run"}, True, "weak"),  # both views in one 2B batch, the run's policy
])
def test_gjs_method_sees_two_different_views_and_minimises_gjs_over_them(tmp_path, monkeypatch, args, one_batch,
                                                                         policy):
    from noisykd.config import load_config
    from noisykd.engine import Trainer
    from noisykd.methods.loss_baselines import GJSBaseline

    seen = []
    original = GJSBaseline.training_step

    def recording(self, batch):
        views = batch.views["train"]
        net = copy.deepcopy(self.net.module)  # same weights, train mode: BatchNorm uses batch statistics
        with torch.no_grad():
            separate = gjs_loss([net(views[0]), net(views[1])], batch.labels, pis=0.5)  # the default pi1
            together = gjs_loss(list(net(torch.cat(views)).chunk(2)), batch.labels, pis=0.5)
        expected, other = (together, separate) if one_batch else (separate, together)
        out = original(self, batch)
        seen.append((views, expected.item(), other.item(), out.loss.item(), out.logits.shape))
        return out

    monkeypatch.setattr(GJSBaseline, "training_step", recording)
    cfg = load_config("digits/sym40", updates={
        "method": "gjs", "method_args": args, "out_dir": str(tmp_path / "gjs"), "augment": {"policy": "weak"},
        "data": {"train_subset": 200, "val_fraction": 0.0}, "optim": {"epochs": 1, "batch_size": 64}})
    trainer = Trainer(cfg, progress=False)
    result = trainer.run()
    assert trainer.view_pipelines["train"].policy_name == policy
    assert len(seen) == 4 and math.isfinite(result.history[-1]["train_loss"])  # 64 + 64 + 64 + 8
    for views, expected, other, loss, logits_shape in seen:
        assert isinstance(views, tuple) and len(views) == 2 and views[0].shape == views[1].shape
        assert not torch.equal(views[0], views[1])  # two independent draws of the policy
        assert logits_shape == (len(views[0]), 10)
        assert loss == pytest.approx(expected, rel=1e-6)
    # the other forward (one batch vs one pass per view) gives another loss: BatchNorm sees other statistics
    assert any(abs(other - loss) > 1e-6 for _, _, other, loss, _ in seen)


def test_gjs_method_arguments_are_checked():
    from noisykd.methods import METHODS

    gjs = METHODS["gjs"]
    assert gjs.parse_args({}, epochs=1) == {}
    assert gjs.argument_defaults() == {"pis": 0.5, "randaugment": "gjs", "one_batch": False, "cutout_size": None}
    with pytest.raises(ConfigError, match="randaugment must be one of gjs, torchvision, run"):
        gjs.parse_args({"randaugment": "kornia"}, epochs=1)
    with pytest.raises(ConfigError, match="one_batch must be true or false"):
        gjs.parse_args({"one_batch": "yes"}, epochs=1)
    with pytest.raises(ConfigError, match="cutout_size must be an int >= 0"):
        gjs.parse_args({"cutout_size": -2}, epochs=1)


def test_js_method_is_the_js_loss_with_its_preset():
    from noisykd.methods import METHODS

    assert METHODS.describe("js").options == {"pi1": 0.5}
    assert METHODS.describe("gjs").options == {"pis": 0.5, "randaugment": "gjs", "one_batch": False,
                                               "cutout_size": None}
    with pytest.raises(ConfigError, match="pi1"):
        METHODS["js"].parse_args({"pi1": 1.5}, epochs=1)

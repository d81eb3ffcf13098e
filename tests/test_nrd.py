"""NRD: the method's loss on a tiny batch against hand-computed values (pi edge cases, zero entries), the
stop-gradient into the teacher, the EMA update by hand, the views, a short run on digits, presets and the argument
errors (in Python and on the command line). The SIGKILL resume is the contract test's (tests/test_contract.py)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from torch import nn

from noisykd.augment import build_views, policy_options
from noisykd.config import load_config
from noisykd.engine import Trainer
from noisykd.engine.step import TrainStep
from noisykd.errors import ConfigError
from noisykd.losses import LOSS_PRESETS, js_loss
from noisykd.methods import Batch, MethodContext, Progress, Views, describe_method, parse_method_args
from noisykd.methods.nrd import NoiseRobustDistillation, nrd_presets
from tiny_nets import Scaled  # tests/tiny_nets.py (pytest puts tests/ on sys.path)


# ------------------------------------------------------------------------------------------------------------
# the method's loss on a tiny batch



def context(build_model, image_shape=(1, 1, 3)) -> MethodContext:
    return MethodContext(num_classes=3, num_samples=4, train_indices=torch.arange(4), image_shape=image_shape,
                         normalization=None, device=torch.device("cpu"), store=None, generator=torch.Generator(),
                         build_model=build_model, iterate_train=lambda: iter(()), total_epochs=10, steps_per_epoch=5)


def tiny_nrd(w_student=1.0, w_teacher=2.0, **args) -> NoiseRobustDistillation:
    """NRD on C = 3 classes whose student outputs w_s * x and whose teacher (a copy, then set) outputs w_t * x."""
    method = NoiseRobustDistillation(context(lambda name=None, **kw: Scaled(w_student)),
                                     parse_method_args("nrd", args, 10))
    with torch.no_grad():
        method.teacher.module.w.fill_(w_teacher)
    return method


XS = torch.tensor([[2.0, 0.0, -1.0], [0.1, 0.0, 0.2], [0.0, 1.5, 0.0], [-0.5, 0.0, 0.4]])   # student view
XT = torch.tensor([[1.0, 0.5, -1.0], [0.0, 0.3, 0.2], [0.2, 1.0, 0.0], [-300.0, 0.0, 300.0]])  # teacher view
Y = torch.tensor([0, 0, 1, 2])


def step(method):
    progress = Progress(epoch=0, step=0, step_in_epoch=0, steps_per_epoch=5, total_epochs=10)
    return method.training_step(Batch(torch.arange(4), Y, Views({"student": XS, "teacher": XT}), progress))


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def nrd_by_hand(w_s, w_t, pis, scale=True) -> float:
    """Eq. 25 written out: Z(pi1) * sum_i pi_i KL(p_i || m), terms with p_i,k = 0 (or pi_i = 0) left out."""
    dists = [np.eye(3)[Y.numpy()], softmax(w_s * XS.double().numpy()), softmax(w_t * XT.double().numpy())]
    m = sum(w * d for w, d in zip(pis, dists))
    per_sample = np.zeros(4)
    for w, d in zip(pis, dists):
        if w == 0:
            continue
        for b in range(4):
            per_sample[b] += w * sum(p * math.log(p / mk) for p, mk in zip(d[b], m[b]) if p > 0)
    z = -1.0 / ((1 - pis[0]) * math.log(1 - pis[0])) if scale else 1.0
    return z * per_sample.mean()


def test_teacher_view_has_exact_zeros():
    """The last teacher row puts probability exactly 0 on classes 0 and 1 (as the one-hot labels do elsewhere):
    the hand values below skip those terms, and so must the method (0 * log 0 would be NaN)."""
    p = torch.softmax(2.0 * XT, 1)
    assert (p[3, :2] == 0).all() and p[3, 2] == 1


@pytest.mark.parametrize("pis, args", [
    ((0.2, 0.6, 0.2), {}),                                                   # the default (Table 5, C10 sym 40%)
    ((0.4, 0.2, 0.4), {"preset": "cifar100-asym40"}),                        # Table 5's largest pi1
    ((0.1, 0.8, 0.1), {"pis": [0.1, 0.8, 0.1], "scale": False}),             # unscaled (NRD's WebVision setting)
    ((0.3, 0.5, 0.2), {"pis": [0.3, 0.5, 0.2], "symmetric_pi": False}),      # pi1 != pi3 allowed when asked
    ((0.3, 0.7, 0.0), {"pis": [0.3, 0.7, 0.0], "symmetric_pi": False}),      # no teacher term
    ((0.05, 0.9, 0.05), {"pis": [0.05, 0.9, 0.05]}),                         # near CE
])
def test_nrd_loss_by_hand(pis, args):
    method = tiny_nrd(**args)
    out = step(method)
    expected = nrd_by_hand(1.0, 2.0, pis, scale=args.get("scale", True))
    assert math.isfinite(expected)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert torch.equal(out.logits, XS)  # the student's logits, for the training accuracy


def test_without_teacher_term_nrd_is_gjs_js_loss():
    """pi3 = 0: the teacher drops out and the loss is GJS's JS loss of (label, student) with (pi1, 1 - pi1)."""
    out = step(tiny_nrd(pis=[0.3, 0.7, 0.0], symmetric_pi=False))
    assert out.loss.item() == pytest.approx(js_loss(XS, Y, 0.3).item(), rel=1e-6)


def test_teacher_is_detached_and_gets_no_gradient():
    method = tiny_nrd()
    teacher = method.teacher.module
    assert not teacher.training and not teacher.w.requires_grad
    teacher.w.requires_grad_(True)  # even if it asked for one: the teacher runs under no_grad
    out = step(method)
    out.loss.backward()
    assert teacher.w.grad is None
    # the student's gradient is that of the loss with the teacher's probabilities as constants
    w = torch.tensor(1.0, requires_grad=True)
    pis = (0.2, 0.6, 0.2)
    p_t = torch.softmax(2.0 * XT, 1)
    p_s = torch.softmax(w * XS, 1)
    onehot = torch.eye(3)[Y]
    m = sum(p * d for p, d in zip(pis, (onehot, p_s, p_t)))
    kl = lambda d: torch.where(d > 0, d * (torch.where(d > 0, d, 1).log() - m.log()), 0).sum(1)
    by_hand = (sum(p * kl(d) for p, d in zip(pis, (onehot, p_s, p_t))) * -1 / (0.8 * math.log(0.8))).mean()
    by_hand.backward()
    assert method.student.module.w.grad.item() == pytest.approx(w.grad.item(), rel=1e-5)
    assert w.grad.item() != 0


def test_metrics_of_a_step():
    out = step(tiny_nrd())
    student_pred, teacher_pred = XS.argmax(1), (2.0 * XT).argmax(1)
    assert out.metrics["agreement"].tolist() == (student_pred == teacher_pred).float().tolist()
    p_t = torch.softmax(2.0 * XT, 1)[torch.arange(4), Y]
    torch.testing.assert_close(out.metrics["teacher_p_given"], p_t)
    assert out.checks["teacher_right"].predicted.tolist() == teacher_pred.tolist()
    assert out.checks["teacher_right"].selected.all()


# ------------------------------------------------------------------------------------------------------------
# the EMA teacher

class TinyBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)
        self.bn = nn.BatchNorm1d(2)

    def forward(self, x):
        return self.bn(self.fc(x))


def test_ema_update_by_hand_two_steps():
    """theta_t <- b theta_t + (1 - b) theta_s after each optimiser step; BatchNorm buffers copied."""
    method = NoiseRobustDistillation(context(lambda name=None, **kw: TinyBN()), parse_method_args("nrd", {}, 10))
    student, teacher = method.student.module, method.teacher.module
    assert teacher is not student and not teacher.training
    assert all(torch.equal(a, b) for a, b in zip(teacher.state_dict().values(), student.state_dict().values()))
    with torch.no_grad():
        for p in teacher.parameters():
            p.fill_(1.0)
    progress = Progress(epoch=0, step=0, step_in_epoch=0, steps_per_epoch=5, total_epochs=10)
    expected = 1.0
    for theta_s, running_mean, batches in ((2.0, 3.0, 1), (4.0, -1.5, 2)):
        with torch.no_grad():
            for p in student.parameters():
                p.fill_(theta_s)
            student.bn.running_mean.fill_(running_mean)
            student.bn.num_batches_tracked.fill_(batches)
        method.after_optimizer_step(progress)
        expected = 0.99 * expected + 0.01 * theta_s
        for p in teacher.parameters():
            torch.testing.assert_close(p, torch.full_like(p, expected))
        assert torch.equal(teacher.bn.running_mean, torch.full((2,), running_mean))
        assert teacher.bn.num_batches_tracked.item() == batches
    assert expected == pytest.approx(1.0399)  # 0.99 * (0.99 * 1 + 0.01 * 2) + 0.01 * 4
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


# ------------------------------------------------------------------------------------------------------------
# the views

def test_views_on_cifar_sized_images_are_gjs_student_and_augmix_teacher():
    method = NoiseRobustDistillation(context(lambda name=None, **kw: Scaled(1.0), image_shape=(32, 32, 3)),
                                     parse_method_args("nrd", {}, 10))
    views = method.views()
    assert set(views) == {"student", "teacher"} and all(v.count == 1 for v in views.values())
    pipes = build_views({k: (v.policy, v.count) for k, v in views.items()}, [0.5] * 3, [0.25] * 3, 32)
    student, teacher = pipes["student"], pipes["teacher"]
    # GJS's RandAugment (ildoonet/pytorch-randaugment's table) and AugMix after flip + crop (AugMix's CIFAR order)
    assert student.policy_name == "randaugment_gjs" and teacher.policy_name == "augmix"
    assert student.policy_kwargs == {"padding": 4, "padding_mode": "constant", "n": 1, "m": 3, "cutout_size": 16}
    assert teacher.policy_kwargs == {"padding": 4, "padding_mode": "constant", "severity": 3, "width": 3,
                                     "depth": -1, "alpha": 1.0, "crop_flip": "before"}
    assert student.policy.values["translate_x_abs"] == 10.0 and teacher.policy.crop_flip_order == "before"
    # torchvision's table is one argument away
    tv = NoiseRobustDistillation(method.ctx, parse_method_args("nrd", {"student_randaugment": "torchvision"}, 10))
    assert tv.views()["student"].policy.startswith("randaugment(n=1, m=3, cutout_size=16")
    with pytest.raises(ConfigError, match="student_randaugment must be one of gjs, torchvision"):
        parse_method_args("nrd", {"student_randaugment": "pil"}, 10)
    images = torch.randint(0, 256, (5, 32, 32, 3), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    assert student(images, g).shape == teacher(images, g).shape == (5, 3, 32, 32)
    # the cutout side is an argument (the NRD appendix's 5, or 0 for none)
    five = NoiseRobustDistillation(method.ctx, parse_method_args("nrd", {"cutout_size": 5}, 10))
    assert "cutout_size=5" in five.views()["student"].policy
    assert {"n", "m", "cutout_size", "padding_mode"} <= policy_options("randaugment")


# ------------------------------------------------------------------------------------------------------------
# a short run on digits

@pytest.fixture(scope="module")
def nrd_run(tmp_path_factory):
    seen = []
    original = TrainStep.__call__

    def recording(self, method, batch, **kwargs):
        seen.append({k: tuple(v.shape) for k, v in batch.views.items()})
        return original(self, method, batch, **kwargs)

    TrainStep.__call__ = recording
    try:
        cfg = load_config("digits/sym40", updates={
            "method": "nrd", "out_dir": str(tmp_path_factory.mktemp("nrd") / "run"), "seed": 0,
            "data": {"train_subset": 400}, "optim": {"epochs": 3}})
        trainer = Trainer(cfg, progress=False)
        trainer.result = trainer.run()
    finally:
        TrainStep.__call__ = original
    trainer.seen_views = seen
    return trainer


def test_run_reports_student_teacher_and_metrics(nrd_run):
    history = nrd_run.result.history
    assert len(history) == 3
    for row in history:
        assert {"test_acc", "test_acc_teacher", "val_acc", "train_loss", "train_agreement",
                "train_teacher_p_given", "train_teacher_right"} <= set(row)
        assert 0 <= row["train_agreement"] <= 1 and 0 <= row["train_teacher_p_given"] <= 1
        assert row["train_loss"] > 0 and math.isfinite(row["train_loss"])
    summary = nrd_run.result.summary
    assert summary["method_summary"]["pis"] == [0.2, 0.6, 0.2] and summary["method_summary"]["beta"] == 0.99
    assert summary["method_summary"]["student_cutout"] == 4  # 16 scaled to the 8-px digits
    assert summary["detection"]["detector"] == "gmm"


def test_run_views_have_their_policies_and_shapes(nrd_run):
    pipes = nrd_run.view_pipelines
    assert pipes["student"].policy_name == "randaugment_gjs" and pipes["teacher"].policy_name == "augmix"
    assert pipes["student"].policy_kwargs["cutout_size"] == 4 and pipes["student"].policy_kwargs["padding"] == 1
    assert nrd_run.seen_views and all(set(v) == {"student", "teacher"} for v in nrd_run.seen_views)
    for views in nrd_run.seen_views:
        assert views["student"] == views["teacher"] and views["student"][1:] == (1, 8, 8)
    assert sum(v["student"][0] for v in nrd_run.seen_views) == 3 * len(nrd_run.data.train)


def test_run_teacher_is_an_ema_in_eval_mode(nrd_run):
    method = nrd_run.method
    teacher, student = method.teacher.module, method.student.module
    assert not teacher.training and all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    for key, buffer in student.named_buffers():  # copied at the last update
        assert torch.equal(dict(teacher.named_buffers())[key], buffer), key
    assert any(not torch.equal(p, q) for p, q in zip(teacher.parameters(), student.parameters()))
    assert [g["lr_scale"] for g in nrd_run.optimizer.param_groups] == [1.0]
    optimised = {id(p) for g in nrd_run.optimizer.param_groups for p in g["params"]}
    assert optimised == {id(p) for p in student.parameters()}


# ------------------------------------------------------------------------------------------------------------
# presets and arguments

def test_presets_set_pis_and_name_table5_optimiser():
    assert "cifar10-sym40" in nrd_presets() and "cifar100-asym40" in nrd_presets() and len(nrd_presets()) == 14
    args = parse_method_args("nrd", {"preset": "cifar10-asym20"}, 10)
    assert args.resolved_pis() == (0.1, 0.8, 0.1) == LOSS_PRESETS["nrd/cifar10-asym20"]["pis"]
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("noisykd")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        method = NoiseRobustDistillation(context(lambda name=None, **kw: Scaled(1.0)), args)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
    lines = [r.getMessage() for r in records if "Table 5" in r.getMessage()]
    assert len(lines) == 1 and "lr 0.1 and weight decay 0.001" in lines[0]  # CIFAR-10 asym: [0.1, 1e-3]
    summary = method.summary()
    assert summary["table5_lr"] == 0.1 and summary["table5_weight_decay"] == 1e-3
    assert summary["preset"] == "cifar10-asym20" and summary["gjs_scale"] == pytest.approx(-1 / (0.9 * math.log(0.9)))
    # explicit pis win over the preset's, and the summary says so
    both = parse_method_args("nrd", {"preset": "cifar10-asym20", "pis": [0.25, 0.5, 0.25]}, 10)
    assert both.resolved_pis() == (0.25, 0.5, 0.25) and "not used" in both.pis_source()
    assert "pis" in describe_method("nrd").options and describe_method("nrd").options["beta"] == 0.99


@pytest.mark.parametrize("bad, message", [
    ({"pis": [0.2, 0.5, 0.2]}, r"method_args.pis must be three non-negative weights \(label, student, teacher\) "
                               r"summing to 1, got \[0.2, 0.5, 0.2\]"),
    ({"pis": [0.5, 0.7, -0.2], "symmetric_pi": False}, r"method_args.pis must be three non-negative weights"),
    ({"pis": [0.3, 0.4, 0.3, 0.0]}, r"method_args.pis: expected a list of 3 values"),
    ({"pis": [0.1, 0.6, 0.3]}, r"method_args.pis must have pi1 = pi3 \(NRD A.1\), got \[0.1, 0.6, 0.3\]; set "
                               r"method_args.symmetric_pi=false"),
    ({"pis": [0.0, 1.0, 0.0]}, r"method_args.pis: pi1 \(label\) and pi2 \(student\) must be > 0"),
    ({"pis": [0.5, 0.0, 0.5]}, r"method_args.pis: pi1 \(label\) and pi2 \(student\) must be > 0"),
    ({"beta": 1.0}, r"method_args.beta \(the teacher's EMA decay\) must lie in \[0, 1\), got 1.0"),
    ({"beta": -0.1}, r"method_args.beta \(the teacher's EMA decay\) must lie in \[0, 1\), got -0.1"),
    ({"preset": "cifar10-sym50"}, r"method_args.preset must be one of cifar10-asym20, .*cifar100-sym80 "
                                  r"\(NRD Table 5\), got 'cifar10-sym50'"),
    ({"cutout_size": -1}, r"method_args.cutout_size must be >= 0"),
    ({"scale": "yes"}, r"method_args.scale: expected true or false"),
])
def test_argument_errors(bad, message):
    with pytest.raises(ConfigError, match=message):
        parse_method_args("nrd", bad, 10)


@pytest.mark.parametrize("setting, message", [
    ("method_args.pis=[0.2,0.5,0.2]", "method_args.pis must be three non-negative weights"),
    ("method_args.pis=[0.1,0.6,0.3]", "method_args.pis must have pi1 = pi3"),
    ("method_args.beta=1.5", "method_args.beta (the teacher's EMA decay) must lie in [0, 1), got 1.5"),
    ("method_args.preset=cifar10-sym50", "method_args.preset must be one of cifar10-asym20, "),
])
def test_bad_argument_is_one_line_on_the_command_line(train_cli_error, setting, message):
    assert message in train_cli_error("nrd", setting)

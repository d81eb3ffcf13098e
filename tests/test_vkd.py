"""VKD (MODUL's vanilla-KD baseline): the Hinton loss by hand, a run distilling a frozen teacher run, errors."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from noisykd.config import load_config
from noisykd.engine import Trainer
from noisykd.errors import ConfigError
from noisykd.losses.distill import hinton_kd_loss, soft_kl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_contract import contract_teacher  # noqa: E402  (one teacher run per session)


def test_soft_kl_by_hand():
    s, t = torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([[math.log(3.0), 0.0]])
    # T = 1: p_t = (3/4, 1/4), p_s = (1/4, 3/4): KL = 3/4 ln 3 + 1/4 ln(1/3) = ln(3) / 2
    assert soft_kl(s, t, 1.0).item() == pytest.approx(math.log(3) / 2, rel=1e-6)
    # T = 2: logits halved: p_t = (sqrt3, 1)/(sqrt3 + 1); KL = (sqrt3 - 1)/(sqrt3 + 1) ln sqrt3, times T^2 = 4
    r = math.sqrt(3)
    assert soft_kl(s, t, 2.0).item() == pytest.approx(4 * (r - 1) / (r + 1) * math.log(r), rel=1e-6)
    assert soft_kl(t, t, 3.0).item() == pytest.approx(0.0, abs=1e-7)


def test_hinton_loss_by_hand_and_teacher_gets_no_gradient():
    s = torch.tensor([[0.0, math.log(3.0)]], requires_grad=True)
    t = torch.tensor([[math.log(3.0), 0.0]], requires_grad=True)
    labels = torch.tensor([1])
    ce = -math.log(3 / 4)
    loss = hinton_kd_loss(s, t, labels, alpha=0.25, temperature=1.0)
    assert loss.item() == pytest.approx(0.25 * ce + 0.75 * math.log(3) / 2, rel=1e-6)
    loss.backward()
    assert t.grad is None and s.grad is not None
    # gradient wrt student logits at T = 1: alpha (p_s - y) + (1 - alpha) (p_s - p_t)
    expected = 0.25 * torch.tensor([[0.25, -0.25]]) + 0.75 * torch.tensor([[0.25 - 0.75, 0.75 - 0.25]])
    torch.testing.assert_close(s.grad, expected)
    assert hinton_kd_loss(s, t, labels, alpha=1.0).item() == pytest.approx(ce, rel=1e-6)  # alpha 1: plain CE
    with pytest.raises(ConfigError, match="alpha must lie in"):
        hinton_kd_loss(s, t, labels, alpha=1.5)
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        soft_kl(s, t, 0.0)


def test_run_distils_a_frozen_teacher(tmp_path):
    teacher = contract_teacher()
    cfg = load_config(None, ["method=vkd", f"method_args.teacher={teacher}", "optim.epochs=2",
                             f"out_dir={tmp_path / 'run'}", "data.noise=sym:0.4"])
    trainer = Trainer(cfg, progress=False)
    result = trainer.run()
    before = torch.load(teacher / "checkpoints" / "last.pt", weights_only=True)["networks"]["net"]
    after = {k.removeprefix("module."): v.detach().cpu()
             for k, v in trainer.method.teacher.module.state_dict().items()}
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN statistics unchanged
    assert not trainer.method.teacher.module.training
    s = result.summary["method_summary"]
    assert s["teacher"].endswith("last.pt") and s["teacher_model"] == "small_cnn" and s["teacher_network"] == "net"
    assert s["student_parameters"] == s["teacher_parameters"] and s["student_over_teacher_parameters"] == 1.0
    row = result.history[-1]
    assert 0 <= row["train_teacher_agreement"] <= 1 and "test_acc_teacher" in row


@pytest.mark.parametrize("setting, message", [
    ("method_args.alpha=2", "method_args.alpha must lie in [0, 1]"),
    ("method_args.temperature=0", "method_args.temperature must be > 0"),
    ("method_args.alpha=0.5", "method_args.teacher is required"),
    ("method_args.teacher=/nonexistent/run", "teacher /nonexistent/run: no such run folder or checkpoint file"),
])
def test_bad_arguments_are_one_line(train_cli_error, setting, message):
    assert message in train_cli_error("vkd", setting)

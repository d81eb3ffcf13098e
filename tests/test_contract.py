"""The method contract, for every registered method and for a toy method that uses every hook.

Each method trains 2 epochs on the digits with a training set that leaves a lone last sample (321 = 5 x 64 + 1):
every training sample must be seen exactly once per epoch, ``predict`` must give logits, the per-sample outputs
must have one row per dataset index, and a run SIGKILLed mid-epoch and resumed must end exactly as an
uninterrupted one. The toy method (``tests/contract_toy.py``) adds: two views of different policies, an EMA
network, a frozen network whose BatchNorm statistics must not move, and a parameter group with its own lr.
"""

from __future__ import annotations

import dataclasses
import functools
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contract_toy  # noqa: E402  (registers the toy method)

from noisykd.config import load_config  # noqa: E402
from noisykd.engine import Trainer  # noqa: E402
from noisykd.engine.checkpoint import load_checkpoint  # noqa: E402
from noisykd.engine.step import TrainStep  # noqa: E402
from noisykd.errors import CheckpointError, ConfigError, ContractError  # noqa: E402
from noisykd.methods import (METHODS, Method, ParamGroup, Prediction, Role, SampleOutputs, StepOutput,  # noqa: E402
                             View, list_methods)

TRAIN_SIZE, BATCH = 321, 64  # 5 full batches and a lone sample, folded into the last one
EPOCHS = 2
TIMING = ("img_per_s", "epoch_time_s")


def contract_config(method: str, out_dir: Path) -> dict:
    """The digits config, cut to 2 epochs on 321 training samples (no held-out split) with augmentation."""
    method_args = {}
    if method == "bkd":  # split within the 2 epochs, so that stage 2 and the detection are exercised too
        method_args = {"min_epochs": 1, "tipping_deadline": 1}
    if "teacher" in {f.name for f in dataclasses.fields(METHODS[method].Args)}:  # distillation from a trained run
        method_args = {"teacher": str(contract_teacher())}
    return load_config("digits/sym40", updates={
        "method": method, "method_args": method_args, "out_dir": str(out_dir), "seed": 1,
        "data": {"train_subset": TRAIN_SIZE, "val_fraction": 0.0},
        "optim": {"epochs": EPOCHS, "batch_size": BATCH}, "augment": {"policy": "weak"}}).to_dict()


@functools.lru_cache(maxsize=None)
def contract_teacher() -> Path:
    """A CE run on the clean digits (1 epoch, small_cnn), trained once per test session: the frozen teacher of
    every distillation method here."""
    out = Path(tempfile.mkdtemp(prefix="noisykd-teacher-")) / "run"
    Trainer(load_config(None, ["method=ce", "data.noise=none", "optim.epochs=1", f"out_dir={out}"]),
            progress=False).run()
    return out


def train(cfg: dict, resume: bool = False) -> Trainer:
    """Run ``cfg``; the trainer (networks, store and views still in memory) with its result as ``.result``."""
    trainer = Trainer(load_config(base=cfg), progress=False)
    trainer.result = trainer.run(resume=resume)
    return trainer


def strip(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


@pytest.fixture
def recorded_batches(monkeypatch):
    """The (epoch, indices) of every training batch the engine hands any method."""
    seen: list[tuple[int, np.ndarray]] = []
    original = TrainStep.__call__

    def recording(self, method, batch, **kwargs):
        seen.append((batch.progress.epoch, batch.indices.cpu().numpy().copy()))
        return original(self, method, batch, **kwargs)

    monkeypatch.setattr(TrainStep, "__call__", recording)
    return seen


KILLER = textwrap.dedent("""
    import os, signal, sys, yaml
    sys.path.insert(0, sys.argv[3])
    import contract_toy  # registers the toy method in this process too
    from noisykd.config import load_config
    from noisykd.engine import Trainer
    cfg = load_config(base=yaml.safe_load(open(sys.argv[1])))
    def on_step(trainer, epoch, step):
        if epoch == 1 and step == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)   # mid-epoch 2: no clean-up, as a crash or the OOM killer
    Trainer(cfg, progress=False, on_step=on_step).run()
""")


@pytest.fixture(scope="session")
def teacher_trained():
    """The distillation teacher, trained before any batch is recorded (its own batches are not the method's)."""
    return contract_teacher()


@pytest.mark.parametrize("method", list_methods())
def test_every_method_keeps_the_contract(method, tmp_path, teacher_trained, recorded_batches):
    cfg = contract_config(method, tmp_path / "ref")
    trainer = train(cfg)
    result = trainer.result

    # every training sample exactly once per epoch; the lone last sample joins the last batch (65)
    train_indices = np.sort(trainer.data.train.indices)
    assert len(train_indices) == TRAIN_SIZE
    for epoch in range(EPOCHS):
        batches = [idx for e, idx in recorded_batches if e == epoch]
        assert [len(b) for b in batches] == [64, 64, 64, 64, 65]
        assert np.array_equal(np.sort(np.concatenate(batches)), train_indices)

    # predict gives logits: (B, C) floats whose softmax is the prediction, not probabilities
    images = trainer.eval_pipeline.eval_transform(torch.from_numpy(trainer.data.test.images[:32]))
    trainer.nets.train(False)
    prediction = trainer.method.predict(images)
    assert isinstance(prediction, Prediction)
    for logits in (prediction.logits, *prediction.heads.values()):
        assert logits.shape == (32, trainer.data.num_classes) and torch.isfinite(logits).all()
        is_probabilities = bool((logits >= 0).all()) and torch.allclose(logits.sum(1), torch.ones(32), atol=1e-3)
        assert not is_probabilities, "predict returned probabilities; the contract is logits"

    # per-sample outputs: one row per dataset index, standard columns consistent with predict
    samples = np.load(result.out_dir / "samples.npz")
    n = trainer.data.num_samples
    assert all(samples[k].shape[0] == n for k in samples.files), {k: samples[k].shape for k in samples.files}
    in_train = samples["in_train"] == 1
    assert np.array_equal(np.flatnonzero(in_train), train_indices)
    assert np.isnan(samples["noise_score"][~in_train]).all() and not np.isnan(samples["noise_score"][in_train]).any()
    assert (samples["flagged"][~in_train] == -1).all() and set(np.unique(samples["flagged"][in_train])) <= {0, 1}
    train_logits = trainer.predict_split(trainer.data.train).logits
    p_given = torch.softmax(train_logits, 1)[torch.arange(TRAIN_SIZE), torch.from_numpy(trainer.data.train.labels)]
    np.testing.assert_allclose(samples["p_given"][trainer.data.train.indices], p_given.numpy(), rtol=1e-6)
    detection = result.summary["detection"]
    assert detection["detector"] and detection["rule"] and 0 <= detection["f1"] <= 1

    # SIGKILL mid-epoch 2, resume: the same history, weights (shadow networks included) and per-sample outputs
    killed = tmp_path / "killed"
    cfg_killed = {**cfg, "out_dir": str(killed)}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg_killed))
    (tmp_path / "killer.py").write_text(KILLER)
    proc = subprocess.run([sys.executable, str(tmp_path / "killer.py"), str(tmp_path / "cfg.yaml"), "2",
                           str(Path(__file__).resolve().parent)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert load_checkpoint(killed / "checkpoints" / "last.pt")["epoch"] == 1
    resumed = train(cfg_killed, resume=True).result
    assert strip(resumed.history) == strip(result.history)
    a = load_checkpoint(result.out_dir / "checkpoints" / "last.pt")
    b = load_checkpoint(killed / "checkpoints" / "last.pt")
    assert a["networks"].keys() == b["networks"].keys() and a["frozen"] == b["frozen"]
    for name in a["networks"]:
        for key, tensor in a["networks"][name].items():
            assert torch.equal(tensor, b["networks"][name][key]), (name, key)
    c = np.load(killed / "samples.npz")
    for key in samples.files:
        assert np.array_equal(samples[key], c[key], equal_nan=samples[key].dtype.kind == "f"), key


# ------------------------------------------------------------------------------------------------------------
# what the toy method checks beyond the common contract

@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Trainer:
    return train(contract_config("contract_toy", tmp_path_factory.mktemp("toy") / "run"))


def test_toy_views_have_their_policies_and_arity(toy):
    method = toy.method
    assert method.view_shapes["student"][1:] == [1, 8, 8]
    assert [s[1:] for s in method.view_shapes["pair"]] == [[1, 8, 8], [1, 8, 8]]
    assert toy.view_pipelines["student"].policy_name == "weak" and toy.view_pipelines["pair"].policy_name == "weak_cutout"
    assert toy.view_pipelines["pair"].num_views == 2 and toy.view_pipelines["pair"].policy_kwargs["cutout_size"] == 2


def test_toy_visits_every_training_sample_once_per_epoch(toy):
    visits = toy.store["visits"].cpu().numpy()
    rows = toy.data.train.indices
    assert (visits[rows] == 1).all()
    assert visits.sum() == EPOCHS * TRAIN_SIZE


def test_toy_frozen_network_stays_in_eval_mode_and_unchanged(toy):
    frozen = toy.method.frozen.module
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    for key, value in toy.method.initial_frozen_state.items():
        assert torch.equal(frozen.state_dict()[key], value), key  # BatchNorm statistics included
    assert "frozen" not in load_checkpoint(toy.result.out_dir / "checkpoints" / "last.pt")["networks"]


def test_resume_refuses_a_changed_frozen_network(toy, tmp_path):
    """The frozen network is not saved, its fingerprint is: resuming with other weights is refused."""
    cfg = contract_config("contract_toy", tmp_path / "f")
    cfg["optim"]["epochs"] = 1
    first = train(cfg).result
    last = first.out_dir / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    assert set(state["frozen"]) == {"frozen"} and len(state["frozen"]["frozen"]) == 64  # a SHA-256
    state["frozen"]["frozen"] = "0" * 64   # as if the teacher file had changed since
    torch.save(state, last)
    with pytest.raises(CheckpointError, match="frozen network 'frozen' differs from the one this run was trained"):
        train(cfg, resume=True)


def test_toy_ema_is_updated_after_each_step_and_checkpointed(toy):
    ema, net = toy.method.ema.module, toy.method.net.module
    assert not ema.training and toy.method.updates == EPOCHS * 5
    moved = [not torch.equal(ema.state_dict()[k], v) for k, v in toy.method.initial_ema_state.items()
             if v.is_floating_point()]
    assert all(moved)
    for key, buffer in net.named_buffers():  # BatchNorm buffers are copied, not averaged
        assert torch.equal(dict(ema.named_buffers())[key], buffer), key
    assert any(not torch.equal(p, q) for p, q in zip(ema.parameters(), net.parameters()))  # parameters averaged
    saved = load_checkpoint(toy.result.out_dir / "checkpoints" / "last.pt")["networks"]["ema"]
    assert all(torch.equal(saved[k], v.cpu()) for k, v in ema.state_dict().items())


def test_toy_head_has_its_own_learning_rate(toy):
    groups = toy.optimizer.param_groups
    assert [g["lr_scale"] for g in groups] == [1.0, contract_toy.HEAD_LR_SCALE]
    head = {id(p) for p in toy.method.net.module.linear.parameters()}
    assert {id(p) for p in groups[1]["params"]} == head
    assert groups[1]["lr"] == pytest.approx(contract_toy.HEAD_LR_SCALE * groups[0]["lr"]) and groups[0]["lr"] > 0
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(toy.method.net.module.parameters()))


def test_toy_scores_every_sample_before_the_first_epoch(toy):
    scores = toy.store["frozen_p_given_at_start"].cpu().numpy()
    rows = toy.data.train.indices
    assert not np.isnan(scores[rows]).any() and np.isnan(np.delete(scores, rows)).all()


def test_toy_reports_get_the_ground_truth(toy):
    truth = toy.method.truth_seen
    assert np.array_equal(truth.clean_label, toy.data.clean_labels)
    assert truth.is_noisy.dtype == bool and truth.is_noisy.sum() == toy.data.noisy.is_noisy.sum()
    assert not truth.is_open_set.any()


def test_build_model_by_name_is_sized_for_the_data(toy):
    net = toy.ctx.build_model("mlp", hidden_sizes=(16,))
    assert net.num_classes == 10 and net(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_parameter_groups_match_module_paths():
    from noisykd.methods import Network, ParamGroup

    net = torch.nn.Module()
    net.layer1, net.layer10 = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    handle = Network("n", net, Role.TRAINABLE, {"layer1": ParamGroup(lr_scale=5)})
    assert handle.group_of("layer1.weight").lr_scale == 5 and handle.group_of("layer10.weight").lr_scale == 1


def test_toy_metrics_reach_on_epoch_end_reduced(toy):
    rows = toy.result.history
    assert all(r["toy_frozen_agreement"] == r["train_frozen_agreement"] for r in rows)
    assert all(r["toy_loss"] == r["train_loss"] for r in rows)
    assert {"test_acc", "test_acc_ema", "test_acc_frozen"} <= set(rows[-1])
    assert toy.result.summary["detection"]["detector"] == "contract_toy"


# ------------------------------------------------------------------------------------------------------------
# breaches of the contract are clear errors

class _Breach(Method):
    """A method that breaks one rule, chosen by the test."""

    breach = ""

    def __init__(self, ctx, args=None):
        super().__init__(ctx, args)
        net = ctx.build_model()
        groups = {"no_such_layer": ParamGroup(lr_scale=2)} if self.breach == "unmatched_group" else None
        self.net = self.add_network("net", net, groups=groups)
        shared = net if self.breach == "shared_module" else ctx.build_model()
        self.teacher = self.add_network("teacher", shared, role=Role.FROZEN)
        if self.breach == "iterate_in_init":
            next(iter(ctx.iterate_train()))

    def training_step(self, batch):
        if self.breach == "unknown_view":
            batch.views["student"]
        if self.breach == "train_frozen":
            self.teacher.module.train()
        if self.breach == "late_network" and "late" not in self._networks:
            self.add_network("late", torch.nn.Linear(2, 2))
        logits = self.net(batch.views["train"])
        metrics = {"loss": logits.mean()} if self.breach == "metric_named_loss" else {}
        return StepOutput(loss=torch.nn.functional.cross_entropy(logits, batch.labels), logits=logits,
                          metrics=metrics)

    def on_epoch_end(self, epoch, train_metrics):
        return {"test_acc": 1.0} if self.breach == "overwrite_column" else {}

    def predict(self, images):
        logits = self.net(images)
        return {"main": logits} if self.breach == "dict_prediction" else Prediction(logits=logits)

    def sample_outputs(self):
        if self.breach == "short_column":
            return SampleOutputs(columns={"score": np.zeros(3)})
        return SampleOutputs()


@pytest.mark.parametrize("breach, error, message", [
    ("unknown_view", ContractError, "view 'student' was not declared"),
    ("train_frozen", ContractError, "frozen network 'teacher' was switched to train mode"),
    ("dict_prediction", ContractError, "predict must return a Prediction"),
    ("short_column", ContractError, "'score' has 3 rows"),
    ("unmatched_group", ContractError, r"parameter group\(s\) \['no_such_layer'\] of network 'net' name no"),
    ("shared_module", ContractError, "networks 'net' and 'teacher' share a module"),
    ("iterate_in_init", ContractError, "iterate_train is available from on_train_start on"),
    ("late_network", ContractError, r"networks \['late'\] were added after the method was built"),
    ("metric_named_loss", ContractError, r"StepOutput.metrics\['loss'\]: 'loss' is measured by the engine"),
    ("overwrite_column", ContractError, r"on_epoch_end returned \['test_acc'\], which are the engine's columns"),
])
def test_contract_breaches_are_named(tmp_path, breach, error, message):
    cls = type(f"Breach_{breach}", (_Breach,), {"breach": breach})
    METHODS.register(f"breach_{breach}", cls)
    try:
        cfg = contract_config(f"breach_{breach}", tmp_path / "b")
        cfg["optim"]["epochs"] = 1
        with pytest.raises(error, match=message):
            train(cfg)
    finally:
        METHODS.unregister(f"breach_{breach}")


def test_view_arity_mismatch_is_refused_before_training(tmp_path, recorded_batches):
    """v1: ``--set augment.policy=two_weak`` with the default method ended in a conv2d TypeError."""
    cfg = contract_config("ce", tmp_path / "c")
    cfg["augment"]["policy"] = "two_weak"
    with pytest.raises(ConfigError, match=r"method 'ce': view 'train' takes one image per sample, but 'two_weak' "
                                          r"makes 2 images"):
        train(cfg)
    assert recorded_batches == [] and not (tmp_path / "c" / "checkpoints").exists()


def test_a_view_can_be_replaced_by_name_from_the_config(tmp_path):
    cfg = contract_config("contract_toy", tmp_path / "v")
    cfg["augment"]["views"] = {"student": "weak_cutout(cutout_size=3)"}
    cfg["optim"]["epochs"] = 1
    trainer = train(cfg)
    assert trainer.view_pipelines["student"].policy_kwargs["cutout_size"] == 3
    cfg["augment"]["views"] = {"teacher": "weak"}
    cfg["out_dir"] = str(tmp_path / "w")
    with pytest.raises(ConfigError, match=r"augment.views names \['teacher'\], but method 'contract_toy' has"):
        train(cfg)


def test_resume_from_weights_only_or_with_other_shapes_is_refused(tmp_path):
    cfg = contract_config("bkd", tmp_path / "r")
    first = train(cfg).result
    with pytest.raises(CheckpointError, match="best.pt is for `noisykd eval --best`"):
        Trainer(load_config(base=cfg), progress=False).run(resume=_weights_only(first.out_dir, tmp_path))
    longer = {**cfg, "optim": {**cfg["optim"], "epochs": EPOCHS + 1}}
    with pytest.raises(CheckpointError, match=r"optim.epochs: 2 in the checkpoint, 3 now .*--extend"):
        train(longer, resume=True)
    # extending is asked for, but BKD's per-epoch histories were sized for 2 epochs: refused, naming the entry
    with pytest.raises(CheckpointError, match=r"entry 'p_teacher_history' is \(1257, 2\) torch.float32 in the "
                                              r"checkpoint but \(1257, 3\)"):
        Trainer(load_config(base=longer), progress=False).run(resume=True, extend=True)


def _weights_only(run: Path, tmp_path: Path) -> Path:
    """A checkpoint with the weights only, as best.pt (this run has no noisy validation split to make one)."""
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    path = tmp_path / "best.pt"
    torch.save({k: state[k] for k in ("format", "config", "normalization", "epoch", "networks", "frozen", "method")},
               path)
    return path


def test_view_declaration_is_checked():
    with pytest.raises(ContractError, match="View.count must be a positive int"):
        View("weak", count=0)

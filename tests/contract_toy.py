"""A registered toy method that uses every hook of the method contract, for ``tests/test_contract.py``.

Importing this module registers ``contract_toy``: a trainable network whose head has its own learning rate,
an EMA shadow of it updated after every optimiser step, a frozen network with BatchNorm that must never leave
eval mode, two views of different policies (one of them drawn twice), per-sample state, a per-sample metric,
its own detection, method state that must survive a resume, a pass over the training set before the first
epoch (``on_train_start`` with ``ctx.iterate_train``) and features through the prepared network. It also checks,
while training, what the engine promises: the views' shapes and arity, the global step, the frozen network's mode.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from noisykd.errors import ConfigError, ContractError
from noisykd.methods import (Batch, Detection, Method, METHODS, ParamGroup, Prediction, Progress, Role,
                             SampleOutputs, StepOutput, View, register_method)
from noisykd.models import ema_update

HEAD_LR_SCALE = 10.0


@dataclass(frozen=True)
class ToyArgs:
    ema_decay: float = 0.9
    head_lr_scale: float = HEAD_LR_SCALE

    def validate(self, epochs: int) -> None:
        if not 0 <= self.ema_decay <= 1:
            raise ConfigError(f"method_args.ema_decay must lie in [0, 1], got {self.ema_decay}")


class FrozenNet(nn.Module):
    """A small conv + BatchNorm classifier: frozen, its BN statistics must never change."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, num_classes)
        with torch.no_grad():  # non-trivial running statistics, so that an update would show
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.bn(self.conv(x))), 1).flatten(1))


class ContractToy(Method):
    """Contract test method: two views, an EMA shadow, a frozen network, a head with its own lr."""

    Args = ToyArgs

    def __init__(self, ctx, args: ToyArgs):
        super().__init__(ctx, args)
        net = ctx.build_model()
        head = [name for name, m in net.named_modules() if isinstance(m, nn.Linear)][-1]
        self.net = self.add_network("net", net, groups={f"{head}.": ParamGroup(lr_scale=args.head_lr_scale)})
        self.ema = self.add_network("ema", copy.deepcopy(net), role=Role.SHADOW)
        self.frozen = self.add_network("frozen", FrozenNet(ctx.image_shape[2], ctx.num_classes), role=Role.FROZEN)
        self.initial_frozen_state = copy.deepcopy(self.frozen.module.state_dict())
        self.initial_ema_state = copy.deepcopy(self.ema.module.state_dict())
        ctx.store.add("visits", shape=(ctx.total_epochs,), dtype=torch.int64, fill=0)
        ctx.store.add("p_given_last")
        ctx.store.add("frozen_p_given_at_start")  # written by on_train_start
        self.truth_seen = None
        self.updates = 0  # optimiser steps seen; must equal batch.progress.step (checkpointed)
        self.view_shapes: dict[str, list] = {}

    def views(self):
        return {"student": View("weak"), "pair": View("weak_cutout(cutout_size=2)", count=2)}

    @torch.no_grad()
    def on_train_start(self, resumed: bool) -> None:
        """The frozen network's P(given label) of every training sample, once (a fresh run only)."""
        if resumed:
            return
        for batch in self.ctx.iterate_train():
            p = torch.softmax(self.frozen(batch.images).float(), 1).gather(1, batch.labels[:, None])[:, 0]
            self.ctx.store.write("frozen_p_given_at_start", batch.indices, p)

    def training_step(self, batch: Batch) -> StepOutput:
        x = batch.views["student"]
        pair = batch.views["pair"]
        if not (isinstance(x, torch.Tensor) and isinstance(pair, tuple) and len(pair) == 2):
            raise ContractError("contract_toy: the views arrived with the wrong arity")
        self.view_shapes = {"student": list(x.shape), "pair": [list(v.shape) for v in pair]}
        if batch.progress.step != self.updates:
            raise ContractError(f"contract_toy: progress.step {batch.progress.step} != updates made {self.updates}")
        if self.frozen.module.training:
            raise ContractError("contract_toy: the frozen network is in train mode during a training step")
        logits, features = self.net.forward_with_features(x)  # through the prepared module
        if features.shape != (len(x), self.net.module.feature_dim):
            raise ContractError("contract_toy: features of the wrong shape")
        consistency = F.mse_loss(self.net(pair[0]), self.net(pair[1]).detach())
        with torch.no_grad():
            frozen_logits = self.frozen(x)
        loss = F.cross_entropy(logits, batch.labels) + 0.1 * consistency
        store = self.ctx.store
        epoch = batch.progress.epoch
        times_in_batch = torch.bincount(batch.indices, minlength=self.ctx.num_samples)[batch.indices]  # 1 unless repeated
        store.write("visits", batch.indices, store["visits"][batch.indices, epoch] + times_in_batch, column=epoch)
        with torch.no_grad():
            p_given = torch.softmax(logits.float(), 1).gather(1, batch.labels[:, None])[:, 0]
            store.write("p_given_last", batch.indices, p_given)
        agreement = (logits.detach().argmax(1) == frozen_logits.argmax(1)).float()  # one value per sample
        return StepOutput(loss=loss, logits=logits, metrics={"frozen_agreement": agreement,
                                                             "consistency": consistency.detach()})

    def after_optimizer_step(self, progress: Progress) -> None:
        ema_update(self.ema.module, self.net.module, self.args.ema_decay)
        self.updates += 1

    def on_epoch_end(self, epoch: int, train_metrics: Mapping[str, float]) -> dict[str, float]:
        return {"toy_frozen_agreement": train_metrics["frozen_agreement"], "toy_loss": train_metrics["loss"]}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Prediction:
        return Prediction(logits=self.net(images), heads={"ema": self.ema(images), "frozen": self.frozen(images)})

    def sample_outputs(self) -> SampleOutputs:
        p_given = self.ctx.store["p_given_last"].cpu().numpy()
        return SampleOutputs(
            detection=Detection(clean_score=p_given, flagged=p_given < 0.5, detector="contract_toy",
                                rule="P(given label) < 0.5 in the last training pass"),
            columns={"visits_total": self.ctx.store["visits"].sum(1).cpu().numpy()})

    def write_reports(self, out_dir, history, truth) -> None:
        self.truth_seen = truth

    def state_dict(self) -> dict:
        return {"updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])


if "contract_toy" not in METHODS:
    register_method("contract_toy")(ContractToy)

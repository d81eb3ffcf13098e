"""One optimiser step: the method's forward and loss under autocast, backward, the update, the method's after-step
hook. Everything about precision (autocast, the fp16 grad scaler) lives here."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from ..errors import ContractError
from ..methods import Batch, Method, StepOutput


class TrainStep:
    """``step(method, batch) -> StepOutput`` for one batch; ``amp`` is ``none``, ``bf16`` or ``fp16``."""

    def __init__(self, optimizer: torch.optim.Optimizer, amp: str, device: torch.device):
        self.optimizer = optimizer
        self.amp, self.device = amp, device
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16" and device.type == "cuda")

    def autocast(self):
        """Mixed precision for a forward pass (also used for evaluation), or nothing."""
        if self.amp == "none":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if self.amp == "bf16" else torch.float16)

    def __call__(self, method: Method, batch: Batch) -> StepOutput:
        with self.autocast():
            out = method.training_step(batch)
        if not isinstance(out, StepOutput) or not isinstance(out.loss, torch.Tensor) or out.loss.ndim != 0:
            raise ContractError(f"{method.name}.training_step must return a StepOutput with a scalar loss tensor, "
                                f"got {type(out).__name__}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out.loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        method.after_optimizer_step(batch.progress)
        return out

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, optimizer: dict, scaler: dict) -> None:
        self.optimizer.load_state_dict(optimizer)
        self.scaler.load_state_dict(scaler)

"""One optimiser step: the method's forward and loss under autocast, backward, the update, the method's after-step
hook. Everything about precision (autocast, the fp16 grad scaler) lives here, and, in a distributed run, the
averaging of the gradients over the processes (``noisykd.engine.distributed``)."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from ..errors import ContractError
from ..methods import Batch, Method, StepOutput


class TrainStep:
    """``step(method, batch) -> StepOutput`` for one batch; ``amp`` is ``none``, ``bf16`` or ``fp16``."""

    def __init__(self, optimizer: torch.optim.Optimizer, amp: str, device: torch.device, processes=None):
        self.optimizer = optimizer
        self.amp, self.device = amp, device
        self.processes = processes
        self.parameters = [p for group in optimizer.param_groups for p in group["params"]]
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16" and device.type == "cuda")

    def autocast(self):
        """Mixed precision for a forward pass (also used for evaluation), or nothing."""
        if self.amp == "none":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if self.amp == "bf16" else torch.float16)

    def __call__(self, method: Method, batch: Batch, loss_weight: float = 1.0) -> StepOutput:
        """``loss_weight`` (distributed runs): this rank's share of the global batch times the number of ranks,
        b_r * N / B, so that averaging the ranks' gradients gives the gradient of the global batch's mean loss
        also when the ranks' parts differ in size (the last batch of an epoch)."""
        with self.autocast():
            out = method.training_step(batch)
        if not isinstance(out, StepOutput) or not isinstance(out.loss, torch.Tensor) or out.loss.ndim != 0:
            raise ContractError(f"{method.name}.training_step must return a StepOutput with a scalar loss tensor, "
                                f"got {type(out).__name__}")
        self.optimizer.zero_grad(set_to_none=True)
        loss = out.loss if loss_weight == 1.0 else out.loss * loss_weight
        self.scaler.scale(loss).backward()
        if self.processes is not None:
            self.processes.average_gradients(self.parameters)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        method.after_optimizer_step(batch.progress)
        return out

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, optimizer: dict, scaler: dict) -> None:
        self.optimizer.load_state_dict(optimizer)
        self.scaler.load_state_dict(scaler)

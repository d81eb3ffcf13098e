"""The engine's side of network roles: placing, wrapping, optimising, switching modes and saving networks.

Trainable networks are moved, optimised, toggled between train and eval mode, checkpointed and prepared
(compiled on request), the prepared module being what the method's handle calls. In a distributed run their
BatchNorm layers are synchronised on request (``distributed.sync_batchnorm``), their weights start from rank 0's,
and after every epoch their buffers (BatchNorm running statistics) are made equal on every rank, so that
evaluation and every per-sample decision agree; their gradients are averaged by the training step. Shadow
networks (EMA) are moved, kept in eval mode without gradients, and checkpointed. Frozen networks are moved and kept in eval mode without gradients; they are not saved, but their fingerprint is, so
that a resumed run refuses a different teacher.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from ..errors import CheckpointError, ContractError
from ..methods import Network, Role
from .syncbn import convert_sync_batchnorm


class NetworkSet:
    """A method's networks (``Method.networks()``) as the engine handles them."""

    def __init__(self, networks: list[Network], device: torch.device, channels_last: bool = False,
                 sync_batchnorm: bool = False):
        if not networks:
            raise ContractError("the method added no network (Method.add_network)")
        _check_nothing_shared(networks)
        self.all = list(networks)
        self.trainable = [n for n in networks if n.role is Role.TRAINABLE]
        self.fixed = [n for n in networks if n.role is not Role.TRAINABLE]  # shadow and frozen: never trained
        for net in self.all:
            net.module.to(device)
            if channels_last:
                net.module.to(memory_format=torch.channels_last)
        for net in self.fixed:
            net.module.requires_grad_(False)
            net.module.eval()
        self.sync_batchnorm = sync_batchnorm
        if sync_batchnorm:
            for net in self.trainable:
                if convert_sync_batchnorm(net.module, device) is not net.module:
                    raise ContractError(f"network {net.name!r} is a bare BatchNorm layer; sync_batchnorm converts the "
                                        "BatchNorm layers inside a network")
        self.frozen_fingerprints = {n.name: fingerprint(n.module) for n in networks if n.role is Role.FROZEN}

    def prepare(self, compile: bool = False) -> None:
        """Hand each trainable network's prepared module to its handle (compiled in place when asked)."""
        for net in self.trainable:
            if compile:
                net.module.compile()
            net.prepared = net.module

    def broadcast_from_rank0(self, processes) -> None:
        """Every rank starts from rank 0's weights and buffers (trainable and shadow networks), as DDP does."""
        tensors = [t for n in self.all if n.role is not Role.FROZEN for t in n.module.state_dict().values()]
        processes.broadcast_tensors(tensors, "the broadcast of the initial weights")

    def agree_buffers(self, processes) -> None:
        """After an epoch, make the buffers of the trainable and shadow networks equal on every rank. BatchNorm
        running statistics that trained this epoch, gathered by each rank on its part of the batches, are averaged
        over the ranks (timm's ``dist_bn=reduce``); with synchronised BatchNorm they are equal already. Every
        other buffer (batch counters, a network's own buffers), and the running statistics under synchronised
        BatchNorm, are taken from rank 0, bit for bit."""
        if processes.world_size == 1:
            return
        averaged: list[torch.Tensor] = []
        if not self.sync_batchnorm:
            averaged = [b for n in self.all if n.role is not Role.FROZEN for m in n.module.modules()
                        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
                        and m.training  # moved this epoch (not a frozen teacher's layers inside a network)
                        for b in (m.running_mean, m.running_var)]
        chosen = {id(b) for b in averaged}
        rest = [b for n in self.all if n.role is not Role.FROZEN for b in n.module.buffers() if id(b) not in chosen]
        processes.average_tensors(averaged, "the averaging of BatchNorm statistics")
        processes.broadcast_tensors(rest, "the agreement of network buffers")

    def digests(self) -> dict[str, str]:
        """SHA-256 of the state of each trainable and shadow network, by name."""
        return {n.name: fingerprint(n.module) for n in self.all if n.role is not Role.FROZEN}

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """Optimiser parameter groups of the trainable networks, in the order the networks were added:
        consecutive parameters with the same :class:`ParamGroup` settings share a group (one group when
        nothing is set), each with its ``lr_scale`` (used by the schedule) and ``weight_decay``."""
        groups: list[dict] = []
        for net in self.trainable:
            for name, param in net.module.named_parameters():
                if not param.requires_grad:
                    continue
                setting = net.group_of(name)
                decay = weight_decay if setting.weight_decay is None else setting.weight_decay
                if groups and groups[-1]["lr_scale"] == setting.lr_scale and groups[-1]["weight_decay"] == decay:
                    groups[-1]["params"].append(param)
                else:
                    groups.append({"params": [param], "lr_scale": setting.lr_scale, "weight_decay": decay})
        if not groups:
            raise ContractError("the method's trainable networks have no parameter that requires a gradient")
        return groups

    def train(self, training: bool = True) -> None:
        """Switch the trainable networks to train (or eval) mode; shadow and frozen ones stay in eval mode (also
        one that a trainable network holds as a submodule)."""
        for net in self.trainable:
            net.module.train(training)
        for net in self.fixed:
            net.module.eval()

    def check(self, networks: list[Network]) -> None:
        """After an epoch: the method still has the networks it started with (a network added later would be
        neither optimised nor saved), and no shadow or frozen network was switched to train mode (its
        BatchNorm statistics would move)."""
        if [n.name for n in networks] != [n.name for n in self.all]:
            raise ContractError(f"networks {sorted({n.name for n in networks} - {n.name for n in self.all})} were "
                                "added after the method was built; add every network in __init__")
        for net in self.fixed:
            if any(m.training for m in net.module.modules()):
                raise ContractError(f"{net.role.value} network {net.name!r} was switched to train mode; shadow and "
                                    "frozen networks stay in eval mode (the engine never trains them)")

    def state_dict(self) -> dict:
        """Weights of the trainable and shadow networks by name, and the fingerprints of the frozen ones."""
        return {"networks": {n.name: n.module.state_dict() for n in self.all if n.role is not Role.FROZEN},
                "frozen": dict(self.frozen_fingerprints)}

    def load_state_dict(self, networks: dict, frozen: dict | None) -> None:
        """Load weights saved by :meth:`state_dict`; the frozen networks must be the ones fingerprinted then."""
        saved = {n.name for n in self.all if n.role is not Role.FROZEN}
        if set(networks) != saved:
            raise CheckpointError(f"checkpoint networks {sorted(networks)} do not match the method's {sorted(saved)}")
        for net in self.all:
            if net.role is not Role.FROZEN:
                try:
                    net.module.load_state_dict(networks[net.name])
                except (RuntimeError, KeyError, TypeError) as e:
                    first = (str(e).strip().splitlines() or [""])[0][:200]
                    raise CheckpointError(f"the weights of network {net.name!r} in the checkpoint do not fit the network "
                                          f"its config builds ({type(net.module).__name__}): {first}") from None
        for name, digest in (frozen or {}).items():
            if self.frozen_fingerprints.get(name) != digest:
                raise CheckpointError(f"frozen network {name!r} differs from the one this run was trained with "
                                      "(its weights changed since); resume with the original one")


def _check_nothing_shared(networks: list[Network]) -> None:
    """Two networks holding the same module or parameter (a trainable network also added as shadow without a
    copy) would be optimised and frozen at once: refuse, naming them."""
    owner: dict[int, str] = {}
    for net in networks:
        for obj in [net.module, *net.module.parameters()]:
            if id(obj) in owner and owner[id(obj)] != net.name:
                raise ContractError(f"networks {owner[id(obj)]!r} and {net.name!r} share "
                                    f"{'a module' if obj is net.module else 'parameters'}; give each its own "
                                    "(copy.deepcopy for an EMA copy)")
            owner[id(obj)] = net.name


def fingerprint(module: nn.Module) -> str:
    """SHA-256 of a module's state (names, dtypes, shapes and values of every parameter and buffer)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()

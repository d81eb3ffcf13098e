"""One process of a distributed test run, started by torchrun (``tests/test_distributed.py``).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/dist_worker.py SPEC.json

SPEC.json: ``runs``, a list of {``name``, ``config`` (a run config as a dict), ``resume`` (bool, optional),
``may_fail`` (bool: a noisykd error is dumped as ``{"error": message}`` and the next run starts)},
trained one after the other; ``dump``, a folder where each rank writes ``NAME-rank{R}.pt`` per run (history,
summary, store, weights, per-sample outputs, the indices of every batch it trained on and the files it opened
for writing under the run folder); optionally ``kill`` / ``hang`` ([epoch, step_in_epoch, rank]: that rank
SIGKILLs itself / sleeps there), ``inplace_toy`` (register a method that breaks the store rule) and ``own_group`` (the worker creates the process group itself, once, and the
engine uses it: several runs share it, as in a user's own script).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contract_toy  # noqa: E402,F401  (registers the toy method, as in the contract test)

from noisykd.config import load_config  # noqa: E402
from noisykd.engine import Trainer  # noqa: E402
from noisykd.engine.step import TrainStep  # noqa: E402
from noisykd.errors import NoisyKDError  # noqa: E402


def register_inplace_toy() -> None:
    """``inplace_toy``: CE that also marks each sample it trains on by changing the store tensor in place, which
    the contract forbids (the change stays on the process that made it)."""
    from noisykd.methods import METHODS, register_method

    @register_method("inplace_toy")
    class InPlaceToy(METHODS["ce"]):
        def __init__(self, ctx, args=None):
            super().__init__(ctx, args)
            ctx.store.add("seen", dtype=torch.int64, fill=0)

        def training_step(self, batch):
            self.ctx.store["seen"][batch.indices] = 1
            return super().training_step(batch)


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    if spec.get("inplace_toy"):
        register_inplace_toy()
    rank = int(os.environ.get("RANK", 0))
    if spec.get("own_group"):
        dist.init_process_group("gloo")
    written: list[str] = []
    out_dirs: list[str] = []

    def audit(event, args):  # every file this process opens for writing, or renames, under a run folder
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) and args[1] and set("wax+") & set(args[1]):
            path = os.fsdecode(args[0])
        elif event in ("os.rename", "os.mkdir", "os.remove"):
            path = os.fsdecode(args[0])
        else:
            return
        if any(str(Path(path).resolve()).startswith(d) for d in out_dirs):
            written.append(f"{event} {path}")

    sys.addaudithook(audit)
    batches: list[tuple[int, list[int]]] = []
    original = TrainStep.__call__

    def recording(self, method, batch, **kwargs):
        batches.append((batch.progress.epoch, batch.indices.tolist()))
        return original(self, method, batch, **kwargs)

    TrainStep.__call__ = recording

    def on_step(trainer, epoch, step):
        if spec.get("kill") and [epoch, step, rank] == spec["kill"]:
            os.kill(os.getpid(), signal.SIGKILL)
        if spec.get("hang") and [epoch, step, rank] == spec["hang"]:
            time.sleep(3600)

    for run in spec["runs"]:
        written.clear()
        batches.clear()
        out_dirs[:] = [str(Path(run["config"]["out_dir"]).resolve())]
        trainer = Trainer(load_config(base=run["config"]), progress=False, on_step=on_step)
        try:
            result = trainer.run(resume=bool(run.get("resume")))
        except NoisyKDError as e:
            print(f"error: {e}", file=sys.stderr)
            if not run.get("may_fail"):
                return 2
            torch.save({"error": str(e)}, Path(spec["dump"]) / f"{run['name']}-rank{rank}.pt")
            continue
        outputs = trainer.method.sample_outputs()
        torch.save({
            "history": result.history,
            "summary": result.summary,
            "store": trainer.store.state_dict(),
            "weights": trainer.nets.state_dict()["networks"],
            "group": None if outputs.group is None else torch.as_tensor(outputs.group),
            "detector": (trainer.outputs.detector, trainer.outputs.rule),
            "columns": {k: torch.as_tensor(v) for k, v in trainer.outputs.columns.items()},
            "batches": list(batches),
            "written": list(written),
        }, Path(spec["dump"]) / f"{run['name']}-rank{rank}.pt")
    if spec.get("own_group"):
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Data-parallel training over processes (torchrun, gloo on the CPU): the distributed contract of every method,
equivalence with one process, exact resumption, clear errors.

The launched tests start ``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/dist_worker.py``
(see that file): 2 processes, 1 thread each, on the digits cut as in the single-process contract test (321
training samples, batch 64: per epoch 4 batches of 64 and one of 65, split 32/32 ... 33/32 between the ranks).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_contract import EPOCHS, TRAIN_SIZE, contract_config, contract_teacher, strip  # noqa: E402

from noisykd.config import load_config  # noqa: E402
from noisykd.engine import SampleStore, Trainer  # noqa: E402
from noisykd.engine.distributed import Processes, rank_part, resolve_backend  # noqa: E402
from noisykd.engine.feed import training_batch_sizes  # noqa: E402
from noisykd.engine.meters import EpochMeter  # noqa: E402
from noisykd.engine.resume import check_world_size  # noqa: E402
from noisykd.errors import CheckpointError, ConfigError  # noqa: E402
from noisykd.methods import list_methods  # noqa: E402

WORKER = Path(__file__).resolve().parent / "dist_worker.py"
#: measured: after 3 epochs (15 steps) of small_cnn on the digits, 2 processes with synchronised BatchNorm
#: differ from 1 process by at most 2.0e-5 in any weight or buffer on an Intel Xeon and 1.3e-4 on an AMD EPYC
#: (float sums in another order, amplified over the steps), 2e-7 in the epoch's mean loss
WEIGHT_TOLERANCE, LOSS_TOLERANCE = 5e-4, 1e-5


def torchrun(tmp_path: Path, spec: dict, nproc: int = 2, timeout: float = 600) -> subprocess.CompletedProcess:
    """Launch the worker on ``nproc`` processes with ``spec`` (dumps go to tmp_path/dump)."""
    (tmp_path / "dump").mkdir(exist_ok=True)
    path = tmp_path / f"spec-{len(list(tmp_path.glob('spec-*')))}.json"
    path.write_text(json.dumps({"dump": str(tmp_path / "dump"), **spec}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           str(WORKER), str(path)], capture_output=True, text=True, timeout=timeout, env=env)


def dumps(tmp_path: Path, name: str, nproc: int = 2) -> list[dict]:
    return [torch.load(tmp_path / "dump" / f"{name}-rank{r}.pt", weights_only=False) for r in range(nproc)]


def dist_config(method: str, out_dir: Path, **updates) -> dict:
    cfg = contract_config(method, out_dir)
    cfg["threads"] = 1
    for key, value in updates.items():
        section, _, name = key.rpartition(".")
        (cfg[section] if section else cfg)[name] = value
    return cfg


def assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, dict):
            assert_same_tensors(x, y, f"{what}.{key}")
        else:
            assert torch.equal(x.nan_to_num(-1) if x.is_floating_point() else x,
                               y.nan_to_num(-1) if y.is_floating_point() else y), f"{what}.{key}"


# ------------------------------------------------------------------------------------------------------------
# pure pieces, no processes

def test_the_last_batch_rule_gives_every_process_two_samples():
    assert training_batch_sizes(321, 64) == [64, 64, 64, 64, 65]  # one process: a lone sample folds
    assert training_batch_sizes(321, 64, world_size=2) == [64, 64, 64, 64, 65]
    assert training_batch_sizes(324, 64, world_size=2) == [64] * 5 + [4]  # 4 = 2 per process: kept
    assert training_batch_sizes(323, 64, world_size=2) == [64] * 4 + [67]  # 3 < 4: folded
    assert training_batch_sizes(1159, 64, world_size=4) == [64] * 17 + [71]
    parts = [rank_part(torch.arange(65), 2, r) for r in range(2)]
    assert [len(p) for p in parts] == [33, 32] and torch.equal(torch.cat(parts), torch.arange(65))
    assert [len(rank_part(torch.arange(7), 3, r)) for r in range(3)] == [3, 2, 2]


def test_bad_process_setups_are_one_clear_error():
    cfg = load_config("digits/sym40")
    with pytest.raises(ConfigError, match="divisible by the 3 processes.*use 63 or 66"):
        check_world_size(cfg, Processes(world_size=3))
    cfg.optim.batch_size = 4
    with pytest.raises(ConfigError, match="3 processes need at least 6"):
        check_world_size(cfg, Processes(world_size=3))
    with pytest.raises(ConfigError, match="nccl needs CUDA GPUs.*use distributed.backend=gloo"):
        resolve_backend("nccl", torch.device("cpu"))
    assert resolve_backend("auto", torch.device("cpu")) == "gloo"
    with pytest.raises(ConfigError, match="distributed.backend must be one of"):
        load_config("digits/sym40", ["distributed.backend=mpi"])
    with pytest.raises(ConfigError, match=r"timeout_s must lie in \[1, 604800\] seconds"):
        load_config("digits/sym40", ["distributed.timeout_s=0"])


def test_one_process_is_the_identity():
    procs = Processes()
    rows = torch.arange(6.0).reshape(3, 2)
    assert procs.gather_rows(rows) is rows and procs.broadcast_object({"a": 1}) == {"a": 1}
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 3.0)
    procs.average_gradients([p])
    assert torch.equal(p.grad, torch.full((2,), 3.0))
    store = SampleStore(4, processes=procs)
    store.add("x")
    store.write("x", torch.tensor([1]), torch.tensor([2.0]))
    store.synchronize()
    assert store["x"][1] == 2.0 and not store._pending
    meter = EpochMeter(torch.device("cpu"))
    meter.all_reduce(procs)
    assert meter.seen == 0


# ------------------------------------------------------------------------------------------------------------
# the distributed contract: every registered method, 2 processes

@pytest.fixture(scope="module")
def contract_runs(tmp_path_factory):
    """Every registered method (and the toy method), 2 epochs on 2 processes, in one launch: the worker makes
    the process group itself and the engine uses it for each run."""
    tmp = tmp_path_factory.mktemp("dist-contract")
    contract_teacher()  # trained here, once: the worker's distillation methods read it
    methods = list_methods()  # contract_toy included: importing test_contract registered it
    runs = [{"name": m, "config": dist_config(m, tmp / m)} for m in methods]
    done = torchrun(tmp, {"runs": runs, "own_group": True})
    assert done.returncode == 0, done.stderr[-4000:]
    return tmp, methods


@pytest.mark.parametrize("method", list_methods())
def test_every_method_keeps_the_distributed_contract(method, contract_runs):
    tmp, _ = contract_runs
    rank0, rank1 = dumps(tmp, method)
    # every training sample exactly once per epoch, in the rank's part of one batch
    train = np.sort(np.load(tmp / method / "samples.npz")["index"][np.load(tmp / method / "samples.npz")["in_train"] == 1])
    assert len(train) == TRAIN_SIZE
    for epoch in range(EPOCHS):
        parts = [[b for e, b in d["batches"] if e == epoch] for d in (rank0, rank1)]
        assert [len(b) for b in parts[0]] == [32, 32, 32, 32, 33] and [len(b) for b in parts[1]] == [32] * 5
        seen = np.concatenate([np.concatenate(p) for p in parts])
        assert np.array_equal(np.sort(seen), train), "a sample seen twice or not at all"
    # every rank holds the same full store, networks, metrics and per-sample outputs
    assert_same_tensors(rank0["store"], rank1["store"], "store")
    assert_same_tensors(rank0["weights"], rank1["weights"], "weights")
    assert strip(rank0["history"]) == strip(rank1["history"])
    assert rank0["detector"] == rank1["detector"]
    for key in rank0["columns"]:
        x, y = rank0["columns"][key], rank1["columns"][key]
        assert torch.equal(x.nan_to_num(-1), y.nan_to_num(-1)) if x.is_floating_point() else torch.equal(x, y), key
    assert (rank0["group"] is None) == (rank1["group"] is None)
    if rank0["group"] is not None:
        assert torch.equal(rank0["group"], rank1["group"])
    # only rank 0 writes
    assert rank1["written"] == [] and any("summary.json" in w for w in rank0["written"])
    summary = json.loads((tmp / method / "summary.json").read_text())
    assert summary["processes"] == {"world_size": 2, "backend": "gloo", "sync_batchnorm": False}


@pytest.fixture(scope="module")
def syncbn_runs(tmp_path_factory):
    """Every registered method, 1 epoch on 2 processes with synchronised BatchNorm, then ``inplace_toy`` (a
    method that breaks the store rule), in one launch."""
    tmp = tmp_path_factory.mktemp("dist-syncbn")
    contract_teacher()
    methods = list_methods()
    runs = [{"name": m, "config": dist_config(m, tmp / m, **{"distributed.sync_batchnorm": True, "optim.epochs": 1,
                                                              "data.train_subset": 192, "distributed.timeout_s": 60.0})}
            for m in methods]
    runs.append({"name": "inplace", "may_fail": True,  # registered in the worker only
                 "config": {**dist_config("ce", tmp / "inplace", **{"optim.epochs": 1}), "method": "inplace_toy"}})
    done = torchrun(tmp, {"runs": runs, "own_group": True, "inplace_toy": True})
    assert done.returncode == 0, done.stderr[-4000:]
    return tmp, methods


def test_every_method_runs_with_synchronised_batchnorm(syncbn_runs):
    """Synchronised BatchNorm makes every BatchNorm forward a collective: it needs every process to call each
    network the same number of times per step, which every registered method does (else the launch would stop
    at the timeout)."""
    tmp, methods = syncbn_runs
    for method in methods:
        rank0, rank1 = dumps(tmp, method)
        assert_same_tensors(rank0["store"], rank1["store"], f"{method} store")
        assert_same_tensors(rank0["weights"], rank1["weights"], f"{method} weights")


def test_a_store_changed_in_place_stops_the_run_naming_the_entry(syncbn_runs):
    tmp, _ = syncbn_runs
    for dump in dumps(tmp, "inplace"):  # both processes stop, with the same message
        assert "store entry 'seen' differ between the processes: a method changed the store in place" in dump["error"]
        assert "ctx.store.write" in dump["error"]


def test_three_processes_split_batches_and_keep_one_store(tmp_path):
    """A world size that is not a power of two: batch 66, 321 samples -> 4 batches of 66 (22 per process) and
    one of 57 (19 each); BatchNorm averaged over 3 processes; the toy method (store writes in every step, an EMA
    network, a frozen one, a pass over the training set)."""
    contract_teacher()
    run = {"name": "contract_toy", "config": dist_config("contract_toy", tmp_path / "contract_toy",
                                                         **{"optim.batch_size": 66})}
    done = torchrun(tmp_path, {"runs": [run], "own_group": True}, nproc=3)
    assert done.returncode == 0, done.stderr[-4000:]
    train = np.flatnonzero(np.load(tmp_path / "contract_toy" / "samples.npz")["in_train"] == 1)
    ranks = dumps(tmp_path, "contract_toy", nproc=3)
    for epoch in range(EPOCHS):
        parts = [[b for e, b in d["batches"] if e == epoch] for d in ranks]
        assert all([len(b) for b in p] == [22, 22, 22, 22, 19] for p in parts)
        assert np.array_equal(np.sort(np.concatenate([np.concatenate(p) for p in parts])), train)
    for other in ranks[1:]:
        assert_same_tensors(ranks[0]["store"], other["store"], "store")
        assert_same_tensors(ranks[0]["weights"], other["weights"], "weights")


def test_store_written_in_training_steps_is_complete_on_every_rank(contract_runs):
    """BKD records P_T / P_S / P_A of every training pass in its step: each rank trains on half the samples, yet
    every rank's store has a value for every training sample and epoch, and none for the others."""
    tmp, _ = contract_runs
    rank0, rank1 = dumps(tmp, "bkd")
    in_train = torch.from_numpy(np.load(tmp / "bkd" / "samples.npz")["in_train"] == 1)
    for store in (rank0["store"], rank1["store"]):
        history = store["p_agree_history"]
        assert not history[in_train].isnan().any() and history[~in_train].isnan().all()
    toy0, toy1 = dumps(tmp, "contract_toy")
    for store in (toy0["store"], toy1["store"]):  # visits (sample, epoch): +1 in the step of whichever rank saw it
        visits = store["visits"]
        assert (visits[in_train] == 1).all() and visits.sum() == EPOCHS * TRAIN_SIZE


# ------------------------------------------------------------------------------------------------------------
# equivalence with one process

def test_two_processes_match_one_with_synchronised_batchnorm(tmp_path):
    cfg = dist_config("ce", tmp_path / "one", **{"augment.policy": "none", "optim.epochs": 3,
                                                  "distributed.sync_batchnorm": True})
    one = Trainer(load_config(base=cfg), progress=False)
    one_history = one.run().history
    done = torchrun(tmp_path, {"runs": [{"name": "two", "config": {**cfg, "out_dir": str(tmp_path / "two")}}]})
    assert done.returncode == 0, done.stderr[-4000:]
    two = dumps(tmp_path, "two")[0]
    worst = 0.0
    for key, tensor in one.nets.state_dict()["networks"]["net"].items():
        worst = max(worst, (tensor.double() - two["weights"]["net"][key].double()).abs().max().item())
    assert worst < WEIGHT_TOLERANCE, worst
    for a, b in zip(one_history, two["history"]):
        assert abs(a["train_loss"] - b["train_loss"]) < LOSS_TOLERANCE
        assert abs(a["train_acc_noisy"] - b["train_acc_noisy"]) <= 1 / TRAIN_SIZE  # at most one near-tie flips
        assert abs(a["test_acc"] - b["test_acc"]) <= 1 / 540


# ------------------------------------------------------------------------------------------------------------
# resumption, dead and silent processes

@pytest.mark.parametrize("method", ["bkd", "modul"])  # per-step store writes; the method's generator in steps
def test_a_killed_distributed_run_resumes_to_the_uninterrupted_result(method, tmp_path, contract_runs):
    tmp, _ = contract_runs
    reference = dumps(tmp, method)[0]
    cfg = dist_config(method, tmp_path / "killed")
    killed = torchrun(tmp_path, {"runs": [{"name": "killed", "config": cfg}], "kill": [1, 2, 1]})
    assert killed.returncode != 0  # rank 1 SIGKILLed mid-epoch 2; torchrun stops rank 0
    assert (tmp_path / "killed" / "checkpoints" / "last.pt").is_file()

    with pytest.raises(CheckpointError, match="written by a run of 2 processes, resumed with 1; resume with 2"):
        Trainer(load_config(base=cfg), progress=False).run(resume=True)

    done = torchrun(tmp_path, {"runs": [{"name": "resumed", "config": cfg, "resume": True}]})
    assert done.returncode == 0, done.stderr[-4000:]
    resumed = dumps(tmp_path, "resumed")[0]
    assert strip(resumed["history"]) == strip(reference["history"])
    assert_same_tensors(resumed["weights"], reference["weights"], "weights")
    assert_same_tensors(resumed["store"], reference["store"], "store")


def test_a_silent_process_stops_the_others_with_a_message(tmp_path):
    cfg = dist_config("ce", tmp_path / "run", **{"distributed.timeout_s": 5.0})
    done = torchrun(tmp_path, {"runs": [{"name": "hang", "config": cfg}], "hang": [0, 1, 1]}, timeout=120)
    assert done.returncode != 0
    assert "no answer from the other processes" in done.stderr and "distributed.timeout_s" in done.stderr


def test_devices_option_launches_the_processes(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "noisykd", "train", "--config", "digits/sym40", "--epochs", "1",
                           "--set", "data.train_subset=200", "--threads", "1", "--out", str(out), "--devices", "2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert json.loads((out / "summary.json").read_text())["processes"]["world_size"] == 2
    assert done.stdout.count("outputs in") == 1  # rank 0 prints the summary, once
    more = subprocess.run([sys.executable, "-m", "noisykd", "train", "--resume", str(out), "--epochs", "2", "--extend",
                           "--devices", "2"], capture_output=True, text=True, timeout=300)
    assert more.returncode == 0, more.stderr[-4000:]
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 3  # header, epoch 1, epoch 2 (resumed)
    bad = subprocess.run([sys.executable, "-m", "noisykd", "train", "--config", "digits/sym40", "--out",
                          str(tmp_path / "bad"), "--set", "optim.batch_size=63", "--devices", "2"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "divisible by the 2 processes" in bad.stderr and not (tmp_path / "bad").exists()

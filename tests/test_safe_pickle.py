"""The safe unpickler, by construction (issue 24): genuine pickles read back as the values pickled; every
forged recipe refused with a specific error in a subprocess (a crash would show as a signal); a fuzzer over
mutated, truncated and generated pickles and checkpoints."""

from __future__ import annotations

import collections
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from noisykd.errors import DataError, UnsafePickleError
from noisykd.safe_pickle import MAX_DEPTH, check_checkpoint_pickle, loads

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"


def run_forger(*args: str, timeout: int = 300) -> dict:
    """Run forged_pickles.py in a subprocess; a signal (crash) fails the test with its code."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(HERE / "forged_pickles.py"), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])  # -11 would be a segfault
    return json.loads(proc.stdout)


def same(a, b) -> None:
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
        assert a.flags.f_contiguous == b.flags.f_contiguous and a.flags.writeable
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            same(x, y)
    else:
        assert a == b


VALUES = {b"data": np.arange(24, dtype=np.uint8).reshape(2, 12), "labels": [3, 1, 4], "names": [b"cat", "dog"],
          "float": 1.5, "nested": (1, (2, np.int64(3))), "big": 2**70, "negative": -5, "none": None, "yes": True,
          "strings": np.array(["ab", "c"]), "bytes": np.array([b"xy", b"z"]), "empty": np.zeros((0, 3)),
          "big_endian_fortran": np.asfortranarray(np.arange(6, dtype=">f4").reshape(2, 3)),
          "complex": np.complex64(1 + 2j), "bools": np.array([True, False]), "empty_bytes": b"", "text": "é"}


@pytest.mark.parametrize("protocol", range(6))
def test_genuine_pickles_read_back_as_the_values_pickled(protocol):
    same(VALUES, loads(pickle.dumps(VALUES, protocol=protocol), source="x"))


def test_an_ordered_dict_reads_as_a_dict():
    assert loads(pickle.dumps(collections.OrderedDict(a=1, b=[2]), protocol=2), source="x") == {"a": 1, "b": [2]}


@pytest.mark.skipif(not (SHARED / "cifar-n" / "CIFAR-10_human.pt").is_file(), reason="../shared CIFAR-N absent")
def test_the_real_cifar_n_file_reads_as_torch_reads_it():
    from noisykd.safe_pickle import load_torch_zip_pickle

    path = SHARED / "cifar-n" / "CIFAR-10_human.pt"
    same(torch.load(path, weights_only=False), load_torch_zip_pickle(path))


def test_nesting_up_to_the_cap_loads_and_one_more_is_refused():
    def nested(depth):
        value = 0
        for _ in range(depth):
            value = [value]
        return pickle.dumps(value, protocol=2)

    assert loads(nested(MAX_DEPTH), source="x") is not None
    with pytest.raises(UnsafePickleError, match=f"nested more than {MAX_DEPTH} deep"):
        loads(nested(MAX_DEPTH + 1), source="x")


def test_an_array_shared_in_two_places_is_read_once_and_kept():
    a = np.arange(3)
    out = loads(pickle.dumps({"x": a, "y": [a, (a,)]}, protocol=2), source="x")
    assert out["x"] is out["y"][0] is out["y"][1][0]


def test_truncated_at_every_offset_is_a_data_error_naming_the_source():
    data = pickle.dumps({b"labels": [1, 2], b"data": np.ones((2, 3), np.uint8)}, protocol=2)
    for k in range(len(data)):
        with pytest.raises(DataError, match="^part: "):
            loads(data[:k], source="part")


def test_forged_recipes_are_each_refused_with_their_reason(tmp_path):
    results = run_forger("recipes", str(tmp_path))
    expected = {  # recipe -> (error, words of its reason)
        "dtype_rebuilt": ("UnsafePickleError", "a dtype given its state a second time"),
        "dtype_rebuilt_huge": ("UnsafePickleError", "a dtype given its state a second time"),
        "ndarray_call_strings": ("UnsafePickleError", "calls numpy.ndarray, which is never called"),
        "ndarray_call_images": ("UnsafePickleError", "calls numpy.ndarray, which is never called"),
        "callable_as_value": ("UnsafePickleError", "a value of the kind Token"),
        "deep_tuple_key": ("UnsafePickleError", "nested more than 64 deep"),
        "deep_lists": ("UnsafePickleError", "nested more than 64 deep"),
        "self_holding_list": ("UnsafePickleError", "a container that holds itself"),
        "invalid_utf8": ("DataError", "UnicodeDecodeError"),
        "overflowing_shape": ("UnsafePickleError", "not raw bytes of the array's size"),
        "short_raw": ("UnsafePickleError", "not raw bytes of the array's size"),
        "object_dtype": ("UnsafePickleError", "the dtype object"),
        "dtype_flags": ("UnsafePickleError", "flags 63"),
        "length_past_end": ("DataError", "past the end of the file"),
        "huge_long": ("UnsafePickleError", "an integer of 2147483647 bytes"),
        "os_system": ("UnsafePickleError", "the global os.system"),
        "zip_bomb": ("UnsafePickleError", "declares 314,572,803 bytes once inflated"),
    }
    assert set(results) == set(expected)
    for name, (error, reason) in expected.items():
        got = results[name]
        assert got["outcome"] == error and reason in got["message"], (name, got)
        assert str(tmp_path) in got["message"]  # names the file


def test_fuzzed_pickles_never_crash_and_load_only_plain_values():
    summary = run_forger("fuzz", "0", "20000")
    assert summary["failures"] == [], summary["failures"][:5]
    assert summary["cases"] == 20000
    # the fuzzer reaches both sides: some mutations still load (plain values only), most are refused
    assert summary["loaded"] > 100 and summary["refused"] > 1000 and summary["unreadable"] > 1000, summary


def test_fuzzed_checkpoints_load_or_raise_a_checkpoint_error(tmp_path):
    summary = run_forger("checkpoints", "0", "1500", str(tmp_path))
    assert summary["failures"] == [], summary["failures"][:5]
    assert summary["loaded"] >= 1 and summary["refused"] > 500, summary


def test_a_checkpoint_pickle_with_a_deep_tuple_key_is_refused_before_torch_reads_it():
    sys.path.insert(0, str(HERE))
    try:
        from forged_pickles import deep_key_checkpoint
    finally:
        sys.path.remove(str(HERE))
    with pytest.raises(UnsafePickleError, match="nested more than"):
        check_checkpoint_pickle(deep_key_checkpoint(), source="forged.pt")


def test_forged_checkpoint_gives_one_line_from_eval_and_as_a_teacher(tmp_path):
    sys.path.insert(0, str(HERE))
    try:
        from forged_pickles import deep_key_checkpoint, forged_checkpoint
    finally:
        sys.path.remove(str(HERE))
    forged = tmp_path / "forged.pt"
    forged_checkpoint(str(forged), deep_key_checkpoint())
    for command in (["eval", str(forged)],
                    ["train", "--method", "vkd", "--model", "mlp", "--epochs", "1", "--set",
                     f"method_args.teacher={forged}", "--out", str(tmp_path / "run")]):
        proc = subprocess.run([sys.executable, "-m", "noisykd.cli", *command], capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode in (1, 2), (command, proc.returncode, proc.stderr[-2000:])  # a crash would be -11
        assert "Traceback" not in proc.stderr and "nested more than 64 deep" in " ".join(proc.stderr.split())
    assert not (tmp_path / "run").exists()

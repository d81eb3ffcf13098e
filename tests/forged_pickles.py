"""Forged pickles for the safe unpickler's tests: the recipes of issue 24 and a fuzzer.

Run as a script (in a subprocess, so that a crash shows as a signal, not a dead test run):
``python forged_pickles.py recipes OUT_DIR`` writes one file per recipe and prints, per recipe, what loading it
gave; ``python forged_pickles.py fuzz SEED N`` loads N mutated and generated pickles and prints a summary.
"""

from __future__ import annotations

import json
import pickle
import random
import struct
import sys
import time
import zipfile

import numpy as np

# ------------------------------------------------------------------------------------------------------------
# a tiny assembler: opcodes by name, so that each recipe reads as the pickle it is


def u(text: str) -> bytes:
    """SHORT_BINUNICODE or BINUNICODE of ``text``."""
    raw = text.encode("utf-8")
    return (b"\x8c" + bytes([len(raw)]) if len(raw) < 256 else b"X" + struct.pack("<I", len(raw))) + raw


def b(raw: bytes) -> bytes:
    """SHORT_BINBYTES or BINBYTES of ``raw``."""
    return (b"C" + bytes([len(raw)]) if len(raw) < 256 else b"B" + struct.pack("<I", len(raw))) + raw


def i(n: int) -> bytes:
    """BININT1 / BININT / LONG1 of ``n``."""
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if -2**31 <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def g(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def tup(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


PROTO = b"\x80\x02"
NONE, TRUE, FALSE, STOP, REDUCE, BUILD = b"N", b"\x88", b"\x89", b".", b"R", b"b"
RECONSTRUCT = g("numpy.core.multiarray", "_reconstruct")


def dtype(spec: str, state: bytes | None = None, put: int | None = None) -> bytes:
    """numpy.dtype(spec, False, True) [+ BINPUT put] [+ BUILD(state)]."""
    out = g("numpy", "dtype") + tup(u(spec), FALSE, TRUE) + REDUCE
    if put is not None:
        out += b"q" + bytes([put])
    return out + (state + BUILD if state is not None else b"")


def dtype_state(byteorder: str = "|", elsize: int = -1, flags: int = 0) -> bytes:
    return tup(i(3), u(byteorder), NONE, NONE, NONE, i(elsize) if elsize >= 0 else b"J\xff\xff\xff\xff",
               b"J\xff\xff\xff\xff", i(flags))


def array(shape: tuple, dtype_code: bytes, raw: bytes) -> bytes:
    """_reconstruct(ndarray, (0,), b'b') + BUILD((1, shape, dtype, False, raw))."""
    return (RECONSTRUCT + tup(g("numpy", "ndarray"), tup(i(0)), b(b"b")) + REDUCE
            + tup(i(1), tup(*[i(n) for n in shape]), dtype_code, FALSE, b(raw)) + BUILD)


def meta(*pairs: bytes) -> bytes:
    """A batches.meta-like dict: label_names + num_vis + the extra key/value pairs."""
    names = b"]" + b"(" + b"".join(b(n.encode()) for n in ("a", "b")) + b"e"
    return PROTO + b"}" + b"(" + b(b"label_names") + names + b(b"num_vis") + i(3072) + b"".join(pairs) + b"u" + STOP


# ------------------------------------------------------------------------------------------------------------
# the recipes (issue 24): each must be refused with a specific error, never crash or leak memory

def recipes() -> dict[str, bytes]:
    out = {}
    # a memoised S1 dtype, an 8-byte array of it, then GET the dtype and BUILD it again with elsize 64
    s1 = dtype("S1", dtype_state("|", 1, 0), put=1)
    out["dtype_rebuilt"] = meta(b(b"x") + array((8,), s1, b"abcdefgh"),
                                b(b"y") + b"h\x01" + dtype_state("|", 64, 0) + BUILD)
    # the same with an item size of 2**30 on the second BUILD
    out["dtype_rebuilt_huge"] = meta(b(b"x") + array((8,), s1, b"abcdefgh"),
                                     b(b"y") + b"h\x01" + dtype_state("|", 2**30, 0) + BUILD)
    # numpy.ndarray called through REDUCE: uninitialised memory
    out["ndarray_call_strings"] = meta(b(b"x") + g("numpy", "ndarray") + tup(tup(i(3)), u("S40")) + REDUCE)
    out["ndarray_call_images"] = meta(b(b"data") + g("numpy", "ndarray") + tup(tup(i(4), i(3072)), u("u1")) + REDUCE)
    # the allowed codec callable itself as a value (its repr prints an address)
    out["callable_as_value"] = PROTO + b"}" + b(b"label_names") + b"]" + g("_codecs", "encode") + b"a" + b"s" + STOP
    # a 1,000,000-deep tuple used as a dict key (hashing it recursed on the C stack: SIGSEGV)
    out["deep_tuple_key"] = meta(i(1) + b"\x85" * 1_000_000 + i(1))
    # 10,000-deep nested class names (RecursionError)
    out["deep_lists"] = PROTO + b"}" + b(b"label_names") + b"]" * 10_000 + b"a" * 9_999 + b"s" + STOP
    # a list that holds itself
    out["self_holding_list"] = PROTO + b"}" + b(b"label_names") + b"]q\x00h\x00a" + b"s" + STOP
    # class names that are not UTF-8
    out["invalid_utf8"] = PROTO + b"}" + b(b"label_names") + b"]" + b"X\x02\x00\x00\x00\xff\xfe" + b"a" + b"s" + STOP
    # a shape whose size overflows 64 bits: (2**61 + 1, 8) of 8 bytes
    out["overflowing_shape"] = meta(b(b"x") + array((2**61 + 1, 8), dtype("u1"), b"12345678"))
    # raw bytes shorter than the array (numpy would read past them)
    out["short_raw"] = meta(b(b"x") + array((1000,), dtype("i8"), b"\x10" * 8))
    # an object dtype filled from raw bytes (pointers)
    out["object_dtype"] = meta(b(b"x") + array((1,), dtype("O8"), b"\x10" * 8))
    # a plain dtype whose state claims flags of an object dtype
    out["dtype_flags"] = meta(b(b"x") + array((1,), dtype("i8", dtype_state("<", -1, 63)), b"\x10" * 8))
    # a declared length far past the end of the file
    out["length_past_end"] = PROTO + b"}" + b(b"x") + b"\x8e" + struct.pack("<Q", 2**62) + b"s" + STOP
    # a 4 GB integer
    out["huge_long"] = PROTO + b"\x8b" + struct.pack("<i", 2**31 - 1) + STOP
    # a global that runs code
    out["os_system"] = PROTO + g("os", "system") + tup(u("echo pwned")) + REDUCE + STOP
    return out


def zip_bomb(path: str, inflated_mib: int = 300) -> None:
    """A torch-style archive whose data.pkl inflates to ``inflated_mib`` MiB of zeros (a few hundred kB)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("archive/data.pkl", "w", force_zip64=True) as f:
            f.write(PROTO + b"}")
            zeros = b"\0" * 2**20
            for _ in range(inflated_mib):
                f.write(zeros)
        archive.writestr("archive/version", "3\n")


def forged_checkpoint(path: str, payload: bytes) -> None:
    """A zip archive laid out as torch.save writes it (valid CRCs), holding ``payload`` as data.pkl."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")


def deep_key_checkpoint() -> bytes:
    """A checkpoint's pickle with a 1,000,000-deep tuple as a dict key."""
    return PROTO + b"}" + b"(" + u("format") + i(1) + i(1) + b"\x85" * 1_000_000 + i(1) + b"u" + STOP


# ------------------------------------------------------------------------------------------------------------
# the fuzzer

def fixtures() -> list[bytes]:
    """Genuine pickles of the shapes the data files hold, in every protocol."""
    rng = np.random.default_rng(0)
    batch = {b"batch_label": b"training batch 1 of 5", b"labels": [3, 1, 4, 1, 5],
             b"data": rng.integers(0, 256, (5, 12), dtype=np.uint8), b"filenames": [b"a.png", b"b.png"]}
    labels = {"clean_label": rng.integers(0, 10, 6), "worse_label": rng.integers(0, 10, 6).astype(np.int32),
              "names": ["cat", "dog"], "scale": np.float32(0.5), "fortran": np.asfortranarray(np.ones((2, 3), ">f8"))}
    return [pickle.dumps(obj, protocol=p) for obj in (batch, labels) for p in range(6)]


def mutate(data: bytes, rnd: random.Random) -> bytes:
    data = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        kind = rnd.random()
        pos = rnd.randrange(len(data) + 1)
        if kind < 0.4 and data:
            data[min(pos, len(data) - 1)] = rnd.randrange(256)
        elif kind < 0.6:
            data[pos:pos] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 8)))
        elif kind < 0.8:
            del data[pos:pos + rnd.randint(1, 8)]
        else:  # an interesting opcode or value at a random place
            data[pos:pos] = rnd.choice([b"b", b"R", b"h\x01", b"h\x02", b"\x85" * 100, b"]" * 80 + b"a" * 79,
                                        b"\xff\xff\xff\x7f", b"\x8e" + b"\xff" * 8, b"(", b"u", b"s", b"a", b"0"])
    return bytes(data)


_GENERATED = [b"(", b")", b"]", b"}", b"N", b"\x88", b"\x89", b"K\x07", b"J\xff\xff\xff\xff", b"\x8a\x01\x05",
              b"G" + struct.pack(">d", 1.5), b"C\x03abc", b"\x8c\x01x", b"X\x01\x00\x00\x00y", b"t", b"\x85",
              b"\x86", b"\x87", b"a", b"e", b"s", b"u", b"d", b"l", b"0", b"1", b"q\x00", b"q\x01", b"h\x00",
              b"h\x01", b"\x94", b"R", b"b", b"\x81", b"Q", g("numpy", "dtype"), g("numpy", "ndarray"),
              RECONSTRUCT, g("numpy.core.multiarray", "scalar"), g("_codecs", "encode"),
              g("collections", "OrderedDict"), u("u1"), u("S1"), u("|"), u("<"), tup(i(0)), b(b"b"),
              dtype_state("|", 1, 0), dtype_state("|", 64, 0), tup(i(2)), b"C\x02\x00\x01"]


def generate(rnd: random.Random) -> bytes:
    """A random opcode stream from the pieces these files are made of."""
    return PROTO + b"".join(rnd.choice(_GENERATED) for _ in range(rnd.randint(1, 40))) + STOP


def plain(value, limit: int, depth: int = 0) -> None:
    """Assert a loaded value is made of plain values only and no array is larger than the file."""
    assert depth <= 70, "nested deeper than the cap"
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, (str, bytes, int, float, bool, type(None))), type(k)
            plain(v, limit, depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value:
            plain(v, limit, depth + 1)
    elif isinstance(value, np.ndarray):
        assert value.dtype.kind in "biufcSU" and not value.dtype.hasobject, value.dtype
        assert value.nbytes <= limit, (value.nbytes, limit)
    else:
        assert value is None or isinstance(value, (bool, int, float, str, bytes, np.generic)), type(value)


def fuzz(seed: int, n: int) -> dict:
    from noisykd.errors import DataError
    from noisykd.safe_pickle import loads

    rnd = random.Random(seed)
    bases = fixtures()
    cases: list[bytes] = []
    small = bases[2]  # truncations at every offset of one fixture
    cases += [small[:k] for k in range(len(small))]
    while len(cases) < n:
        r = rnd.random()
        cases.append(mutate(rnd.choice(bases), rnd) if r < 0.6 else generate(rnd))
    counts = {"loaded": 0, "refused": 0, "unreadable": 0, "failures": []}
    start = time.perf_counter()
    for k, data in enumerate(cases):
        try:
            value = loads(data, source=f"case{k}", encoding=rnd.choice(["ASCII", "bytes", "latin1"]))
        except DataError as e:
            assert str(e).startswith(f"case{k}: "), str(e)
            counts["refused" if "refused to load" in str(e) else "unreadable"] += 1
            continue
        except Exception as e:  # noqa: BLE001 - anything else is a failure to report
            counts["failures"].append(f"case {k} ({data[:60]!r}...): {type(e).__name__}: {e}"[:300])
            continue
        try:
            plain(value, len(data))
            counts["loaded"] += 1
        except AssertionError as e:
            counts["failures"].append(f"case {k}: loaded a value that is not plain: {e}"[:300])
    counts["seconds"] = round(time.perf_counter() - start, 2)
    counts["cases"] = len(cases)
    return counts


def checkpoint_fuzz(seed: int, n: int, work: str) -> dict:
    """Mutations of a genuine checkpoint's data.pkl, packed with its tensors (valid CRCs) and read as noisykd
    reads a checkpoint: the result is a dict or a CheckpointError, never a crash or another exception."""
    from collections import OrderedDict
    from pathlib import Path

    import torch

    from noisykd.engine.checkpoint import load_checkpoint
    from noisykd.errors import CheckpointError

    rnd = random.Random(seed)
    genuine = Path(work) / "genuine.pt"
    torch.save({"format": 3, "config": {"method": "ce", "optim": {"lr": 0.1, "milestones": [1, 2]}},
                "model": OrderedDict(w=torch.ones(2, 3), b=torch.zeros(3, dtype=torch.int64)),
                "rng": (3, tuple(range(5)), None), "history": [{"epoch": 0, "acc": 0.5}]}, genuine)
    with zipfile.ZipFile(genuine) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    pkl = next(name for name in members if name.endswith("data.pkl"))
    counts = {"loaded": 0, "refused": 0, "failures": [], "cases": n}
    start = time.perf_counter()
    path = Path(work) / "forged.pt"
    for k in range(n):
        data = mutate(members[pkl], rnd) if k else members[pkl]
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, raw in members.items():
                archive.writestr(name, data if name == pkl else raw)
        try:
            state = load_checkpoint(path)
            assert isinstance(state, dict)
            counts["loaded"] += 1
        except CheckpointError as e:
            assert str(e).startswith(str(path)), str(e)
            counts["refused"] += 1
        except Exception as e:  # noqa: BLE001 - anything else is a failure to report
            counts["failures"].append(f"case {k} ({data[:60]!r}...): {type(e).__name__}: {e}"[:300])
    counts["seconds"] = round(time.perf_counter() - start, 2)
    return counts


def run_recipes(out_dir: str) -> dict:
    from pathlib import Path

    from noisykd.errors import NoisyKDError
    from noisykd.safe_pickle import load_pickle, load_torch_zip_pickle

    results = {}
    for name, data in recipes().items():
        path = Path(out_dir) / name
        path.write_bytes(data)
        try:
            value = load_pickle(path, encoding="bytes")
            results[name] = {"outcome": "loaded", "value": repr(value)[:200]}
        except NoisyKDError as e:
            results[name] = {"outcome": type(e).__name__, "message": str(e)}
    bomb = Path(out_dir) / "CIFAR-10_human.pt"
    zip_bomb(str(bomb))
    try:
        load_torch_zip_pickle(bomb)
        results["zip_bomb"] = {"outcome": "loaded"}
    except NoisyKDError as e:
        results["zip_bomb"] = {"outcome": type(e).__name__, "message": str(e)}
    return results


if __name__ == "__main__":
    sys.setrecursionlimit(10_000)  # a recursion would now reach the C stack, as in a deep C call
    if sys.argv[1] == "recipes":
        print(json.dumps(run_recipes(sys.argv[2])))
    elif sys.argv[1] == "checkpoints":
        print(json.dumps(checkpoint_fuzz(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])))
    elif sys.argv[1] == "fuzz":
        print(json.dumps(fuzz(int(sys.argv[2]), int(sys.argv[3]))))
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]!r}")

"""Reading pickled numpy data without executing arbitrary code or trusting forged memory.

The official CIFAR batches and the CIFAR-N ``.pt`` files are pickles of dicts holding numpy arrays.
``pickle.load`` would run whatever callable a (tampered) file names; ``torch.load(weights_only=True)``
refuses numpy arrays. :class:`RestrictedUnpickler` resolves only the globals that rebuild numpy arrays and
plain containers, and refuses everything else before it can run.

Allowing numpy's own globals is not enough: a pickle can build a structured dtype with an object field and
its flags cleared (``dtype.__setstate__``), then fill an array of it from raw bytes, which numpy then reads as
object pointers (a crash, or worse). So only plain dtypes are ever built (booleans, integers, floats,
complex numbers, fixed-width strings: no object, void or structured dtypes), the state given to a dtype or an
array is checked before numpy sees it, and arrays are built from raw bytes only, never from lists of objects.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError, UnsafePickleError


def _numpy_reconstruct():
    # numpy 2 moved numpy.core to numpy._core; old pickles name the former, new ones the latter.
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _numpy_scalar():
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    return scalar


def _codecs_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Python 3 pickles (protocol <= 2) store bytes as _codecs.encode(str, 'latin1'): only text encodings.
    if encoding not in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
        raise UnsafePickleError(f"pickle asked _codecs.encode for encoding {encoding!r}; only latin1/utf-8 allowed")
    return text.encode(encoding)


#: Kinds of the dtypes a data file may hold: bool, signed / unsigned int, float, complex, bytes, unicode.
PLAIN_KINDS = frozenset("biufcSU")


def _check_plain(dtype: Any) -> np.dtype:
    """``dtype`` if it is a plain numpy dtype (no object, void, structured or sub-array dtype), else refuse."""
    if not isinstance(dtype, np.dtype):
        raise UnsafePickleError(f"refused to load: expected a numpy dtype, got {type(dtype).__name__}")
    if dtype.kind not in PLAIN_KINDS or dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise UnsafePickleError(f"refused to load: the data holds the dtype {dtype!s} (kind {dtype.kind!r}); only "
                                "plain numeric and string arrays are read")
    return dtype


def _safe_dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    # numpy pickles a dtype as numpy.dtype("i8", False, True) + BUILD(state); only a string spec is taken
    if isinstance(spec, bytes):  # a Python 2 pickle's type string
        spec = spec.decode("latin1")
    if not isinstance(spec, str):
        raise UnsafePickleError(f"refused to load: a dtype built from {type(spec).__name__}, not a type string")
    return _check_plain(np.dtype(spec))


def _safe_dtype_class(cls):
    # numpy >= 1.25 may pickle a dtype through its numpy.dtypes.XDType class
    def build(*args):
        return _check_plain(cls(*args))

    return build


def _dtype_classes() -> dict[tuple[str, str], Any]:
    found: dict[tuple[str, str], Any] = {}
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in dir(dtypes):
            if name.endswith("DType") and name not in ("ObjectDType", "VoidDType"):
                found[("numpy.dtypes", name)] = _safe_dtype_class(getattr(dtypes, name))
    return found


def _safe_reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
    # numpy pickles an array as _reconstruct(ndarray, (0,), b"b") + BUILD(state): an empty placeholder
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"refused to load: an array of the class {getattr(subtype, '__name__', subtype)}")
    if typecode not in (b"b", "b"):
        raise UnsafePickleError(f"refused to load: an array placeholder of type code {typecode!r}")
    return _numpy_reconstruct()(np.ndarray, (0,), b"b")


def _safe_scalar(dtype: Any, data: Any = None) -> Any:
    # numpy pickles a scalar as scalar(dtype, raw_bytes)
    _check_plain(dtype)
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise UnsafePickleError(f"refused to load: a numpy scalar of {dtype} from {type(data).__name__}")
    return _numpy_scalar()(dtype, data)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy.core.multiarray", "scalar"): _safe_scalar,
    ("numpy._core.multiarray", "scalar"): _safe_scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _safe_dtype,
    ("_codecs", "encode"): _codecs_encode,
    ("collections", "OrderedDict"): __import__("collections").OrderedDict,
    **_dtype_classes(),
}


def _check_build(inst: Any, state: Any) -> None:
    """What BUILD may set: a plain dtype's own (non-structured) state, and an array's shape, plain dtype and raw
    bytes of exactly the right size. Anything else is refused before numpy reads it."""
    if isinstance(inst, np.dtype):
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags)
        if not (isinstance(state, tuple) and len(state) in (8, 9) and state[2] is None and state[3] is None
                and state[4] is None):
            raise UnsafePickleError(f"refused to load: a dtype with sub-arrays or fields")
        if state[-1] != inst.flags:
            raise UnsafePickleError(f"refused to load: a dtype whose flags were changed")
        return
    if isinstance(inst, np.ndarray):
        # (version, shape, dtype, is_fortran, raw bytes)
        if not (isinstance(state, tuple) and len(state) in (4, 5)):
            raise UnsafePickleError(f"refused to load: an array with an unexpected state")
        shape, dtype, raw = state[-4], state[-3], state[-1]
        _check_plain(dtype)
        if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
            raise UnsafePickleError(f"refused to load: an array of shape {shape!r}")
        if not isinstance(raw, (bytes, bytearray)) or len(raw) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise UnsafePickleError(f"refused to load: array data that is not raw bytes of the "
                                    "array's size")
        return
    if state:  # plain containers are filled by SETITEMS / APPENDS, never by BUILD
        raise UnsafePickleError(f"refused to load: state set on a {type(inst).__name__}")


class RestrictedUnpickler(pickle._Unpickler):
    """An unpickler that resolves only numpy-array and plain-container globals, and checks every BUILD.

    ``source`` names the file in error messages. Persistent ids (torch tensor storages) are refused too. It is
    pickle's pure-Python unpickler, whose opcodes can be checked one by one (the C one's cannot); data files
    are a few large byte strings, so it costs little.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, *, source: str, encoding: str = "ASCII"):
        super().__init__(file, encoding=encoding)
        self.source = source

    def load_build(self) -> None:
        _check_build(self.stack[-2], self.stack[-1])
        pickle._Unpickler.load_build(self)

    dispatch[pickle.BUILD[0]] = load_build

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source}: refused to load: the pickle asks for the global {module}.{name}, which is not a "
                "numpy array or plain container. The file is not a genuine data file or was tampered with; "
                "nothing in it was executed."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(
            f"{self.source}: refused to load: the pickle references an external storage ({pid!r}); "
            "expected numpy arrays only"
        )


def load_pickle(path: str | Path, *, encoding: str = "ASCII") -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`.

    Raises :class:`DataError` for a missing, truncated or malformed file and :class:`UnsafePickleError`
    for a disallowed global.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, "rb") as f:
        return loads(f.read(), source=str(path), encoding=encoding)


def loads(data: bytes, *, source: str, encoding: str = "ASCII") -> Any:
    """Unpickle bytes with :class:`RestrictedUnpickler`; ``source`` names them in errors."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), source=source, encoding=encoding).load()
    except UnsafePickleError as e:
        if str(e).startswith(source):
            raise
        raise UnsafePickleError(f"{source}: {e}. The file is not a genuine data file or was tampered with; nothing "
                                "in it was run") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DataError(f"{source}: not a readable pickle (truncated or corrupt?): {e}") from None


def load_torch_zip_pickle(path: str | Path) -> Any:
    """Read the pickle inside a torch zip archive (``torch.save`` format) whose payload is numpy only.

    This is how the official CIFAR-N ``.pt`` files are stored. Tensors inside are refused (use
    ``torch.load(weights_only=True)`` for those).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.namelist() if m.endswith("/data.pkl") or m == "data.pkl"]
            if len(members) != 1:
                raise DataError(f"{path}: expected one data.pkl inside the torch archive, found {members or 'none'}")
            data = archive.read(members[0])
    except zipfile.BadZipFile:
        # Legacy (non-zip) torch.save files are plain pickles with extra headers; we don't read those.
        raise DataError(f"{path}: not a torch zip archive (truncated, or saved with the legacy format)") from None
    return loads(data, source=f"{path}:{members[0]}", encoding="latin1")

"""Reading pickled numpy data without executing arbitrary code.

The official CIFAR batches and the CIFAR-N ``.pt`` files are pickles of dicts holding numpy arrays.
``pickle.load`` would run whatever callable a (tampered) file names; ``torch.load(weights_only=True)``
refuses numpy arrays. :class:`RestrictedUnpickler` resolves only the globals that rebuild numpy arrays and
plain containers, and refuses everything else before it can run.
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


def _dtype_classes() -> dict[tuple[str, str], Any]:
    # numpy >= 1.25 pickles dtypes through numpy.dtypes.XDType classes.
    found: dict[tuple[str, str], Any] = {}
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in dir(dtypes):
            if name.endswith("DType"):
                found[("numpy.dtypes", name)] = getattr(dtypes, name)
    return found


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy.core.multiarray", "scalar"): _numpy_scalar(),
    ("numpy._core.multiarray", "scalar"): _numpy_scalar(),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _codecs_encode,
    ("collections", "OrderedDict"): __import__("collections").OrderedDict,
    **_dtype_classes(),
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy-array and plain-container globals.

    ``source`` names the file in error messages. Persistent ids (torch tensor storages) are refused too.
    """

    def __init__(self, file, *, source: str, encoding: str = "ASCII"):
        super().__init__(file, encoding=encoding)
        self.source = source

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
    except UnsafePickleError:
        raise
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

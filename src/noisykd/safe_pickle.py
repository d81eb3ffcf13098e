"""Reading pickled numpy data without executing code, trusting forged memory or recursing on the C stack.

The official CIFAR batches and the CIFAR-N ``.pt`` files are pickles of dicts holding lists, strings and numpy
arrays. ``pickle.load`` would run whatever callable a (tampered) file names, and numpy's own ``__setstate__``
trusts the state it is given (a dtype built twice with another item size reads past its buffer; an
``ndarray(shape, dtype)`` call hands out uninitialised memory). So this module does not patch pickle's
unpickler: it is its own small interpreter of the pickle opcodes these formats use, and it builds every value
itself:

- **Values**: ``None``, booleans, ints, floats, ``str``, ``bytes``, lists, tuples, dicts (keys: ``str``,
  ``bytes``, numbers or ``None``), and numpy arrays and scalars of plain dtypes (booleans, integers, floats,
  complex numbers, fixed-width strings). Nothing else can be in the result.
- **Callables**: none is ever called. ``GLOBAL`` resolves an allowed name to an inert token; ``REDUCE`` on a
  token runs this module's handler for it, which checks its arguments: numpy's ``_reconstruct`` (an empty array
  placeholder), ``dtype`` (a type string), ``scalar`` (a plain dtype and exactly its bytes), ``_codecs.encode``
  (text encodings only) and ``collections.OrderedDict`` (no arguments). ``numpy.ndarray`` is a token that can
  only be passed to ``_reconstruct``.
- **BUILD** completes a placeholder exactly once: a dtype's state must describe the same plain dtype (item
  size included), and an array is made with ``numpy.frombuffer`` from raw bytes of exactly its size, then
  copied. No object is ever built twice.
- **Limits**: nesting depth at most :data:`MAX_DEPTH` (checked while loading with an explicit stack, never by
  recursion), no containers inside themselves, declared lengths never beyond the bytes left in the file, at
  most :data:`MAX_OPS` opcodes, and for zip archives a cap on a member's inflated size.

:func:`check_checkpoint_pickle` applies the same interpreter, limits and opcode set to a checkpoint's
``data.pkl`` (allowing the torch names a checkpoint holds as inert tokens) before ``torch.load`` reads it.
"""

from __future__ import annotations

import codecs
import functools
import math
import re
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError, UnsafePickleError

#: deepest nesting of lists / tuples / dicts a file may hold (data files: 2-3, checkpoints: under 10)
MAX_DEPTH = 64
#: most opcodes read from one pickle (a CIFAR batch has about 20, a checkpoint a few thousand)
MAX_OPS = 10_000_000
#: most dimensions of an array
MAX_NDIM = 32
#: largest inflated size of a zip member read into memory (CIFAR-N's data.pkl: about 0.5 MB; checkpoints: kB)
MAX_ZIP_PICKLE = 256 * 2**20
#: longest arbitrary-precision integer, in bytes (a data file's ints fit in 8)
MAX_LONG_BYTES = 64

#: Kinds of the dtypes a data file may hold: bool, signed / unsigned int, float, complex, bytes, unicode.
PLAIN_KINDS = frozenset("biufcSU")
_SCALAR_KEYS = (str, bytes, int, float, bool, type(None))
#: a plain type string: an optional byte order, one type letter, an optional size ("u1", "<i8", "S40", "?")
_TYPE_STRING = re.compile(r"[<>|=]?[A-Za-z?][0-9]{0,9}")


class _Token:
    """An allowed global, resolved to an inert name; only this module's handler for it can use it."""

    __slots__ = ("key", "name")

    def __init__(self, key: tuple[str, str]):
        self.key = key
        self.name = ".".join(key)

    def __repr__(self) -> str:
        return f"<global {self.name}>"


class _PendingDtype:
    """``numpy.dtype(spec, ...)`` before its BUILD: ``dtype`` is the plain dtype named by ``spec``."""

    __slots__ = ("dtype", "built")

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype
        self.built = False


class _PendingArray:
    """``_reconstruct(ndarray, (0,), b'b')`` before its BUILD; ``value`` is the array once built."""

    __slots__ = ("value",)

    def __init__(self):
        self.value: np.ndarray | None = None


class _Opaque:
    """A value torch builds itself (a tensor, a storage): inert while a checkpoint's pickle is checked."""

    __slots__ = ()


_OPAQUE = _Opaque()
_MARK = object()


class _Refused(Exception):
    """Internal: the pickle is refused (unsafe) or unreadable (``unsafe=False``)."""

    def __init__(self, message: str, unsafe: bool = True):
        super().__init__(message)
        self.unsafe = unsafe


def _unreadable(message: str) -> _Refused:
    return _Refused(message, unsafe=False)


def _check_plain(dtype: Any) -> np.dtype:
    """``dtype`` if it is a plain numpy dtype (no object, void, structured or sub-array dtype), else refuse."""
    if not isinstance(dtype, np.dtype):
        raise _Refused(f"expected a numpy dtype, got {type(dtype).__name__}")
    if dtype.kind not in PLAIN_KINDS or dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise _Refused(f"the data holds the dtype {dtype!s} (kind {dtype.kind!r}); only plain numeric and "
                       "string arrays are read")
    return dtype


# ------------------------------------------------------------------------------------------------------------
# the handlers of the allowed globals (data files)

def _reconstruct(cls: Any, shape: Any, typecode: Any) -> _PendingArray:
    # numpy pickles an array as _reconstruct(ndarray, (0,), b"b") + BUILD(state): an empty placeholder
    if not (isinstance(cls, _Token) and cls.name == "numpy.ndarray"):
        raise _Refused(f"an array of the class {cls!r}")
    if shape != (0,) or typecode not in (b"b", "b"):
        raise _Refused(f"an array placeholder of shape {shape!r} and type code {typecode!r}")
    return _PendingArray()


def _dtype(spec: Any, align: Any = False, copy: Any = True) -> _PendingDtype:
    # numpy pickles a dtype as numpy.dtype("i8", False, True) + BUILD(state); only a short type string is taken
    if isinstance(spec, bytes):  # a Python 2 pickle's type string
        spec = spec.decode("latin1")
    if not (isinstance(spec, str) and _TYPE_STRING.fullmatch(spec)) or align not in (0, 1) or copy not in (0, 1):
        raise _Refused(f"a dtype built from {spec!r:.40}, not a plain type string")
    try:
        dtype = np.dtype(spec)
    except (TypeError, ValueError, SyntaxError) as e:  # numpy parses some specs as Python literals
        raise _Refused(f"the dtype {spec!r} ({e})") from None
    if dtype.itemsize == 0:
        raise _Refused(f"the dtype {spec!r} of no size")
    return _PendingDtype(_check_plain(dtype))


def _dtype_of(value: Any) -> np.dtype:
    if not isinstance(value, _PendingDtype):
        raise _Refused(f"an array or scalar of the dtype {type(value).__name__}, not a numpy dtype")
    return value.dtype


def _scalar(dtype: Any, data: Any = None) -> Any:
    # numpy pickles a scalar as scalar(dtype, raw_bytes); made from exactly its bytes
    dtype = _dtype_of(dtype)
    if isinstance(data, str):  # a Python 2 pickle read with a text encoding
        data = data.encode("latin1")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise _Refused(f"a numpy scalar of {dtype} from {type(data).__name__} of the wrong size")
    return np.frombuffer(data, dtype=dtype)[0]


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    # protocol 5 pickles an array as _frombuffer(bytes, dtype, shape, order): made from exactly its bytes
    pending = _PendingArray()
    _build_array(pending, (shape, dtype, order == "F", buffer))
    return pending.value


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    # Python 3 pickles (protocol <= 2) store bytes as _codecs.encode(str, 'latin1'): only text encodings
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
        raise _Refused(f"_codecs.encode of a {type(text).__name__} with the encoding {encoding!r:.40}")
    try:
        return codecs.encode(text, encoding)
    except UnicodeError as e:
        raise _unreadable(f"bytes that are not {encoding}: {e}") from None


def _empty_bytes(*args: Any) -> bytes:
    # Python 3 pickles (protocol <= 2) store b"" as bytes()
    if args:
        raise _Refused("bytes called with arguments")
    return b""


def _ordered_dict(*args: Any) -> dict:
    if args:
        raise _Refused("collections.OrderedDict called with arguments")
    return {}


_DATA_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "dtype"): _dtype,
    ("numpy", "ndarray"): None,  # a token for _reconstruct only; never called
    ("_codecs", "encode"): _codecs_encode,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
    ("collections", "OrderedDict"): _ordered_dict,
}


def _build_dtype(pending: _PendingDtype, state: Any) -> None:
    # (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
    if not (isinstance(state, tuple) and len(state) in (8, 9)):
        raise _Refused("a dtype with an unexpected state")
    byteorder, subarray, names, fields, elsize, _alignment, flags = state[1:8]
    if subarray is not None or names is not None or fields is not None or (len(state) == 9 and state[8] is not None):
        raise _Refused("a dtype with sub-arrays, fields or metadata")
    if isinstance(byteorder, bytes):  # a Python 2 pickle read with encoding="bytes"
        byteorder = byteorder.decode("latin1")
    base = pending.dtype
    # a fixed-size type states -1 (or its size); a string type must state exactly the size its spec named
    sizes = (base.itemsize,) if base.kind in "SU" else (-1, base.itemsize)
    if type(elsize) is not int or elsize not in sizes or flags != base.flags:
        raise _Refused(f"a dtype {base} whose state gives the item size {elsize!r:.20} and flags {flags!r:.20} "
                       f"(expected {' or '.join(map(str, sizes))} and {base.flags})")
    if byteorder in ("<", ">"):
        pending.dtype = base.newbyteorder(byteorder)
    elif byteorder not in ("|", "="):
        raise _Refused(f"a dtype of the byte order {byteorder!r:.20}")


def _build_array(pending: _PendingArray, state: Any) -> None:
    # (version, shape, dtype, is_fortran, raw bytes)
    if not (isinstance(state, tuple) and len(state) in (4, 5)):
        raise _Refused("an array with an unexpected state")
    shape, dtype, fortran, raw = state[-4:]
    dtype = _dtype_of(dtype)
    if not (isinstance(shape, tuple) and len(shape) <= MAX_NDIM and all(type(n) is int and n >= 0 for n in shape)):
        raise _Refused(f"an array of shape {shape!r:.80}")
    if isinstance(raw, str):  # a Python 2 pickle read with a text encoding holds the bytes as latin-1 text
        raw = raw.encode("latin1")
    if not isinstance(raw, bytes) or len(raw) != math.prod(shape) * dtype.itemsize:
        raise _Refused("array data that is not raw bytes of the array's size")
    flat = np.frombuffer(raw, dtype=dtype)
    pending.value = flat.reshape(shape, order="F" if fortran else "C").copy(order="K")


# ------------------------------------------------------------------------------------------------------------
# the interpreter

class _Interpreter:
    """Runs one pickle's opcodes over an explicit stack; ``globals_`` maps allowed (module, name) to a handler
    (``None``: a token that cannot be called); ``opaque`` makes every allowed global and persistent id an
    inert value (checking a checkpoint for torch)."""

    def __init__(self, data: bytes, *, encoding: str, globals_: dict, opaque: bool):
        self.data = memoryview(data)
        self.pos = 0
        self.encoding = encoding
        self.globals = globals_
        self.opaque = opaque
        self.stack: list = []
        self.marks: list[int] = []
        self.memo: dict[int, Any] = {}
        self.depth: dict[int, int] = {}
        self.alive: list = []  # keeps every container alive so that depth's ids are never reused

    # -- reading
    def read(self, n: int) -> bytes:
        if n < 0 or n > len(self.data) - self.pos:
            raise _unreadable(f"a length of {n} bytes at offset {self.pos}, past the end of the file "
                              f"({len(self.data)} bytes): truncated or forged")
        chunk = self.data[self.pos:self.pos + n].tobytes()
        self.pos += n
        return chunk

    def line(self) -> bytes:
        end = self.data.obj.find(b"\n", self.pos)  # the memoryview's bytes
        if end < 0 or end - self.pos > 4096:
            raise _unreadable(f"a text argument at offset {self.pos} without its end of line")
        chunk = self.data[self.pos:end].tobytes()
        self.pos = end + 1
        return chunk

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    # -- the stack
    def pop(self) -> Any:
        if not self.stack or (self.marks and len(self.stack) == self.marks[-1]):
            raise _unreadable("an opcode found the stack empty")
        return self.stack.pop()

    def pop_mark(self) -> list:
        if not self.marks:
            raise _unreadable("an opcode needs a MARK that is not there")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def depth_of(self, value: Any) -> int:
        return self.depth.get(id(value), 0) if isinstance(value, (list, tuple, dict)) else 0

    def new_container(self, container: Any, items) -> Any:
        depth = 1 + max((self.depth_of(v) for v in items), default=0)
        if depth > MAX_DEPTH:
            raise _Refused(f"containers nested more than {MAX_DEPTH} deep")
        self.depth[id(container)] = depth
        self.alive.append(container)
        return container

    def grow(self, container: Any, items) -> None:
        """``container`` gains ``items``: its depth grows; itself inside itself is refused."""
        depth = self.depth.get(id(container), 1)
        for v in items:
            if v is container:
                raise _Refused("a container that holds itself")
            depth = max(depth, 1 + self.depth_of(v))
        if depth > MAX_DEPTH:
            raise _Refused(f"containers nested more than {MAX_DEPTH} deep")
        self.depth[id(container)] = depth

    def text(self, raw: bytes) -> Any:
        # Python 2 str (STRING opcodes): bytes with encoding="bytes", else decoded like pickle does
        return raw if self.encoding == "bytes" else raw.decode(self.encoding)

    # -- the opcodes
    def run(self) -> Any:
        ops = 0
        while True:
            ops += 1
            if ops > MAX_OPS:
                raise _Refused(f"more than {MAX_OPS:,} opcodes, more than a data file holds")
            if self.pos >= len(self.data):
                raise _unreadable("the pickle ends before its STOP opcode (truncated)")
            code = self.data[self.pos]
            self.pos += 1
            handler = _OPCODES.get(code)
            if handler is None:
                raise _Refused(f"the pickle opcode {bytes([code])!r} at offset {self.pos - 1}, which these files "
                               "never use")
            if handler is _stop:
                if len(self.stack) != 1 or self.marks:
                    raise _unreadable("the pickle stops with a malformed stack")
                return self.stack[0]
            handler(self)

    def push_global(self, module: str, name: str) -> None:
        key = (module, name)
        if key not in self.globals:
            raise _Refused(f"the pickle asks for the global {module}.{name}, which is not a numpy array or plain "
                           "container")
        self.stack.append(_Token(key))

    def call(self, func: Any, args: Any) -> Any:
        if not isinstance(func, _Token):
            raise _Refused(f"the pickle calls a {type(func).__name__}, not an allowed global")
        if not isinstance(args, tuple):
            raise _unreadable("REDUCE with arguments that are not a tuple")
        if self.opaque:  # torch builds these itself afterwards; an ordered dict is filled by SETITEMS
            return self.new_container({}, ()) if func.name == "collections.OrderedDict" else _OPAQUE
        handler = self.globals[func.key]
        if handler is None:
            raise _Refused(f"the pickle calls {func.name}, which is never called")
        try:
            return handler(*args)
        except TypeError:
            raise _Refused(f"{func.name} called with {len(args)} arguments") from None

    def build(self) -> None:
        state = self.pop()
        inst = self.pop()
        if self.opaque and (isinstance(inst, _Opaque) or (isinstance(inst, dict) and isinstance(state, dict))):
            # torch sets a tensor's or an ordered dict's attributes (a state dict's _metadata) itself
            if isinstance(inst, dict):
                self.grow(inst, [state])
            self.stack.append(inst)
            return
        if isinstance(inst, _PendingDtype) and not inst.built:
            _build_dtype(inst, state)
            inst.built = True
        elif isinstance(inst, _PendingArray) and inst.value is None:
            _build_array(inst, state)
        else:
            what = {_PendingDtype: "a dtype", _PendingArray: "an array"}.get(type(inst))
            raise _Refused(f"{what} given its state a second time (numpy would rebuild it over its memory)" if what
                           else f"state set on a {type(inst).__name__.strip('_')}")
        self.stack.append(inst)

    def setitems(self, target: Any, items: list) -> None:
        if not isinstance(target, dict):
            raise _unreadable(f"SETITEM on a {type(target).__name__}")
        if len(items) % 2:
            raise _unreadable("SETITEMS with an odd number of items")
        keys, values = items[0::2], items[1::2]
        for key in keys:
            if not self.key_ok(key):
                raise _Refused(f"a dict key of the type {type(key).__name__}")
        self.grow(target, values)
        for key, value in zip(keys, values):
            target[key] = value

    def key_ok(self, key: Any) -> bool:
        if isinstance(key, _SCALAR_KEYS):
            return True
        # a checkpoint's keys: names, numbers, and (optimizer) shallow tuples of them; never a deep one to hash
        return self.opaque and isinstance(key, tuple) and self.depth_of(key) <= 2 and all(
            isinstance(k, _SCALAR_KEYS) for k in key)

    def appends(self, target: Any, items: list) -> None:
        if not isinstance(target, list):
            raise _unreadable(f"APPEND on a {type(target).__name__}")
        self.grow(target, items)
        target.extend(items)


def _stop(m: _Interpreter) -> None:  # handled in run()
    raise AssertionError


def _memo_put(m: _Interpreter, index: int) -> None:
    if not m.stack:
        raise _unreadable("a memo PUT with the stack empty")
    m.memo[index] = m.stack[-1]


def _memo_get(m: _Interpreter, index: int) -> None:
    if index not in m.memo:
        raise _unreadable(f"a memo GET of the entry {index}, which was never PUT")
    m.stack.append(m.memo[index])


def _int_line(m: _Interpreter) -> None:
    raw = m.line()
    if raw in (b"00", b"01"):  # protocol 0 booleans
        m.stack.append(raw == b"01")
        return
    m.stack.append(int(raw))


def _long_bytes(m: _Interpreter, n: int) -> None:
    if n > MAX_LONG_BYTES:
        raise _Refused(f"an integer of {n} bytes")
    m.stack.append(int.from_bytes(m.read(n), "little", signed=True))


def _tuple(m: _Interpreter, items) -> None:
    items = tuple(items)
    m.stack.append(m.new_container(items, items) if items else items)


def _tuple_n(n: int):
    def op(m: _Interpreter) -> None:
        items = [m.pop() for _ in range(n)][::-1]
        _tuple(m, items)
    return op


def _reduce(m: _Interpreter) -> None:
    args = m.pop()
    func = m.pop()
    m.stack.append(m.call(func, args))


def _newobj(m: _Interpreter) -> None:
    # cls.__new__(cls, *args): only inert (opaque) in a checkpoint; data files never use it
    args = m.pop()
    cls = m.pop()
    if not (m.opaque and isinstance(cls, _Token) and isinstance(args, tuple)):
        raise _Refused("NEWOBJ, which data files never use")
    m.stack.append(_OPAQUE)


def _stack_global(m: _Interpreter) -> None:
    name = m.pop()
    module = m.pop()
    if not (isinstance(module, str) and isinstance(name, str)):
        raise _unreadable("STACK_GLOBAL with names that are not strings")
    m.push_global(module, name)


def _global(m: _Interpreter) -> None:
    module = m.line().decode("ascii", "replace")
    name = m.line().decode("ascii", "replace")
    m.push_global(module, name)


def _persistent(m: _Interpreter) -> None:
    pid = m.pop()
    if not m.opaque:
        raise _Refused("the pickle references an external storage; expected numpy arrays only")
    if not (isinstance(pid, tuple) and m.depth_of(pid) <= 2):
        raise _Refused("a persistent id that is not a flat tuple")
    m.stack.append(_OPAQUE)


def _utf8(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogatepass")


_OPCODES: dict[int, Any] = {}


def _op(code: bytes, fn) -> None:
    _OPCODES[code[0]] = fn


_op(b".", _stop)
_op(b"\x80", lambda m: m.read(1))                                      # PROTO
_op(b"\x95", lambda m: m.read(8))                                      # FRAME: framing only, nothing to check
_op(b"(", lambda m: m.marks.append(len(m.stack)))                      # MARK
_op(b"0", lambda m: m.pop())                                           # POP
_op(b"1", lambda m: m.pop_mark())                                      # POP_MARK
_op(b"N", lambda m: m.stack.append(None))
_op(b"\x88", lambda m: m.stack.append(True))
_op(b"\x89", lambda m: m.stack.append(False))
_op(b"I", _int_line)                                                   # INT
_op(b"L", lambda m: m.stack.append(int(m.line().rstrip(b"L"))))       # LONG (text)
_op(b"J", lambda m: m.stack.append(m.unpack("<i")))                   # BININT
_op(b"K", lambda m: m.stack.append(m.read(1)[0]))                     # BININT1
_op(b"M", lambda m: m.stack.append(m.unpack("<H")))                   # BININT2
_op(b"\x8a", lambda m: _long_bytes(m, m.read(1)[0]))                  # LONG1
_op(b"\x8b", lambda m: _long_bytes(m, m.unpack("<i")))                # LONG4
_op(b"F", lambda m: m.stack.append(float(m.line())))                  # FLOAT
_op(b"G", lambda m: m.stack.append(m.unpack(">d")))                   # BINFLOAT
_op(b"T", lambda m: m.stack.append(m.text(m.read(m.unpack("<i")))))   # BINSTRING (Python 2 str)
_op(b"U", lambda m: m.stack.append(m.text(m.read(m.read(1)[0]))))     # SHORT_BINSTRING
_op(b"B", lambda m: m.stack.append(m.read(m.unpack("<I"))))           # BINBYTES
_op(b"C", lambda m: m.stack.append(m.read(m.read(1)[0])))             # SHORT_BINBYTES
_op(b"\x8e", lambda m: m.stack.append(m.read(m.unpack("<Q"))))        # BINBYTES8
_op(b"\x96", lambda m: m.stack.append(m.read(m.unpack("<Q"))))        # BYTEARRAY8 (read as bytes)
_op(b"X", lambda m: m.stack.append(_utf8(m.read(m.unpack("<I")))))    # BINUNICODE
_op(b"\x8c", lambda m: m.stack.append(_utf8(m.read(m.read(1)[0]))))  # SHORT_BINUNICODE
_op(b"\x8d", lambda m: m.stack.append(_utf8(m.read(m.unpack("<Q")))))  # BINUNICODE8
_op(b"V", lambda m: m.stack.append(m.line().decode("raw-unicode-escape")))  # UNICODE (protocol 0)
_op(b"]", lambda m: m.stack.append(m.new_container([], ())))          # EMPTY_LIST
_op(b"l", lambda m: m.stack.append(m.new_container(list(items := m.pop_mark()), items)))  # LIST
_op(b"a", lambda m: m.appends(m.stack[-2] if len(m.stack) > 1 else None, [m.pop()]))   # APPEND
_op(b"e", lambda m: (lambda items: m.appends(m.stack[-1] if m.stack else None, items))(m.pop_mark()))  # APPENDS
_op(b"}", lambda m: m.stack.append(m.new_container({}, ())))          # EMPTY_DICT
_op(b")", lambda m: m.stack.append(()))                                # EMPTY_TUPLE
_op(b"t", lambda m: _tuple(m, m.pop_mark()))                          # TUPLE
_op(b"\x85", _tuple_n(1))
_op(b"\x86", _tuple_n(2))
_op(b"\x87", _tuple_n(3))
_op(b"p", lambda m: _memo_put(m, int(m.line())))                      # PUT
_op(b"q", lambda m: _memo_put(m, m.read(1)[0]))                       # BINPUT
_op(b"r", lambda m: _memo_put(m, m.unpack("<I")))                     # LONG_BINPUT
_op(b"\x94", lambda m: _memo_put(m, len(m.memo)))                     # MEMOIZE
_op(b"g", lambda m: _memo_get(m, int(m.line())))                      # GET
_op(b"h", lambda m: _memo_get(m, m.read(1)[0]))                       # BINGET
_op(b"j", lambda m: _memo_get(m, m.unpack("<I")))                     # LONG_BINGET
_op(b"c", _global)                                                     # GLOBAL
_op(b"\x93", _stack_global)                                            # STACK_GLOBAL
_op(b"R", _reduce)                                                     # REDUCE
_op(b"\x81", _newobj)                                                  # NEWOBJ
_op(b"b", lambda m: m.build())                                         # BUILD
_op(b"Q", _persistent)                                                 # BINPERSID


def _setitem(m: _Interpreter) -> None:
    value = m.pop()
    key = m.pop()
    m.setitems(m.stack[-1] if m.stack else None, [key, value])


def _setitems(m: _Interpreter) -> None:
    items = m.pop_mark()
    m.setitems(m.stack[-1] if m.stack else None, items)


def _dict(m: _Interpreter) -> None:
    items = m.pop_mark()
    target = m.new_container({}, ())
    m.stack.append(target)
    m.setitems(target, items)


_op(b"s", _setitem)
_op(b"u", _setitems)
_op(b"d", _dict)


# ------------------------------------------------------------------------------------------------------------
# the result: only plain values, checked without recursion

def _leaf(value: Any) -> Any:
    if isinstance(value, np.ndarray):  # made by _frombuffer
        return value
    if isinstance(value, _PendingArray):
        if value.value is None:
            raise _Refused("an array placeholder that was never filled")
        return value.value
    if value is None or isinstance(value, (bool, int, float, str, bytes, np.generic)):
        return value
    raise _Refused(f"a value of the kind {type(value).__name__.strip('_')}, which data files never hold")


def _finish(root: Any) -> Any:
    """A copy of the loaded value with every placeholder replaced by its array; anything that is not a plain
    value (a token, an unfilled placeholder, a dtype) is refused. Depth-first with an explicit stack (never the C
    stack): the depth capped while loading is checked again here, since a list may gain items after it was
    nested, and a container inside itself is refused."""
    containers = (list, tuple, dict)
    done: dict[int, Any] = {}
    entered: set[int] = set()  # entered but not finished: exactly the ancestors of the node being visited
    work: list[tuple[Any, int, bool]] = [(root, 0, False)]

    def converted(value: Any) -> Any:
        return done[id(value)] if isinstance(value, containers) else _leaf(value)

    while work:
        node, depth, finishing = work.pop()
        if not isinstance(node, containers):
            continue
        if finishing:
            entered.discard(id(node))
            if isinstance(node, dict):
                done[id(node)] = {key: converted(v) for key, v in node.items()}
            else:
                done[id(node)] = type(node)(converted(v) for v in node)
            continue
        if id(node) in done:
            continue
        if id(node) in entered:
            raise _Refused("a container that holds itself")
        if depth > MAX_DEPTH:
            raise _Refused(f"containers nested more than {MAX_DEPTH} deep")
        entered.add(id(node))
        work.append((node, depth, True))
        children = node.values() if isinstance(node, dict) else node
        work.extend((child, depth + 1, False) for child in children if isinstance(child, containers))
    return converted(root)


# ------------------------------------------------------------------------------------------------------------
# the public functions

def _interpret(data: bytes, *, source: str, what: str, encoding: str, globals_: dict, opaque: bool) -> Any:
    """Run the interpreter over ``data``; its refusals become :class:`UnsafePickleError` (unsafe) or
    :class:`DataError` (unreadable), naming ``source`` and ``what`` it was read as ("data file", "checkpoint")."""
    kind = "pickle" if what == "data file" else f"{what} pickle"
    try:
        return _Interpreter(bytes(data), encoding=encoding, globals_=globals_, opaque=opaque).run()
    except _Refused as e:
        if e.unsafe:
            raise UnsafePickleError(f"{source}: refused to load: {e}. The file is not a genuine {what} or was "
                                    "tampered with; nothing in it was run") from None
        raise DataError(f"{source}: not a readable {kind} (truncated or corrupt?): {e}") from None
    except (ValueError, OverflowError, struct.error, UnicodeError, MemoryError, IndexError) as e:
        raise DataError(f"{source}: not a readable {kind} (truncated or corrupt?): {type(e).__name__}: "
                        f"{str(e)[:200]}") from None


def loads(data: bytes, *, source: str, encoding: str = "ASCII") -> Any:
    """Unpickle ``data`` (see the module docstring); ``source`` names it in errors.

    Raises :class:`UnsafePickleError` for anything outside what data files hold (nothing in it is executed or
    read as memory) and :class:`DataError` for a truncated or malformed pickle.
    """
    result = _interpret(data, source=source, what="data file", encoding=encoding, globals_=_DATA_GLOBALS,
                        opaque=False)
    try:
        return _finish(result)
    except _Refused as e:
        raise UnsafePickleError(f"{source}: refused to load: {e}. The file is not a genuine data file or was "
                                "tampered with; nothing in it was run") from None


def load_pickle(path: str | Path, *, encoding: str = "ASCII") -> Any:
    """Unpickle the file ``path`` with :func:`loads`; a missing file is a :class:`DataError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, "rb") as f:
        return loads(f.read(), source=str(path), encoding=encoding)


def read_zip_member(archive: zipfile.ZipFile, name: str, *, source: str, limit: int = MAX_ZIP_PICKLE) -> bytes:
    """The bytes of one member of ``archive``, refusing a member whose declared inflated size exceeds ``limit``
    (a zip bomb) before inflating it; zipfile never inflates beyond the declared size."""
    info = archive.getinfo(name)
    if info.file_size > limit:
        raise UnsafePickleError(f"{source}: refused to load: its {name} declares {info.file_size:,} bytes once "
                                f"inflated, more than the {limit:,} such a file holds")
    return archive.read(info)


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
            data = read_zip_member(archive, members[0], source=str(path))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError) as e:
        # Legacy (non-zip) torch.save files are plain pickles with extra headers; we don't read those.
        raise DataError(f"{path}: not an intact torch zip archive (truncated, corrupt, or saved with the legacy "
                        f"format: {e})") from None
    return loads(data, source=f"{path}:{members[0]}", encoding="latin1")


@functools.lru_cache(maxsize=1)
def _checkpoint_globals() -> dict[tuple[str, str], Any]:
    """The torch names a noisykd checkpoint's pickle holds (tensors, storages, dtypes, ordered dicts): inert
    tokens here; torch's own weights-only unpickler builds them afterwards."""
    import torch

    allowed: dict[tuple[str, str], Any] = {("collections", "OrderedDict"): None,
                                           ("torch._utils", "_rebuild_tensor_v2"): None,
                                           ("torch._utils", "_rebuild_parameter"): None,
                                           ("torch", "Size"): None, ("torch", "device"): None}
    for name in dir(torch):
        if name.endswith("Storage") or isinstance(getattr(torch, name, None), torch.dtype):
            allowed[("torch", name)] = None
    return allowed


def check_checkpoint_pickle(data: bytes, *, source: str) -> None:
    """Check a checkpoint's ``data.pkl`` before ``torch.load`` reads it: only the opcodes and torch names a
    checkpoint holds, nesting at most :data:`MAX_DEPTH` deep, dict keys that hash without recursion, lengths
    within the file. Raises :class:`UnsafePickleError` or :class:`DataError` naming ``source``."""
    _interpret(data, source=source, what="checkpoint", encoding="utf-8", globals_=_checkpoint_globals(), opaque=True)

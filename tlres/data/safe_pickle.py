"""A pickle reader that builds data and never runs code: for files tlres did not write.

`pickle.load` calls whatever callable a file names (``os.system`` included). `loads` admits only
what pickled numpy arrays and plain containers need (`ADMITTED`: numpy's array reconstruction in
its 1.x and 2.x module names, ``numpy.dtype``, latin-1 ``_codecs.encode``, and the builtins
``set``, ``frozenset``, ``bytes``, ``bytearray``, ``complex``); any other global is refused by
name (`ForbiddenGlobal`) before anything is called. Arrays are built only from a plain numeric,
boolean or string dtype and exactly the declared bytes (no object arrays), and ``bytes`` refuses
integer sizes. First, a scan of the opcodes checks every declared length fits the data and
every memo index is one a pickler could write: the unpickler allocates what a header declares
before it reads, so 15 bytes could otherwise ask for gigabytes.
"""

import io
import math
import pickle
import pickletools
import re
import warnings

import numpy as np

from tlres.core.errors import quote


class UnsafePickle(pickle.UnpicklingError):
    """The data is not a plain pickle of arrays and containers."""


class ForbiddenGlobal(UnsafePickle):
    """The pickle names a callable outside the admitted set."""

    def __init__(self, module, name):
        self.qualname = quote(f"{module}.{name}")
        super().__init__(f"references {self.qualname}")


# -- what the admitted globals build ------------------------------------------------------------

_DTYPE_SPEC = re.compile(r"(b1|\?|[iu][1248]|f(2|4|8|12|16)|c(8|16|24|32)|[SU]\d{1,6})")


def _text(value):
    """A short str from a py3 str or a py2 byte string (loaded with encoding="bytes")."""
    if isinstance(value, bytes) and len(value) <= 64:
        return value.decode("latin-1")
    if isinstance(value, str) and len(value) <= 64:
        return value
    raise UnsafePickle(f"expected a short string, found {type(value).__name__}")


class _Dtype:
    """What the file's ``numpy.dtype(spec, align, copy)`` builds: a checked spec, resolved later."""

    def __init__(self, spec, align=False, copy=True):
        spec = _text(spec)
        if not _DTYPE_SPEC.fullmatch(spec):
            raise UnsafePickle(f"dtype {spec!r} is not a plain number, boolean or string type")
        self.dtype = np.dtype(spec)

    def __setstate__(self, state):
        # numpy writes (3, byteorder, None, None, None, -1, -1, flags) for these dtypes
        if not (isinstance(state, tuple) and len(state) == 8 and state[0] in (3, 4)
                and state[2] is None and state[3] is None and state[4] is None):
            raise UnsafePickle("a dtype state that is not a plain dtype's")
        order = _text(state[1])
        if order not in ("<", ">", "|", "="):
            raise UnsafePickle(f"dtype byte order {order!r}")
        if order in "<>" and self.dtype.byteorder != "|":
            self.dtype = self.dtype.newbyteorder(order)


def _resolve_dtype(value):
    if not isinstance(value, _Dtype):
        raise UnsafePickle(f"an array dtype must be numpy.dtype(...), found {type(value).__name__}")
    return value.dtype


def _shape(value):
    if not (isinstance(value, tuple) and len(value) <= 32
            and all(type(d) is int and 0 <= d < 2 ** 48 for d in value)):
        raise UnsafePickle("an array shape that is not a tuple of sizes")
    return value


def _checked_buffer(raw, dtype, shape):
    if not isinstance(raw, (bytes, bytearray)):
        raise UnsafePickle(f"array data must be a byte string, found {type(raw).__name__}")
    need = math.prod(shape) * dtype.itemsize
    if len(raw) != need:
        raise UnsafePickle(f"an array of shape {shape} and dtype {dtype} needs {need} bytes; "
                           f"the file holds {len(raw)}")
    return raw


class _Array(np.ndarray):
    """The array ``_reconstruct`` makes; its state is checked before numpy fills it in."""

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1
                and state[3] in (True, False, 0, 1)):
            raise UnsafePickle("an array state that is not numpy's (1, shape, dtype, fortran, data)")
        shape, dtype = _shape(state[1]), _resolve_dtype(state[2])
        raw = _checked_buffer(state[4], dtype, shape)
        super().__setstate__((1, shape, dtype, bool(state[3]), bytes(raw)))


class _NdarrayName:
    """``numpy.ndarray`` as a file names it: only the type argument of ``_reconstruct``."""

    def __new__(cls, *args, **kwargs):
        raise UnsafePickle("calls numpy.ndarray directly")


def _reconstruct(subtype, shape, dtype):
    if subtype is not _NdarrayName or shape != (0,) or _text(dtype) != "b":
        raise UnsafePickle("numpy array reconstruction with arguments numpy never writes")
    return np.ndarray.__new__(_Array, (0,), np.uint8)


def _frombuffer(buf, dtype, shape, order):
    dtype, shape = _resolve_dtype(dtype), _shape(shape)
    if order not in ("C", "F"):
        raise UnsafePickle(f"array order {quote(order, 8)}")
    raw = _checked_buffer(buf, dtype, shape)
    # as _Array: a later BUILD on it goes through the checked __setstate__, not numpy's
    return np.frombuffer(raw, dtype).reshape(shape, order=order).view(_Array)


def _encode(obj, encoding="utf-8", errors="strict"):
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickle("_codecs.encode other than Python's latin-1 bytes")
    return obj.encode("latin-1")


def _no_size(kind):
    def make(*args):
        if any(isinstance(a, int) for a in args):
            raise UnsafePickle(f"{kind.__name__}(size)")
        return kind(*args)
    return make


_CORE = ("numpy.core", "numpy._core")
ADMITTED = {
    **{(f"{core}.multiarray", "_reconstruct"): _reconstruct for core in _CORE},
    **{(f"{core}.numeric", "_frombuffer"): _frombuffer for core in _CORE},
    ("numpy", "ndarray"): _NdarrayName,
    ("numpy", "dtype"): _Dtype,
    ("_codecs", "encode"): _encode,
    **{(b, name): value for b in ("builtins", "__builtin__") for name, value in (
        ("set", set), ("frozenset", frozenset), ("complex", complex),
        ("bytes", _no_size(bytes)), ("bytearray", _no_size(bytearray)))},
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return ADMITTED[(module, name)]
        except (KeyError, TypeError):
            raise ForbiddenGlobal(module, name) from None

    def persistent_load(self, pid):
        raise UnsafePickle("a persistent id (a reference to an object outside the file)")


def _prescan(blob):
    """Raise unless every declared length fits and every memo index is sequential-sized."""
    try:
        for count, (op, arg, _pos) in enumerate(pickletools.genops(blob)):
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and not (0 <= int(arg) <= count):
                raise UnsafePickle(f"memo index {arg} at opcode {count}")
    except UnsafePickle:
        raise
    except Exception as e:  # short data, unknown opcode, bad argument
        raise pickle.UnpicklingError(str(e)[:200]) from None


def loads(blob, encoding="bytes"):
    """Unpickle `blob` (bytes) admitting only arrays and containers.

    Python 2 era pickles (such as the official CIFAR-10 batches) need
    ``encoding="bytes"``: their strings come back as bytes. Raises
    `ForbiddenGlobal` for a global outside the admitted set, `UnsafePickle` for
    anything else outside numpy's own way of pickling, and another exception
    (``pickle.UnpicklingError``, ``EOFError``, ``ValueError``, ...) for data that
    is not a pickle at all. Arrays come back as a private numpy subclass
    (``np.asarray`` gives the plain array).
    """
    blob = bytes(blob)
    with warnings.catch_warnings():  # protocol 0 strings with bad escapes: an error follows or not
        warnings.simplefilter("ignore", DeprecationWarning)
        _prescan(blob)
        return _Unpickler(io.BytesIO(blob), encoding=encoding).load()

"""Pickles written opcode by opcode the way Python 2's cPickle (protocol 2) wrote the
official CIFAR-10 batches: byte strings as BINSTRING (Python 2 `str`), numpy 1.x's
global names, memo puts. Independent of Python 3's pickler, so a reader that only
copes with what Python 3 writes fails here.
"""

import struct

import numpy as np


class _Writer:
    def __init__(self):
        self.out = [b"\x80\x02"]  # PROTO 2
        self.memo = 0

    def put(self):
        self.out.append(b"q" + bytes([self.memo]) if self.memo < 256 else b"r" + struct.pack("<I", self.memo))
        self.memo += 1

    def global_(self, module, name):
        self.out.append(b"c" + module.encode() + b"\n" + name.encode() + b"\n")
        self.put()

    def value(self, v):
        if v is None:
            self.out.append(b"N")
        elif v is False or v is True:
            self.out.append(b"\x89" if v is False else b"\x88")
        elif isinstance(v, int):
            if 0 <= v < 256:
                self.out.append(b"K" + bytes([v]))
            elif 0 <= v < 65536:
                self.out.append(b"M" + struct.pack("<H", v))
            elif -2 ** 31 <= v < 2 ** 31:
                self.out.append(b"J" + struct.pack("<i", v))
            else:  # a Python 2 long: LONG1, little-endian two's complement
                b = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
                self.out.append(b"\x8a" + bytes([len(b)]) + b)
        elif isinstance(v, (bytes, str)):  # Python 2 had one string type: str
            b = v.encode("latin-1") if isinstance(v, str) else v
            self.out.append((b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<I", len(b))) + b)
            self.put()
        elif isinstance(v, tuple):
            self.out.append(b"(")
            for item in v:
                self.value(item)
            self.out.append(b"t")
            self.put()
        elif isinstance(v, list):
            self.out.append(b"]")
            self.put()
            if v:
                self.out.append(b"(")
                for item in v:
                    self.value(item)
                self.out.append(b"e")  # APPENDS
        elif isinstance(v, dict):
            self.out.append(b"}")
            self.put()
            self.out.append(b"(")
            for k, item in v.items():
                self.value(k)
                self.value(item)
            self.out.append(b"u")  # SETITEMS
        elif isinstance(v, np.ndarray):
            self.array(v)
        else:
            raise TypeError(type(v))

    def array(self, a):
        # numpy 1.x: _reconstruct(ndarray, (0,), 'b') then BUILD (1, shape, dtype, fortran, raw)
        self.global_("numpy.core.multiarray", "_reconstruct")
        self.global_("numpy", "ndarray")
        self.value((0,))
        self.value("b")
        self.out.append(b"\x87R")  # TUPLE3 REDUCE
        self.put()
        self.out.append(b"(")
        self.value(1)
        self.value(tuple(a.shape))
        self.global_("numpy", "dtype")
        self.value(a.dtype.str[1:])
        self.value(0)
        self.value(1)
        self.out.append(b"\x87R")
        self.put()
        self.value((3, a.dtype.str[0], None, None, None, -1, -1, 0))
        self.out.append(b"b")  # BUILD the dtype
        self.value(False)
        self.value(a.tobytes())
        self.out.append(b"tb")  # the state tuple, BUILD the array


def dumps(obj):
    """`obj` (dicts, lists, tuples, ints, bytes/str, uint8 arrays) as Python 2 would pickle it."""
    w = _Writer()
    w.value(obj)
    return b"".join(w.out) + b"."

"""Curves while a run trains (--tensorboard): TensorBoard event files, written by tlres itself.

The Keras runner (`keras_callback`) and the PyTorch reference (`start`) log the same tags
(`TAGS`): each history.csv row at its epoch, and every --tensorboard-every steps the epoch's mean
training loss so far, at the step counted over the whole run. Each framework writes its own
folder (`folder`), so `tensorboard --logdir` shows both side by side. The format (TFRecord
framing with masked CRC32C around `Event` protocol buffers, the fields of TensorFlow's
event.proto and summary.proto that tlres writes) is encoded here: neither tensorflow nor
tensorboard is needed to write the files. Each session (the run, then each resume) writes one new
file (`Curves.begin`); docs/options.md, "Curves in TensorBoard".
"""

import os
import re
import struct
import time

from tlres.run import rundir, writes
from tlres.core.config import TENSORBOARD_IN_RUN

KERAS, PYTORCH = "keras-jax", "pytorch"  # the frameworks' folders (config.json's "framework")
EPOCH_TAGS = tuple("epoch/" + k for k in rundir.HISTORY_FIELDS if k != "epoch")
STEP_LOSS = "step/loss"
TAGS = EPOCH_TAGS + (STEP_LOSS,)
FILE = re.compile(r"events\.out\.tfevents\.(\d+)\.tlres")  # "tfevents": what TensorBoard reads
STAGED = "tlres-curves.new"  # a new file's name until it is complete (TensorBoard skips it)


def folder(cfg, run_dir, framework):
    """Where the run in `run_dir` writes its curves: None (off), `TENSORBOARD_IN_RUN`'s
    RUN/tb/<framework>, or DIR/<run name>/<framework>, so runs can share DIR."""
    if cfg.tensorboard is None:
        return None
    if cfg.tensorboard == TENSORBOARD_IN_RUN:
        return os.path.join(run_dir, "tb", framework)
    return os.path.join(cfg.tensorboard, os.path.basename(os.path.abspath(run_dir)), framework)


def check(cfg, run_dir, framework, overwrite=False, resume=False):
    """Before anything is created: one line when --tensorboard DIR cannot take this run's curves
    (a file in the way, not writable, or another run's curves there; --overwrite replaces those
    tlres wrote). The run directory's own tb/ is checked with it."""
    path = folder(cfg, run_dir, framework)
    if path is None or cfg.tensorboard == TENSORBOARD_IN_RUN or (resume and os.path.isdir(path)):
        return
    rundir.check_out(path, overwrite, flag="--tensorboard")


# --- the format: protocol buffer fields, records, CRC32C ---

def _crc_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # CRC-32C (Castagnoli), reflected
        table.append(c)
    return table


CRC_TABLE = _crc_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc(data):
    """TFRecord's checksum: CRC32C rotated right by 15 bits plus a constant."""
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def record(payload):
    """One TFRecord: length, its masked CRC, the payload, its masked CRC."""
    head = struct.pack("<Q", len(payload))
    return head + struct.pack("<I", masked_crc(head)) + payload + struct.pack("<I", masked_crc(payload))


def _varint(n):
    n &= (1 << 64) - 1  # int64 as protobuf encodes it
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _message(number, body):
    return _varint(number << 3 | 2) + _varint(len(body)) + body


def event(step, values=(), file_version=None, start=False, wall_time=None):
    """An `Event` (event.proto): wall_time 1, step 2, file_version 3, summary 5 (Summary.Value:
    tag 1, simple_value 2), session_log 7 (status 1, START = 1)."""
    body = b"\x09" + struct.pack("<d", time.time() if wall_time is None else wall_time)
    body += b"\x10" + _varint(step)
    if file_version:
        body += _message(3, file_version.encode())
    if values:
        body += _message(5, b"".join(_message(1, _message(1, tag.encode()) + b"\x15" + struct.pack("<f", v))
                                     for tag, v in values))
    if start:
        body += _message(7, b"\x08\x01")
    return body


def _fields(buf):
    """(field number, value) of a protocol buffer: an int for a varint, else the bytes."""
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        wire = key & 7
        if wire == 0:
            value, i = _read_varint(buf, i)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = buf[i:i + size], i + size
        elif wire == 2:
            size, i = _read_varint(buf, i)
            value, i = buf[i:i + size], i + size
        else:
            raise ValueError(f"wire type {wire}")
        yield key >> 3, value


def _read_varint(buf, i):
    n = shift = 0
    while True:
        b = buf[i]
        n, i, shift = n | (b & 0x7F) << shift, i + 1, shift + 7
        if b < 0x80:
            return n, i


def records(data):
    """The payloads of the TFRecords in `data`, up to the first torn or damaged one (a kill mid-write)."""
    i = 0
    while i + 12 <= len(data):
        head = data[i:i + 8]
        end = i + 12 + struct.unpack("<Q", head)[0]
        if struct.unpack("<I", data[i + 8:i + 12])[0] != masked_crc(head) or end + 4 > len(data):
            return
        payload = data[i + 12:end]
        if struct.unpack("<I", data[end:end + 4])[0] != masked_crc(payload):
            return
        yield payload
        i = end + 4


def parsed(payload):
    """(step, first tag or None, whether a SessionLog START) of an `Event`."""
    step, tag, start = 0, None, False
    for number, value in _fields(payload):
        if number == 2:
            step = value - (1 << 64) if value >= 1 << 63 else value
        elif number == 5:
            value_msg = next((v for n, v in _fields(value) if n == 1), b"")
            tag = next((v.decode() for n, v in _fields(value_msg) if n == 1), None)
        elif number == 7:
            start = dict(_fields(value)).get(1) == 1
    return step, tag, start


def kept_events(paths, epochs_done, steps_done):
    """The events of the files `paths` (in order) that a checkpoint after `epochs_done` epochs and
    `steps_done` steps covers, as TensorBoard reads them: a SessionLog START at step s drops every
    point read before at a step >= s (its purge after a restart)."""
    kept = []
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        for payload in records(data):
            step, tag, start = parsed(payload)
            if start:
                kept = [k for k in kept if k[0] < step]
            elif tag is not None:
                kept.append((step, tag, payload))
    return [p for step, tag, p in kept if step <= (epochs_done if tag in EPOCH_TAGS else steps_done)]


class Curves:
    """One session's event file in `path`; `owner` is the folder whose marker records the files
    (`writes.own`), the run directory for RUN/tb, else `path` itself."""

    def __init__(self, path, owner, every):
        self.path, self.owner, self.every, self.file = path, owner, every, None

    def _rel(self, name):
        return os.path.relpath(os.path.join(self.path, name), self.owner)

    def _ours(self):
        owned = writes.read_marker(self.owner) or set()
        return sorted(n for n in os.listdir(self.path) if FILE.fullmatch(n) and self._rel(n) in owned)

    def begin(self, epochs_done=0, steps_done=0):
        """Start this session's file: a file version, a START at step 0 (a TensorBoard that read the
        earlier files drops their points), then the points of earlier files the checkpoint covers
        (none for a new run); the earlier files are then removed. Returns self."""
        os.makedirs(self.path, exist_ok=True)
        if self.owner == self.path and writes.read_marker(self.path) is None:
            writes.mark(self.path)
        earlier = self._ours()
        if self._rel(STAGED) in (writes.read_marker(self.owner) or ()):  # a kill left it: ours to remove
            writes.remove_path(os.path.join(self.path, STAGED + writes.TMP))
        numbers = [int(FILE.fullmatch(n).group(1)) for n in os.listdir(self.path) if FILE.match(n)]
        name = f"events.out.tfevents.{max(numbers, default=0) + 1:06d}.tlres"
        kept = kept_events([os.path.join(self.path, n) for n in earlier], epochs_done, steps_done)
        head = [event(0, file_version="brain.Event:2"), event(0, start=True)] + kept
        writes.own(self.owner, self._rel(STAGED), self._rel(name))
        staged = os.path.join(self.path, STAGED)
        writes.atomic(staged, lambda f: f.write(b"".join(record(p) for p in head)))
        self.file = os.path.join(self.path, name)
        os.replace(staged, self.file)
        for n in earlier:
            writes.remove_path(os.path.join(self.path, n))
        return self

    def write(self, step, values):
        values = [(tag, float(v)) for tag, v in values if v is not None]
        if values:
            writes.append(self.file, record(event(step, values)))

    def epoch(self, row):
        """A history.csv row, at its epoch."""
        self.write(int(row["epoch"]), [(t, row.get(t[len("epoch/"):])) for t in EPOCH_TAGS])

    def step(self, step, loss):
        """The epoch's mean training loss so far after `step` steps of the run, every `every` steps;
        `loss` may be a function, called only then."""
        if self.every and step % self.every == 0:
            self.write(step, [(STEP_LOSS, loss() if callable(loss) else loss)])


class Off:
    """--tensorboard off: nothing is written."""

    def epoch(self, row):
        pass

    def step(self, step, loss):
        pass


def start(cfg, run_dir, framework, epochs_done=0, steps_done=0):
    """This session's `Curves` (or `Off`), after a checkpoint at `epochs_done`, `steps_done`."""
    path = folder(cfg, run_dir, framework)
    if path is None:
        return Off()
    owner = run_dir if cfg.tensorboard == TENSORBOARD_IN_RUN else path
    return Curves(path, owner, cfg.tensorboard_every).begin(epochs_done, steps_done)


def keras_callback(cfg, run_dir, steps, state):
    """The Keras runner's callback: after the history callback (it logs the row just added) and
    before the checkpointer, which may stop the run at that epoch's end. The file is started at
    the first fit's start, after the checkpoint `state.saved` (None: a new run)."""
    import keras

    class Curve(keras.callbacks.Callback):
        log, epoch = None, 0

        def on_train_begin(self, logs=None):
            if self.log is None:  # a mid-epoch resume fits twice: one session, one file
                saved = state.saved or {"epochs_done": 0, "step": 0}
                self.log = start(cfg, run_dir, KERAS, saved["epochs_done"],
                                 saved["epochs_done"] * steps + saved["step"])

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            self.log.step(self.epoch * steps + state.offset + batch + 1, lambda: (logs or {})["loss"])

        def on_epoch_end(self, epoch, logs=None):
            self.log.epoch(state.history[-1])

    return Curve()

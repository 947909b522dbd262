"""Model files: a tlres model saved as a plain Keras `.keras` file, with the run's record inside,
and any `.keras` file read as untrusted input (its members, their sizes and its input shapes
checked before Keras reads a byte; Keras' safe_mode, so no code in it runs)."""

import dataclasses
import json

from tlres.core.config import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, Config
from tlres.core.errors import TlresError, brief, human, quote

MODEL_FILE = "model.keras"  # what a finished run leaves: the whole model, Keras' native format
METADATA_FILE = "tlres.json"  # inside model.keras: preprocessing and class names (Keras ignores it)
KERAS_MEMBERS = {"metadata.json": 2 ** 20, "config.json": 2 ** 20, "model.weights.h5": 2 ** 30,
                 "model.weights.npz": 2 ** 30, METADATA_FILE: 2 ** 20}
"""The members a .keras file of a tlres model may have, and the most each may declare: a
ResNet50's config.json is 0.17 MB and its weights 95 MB (docs/bad-input.md), so each
limit is over 5x what tlres writes."""
MAX_EXPANSION = 100  # a member over 1 MiB declaring 100x its stored bytes is a zip bomb (tlres stores)
SHAPE_KEYS = ("batch_shape", "batch_input_shape", "input_shape")


def load_keras(path, label):
    """A .keras model file read as untrusted: `check_keras_file` first, then Keras' loader
    with safe_mode (no code runs), its temporary files in a folder of ours that is removed
    afterwards whatever happens (Keras extracts members to TMPDIR and may leave an empty
    folder there on an error). One line, prefixed `label`, when it cannot be read."""
    import tempfile

    import keras

    check_keras_file(path, label)
    with tempfile.TemporaryDirectory(prefix="tlres-keras-", ignore_cleanup_errors=True) as tmp:
        saved, tempfile.tempdir = tempfile.tempdir, tmp
        try:
            return keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as e:  # not a Keras file, truncated, unknown layers
            raise TlresError(f"{label}: not a readable Keras model ({brief(e)})") from e
        finally:
            tempfile.tempdir = saved


def check_keras_file(path, label):
    """Refuse a .keras zip whose members are not `KERAS_MEMBERS`, declare more than their
    limits or `MAX_EXPANSION` x their stored size, or whose config.json gives an input over
    `config.MAX_IMAGE_SIZE` pixels: before Keras reads a byte of them."""
    import zipfile

    config = None
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                limit = KERAS_MEMBERS.get(info.filename)
                if limit is None:
                    raise TlresError(f"{label}: member {quote(info.filename)} is not one Keras or tlres "
                                     f"writes ({', '.join(KERAS_MEMBERS)}); not a tlres model file")
                if max(info.file_size, info.compress_size) > limit or (info.file_size > 2 ** 20
                                              and info.file_size > MAX_EXPANSION * info.compress_size):
                    raise TlresError(f"{label}: its {info.filename} declares {human(info.file_size)} "
                                     f"({human(info.compress_size)} stored); a tlres model's is under "
                                     f"{human(limit)}")
            if "config.json" in z.namelist():
                config = json.loads(z.read("config.json"))
    except TlresError:
        raise
    except Exception as e:  # BadZipFile, OSError, JSON errors, RecursionError, encrypted members
        raise TlresError(f"{label}: not a readable Keras model ({brief(e)})") from e
    if config is not None:
        _check_input_shapes(label, config)


def _check_input_shapes(label, node, depth=0):
    """Every image shape (4 dimensions) under `SHAPE_KEYS` in a Keras config: height and width
    at most MAX_IMAGE_SIZE, so a crafted input size cannot make Keras allocate terabytes."""
    if depth > 200:
        raise TlresError(f"{label}: its config.json is nested over 200 levels deep; not a tlres model")
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if key in SHAPE_KEYS and isinstance(value, list) and len(value) == 4:
            for dim in value[1:3]:
                if dim is not None and not (type(dim) is int and 0 < dim <= MAX_IMAGE_SIZE):
                    raise TlresError(f"{label}: its config.json gives an input of shape {value[:4]}; tlres "
                                     f"models take images of {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} pixels")
        else:
            _check_input_shapes(label, value, depth + 1)


def save(model, path, metadata=None):
    """Write `model` as a plain Keras model file: loadable without tlres.

    Rebuilt from its config, so the file holds Keras' own Conv2D layers (the
    `kernels.matmul_conv` kernel is an instance attribute and is not saved), no
    optimizer and no tlres loss: `keras.saving.load_model(path)` works anywhere.
    `metadata` (the run's preprocessing and class names) is stored as an extra
    `tlres.json` member of the .keras zip, which Keras ignores, so the file alone
    is enough for `tlres predict`.
    """
    import zipfile

    import keras

    plain = keras.Model.from_config(model.get_config())
    plain.set_weights(model.get_weights())
    plain.save(path)
    if metadata is not None:
        with zipfile.ZipFile(path, "a") as z:
            z.writestr(METADATA_FILE, json.dumps(metadata, indent=2) + "\n")


def read_metadata(path):
    """The `tlres.json` that `save` stored in a .keras file, or None (a bare Keras file)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            if METADATA_FILE not in z.namelist():
                return None
            # tlres writes a few hundred bytes. Read in small chunks: z.read() asks the file
            # for the member's declared compressed size at once, and a file's read(n)
            # allocates n bytes first (a 274-byte zip could ask for 4 GiB)
            chunks, size = [], 0
            with z.open(METADATA_FILE) as f:
                while size <= 2 ** 20:
                    chunk = f.read(2 ** 16)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
            if size > 2 ** 20:
                raise TlresError(f"{path}: its {METADATA_FILE} is over 1 MiB; not tlres' record")
            meta = json.loads(b"".join(chunks))
    except TlresError:
        raise
    except Exception as e:  # BadZipFile, OSError, JSON errors, RecursionError; zipfile's
        # NotImplementedError (compression method, zip version) and RuntimeError (encrypted)
        raise TlresError(f"{path}: not a readable .keras file ({brief(e)})") from e
    if not _is_record(meta):
        raise TlresError(f"{path}: its {METADATA_FILE} is not tlres' record (preprocessing with input_norm "
                         "and class_names, evaluation with batch_size and conv)")
    return meta


def _is_record(meta):
    """The kinds `tlres predict` relies on, in a tlres.json from a file of unknown origin."""
    if not isinstance(meta, dict):
        return False
    pre, ev = meta.get("preprocessing") or {}, meta.get("evaluation") or {}
    if not (isinstance(pre, dict) and isinstance(ev, dict)):
        return False
    choices = {f.name: f.metadata.get("choices") for f in dataclasses.fields(Config)}
    names, batch = pre.get("class_names"), ev.get("batch_size")
    return ((names is None or isinstance(names, list) and all(isinstance(n, str) for n in names))
            and (batch is None or type(batch) is int and batch > 0)
            and pre.get("input_norm") in (None, *choices["input_norm"])
            and ev.get("conv") in (None, *choices["conv"]))

"""Label new images with a trained model: ``tlres predict MODEL INPUT... [--out predictions.csv]``.

What it reads and writes: `HELP` (the command's help text, shown by `tlres predict --help`).
"""

import csv
import os
import sys

import numpy as np

from tlres.data import imagefolder, loaders as data, pipeline
from tlres.net import backend
from tlres.run import evaluate, writes
from tlres.net import modelfile
from tlres.net.cpu import kernel_choice
from tlres.core.errors import TlresError, brief

HELP = """MODEL is a finished run's directory or a ``.keras`` file. The preprocessing is
the run's evaluation preprocessing, exactly: images decoded and resized as
the image-folder loader does (`tlres.data.imagefolder.read_image`), arrays as the
``.npz`` loader does (`tlres.data.loaders`), then `tlres.data.pipeline.eval_arrays`
(normalization, padding to whole batches) and the same batch size and
convolution kernel, so the run's own test images get the run's predictions.
What the model expects comes from the ``tlres.json`` that tlres stores inside
every ``model.keras`` (input normalization, class names, the run's batch size
and convolution setting); the input size is the model's own. A ``.keras`` file
tlres did not write has no such record: give ``--input-norm`` (its classes are
then named 0..C-1).

INPUT is image files, folders (searched recursively for .jpg .jpeg .png .bmp
.gif), or one ``.npz`` with an ``x`` (or ``x_test``) array of images. The CSV
has ``path`` (``index`` for an .npz), ``class``, ``confidence`` (the softmax
probability) and, with ``--top-k K``, ``class_2, confidence_2 ... class_K,
confidence_K``.
"""

PROG = "tlres predict"
CHUNK = 1024  # images decoded and predicted at a time: memory stays flat on long inputs


class Predictor:
    """A loaded model and the preprocessing it was trained with."""

    def __init__(self, model, input_norm, class_names, batch_size, source):
        self.model, self.input_norm, self.batch_size, self.source = model, input_norm, batch_size, source
        self.class_names = tuple(class_names)
        self.image_size = int(model.input_shape[1])

    def logits(self, x):
        """float32 logits of uint8 (N, S, S, 3) images, as the run evaluated its test split."""
        padded, n = pipeline.eval_arrays(x, self.batch_size, self.input_norm)
        return evaluate.predict_logits(self.model, padded, n, self.batch_size)


def model_path(model):
    """MODEL (a run directory or a .keras file) -> the .keras path, checked."""
    if os.path.isdir(model):
        path = os.path.join(model, modelfile.MODEL_FILE)
        if not os.path.isfile(path):
            raise TlresError(f"{model}: no {modelfile.MODEL_FILE} in that folder (a finished tlres run "
                             "writes one; a failed or running run has none yet)")
        return path
    if not os.path.isfile(model):
        raise TlresError(f"{model}: no such run directory or .keras file")
    if not model.endswith(".keras"):
        raise TlresError(f"{model}: expected a run directory or a .keras file")
    return model


def load(model, input_norm=None, batch_size=None, conv=None):
    """A `Predictor` for MODEL; `input_norm`/`batch_size`/`conv` override the stored ones."""
    backend.require_jax()
    path = model_path(model)
    meta = modelfile.read_metadata(path) or {}
    pre, ev = meta.get("preprocessing") or {}, meta.get("evaluation") or {}
    stored = pre.get("input_norm")
    if input_norm is not None and stored is not None and input_norm != stored:
        raise TlresError(f"--input-norm {input_norm}: {model} was trained with {stored!r} "
                         "normalization; drop the flag")
    input_norm = input_norm or stored
    if input_norm is None:
        raise TlresError(f"{model}: no tlres preprocessing record in the file (not written by tlres); "
                         "give --input-norm paper or caffe")
    net = modelfile.load_keras(path, model)
    shape = net.input_shape
    if len(shape) != 4 or shape[1] != shape[2] or shape[1] is None or shape[3] != 3:
        raise TlresError(f"{model}: input shape {shape}; expected (None, S, S, 3) images")
    classes = int(net.output_shape[-1])
    names = pre.get("class_names") or [str(i) for i in range(classes)]
    if len(names) != classes:
        raise TlresError(f"{model}: {len(names)} class names for {classes} outputs")
    batch_size = batch_size or ev.get("batch_size", 64)
    # the kernels the run evaluated with (auto on a CPU: the host's cached plan for this batch)
    kernel_choice.apply_conv(net, conv or ev.get("conv", "auto"), batch_size)
    return Predictor(net, input_norm, names, batch_size, path)


def gather(inputs):
    """INPUT arguments -> ('paths', [(shown path, file path)]) or ('npz', path)."""
    if not inputs:
        raise TlresError("no INPUT given: name image files, folders or one .npz")
    npz = [i for i in inputs if i.endswith(".npz")]
    if npz:
        if len(inputs) > 1:
            raise TlresError(f"{npz[0]}: an .npz input goes alone (got {len(inputs)} inputs); "
                             "predict images and .npz files in separate calls")
        if not os.path.isfile(npz[0]):
            raise TlresError(f"{npz[0]}: no such file")
        return "npz", npz[0]
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            found = imagefolder.list_images(item)
            if not found:
                raise TlresError(f"{item}: no images found in it or below ({', '.join(imagefolder.EXTENSIONS)})")
            paths += [os.path.join(item, *p.split("/")) for p in found]
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise TlresError(f"{item}: no such file or folder")
    return "paths", paths


def npz_images(path, size):
    """The `x` (or `x_test`) array of an .npz as uint8 (N, size, size, 3), as `tlres.data.loaders` reads them."""
    try:
        data.check_npz_sizes(path)
        with np.load(path, allow_pickle=False) as f:
            key = "x" if "x" in f.files else "x_test" if "x_test" in f.files else None
            if key is None:
                raise TlresError(f"{path}: no array x or x_test (has {', '.join(f.files) or 'none'})")
            x = f[key]
    except TlresError:
        raise
    except Exception as e:  # zipfile / format errors
        raise TlresError(f"{path}: not a readable .npz file ({brief(e)})") from e
    if x.ndim == 0 or len(x) == 0:
        raise TlresError(f"{path}: {key} holds no images")
    return data.to_rgb(data.as_uint8(path, key, x), size)


def rows(predictor, gathered, top_k=1, skip_bad_images=False, bar=True):
    """(header, row iterator, skipped list) of the CSV for `gather`'s result.

    Images are decoded and predicted a chunk at a time; a chunk is whole batches, so
    every image sits at the same place in its batch as in one long array (as in the run).
    """
    names = predictor.class_names
    if not 1 <= top_k <= len(names):
        raise TlresError(f"--top-k {top_k}: the model has {len(names)} classes; choose 1..{len(names)}")
    kind, what = gathered
    chunk = predictor.batch_size * max(1, CHUNK // predictor.batch_size)
    header = ["index" if kind == "npz" else "path", "class", "confidence"]
    for k in range(2, top_k + 1):
        header += [f"class_{k}", f"confidence_{k}"]
    skipped = []

    def scored(keys, logits):
        z = logits.astype(np.float64)
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        top = np.argsort(-p, axis=1, kind="stable")[:, :top_k]
        for key, pr, t in zip(keys, p, top):
            row = [writes.csv_text(key) if isinstance(key, str) else key]  # a path; an npz index
            for c in t:
                row += [writes.csv_text(names[c]), f"{pr[c]:.6f}"]
            yield row

    def chunks():
        if kind == "npz":
            x = npz_images(what, predictor.image_size)
            with imagefolder.progress(len(x), "predicting", bar) as pb:
                for i in range(0, len(x), chunk):
                    yield from scored(range(i, min(i + chunk, len(x))), predictor.logits(x[i:i + chunk]))
                    pb.update(min(chunk, len(x) - i))
            return
        with imagefolder.progress(len(what), "predicting", bar) as pb:
            for i in range(0, len(what), chunk):
                part = what[i:i + chunk]
                x, kept, bad = imagefolder.read_images(part, predictor.image_size, skip_bad_images, pb)
                skipped.extend(part[j] for j, _ in bad)
                if len(kept):
                    yield from scored([part[j] for j in kept], predictor.logits(x))

    return header, chunks(), skipped


def check_out(out, overwrite):
    if out == "-":
        return
    if os.path.isdir(out) and not os.path.islink(out):
        raise TlresError(f"--out {out}: is a directory; give a .csv file name")
    writes.output(out, overwrite)
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise TlresError(f"--out {out}: {parent} is not a writable directory")


def run(model, inputs, out="predictions.csv", top_k=1, skip_bad_images=False, input_norm=None,
        batch_size=None, conv=None, overwrite=False):
    """Predict `inputs` with `model` and write the CSV to `out` ('-': stdout); returns the row count.

    The CSV appears only when every input has been predicted (written to a temporary
    file, then renamed): an error leaves no partial output behind.
    """
    check_out(out, overwrite)
    gathered = gather(inputs)  # missing inputs are reported before the model is loaded
    predictor = load(model, input_norm, batch_size, conv)
    header, body, skipped = rows(predictor, gathered, top_k, skip_bad_images)
    tmp = None if out == "-" else f"{out}.tmp{os.getpid()}"
    n = 0
    try:  # the temporary file is new (O_EXCL), and opened through no link (O_NOFOLLOW)
        f = sys.stdout if tmp is None else open(
            os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666),
            "w", newline="", errors="surrogateescape")  # a path as named
    except OSError as e:
        raise TlresError(f"--out {out}: cannot create {tmp} beside it ({e.strerror}); move it away") from None
    try:
        try:
            w = csv.writer(f)
            w.writerow(header)
            for row in body:
                w.writerow(row)
                n += 1
        finally:
            if tmp is not None:
                f.close()
        if tmp is not None:
            os.replace(tmp, out)
    except BrokenPipeError:  # --out - into a pager or head that stopped reading: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return n
    except BaseException:
        if tmp is not None and os.path.lexists(tmp):
            os.remove(tmp)
        raise
    if skipped:
        print(f"tlres predict: skipped {len(skipped)} unreadable image(s) (first: {skipped[0]})",
              file=sys.stderr, flush=True)
    if tmp is not None:
        print(f"tlres predict: {n} prediction(s) -> {out}", file=sys.stderr, flush=True)
    return n


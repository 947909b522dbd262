"""A folder of images, one subfolder per class, as a `tlres.data.dataset.Dataset`.

Layouts (Keras' and torchvision's convention): ``DIR/train/<class>/`` and ``DIR/test/<class>/``
(your split), or ``DIR/<class>/``: tlres holds out ``max(1, floor(test_split * n + 0.5))`` of a
class's n images (at most n - 1), the first by SHA-256 of ``"<SPLIT_SEED>:<class>/<path>"``, so
the split depends on file names alone (never --seed, listing order or machine), and an added
file moves at most one other. Class names are the sorted subfolders; images are found
recursively by extension (`EXTENSIONS`, any case), dot-names skipped. Pillow decodes each (a
GIF's first frame; alpha dropped; palette, CMYK and gray to RGB; 16-bit keeps its high byte; no
EXIF rotation, as Keras and torchvision), `tlres.data.resample` resizes it, and it is written into
its row of arrays allocated once: one copy of the data plus one decoded image at a time.
"""

import hashlib
import os
import stat
import sys
import warnings

import numpy as np
from PIL import Image
from tqdm import tqdm

from tlres.data import resample
from tlres.data.dataset import Dataset
from tlres.core.errors import TlresError, brief, quote

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
SPLIT_SEED = 0  # fixed: the split of a DIR/<class>/ folder never depends on --seed
MAX_PIXELS = 100_000_000  # a larger image (e.g. 10,000 x 10,000) is refused, not decoded
MAX_FILE_BYTES = 8 * MAX_PIXELS  # no image of MAX_PIXELS needs more (16-bit RGBA, uncompressed)
PROGRESS_AFTER_S = 2.0


class UnreadableImage(TlresError):
    """One image file that cannot be decoded; `--skip-bad-images` skips these."""


# -------------------------------------------------------------------- reading
def is_image_file(name):
    return not name.startswith(".") and name.lower().endswith(EXTENSIONS)


def open_image(path):
    """Decode one image file as uint8 (H, W, 3) RGB; `UnreadableImage` names the file.

    Pillow reads from the file's bytes in memory, not from the file: Pillow (13.0)
    skips the rest of a PNG chunk with ``fp.read(declared length)``, and a file's
    read(n) allocates n bytes first (a 43-byte PNG declaring a 2 GiB IDAT chunk
    allocated 2 GiB). Regular files only: a FIFO named x.png would block forever.
    """
    import io

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow warns above it and refuses at twice it
    try:
        st = os.stat(path)
    except OSError as e:
        raise UnreadableImage(f"{path}: cannot read it ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise UnreadableImage(f"{path}: not a regular file")
    if st.st_size > MAX_FILE_BYTES:
        raise UnreadableImage(f"{path}: {st.st_size:,} bytes, more than any image of at most "
                              f"{MAX_PIXELS:,} pixels needs (limit {MAX_FILE_BYTES:,} bytes)")
    try:
        with open(path, "rb") as f:
            blob = f.read()
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(blob)) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise Image.DecompressionBombError("")
                img.seek(0)  # the first frame of an animation
                img.load()
                return _rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UnreadableImage(f"{path}: more than {MAX_PIXELS:,} pixels; refused as a possible "
                              "decompression bomb (shrink it first)") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, KeyError,
            MemoryError, Image.UnidentifiedImageError) as e:  # what Pillow's decoders raise
        raise UnreadableImage(f"{path}: not a readable image ({brief(e, 160)})") from None


def _rgb(img):
    if img.mode.startswith("I;16"):  # 16-bit grayscale PNG: keep the high byte
        gray = (np.asarray(img, np.uint16) >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # Pillow's route for palettes with a transparent entry
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, np.uint8)


def read_image(path, size):
    """One image file as uint8 (size, size, 3): decoded, RGB, resized."""
    return resample.resize(open_image(path), size)


# -------------------------------------------------------------------- listing
def _subdirs(folder):
    try:
        entries = sorted(os.listdir(folder))
    except OSError as e:
        raise TlresError(f"--data {folder}: cannot list it ({e.strerror})") from None
    return [e for e in entries if not e.startswith(".") and os.path.isdir(os.path.join(folder, e))]


def list_images(folder):
    """Image files under `folder`, recursively, as sorted '/'-separated relative paths."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = os.path.relpath(root, folder)
        for name in files:
            if is_image_file(name):
                found.append(name if rel == "." else os.path.join(rel, name).replace(os.sep, "/"))
    return sorted(found)


def _no_images(folder):
    return TlresError(
        f"--data {folder}: no images found (expected {folder}/<class>/*, or {folder}/train/<class>/* "
        f"and {folder}/test/<class>/*, with {', '.join(EXTENSIONS)} files; a CIFAR-10 folder holds "
        "test_batch, an idx folder train-images-idx3-ubyte)")


def check_entry(root, rel):
    """Refuse (one line) a name under `root` that is not UTF-8, or a symbolic link whose target
    lies outside `root`: tlres reads only the data folder, and writes names into UTF-8 files."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        raise TlresError(f"--data {root}: the name {os.fsencode(rel)!r} is not UTF-8; rename it "
                         "(class and file names go into split.csv and config.json)") from None
    path = os.path.join(root, rel)
    if os.path.islink(path):
        top, target = os.path.realpath(root), os.path.realpath(path)
        if os.path.commonpath([top, target]) != top:
            raise TlresError(f"--data {root}: {quote(rel)} is a symbolic link to {quote(target)}, "
                             "outside the data folder; copy what it points at into the folder, or "
                             "remove the link")


def _classes(root, split=""):
    """{class name: [image paths inside its folder]} of the class subfolders of root/split."""
    folder = os.path.join(root, split) if split else root
    classes = {}
    for name in _subdirs(folder):
        inside = f"{split}/{name}" if split else name
        check_entry(root, inside)
        files = list_images(os.path.join(folder, name))
        for f in files:
            check_entry(root, f"{inside}/{f}")
        if not files:
            raise TlresError(f"--data {root}: class folder {split + '/' if split else ''}{name}/ has no "
                             f"images ({', '.join(EXTENSIONS)}); add some or remove the folder")
        classes[name] = files
    return classes


def split_key(class_name, path):
    """The sort key that decides which images of a class are held out (see the module doc)."""
    return hashlib.sha256(f"{SPLIT_SEED}:{class_name}/{path}".encode()).hexdigest()


def num_test(n, test_split):
    return min(n - 1, max(1, int(np.floor(test_split * n + 0.5))))


def plan(folder, test_split=0.2):
    """(class names, {"train": [(path, label)], "test": [...]}, record): what to read, no decoding.

    Paths are relative to `folder`, '/'-separated; `record` goes into config.json.
    """
    top = _subdirs(folder)
    if "train" in top and "test" in top:
        for split in ("train", "test"):
            check_entry(folder, split)
        train, test = (_classes(folder, s) for s in ("train", "test"))
        for a, b, (sa, sb) in ((train, test, ("train", "test")), (test, train, ("test", "train"))):
            missing = [c for c in a if c not in b]
            if missing:
                raise TlresError(f"--data {folder}: class {missing[0]!r} is in {sa}/ but not in {sb}/ "
                                 f"({len(missing)} such class{'es' if len(missing) > 1 else ''}); "
                                 f"every class needs {sb} images")
        names = tuple(train)
        rows = {s: [(f"{s}/{c}/{p}", i) for i, c in enumerate(names) for p in d[c]]
                for s, d in (("train", train), ("test", test))}
        record = {"layout": "DIR/train/<class>/, DIR/test/<class>/"}
    else:
        lone = [d for d in ("train", "test") if d in top]
        if lone and _subdirs(os.path.join(folder, lone[0])):  # a split folder, not a class
            have, lack = lone[0], "test" if lone[0] == "train" else "train"
            raise TlresError(f"--data {folder}: has {have}/<class>/ folders but no {lack}/; add "
                             f"{folder}/{lack}/<class>/ (e.g. rename a val/ folder), or pass "
                             f"--data {folder}/{have} to split it with --test-split")
        classes = _classes(folder)
        names = tuple(classes)
        rows = {"train": [], "test": []}
        for i, c in enumerate(names):
            files = classes[c]
            if len(files) < 2:
                raise TlresError(f"--data {folder}: class {c!r} has {len(files)} image; splitting it "
                                 "for --test-split needs at least 2 per class")
            order = sorted(files, key=lambda p: split_key(c, p))
            held = set(order[:num_test(len(files), test_split)])
            for p in files:  # sorted path order within each split
                rows["test" if p in held else "train"].append((f"{c}/{p}", i))
        record = {"layout": "DIR/<class>/", "test_split": test_split, "split_seed": SPLIT_SEED,
                  "split_rule": "per class, the max(1, floor(test_split*n+0.5)) files (at most n-1) "
                                "with the smallest sha256('<split_seed>:<class>/<path>') are tested"}
    if not names:
        if any(is_image_file(f) for f in os.listdir(folder)):
            raise TlresError(f"--data {folder}: holds images but no class subfolders; put each "
                             f"class's images in {folder}/<class>/")
        raise _no_images(folder)
    if len(names) < 2:
        raise TlresError(f"--data {folder}: one class folder ({names[0]!r}); need at least 2 classes, "
                         "one subfolder each")
    return names, rows, record


# -------------------------------------------------------------------- decoding
def progress(total, desc, enabled=True):
    """A tqdm bar on stderr, shown only once the work has taken PROGRESS_AFTER_S seconds.

    Redrawn 10 times a second on a terminal, every 10 s into a log file.
    """
    tty = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit="img", delay=PROGRESS_AFTER_S, file=sys.stderr,
                leave=False, disable=not enabled, mininterval=0.1 if tty else 10.0,
                dynamic_ncols=tty)


def read_images(paths, size, skip_bad=False, bar=None):
    """uint8 (N, size, size, 3) for the readable files of `paths`, the kept indices, the bad ones.

    The array is allocated once; an unreadable image raises `UnreadableImage` unless
    `skip_bad`, then it is left out (listed as (index, message)). `bar` (a `progress`)
    advances by one per file.
    """
    x = np.empty((len(paths), size, size, 3), np.uint8)
    kept, bad = [], []
    for i, path in enumerate(paths):
        try:
            x[len(kept)] = read_image(path, size)
            kept.append(i)
        except UnreadableImage as e:
            if not skip_bad:
                raise UnreadableImage(f"{e}; fix or remove it, or pass --skip-bad-images") from None
            bad.append((i, str(e)))
        if bar is not None:
            bar.update()
    return x[:len(kept)], kept, bad


def load(folder, image_size=32, test_split=0.2, skip_bad_images=False):
    """The Dataset of an image folder; `files` lists (split, index, class, path) rows."""
    names, rows, record = plan(folder, test_split)
    arrays, files, skipped = {}, [], []
    with progress(len(rows["train"]) + len(rows["test"]), f"decoding {folder}") as bar:
        for split in ("train", "test"):
            paths = [os.path.join(folder, *p.split("/")) for p, _ in rows[split]]
            x, kept, bad = read_images(paths, image_size, skip_bad_images, bar)
            y = np.array([rows[split][i][1] for i in kept], np.int32)
            files += [(split, j, names[rows[split][i][1]], rows[split][i][0]) for j, i in enumerate(kept)]
            skipped += [("skipped", "", names[rows[split][i][1]], rows[split][i][0]) for i, _ in bad]
            lacking = [names[c] for c in range(len(names)) if not np.any(y == c)]
            if lacking:
                raise TlresError(f"--data {folder}: class {lacking[0]!r} has no readable {split} images "
                                 f"left after skipping {len(bad)} unreadable one(s)")
            arrays[split] = (x, y)
    if skipped:
        print(f"tlres: skipped {len(skipped)} unreadable image(s) in {folder} (first: {skipped[0][3]}); "
              "split.csv lists them", file=sys.stderr, flush=True)
    record = {**record, "split_file": "split.csv", "skipped": len(skipped)}
    (xtr, ytr), (xte, yte) = arrays["train"], arrays["test"]
    return Dataset(os.path.basename(os.path.normpath(folder)), xtr, ytr, xte, yte, names,
                   files=tuple(files + skipped), record=record)

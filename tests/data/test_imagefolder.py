"""--data DIR, a folder of images: decoding, resizing, both layouts, the split, bad images.

Folders are written by the tests with Pillow, with known pixels; nothing trains here
(tests/run/test_predict.py trains on such folders end to end).
"""

import hashlib
import math
import os

import numpy as np
import pytest
from conftest import IMAGE_KINDS, write_image, write_image_folder

from tlres.data import imagefolder, loaders as data, resample
from tlres.core.errors import TlresError


def resize_reference(img, size):
    """float64 antialiased bilinear resize, written from the definition, one output pixel at a time.

    Output pixel t of an axis of n pixels samples the input at c = (t + 0.5) n / size - 0.5 with
    the triangle kernel max(0, 1 - |j - c| / s), s = max(n / size, 1), weights normalized to sum 1
    (jax.image.resize's "linear" with antialias=True).
    """
    def axis(n):
        m = np.zeros((size, n))
        s = max(n / size, 1.0)
        for t in range(size):
            c = (t + 0.5) * n / size - 0.5
            for j in range(n):
                m[t, j] = max(0.0, 1.0 - abs(j - c) / s)
            m[t] /= m[t].sum()
        return m

    h, w = img.shape[:2]
    return np.einsum("sh,tw,hwc->stc", axis(h), axis(w), img.astype(np.float64))


@pytest.mark.parametrize("shape", [(20, 32), (75, 40), (32, 100), (7, 9), (2100, 40)])
def test_resize_is_jax_image_resize_in_float64(shape):
    import jax

    img = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    got = resample.resize(img, 32).astype(np.float64)
    ref = resize_reference(img, 32)
    # float64 throughout: got is a correct rounding of the exact value (a tie may go either way)
    assert np.abs(got - ref).max() <= 0.5 + 1e-9
    jax_got = np.asarray(jax.image.resize(img.astype(np.float32), (32, 32, 3), "linear", antialias=True))
    # the filter is jax.image.resize's: in float32 a sum of <= 2100 terms <= 255 is off by at most
    # ~2100 * 255 * 2**-24 < 0.04
    assert np.abs(jax_got - ref).max() < 0.04
    # a batch (the array loaders) is each of its images resized alone (image folders, predict)
    batch = np.stack([img, img[::-1], 255 - img])
    np.testing.assert_array_equal(resample.resize(batch, 32),
                                  np.stack([resample.resize(i, 32) for i in batch]))


def test_every_kind_of_image_decodes_to_its_pixels(tmp_path):
    rng = np.random.default_rng(0)
    for ext, mode, _ in IMAGE_KINDS:  # at the model's size: no resize, so lossless ones are exact
        path = str(tmp_path / f"{mode}.{ext}")
        pixels = write_image(path, rng, (ext, mode, (32, 32)))
        got = imagefolder.read_image(path, 32)
        assert got.shape == (32, 32, 3) and got.dtype == np.uint8
        if ext in ("jpg", "jpeg"):  # lossy: a smooth gradient at quality 95 stays within a few levels
            assert np.abs(got.astype(int) - pixels).mean() < 2, (ext, mode)
        else:
            np.testing.assert_array_equal(got, pixels, err_msg=f"{ext} {mode}")


def test_other_modes(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(2)
    a16 = rng.integers(0, 65536, (32, 32), dtype=np.uint16)  # 16-bit grayscale PNG: the high byte
    Image.fromarray(a16).save(tmp_path / "g16.png")  # mode I;16
    np.testing.assert_array_equal(imagefolder.read_image(str(tmp_path / "g16.png"), 32),
                                  np.repeat((a16 >> 8).astype(np.uint8)[..., None], 3, axis=-1))
    idx = rng.integers(0, 4, (32, 32), dtype=np.uint8)  # palette with a transparent entry
    pal = rng.integers(0, 256, (4, 3), dtype=np.uint8)
    img = Image.fromarray(idx, "P")
    img.putpalette(pal.flatten().tolist())
    img.save(tmp_path / "t.png", transparency=0)
    np.testing.assert_array_equal(imagefolder.read_image(str(tmp_path / "t.png"), 32), pal[idx])
    frames = [Image.fromarray(np.full((32, 32, 3), v, np.uint8)) for v in (10, 200)]  # animated GIF
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert np.all(imagefolder.read_image(str(tmp_path / "anim.gif"), 32) == 10)  # the first frame


def test_train_test_layout(tmp_path):
    root = str(tmp_path / "pets")
    written = {**write_image_folder(root, per_class=5, split="train"),
               **write_image_folder(root, per_class=3, split="test", seed=1)}
    os.makedirs(os.path.join(root, "train", ".ipynb_checkpoints"))  # hidden: not a class
    (tmp_path / "pets" / "train" / "cat" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "pets" / "train" / "cat" / "._img00.png").write_bytes(b"\0")  # macOS metadata
    (tmp_path / "pets" / "train" / "cat" / "notes.txt").write_text("not an image")
    ds = data.load(root, image_size=32)
    assert ds.name == "pets" and ds.class_names == ("cat", "dog", "eel")
    assert (len(ds.x_train), len(ds.x_test)) == (15, 9)
    np.testing.assert_array_equal(ds.y_train, np.repeat([0, 1, 2], 5))
    np.testing.assert_array_equal(ds.y_test, np.repeat([0, 1, 2], 3))
    assert ds.x_train.dtype == np.uint8 and ds.x_train.shape[1:] == (32, 32, 3)
    rows = {(split, int(i)): (c, p) for split, i, c, p in ds.files}
    assert len(rows) == 24
    for (split, i), (c, path) in rows.items():
        x = (ds.x_train if split == "train" else ds.x_test)[i]
        assert path.split("/")[:2] == [split, c]
        pixels = written[path]
        if path.endswith((".jpg", ".jpeg")):
            continue
        want = pixels if pixels.shape[:2] == (32, 32) else resize_reference(pixels, 32)
        assert np.abs(x.astype(np.float64) - want).max() <= 0.5 + 1e-9, path
    assert ds.record["layout"].startswith("DIR/train/")


def expected_split(root, test_split):
    """The documented rule, recomputed: per class, the files with the smallest sha256 are tested."""
    test = set()
    for c in sorted(os.listdir(root)):
        files = sorted(os.path.relpath(os.path.join(d, f), os.path.join(root, c)).replace(os.sep, "/")
                       for d, _, fs in os.walk(os.path.join(root, c)) for f in fs)
        k = min(len(files) - 1, max(1, math.floor(test_split * len(files) + 0.5)))
        keyed = sorted(files, key=lambda p: hashlib.sha256(f"0:{c}/{p}".encode()).hexdigest())
        test |= {f"{c}/{p}" for p in keyed[:k]}
    return test


@pytest.mark.parametrize("test_split", [0.2, 0.5])
def test_class_folder_layout_split(tmp_path, test_split):
    root = str(tmp_path / "flowers")
    write_image_folder(root, per_class=7)
    os.makedirs(os.path.join(root, "cat", "more"))
    write_image(os.path.join(root, "cat", "more", "deep.png"), np.random.default_rng(3), IMAGE_KINDS[0])
    ds = data.load(root, image_size=32, test_split=test_split)
    tested = {p for s, _, _, p in ds.files if s == "test"}
    assert tested == expected_split(root, test_split)
    # cat has 8 images, dog and eel 7: floor(0.2*8+0.5) = 2, floor(0.2*7+0.5) = 1; 0.5: 4 each
    assert np.bincount(ds.y_test).tolist() == {0.2: [2, 1, 1], 0.5: [4, 4, 4]}[test_split]
    assert len(ds.x_train) + len(ds.x_test) == 22
    again = data.load(root, image_size=32, test_split=test_split, skip_bad_images=True)
    assert again.files == ds.files  # the same split every time (it never sees --seed)
    np.testing.assert_array_equal(again.x_test, ds.x_test)
    assert ds.record["test_split"] == test_split and ds.record["split_seed"] == 0


def test_a_cifar_folder_is_not_an_image_folder(tmp_path, cifar_archive):
    from conftest import write_cifar_batches

    folder = tmp_path / "c"
    write_cifar_batches(str(folder))
    os.remove(folder / "test_batch")  # still CIFAR: its other files say so (idx: tests/data/test_idx.py)
    with pytest.raises(TlresError, match="missing test_batch"):
        data.load(str(folder))
    assert data.load(cifar_archive[1]).name == "cifar10"


# -- bad images ---------------------------------------------------------------------------------
def test_skip_bad_images_counts_and_lists_them(tmp_path, capsys):
    root = tmp_path / "d"
    write_image_folder(str(root), per_class=4, split="train")
    write_image_folder(str(root), per_class=2, split="test", seed=1)
    (root / "train" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = root / "train" / "dog" / "img00.png"
    (root / "train" / "dog" / "cut.png").write_bytes(good.read_bytes()[:60])  # truncated
    with pytest.raises(TlresError, match="broken.jpg: not a readable image") as e:
        data.load(str(root))
    assert "--skip-bad-images" in str(e.value) and "\n" not in str(e.value)
    ds = data.load(str(root), skip_bad_images=True)
    assert len(ds.x_train) == 12
    assert sorted(p for s, _, _, p in ds.files if s == "skipped") == ["train/cat/broken.jpg",
                                                                     "train/dog/cut.png"]
    assert ds.record["skipped"] == 2
    assert "skipped 2 unreadable image(s)" in capsys.readouterr().err


def test_a_class_with_no_readable_images_left(tmp_path):
    root = tmp_path / "d"
    write_image_folder(str(root), per_class=3)
    for f in (root / "eel").iterdir():
        f.write_bytes(b"junk")
    with pytest.raises(TlresError, match="class 'eel' has no readable train images"):
        data.load(str(root), skip_bad_images=True)


def test_decompression_bomb_is_refused_by_name(tmp_path, monkeypatch):
    root = tmp_path / "d"
    write_image_folder(str(root), per_class=3)
    monkeypatch.setattr(imagefolder, "MAX_PIXELS", 32 * 32)  # 75x60 and 50x90 images are "bombs"
    with pytest.raises(TlresError, match="more than 1,024 pixels; refused as a possible decompression") as e:
        data.load(str(root))
    assert str(e.value).startswith(str(root)) and "--skip-bad-images" in str(e.value)


def test_folder_layout_mistakes_are_one_line(tmp_path):
    import shutil

    root = tmp_path / "a"
    write_image_folder(str(root), per_class=3, split="train")
    write_image_folder(str(root), per_class=2, split="test", classes=("cat", "dog", "eel", "fox"))
    with pytest.raises(TlresError, match="class 'fox' is in test/ but not in train/"):
        data.load(str(root))
    shutil.rmtree(root / "test")  # a lone train/ of class folders is a split folder, not a class
    with pytest.raises(TlresError, match="has train/<class>/ folders but no test/.*--data .*/a/train"):
        data.load(str(root))
    loose = tmp_path / "loose"
    loose.mkdir()
    shutil.copy(root / "train" / "cat" / "img00.png", loose / "x.png")
    with pytest.raises(TlresError, match="holds images but no class subfolders"):
        data.load(str(loose))

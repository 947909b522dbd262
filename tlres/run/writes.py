"""Safe writes into a run directory: atomic, and a full disk is one line.

Every file goes to a temporary name beside it (``NAME.tmp``, or a ``NAME.tmp/`` folder), is
flushed and renamed over the target: a kill leaves the old version or the new one. A full
filesystem, quota or file size limit removes the temporary file and raises `DiskFull`, one line
(exit status 4); `check_free` checks the same before training; `remove_stale` drops what a
killed process left. A folder tlres owns carries the marker ``.tlres-run.json`` (`mark`, `own`)
naming every file tlres wrote there: only those may be deleted or replaced
(`tlres.run.rundir.clear`). `output` refuses a user's output file that exists (without
--overwrite) or is a link. docs/reproducibility.md, "Faults during a run".
"""

import errno
import json
import os
import shutil

from tlres.core import errors
from tlres.core.errors import TlresError

TMP = ".tmp"
FORMULA = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet cell starting so is a formula (OWASP)
MARKER = ".tlres-run.json"
KIND = "files tlres wrote in this folder"
FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def csv_text(text):
    """A text cell (class name, path, label) for a CSV a spreadsheet may open: prefixed with ``'``
    when it starts with `FORMULA` (as OWASP's CSV injection advice says) or with ``'`` itself,
    so `csv_text_read` gives back exactly `text`. Numbers are never passed here."""
    text = str(text)
    return "'" + text if text.startswith(FORMULA + ("'",)) else text


def csv_text_read(cell):
    """The text `csv_text` wrote into `cell`."""
    return cell[1:] if cell.startswith("'") else cell


class DiskFull(TlresError):
    """A write into the run directory found no room (full filesystem, quota, or file size limit)."""

    exit_code = 4
    remedy = "free some space"  # what the user does, in words


def free_bytes(path):
    """Bytes an unprivileged process may still write on `path`'s filesystem (its nearest
    existing folder's)."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def file_size_limit():
    """This process' soft RLIMIT_FSIZE in bytes, or None when unlimited (or unknown)."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


def full_error(exc):
    """The ENOSPC/EFBIG/EDQUOT OSError behind `exc`, or None. Writers that clean up after a failed
    write (zipfile, in np.savez) can raise a second error whose context is the real one."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno in FULL:
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def remove_path(path):
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)
    except FileNotFoundError:
        pass


def no_room(path, needed, exc, written=0):
    """The one-line `DiskFull` for a failed write of `path` (its temporary files already removed):
    `needed` bytes when known, else more than the `written` bytes it had written."""
    free = free_bytes(os.path.dirname(os.path.abspath(path)) or ".")
    need = f"it needs about {errors.human(needed)}" if needed else f"it needs more than {errors.human(written)}"
    limit = file_size_limit()
    if exc.errno == errno.EFBIG and limit is not None:
        e = DiskFull(f"cannot write {path}: over this process' file size limit (ulimit -f) of "
                     f"{errors.human(limit)}: {need} ({errors.human(free)} free on its filesystem)")
        e.remedy = "raise the file size limit (ulimit -f)"
        return e
    what = "disk quota exceeded" if exc.errno == errno.EDQUOT else "no space left on its filesystem"
    return DiskFull(f"cannot write {path}: {what}: {need}, {errors.human(free)} free")


# --- what tlres owns: the marker ---

def read_marker(folder):
    """The set of paths (relative to `folder`) its marker says tlres wrote, or None when `folder`
    carries no valid marker (none, a link, unreadable, or not tlres')."""
    path = os.path.join(folder, MARKER)
    try:
        if os.path.islink(path):
            return None
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    owned = record.get("owned") if isinstance(record, dict) and record.get("kind") == KIND else None
    if not isinstance(owned, list) or not all(isinstance(p, str) for p in owned):
        return None
    return set(owned)


def _write_marker(folder, owned):
    atomic_text(os.path.join(folder, MARKER),
                json.dumps({"kind": KIND, "owned": sorted(owned)}, indent=1) + "\n")


def mark(folder, names=()):
    """Give `folder` (new, or emptied of what tlres wrote) a marker naming `names`: the files
    tlres will write there (`own` adds any other before it is written)."""
    _write_marker(folder, set(names))


def own(folder, *names):
    """Record in `folder`'s marker that tlres writes `names` (paths relative to it); nothing
    when `folder` has no marker (a run from an older tlres, or a user's folder)."""
    owned = read_marker(folder)
    if owned is not None and not owned.issuperset(names):
        _write_marker(folder, owned | set(names))


def _own_path(path):
    folder, name = os.path.split(os.path.abspath(path))
    if name != MARKER:
        own(folder, name)


def output(path, overwrite, flag="--out"):
    """Refuse an output file named by the user that tlres must not replace: one that exists
    (unless `overwrite`), a folder, or a symbolic link (tlres writes through none)."""
    if os.path.islink(path):
        raise TlresError(f"{flag} {path}: is a symbolic link; tlres does not write through links, "
                         "give the real file's path or remove the link")
    if os.path.isdir(path):
        raise TlresError(f"{flag} {path}: is a directory; give a file name")
    if os.path.exists(path) and not overwrite:
        raise TlresError(f"{flag} {path}: exists; choose another name or pass --overwrite to replace it")


def claim(out, names, flag="--out"):
    """Make folder `out` ready for `names`, the files a command that is re-run into it writes
    there (`tlres parity`, `tlres crosscheck`: no --overwrite). Before any work, refuse a name
    that is a symbolic link, a folder, or a file tlres did not write (its marker says what it
    wrote); then create `out` or add `names` to its marker, so the next call replaces them."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise TlresError(f"{flag} {out}: exists and is not a directory; choose another path")
    owned = read_marker(out) or set()
    for name in names:
        path = os.path.join(out, name)
        if os.path.islink(path) or os.path.isdir(path):
            output(path, True, flag)  # one line: a link or a folder is never replaced
        if os.path.exists(path) and name not in owned:
            raise TlresError(f"{flag} {out}: {name} exists and tlres did not write it; move it away "
                             "or choose another path")
    os.makedirs(out, exist_ok=True)
    if not os.path.lexists(os.path.join(out, MARKER)):
        mark(out, names)
    else:
        own(out, *names)


def _leftover(tmp, folder, name):
    """Remove `tmp`, a temporary file or folder an earlier tlres left while writing `name` in
    `folder`: only where `folder`'s marker says tlres owns `name`; anything else there is not
    tlres' to delete, and one line says so."""
    if not os.path.lexists(tmp):
        return
    if name not in (read_marker(folder) or ()):
        raise TlresError(f"cannot write {os.path.join(folder, name)}: {tmp} is in the way and tlres "
                         "did not write it; move it away")
    remove_path(tmp)


def _open_new(tmp):
    """Open the temporary file `tmp` for writing, new (O_EXCL, O_NOFOLLOW: tlres writes into
    nothing it did not create, and through no link); a leftover is removed first (`_leftover`)."""
    folder, name = os.path.split(os.path.abspath(tmp))
    _leftover(tmp, folder, name[:-len(TMP)])
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    return os.fdopen(os.open(tmp, flags, 0o666), "wb")


def atomic(path, write, needed=None):
    """Write `path` through `path.tmp`: `write(f)` fills the binary file `f`; then fsync and rename.

    On any failure the temporary file is removed; ENOSPC/EFBIG/EDQUOT become `DiskFull`
    naming `path`, the `needed` bytes (when not given: more than it had written) and the
    bytes free. A marker in `path`'s folder records it first (`own`).
    """
    tmp = path + TMP
    written = 0
    _own_path(path)
    f = _open_new(tmp)  # before the try: a temporary name in the way is not ours to remove
    try:
        with f:
            try:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            finally:
                written = f.tell() if not f.closed else written
        os.replace(tmp, path)
    except BaseException as e:
        remove_path(tmp)
        full = full_error(e)
        if full:
            raise no_room(path, needed, full, written) from e
        raise


def append(path, data):
    """Add the bytes `data` to the end of `path`, a file tlres created (`atomic`), through no link
    (a stream such as TensorBoard's event files, read while it grows); a full disk is `DiskFull`."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0))
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
    except OSError as e:
        if e.errno in FULL:
            raise no_room(path, len(data), e) from e
        raise


def atomic_text(path, text):
    """`atomic` for a str (UTF-8); the bytes it needs are known exactly."""
    data = text.encode()
    atomic(path, lambda f: f.write(data), needed=len(data))


def staged(path, save, needed=None):
    """Write `path` with a writer that needs the final file name (`save(p)` writes file `p`):
    it writes `path.tmp/<name>`, which is then renamed to `path`. Same guarantees as `atomic`."""
    folder = path + TMP
    _own_path(path)
    _leftover(folder, *os.path.split(os.path.abspath(path)))
    try:
        os.makedirs(folder)
        inner = os.path.join(folder, os.path.basename(path))
        save(inner)
        with open(inner, "rb") as f:
            os.fsync(f.fileno())
        os.replace(inner, path)
        os.rmdir(folder)
    except BaseException as e:
        written = tree_size(folder)
        remove_path(folder)
        full = full_error(e)
        if full:
            raise no_room(path, needed, full, written) from e
        raise


def staged_files(out, names, save):
    """Write several files of folder `out` at once: `save(folder)` writes `names` into a
    temporary folder, then each is renamed into `out`. A full disk names the file that failed."""
    folder = os.path.join(out, "files" + TMP)
    own(out, *names, "files" + TMP)
    _leftover(folder, out, "files" + TMP)
    try:
        os.makedirs(folder)
        save(folder)
        for name in names:
            os.replace(os.path.join(folder, name), os.path.join(out, name))
        os.rmdir(folder)
    except BaseException as e:
        present = [n for n in names if os.path.exists(os.path.join(folder, n))]
        failed = present[-1] if present else names[0]  # written in order: the last one is torn
        written = tree_size(folder)
        remove_path(folder)
        full = full_error(e)
        if full:
            raise no_room(os.path.join(out, failed), None, full, written) from e
        raise


def tree_size(folder):
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def check_free(out, needed, why):
    """Raise `DiskFull` now, before training, when `out`'s filesystem has fewer than `needed` bytes free."""
    free = free_bytes(out)
    if free < needed:
        raise DiskFull(f"--out {out}: {errors.human(free)} free on its filesystem, but the run needs about "
                       f"{errors.human(needed)} ({why}); free some space or choose another --out")


def remove_stale(run_dir):
    """Remove `*.tmp` files and folders a killed process left in `run_dir` (and its ckpt/), those
    of files its marker names; returns [(relative path, bytes)] of what was removed."""
    removed = []
    owned = read_marker(run_dir) or set()
    for folder in (run_dir, os.path.join(run_dir, "ckpt")):
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            p = os.path.join(folder, name)
            rel = os.path.relpath(p, run_dir)
            if name.endswith(TMP) and (rel in owned or rel[:-len(TMP)] in owned):
                size = tree_size(p) if os.path.isdir(p) else os.path.getsize(p)
                remove_path(p)
                removed.append((rel, size))
    return removed


def describe_removed(removed):
    """One line for `remove_stale`'s result, or None when nothing was removed."""
    if not removed:
        return None
    files = ", ".join(f"{p} ({errors.human(n)})" for p, n in removed)
    return (f"removed {len(removed)} temporary file{'s' if len(removed) != 1 else ''} an earlier "
            f"process left behind: {files}")

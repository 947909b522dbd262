"""The one exception type users see, and the words of its one-line messages (`quote`, `plural`,
`brief`, `human`).

Anything a user can fix (a missing file, a bad flag value, an unreachable
download) is raised as `TlresError`; the command line prints its message as a
single line and exits with status 2. Everything else is a bug and keeps its
traceback.
"""


class TlresError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    def __str__(self):  # one line even when the message quotes text from a file
        return " ".join(super().__str__().splitlines())


class TrainingFailed(TlresError):
    """Training itself went wrong (e.g. a non-finite loss); the run is marked failed."""

    exit_code = 3


TlresError.exit_code = 2


def quote(text, limit=120):
    """`text` from a user's file, fit for a one-line message: as is when it is a plain
    name (letters, digits, ``._-/``), else its repr, cut to `limit` characters."""
    text = str(text)
    if len(text) <= limit and text.isascii() and text.replace(".", "").replace("_", "").replace(
            "-", "").replace("/", "").isalnum():
        return text
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def brief(e, limit=200):
    """An exception as 'Type: message' on one line (its whitespace collapsed, the message cut to
    `limit` characters), or 'Type' alone: what a one-line error says of a library's failure."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:limit]}" if text else type(e).__name__


def plural(n, noun):
    """'1 epoch', '2 epochs'."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def human(n):
    """Bytes for a person: '812 bytes', '81.3 kB', '283.2 MB' (powers of 1000, as df -H)."""
    if n < 10_000:
        return f"{int(n)} bytes"
    for unit in ("kB", "MB", "GB", "TB"):
        n /= 1000.0
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"

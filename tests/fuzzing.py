"""Fuzzing tlres' readers of untrusted files: mutations of valid files, and the property.

The property, for every input: the reader returns, or raises `TlresError` with a one-line
message; within `TIME_LIMIT_S`; with a `tracemalloc` peak of at most
`MEMORY_FACTOR` x the input's size + `MEMORY_SLACK`; and through a command line,
exit status 2, one line on stderr, and no output left behind.

A loader plugs in with `fuzz(valid_bytes, load, suffix)`: `load(path)` reads the file,
`suffix` names it (``.npz``, ``.tar.gz``, ``.png``, ...), `hot` lists offsets where
mutations pay off (headers, magic numbers, length fields), `cli(path)` optionally
runs the command line on refused inputs, `strategy` replaces the byte mutations
(e.g. a strategy that builds files with wrong dtypes). `check(load, path, size)` is
the property alone, for targets that write several files per input (a folder).

Budget: TLRES_FUZZ_EXAMPLES examples per target (default 30: tests/data/test_fuzz.py took
6.5 s of CPU, 61 s of wall time at a load average of 8, on the project's 2-core AMD
EPYC with AVX-512, 2026-11-25). The CI budget is derandomized, so CI is repeatable;
setting TLRES_FUZZ_EXAMPLES (e.g. 2000) runs random, longer searches, with a local
example database under .hypothesis/. TLRES_FUZZ_SECONDS sets the per-input time
limit (default 10 s: generous for a loaded CI machine; a hang or a bomb takes longer).
"""

import contextlib
import io
import os
import tempfile
import time
import tracemalloc

from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from tlres.core.errors import TlresError

EXAMPLES = int(os.environ.get("TLRES_FUZZ_EXAMPLES", "30"))
LONG_RUN = "TLRES_FUZZ_EXAMPLES" in os.environ
TIME_LIMIT_S = float(os.environ.get("TLRES_FUZZ_SECONDS", "10"))
MEMORY_FACTOR = 32  # tracemalloc peak <= 32 x the input (decoded arrays, a resized copy, the bytes)
MEMORY_SLACK = 32 * 2 ** 20  # + 32 MiB: interpreter and library overheads of one load

SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=not LONG_RUN,
    database=settings.default.database if LONG_RUN else None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.large_base_example])

# Values that break length fields and counters: zero, one, the signed and unsigned
# extremes at 1, 2, 4 and 8 bytes, in both byte orders (via `mutations`).
EXTREMES = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF,
            2 ** 40, 0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF]


@st.composite
def mutations(draw, valid, hot=()):
    """`valid` with 1-4 stacked mutations: truncation, bit flip, random byte, insertion,
    deletion, or an extreme integer written over a length-like field; positions drawn
    uniformly or near a `hot` offset."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        if hot and draw(st.booleans()):
            pos = min(len(data) - 1, draw(st.sampled_from(sorted(hot))) + draw(st.integers(0, 32)))
        else:
            pos = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["truncate", "flip", "byte", "insert", "delete", "extreme"]))
        if kind == "truncate":
            del data[pos:]
        elif kind == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            data[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 64))]
        else:
            width = draw(st.sampled_from([1, 2, 4, 8]))
            value = draw(st.sampled_from(EXTREMES)) % (1 << (8 * width))
            data[pos:pos + width] = value.to_bytes(width, draw(st.sampled_from(["little", "big"])))
    return bytes(data)


def hot_offsets(blob, markers):
    """Every offset where one of `markers` (bytes) occurs in `blob`."""
    out = set()
    for m in markers:
        i = blob.find(m)
        while i >= 0:
            out.add(i)
            i = blob.find(m, i + 1)
    return out


def check(load, path, size):
    """The property for one input: returns "loaded" or the one-line message of its TlresError.

    Any other exception propagates (hypothesis reports it with the input that raised it).
    """
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        load(path)
        outcome = "loaded"
    except TlresError as e:
        outcome = str(e)
        assert outcome.strip() and "\n" not in outcome and "\r" not in outcome, repr(outcome)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    if currently_in_test_context():  # outcome counts for --hypothesis-show-statistics
        event(outcome if outcome == "loaded" else "refused: " + outcome.split(": ", 1)[-1][:48])
    elapsed = time.perf_counter() - t0
    assert elapsed < TIME_LIMIT_S, f"{elapsed:.1f} s on {path}"
    limit = MEMORY_FACTOR * size + MEMORY_SLACK
    assert peak <= limit, f"tracemalloc peak {peak / 2 ** 20:.1f} MiB > {limit / 2 ** 20:.1f} MiB on a {size}-byte input"
    return outcome


def check_cli(main, argv, out=None):
    """Run a command line's `main(argv) -> exit status` in this process; returns (status, stderr).

    Asserts the bad-input contract when the status is not 0: status 2, one stderr line,
    no traceback, and `out` (the path it would write) does not exist."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(argv)
        except SystemExit as e:  # argparse
            status = e.code
    text = err.getvalue()
    if status != 0:
        lines = [line for line in text.splitlines() if line.strip()]
        assert status == 2 and len(lines) == 1 and "Traceback" not in text, (status, text)
        assert out is None or not os.path.exists(out), f"{out} was left behind"
    return status, text


def refusing(main, argv, out=None):
    """`main(argv)` through `check_cli`, as a loader for `check`: a refusal (status 2) is
    raised as a TlresError carrying the stderr line, so `check` sees the message."""
    status, text = check_cli(main, argv, out)
    if status:
        raise TlresError(text.strip())


def fuzz(valid, load, suffix, hot=(), cli=None, strategy=None):
    """Run the property over mutations of `valid` (bytes): `load(path)` on each, and
    `cli(path)` (a `check_cli` call) on each input the loader refused."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "input" + suffix)
        with open(path, "wb") as f:
            f.write(valid)
        assert check(load, path, len(valid)) == "loaded", "the valid file must load"

        @SETTINGS
        @given(strategy if strategy is not None else mutations(valid, hot))
        def run(blob):
            with open(path, "wb") as f:
                f.write(blob)
            if check(load, path, max(len(blob), len(valid))) != "loaded" and cli is not None:
                cli(path)

        run()

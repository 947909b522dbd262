"""The one exception type users see.

Anything a user can fix (a missing file, a bad flag value, an unreachable
download) is raised as `TlresError`; the command line prints its message as a
single line and exits with status 2. Everything else is a bug and keeps its
traceback.
"""


class TlresError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class TrainingFailed(TlresError):
    """Training itself went wrong (e.g. a non-finite loss); the run is marked failed."""

    exit_code = 3


TlresError.exit_code = 2

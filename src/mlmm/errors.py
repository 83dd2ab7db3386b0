"""User-facing errors: one clear line that names the problem and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MlmmError(ValueError):
    """A problem with what the user asked for (bad input, unknown name, corrupt file).

    The CLI prints these as one line without a traceback (``--debug`` shows it). It derives
    from :class:`ValueError` so that callers catching ``ValueError`` keep working.
    """


class ArtifactError(MlmmError):
    """A saved model directory is missing, corrupt, truncated or incompatible."""


SHOWN_COLUMNS = 20  # an unknown column's message lists at most these of a wide table's


def did_you_mean(name: str, choices: Iterable[str], limit: int | None = None) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest match, or a list of the choices (the
    first ``limit`` of them, when given: a wide table's columns would not fit one line)."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    if close:
        return " Did you mean " + " or ".join(repr(c) for c in close) + "?"
    if limit is not None and len(choices) > limit:
        return f" Choose from: {', '.join(choices[:limit])}, ... ({len(choices)} in all)."
    return " Choose from: " + ", ".join(choices) + "."


def unknown_name_error(
    kind: str, name: str, choices: Iterable[str], limit: int | None = None
) -> MlmmError:
    """Build the error for an unknown dataset, method, modality, metric... (``limit``: as in
    :func:`did_you_mean`)."""
    return MlmmError(f"unknown {kind} {name!r}.{did_you_mean(name, choices, limit)}")


class OutputWriteError(MlmmError, OSError):
    """An output file could not be written (a full disk, a quota, an I/O error).

    Both an :class:`MlmmError` (the CLI prints its one line) and an :class:`OSError` with the
    original ``errno`` and ``strerror`` (callers that catch ``OSError`` keep working).
    """

    def __init__(self, message: str, errno: int | None, strerror: str | None) -> None:
        OSError.__init__(self, errno, strerror)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple:
        # OSError's would rebuild it from (errno, strerror) alone: pickling it (a process
        # pool, a Ray task) and copy.copy failed with a TypeError
        return type(self), (self.message, self.errno, self.strerror)

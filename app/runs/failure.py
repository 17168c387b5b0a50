"""What a failed run's error text says: the line that matters, and whether resuming
can help.

A worker stores the exit code and the tail of the run's output; the line a person needs
(`RuntimeError: ... you tried to allocate 800008000000 bytes`) is at its bottom. Resume
replays the same config from the same checkpoint, so a failure the config causes (too
little memory for the model, an invalid value) fails again the same way: the dashboard
disables Resume and says why, and the API refuses it."""

from __future__ import annotations

import re

from app.models import Run, RunSource, RunStatus

# "RuntimeError: ...", "torch.OutOfMemoryError: ...", "ValueError" alone.
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b(:.*)?$")
# Failures that follow from the config, not from the machine's moment.
_DETERMINISTIC = re.compile(
    r"tried to allocate|out of memory|OutOfMemoryError|not enough memory|ValueError|TypeError"
    r"|ValidationError|KeyError|IndexError|AssertionError|ModuleNotFoundError|ImportError"
    r"|size mismatch|shape .* is invalid|must be|dataset .* not found",
    re.IGNORECASE,
)


def error_line(error: str | None) -> str | None:
    """The exception line of a traceback (the last one), else the last non-empty line."""
    if not error:
        return None
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line):
            return line
    return lines[-1] if lines else None


def resume_blocked(run: Run) -> str | None:
    """Why Resume would fail the same way, or None when it may help."""
    if run.source != RunSource.launched or run.status != RunStatus.failed:
        return None
    line = error_line(run.error)
    if line is None or not _DETERMINISTIC.search(line):
        return None
    return (
        "the failure follows from the run's configuration, and resuming replays the same "
        "config, so it would fail the same way: change the config and launch a new run"
    )

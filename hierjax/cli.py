"""What the commands (`hierjax.main`, `.evaluate`, `.export`, `.predict`) share.

Errors in what the user gave (`hierjax.errors.UserError`: config, data, hierarchy,
checkpoint, workdir, model folder) print their message alone, as "error: ...", and the
command exits with status 2 (`USAGE_ERROR`); any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import logging as py_logging
import sys
from collections.abc import Callable
from typing import Any

USAGE_ERROR = 2


class QuietOrbax(py_logging.Filter):
    """Drops orbax's per-save INFO chatter, and its warning that a checkpoint folder
    opened read-only (another run's, or a run being evaluated) is read-only; its other
    warnings and errors still show."""

    def filter(self, record):
        if "/orbax/" not in record.pathname:
            return True
        return (record.levelno >= py_logging.WARNING
                and not str(record.msg).startswith("Given directory is read only"))


def fail(message: str, status: int = USAGE_ERROR):
    """Prints "error: <message>" on stderr and ends the process with `status`."""
    from hierjax import distributed  # imports jax: only once something failed

    print(f"error: {message}", file=sys.stderr)
    distributed.exit_now(status)


def run_command(command: Callable[[], Any]) -> Any:
    """command(), with a `UserError` reported by `fail` (exit status 2)."""
    import absl.logging  # noqa: F401 -- first, so that "absl" is absl's own logger class
    from hierjax.errors import UserError

    py_logging.getLogger("absl").addFilter(QuietOrbax())
    try:
        return command()
    except UserError as e:
        fail(str(e))

"""What a command does with bad input: one line on stderr naming the file or key, exit 1.

Errors about the user's input (files, config values, checkpoints) are `ValueError`s
(`DatasetError`, `ImageReadError`, `CheckpointError`, `StrategyError` ...) or missing files;
Hydra wraps what a config's ``_target_`` raises in an `InstantiationException`, whose cause is
reported instead. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from hydra.errors import InstantiationException

INPUT_ERRORS = (ValueError, FileNotFoundError, InstantiationException)


def describe(error: BaseException) -> str:
    cause = error.__cause__
    if isinstance(error, InstantiationException) and isinstance(cause, INPUT_ERRORS):
        return describe(cause)
    return str(error)


@contextmanager
def reported_as_one_line(program: str) -> Iterator[None]:
    """Run a command's body; an input error exits with ``<program>: error: <message>``."""
    try:
        yield
    except INPUT_ERRORS as error:
        raise SystemExit(f"{program}: error: {describe(error)}") from error

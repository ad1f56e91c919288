"""What a command does with bad input: one line on stderr naming the file or key, exit 1.

Errors about the user's input (files, config values, checkpoints) are `ValueError`s
(`DatasetError`, `ImageReadError`, `CheckpointError`, `StrategyError` ...), missing or
unwritable paths (`FileNotFoundError`, `PermissionError`, ...) or config errors (OmegaConf's:
a missing ``???`` value, an unknown key). Hydra wraps what a config's ``_target_`` raises in an
`InstantiationException` and a loader worker wraps what it raised with its traceback; the
original message is reported instead. Anything else is a bug and keeps its traceback (as does
everything with ``HYDRA_FULL_ERROR=1`` set for the config errors Hydra reports itself).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from hydra.errors import HydraException, InstantiationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

INPUT_ERRORS = (
    ValueError,
    FileNotFoundError,
    PermissionError,
    NotADirectoryError,
    IsADirectoryError,
    FileExistsError,
    HydraException,  # InstantiationException, a config that does not compose
    OmegaConfBaseException,
)
WORKER_TRACEBACK = "Original Traceback (most recent call last):"


def describe(error: BaseException) -> str:
    """The error as one line."""
    cause = error.__cause__
    if isinstance(error, InstantiationException) and isinstance(cause, INPUT_ERRORS):
        return describe(cause)
    text = str(error).strip().split("\nConfig search path:")[0]  # Hydra's folders: not the point
    if WORKER_TRACEBACK in text:  # raised in a DataLoader worker: its own message is last
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    if isinstance(error, OmegaConfBaseException):
        key = getattr(error, "full_key", None)
        first = text.splitlines()[0] if text else type(error).__name__
        return f"{first} (config key {key})" if key and str(key) not in first else first
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines) if lines else type(error).__name__


@contextmanager
def reported_as_one_line(program: str) -> Iterator[None]:
    """Run a command's body; an input error exits with ``<program>: error: <message>``."""
    try:
        yield
    except INPUT_ERRORS as error:
        raise SystemExit(f"{program}: error: {describe(error)}") from error


def missing_values(cfg: DictConfig, prefix: str = "") -> list[str]:
    """The keys left ``???`` (interpolations are not followed: their target is named)."""
    found = []
    for key in cfg:
        if not prefix and key == "hydra":  # Hydra fills its own node when it runs
            continue
        path = f"{prefix}{key}"
        if OmegaConf.is_missing(cfg, key):
            found.append(path)
        elif not OmegaConf.is_interpolation(cfg, key) and isinstance(cfg[key], DictConfig):
            found += missing_values(cfg[key], f"{path}.")
    return found


def hydra_command(
    program: str,
    config_name: str,
    run: Callable[[], object],
    before_run: Callable[[DictConfig], None] | None = None,
) -> Callable[[], None]:
    """A Hydra command whose command line is composed first (``vos.config.compose_config``),
    so that an unknown config name, a key that does not exist, a ``???`` left unset or an
    override Hydra cannot parse is one line here, not Hydra's report; ``before_run(cfg)`` (with
    the ``hydra`` node) may refuse the run before Hydra writes anything; then ``run`` (the
    ``@hydra.main`` function). Hydra's own flags (``-m``, ``--cfg`` ...) go to Hydra unchecked."""

    def main() -> None:
        args = sys.argv[1:]
        if not any(arg.startswith("-") for arg in args):
            from vos.config import compose_config

            with reported_as_one_line(program):
                cfg = compose_config(config_name, args, with_hydra=before_run is not None)
                missing = missing_values(cfg)
                if missing:
                    raise ValueError(
                        f"no value for {', '.join(missing)}: set it on the command line "
                        f"({missing[0]}=...)"
                    )
                if before_run is not None:
                    before_run(cfg)
        run()

    return main

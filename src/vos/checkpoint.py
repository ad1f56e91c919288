"""Reading checkpoint files: the one place the suite calls `torch.load` on a user's path.

Files are loaded with ``weights_only=True``: tensors, numbers, strings and plain containers,
never arbitrary pickled objects, so a crafted file cannot run code while it is read. Every
failure (missing, truncated, not a torch file, holding other objects) becomes a
`CheckpointError` (a missing file: `FileNotFoundError`) that names the file and the key the
user gave it under.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


class CheckpointError(ValueError):
    """A file given as a checkpoint cannot be used as one; the message names it."""


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> Any:
    """The object stored at ``path`` (on the CPU); ``key`` is the config key or option that
    named the file, for the error message."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{key} does not exist: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, not a torch file, or a disallowed pickle
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"cannot read checkpoint {path} ({key}): {reason}") from error


def read_training_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """A Lightning checkpoint written by `vos.train` (a dict with ``state_dict`` and
    ``global_step``)."""
    state = read_checkpoint(path, key)
    if not isinstance(state, dict) or "state_dict" not in state or "global_step" not in state:
        raise CheckpointError(f"{path} is not a Lightning training checkpoint ({key})")
    return state


def read_state_dict(path: str | Path, key: str, prefixes: tuple[str, ...] = ()) -> dict:
    """A module's state dict from ``path``: a plain state dict, or a Lightning checkpoint whose
    ``state_dict`` keys start with one of ``prefixes`` (stripped; the first prefix that any key
    carries wins, keeping only its keys)."""
    stored = read_checkpoint(path, key)
    if not isinstance(stored, dict):
        raise CheckpointError(f"{path} ({key}) holds a {type(stored).__name__}, not a state dict")
    state = stored.get("state_dict", stored)
    for prefix in prefixes:
        picked = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if picked:
            return picked
    return dict(state)

"""Checkpoints written so that a killed run keeps a loadable one.

Lightning's own writer stages a checkpoint in a temporary file under ``$TMPDIR`` and moves it
into place; when ``$TMPDIR`` is on another filesystem (usual on clusters) the move is a copy,
and a kill during it leaves a truncated file. Here the checkpoint goes through
`vos.files.atomic_path`: a temporary file in the checkpoint's own folder, fsynced, renamed
over the destination, the folder fsynced.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from vos.files import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(
                f"{type(self).__name__}.save_checkpoint takes no storage_options, got "
                f"{storage_options!r}"
            )
        with atomic_path(path) as tmp, open(tmp, "wb") as file:
            torch.save(checkpoint, file)

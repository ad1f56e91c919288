"""Writing files so that a reader, a crash or a kill never sees half of one.

Every file the suite writes as a result (metrics, CSVs, predictions, exports) goes through
`atomic_path`: the content is written to a temporary file *in the destination's own folder*
(so the final rename never crosses a filesystem), flushed to disk, renamed over the destination
with `os.replace`, and the folder entry is flushed too. A run killed at any point leaves
either the previous file or the new one, and no temporary file once the writer has returned.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _fsync_folder(folder: Path) -> None:
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems do not open folders; the rename is still atomic
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; on a clean exit it is fsynced and renamed
    over ``path``, on an error it is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """``write(tmp_path)`` then move the result into place (see `atomic_path`)."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, newline=""))


def write_json_atomic(path: str | Path, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


class OutputFolderError(ValueError):
    """A results folder that would overwrite data: a dataset's, or earlier results."""


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_folder(
    destination: str | Path, key: str, read_folders=(), overwrite: bool = False
) -> Path:
    """``destination`` as a results folder: not a file, not inside or around a folder that is
    read (a dataset), and empty unless ``overwrite``. Returns it resolved."""
    destination = Path(destination).resolve()
    for folder in read_folders:
        folder = Path(folder).resolve()
        if _inside(destination, folder) or _inside(folder, destination):
            raise OutputFolderError(
                f"{key}={destination} is {'inside' if _inside(destination, folder) else 'around'} "
                f"the dataset folder {folder} this command reads: choose a folder outside it"
            )
    if destination.exists() and not destination.is_dir():
        raise OutputFolderError(f"{key}={destination} is a file, not a folder")
    if destination.is_dir() and any(destination.iterdir()) and not overwrite:
        held = sorted(p.name for p in destination.iterdir())
        shown = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
        raise OutputFolderError(
            f"{key}={destination} already holds results ({shown}): choose another folder, or "
            "pass overwrite=true to replace them once the new ones are complete"
        )
    parent = destination.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputFolderError(f"{key}={destination}: {parent} is not writable")
    return destination


@contextmanager
def staged_folder(destination: str | Path) -> Iterator[Path]:
    """A new folder beside ``destination`` to write a whole result into; when the block ends
    cleanly it takes ``destination``'s place (a previous ``destination`` is removed only once
    the new one is there), on an error it is removed. A run killed meanwhile leaves
    ``destination`` as it was."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = None
    if destination.exists():
        previous = destination.with_name(f".{destination.name}.previous-{staging.name[-8:]}")
        os.replace(destination, previous)
    os.replace(staging, destination)
    _fsync_folder(destination.parent)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)

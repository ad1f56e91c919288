"""Which code produced a result: the project's git commit, for the files a run writes."""

from __future__ import annotations

import subprocess
from pathlib import Path

_HERE = Path(__file__).parent


def source_commit() -> str | None:
    """The commit of the checkout this package runs from, with ``+`` where its tracked files
    differ from it; None outside a git checkout (an installed wheel) or without git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_HERE, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=_HERE, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+" if dirty else "")

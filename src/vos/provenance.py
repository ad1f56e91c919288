"""Which code produced a result: the project's git commit, for the files a run writes."""

from __future__ import annotations

import subprocess
from pathlib import Path

_HERE = Path(__file__).parent


# what a run's behaviour comes from, relative to the checkout's root: a change elsewhere (a
# results table a driver rewrites, the docs) does not make the code differ from its commit
CODE_PATHS = ("src", "conf", "kernels", "pyproject.toml")


def source_commit() -> str | None:
    """The commit of the checkout this package runs from, with ``+`` where its code
    (`CODE_PATHS`) differs from it; None outside a checkout's ``src/vos`` (an installed
    copy, even one inside some git repository, e.g. a virtual environment in the checkout)
    or without git."""
    try:
        head, root = subprocess.run(
            ["git", "rev-parse", "HEAD", "--show-toplevel"],
            cwd=_HERE, capture_output=True, text=True, check=True,
        ).stdout.splitlines()  # fmt: skip
        if (Path(root) / "src" / "vos").resolve() != _HERE.resolve():
            return None  # not the checkout's own sources: its commit says nothing of them
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, ValueError, subprocess.CalledProcessError):
        return None
    return head + ("+" if dirty else "")

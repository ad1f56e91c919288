"""Where the Hydra configs live and small helpers around them."""

from __future__ import annotations

from pathlib import Path

# conf/ sits at the repository root, beside src/ (the project installs in editable mode).
CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"
if not (CONFIG_DIR / "train.yaml").is_file():  # pragma: no cover - a broken checkout
    raise ImportError(
        f"the Hydra configs were not found at {CONFIG_DIR}; install with `pip install -e .`"
    )

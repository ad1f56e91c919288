"""Where the Hydra configs live and small helpers around them."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

# conf/ sits at the repository root, beside src/ (the project installs in editable mode).
CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"
if not (CONFIG_DIR / "train.yaml").is_file():  # pragma: no cover - a broken checkout
    raise ImportError(
        f"the Hydra configs were not found at {CONFIG_DIR}; install with `pip install -e .`"
    )


def _join(items) -> str:
    """``${join:${model.reader.fine_scales}}`` -> "res3+res2" ("none" when empty): list
    settings in run names without brackets or spaces."""
    return "+".join(str(item) for item in items) or "none"


OmegaConf.register_new_resolver("join", _join, replace=True)

"""Where the Hydra configs live, and the helpers every part of the suite composes them with."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

# conf/ and experiments/ sit at the repository root, beside src/ (an editable install).
REPOSITORY_DIR = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPOSITORY_DIR / "conf"
EXPERIMENTS_DIR = REPOSITORY_DIR / "experiments"  # experiments/<reader>/{paper,ablation}.yaml
if not (CONFIG_DIR / "train.yaml").is_file():  # pragma: no cover - a broken checkout
    raise ImportError(
        f"the Hydra configs were not found at {CONFIG_DIR}; install with `pip install -e .`"
    )


def _join(items) -> str:
    """``${join:${model.reader.fine_scales}}`` -> "res3+res2" ("none" when empty): list
    settings in run names without brackets or spaces."""
    return "+".join(str(item) for item in items) or "none"


def _target_name(target: str) -> str:
    """``${target_name:${model.flow._target_}}`` -> "tiny_flow_net": a config chosen by
    ``_target_`` named in a run name by its function or class."""
    return str(target).rpartition(".")[2]


OmegaConf.register_new_resolver("join", _join, replace=True)
OmegaConf.register_new_resolver("target_name", _target_name, replace=True)


def compose_config(
    name: str = "train", overrides: Sequence[str] = (), *, with_hydra: bool = False
) -> DictConfig:
    """The config ``python -m vos.<name> OVERRIDES`` would run with (outside a Hydra main).
    ``hydra.searchpath=[file://DIR]`` among the overrides adds config folders (e.g. a reader
    kept outside this repository: ``DIR/model/<name>.yaml``)."""
    if GlobalHydra.instance().is_initialized():  # inside a Hydra main or another compose
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(name, overrides=list(overrides), return_hydra_config=with_hydra)


def search_path_override(config_dirs: Sequence[str | Path]) -> list[str]:
    """The override that adds config folders to Hydra's search path (none for no folders)."""
    if not config_dirs:
        return []
    dirs = ",".join(f"file://{Path(d).resolve()}" for d in config_dirs)
    return [f"hydra.searchpath=[{dirs}]"]


def group_options(group: str, config_dirs: Sequence[str | Path] = ()) -> list[str]:
    """The option names of a config group (``model`` -> ``["hmmn", "lcm", ...]``) in
    ``conf/`` and the extra config folders."""
    names = set()
    for folder in (CONFIG_DIR, *(Path(d) for d in config_dirs)):
        names |= {path.stem for path in (folder / group).glob("*.yaml")}
    return sorted(names)


def instantiate(node: Any, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate`, re-raising what the target raised about its input (a
    `ValueError` or a missing file: a one-line message naming the key) as itself instead of
    Hydra's wrapper."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, (ValueError, FileNotFoundError)):
            raise error.__cause__ from None
        raise

"""``dataset.extra_eval``: validation sets beside the eval split, each scored at every
validation by the same inference engine and J&F and reported under its own name
(``extra/<name>/J&F-Mean`` ...; see `vos.lightning.module`).

The key is a list (empty by default, ``conf/train.yaml``); an entry is one of

- ``PATH``: a folder in the DAVIS layout (``JPEGImages/480p/<video>/``,
  ``Annotations/480p/<video>/`` with every frame's mask), e.g. an export of the generated
  dataset: the videos of ``ImageSets/2017/val.txt`` when it has ``ImageSets/``, else every
  video folder. Named by the folder's name; read as ``dataset=davis2017`` reads its root
  (objects given in frame 0 unless ``factors.json`` says otherwise).
- ``{root: PATH, name: ..., split: ..., resolution: ..., late_objects: ...}``: the same with
  its own name (default: the folder's), split (``null``: every video), resolution (480p) or
  ``late_objects`` (false).
- ``{name: NAME, source: {_target_: ..., ...}}``: any `VideoSource` with ground truth, e.g.
  the generated val split with other knobs
  (``{_target_: vos.data.synthetic.SyntheticSource, split: val, num_videos: 16, ...}``).

Relative paths are relative to the folder the command was started in. A name may not hold
``/`` and must differ from the other entries' names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, ListConfig

from vos.data.source import DatasetError, VideoSource
from vos.data.sources.davis import DavisSource

KEY = "dataset.extra_eval"
PREFIX = "extra"  # logged and written as extra/<name>/<score>
FOLDER_KEYS = {"name", "root", "split", "resolution", "late_objects"}
SOURCE_KEYS = {"name", "source"}


@dataclass(frozen=True)
class ExtraEval:
    """One extra validation set: its name, its source and the config key it came from."""

    name: str
    source: VideoSource
    key: str

    @property
    def prefix(self) -> str:
        """What its scores are logged under: ``extra/<name>``."""
        return f"{PREFIX}/{self.name}"


def extra_eval_sets(entries: Any, key: str = KEY) -> list[ExtraEval]:
    """The sources ``entries`` (the value of ``dataset.extra_eval``) name, built and checked
    (folders, image sets, ground truth); errors name the entry (``dataset.extra_eval[1]``)."""
    if entries is None:
        return []
    if isinstance(entries, (str, Path, Mapping, DictConfig)):
        entries = [entries]  # one entry given without its list
    if not isinstance(entries, (Sequence, ListConfig)):
        raise ValueError(f"{key}: expected a list of folders or {{name, source}} entries")
    sets: list[ExtraEval] = []
    for index, entry in enumerate(entries):
        entry_key = f"{key}[{index}]"
        extra = _build(entry, entry_key)
        for earlier in sets:
            if earlier.name == extra.name:
                raise ValueError(
                    f"{entry_key}: the name {extra.name!r} is also {earlier.key}'s; give one "
                    "of them another name ({name: ..., root: ...})"
                )
        sets.append(extra)
    return sets


def _build(entry: Any, key: str) -> ExtraEval:
    if isinstance(entry, (str, Path)):
        return _folder(key, root=entry)
    if not isinstance(entry, (Mapping, DictConfig)):
        raise ValueError(
            f"{key}: expected a folder or a mapping ({{root: PATH}} or {{name: NAME, source: "
            f"{{_target_: ...}}}}), got {entry!r}"
        )
    given = {str(k) for k in entry}
    if "source" in given:
        unknown = given - SOURCE_KEYS
        if unknown or "name" not in given:
            problem = f"unknown keys {sorted(unknown)}" if unknown else "no name"
            raise ValueError(f"{key}: {problem}; a source entry is {{name: NAME, source: {{...}}}}")
        return _source(key, _name(entry["name"], key), entry["source"])
    if "root" in given:
        unknown = given - FOLDER_KEYS
        if unknown:
            raise ValueError(
                f"{key}: unknown keys {sorted(unknown)}; a folder entry takes {sorted(FOLDER_KEYS)}"
            )
        options = {k: entry[k] for k in given - {"root", "name"}}
        name = _name(entry["name"], key) if "name" in given else None
        return _folder(key, root=entry["root"], name=name, **options)
    raise ValueError(f"{key}: a mapping entry needs root (a folder) or source (a _target_ config)")


def _name(name: Any, key: str) -> str:
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"{key}.name={name!r}: expected a non-empty name without '/'")
    return name


def _folder(
    key: str,
    root: Any,
    name: str | None = None,
    split: Any = ...,
    resolution: str = "480p",
    late_objects: bool = False,
) -> ExtraEval:
    path = Path(hydra.utils.to_absolute_path(str(root)))
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise DatasetError(f"{key}: the folder {path} {what}")
    if split is ...:  # the val list of a folder with ImageSets, else every video
        split = "val" if (path / "ImageSets").is_dir() else None
    name = name if name is not None else _name(path.name, key)
    try:
        source = DavisSource(
            path,
            split=None if split is None else str(split),
            resolution=str(resolution),
            require_all_masks=True,  # scored: every frame's mask
            late_objects=bool(late_objects),
        )
    except DatasetError as error:
        raise DatasetError(f"{key} ({name}): {error}") from error
    return _checked(ExtraEval(name, source, key))


def _source(key: str, name: str, config: Any) -> ExtraEval:
    if not isinstance(config, (Mapping, DictConfig)) or "_target_" not in config:
        raise ValueError(f"{key}.source: expected a config with a _target_, got {config!r}")
    try:
        source = hydra.utils.instantiate(config)
    except InstantiationException as error:
        cause = error.__cause__ or error
        raise DatasetError(f"{key}.source ({name}): {cause}") from error
    if not isinstance(source, VideoSource):
        raise ValueError(f"{key}.source: {config['_target_']} is not a VideoSource")
    return _checked(ExtraEval(name, source, key))


def _checked(extra: ExtraEval) -> ExtraEval:
    if extra.source.submission_folder is not None:
        raise DatasetError(
            f"{extra.key} ({extra.name}): a split scored by a server has no ground truth to "
            "validate on"
        )
    if not extra.source.videos():
        raise DatasetError(f"{extra.key} ({extra.name}): no videos")
    return extra

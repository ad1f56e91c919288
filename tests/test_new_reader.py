"""A sixth reader is two files: its module and its model config. Nothing else in the suite
names the readers, so a toy reader written outside the repository trains (`vos.train`), is
evaluated from its checkpoint (`vos.eval`) and is benchmarked (`vos.bench readers`) with no
other change: the module importable, the config found through Hydra's search path."""

from __future__ import annotations

import json
import textwrap

from helpers import TINY

TOY_READER = '''
"""A toy reader: STM's global read over the first and the most recent memory frame only."""

from dataclasses import dataclass

import torch

from vos.model.readers.base import FeatureSpec, MemoryReader, ReaderState, Readout
from vos.model.readers.stm import global_read


@dataclass
class ToyState(ReaderState):
    reads: int = 0  # reads of this video so far (a typed per-video state)


class ToyReader(MemoryReader):
    def __init__(self, key_channels: int, value_channels: int):
        super().__init__()
        self.needs = FeatureSpec(
            key_scales={"res4": key_channels},
            value_channels=value_channels,
            readout_channels=2 * value_channels,
        )

    def new_state(self, previous_probs=None):
        return ToyState(previous_probs=previous_probs)

    def parts(self):
        return {"first_frame": self.read_first}

    def read_first(self, query, memory, state):
        return global_read(query.keys["res4"], memory, positions=[0])

    def read(self, query, memory, state):
        state.reads += 1
        read = global_read(query.keys["res4"], memory, positions=[0, -1])
        value = query.query_value.unsqueeze(1).expand(-1, read.shape[1], -1, -1, -1)
        return Readout(features={"res4": torch.cat([read, value], dim=2)})
'''

TOY_CONFIG = """
# A toy reader kept outside the repository (tests/test_new_reader.py).
defaults:
  - size: tiny
  - arch: stm
  - _self_

name: toy
reader:
  _target_: toy_reader.ToyReader
  key_channels: ${model.key_channels}
  value_channels: ${model.value_channels}
bench:
  variants:
    toy: {baseline: toy/first-frame}
    toy/first-frame: {part: first_frame}
"""


def test_a_reader_from_two_files_trains_evaluates_and_benchmarks(
    tmp_path, monkeypatch, run_command
):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "toy_reader.py").write_text(textwrap.dedent(TOY_READER))
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "toy.yaml").write_text(TOY_CONFIG)
    search_path = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    monkeypatch.syspath_prepend(str(tmp_path / "code"))  # the reader's module is importable

    def _run(args: list[str], tmp_path):
        result = run_command(args[0], *args[1:], cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-4000:]
        return result

    run = tmp_path / "run"
    _run(
        ["vos.train", "model=toy", search_path, *TINY, f"hydra.run.dir={run}"]
        + ["dataset.eval.num_videos=1"],
        tmp_path,
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["val/J&F-Mean"] <= 1.0 and metrics["global_step"] == 4

    predictions = tmp_path / "predictions"
    evaluated = _run(
        ["vos.eval", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"]
        + [f"output_dir={predictions}", "dataset.height=48", "dataset.width=64"]
        + ["dataset.eval.num_videos=1", "dataset.eval.num_frames=30"]
        # the checkpoint names a class outside the vos package: allowed by name
        + ["trusted_targets=[toy_reader.]"],
        tmp_path,
    )
    assert (predictions / "global_results.csv").is_file(), evaluated.stdout

    benchmarked = _run(
        ["vos.bench", "readers", "--json", "--model", "toy", "--config-dir", str(tmp_path / "conf")]
        + ["--model-size", "tiny", "--height", "64", "--width", "96", "--memory-frames", "3"]
        + ["--repeats", "1"],
        tmp_path,
    )
    records = {r["name"]: r for r in json.loads(benchmarked.stdout)}
    assert set(records) == {"reader/toy", "reader/toy/first-frame"}
    assert records["reader/toy/first-frame"]["setting"]["part"] == "first_frame"
    assert records["reader/toy"]["baseline"] == "toy/first-frame"
    assert records["reader/toy"]["ms"] > 0

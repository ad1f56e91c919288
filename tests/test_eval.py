import csv
import json
import re

import numpy as np
import pytest
import torch
from helpers import TINY, compose_config
from PIL import Image

from vos.data.synthetic import export_davis
from vos.inference.loading import load_engine
from vos.lightning.training import train
from vos.model.flow import TinyFlowNet


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    train(
        compose_config("train", [*TINY, "trainer.max_steps=1", "+trainer.limit_val_batches=0"]),
        run_dir,
    )
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def davis_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    export_davis(root, videos_per_split=2, num_frames=30, seed=3, height=40, width=72)
    return root


@pytest.fixture
def _run(run_command):
    """``python -m MODULE ARGS`` (its main() in this process)."""
    return run_command


def _read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_eval_writes_palette_pngs_and_matches_evaluate(checkpoint, davis_root, tmp_path, _run):
    out = tmp_path / "pred"
    result = _run(
        "vos.eval",
        f"ckpt_path={checkpoint}",
        "dataset=davis2017",
        f"dataset.root={davis_root}",
        "dataset.split=val",
        f"output_dir={out}",
    )
    assert result.returncode == 0, result.stderr
    videos = (davis_root / "ImageSets" / "2017" / "val.txt").read_text().split()
    for video in videos:
        frames = sorted((davis_root / "JPEGImages" / "480p" / video).glob("*.jpg"))
        preds = sorted((out / video).glob("*.png"))
        assert [p.stem for p in preds] == [f.stem for f in frames]
        with Image.open(preds[0]) as image:
            assert image.mode == "P"
            assert image.size == (72, 40)
        first = np.asarray(Image.open(preds[0]))
        gt = np.asarray(
            Image.open(davis_root / "Annotations" / "480p" / video / f"{frames[0].stem}.png")
        )
        np.testing.assert_array_equal(first, gt)  # the given mask comes back unchanged
    eval_global = _read_csv(out / "global_results.csv")[0]
    # the prediction folder holds the videos, the two CSVs and the videos' factors, nothing
    # else (ready to upload)
    assert {p.name for p in out.iterdir()} == {
        *videos,
        "global_results.csv",
        "per-sequence_results.csv",
        "factors.json",
    }
    assert set(json.loads((out / "factors.json").read_text())) == set(videos)

    scored = tmp_path / "scored"
    result = _run(
        "vos.evaluate", f"gt_root={davis_root}", f"pred_root={out}", f"output_dir={scored}"
    )
    assert result.returncode == 0, result.stderr
    assert _read_csv(scored / "global_results.csv")[0] == eval_global
    assert _read_csv(scored / "per-sequence_results.csv") == _read_csv(
        out / "per-sequence_results.csv"
    )


def test_eval_missing_or_corrupt_checkpoint_is_named(tmp_path, _run):
    result = _run("vos.eval", f"ckpt_path={tmp_path / 'gone.ckpt'}", f"output_dir={tmp_path / 'o'}")
    assert result.returncode != 0
    assert "gone.ckpt" in result.stderr
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"not a checkpoint")
    result = _run("vos.eval", f"ckpt_path={corrupt}", f"output_dir={tmp_path / 'o'}")
    assert result.returncode != 0
    assert "corrupt.ckpt" in result.stderr


def test_eval_on_generated_source_scores_in_memory_ground_truth(checkpoint, tmp_path, _run):
    out = tmp_path / "pred"
    result = _run(
        "vos.eval",
        f"ckpt_path={checkpoint}",
        "dataset.height=48",
        "dataset.width=64",
        "dataset.eval.num_videos=1",
        "dataset.eval.num_frames=30",
        f"output_dir={out}",
    )
    assert result.returncode == 0, result.stderr
    assert len(list((out / "syn_val_0000").glob("*.png"))) == 30
    row = _read_csv(out / "global_results.csv")[0]
    assert 0.0 <= float(row["J&F-Mean"]) <= 1.0


@pytest.fixture(scope="module")
def rmnet_checkpoint(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("rmnet")
    train(
        compose_config(
            "train",
            [*TINY, "model=rmnet", "trainer.max_steps=1", "+trainer.limit_val_batches=0"],
        ),
        run_dir,
    )
    return run_dir / "checkpoints" / "last.ckpt"


def test_checkpoints_written_before_the_relayering_still_load(rmnet_checkpoint, tmp_path):
    """Before flow sources had a _target_, model.flow was {name, weights}, reader widths sat
    beside the shared ones, and the optimiser was optim.name: such a checkpoint loads as is."""
    state = torch.load(rmnet_checkpoint, map_location="cpu", weights_only=True)
    model = state["hyper_parameters"]["model"]
    model["flow"] = {"name": "oracle", "weights": None}
    model.update(fine_key_channels={"res3": 32, "res2": 16}, local_value_channels={"res3": 32})
    for key in ("widths", "size_name", "bench"):
        model.pop(key, None)
    state["hyper_parameters"]["optim"] = {"name": "adamw", "lr": 3e-4, "schedule": {"name": "step"}}
    state["hyper_parameters"].pop("lr_schedule")
    old = tmp_path / "old.ckpt"
    torch.save(state, old)
    engine = load_engine(old, torch.device("cpu"))
    assert engine.network.flow_is_oracle and engine.network.flow_estimator is None
    reference = load_engine(rmnet_checkpoint, torch.device("cpu")).network.state_dict()
    loaded = engine.network.state_dict()
    assert loaded.keys() == reference.keys()
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)


def test_model_overrides_switch_the_reader_with_the_same_weights(rmnet_checkpoint):
    plain = load_engine(rmnet_checkpoint, torch.device("cpu"))
    switched = load_engine(
        rmnet_checkpoint,
        torch.device("cpu"),
        model_overrides={"reader": {"query_region_mode": "previous", "memory_region": False}},
    )
    assert plain.network.reader.query_region_mode == "flow"
    assert switched.network.reader.query_region_mode == "previous"
    assert not switched.network.reader.memory_region
    a, b = plain.network.state_dict(), switched.network.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_model_overrides_choose_another_flow_network(rmnet_checkpoint, tmp_path):
    weights = tmp_path / "tinyflownet.pth"
    reference = TinyFlowNet().state_dict()
    torch.save(reference, weights)
    engine = load_engine(
        rmnet_checkpoint,
        torch.device("cpu"),
        model_overrides={"flow": {"name": "tinyflownet", "weights": str(weights)}},
    )
    assert isinstance(engine.network.flow_estimator, TinyFlowNet)  # a legacy {name, weights}
    loaded = engine.network.flow_estimator.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in reference.items())


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"reader": {"query_region_modes": "previous"}}, "model.reader.query_region_modes"),
        ({"readers": {"padding": 1}}, "model.readers"),
        ({"reader": {"padding": {"cells": 1}}}, "model.reader.padding"),
    ],
)
def test_unknown_model_override_is_named(rmnet_checkpoint, overrides, named):
    with pytest.raises(ValueError, match=re.escape(named)):
        load_engine(rmnet_checkpoint, torch.device("cpu"), model_overrides=overrides)


def test_eval_cli_takes_model_overrides(rmnet_checkpoint, tmp_path, _run):
    out = tmp_path / "pred"
    common = [
        f"ckpt_path={rmnet_checkpoint}",
        "dataset.height=48",
        "dataset.width=64",
        "dataset.eval.num_videos=1",
        "dataset.eval.num_frames=30",
        f"output_dir={out}",
    ]
    result = _run("vos.eval", *common, "+model.reader.query_region_mode=best_match")
    assert result.returncode == 0, result.stderr
    assert len(list((out / "syn_val_0000").glob("*.png"))) == 30
    result = _run("vos.eval", *common, "+model.reader.no_such_key=1", "overwrite=true")
    assert result.returncode != 0
    assert "model.reader.no_such_key" in result.stderr


def test_eval_says_why_a_split_is_not_scored(tmp_path, monkeypatch, capfd):
    """A split with a middle mask missing is segmented, not scored, and the reason names it."""
    from helpers import run_in_process

    checkpoint_run = tmp_path / "run"
    train(
        compose_config("train", [*TINY, "trainer.max_steps=1", "+trainer.limit_val_batches=0"]),
        checkpoint_run,
    )
    root = tmp_path / "syn"
    export_davis(root, videos_per_split=1, num_frames=30, seed=0, height=48, width=64)
    video = sorted((root / "Annotations" / "480p").iterdir())[-1]
    (video / "00012.png").unlink()
    monkeypatch.chdir(tmp_path)
    args = [
        f"ckpt_path={checkpoint_run / 'checkpoints' / 'last.ckpt'}",
        "dataset=davis2017",
        f"dataset.root={root}",
        "dataset.late_objects=true",
        f"output_dir={tmp_path / 'out'}",
    ]
    code, _ = run_in_process("vos.eval", args, monkeypatch, capfd)
    out, _ = capfd.readouterr()
    assert code == 0
    assert f"not scoring: video {video.name!r} has no ground truth for frame(s) 00012" in out
    assert not (tmp_path / "out" / "global_results.csv").exists()

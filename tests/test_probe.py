"""`python -m vos.probe lcm`: the branch sizes of a trained LCM reader."""

import json

import pytest
from helpers import TINY, compose_config

from vos.lightning.training import train
from vos.probe import main

EVAL_DATA = ["dataset.height=48", "dataset.width=64", "dataset.eval.num_frames=30"]


def _train(tmp_path, model: str):
    overrides = [*TINY, f"model={model}", "trainer.max_steps=1", "+trainer.limit_val_batches=0"]
    train(compose_config("train", overrides), tmp_path)
    return tmp_path / "checkpoints" / "last.ckpt"


def test_probe_reports_each_branch_of_a_fresh_lcm(tmp_path, capsys):
    ckpt = _train(tmp_path, "lcm")
    capsys.readouterr()  # the training's output
    main(["lcm", "--ckpt", str(ckpt), "--videos", "1", "--json", *EVAL_DATA])
    summary = json.loads(capsys.readouterr().out)
    assert summary["reads"] == 29  # every frame after the first of one 30-frame video
    assert 0.0 < summary["map_mean"] <= summary["map_max"] <= 1.0  # top-K means of softmaxes
    assert 0.0 < summary["pgm_share"] < 1.0
    # g starts at zero: one training step leaves ORM's relation far below v^Q
    assert summary["relation_to_query_max"] < 0.05
    assert summary["relation_to_query_median"] <= summary["relation_to_query_p90"]


def test_probe_names_a_checkpoint_of_another_reader(tmp_path):
    ckpt = _train(tmp_path, "stm")
    with pytest.raises(SystemExit, match="not LCM's reader"):
        main(["lcm", "--ckpt", str(ckpt), "--videos", "1", *EVAL_DATA])

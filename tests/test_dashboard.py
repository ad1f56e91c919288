"""Under ``logger=wandb`` each validation logs a per-video table, mask overlays and peak
memory (`vos.lightning.dashboard`) beside the scalars; read back from an offline run's .wandb file and
its media files."""

import importlib.util
import json

import hydra
import pytest
from helpers import TINY, compose_config, read_wandb_log, run_train_process
from omegaconf import OmegaConf

from vos.lightning.dashboard import ValidationDashboard, frame_indices

HAS_WANDB = importlib.util.find_spec("wandb") is not None
# two steps, then one validation on the eval split's two (30-frame) videos
OVERRIDES = [
    *(o for o in TINY if not o.startswith("logger=")),
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "data.val_videos=2",
]


def test_media_frames_name_frames_of_each_video():
    assert frame_indices(["first", "middle", "last"], 30) == [0, 14, 29]
    assert frame_indices([3, -1, "last", 99], 10) == [3, 9]  # out of range: skipped
    assert frame_indices(["first", "middle", "last"], 1) == [0]
    with pytest.raises(ValueError, match="media_frames"):
        frame_indices(["end"], 5)
    with pytest.raises(ValueError, match="media_frames"):
        ValidationDashboard(2, ["first", "start"])
    with pytest.raises(ValueError, match="media_videos"):
        ValidationDashboard(-1)
    dashboard = ValidationDashboard.from_config(compose_config("train", ["logger=wandb"]).logger)
    assert (dashboard.media_videos, dashboard.media_frames) == (2, ["first", "middle", "last"])
    one = ValidationDashboard.from_config(OmegaConf.create({"media_frames": "last"}))
    assert one.media_frames == ["last"]  # logger.media_frames=last on the command line


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dashboard")
    run_dir = tmp / "run"
    run_train_process(
        ["logger=wandb", "logger.mode=offline", *OVERRIDES, f"hydra.run.dir={run_dir}"],
        tmp,
        env={"WANDB_DIR": str(tmp / "wandb"), "OMP_NUM_THREADS": "1"},
    )
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    logs = list(runs[0].glob("*.wandb"))
    assert len(logs) == 1
    return run_dir, runs[0] / "files", read_wandb_log(logs[0])


def _row_with(log, key):
    rows = [row for row in log.history if key in row]
    assert len(rows) == 1, key  # one validation
    return rows[0]


@pytest.mark.skipif(not HAS_WANDB, reason="wandb is not installed")
def test_wandb_run_has_losses_scores_timings_and_memory(wandb_run):
    _, _, log = wandb_run
    keys = log.keys
    for key in (
        "train/loss",
        "train/ce_frame1",
        "train/ce_frame2",
        "train/iou",
        "val/J&F-Mean",
        "val/J-Mean",
        "val/F-Mean",
        "val/J-Recall",
        "val/ms_per_frame",
        "val/read_ms_per_frame",
        "val/peak_memory_mb",
        "params_m",
    ):
        assert key in keys, key
    assert any(key.startswith("val/J&F-Mean/") for key in keys)  # per factor
    timings = _row_with(log, "val/read_ms_per_frame")
    assert timings["val/ms_per_frame"] >= timings["val/read_ms_per_frame"] >= 0
    assert timings["val/peak_memory_mb"] >= 0


@pytest.mark.skipif(not HAS_WANDB, reason="wandb is not installed")
def test_wandb_run_has_the_per_sequence_table_at_the_validations_step(wandb_run):
    _, files, log = wandb_run
    scores = _row_with(log, "val/J&F-Mean")
    media = _row_with(log, "val/per_sequence")
    assert media["trainer/global_step"] == scores["trainer/global_step"]
    meta = media["val/per_sequence"]
    assert meta["_type"] == "table-file" and meta["nrows"] == 2
    table = json.loads((files / meta["path"]).read_text())
    columns = table["columns"]
    assert columns[:9] == [
        "video",
        "objects",
        "J&F",
        "J",
        "F",
        "frames",
        "ms_per_frame",
        "read_ms_per_frame",
        "peak_memory_mb",
    ]
    assert {"occlusion", "distractors", "late_objects"} <= set(columns[9:])
    rows = [dict(zip(columns, values, strict=True)) for values in table["data"]]
    source = hydra.utils.instantiate(compose_config("train", OVERRIDES).dataset.eval)
    assert [row["video"] for row in rows] == sorted(source.videos()[:2])
    for row in rows:
        assert row["objects"] >= 1 and row["frames"] == 30
        assert 0 <= row["J"] <= 1 and 0 <= row["F"] <= 1
        assert row["J&F"] == pytest.approx((row["J"] + row["F"]) / 2)
        assert row["ms_per_frame"] >= row["read_ms_per_frame"] >= 0
        assert row["peak_memory_mb"] >= 0
        assert all(row[factor] in (True, False, None) for factor in columns[9:])
    # DAVIS weighs objects: the object-weighted mean of the videos is the logged J&F
    weighted = sum(row["J&F"] * row["objects"] for row in rows) / sum(r["objects"] for r in rows)
    assert weighted == pytest.approx(scores["val/J&F-Mean"], abs=1e-6)


@pytest.mark.skipif(not HAS_WANDB, reason="wandb is not installed")
def test_wandb_run_has_mask_overlays_of_the_first_videos(wandb_run):
    _, files, log = wandb_run
    media = _row_with(log, "val/per_sequence")
    source = hydra.utils.instantiate(compose_config("train", OVERRIDES).dataset.eval)
    overlays = {key for key in media if key.startswith("val/masks/")}
    assert overlays == {f"val/masks/{video}" for video in source.videos()[:2]}
    for key in overlays:
        images = media[key]
        assert images["_type"] == "images/separated" and images["count"] == 3
        video = key.removeprefix("val/masks/")
        assert images["captions"] == [f"{video} frame {t}" for t in (0, 14, 29)]
        for name in images["filenames"]:
            assert (files / name).is_file() and name.startswith("media/images/")
        assert len(images["all_masks"]) == 3
        for masks in images["all_masks"]:
            assert set(masks) == {"prediction", "ground_truth"}
            for mask in masks.values():
                assert mask["_type"] == "mask" and (files / mask["path"]).is_file()
    assert len(list((files / "media" / "images").rglob("*.png"))) >= 6 + 1


@pytest.mark.skipif(not HAS_WANDB, reason="wandb is not installed")
def test_wandb_config_is_the_resolved_hydra_config(wandb_run):
    run_dir, _, log = wandb_run
    expected = OmegaConf.to_container(
        OmegaConf.load(run_dir / ".hydra" / "config.yaml"), resolve=True
    )
    for key, value in expected.items():
        assert log.config[key] == value, key
    assert log.config["run_name"] == "stm-synthetic"  # ${model.name}-${dataset.name}
    assert log.config["logger"]["mode"] == "offline" and log.config["trainer"]["max_steps"] == 2
    assert "${" not in json.dumps({k: v for k, v in log.config.items() if k != "_wandb"})

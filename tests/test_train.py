import json
import subprocess
import sys

import pytest
import torch
from helpers import TINY, compose_config

from vos.checkpoint import CheckpointError
from vos.inference.loading import load_engine
from vos.lightning.training import train, train_flow


def _final_state(run_dir):
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return state


# workers=2 (the loader's own state across the resume) in the default run, 0 under -m slow
@pytest.mark.parametrize("workers", [pytest.param(0, marks=pytest.mark.slow), 2])
def test_resuming_at_any_step_ends_with_the_uninterrupted_weights(tmp_path, workers):
    """A run resumed from its checkpoint at step k (early, just before and at half-way, the
    step before the end) trains on exactly the clips the uninterrupted run trained on after
    step k, so the two end bitwise equal: with 2 clips a batch and 0 or 2 loader workers."""
    steps = 6
    common = [
        *TINY,
        "+trainer.limit_val_batches=0",
        f"trainer.max_steps={steps}",
        "checkpoint.every_n_steps=1",
        "data.batch_size=2",
        f"data.num_workers={workers}",
    ]
    straight = tmp_path / "straight"
    train(compose_config("train", common), straight)
    final = _final_state(straight)
    for k in sorted({1, steps // 2 - 1, steps // 2, steps - 1}):
        resumed = tmp_path / f"resumed{k}"
        checkpoint = straight / "checkpoints" / f"step{k:07d}.ckpt"
        train(compose_config("train", [*common, f"ckpt_path={checkpoint}"]), resumed)
        state = _final_state(resumed)
        assert state["global_step"] == steps, k
        for key, value in final["state_dict"].items():
            assert torch.equal(state["state_dict"][key], value), f"resumed at {k}: {key}"
        for index, moments in final["optimizer_states"][0]["state"].items():
            assert torch.equal(
                state["optimizer_states"][0]["state"][index]["exp_avg"], moments["exp_avg"]
            )
        assert state["lr_schedulers"][0]["last_epoch"] == final["lr_schedulers"][0]["last_epoch"]


def test_last_checkpoint_holds_the_final_step_between_periodic_ones(tmp_path):
    """5 steps with a checkpoint every 2: last.ckpt holds step 5's state, not step 4's
    (Lightning's own last.ckpt stops at the last periodic one): the weights a run
    checkpointing every step saved at step 5."""
    common = [*TINY, "+trainer.limit_val_batches=0", "trainer.max_steps=5", "data.batch_size=2"]
    sparse, every = tmp_path / "every2", tmp_path / "every1"
    train(compose_config("train", [*common, "checkpoint.every_n_steps=2"]), sparse)
    train(compose_config("train", [*common, "checkpoint.every_n_steps=1"]), every)
    last = _final_state(sparse)
    assert last["global_step"] == 5
    at_four = torch.load(sparse / "checkpoints" / "step0000004.ckpt", weights_only=True)
    at_five = torch.load(every / "checkpoints" / "step0000005.ckpt", weights_only=True)
    assert any(not torch.equal(last["state_dict"][k], v) for k, v in at_four["state_dict"].items())
    for key, value in at_five["state_dict"].items():
        assert torch.equal(last["state_dict"][key], value), key


def test_channels_last_training_saves_weights_vos_eval_loads(tmp_path):
    """channels_last=true trains NHWC weights; its checkpoint loads into the (contiguous)
    network vos.eval builds, tensor for tensor."""
    run = tmp_path / "nhwc"
    overrides = [*TINY, "trainer.max_steps=1", "+trainer.limit_val_batches=0", "channels_last=true"]
    train(compose_config("train", overrides), run)
    saved = _final_state(run)["state_dict"]
    assert any(v.dim() == 4 and not v.is_contiguous() for v in saved.values())
    loaded = load_engine(run / "checkpoints" / "last.ckpt", torch.device("cpu")).network
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, saved[f"network.{key}"]), key


def test_train_validates_and_writes_metrics(tmp_path):
    metrics = train(compose_config("train", TINY), tmp_path)
    assert 0.0 <= metrics["val/J&F-Mean"] <= 1.0
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["val/J&F-Mean"] == metrics["val/J&F-Mean"]
    assert written["val/fps"] == pytest.approx(1000.0 / written["val/ms_per_frame"])
    assert written["params_m"] > 0
    assert "val/peak_memory_mb" not in written  # the wandb dashboard's: not without wandb
    # the last validation per video (vos.report's intervals), its object-weighted mean the J&F
    per_video = written["per_video"]
    assert per_video and "per_video" not in metrics
    assert len({row["video"] for row in per_video}) == len(per_video)
    objects = sum(row["objects"] for row in per_video)
    weighted = sum(row["J&F-Mean"] * row["objects"] for row in per_video) / objects
    assert weighted == pytest.approx(written["val/J&F-Mean"], abs=1e-6)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_missing_checkpoint_is_named(tmp_path):
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        train(compose_config("train", [*TINY, f"ckpt_path={missing}"]), tmp_path)


@pytest.mark.parametrize("group", ["model", "dataset", "strategy", "logger"])
def test_unknown_config_name_lists_options(group, run_python_m):
    result = run_python_m(
        [sys.executable, "-m", "vos.train", f"{group}=no_such_thing"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "no_such_thing" in result.stderr
    assert "Available options" in result.stderr


def test_killed_run_keeps_a_loadable_checkpoint(tmp_path):
    """SIGKILL in the middle of training (possibly mid-save) leaves last.ckpt loadable."""
    import signal
    import time

    run_dir = tmp_path / "killed"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vos.train",
            *TINY,
            "trainer.max_steps=1000",
            "checkpoint.every_n_steps=1",
            "+trainer.limit_val_batches=0",
            f"hydra.run.dir={run_dir}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    try:
        deadline = time.time() + 180
        while time.time() < deadline and len(list(last.parent.glob("step*.ckpt"))) < 3:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert last.is_file()
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["global_step"] >= 2
    for path in last.parent.glob("*.ckpt"):
        torch.load(path, map_location="cpu", weights_only=False)  # none is truncated
    # and training resumes from it
    resumed = tmp_path / "resumed"
    metrics = train(
        compose_config(
            "train",
            [
                *TINY,
                f"trainer.max_steps={state['global_step'] + 1}",
                "+trainer.limit_val_batches=0",
                f"ckpt_path={last}",
            ],
        ),
        resumed,
    )
    assert metrics["global_step"] == state["global_step"] + 1


def test_bad_dataset_root_is_one_clear_line(tmp_path, run_python_m):
    result = run_python_m(
        [
            sys.executable,
            "-m",
            "vos.train",
            "logger=none",
            "dataset=davis2017",
            f"dataset.root={tmp_path / 'no_davis_here'}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "vos.train: error:" in result.stderr
    assert "no_davis_here" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=rmnet"],  # flow-guided query region, oracle flow from the generated data
        ["model=rmnet", "model.reader.query_region_mode=previous", "model/flow=none"],
        ["model=rmnet", "model.reader.region_semantics=official"],
        # no flow from the data: a frozen flow network estimates it in the training step
        ["model=rmnet", "model/flow=tinyflownet"],
        ["model=hmmn"],  # kernel at validation only, top-k fine reads, dropout schedule
        ["model=hmmn", "model.reader.kernel_in_training=true", "model.reader.fine_memory=all"],
        ["model=lcm"],
        ["model=lmrc"],  # GMR, LMR, SLMR, comparator and the scale loss
        ["model=lmrc", "model/lmrc_setting=B", "data.clip.sampling=window"],
        ["model=lcm", "optim=sgd", "lr_schedule=cosine", "data.clip.sampling=anywhere"],
        ["model=rmnet", "data.clip.sampling=static"],  # affine copies with their exact flow
    ],
)
def test_other_readers_train_and_validate(tmp_path, overrides):
    metrics = train(
        compose_config(
            "train",
            [
                *TINY,
                *overrides,
                "trainer.max_steps=2",
                "trainer.val_check_interval=2",
                "dataset.eval.num_videos=1",
            ],
        ),
        tmp_path,
    )
    assert metrics["global_step"] == 2
    assert 0.0 <= metrics["val/J&F-Mean"] <= 1.0


def test_flow_reader_without_flow_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="model/flow=tinyflownet"):
        train(
            compose_config(
                "train",
                [
                    *TINY,
                    "model=rmnet",
                    "model/flow=none",
                    "trainer.max_steps=1",
                    "trainer.val_check_interval=1",
                    "dataset.eval.num_videos=1",
                ],
            ),
            tmp_path,
        )


def test_tinyflownet_trains_alone_and_rmnet_loads_it(tmp_path):
    flow_run = tmp_path / "flow"
    metrics = train_flow(
        compose_config(
            "train_flow",
            [
                *[o for o in TINY if not o.startswith(("model.", "data.clip"))],
                "data.val_pairs=4",
                "trainer.max_steps=2",
                "trainer.val_check_interval=2",
            ],
        ),
        flow_run,
    )
    assert metrics["val/epe"] >= 0.0 and metrics["val/epe_zero_flow"] >= 0.0
    weights = flow_run / "checkpoints" / "last.ckpt"
    rmnet_run = tmp_path / "rmnet"
    overrides = ["model=rmnet", "model/flow=tinyflownet", f"model.flow.weights={weights}"]
    metrics = train(
        compose_config(
            "train",
            [
                *TINY,
                *overrides,
                "trainer.max_steps=1",
                "trainer.val_check_interval=1",
                "dataset.eval.num_videos=1",
            ],
        ),
        rmnet_run,
    )
    assert 0.0 <= metrics["val/J&F-Mean"] <= 1.0
    # the flow network is loaded, frozen, and not trained with RMNet
    state = torch.load(
        rmnet_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    flow_state = torch.load(weights, map_location="cpu", weights_only=False)["state_dict"]
    key = next(k for k in flow_state if k.endswith("weight"))
    torch.testing.assert_close(
        state["state_dict"]["network.flow_estimator." + key.removeprefix("flow.")], flow_state[key]
    )


def test_init_weights_must_fit_and_exist(tmp_path):
    run = tmp_path / "stm"
    train(
        compose_config("train", [*TINY, "trainer.max_steps=1", "+trainer.limit_val_batches=0"]), run
    )
    weights = run / "checkpoints" / "last.ckpt"
    cfg = compose_config(
        "train",
        [*TINY, "model=lcm", f"init_weights={weights}", "trainer.max_steps=1"],
    )
    with pytest.raises(CheckpointError, match="does not fit"):
        train(cfg, tmp_path / "lcm")
    cfg = compose_config("train", [*TINY, f"init_weights={tmp_path / 'gone.ckpt'}"])
    with pytest.raises(FileNotFoundError, match="init_weights"):
        train(cfg, tmp_path / "gone")


def test_progress_bar_counts_steps_of_max_steps():
    """The bar reads "training steps k/max_steps" (a run is a number of steps, not epochs)."""
    from types import SimpleNamespace

    from vos.lightning.callbacks import StepProgressBar

    bar = StepProgressBar()
    bar._trainer = SimpleNamespace(max_steps=40, max_epochs=-1, num_training_batches=80)
    assert bar.total_train_batches == 40
    description = bar._get_train_description(current_epoch=0)
    assert description.strip() == "training steps" and "Epoch" not in description

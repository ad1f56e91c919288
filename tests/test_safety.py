"""Nothing a user runs can run a file's code or lose their data: checkpoints are read weights
only, a checkpoint's model config builds only the suite's classes, results never overwrite a
dataset or earlier results, a run folder is never mixed with another run's checkpoints, and a
checkpoint killed while it is written leaves the previous one loadable."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import TINY, compose_config, run_in_process

from vos.checkpoint import CheckpointError, read_checkpoint
from vos.data.synthetic import export_davis
from vos.files import OutputFolderError, check_output_folder, staged_folder
from vos.inference.loading import load_engine
from vos.lightning.training import RunFolderError, train

ROOT = Path(__file__).resolve().parents[1]


class WritesAFile:
    """Unpickling this calls Path.touch(marker): what a crafted checkpoint could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def crafted_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "code-ran"
    path = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "global_step": 1, "payload": WritesAFile(marker)}, path)
    return path, marker


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("stm")
    train(
        compose_config("train", [*TINY, "trainer.max_steps=1", "+trainer.limit_val_batches=0"]), run
    )
    return run / "checkpoints" / "last.ckpt"


def test_a_crafted_pickle_is_refused_without_running(tmp_path):
    path, marker = crafted_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="crafted.ckpt"):
        read_checkpoint(path, "ckpt_path")
    with pytest.raises(CheckpointError, match="crafted.ckpt"):
        load_engine(path, torch.device("cpu"))
    for key in ("ckpt_path", "init_weights"):
        with pytest.raises(CheckpointError, match=key):
            train(compose_config("train", [*TINY, f"{key}={path}"]), tmp_path / key)
    assert not marker.exists()


def test_a_stored_config_naming_another_callable_is_refused(checkpoint, tmp_path):
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    marker = tmp_path / "code-ran"
    state["hyper_parameters"]["model"]["reader"] = {
        "_target_": "os.system",
        "_args_": [f"touch {marker}"],
    }
    crafted = tmp_path / "crafted.ckpt"
    torch.save(state, crafted)
    with pytest.raises(CheckpointError, match=r"model\.reader\._target_=os\.system"):
        load_engine(crafted, torch.device("cpu"))
    assert not marker.exists()
    # a prefix the user names is trusted: the suite's own reader under another spelling
    state["hyper_parameters"]["model"]["reader"] = {"_target_": "builtins.dict"}
    torch.save(state, crafted)
    with pytest.raises(CheckpointError, match="builtins.dict"):
        load_engine(crafted, torch.device("cpu"))


def test_eval_never_writes_into_the_dataset_it_reads(checkpoint, tmp_path, monkeypatch, capfd):
    root = tmp_path / "syn"
    export_davis(root, videos_per_split=1, num_frames=30, seed=0, height=48, width=64)
    truth = root / "Annotations" / "480p"
    before = {p: p.read_bytes() for p in truth.rglob("*.png")}
    common = [
        f"ckpt_path={checkpoint}",
        "dataset=davis2017",
        f"dataset.root={root}",
        "dataset.late_objects=true",
    ]
    for output in (truth, root, tmp_path):  # inside the root, the root, around the root
        code, err = run_in_process(
            "vos.eval", [*common, f"output_dir={output}"], monkeypatch, capfd
        )
        assert code != 0 and "dataset folder" in err.splitlines()[-1]
    assert {p: p.read_bytes() for p in truth.rglob("*.png")} == before


def test_eval_keeps_earlier_results_unless_told_and_replaces_them_whole(
    checkpoint, tmp_path, monkeypatch, capfd
):
    monkeypatch.chdir(tmp_path)
    output = tmp_path / "results"
    common = [f"ckpt_path={checkpoint}", "dataset.height=48", "dataset.width=64"]
    common += ["dataset.eval.num_videos=1", "dataset.eval.num_frames=30", f"output_dir={output}"]

    def evaluate(*extra: str) -> tuple[int, str]:
        return run_in_process("vos.eval", [*common, *extra], monkeypatch, capfd)

    assert evaluate()[0] == 0
    first = {p: p.read_bytes() for p in output.rglob("*") if p.is_file()}
    assert {"global_results.csv", "per-sequence_results.csv"} <= {p.name for p in first}
    code, err = evaluate()
    assert code != 0 and "overwrite=true" in err.splitlines()[-1]
    assert {p: p.read_bytes() for p in output.rglob("*") if p.is_file()} == first
    assert evaluate("overwrite=true")[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # no staging left


def test_a_failed_staged_write_leaves_the_previous_results(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "old.csv").write_text("old")
    with pytest.raises(RuntimeError), staged_folder(results) as staging:
        (staging / "new.csv").write_text("new")
        raise RuntimeError("killed half-way")
    assert [p.name for p in tmp_path.iterdir()] == ["results"]
    assert (results / "old.csv").read_text() == "old"
    with staged_folder(results) as staging:
        (staging / "new.csv").write_text("new")
    assert [p.name for p in results.iterdir()] == ["new.csv"]
    assert [p.name for p in tmp_path.iterdir()] == ["results"]
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(OutputFolderError, match="a file"):
        check_output_folder(tmp_path / "a-file", "output_dir")


def test_a_run_folder_is_never_mixed_with_another_runs_checkpoints(tmp_path):
    common = [*TINY, "+trainer.limit_val_batches=0", "checkpoint.every_n_steps=1"]
    run = tmp_path / "run"
    train(compose_config("train", common), run)
    with pytest.raises(RunFolderError, match="already holds checkpoints"):
        train(compose_config("train", common), run)
    step2 = run / "checkpoints" / "step0000002.ckpt"
    with pytest.raises(RunFolderError, match="later than"):
        train(compose_config("train", [*common, f"ckpt_path={step2}"]), run)
    # continuing from its newest checkpoint is that run going on
    last = run / "checkpoints" / "last.ckpt"
    train(compose_config("train", [*common, f"ckpt_path={last}", "trainer.max_steps=6"]), run)
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert not [name for name in names if "-v" in name], names
    assert read_checkpoint(last)["global_step"] == 6


def test_resume_auto_continues_an_interrupted_run_and_leaves_a_finished_one(tmp_path, capsys):
    """resume=auto: the same command run again continues the folder's last.ckpt (a killed
    sweep job goes on where it stopped) and leaves a run that reached max_steps untouched.
    The CSV log keeps the first attempt's rows beneath the second's."""
    common = [
        *TINY,
        "+trainer.limit_val_batches=0",
        "checkpoint.every_n_steps=1",
        "resume=auto",
        "logger=csv",
    ]
    run = tmp_path / "run"
    train(compose_config("train", [*common, "trainer.max_steps=2"]), run)  # "killed" at 2
    (run / "metrics.json").unlink()  # a killed run writes no metrics.json
    logged = run / "csv" / "metrics.csv"
    first_attempt = logged.read_text().splitlines()
    train(compose_config("train", [*common, "trainer.max_steps=4"]), run)
    assert "continuing" in capsys.readouterr().out
    both = logged.read_text().splitlines()
    assert both[: len(first_attempt)] == first_attempt
    with open(logged, newline="") as file:
        steps = [int(row["step"]) for row in csv.DictReader(file) if row.get("train/loss")]
    assert steps == [0, 1, 2, 3], steps
    last = run / "checkpoints" / "last.ckpt"
    assert read_checkpoint(last)["global_step"] == 4
    # fit_s is the second attempt's, from step 2: metrics.json says so
    assert json.loads((run / "metrics.json").read_text())["resumed_from_step"] == 2
    written = (run / "metrics.json").stat().st_mtime_ns, last.stat().st_mtime_ns
    metrics = train(compose_config("train", [*common, "trainer.max_steps=4"]), run)
    assert "nothing to do" in capsys.readouterr().out and metrics["global_step"] == 4
    assert ((run / "metrics.json").stat().st_mtime_ns, last.stat().st_mtime_ns) == written
    # a larger budget continues the finished run; never (the default) refuses the folder
    train(compose_config("train", [*common, "trainer.max_steps=5"]), run)
    assert read_checkpoint(last)["global_step"] == 5
    assert json.loads((run / "metrics.json").read_text())["resumed_from_step"] == 4
    with pytest.raises(RunFolderError, match="already holds checkpoints"):
        train(compose_config("train", [*TINY, "+trainer.limit_val_batches=0"]), run)
    with pytest.raises(ValueError, match="resume='sometimes'"):
        train(compose_config("train", [*TINY, "resume=sometimes"]), tmp_path / "other")


def test_checkpoint_keep_keeps_the_most_recent(tmp_path):
    common = [*TINY, "+trainer.limit_val_batches=0", "checkpoint.every_n_steps=1"]
    train(compose_config("train", [*common, "checkpoint.keep=2"]), tmp_path)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["last.ckpt", "step0000003.ckpt", "step0000004.ckpt"]


KILLED_DURING_SAVE = """
import os, shutil, signal, sys

import torch

# the 4th checkpoint file written (step 2's last.ckpt) dies half-way, wherever it is written
writes = {"count": 0}


def dies_now() -> bool:
    writes["count"] += 1
    return writes["count"] == 4


real_save = torch.save


def save(obj, f, *args, **kwargs):
    if getattr(f, "name", None) is None:  # a buffer in memory, not a file on disk
        return real_save(obj, f, *args, **kwargs)
    real_save(obj, f, *args, **kwargs)
    if dies_now():
        f.flush()
        f.truncate(f.tell() // 2)  # half of it on disk when the kill comes
        os.kill(os.getpid(), signal.SIGKILL)


real_copyfile = shutil.copyfile


def copyfile(src, dst, *args, **kwargs):  # a move across filesystems copies
    if not dies_now():
        return real_copyfile(src, dst, *args, **kwargs)
    with open(src, "rb") as source, open(dst, "wb") as target:
        data = source.read()
        target.write(data[: len(data) // 2])
    os.kill(os.getpid(), signal.SIGKILL)


torch.save = save
shutil.copyfile = copyfile
sys.argv = ["vos.train", *sys.argv[1:]]
from vos.cli.train import main

main()
"""


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs a second filesystem for TMPDIR")
def test_a_kill_during_a_save_leaves_the_previous_checkpoint(tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(KILLED_DURING_SAVE))
    run = tmp_path / "run"
    shm = Path("/dev/shm") / f"vos-test-{os.getpid()}"
    shm.mkdir()
    env = {**os.environ, "TMPDIR": str(shm), "WANDB_MODE": "disabled"}
    overrides = [*TINY, "+trainer.limit_val_batches=0", "checkpoint.every_n_steps=1"]
    result = subprocess.run(
        [sys.executable, str(script), *overrides, f"hydra.run.dir={run}"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    leftovers = list(shm.iterdir())
    for path in leftovers:
        path.unlink()
    shm.rmdir()
    assert result.returncode == -9, result.stderr[-2000:]
    last = run / "checkpoints" / "last.ckpt"
    assert read_checkpoint(last)["global_step"] == 1  # the previous last.ckpt, whole
    assert read_checkpoint(run / "checkpoints" / "step0000002.ckpt")["global_step"] == 2
    assert leftovers == []  # nothing staged on the other filesystem

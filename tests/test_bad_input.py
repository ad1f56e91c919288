"""What bad input gets: for every class of bad input below, each command stops with a non-zero
exit and one last stderr line naming the file or key, without a Python traceback, and every file
that existed before is byte-identical after. `BAD_INPUTS` is also the README's section "What bad
input gets" (`test_readme_lists_every_class`).

The commands run in this process (``main()`` with the command line in ``sys.argv``), as a user's
``python -m`` would run them but without starting Python and Lightning anew for each case.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from data_writers import write_davis_layout
from helpers import TINY, compose_config, run_in_process

from vos.data.palette import write_mask
from vos.lightning.training import train

ROOT = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH, FRAMES = 48, 64, 8
# the network and trainer of TINY, for the DAVIS-layout cases (TINY's dataset keys are the
# generated dataset's)
DAVIS_TINY = [o for o in TINY if not o.startswith("dataset.")] + ["dataset=davis2017"]


@dataclass(frozen=True)
class BadInput:
    command: str
    what: str  # the class of bad input, as the README lists it
    args: tuple[str, ...]  # {inputs} is the fixtures' folder, {run} a fresh run folder
    names: str  # what the last stderr line must name (a file or a key)
    needs_no_gpu: bool = False


def _case(command, what, args, names, **options) -> BadInput:
    return BadInput(command, what, tuple(args), names, **options)


BAD_INPUTS = [
    # vos.train
    _case("vos.train", "an unknown config name", [*TINY, "model=nope"], "model/nope"),
    _case("vos.train", "a DAVIS dataset without its root", [*DAVIS_TINY], "dataset.root"),
    _case(
        "vos.train",
        "a dataset root that does not exist",
        [*DAVIS_TINY, "dataset.root={inputs}/nowhere"],
        "nowhere",
    ),
    _case(
        "vos.train",
        "a ckpt_path that does not exist",
        [*TINY, "ckpt_path={inputs}/missing.ckpt"],
        "missing.ckpt",
    ),
    _case(
        "vos.train",
        "a ckpt_path that is not a checkpoint",
        [*TINY, "ckpt_path={inputs}/a_file.txt"],
        "a_file.txt",
    ),
    _case(
        "vos.train",
        "a checkpoint whose pickle would run code (ckpt_path)",
        [*TINY, "ckpt_path={inputs}/crafted.ckpt"],
        "crafted.ckpt",
    ),
    _case(
        "vos.train",
        "a checkpoint whose pickle would run code (init_weights)",
        [*TINY, "init_weights={inputs}/crafted.ckpt"],
        "crafted.ckpt",
    ),
    _case(
        "vos.train",
        "resuming one model from another's checkpoint",
        [*TINY, "model=stm", "ckpt_path={inputs}/lcm/checkpoints/last.ckpt"],
        "ckpt_path=",
    ),
    _case(
        "vos.train",
        "an init_weights file that does not exist",
        [*TINY, "init_weights={inputs}/missing.ckpt"],
        "init_weights",
    ),
    _case(
        "vos.train",
        "a Trainer argument that does not exist",
        [*TINY, "+trainer.max_step=2"],
        "trainer.max_step",
    ),
    _case(
        "vos.train", "a negative step count", [*TINY, "trainer.max_steps=-5"], "trainer.max_steps"
    ),
    _case(
        "vos.train",
        "a step count that is not a number",
        [*TINY, "trainer.max_steps=abc"],
        "trainer.max_steps",
    ),
    _case(
        "vos.train",
        "a fractional step count",
        [*TINY, "trainer.max_steps=2.5"],
        "trainer.max_steps",
    ),
    _case("vos.train", "an empty batch", [*TINY, "data.batch_size=0"], "data.batch_size"),
    _case(
        "vos.train",
        "a GPU asked for on a machine without one",
        [*TINY, "trainer.accelerator=gpu"],
        "trainer.accelerator=gpu",
        needs_no_gpu=True,
    ),
    _case(
        "vos.train", "a strategy the devices cannot run", [*TINY, "strategy=fsdp"], "strategy=fsdp"
    ),
    _case(
        "vos.train",
        "a corrupt JPEG in the training split",
        [*DAVIS_TINY, "dataset.root={inputs}/bad_train", "data.num_workers=1"],
        "/b/0000",
    ),
    _case(
        "vos.train",
        "a corrupt JPEG in the validation split",
        [*DAVIS_TINY, "dataset.root={inputs}/bad_val"],
        "/b/00001.jpg",
    ),
    _case(
        "vos.train",
        "an extra validation folder that does not exist",
        [*TINY, "dataset.extra_eval=[{inputs}/nowhere]"],
        "dataset.extra_eval[0]: the folder",
    ),
    _case(
        "vos.train",
        "an extra validation folder without Annotations",
        [*TINY, "dataset.extra_eval=[{inputs}/no_annotations]"],
        "dataset.extra_eval[0] (no_annotations): Annotations",
    ),
    _case(
        "vos.train",
        "a run folder holding another run's checkpoints",
        [*TINY, "hydra.run.dir={inputs}/stm"],
        "already holds checkpoints",
    ),
    _case(
        "vos.train", "a negative inference size", [*TINY, "inference.size=-10"], "inference.size"
    ),
    _case(
        "vos.train",
        "memorising every 0th frame",
        [*TINY, "inference.mem_every=0"],
        "inference.mem_every",
    ),
    # vos.eval
    _case("vos.eval", "no checkpoint or output folder given", [], "ckpt_path"),
    _case(
        "vos.eval",
        "a checkpoint whose pickle would run code",
        ["ckpt_path={inputs}/crafted.ckpt", "output_dir={run}"],
        "crafted.ckpt",
    ),
    _case(
        "vos.eval",
        "a checkpoint whose model config names another callable",
        ["ckpt_path={inputs}/os_system.ckpt", "output_dir={run}"],
        "os.system",
    ),
    _case(
        "vos.eval",
        "an output folder inside the dataset it reads",
        [
            "ckpt_path={inputs}/stm/checkpoints/last.ckpt",
            "dataset=davis2017",
            "dataset.root={inputs}/davis",
            "output_dir={inputs}/davis/Annotations/480p",
        ],
        "dataset folder",
    ),
    _case(
        "vos.eval",
        "an output folder holding earlier results",
        ["ckpt_path={inputs}/stm/checkpoints/last.ckpt", "output_dir={inputs}/results"],
        "overwrite=true",
    ),
    _case(
        "vos.eval",
        "an output folder that is a file",
        ["ckpt_path={inputs}/stm/checkpoints/last.ckpt", "output_dir={inputs}/a_file.txt"],
        "a_file.txt",
    ),
    _case(
        "vos.eval",
        "no videos asked for",
        ["ckpt_path={inputs}/stm/checkpoints/last.ckpt", "output_dir={run}", "max_videos=0"],
        "max_videos",
    ),
    _case(
        "vos.eval",
        "a negative inference size",
        ["ckpt_path={inputs}/stm/checkpoints/last.ckpt", "output_dir={run}", "inference.size=-10"],
        "inference.size",
    ),
    _case(
        "vos.eval",
        "ground truth with an object joining after frame 0 (before segmenting)",
        [
            "ckpt_path={inputs}/stm/checkpoints/last.ckpt",
            "dataset=davis2017",
            "dataset.root={inputs}/late",
            "output_dir={run}",
        ],
        "late_objects",
    ),
    _case(
        "vos.eval",
        "a model override the checkpoint's config lacks",
        [
            "ckpt_path={inputs}/stm/checkpoints/last.ckpt",
            "output_dir={run}",
            "+model.reader.nope=1",
        ],
        "model.reader.nope",
    ),
    _case(
        "vos.eval",
        "a CUDA device on a machine without one",
        ["ckpt_path={inputs}/stm/checkpoints/last.ckpt", "output_dir={run}", "device=cuda"],
        "device=cuda",
        needs_no_gpu=True,
    ),
    # vos.evaluate
    _case(
        "vos.evaluate",
        "a prediction folder that does not exist",
        ["gt_root={inputs}/davis", "pred_root={inputs}/nowhere"],
        "nowhere",
    ),
    _case(
        "vos.evaluate",
        "a prediction missing a frame",
        ["gt_root={inputs}/davis", "pred_root={inputs}/pred_missing"],
        "00004.png",
    ),
    _case(
        "vos.evaluate",
        "a prediction of the wrong size",
        ["gt_root={inputs}/davis", "pred_root={inputs}/pred_size"],
        "00002.png",
    ),
    _case(
        "vos.evaluate",
        "results written into the ground truth's folder",
        [
            "gt_root={inputs}/davis",
            "pred_root={inputs}/pred",
            "output_dir={inputs}/davis/Annotations",
        ],
        "dataset folder",
    ),
    # vos.bench
    _case(
        "vos.bench",
        "an unknown reader variant",
        ["readers", "--model", "stm", "--variants", "nope"],
        "nope",
    ),
    _case("vos.bench", "an unknown model config", ["readers", "--model", "nope"], "nope"),
    _case(
        "vos.bench",
        "a checkpoint that does not exist",
        ["inference", "--ckpt", "{inputs}/missing.ckpt"],
        "missing.ckpt",
    ),
    # vos.report
    _case("vos.report", "a folder without runs", ["{inputs}/results"], "metrics.json"),
    _case(
        "vos.report",
        "a run whose metrics.json is not JSON",
        ["{inputs}/broken_run"],
        "metrics.json",
    ),
    _case(
        "vos.report",
        "a paper file that does not exist",
        ["{inputs}/stm", "--paper", "{inputs}/nopaper.yaml"],
        "nopaper.yaml",
    ),
    # vos.data.synthetic
    _case(
        "vos.data.synthetic",
        "too few frames for the validation split",
        ["--out", "{run}", "--frames", "3"],
        "num_frames",
    ),
    _case(
        "vos.data.synthetic",
        "an output folder holding files",
        ["--out", "{inputs}/results"],
        "--out",
    ),
    _case(
        "vos.data.synthetic",
        "an output folder that is a file",
        ["--out", "{inputs}/a_file.txt"],
        "a_file.txt",
    ),
]


def _labels(late: bool = False) -> np.ndarray:
    labels = np.zeros((FRAMES, HEIGHT, WIDTH), dtype=np.uint8)
    labels[:, 8:24, 8:24] = 1
    labels[3 if late else 0 :, 28:44, 36:56] = 2
    return labels


class _Crafted:
    """Unpickling calls Path.touch(marker)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    clean = {"a": _labels()}
    write_davis_layout(root / "davis", clean, {"train": ["a"], "val": ["a"]})
    for name, train_list, val_list in (("bad_train", ["b"], ["a"]), ("bad_val", ["a"], ["b"])):
        layout = write_davis_layout(root / name, {"a": _labels(), "b": _labels()},
                               {"train": train_list, "val": val_list})  # fmt: skip
        for index in range(1, FRAMES):  # whatever frames a clip draws, one is corrupt
            layout.frame_path("b", f"{index:05d}").write_bytes(b"\xff\xd8 not a JPEG")
    write_davis_layout(root / "late", {"a": _labels(late=True)}, {"train": ["a"], "val": ["a"]})
    write_davis_layout(root / "no_annotations", clean, {"val": ["a"]})
    shutil.rmtree(root / "no_annotations" / "Annotations")
    truth = root / "davis" / "Annotations" / "480p" / "a"
    shutil.copytree(truth, root / "pred" / "a")
    shutil.copytree(truth, root / "pred_missing" / "a")
    (root / "pred_missing" / "a" / "00004.png").unlink()
    shutil.copytree(truth, root / "pred_size" / "a")
    write_mask(root / "pred_size" / "a" / "00002.png", np.zeros((8, 8), dtype=np.uint8))
    (root / "a_file.txt").write_text("not a checkpoint\n")
    (root / "results").mkdir()
    (root / "results" / "earlier.csv").write_text("J&F-Mean\n0.5\n")
    (root / "broken_run").mkdir()
    (root / "broken_run" / "metrics.json").write_text("{")
    torch.save({"state_dict": {}, "global_step": 1, "x": _Crafted(root / "code-ran")},
               root / "crafted.ckpt")  # fmt: skip
    one_step = ["trainer.max_steps=1", "+trainer.limit_val_batches=0"]
    train(compose_config("train", [*TINY, *one_step]), root / "stm")
    train(compose_config("train", [*TINY, "model=lcm", *one_step]), root / "lcm")
    state = torch.load(root / "stm" / "checkpoints" / "last.ckpt", weights_only=True)
    marker = root / "code-ran"
    state["hyper_parameters"]["model"]["reader"] = {"_target_": "os.system",
                                                    "_args_": [f"touch {marker}"]}  # fmt: skip
    torch.save(state, root / "os_system.ckpt")
    return root


def _snapshot(folder: Path) -> dict[Path, str]:
    return {
        path: hashlib.sha1(path.read_bytes()).hexdigest()
        for path in folder.rglob("*")
        if path.is_file()
    }


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda c: f"{c.command}: {c.what}")
def test_bad_input_is_one_line_naming_the_file_or_key(case, inputs, tmp_path, monkeypatch, capfd):
    if case.needs_no_gpu and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    args = [a.format(inputs=inputs, run=run) for a in case.args]
    if case.command in {"vos.train"} and not any(a.startswith("hydra.run.dir=") for a in args):
        args.append(f"hydra.run.dir={run}")
    before = _snapshot(inputs)
    code, err = run_in_process(case.command, args, monkeypatch, capfd)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code not in (0, None), err[-2000:]
    assert lines, "nothing on stderr"
    assert "Traceback" not in err, err[-3000:]
    assert case.names in lines[-1], lines[-1]
    assert _snapshot(inputs) == before, "a file that existed before changed"
    assert not (inputs / "code-ran").exists()


def readme_lines() -> list[str]:
    """The README's section, one line per class of bad input."""
    return [f"- `{case.command}`: {case.what}." for case in BAD_INPUTS]


def test_readme_lists_every_class():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## What bad input gets", 1)[1].split("\n## ", 1)[0]
    listed = [line for line in section.splitlines() if line.startswith("- `")]
    assert listed == readme_lines(), "README's 'What bad input gets' differs from BAD_INPUTS"

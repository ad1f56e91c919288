"""Every experiment= config composes, and each row of its sweep runs a training step."""

import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from data_writers import write_image_root, write_youtube_train
from helpers import TINY, compose_config
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from vos.config import CONFIG_DIR
from vos.data.synthetic import export_davis
from vos.lightning.training import train

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
# training recipes in stages (one run each, chained by checkpoint), not sweeps
LCM_STAGES = ["lcm_stage1_static", "lcm_stage2_main", "lcm_stage3_sequence"]
# static pre-training -> main training on real data (image folders, DAVIS, YouTube-VOS): they
# need dataset roots, so the sweep test does not run them; test_recipe_stages_chain_checkpoints
# runs them on files written here. Recipe -> (its dataset, the static stage it starts from).
RECIPES = {
    "stcn_static": ("static", None),
    "stcn_main": ("davis_youtube", "stcn_static"),
    "hmmn_static": ("static", None),
    "hmmn_davis": ("davis2017", "hmmn_static"),
    "hmmn_youtube": ("youtube2019", "hmmn_static"),
    "hmmn_davis_youtube": ("davis_youtube", "hmmn_static"),
    "rmnet_static": ("static", None),
    "rmnet_davis": ("davis2017", "rmnet_static"),
    "lmrc_davis_youtube": ("davis_youtube", None),
}
STAGES = [*LCM_STAGES, *RECIPES]
# single runs that set up one reported run (not sweeps, not stages chained by checkpoint)
SINGLE_RUNS = ["lmrc_cpu", "cpu_amx"]


def has_sweep(name: str) -> bool:
    cfg = OmegaConf.load(CONFIG_DIR / "experiment" / f"{name}.yaml")
    return OmegaConf.select(cfg, "hydra.sweeper.params") is not None


SWEEPS = [name for name in EXPERIMENTS if has_sweep(name)]


def sweep_rows(name: str) -> list[list[str]]:
    """The overrides of every job of the experiment's multirun, parsed as Hydra parses them
    (so list values such as ``[res3,res2]`` stay whole)."""
    params = OmegaConf.load(CONFIG_DIR / "experiment" / f"{name}.yaml").hydra.sweeper.params
    parser = OverridesParser.create()
    choices = []
    for key, value in params.items():
        override = parser.parse_override(f"{key}={value}")
        if override.is_sweep_override():
            choices.append([f"{key}={v}" for v in override.sweep_string_iterator()])
        else:  # one value: a single job
            choices.append([f"{key}={override.get_value_element_as_str()}"])
    return [list(row) for row in itertools.product(*choices)]


@pytest.fixture
def raft_weights(tmp_path, monkeypatch):
    path = tmp_path / "raft_small.pth"
    torch.save(torchvision.models.optical_flow.raft_small(weights=None).state_dict(), path)
    monkeypatch.setenv("VOS_RAFT_WEIGHTS", str(path))
    return path


def _rows_first_ones_by_default():
    """Every row of every sweep; the default run takes each sweep's first row, `make test-all`
    all of them (about 70 one-step trainings: two minutes on 2 cores)."""
    for name in SWEEPS:
        for index, row in enumerate(sweep_rows(name)):
            marks = [pytest.mark.slow] if index > 0 else []
            yield pytest.param(name, row, marks=marks, id=f"{name}-{'+'.join(row)}")


@pytest.mark.parametrize(("experiment", "row"), list(_rows_first_ones_by_default()))
def test_every_sweep_row_runs_a_step(experiment, row, tmp_path, raft_weights):
    """One training step, then a validation on one video: several rows (HMMN's kernel, k at
    inference, window, σ; RMNet's flow network) only act at inference."""
    overrides = [
        *TINY,
        f"experiment={experiment}",
        *row,
        "trainer.max_steps=1",
        "trainer.val_check_interval=1",
        "data.val_videos=1",
    ]
    metrics = train(compose_config("train", overrides), tmp_path)
    assert metrics["global_step"] == 1
    assert 0.0 <= metrics["val/J&F-Mean"] <= 1.0


def test_experiments_exist():
    assert {"rmnet_table5", "rmnet_table6", "rmnet_table7"} <= set(EXPERIMENTS)
    assert {"hmmn_table5", *(f"hmmn_table6{t}" for t in "bcdefg")} <= set(EXPERIMENTS)
    assert {"lcm_table4", "lcm_table4_no_grm", *STAGES} <= set(EXPERIMENTS)
    assert {"lmrc_table4", "lmrc_table5a", "lmrc_table5b"} <= set(EXPERIMENTS)
    assert len(sweep_rows("lmrc_table4")) == 6  # settings A-F
    assert len(sweep_rows("hmmn_table6e")) == 4  # lists stay whole: [], [res2], [res3], both
    assert all(
        Path(CONFIG_DIR / "experiment" / f"{name}.yaml")
        .read_text()
        .startswith("# @package _global_")
        for name in EXPERIMENTS
    )


def test_every_experiment_is_a_sweep_or_a_stage():
    """A config that is none of these would escape the sweep, stage and single-run tests."""
    assert sorted({*SWEEPS, *STAGES, *SINGLE_RUNS}) == EXPERIMENTS
    assert not set(SWEEPS) & set(STAGES) and not set(SINGLE_RUNS) & {*SWEEPS, *STAGES}


@pytest.mark.parametrize("experiment", SINGLE_RUNS)
def test_single_runs_train_a_step(experiment, tmp_path):
    overrides = [
        *TINY,
        f"experiment={experiment}",
        "trainer.max_steps=1",
        "trainer.val_check_interval=1",
        "data.val_videos=1",
    ]
    metrics = train(compose_config("train", overrides), tmp_path)
    assert metrics["global_step"] == 1


def test_lcm_stages_chain_checkpoints(tmp_path):
    """Stage 2 starts from stage 1's weights and stage 3 from stage 2's, by config alone."""
    metrics = {}
    for seed, stage in enumerate(LCM_STAGES):
        overrides = [
            *TINY,
            f"experiment={stage}",
            f"stages_dir={tmp_path}",
            f"seed={seed}",  # a fresh network would differ from the previous stage's
            "trainer.max_steps=1",
            "+trainer.limit_val_batches=0",
        ]
        metrics[stage] = train(
            compose_config("train", overrides), tmp_path / stage.split("_", 1)[1]
        )
    weights = {
        stage: torch.load(
            tmp_path / stage.split("_", 1)[1] / "checkpoints" / "last.ckpt",
            weights_only=False,
        )["state_dict"]
        for stage in LCM_STAGES
    }
    assert all(m["global_step"] == 1 for m in metrics.values())
    # one small step from the previous stage's weights (another seed would start elsewhere)
    key = "network.decoder.pred.weight"
    for before, after in zip(LCM_STAGES, LCM_STAGES[1:]):
        change = (weights[after][key] - weights[before][key]).abs().max()
        assert float(change) < 0.01, (before, after, float(change))


def test_lcm_stages_use_section_3_5s_loss_and_crops():
    """LCM §3.5: cross-entropy (plain: every pixel at every step, not the suite's bootstrapped
    one), random 384x384 patches in pre-training and 640x384 (W x H) patches in main training
    and fine-tuning."""
    from vos.model.loss import bootstrap_fraction

    crops = {"lcm_stage1_static": [384, 384]}
    for stage in LCM_STAGES:
        cfg = compose_config("train", [f"experiment={stage}"])
        boot = cfg.loss.bootstrap
        total = cfg.trainer.max_steps
        fractions = {
            bootstrap_fraction(step, boot.start_step, boot.end_step, boot.end_fraction)
            for step in range(total + 1)
        }
        assert fractions == {1.0}, stage
        assert list(cfg.data.clip.crop) == crops.get(stage, [384, 640]), stage


def test_make_train_crops_the_generated_frames_and_nothing_else():
    """`make train`'s CPU recipe (docs/benchmarks.md): object-aware crops of the generated
    data's own size, a cosine schedule, 1600 steps. Other datasets keep whole frames unless
    asked; `data.clip.crop` and `dataset.train_crop` both override; the clips have that size."""
    from hydra.utils import instantiate

    from vos.data.clips import ClipDataset

    default = compose_config("train")
    assert list(default.data.clip.crop) == [96, 160]
    assert default.trainer.max_steps == 1600
    assert default.lr_schedule._target_ == "vos.lightning.optim.CosineSchedule"
    davis = compose_config("train", ["dataset=davis2017", "dataset.root=/davis"])
    assert davis.data.clip.crop is None
    assert compose_config("train", ["data.clip.crop=null"]).data.clip.crop is None
    cfg = compose_config("train", [*TINY, "dataset.train_crop=[32,40]"])
    clips = ClipDataset(instantiate(cfg.dataset.train), length=4, seed=0, **cfg.data.clip)
    for index in range(4):
        assert tuple(clips[index]["frames"].shape[-2:]) == (32, 40)
        assert tuple(clips[index]["labels"].shape[-2:]) == (32, 40)


# ---------------------------------------------------------------------------- recipes


def root_overrides(dataset: str, images: str, davis: str, youtube: str) -> list[str]:
    """The overrides that point ``dataset`` at its roots."""
    return {
        "static": [f"dataset.roots=[{images}]"],
        "davis2017": [f"dataset.root={davis}"],
        "youtube2019": [f"dataset.root={youtube}"],
        "davis_youtube": [f"dataset.root={davis}", f"dataset.youtube_root={youtube}"],
    }[dataset]


PLACEHOLDERS = ("/data/ECSSD", "/data/DAVIS", "/data/YouTube-VOS")  # composing reads no files


def compose_recipe(name: str, overrides: list[str]) -> tuple[DictConfig, Path]:
    """The recipe's config and its run folder (``hydra.run.dir``, resolved)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "train", overrides=[f"experiment={name}", *overrides], return_hydra_config=True
        )
    run_dir = Path(cfg.hydra.run.dir)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, run_dir


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipes_compose_with_the_papers_settings(name, tmp_path):
    dataset, previous = RECIPES[name]
    cfg, run_dir = compose_recipe(
        name, [f"stages_dir={tmp_path}", *root_overrides(dataset, *PLACEHOLDERS)]
    )
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    paper = name.split("_")[0]
    assert cfg.model.name == ("stm" if paper == "stcn" else paper)  # stcn_*: any model=
    assert cfg.dataset.name == dataset
    assert run_dir.parent == tmp_path / cfg.model.name
    if dataset == "static":
        assert cfg.data.clip.sampling == "static" and run_dir.name == "static"
    else:
        assert cfg.data.clip.sampling == ("window" if paper == "lmrc" else "stcn")
        if paper != "hmmn":  # STCN's max-skip curriculum (HMMN's: below)
            assert list(cfg.data.clip.max_skip_values) == [5, 10, 15, 20, 25, 5]
            assert list(cfg.data.clip.max_skip_milestones) == [0.0, 0.1, 0.2, 0.3, 0.4, 0.9]
        assert run_dir.name == f"main-{dataset}"
    assert cfg.optim._target_ == "torch.optim.Adam" and cfg.optim.lr == 1.0e-5
    assert list(cfg.data.clip.crop) == ([465, 465] if paper == "rmnet" else [384, 384])
    if previous is None:
        assert cfg.init_weights is None
    else:  # the main stage starts from the file the static stage writes
        _, previous_dir = compose_recipe(previous, [f"stages_dir={tmp_path}"])
        assert Path(cfg.init_weights) == previous_dir / "checkpoints" / "last.ckpt"
    if paper == "hmmn":  # §4.1: dropout 1 -> 0.5 in pre-training, 0.5 -> 0 in main training
        dropout = cfg.model.schedule.readout_dropout
        expected = (1.0, 0.5) if dataset == "static" else (0.5, 0.0)
        assert (dropout.start, dropout.end) == expected


@pytest.mark.parametrize("name", [name for name in RECIPES if name.startswith("hmmn_")])
def test_hmmn_recipes_are_section_4_1s(name):
    """HMMN §4.1 trains as STM does: plain pixel-wise cross-entropy, Adam at lr 1e-5 (no decay
    stated) and, in main training, three frames in time order whose maximum interval grows from
    0 to 25 skipped frames and never comes back down (not STCN's bootstrapped cross-entropy,
    step decay and 5 -> 25 -> 5 curriculum of stcn_static / stcn_main)."""
    import hydra

    from vos.data.clips import max_skip_at
    from vos.model.loss import bootstrap_fraction

    dataset, _ = RECIPES[name]
    cfg, _ = compose_recipe(name, root_overrides(dataset, *PLACEHOLDERS))
    total = cfg.trainer.max_steps
    boot = cfg.loss.bootstrap
    for step in range(0, total + 1, total // 100):
        fraction = bootstrap_fraction(step, boot.start_step, boot.end_step, boot.end_fraction)
        assert fraction == 1.0, (step, fraction)  # every pixel: plain cross-entropy
    schedule = OmegaConf.to_container(cfg.lr_schedule, resolve=True)
    factor = hydra.utils.instantiate(schedule, total_steps=total, _convert_="all")
    assert {factor(step) for step in range(0, total + 1, total // 100)} == {1.0}
    if dataset == "static":
        return
    clip = cfg.data.clip
    skips = [
        max_skip_at(i / 100, clip.max_skip_values, clip.max_skip_milestones) for i in range(101)
    ]
    assert skips[0] == 1 and skips[-1] == 26  # 0 -> 25 frames skipped between clip frames
    assert skips == sorted(skips) and len(set(skips)) >= 5  # grows gradually, never back down
    assert clip.reverse_prob == 0.0  # STM: "temporally ordered" frames


@pytest.fixture(scope="module")
def recipe_roots(tmp_path_factory) -> tuple[str, str, str]:
    """An image folder, a DAVIS root and a YouTube-VOS root, all tiny."""
    root = tmp_path_factory.mktemp("recipe-data")
    write_image_root(root / "ECSSD", "ecssd")
    export_davis(root / "DAVIS", videos_per_split=2, num_frames=30, height=48, width=64)
    write_youtube_train(root / "YouTube-VOS", videos=2)
    return str(root / "ECSSD"), str(root / "DAVIS"), str(root / "YouTube-VOS")


@pytest.mark.parametrize(
    ("static", "main"), [("stcn_static", "stcn_main"), ("hmmn_static", "hmmn_davis")]
)
def test_recipe_stages_chain_checkpoints(static, main, recipe_roots, tmp_path):
    """The main stage starts from the static stage's weights, found by config alone."""
    tiny = [item for item in TINY if not item.startswith(("dataset.", "checkpoint."))]
    weights = {}
    for seed, stage in enumerate((static, main)):
        cfg, run_dir = compose_recipe(
            stage,
            [
                *tiny,
                *root_overrides(RECIPES[stage][0], *recipe_roots),
                f"stages_dir={tmp_path}",
                f"seed={seed}",  # a fresh network would differ from the previous stage's
                "dataset.short_side=48" if stage == static else "data.val_videos=1",
                "trainer.max_steps=1",
                "+trainer.limit_val_batches=0",
            ],
        )
        metrics = train(cfg, run_dir)
        assert metrics["global_step"] == 1
        checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
        weights[stage] = checkpoint["state_dict"]
    key = "network.decoder.pred.weight"
    change = (weights[main][key] - weights[static][key]).abs().max()
    assert float(change) < 0.01, float(change)


def test_compare_evals_pairs_two_eval_folders_by_video(tmp_path, capsys):
    """`experiments/compare_evals.py`: per video the mean of its objects' (J + F)/2, videos
    weighted by their objects (DAVIS's mean over objects), and the difference to the first
    folder paired by video."""
    import importlib.util

    path = Path(__file__).parents[1] / "experiments" / "compare_evals.py"
    spec = importlib.util.spec_from_file_location("compare_evals", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = {  # video v0 has two objects, v1 one; "b" is "a" + 0.1 on every object
        "a": [("v0_1", 0.5, 0.7), ("v0_2", 0.1, 0.3), ("v1_1", 0.8, 0.8)],
        "b": [("v0_1", 0.6, 0.8), ("v0_2", 0.2, 0.4), ("v1_1", 0.9, 0.9)],
    }
    for name, objects in rows.items():
        (tmp_path / name).mkdir()
        lines = ["Sequence,J-Mean,F-Mean"] + [f"{s},{j},{f}" for s, j, f in objects]
        (tmp_path / name / "per-sequence_results.csv").write_text("\n".join(lines) + "\n")
    names, scores, objects = module.video_scores(tmp_path / "a")
    assert names == ["v0", "v1"] and objects.tolist() == [2.0, 1.0]
    assert scores == pytest.approx([0.4, 0.8])
    module.main([str(tmp_path / "a"), str(tmp_path / "b")])
    out = capsys.readouterr().out
    # J&F over the three objects: (0.6 + 0.2 + 0.8) / 3 = 0.533; b is a + 0.1 everywhere, so
    # every resample of the paired difference is +0.100 (distinguishable: no "≈")
    assert "| a | 1 | 0.533 |" in out and "| b | 1 | 0.633 |" in out
    assert "| +0.100 [+0.100, +0.100] |" in out
    assert "≈" not in out  # the mark's note only under a table that uses it
    module.main([str(tmp_path / "b"), str(tmp_path / "b")])
    out = capsys.readouterr().out
    assert "| ≈ +0.000 [+0.000, +0.000] |" in out and "\n≈: the 95% interval" in out
    with pytest.raises(SystemExit, match="per-sequence_results.csv does not exist"):
        module.video_scores(tmp_path)
    # --factor: only the videos with it (no_<factor>: without), from the first folder's factors
    with pytest.raises(SystemExit, match="factors.json does not exist"):
        module.main([str(tmp_path / "a"), "--factor", "distractors"])
    factors = {"v0": {"distractors": True}, "v1": {"distractors": False}}
    (tmp_path / "a" / "factors.json").write_text(json.dumps(factors))
    module.main([str(tmp_path / "a"), str(tmp_path / "b"), "--factor", "distractors"])
    out = capsys.readouterr().out
    assert "| a | 1 | 0.400 |" in out and "| b | 1 | 0.500 |" in out and "| 1 | 2 |" in out
    module.main([str(tmp_path / "a"), str(tmp_path / "b"), "--factor", "no_distractors"])
    out = capsys.readouterr().out
    assert "| a | 1 | 0.800 |" in out and "| b | 1 | 0.900 |" in out and "| 1 | 1 |" in out
    with pytest.raises(SystemExit, match=r"knows the factors \['distractors'\]"):
        module.main([str(tmp_path / "a"), "--factor", "occlusion"])
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(SystemExit, match="broken.json is not valid JSON"):
        module.main(
            [str(tmp_path / "a"), "--factor", "x", "--factors", str(tmp_path / "broken.json")]
        )


def test_compare_evals_rows_of_seeds(tmp_path, capsys):
    """A row of several seeds (``NAME=DIR,DIR``) averages its seeds per video and its interval
    resamples the seeds: two seeds that disagree widen the difference's interval, which a
    single seed per row cannot show."""
    import importlib.util

    path = Path(__file__).parents[1] / "experiments" / "compare_evals.py"
    spec = importlib.util.spec_from_file_location("compare_evals", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    videos = [f"v{i}" for i in range(6)]
    base = [0.2, 0.4, 0.5, 0.6, 0.7, 0.3]
    shifts = {"a0": 0.0, "b0": 0.1, "b1": 0.3, "odd": 0.0}
    for name, shift in shifts.items():
        (tmp_path / name).mkdir()
        chosen = videos[:-1] if name == "odd" else videos
        lines = ["Sequence,J-Mean,F-Mean"] + [
            f"{v}_1,{base[i] + shift},{base[i] + shift}" for i, v in enumerate(chosen)
        ]
        (tmp_path / name / "per-sequence_results.csv").write_text("\n".join(lines) + "\n")
    a, b0, b1 = (str(tmp_path / n) for n in ("a0", "b0", "b1"))
    assert module.parse_row(f"b={b0},{b1}") == ("b", [Path(b0), Path(b1)])
    assert module.parse_row(a) == ("a0", [Path(a)])
    module.main([a, f"b={b0},{b1}"])
    out = capsys.readouterr().out
    # b's mean is a's + (0.1 + 0.3) / 2; resampling b's two seeds draws +0.1, +0.2 or +0.3
    assert "| b | 2 | " in out and "| +0.200 [+0.100, +0.300] |" in out, out
    module.main([a, b0])
    assert "| +0.100 [+0.100, +0.100] |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="odd and .* were not scored on the same videos"):
        module.main([a, f"b={b0},{tmp_path / 'odd'}"])
    with pytest.raises(SystemExit, match="names no folder"):
        module.main([a, "b="])


def _claims_module():
    import importlib.util

    path = Path(__file__).parents[1] / "experiments" / "claims.py"
    spec = importlib.util.spec_from_file_location("claims", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["claims"] = module  # its dataclasses look their module up while defined
    spec.loader.exec_module(module)
    return module


def _write_claims_spec(path: Path, runs: dict, claims: list) -> Path:
    path.write_text(yaml.safe_dump({"runs": runs, "claims": claims}, allow_unicode=True))
    return path


def test_claims_recipe_is_the_experiments_settings_as_overrides():
    """`--recipe cpu_amx` composes the same config as ``experiment=cpu_amx`` (so a run may
    still pick its own experiment=); a recipe that picks config groups is refused."""
    claims = _claims_module()
    overrides = claims.recipe_overrides("cpu_amx")
    assert compose_config("train", overrides) == compose_config("train", ["experiment=cpu_amx"])
    assert claims.recipe_overrides("none") == []
    with pytest.raises(SystemExit, match="picks config groups"):
        claims.recipe_overrides("lmrc_cpu")
    with pytest.raises(SystemExit, match="no .*nonesuch.yaml"):
        claims.recipe_overrides("nonesuch")


def test_claims_plan_seeds_outermost_and_checks_every_run_first(tmp_path, capsys):
    claims = _claims_module()
    spec = _write_claims_spec(
        tmp_path / "claims.yaml",
        {"base": [], "other": ["model=rmnet"]},
        [{"claim": "other ≥ base", "row": "other", "baseline": "base"}],
    )
    common = ["--spec", str(spec), "--recipe", "none", "--out", str(tmp_path / "out")]
    claims.main(
        [*common, "--dry-run", "--seeds", "0", "1", "--videos", "8", "--", "dataset.height=64"]
    )
    lines = capsys.readouterr().out.splitlines()
    trains = [line for line in lines if " vos.train " in line]
    evals = [line for line in lines if " vos.eval " in line]
    order = [line.split("hydra.run.dir=")[1] for line in trains]
    assert order == [
        str(tmp_path / "out" / "runs" / n) for n in ("base_s0", "other_s0", "base_s1", "other_s1")
    ]
    assert all("dataset/scene=realistic" in line and "resume=auto" in line for line in trains)
    # scoring sees the run's world (scene, frame size) and the val videos asked for
    assert all(
        "dataset/scene=realistic dataset.height=64 dataset.eval.num_videos=8" in e for e in evals
    )
    assert "evals8/other_s1" in evals[-1]
    bad = _write_claims_spec(tmp_path / "bad.yaml", {"base": [], "typo": ["model=nonesuch"]}, [])
    with pytest.raises(SystemExit, match="run typo: model=nonesuch"):
        claims.main(["--spec", str(bad), "--recipe", "none", "--dry-run"])
    wrong = _write_claims_spec(
        tmp_path / "wrong.yaml", {"base": []}, [{"claim": "x", "row": "nope", "baseline": "base"}]
    )
    with pytest.raises(SystemExit, match="row 'nope' is not a run"):
        claims.main(["--spec", str(wrong), "--dry-run"])
    lacking = _write_claims_spec(tmp_path / "lacking.yaml", {"base": []}, [{"claim": "x"}])
    with pytest.raises(SystemExit, match=r"claim 'x' lacks \['baseline', 'row'\]"):
        claims.main(["--spec", str(lacking), "--dry-run"])
    (tmp_path / "empty.yaml").write_text("runs: []\n")
    with pytest.raises(SystemExit, match="empty.yaml: needs `runs:`"):
        claims.main(["--spec", str(tmp_path / "empty.yaml"), "--dry-run"])


def test_claims_table_from_scored_seeds(tmp_path, capsys):
    """The table pools each run's scored seeds, pairs by video, keeps a claim's factor videos,
    and says which claims hold; a claim whose runs are not scored waits. Records that each
    carry their own factors.json (as the driver once wrote them) end up sharing one stored
    file; a claim whose records name different factors is refused."""
    claims = _claims_module()
    spec = _write_claims_spec(
        tmp_path / "claims.yaml",
        {"base": [], "better": ["model=rmnet"], "unrun": ["model=hmmn"]},
        [
            {
                "claim": "better ≥ base on distractors",
                "row": "better",
                "baseline": "base",
                "factor": "distractors",
            },
            {"claim": "base ≥ better (F)", "row": "base", "baseline": "better", "score": "F"},
            {"claim": "unrun ≥ base", "row": "unrun", "baseline": "base"},
        ],
    )
    out = tmp_path / "out"
    videos = [f"v{i}" for i in range(8)]
    for run, shift, overrides in (("base", 0.0, []), ("better", 0.1, ["model=rmnet"])):
        for seed in (0, 1):
            # the record the driver keeps of a scored run (out/scores/<run>_s<seed>/)
            folder = out / "scores" / f"{run}_s{seed}"
            folder.mkdir(parents=True)
            rows = ["Sequence,J-Mean,F-Mean"] + [
                f"{v}_1,{0.3 + 0.05 * i + shift},{0.4 + shift}" for i, v in enumerate(videos)
            ]
            (folder / "per-sequence_results.csv").write_text("\n".join(rows) + "\n")
            factors = {v: {"distractors": i < 4} for i, v in enumerate(videos)}
            (folder / "factors.json").write_text(json.dumps(factors))
            record = {
                "overrides": [*overrides, "dataset/scene=realistic", f"seed={seed}"],
                "videos": 8,
                "fit_s": 100.0 + seed,
                # seed 1 finished by an attempt that resumed another's checkpoint at step 3
                **({"resumed_from_step": 3, "global_step": 8} if seed else {}),
            }
            (folder / "run.json").write_text(json.dumps(record))
    argv = ["--spec", str(spec), "--recipe", "none", "--out", str(out), "--videos", "8"]
    claims.main([*argv, "--seeds", "0", "1", "--dry-run"])
    assert (out / "scores" / "base_s0" / "factors.json").is_file()  # a dry run writes nothing
    capsys.readouterr()
    claims.main([*argv, "--seeds", "0", "1", "--report-only"])
    table = (out / "claims.md").read_text()
    assert capsys.readouterr().out.startswith(table)
    lines = {
        line.split(" |")[0].lstrip("| "): line
        for line in table.splitlines()
        if line.startswith("| ")
    }
    # J and F both +0.1 on every video: the paired difference is +0.100 whatever is resampled
    assert "| 4 | 2 / 2 |" in lines["better ≥ base on distractors (J&F, distractors)"]
    assert (
        "+0.100 [+0.100, +0.100] | holds |"
        in lines["better ≥ base on distractors (J&F, distractors)"]
    )
    assert "-0.100 [-0.100, -0.100] | does not hold |" in lines["base ≥ better (F) (F)"]
    assert "| 0 / 2 |" in lines["unrun ≥ base"] and "waiting for runs" in lines["unrun ≥ base"]
    assert "| base | 2 |" in table and "| 100, 101 (steps 3–8) |" in lines["base"]

    # the four identical copies now one file, each record naming it
    stored = list((out / "factors").iterdir())
    assert len(stored) == 1 and json.loads(stored[0].read_text()) == factors
    for folder in (out / "scores").iterdir():
        assert not (folder / "factors.json").exists()
        assert json.loads((folder / "run.json").read_text())["factors"] == (
            f"factors/{stored[0].name}"
        )
    claims.main([*argv, "--seeds", "0", "1", "--report-only"])
    assert (out / "claims.md").read_text() == table
    # --doc writes the table between a document's markers and leaves the rest as it was
    doc = tmp_path / "doc.md"
    doc.write_text(f"# Doc\n\nbefore\n{claims.DOC_BEGIN}\nstale\n{claims.DOC_END}\nafter\n")
    claims.main([*argv, "--seeds", "0", "1", "--report-only", "--doc", str(doc)])
    claims.main([*argv, "--seeds", "0", "1", "--report-only", "--doc", str(doc)])
    assert doc.read_text() == (
        f"# Doc\n\nbefore\n{claims.DOC_BEGIN}\n{claims.table_body(table)}{claims.DOC_END}\nafter\n"
    )
    assert "stale" not in doc.read_text() and "# Headline" not in doc.read_text()
    doc.write_text("no markers\n")
    with pytest.raises(SystemExit, match="no .* block for the table"):
        claims.main([*argv, "--seeds", "0", "1", "--report-only", "--doc", str(doc)])
    # refused before anything is trained or scored, a missing file by its name
    with pytest.raises(SystemExit, match="no .* block for the table"):
        claims.main([*argv, "--seeds", "0", "1", "--dry-run", "--doc", str(doc)])
    with pytest.raises(SystemExit, match="--doc .*nonesuch.md: no such file"):
        claims.main(
            [*argv, "--seeds", "0", "1", "--dry-run", "--doc", str(tmp_path / "nonesuch.md")]
        )
    # --runs picks what is trained; the table still holds every run's records
    claims.main([*argv, "--seeds", "0", "1", "--runs", "unrun", "base", "--report-only"])
    assert (out / "claims.md").read_text() == table
    capsys.readouterr()
    claims.main([*argv, "--seeds", "0", "1", "--runs", "unrun", "base", "--dry-run"])
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 4 and all("unrun_s" in line for line in printed), printed
    # a baseline scored on other videos' factors cannot be paired by factor
    (out / "scores" / "base_s1" / "factors.json").write_text(json.dumps({"v0": {"x": True}}))
    with pytest.raises(SystemExit, match="name .* as their factors, not one set"):
        claims.main([*argv, "--seeds", "0", "1", "--report-only"])


def test_claims_verdict_says_how_many_samples_an_unresolved_claim_needs():
    """An interval narrows as one over the square root of its samples (seeds x videos): half
    width 3x the difference needs 3**2 = 9 times them to narrow to the difference."""
    from vos.results.intervals import Interval

    claims = _claims_module()

    def diff(value, low, high):
        return Interval(value, low, high, 0.95, "seeds and videos")

    assert claims.verdict(diff(0.05, 0.01, 0.09)) == "holds"
    assert claims.verdict(diff(-0.05, -0.09, -0.01)) == "does not hold"
    assert claims.verdict(diff(0.01, None, None)) == "one video: no interval"
    unresolved = claims.verdict(diff(0.01, -0.02, 0.04))
    assert "half width is 3.0x the difference: about 9x the seeds x videos" in unresolved
    assert "about 16x the seeds" in claims.verdict(diff(-0.01, -0.05, 0.03))
    assert "the difference is 0.000" in claims.verdict(diff(0.0, -0.02, 0.02))
    # a difference printed as -0.000 gets no figure like "356533x", only that it rounds to 0
    tiny = claims.verdict(diff(-0.0003, -0.13, 0.23))
    assert "the difference is 0.000 at the table's precision" in tiny and "x the seeds" not in tiny
    assert "about 4x the seeds" in claims.verdict(diff(0.001, -0.001, 0.003))


def test_benchmarks_holds_the_recorded_claims_table():
    """docs/benchmarks.md's summary of the claims is claims.md's table as recorded, not an
    older copy (`python experiments/claims.py --report-only ... --doc docs/benchmarks.md`)."""
    claims = _claims_module()
    root = Path(__file__).parents[1]
    table = (root / "experiments" / "claims" / "realistic" / "claims.md").read_text()
    doc = (root / "docs" / "benchmarks.md").read_text()
    block = doc.split(claims.DOC_BEGIN + "\n", 1)[1].split(claims.DOC_END, 1)[0]
    assert block == claims.table_body(table)


def test_claims_train_score_and_resume_end_to_end(tmp_path, capsys):
    """Two tiny runs trained and scored through `vos.train` and `vos.eval`, the table written;
    run again, nothing is trained or scored twice."""
    claims = _claims_module()
    spec = _write_claims_spec(
        tmp_path / "claims.yaml",
        {"base": [], "other": ["optim.lr=1e-3"]},
        [{"claim": "other ≥ base", "row": "other", "baseline": "base"}],
    )
    tiny = [o for o in TINY if not o.startswith("logger=")] + ["trainer.max_steps=2"]
    argv = ["--spec", str(spec), "--recipe", "none", "--out", str(tmp_path / "out")]
    argv += ["--scene", "simple", "--seeds", "0", "--videos", "2", "--", *tiny]
    claims.main(argv)
    table = (tmp_path / "out" / "claims.md").read_text()
    assert "| other ≥ base (J&F) | 2 | 1 / 1 |" in table, table
    for run in ("base_s0", "other_s0"):
        assert (
            json.loads((tmp_path / "out" / "runs" / run / "metrics.json").read_text())[
                "global_step"
            ]
            == 2
        )
        assert (tmp_path / "out" / "evals2" / run / "per-sequence_results.csv").is_file()
    record = tmp_path / "out" / "scores" / "other_s0"
    kept = json.loads((record / "run.json").read_text())
    assert kept["overrides"] == ["optim.lr=1e-3", "dataset/scene=simple", *tiny, "seed=0"]
    assert (kept["videos"], kept["global_step"]) == (2, 2) and kept["fit_s"] > 0
    assert kept["resumed_from_step"] == 0  # trained from the start: fit_s is the whole fit
    # the code that trained the run, as its metrics.json says, and the code that recorded it
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert kept["trained_commit"].rstrip("+") == head == kept["commit"].rstrip("+")
    assert (record / "per-sequence_results.csv").read_text() == (
        tmp_path / "out" / "evals2" / "other_s0" / "per-sequence_results.csv"
    ).read_text()
    # the factors once for both runs (the same videos), named by each record
    evaluated = json.loads((tmp_path / "out" / "evals2" / "other_s0" / "factors.json").read_text())
    assert kept["factors"].startswith("factors/") and not (record / "factors.json").exists()
    assert json.loads((tmp_path / "out" / kept["factors"]).read_text()) == evaluated
    assert [p.name for p in (tmp_path / "out" / "factors").iterdir()] == [
        kept["factors"].split("/")[1]
    ]
    capsys.readouterr()
    claims.main(argv)
    assert "claims: training" not in capsys.readouterr().out
    assert (tmp_path / "out" / "claims.md").read_text() == table

    # the record alone (kept in a repository; checkpoints and predictions gone) is enough
    kept_elsewhere = tmp_path / "kept"
    for kept_folder in ("scores", "factors"):
        shutil.copytree(tmp_path / "out" / kept_folder, kept_elsewhere / kept_folder)
    shutil.rmtree(tmp_path / "out")
    claims.main([*argv[: -len(tiny) - 1], "--record", str(kept_elsewhere), "--", *tiny])
    printed = capsys.readouterr().out
    assert "claims: training" not in printed and "claims: scoring" not in printed
    assert not (tmp_path / "out" / "runs").exists()
    assert "| other ≥ base (J&F) | 2 | 1 / 1 |" in (kept_elsewhere / "claims.md").read_text()

    # a run redefined since it was recorded is refused, naming the record, not silently reused
    _write_claims_spec(
        spec,
        {"base": [], "other": ["optim.lr=2e-3"]},
        [{"claim": "other ≥ base", "row": "other", "baseline": "base"}],
    )
    with pytest.raises(SystemExit, match=r"other_s0/run.json records `optim.lr=1e-3"):
        claims.main([*argv[: -len(tiny) - 1], "--record", str(kept_elsewhere), "--", *tiny])


def test_claims_refuses_a_run_folder_trained_with_other_overrides(tmp_path):
    """A run folder Hydra says was trained with other overrides (the run's definition changed
    in claims.yaml) is neither resumed nor trusted as finished."""
    claims = _claims_module()
    spec = _write_claims_spec(
        tmp_path / "claims.yaml",
        {"base": []},
        [{"claim": "base ≥ base", "row": "base", "baseline": "base"}],
    )
    run_dir = tmp_path / "out" / "runs" / "base_s0"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({"global_step": 10**6}))
    argv = ["--spec", str(spec), "--recipe", "none", "--out", str(tmp_path / "out")]
    argv += ["--seeds", "0", "--dry-run"]
    stored = ["dataset/scene=realistic", "seed=0", "logger=csv", "resume=auto"]
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(stored))
    claims.main(argv)  # the same overrides: finished, nothing to train
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["model=rmnet", *stored]))
    with pytest.raises(SystemExit, match=r"base_s0 was trained with `model=rmnet"):
        claims.main(argv)

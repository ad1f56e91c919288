"""vos.report: run folders -> one markdown table, a row per config (its seeds pooled) with a
bootstrap interval, differences to a baseline, the paper's numbers where rows match."""

import json
import os
import sys

import numpy as np
import pytest
import yaml

from vos.config import EXPERIMENTS_DIR
from vos.results.figures import save_figure
from vos.results.runs import find_runs, group_by_seed, row_labels
from vos.results.tables import markdown_table

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# per-video J&F that vary a lot across videos
SPREAD = np.linspace(0.3, 0.9, 20)
VIDEOS = [f"video{i:02d}" for i in range(len(SPREAD))]


def _run(folder, overrides, jf=None, distractors=None, per_video=None, videos=VIDEOS, fps=None):
    """A run folder; ``per_video`` (one J&F per video, one object each) sets the run's J&F."""
    folder.mkdir(parents=True)
    if per_video is not None:
        jf = float(np.mean(per_video))
    metrics = {"val/J&F-Mean": jf, "val/J-Mean": jf - 0.02, "val/F-Mean": jf + 0.02}
    if distractors is not None:
        metrics["val/J&F-Mean/distractors"] = distractors
    if fps is not None:
        metrics["val/fps"] = fps
    metrics["params_m"] = 8.25
    if per_video is not None:
        metrics["per_video"] = [
            {"video": video, "objects": 1, "J&F-Mean": float(score), "distractors": None}
            for video, score in zip(videos, per_video)
        ]
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))


def _rows(table):
    """The table's rows as lists of cells (header and separator left out)."""
    lines = [line for line in table.splitlines() if line.startswith("| ")][1:]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def _column(table, name):
    header = [cell.strip() for cell in table.splitlines()[0].strip("|").split("|")]
    return [row[header.index(name)] for row in _rows(table)]


@pytest.fixture
def sweep(tmp_path):
    common = ["experiment=rmnet_table5", "logger=csv"]
    _run(tmp_path / "0", [*common, "model.reader.memory_region=false"], 0.8, 0.7)
    _run(tmp_path / "1", [*common, "model.reader.memory_region=true"], 0.75)
    return tmp_path


def test_table_of_a_sweep_matches_the_golden_one(sweep, tmp_path):
    """The sweep's metrics.json predate per-video scores: one seed each, so no interval, and a
    note says why."""
    paper = [
        {"match": {"model.reader.memory_region": False}, "J&F": 0.818},
        {"match": {"model.reader.memory_region": True}, "J&F": 0.835},
    ]
    table = markdown_table(find_runs([sweep]), paper)
    assert table.splitlines() == [
        "| run | paper J&F | J&F | 95% CI | seeds | videos | J | F | J&F distractors | fps "
        "| read ms/frame | params (M) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        "| model.reader.memory_region=false | 0.818 | 0.800 | none | 1 | – | 0.780 | 0.820 "
        "| 0.700 |  |  | 8.250 |",
        "| model.reader.memory_region=true | 0.835 | 0.750 | none | 1 | – | 0.730 | 0.770 "
        "|  |  |  | 8.250 |",
        "",
        "–: no per-video scores in the row's metrics.json (written before vos.train stored "
        "them): its interval resamples seeds only, and one seed has none.",
    ]


def test_labels_name_only_what_differs(sweep):
    assert row_labels(find_runs([sweep])) == [
        "model.reader.memory_region=false",
        "model.reader.memory_region=true",
    ]


def test_cli_writes_the_table_and_names_bad_folders(sweep, tmp_path, run_python_m):
    out = tmp_path / "table.md"
    paper = "experiments/rmnet/paper.yaml"
    result = run_python_m(
        [sys.executable, "-m", "vos.report", str(sweep), "--paper", paper, "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert out.read_text().strip() == result.stdout.strip()
    assert (tmp_path / "table.png").read_bytes().startswith(PNG_SIGNATURE)  # beside --out
    figure = tmp_path / "figures" / "sweep.png"
    result = run_python_m(
        [sys.executable, "-m", "vos.report", str(sweep), "--figure", str(figure)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert figure.read_bytes().startswith(PNG_SIGNATURE)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_python_m(
        [sys.executable, "-m", "vos.report", str(empty)], capture_output=True, text=True
    )
    assert result.returncode != 0 and "no metrics.json" in result.stderr


@pytest.mark.parametrize(
    "paper_file", sorted(EXPERIMENTS_DIR.glob("*/paper.yaml")), ids=lambda path: path.parent.name
)
def test_paper_files_load(paper_file):
    from vos.results.tables import load_paper

    entries = load_paper(paper_file)
    assert entries and all("match" in e and 0 < e["J&F"] < 1 for e in entries)


def test_figure_is_a_png_with_a_scatter_and_a_bar_per_row(sweep, tmp_path):
    from PIL import Image

    runs = find_runs([sweep])
    for index, run in enumerate(runs):
        run.metrics["val/read_ms_per_frame"] = 1.5 + index
    paper = [{"match": {"model.reader.memory_region": True}, "label": "regional", "J&F": 0.835}]
    path = save_figure(runs, tmp_path / "out" / "figure.png", paper, title="fixture")
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG" and image.size[0] > 600 and image.size[1] > 300


def test_seeds_of_one_config_are_one_row(tmp_path):
    for seed in range(3):
        _run(
            tmp_path / f"stm{seed}",
            ["model=stm", f"seed={seed}", "logger=csv"],
            per_video=SPREAD + 0.01 * seed,
            fps=10.0 + seed,
        )
    _run(tmp_path / "hmmn0", ["model=hmmn", "seed=0"], per_video=SPREAD)
    runs = find_runs([tmp_path])
    groups = group_by_seed(runs)
    assert [len(group.runs) for group in groups] == [1, 3]  # folders in sorted order
    assert row_labels(groups) == ["model=hmmn", "model=stm"]
    table = markdown_table(runs)
    assert _column(table, "run") == ["model=hmmn", "model=stm"]
    assert _column(table, "seeds") == ["1", "3"]
    assert _column(table, "videos") == ["20", "20"]
    assert _column(table, "fps") == ["", "11.000"]  # the mean over the group's runs
    jf = float(np.mean(SPREAD)) + 0.01
    assert _column(table, "J&F")[1] == f"{jf:.3f}"
    low, high = (float(x) for x in _column(table, "95% CI")[1].strip("[]").split(","))
    assert low < jf < high


def test_a_single_config_with_seeds_is_named_by_its_overrides_not_its_seeds(tmp_path):
    for seed in range(2):
        _run(tmp_path / str(seed), ["model=stm", f"seed={seed}"], per_video=SPREAD)
    runs = find_runs([tmp_path])
    assert row_labels(group_by_seed(runs)) == ["model=stm"]
    assert row_labels(runs) == ["model=stm", "model=stm"]  # runs too: the seed is no name


def test_runs_of_the_defaults_are_named_and_pooled_by_their_config_group_choices(tmp_path):
    """A run of the defaults (no override; Hydra records ``model: stm`` among its choices) and
    one that names ``model=stm`` with another seed are one config, named ``model=stm`` beside
    ``model=hmmn``, so ``--baseline model=stm`` finds it."""

    def choices(folder, **groups):
        chosen = {"experiment": None, "logger": "csv", "hydra/launcher": "basic", **groups}
        hydra = {"hydra": {"runtime": {"choices": chosen}}}
        (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))

    _run(tmp_path / "defaults", [], per_video=SPREAD)
    choices(tmp_path / "defaults", model="stm")
    _run(tmp_path / "stm1", ["model=stm", "seed=1", "logger=csv"], per_video=SPREAD + 0.01)
    choices(tmp_path / "stm1", model="stm")
    _run(tmp_path / "hmmn", ["model=hmmn"], per_video=SPREAD + 0.05)
    choices(tmp_path / "hmmn", model="hmmn")
    groups = group_by_seed(find_runs([tmp_path]))
    assert row_labels(groups) == ["model=stm", "model=hmmn"]
    assert [len(group.runs) for group in groups] == [2, 1]
    table = markdown_table(find_runs([tmp_path]), baseline="model=stm")
    assert _column(table, "seeds") == ["2", "1"]
    (tmp_path / "hmmn" / ".hydra" / "hydra.yaml").write_text("hydra: [unclosed")
    with pytest.raises(ValueError, match="hydra.yaml: cannot read its config-group choices"):
        find_runs([tmp_path])


def _seeds(folder, model, shift, seeds=3, seed_step=0.002):
    for seed in range(seeds):
        per_video = SPREAD + shift + seed_step * (seed - 1)
        _run(folder / f"{model}{seed}", [f"model={model}", f"seed={seed}"], per_video=per_video)


def test_rows_within_the_noise_of_the_baseline_are_marked(tmp_path):
    _seeds(tmp_path, "stm", 0.0)
    _seeds(tmp_path, "hmmn", 0.01)  # better on every video
    _seeds(tmp_path, "rmnet", 0.0, seed_step=0.03)  # the seeds spread more than it gains
    table = markdown_table(find_runs([tmp_path]), baseline="stm")
    delta = dict(zip(_column(table, "run"), _column(table, "Δ vs baseline [95% CI]")))
    assert delta["model=stm"] == "baseline"
    assert delta["model=hmmn"].startswith("+0.010 [+0.0")  # the interval excludes 0
    assert delta["model=rmnet"].startswith("≈ ")
    notes = [line for line in table.splitlines() if line.startswith("≈")]
    assert len(notes) == 1 and "not distinguishable" in notes[0]


def test_no_marks_without_rows_in_the_noise(tmp_path):
    _seeds(tmp_path, "stm", 0.0)
    _seeds(tmp_path, "hmmn", 0.01)
    table = markdown_table(find_runs([tmp_path]), baseline="stm")
    assert "≈" not in table and "not distinguishable" not in table


def test_rows_scored_on_other_videos_than_the_baseline_are_an_error(tmp_path):
    _run(tmp_path / "stm", ["model=stm"], per_video=SPREAD)
    other = [*VIDEOS[:-1], "elsewhere"]
    _run(tmp_path / "hmmn", ["model=hmmn"], per_video=SPREAD, videos=other)
    with pytest.raises(ValueError, match="model=hmmn and model=stm.*elsewhere.*video19"):
        markdown_table(find_runs([tmp_path]), baseline="stm")


def test_old_metrics_without_per_video_pool_seeds_only(tmp_path):
    for seed, jf in enumerate([0.70, 0.72, 0.74]):
        _run(tmp_path / f"old{seed}", ["model=stm", f"seed={seed}"], jf)
    _run(tmp_path / "new", ["model=hmmn"], per_video=SPREAD)
    table = markdown_table(find_runs([tmp_path]), baseline="stm")
    rows = dict(zip(_column(table, "run"), _rows(table)))
    assert rows["model=stm"][1:5] == ["0.720", rows["model=stm"][2], "3", "–"]
    low, high = (float(x) for x in rows["model=stm"][2].strip("[]").split(","))
    assert 0.70 <= low < 0.72 < high <= 0.74  # the seeds' spread
    assert "interval resamples seeds only" in table
    # against a row without per-video scores: the runs' J&F, seeds only; one seed has none
    assert _column(table, "Δ vs baseline [95% CI]")[0].endswith("(no interval)")


def test_baseline_must_name_one_row(sweep, run_python_m):
    for baseline, found in (("nothing", "no row"), ("memory_region", "2 rows")):
        result = run_python_m(
            [sys.executable, "-m", "vos.report", str(sweep), "--baseline", baseline],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 1
        assert found in result.stderr and "model.reader.memory_region=true" in result.stderr


def test_cli_options_set_the_level_and_the_baseline(tmp_path, run_python_m):
    _seeds(tmp_path, "stm", 0.0)
    _seeds(tmp_path, "hmmn", 0.01)
    result = run_python_m(
        [
            sys.executable,
            "-m",
            "vos.report",
            str(tmp_path),
            "--baseline",
            "stm",
            "--level",
            "0.9",
            "--resamples",
            "500",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "| 90% CI |" in result.stdout and "Δ vs baseline [90% CI]" in result.stdout


def test_paper_entries_match_a_group_of_seeds(tmp_path):
    _seeds(tmp_path, "stm", 0.0)
    paper = [{"match": {"model": "stm"}, "J&F": 0.791}]
    assert _column(markdown_table(find_runs([tmp_path]), paper), "paper J&F") == ["0.791"]


def test_figure_draws_the_intervals_as_error_bars(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    _seeds(tmp_path / "runs", "stm", 0.0)
    _run(tmp_path / "runs" / "old", ["model=hmmn"], 0.7)  # one seed, no per-video: no bar
    drawn = []
    errorbar = Axes.errorbar

    def recording(self, x, y, *args, **kwargs):
        drawn.append(kwargs.get("xerr", kwargs.get("yerr")))
        return errorbar(self, x, y, *args, **kwargs)

    monkeypatch.setattr(Axes, "errorbar", recording)
    for run in (runs := find_runs([tmp_path / "runs"])):
        run.metrics["val/read_ms_per_frame"] = 1.5
    path = save_figure(runs, tmp_path / "figure.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert len(drawn) == 2  # the stm row, in both panels
    below, above = (float(side[0]) for side in drawn[0])
    assert below > 0 and above > 0


def _config(folder, seed, mtime):
    """The run's resolved config as Hydra writes it (only ``seed`` matters here), and when
    its metrics.json was written."""
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "x": 7}))
    os.utime(folder / "metrics.json", (mtime, mtime))


def test_runs_with_the_same_resolved_seed_count_once(tmp_path, run_python_m):
    """Reruns of one config with its default seed (no seed override) and ``seed=0`` written
    out are one seed; the latest run is kept and the others are named in a warning."""
    _run(tmp_path / "a", ["model=stm"], per_video=SPREAD)
    _config(tmp_path / "a", 0, 1000)
    _run(tmp_path / "b", ["model=stm", "seed=0"], per_video=SPREAD + 0.05)
    _config(tmp_path / "b", 0, 3000)  # the latest of seed 0
    _run(tmp_path / "c", ["model=stm"], per_video=SPREAD - 0.1)
    _config(tmp_path / "c", 0, 2000)
    _run(tmp_path / "d", ["model=stm", "seed=1"], per_video=SPREAD + 0.03)
    _config(tmp_path / "d", "${x}", 1000)  # Hydra writes config.yaml unresolved
    runs = find_runs([tmp_path])
    assert [run.seed for run in runs] == ["0", "0", "0", "7"]
    (group,) = group_by_seed(runs)
    assert [run.folder.name for run in group.runs] == ["b", "d"]
    (duplicate,) = group.duplicates
    assert duplicate.kept.folder.name == "b"
    assert [run.folder.name for run in duplicate.left_out] == ["a", "c"]
    table = markdown_table(runs)
    assert _column(table, "seeds") == ["2"]
    assert _column(table, "J&F") == [f"{float(np.mean(SPREAD)) + 0.04:.3f}"]
    result = run_python_m([sys.executable, "-m", "vos.report", str(tmp_path)])
    assert result.returncode == 0, result.stderr
    (warning,) = [line for line in result.stderr.splitlines() if "warning" in line]
    assert "seed 0 was run 3 times" in warning
    assert f"kept the latest, {tmp_path / 'b'}" in warning
    assert f"left out {tmp_path / 'a'}, {tmp_path / 'c'}" in warning


def test_runs_without_a_known_seed_are_kept(tmp_path):
    """Without config.yaml or a seed override nothing shows two runs share a seed."""
    _run(tmp_path / "a", ["model=stm"], per_video=SPREAD)
    _run(tmp_path / "b", ["model=stm"], per_video=SPREAD + 0.01)
    (group,) = group_by_seed(find_runs([tmp_path]))
    assert len(group.runs) == 2 and group.duplicates == []

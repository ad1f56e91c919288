"""vos.report: run folders -> one markdown table, with the paper's numbers where rows match."""

import json
import sys

import pytest
import yaml

from vos.config import EXPERIMENTS_DIR
from vos.results.figures import save_figure
from vos.results.runs import find_runs, row_labels
from vos.results.tables import markdown_table

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run(folder, overrides, jf, distractors=None):
    folder.mkdir(parents=True)
    metrics = {"val/J&F-Mean": jf, "val/J-Mean": jf - 0.02, "val/F-Mean": jf + 0.02}
    if distractors is not None:
        metrics["val/J&F-Mean/distractors"] = distractors
    metrics["params_m"] = 8.25
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))


@pytest.fixture
def sweep(tmp_path):
    common = ["experiment=rmnet_table5", "logger=csv"]
    _run(tmp_path / "0", [*common, "model.reader.memory_region=false"], 0.8, 0.7)
    _run(tmp_path / "1", [*common, "model.reader.memory_region=true"], 0.75)
    return tmp_path


def test_table_of_a_sweep_matches_the_golden_one(sweep, tmp_path):
    paper = [
        {"match": {"model.reader.memory_region": False}, "J&F": 0.818},
        {"match": {"model.reader.memory_region": True}, "J&F": 0.835},
    ]
    table = markdown_table(find_runs([sweep]), paper)
    assert table.splitlines() == [
        "| run | paper J&F | J&F | J | F | J&F distractors | fps | read ms/frame | params (M) |",
        "|---|---|---|---|---|---|---|---|---|",
        "| model.reader.memory_region=false | 0.818 | 0.800 | 0.780 | 0.820 | 0.700 |  |  | 8.250 |",
        "| model.reader.memory_region=true | 0.835 | 0.750 | 0.730 | 0.770 |  |  |  | 8.250 |",
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

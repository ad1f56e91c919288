"""vos.ablate: a paper's sweeps -> experiments/<paper>/results.md and results.png (here a
one-step run of RMNet's Table 5 into a temporary folder)."""

import datetime
import subprocess
from pathlib import Path

import pytest
from helpers import TINY
from test_experiments import sweep_rows

from vos.config import CONFIG_DIR
from vos.results.ablation import ablate, find_ablations
from vos.results.tables import load_paper

ABLATIONS = find_ablations()

ROOT = Path(__file__).resolve().parents[1]
# TINY's network and data, the step budget and logger left to vos.ablate's options
QUICK = [o for o in TINY if not o.startswith(("trainer.max_steps", "trainer.val_check", "logger"))]


def test_quick_ablation_writes_the_table_and_the_figure(tmp_path):
    markdown, figure = ablate(
        "rmnet",
        steps=1,
        videos=1,
        sweep_root=tmp_path / "sweeps",
        results_dir=tmp_path / "results",
        extra=QUICK,
        argv=["rmnet", "--steps", "1", "--videos", "1"],
    )
    assert markdown == tmp_path / "results" / "results.md"
    assert figure.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    text = markdown.read_text()
    lines = text.splitlines()
    assert lines[0].startswith("# RMNet Table 5")
    assert lines[2].startswith("`python -m vos.ablate rmnet --steps 1 --videos 1`, ")
    assert datetime.date.today().isoformat() in lines[2]
    assert "python -m vos.train -m experiment=rmnet_table5 logger=csv trainer.max_steps=1" in text
    rows = [line for line in lines if line.startswith("| model.reader.")]
    assert len(rows) == 4  # Table 5: memory region x query region
    # every row found its paper number
    assert sorted(row.split(" | ")[1] for row in rows) == ["0.818", "0.822", "0.828", "0.835"]
    assert "![" in lines[-1] and "(results.png)" in lines[-1]
    assert len(list((tmp_path / "sweeps" / "rmnet" / "rmnet_table5").glob("*/metrics.json"))) == 4


def test_ablations_are_found_from_their_files(tmp_path):
    """No list in the code names the readers: a folder with an ablation.yaml is an ablation."""
    assert {"rmnet", "hmmn", "lcm", "lmrc"} <= set(ABLATIONS)
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "ablation.yaml").write_text(
        "title: Toy Table 1\ntables: [toy_table1]\nsteps: 3\nvideos: 2\n"
    )
    (tmp_path / "notes").mkdir()  # a folder without the file is not an ablation
    found = find_ablations(tmp_path)
    assert list(found) == ["toy"]
    assert found["toy"].tables == ("toy_table1",) and found["toy"].steps == 3
    (tmp_path / "toy" / "ablation.yaml").write_text("title: Toy\n")
    with pytest.raises(ValueError, match="lacks"):
        find_ablations(tmp_path)


@pytest.mark.parametrize("paper", sorted(ABLATIONS))
def test_every_row_of_each_ablation_has_a_paper_number(paper):
    entries = load_paper(ROOT / "experiments" / paper / "paper.yaml")
    for table in ABLATIONS[paper].tables:
        assert (CONFIG_DIR / "experiment" / f"{table}.yaml").is_file()
        for row in sweep_rows(table):
            overrides = dict(o.split("=", 1) for o in row)
            matched = [
                e
                for e in entries
                if all(
                    str(overrides.get(k, "")).lower() == str(v).lower()
                    for k, v in e["match"].items()
                )
            ]
            assert matched, (table, row)


def test_make_ablate_calls_vos_ablate():
    result = subprocess.run(
        ["make", "-n", "ablate", "PAPER=lmrc", "STEPS=3", "ABLATE_ARGS=--videos 2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "-m vos.ablate lmrc --steps 3 --videos 2" in result.stdout
    result = subprocess.run(["make", "-n", "ablate"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and "PAPER is required" in result.stderr

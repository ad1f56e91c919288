"""vos.ablate: a paper's sweeps -> experiments/<paper>/results.md and results.png (here a
one-step run of RMNet's Table 5 into a temporary folder)."""

import dataclasses
import datetime
import json
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import TINY
from test_experiments import sweep_rows

from vos.config import CONFIG_DIR
from vos.results.ablation import (
    ablate,
    check_main,
    find_ablations,
    main_comparison,
    set_aside_if_different,
)
from vos.results.runs import find_runs
from vos.results.tables import load_paper

ABLATIONS = find_ablations()

ROOT = Path(__file__).resolve().parents[1]
# TINY's network and data, the step budget and logger left to vos.ablate's options
QUICK = [o for o in TINY if not o.startswith(("trainer.max_steps", "trainer.val_check", "logger"))]


@pytest.mark.slow  # 30 s: trains every row of a table; the pieces are tested below
def test_quick_ablation_writes_the_table_and_the_figure(tmp_path, capfd):
    arguments = dict(
        steps=1,
        videos=2,
        seeds=(0,),
        sweep_root=tmp_path / "sweeps",
        results_dir=tmp_path / "results",
        extra=QUICK,
        argv=["rmnet", "--steps", "1", "--videos", "2", "--seeds", "0"],
    )
    markdown, figure = ablate("rmnet", **arguments)
    assert markdown == tmp_path / "results" / "results.md"
    assert figure.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    text = markdown.read_text()
    lines = text.splitlines()
    assert lines[0].startswith("# RMNet Table 5")
    assert lines[2].startswith("`python -m vos.ablate rmnet --steps 1 --videos 2 --seeds 0`, ")
    assert datetime.date.today().isoformat() in lines[2]
    assert "python -m vos.train -m experiment=rmnet_table5 logger=csv trainer.max_steps=1" in text
    assert "data.val_videos=2 resume=auto" in text
    rows = [line for line in lines if line.startswith("| model.reader.")]
    assert len(rows) == 4  # Table 5: memory region x query region
    # every row found its paper number
    assert sorted(row.split(" | ")[1] for row in rows) == ["0.818", "0.822", "0.828", "0.835"]
    assert "![" in lines[-1] and "(results.png)" in lines[-1]
    sweep = tmp_path / "sweeps" / "rmnet" / "rmnet_table5"
    assert len(list(sweep.glob("*/metrics.json"))) == 4
    main = next(line for line in lines if line.startswith("**Main comparison**"))
    assert "regional/regional minus Table 5: global/global" in main and "1 seed x 2 videos" in main
    assert "`rmnet_table5` " in text and " in all" in capfd.readouterr().out

    # the same command again resumes: every job had finished, so nothing is trained again
    written = {p: p.stat().st_mtime_ns for p in sweep.glob("*/checkpoints/last.ckpt")}
    ablate("rmnet", **arguments)
    assert capfd.readouterr().out.count("nothing to do") == 4
    assert {p: p.stat().st_mtime_ns for p in sweep.glob("*/checkpoints/last.ckpt")} == written


def _fake_run(folder, overrides, seed, per_video):
    folder.mkdir(parents=True)
    rows = [
        {"video": f"v{i}", "objects": 1, "J&F-Mean": float(score)}
        for i, score in enumerate(per_video)
    ]
    metrics = {"val/J&F-Mean": float(np.mean(per_video)), "per_video": rows}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*overrides, f"seed={seed}"]))


@pytest.mark.parametrize("gap, noise, resolved", [(0.05, 0.002, True), (0.004, 0.05, False)])
def test_main_comparison_says_whether_the_budget_resolves_the_papers_difference(
    tmp_path, gap, noise, resolved
):
    """RMNet's main comparison (paper: +0.017) on fake runs: 3 seeds x 12 videos whose
    regional rows beat the global rows by ``gap`` on every video, with a video-to-video spread
    that the paired interval cancels and a run-to-run ``noise`` that it cannot."""
    rng = np.random.default_rng(0)
    videos = rng.uniform(0.4, 0.9, 12)
    regional = ["model.reader.memory_region=true", "model.reader.query_region=true"]
    global_ = ["model.reader.memory_region=false", "model.reader.query_region=false"]
    for seed in range(3):
        _fake_run(tmp_path / f"r{seed}", regional, seed, videos + gap + rng.normal(0, noise, 12))
        _fake_run(tmp_path / f"g{seed}", global_, seed, videos + rng.normal(0, noise, 12))
    runs = find_runs([tmp_path])
    entries = load_paper(ROOT / "experiments" / "rmnet" / "paper.yaml")
    text = " ".join(main_comparison(ABLATIONS["rmnet"], runs, entries))
    assert "the paper +0.017" in text and "3 seeds x 12 videos" in text
    measured = float(re.search(r"here ([+-][0-9.]+)", text).group(1))
    assert abs(measured - gap) < 3 * noise
    if resolved:
        assert "resolves the comparison; the sign agrees with the paper" in text
    else:
        assert "cannot resolve it" in text and "x the seeds x videos" in text
    # a row missing from the runs is said, not invented
    only_global = [run for run in runs if run.overrides["model.reader.memory_region"] == "false"]
    text = " ".join(main_comparison(ABLATIONS["rmnet"], only_global, entries))
    assert "not measured (no finished runs for Table 5: regional/regional)" in text


@pytest.mark.parametrize("paper", sorted(ABLATIONS))
def test_each_main_comparison_names_two_paper_rows(paper):
    check_main(paper, ABLATIONS[paper])
    wrong = dataclasses.replace(ABLATIONS[paper], main=("No such row", "GRM"))
    with pytest.raises(ValueError, match="main names 'No such row'"):
        check_main(paper, wrong)


def test_a_sweep_with_other_settings_is_set_aside_not_deleted(tmp_path):
    sweep = tmp_path / "rmnet_table5"
    (sweep / "0-run").mkdir(parents=True)
    (sweep / "0-run" / "metrics.json").write_text("{}")
    (sweep / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task: [experiment=rmnet_table5, trainer.max_steps=5]\n"
    )
    same = ["-m", "vos.train", "-m", "experiment=rmnet_table5", "trainer.max_steps=5"]
    set_aside_if_different(sweep, [*same, f"hydra.sweep.dir={sweep}"])
    assert (sweep / "0-run" / "metrics.json").is_file()  # same settings: resumed in place
    other = ["-m", "vos.train", "-m", "experiment=rmnet_table5", "trainer.max_steps=6"]
    set_aside_if_different(sweep, other)
    assert not sweep.exists()
    (aside,) = tmp_path.glob("rmnet_table5.replaced-*")
    assert (aside / "0-run" / "metrics.json").read_text() == "{}"


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


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit])  # Ctrl-C; SIGTERM's handler
def test_a_stopped_sweep_still_counts_its_minutes(tmp_path, monkeypatch, stop):
    def stopped(*args, **kwargs):
        raise stop

    monkeypatch.setattr(subprocess, "run", stopped)
    with pytest.raises(stop):
        ablate("rmnet", steps=1, videos=1, seeds=(0,), sweep_root=tmp_path)
    minutes = json.loads((tmp_path / "rmnet" / "minutes.json").read_text())
    assert set(minutes) == set(ABLATIONS["rmnet"].tables)
    assert all(value >= 0 for value in minutes.values())


def test_vos_ablate_turns_sigterm_into_an_unwinding_exit(capsys):
    import os
    import signal

    from vos.cli.ablate import main

    before = signal.getsignal(signal.SIGTERM)
    try:
        main(["rmnet", "--dry-run"])
        with pytest.raises(SystemExit):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
    finally:
        signal.signal(signal.SIGTERM, before)

"""Each paper's headline claim, measured: train every run of ``experiments/claims.yaml`` for
each seed, score it on the val videos, and compare the claims' rows, each pooled over its
seeds and paired by video:
``python experiments/claims.py [--scene realistic] [--seeds 0 1 2] [--videos 96]``.

Runs go one seed at a time (every run's seed 0 before any seed 1), so a partial table already
holds every claim. Everything resumes: a run whose ``metrics.json`` reached its steps is left
as it is, a killed one continues from its ``last.ckpt`` (``resume=auto``), a scored one is not
scored again; after each score the table (``OUT/claims.md``) is written anew, and
``--report-only`` rebuilds it from what has finished; ``--doc FILE`` also writes it into a
Markdown file, between the file's ``DOC_BEGIN`` and ``DOC_END`` lines. ``--dry-run`` prints
the commands.

Layout under ``--out`` (default ``outputs/claims/<scene>``): ``runs/<run>_s<seed>/`` (the
training run) and ``evals<videos>/<run>_s<seed>/`` (`vos.eval`'s predictions and CSVs). What
the table is built from goes under ``--record`` (default ``--out``): ``scores/<run>_s<seed>/``,
a scored run's per-video CSV and ``run.json`` (its overrides, steps, fit time, the commits
that trained and recorded it, and which ``factors/<digest>.json`` holds its videos' factors:
every run scored on the same videos shares one file), a few kilobytes that can be kept in the repository
(``experiments/claims/<scene>/``) while checkpoints and predictions cannot; and ``claims.md``.
A recorded run is neither trained nor scored again, even where its run folder is gone; a
record or run folder made with other overrides than the run's now is refused, naming it.

The budget is ``--recipe``: ``auto`` (the default) is `make train`'s, ``experiment=cpu_amx``'s
settings where oneDNN may use AMX tiles and the fp32 defaults elsewhere; ``none`` the fp32
defaults; any other name, that ``conf/experiment/<name>.yaml``'s settings. The recipe is given
as plain overrides so that a run may still pick its own ``experiment=``. Overrides after
``--`` go to every run (e.g. ``-- trainer.max_steps=500``).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from compare_evals import factor_videos, row_scores  # noqa: E402

from vos.files import staged_folder, write_json_atomic, write_text_atomic  # noqa: E402
from vos.provenance import source_commit  # noqa: E402

HERE = Path(__file__).parent
SCORES = ("J&F", "J", "F")
# overrides that pick the world a run trains on, which its scoring must see too
DATASET_KEYS = ("dataset", "dataset/scene")
# what the table reads from a scored run (`vos.metrics.files`' names), and the record's own file
RECORDED_FILES = ("per-sequence_results.csv", "global_results.csv")
RECORD_FILE = "run.json"
# the scored videos' factors (`vos.eval`'s), kept once per set of videos under --record
FACTORS_FILE = "factors.json"
FACTORS_FOLDER = "factors"
# what train_command adds to a run's overrides (Hydra keeps them in .hydra/overrides.yaml)
TRAIN_EXTRAS = ("logger=csv", "resume=auto")
# where --doc copies the table to in a document (the doc's own summary, kept equal to claims.md)
DOC_BEGIN = "<!-- experiments/claims.py --doc: begin -->"
DOC_END = "<!-- experiments/claims.py --doc: end -->"


@dataclass(frozen=True)
class Claim:
    claim: str
    row: str
    baseline: str
    factor: str | None = None
    score: str = "J&F"


def load_spec(path: Path) -> tuple[dict[str, list[str]], list[Claim]]:
    """The runs (name -> overrides) and the claims of a claims file, checked."""
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise SystemExit(f"cannot read {path}: {error}") from error
    if not isinstance(spec, dict) or not isinstance(spec.get("runs"), dict):
        raise SystemExit(f"{path}: needs `runs:` (name -> list of overrides) and `claims:`")
    if not isinstance(spec.get("claims"), list):
        raise SystemExit(f"{path}: needs `claims:`, a list of {{claim, row, baseline}} entries")
    runs = {
        str(name): [str(o) for o in (overrides or [])] for name, overrides in spec["runs"].items()
    }
    claims = []
    for entry in spec["claims"]:
        unknown = set(entry) - {"claim", "row", "baseline", "factor", "score"}
        if unknown:
            raise SystemExit(
                f"{path}: claim {entry.get('claim')!r} has unknown keys {sorted(unknown)}"
            )
        missing = {"claim", "row", "baseline"} - set(entry)
        if missing:
            raise SystemExit(f"{path}: claim {entry.get('claim')!r} lacks {sorted(missing)}")
        claim = Claim(**entry)
        for key in ("row", "baseline"):
            if getattr(claim, key) not in runs:
                raise SystemExit(
                    f"{path}: claim {claim.claim!r}: {key} {getattr(claim, key)!r} is not a run "
                    f"(runs: {sorted(runs)})"
                )
        if claim.score not in SCORES:
            raise SystemExit(f"{path}: claim {claim.claim!r}: score must be one of {SCORES}")
        claims.append(claim)
    return runs, claims


def recipe_overrides(recipe: str) -> list[str]:
    """The overrides of ``--recipe`` (see the module)."""
    if recipe == "auto":
        from vos.inference.precision import cpu_has_usable_amx

        recipe = "cpu_amx" if cpu_has_usable_amx() else "none"
    if recipe == "none":
        return []
    from omegaconf import OmegaConf

    from vos.config import CONFIG_DIR

    path = CONFIG_DIR / "experiment" / f"{recipe}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise SystemExit(f"--recipe {recipe}: no {path} (auto, none, or one of {known})")
    settings = OmegaConf.to_container(OmegaConf.load(path))
    if "defaults" in settings:
        raise SystemExit(
            f"--recipe {recipe}: {path} picks config groups (defaults); give it as a run's "
            "experiment= instead"
        )

    return _dotted(settings, "")


def _dotted(node, prefix: str) -> list[str]:
    """``{"a": {"b": 1}}`` as ``["a.b=1"]``, values as Hydra's override grammar reads them."""
    if isinstance(node, dict):
        return [o for key, value in node.items() for o in _dotted(value, f"{prefix}{key}.")]
    return [f"{prefix[:-1]}={_value(node)}"]


def _value(node) -> str:
    if isinstance(node, bool):
        return "true" if node else "false"
    if node is None:
        return "null"
    if isinstance(node, list):
        return "[" + ",".join(_value(item) for item in node) + "]"
    return str(node)


@dataclass(frozen=True)
class Job:
    run: str
    seed: int
    train_overrides: list[str]
    max_steps: int
    videos: int
    run_dir: Path
    eval_dir: Path
    record_dir: Path

    @property
    def label(self) -> str:
        return f"{self.run}_s{self.seed}"

    @property
    def record_root(self) -> Path:
        return self.record_dir.parent.parent

    def trained(self) -> bool:
        stored = self.run_dir / ".hydra" / "overrides.yaml"
        if stored.is_file():
            overrides = yaml.safe_load(stored.read_text()) or []
            if overrides != [*self.train_overrides, *TRAIN_EXTRAS]:
                raise SystemExit(
                    f"claims: {self.run_dir} was trained with `{' '.join(overrides)}`, not "
                    f"{self.label}'s `{' '.join(self.train_overrides)}` now: move it away (or "
                    "rename the run) to train it anew"
                )
        metrics = self.run_dir / "metrics.json"
        if not metrics.is_file():
            return False
        try:
            return int(json.loads(metrics.read_text()).get("global_step", -1)) >= self.max_steps
        except (OSError, ValueError):
            return False

    def scored(self) -> bool:
        return (self.eval_dir / "per-sequence_results.csv").is_file()

    def recorded(self) -> bool:
        """Whether the table's copy of this run's scores exists, made with its overrides."""
        path = self.record_dir / RECORD_FILE
        if not path.is_file():
            return False
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise SystemExit(f"claims: {path} is not readable JSON ({error}); remove it") from error
        if record.get("overrides") != self.train_overrides or record.get("videos") != self.videos:
            raise SystemExit(
                f"claims: {path} records `{' '.join(record.get('overrides', []))}` on "
                f"{record.get('videos')} videos, not {self.label}'s "
                f"`{' '.join(self.train_overrides)}` on {self.videos}: remove the record (or "
                "rename the run) to run it anew"
            )
        return True

    def share_factors(self) -> None:
        """A record written before the factors were shared keeps its own copy: move it into
        the store (the store first, then run.json naming it, then the copy goes)."""
        own_factors = self.record_dir / FACTORS_FILE
        if own_factors.is_file():
            path = self.record_dir / RECORD_FILE
            record = json.loads(path.read_text())
            record["factors"] = store_factors(self.record_root, own_factors)
            write_text_atomic(path, json.dumps(record, indent=1) + "\n")
            own_factors.unlink()

    def factors_path(self) -> Path | None:
        """The recorded run's factors file (its own copy in a record not yet shared), or None
        where its scoring wrote none."""
        if (self.record_dir / FACTORS_FILE).is_file():
            return self.record_dir / FACTORS_FILE
        record = json.loads((self.record_dir / RECORD_FILE).read_text())
        name = record.get("factors")
        if name is None:
            return None
        path = self.record_root / name
        if not path.is_file():
            raise SystemExit(
                f"claims: {self.record_dir / RECORD_FILE} names {name}, which is not under "
                f"{self.record_root}: keep factors/ beside scores/"
            )
        return path

    def record(self) -> None:
        """Copy the scored run's per-video results beside what the run was, atomically."""
        metrics = json.loads((self.run_dir / "metrics.json").read_text())
        with staged_folder(self.record_dir) as staging:
            for name in RECORDED_FILES:
                if (self.eval_dir / name).is_file():
                    shutil.copy2(self.eval_dir / name, staging / name)
            record = {
                "run": self.run,
                "seed": self.seed,
                "overrides": self.train_overrides,
                "videos": self.videos,
                "global_step": metrics.get("global_step"),
                "fit_s": metrics.get("fit_s"),
                "resumed_from_step": metrics.get("resumed_from_step"),  # fit_s is from there
                # the code that trained it (the attempt that finished) and that recorded it
                "trained_commit": metrics.get("commit"),
                "commit": source_commit(),
                "factors": (
                    store_factors(self.record_root, self.eval_dir / FACTORS_FILE)
                    if (self.eval_dir / FACTORS_FILE).is_file()
                    else None
                ),
                "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"
                ),
            }
            (staging / RECORD_FILE).write_text(json.dumps(record, indent=1) + "\n")

    def fit_seconds(self) -> str:
        """The record's seconds of fit, and the step they start from when the attempt that
        finished resumed another's checkpoint (the earlier attempts' seconds are not known)."""
        record = json.loads((self.record_dir / RECORD_FILE).read_text())
        seconds = f"{record.get('fit_s') or 0:.0f}"
        if record.get("resumed_from_step"):
            seconds += f" (steps {record['resumed_from_step']}–{record['global_step']})"
        return seconds


def _read_factors(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SystemExit(f"claims: {path} is not readable JSON ({error})") from error


def _digest(path: Path) -> str:
    """What names a set of factors: the digest of its JSON, whatever its spacing."""
    canonical = json.dumps(_read_factors(path), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def store_factors(record_root: Path, source: Path) -> str:
    """Keep ``source``'s factors as ``factors/<digest>.json`` under ``record_root`` (written
    once; runs scored on the same videos share it) and return that path, relative."""
    name = f"{FACTORS_FOLDER}/{_digest(source)}.json"
    if not (record_root / name).is_file():
        write_json_atomic(record_root / name, _read_factors(source))
    return name


def plan(args, runs: dict[str, list[str]]) -> list[Job]:
    """Every (run, seed) of the spec as a job, seeds outermost; each config composed now, so
    a wrong override fails here and not hours into the sweep."""
    from vos.config import compose_config

    common = [f"dataset/scene={args.scene}", *recipe_overrides(args.recipe), *args.overrides]
    jobs = []
    for seed in args.seeds:
        for name in runs:
            overrides = [*runs[name], *common, f"seed={seed}"]
            try:
                cfg = compose_config("train", overrides)
            except Exception as error:  # Hydra's errors name the key; say which run it was
                raise SystemExit(f"run {name}: {' '.join(overrides)}: {error}") from error
            jobs.append(
                Job(
                    run=name,
                    seed=seed,
                    train_overrides=overrides,
                    max_steps=int(cfg.trainer.max_steps),
                    videos=args.videos,
                    run_dir=args.out / "runs" / f"{name}_s{seed}",
                    eval_dir=args.out / f"evals{args.videos}" / f"{name}_s{seed}",
                    record_dir=args.record / "scores" / f"{name}_s{seed}",
                )
            )
    return jobs


def train_command(job: Job) -> list[str]:
    return [
        sys.executable, "-m", "vos.train", *job.train_overrides,
        "logger=csv", "resume=auto", f"hydra.run.dir={job.run_dir}",
    ]  # fmt: skip


def eval_command(job: Job, args) -> list[str]:
    """`vos.eval` on the run's world: its dataset overrides (the scene, a frame size), then
    ``--videos`` val videos."""
    world = [o for o in job.train_overrides if o.split("=")[0].split(".")[0] in DATASET_KEYS]
    return [
        sys.executable, "-m", "vos.eval",
        f"ckpt_path={job.run_dir / 'checkpoints' / 'last.ckpt'}",
        *world, f"dataset.eval.num_videos={args.videos}", f"output_dir={job.eval_dir}",
    ]  # fmt: skip


def run_step(command: list[str], what: str) -> float:
    print(f"claims: {what}: {' '.join(command)}", flush=True)
    start = time.monotonic()
    result = subprocess.run(command)
    if result.returncode != 0:
        raise SystemExit(f"claims: {what} failed (exit {result.returncode}); rerun to resume")
    return time.monotonic() - start


def verdict(diff) -> str:
    """Whether the paired difference ``diff`` (an `Interval`) resolves the claim; where it does
    not, how many times its seeds x videos the interval would need to be as narrow as the
    difference is large (`samples_to_narrow`)."""
    from vos.results.intervals import samples_to_narrow

    if diff.low is None:
        return "one video: no interval"
    if diff.low > 0:
        return "holds"
    if diff.high < 0:
        return "does not hold"
    if abs(diff.value) < 0.0005:
        # the table prints three decimals: a count of samples to narrow the interval to a
        # difference it shows as 0.000 would be a number without meaning
        return (
            "not resolved (the interval includes 0; the difference is 0.000 at the table's "
            "precision: no count of seeds x videos would narrow the interval to it)"
        )
    needed = samples_to_narrow(diff.half_width, diff.value)
    return (
        f"not resolved (the interval includes 0; its half width is "
        f"{diff.half_width / abs(diff.value):.1f}x the difference: about {needed:.0f}x the "
        "seeds x videos to narrow it to that)"
    )


def report(args, jobs: list[Job], claims: list[Claim]) -> str:
    """The claims table over the scored seeds, as Markdown."""
    from vos.results.intervals import mean_interval, paired_difference

    scored: dict[str, list[Path]] = {}
    # run -> {digest of its records' factors: one of those files}
    factors: dict[str, dict[str | None, Path | None]] = {}
    for job in jobs:
        if job.recorded():
            scored.setdefault(job.run, []).append(job.record_dir)
            path = job.factors_path()
            factors.setdefault(job.run, {})[_digest(path) if path else None] = path
    lines = [
        f"# Headline claims on the {args.scene} world",
        "",
        f"`python experiments/claims.py --scene {args.scene} --videos {args.videos} --seeds "
        f"{' '.join(map(str, args.seeds))} --recipe {args.recipe}"
        + (f" --record {args.record_arg}" if args.record_arg else "")
        + (f" -- {' '.join(args.overrides)}" if args.overrides else "")
        + f"`; the recipe's overrides: `{' '.join(recipe_overrides(args.recipe)) or '(none)'}`. "
        "Each row pools its scored seeds; the difference is paired by video, its 95% "
        "bootstrap interval resampling videos and, where a row has several, seeds. A claim "
        "not resolved says how many times its seeds x videos would narrow its interval to the "
        "difference, were the spread to stay what the scored seeds showed (a few seeds estimate "
        "it roughly; with the videos fixed, more seeds narrow only the seeds' part).",
        "",
        "| claim | videos | seeds (row / baseline) | row | baseline | difference [95% CI] | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for claim in claims:
        row, base = scored.get(claim.row, []), scored.get(claim.baseline, [])
        if not row or not base:
            lines.append(f"| {claim.claim} | | {len(row)} / {len(base)} | | | | waiting for runs |")
            continue
        keep = None
        if claim.factor:
            files = {**factors[claim.row], **factors[claim.baseline]}
            if None in files or len(files) != 1:
                raise SystemExit(
                    f"claims: {claim.claim!r}: the records of {claim.row} and "
                    f"{claim.baseline} name {sorted(str(f) for f in files.values())} as their "
                    "factors, not one set: their videos were not the same"
                )
            keep = factor_videos(next(iter(files.values())), claim.factor)
        names, row_matrix, objects = row_scores(claim.row, row, claim.score, keep)
        base_names, base_matrix, _ = row_scores(claim.baseline, base, claim.score, keep)
        row_mean = mean_interval(row_matrix, 0.95, args.resamples, objects)
        base_mean = mean_interval(base_matrix, 0.95, args.resamples, objects)
        diff = paired_difference(
            row_matrix, base_matrix, names, base_names, (claim.row, claim.baseline),
            0.95, args.resamples, objects,
        )  # fmt: skip
        interval = "" if diff.low is None else f" [{diff.low:+.3f}, {diff.high:+.3f}]"
        what = claim.score + (f", {claim.factor}" if claim.factor else "")
        lines.append(
            f"| {claim.claim} ({what}) | {len(names)} | {len(row)} / {len(base)} | "
            f"{row_mean.value:.3f} | {base_mean.value:.3f} | {diff.value:+.3f}{interval} | "
            f"{verdict(diff)} |"
        )
    lines += ["", "| run | seeds scored | J&F | fit (s) per seed |", "|---|---|---|---|"]
    for name in dict.fromkeys(job.run for job in jobs):
        folders = scored.get(name, [])
        fits = [job.fit_seconds() for job in jobs if job.run == name and job.recorded()]
        if folders:
            _, matrix, objects = row_scores(name, folders, "J&F", None)
            own = mean_interval(matrix, 0.95, args.resamples, objects)
            spread = "" if own.low is None else f" [{own.low:.3f}, {own.high:.3f}]"
            score = f"{own.value:.3f}{spread}"
        else:
            score = ""
        lines.append(f"| {name} | {len(folders)} | {score} | {', '.join(fits)} |")
    return "\n".join(lines) + "\n"


def table_body(table: str) -> str:
    """claims.md without its title: the command, the claims and the runs, for another document."""
    return table.split("\n", 2)[2]


def _doc_block(doc: Path) -> tuple[str, int, int]:
    """``doc``'s text and where its DOC_BEGIN and DOC_END lines are; a clear error otherwise."""
    if not doc.is_file():
        raise SystemExit(f"claims: --doc {doc}: no such file")
    text = doc.read_text()
    begin, end = text.find(DOC_BEGIN), text.find(DOC_END)
    if begin < 0 or end < begin:
        raise SystemExit(f"claims: {doc} has no {DOC_BEGIN!r} ... {DOC_END!r} block for the table")
    return text, begin, end


def sync_doc(doc: Path, table: str) -> None:
    """Write the table into ``doc`` between its DOC_BEGIN and DOC_END lines."""
    text, begin, end = _doc_block(doc)
    head = text[: begin + len(DOC_BEGIN)]
    write_text_atomic(doc, f"{head}\n{table_body(table)}{text[end:]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=HERE / "claims.yaml")
    parser.add_argument("--scene", default="realistic", help="dataset/scene: simple | realistic")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--videos", type=int, default=96, help="val videos each run is scored on")
    parser.add_argument(
        "--runs",
        nargs="+",
        help="train and score only these runs, in this order (default: every run); the table "
        "still holds every run's records",
    )
    parser.add_argument("--recipe", default="auto", help="auto | none | an experiment name")
    parser.add_argument("--out", type=Path, help="default: outputs/claims/<scene>")
    parser.add_argument(
        "--record",
        type=Path,
        help="where scores/<run>_s<seed>/ and claims.md go (default: --out); e.g. "
        "experiments/claims/<scene> to keep them",
    )
    parser.add_argument(
        "--doc",
        type=Path,
        help=f"also write the table into this Markdown file, between {DOC_BEGIN!r} and "
        f"{DOC_END!r} (e.g. docs/benchmarks.md)",
    )
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--report-only", action="store_true", help="the table from what finished")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("overrides", nargs="*", help="after --: overrides for every run")
    args = parser.parse_args(argv)
    args.out = (args.out or Path("outputs") / "claims" / args.scene).absolute()
    args.record_arg = args.record
    args.record = (args.record or args.out).absolute()
    runs, claims = load_spec(args.spec)
    if args.doc:
        _doc_block(args.doc)  # refused now, not after hours of training
    for name in args.runs or []:
        if name not in runs:
            raise SystemExit(f"--runs {name}: not a run of {args.spec} ({sorted(runs)})")
    # the table holds every run's records; --runs picks which are trained, in its order
    jobs = plan(args, runs)
    by_label = {job.label: job for job in jobs}
    todo = [by_label[f"{name}_s{seed}"] for seed in args.seeds for name in args.runs or runs]
    table = args.record / "claims.md"
    if not args.dry_run:
        for job in jobs:
            if job.recorded():
                job.share_factors()
    if not args.report_only:
        for job in todo:
            if job.recorded():
                continue
            if args.dry_run:
                if not job.trained():
                    print(" ".join(train_command(job)))
                if not job.scored():
                    print(" ".join(eval_command(job, args)))
                continue
            if not job.trained():
                seconds = run_step(train_command(job), f"training {job.label}")
                print(f"claims: trained {job.label} in {seconds:.0f} s", flush=True)
            if not job.scored():
                seconds = run_step(eval_command(job, args), f"scoring {job.label}")
                print(f"claims: scored {job.label} in {seconds:.0f} s", flush=True)
            job.record()
            print(f"claims: recorded {job.label} in {job.record_dir}", flush=True)
            text = report(args, jobs, claims)
            write_text_atomic(table, text)
            if args.doc:
                sync_doc(args.doc, text)
        if args.dry_run:
            return
    text = report(args, jobs, claims)
    write_text_atomic(table, text)
    if args.doc:
        sync_doc(args.doc, text)
    print(text)
    print(f"claims: wrote {table}")


if __name__ == "__main__":
    main()

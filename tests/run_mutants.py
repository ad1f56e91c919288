"""Mutation check of the reader tests: ``python tests/run_mutants.py [--only ID] [--jobs N]``.

Each mutant in ``tests/mutants.yaml`` is a plausible wrong edit of a reader's equations: a file,
an exact ``old`` string (it must occur exactly once in that file) and its ``new`` replacement,
and the tests that must catch it. For each mutant this script copies the repository's files
(``git ls-files`` plus untracked files git does not ignore) into a temporary directory, applies
the edit there (the working tree is never touched), and runs ``python -m pytest -x -q`` on the
named tests inside that copy, with the copy's ``vos`` and ``vos.kernels`` imported ahead of the
editable install (a ``sitecustomize`` on ``PYTHONPATH`` maps both packages to the copy, as
``[tool.setuptools] package-dir`` does for the install). Before the mutants, one unmutated copy
checks that set-up: the packages are imported from the copy, a deliberately broken file in the
copy breaks the import, and every named test passes there.

It prints one row per mutant: caught (the first test that failed) or SURVIVED, and exits 1 when
any mutant survived, errored (a collection error, a missing test, a timeout), or its ``old``
string is not found exactly once. Not a pytest module (its name does not match ``test_*.py``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
MUTANTS_FILE = ROOT / "tests" / "mutants.yaml"
FIELDS = ("id", "reader", "breaks", "file", "old", "new", "tests")
DEFAULT_PACKAGE_DIRS = {"vos": "src/vos", "vos.kernels": "kernels"}

SITECUSTOMIZE = '''"""Written by tests/run_mutants.py: import these packages from the mutant's copy."""
import importlib.abc
import importlib.util
import sys

PACKAGES = {packages!r}


class _CopyFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        root = PACKAGES.get(name)
        if root is None:
            return None
        return importlib.util.spec_from_file_location(
            name, root + "/__init__.py", submodule_search_locations=[root]
        )


sys.meta_path.insert(0, _CopyFinder())
'''


@dataclass
class Mutant:
    id: str
    reader: str
    breaks: str
    file: str
    old: str
    new: str
    tests: list[str]


@dataclass
class Result:
    mutant: Mutant
    status: str  # "caught" | "SURVIVED" | "ERROR"
    detail: str
    seconds: float


def load_mutants(path: Path = MUTANTS_FILE) -> list[Mutant]:
    entries = yaml.safe_load(path.read_text())
    mutants, seen = [], set()
    for number, entry in enumerate(entries, 1):
        missing = [name for name in FIELDS if name not in entry]
        extra = sorted(set(entry) - set(FIELDS))
        if missing or extra:
            raise SystemExit(f"{path}: mutant #{number}: missing {missing}, unknown {extra}")
        if entry["id"] in seen:
            raise SystemExit(f"{path}: mutant id {entry['id']!r} appears twice")
        seen.add(entry["id"])
        tests = entry["tests"]
        mutants.append(Mutant(**{**entry, "tests": [tests] if isinstance(tests, str) else tests}))
    return mutants


def repository_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return sorted({name for name in listed.split("\0") if name and (ROOT / name).is_file()})


def package_dirs() -> dict[str, str]:
    """``[tool.setuptools] package-dir`` of pyproject.toml: how the install maps packages."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        return dict(DEFAULT_PACKAGE_DIRS)
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return dict(config.get("tool", {}).get("setuptools", {}).get("package-dir", {}))


def make_copy(files: list[str]) -> Path:
    """A fresh copy of the repository's files, and a sitecustomize that imports from it."""
    work = Path(tempfile.mkdtemp(prefix="vos-mutant-"))
    copy = work / "repo"
    for name in files:
        target = copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    shim = work / "shim"
    shim.mkdir()
    packages = {name: str(copy / folder) for name, folder in package_dirs().items()}
    (shim / "sitecustomize.py").write_text(SITECUSTOMIZE.format(packages=packages))
    return copy


def environment(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    extra = [str(copy.parent / "shim"), str(copy / "src")]
    env["PYTHONPATH"] = os.pathsep.join(extra + [p for p in [env.get("PYTHONPATH")] if p])
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no stale bytecode between an edit and its test
    env.setdefault("WANDB_MODE", "disabled")
    return env


def run(command: list[str], copy: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        command,
        cwd=copy,
        env=environment(copy),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def pytest_command(tests: list[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]


def check_old_strings(mutants: list[Mutant]) -> list[str]:
    problems = []
    for mutant in mutants:
        path = ROOT / mutant.file
        if not path.is_file():
            problems.append(f"{mutant.id}: {mutant.file} does not exist")
            continue
        text = path.read_text()
        count = text.count(mutant.old)
        if count != 1:
            problems.append(f"{mutant.id}: `old` occurs {count} times in {mutant.file} (needs 1)")
        elif mutant.old == mutant.new:
            problems.append(f"{mutant.id}: `new` equals `old`")
        elif path.suffix == ".py":
            try:  # a mutant is a wrong edit, not a syntax error
                compile(text.replace(mutant.old, mutant.new), mutant.file, "exec")
            except SyntaxError as error:
                problems.append(f"{mutant.id}: the edit does not compile: {error}")
    return problems


def check_copy(copy: Path, tests: list[str], timeout: float) -> None:
    """The copy is what gets imported, an edit in it counts, and the named tests pass on it."""
    names = ("vos", "vos.kernels", "vos.ops.memory_read", "vos.kernels.contracts")
    probe = (
        "import importlib\n"
        f"for name in {names!r}:\n"
        "    print(importlib.import_module(name).__file__)\n"
    )
    result = run([sys.executable, "-c", probe], copy, timeout)
    if result.returncode != 0:
        raise SystemExit(f"the unmutated copy does not import:\n{result.stderr[-4000:]}")
    outside = [line for line in result.stdout.split() if not line.startswith(str(copy))]
    if outside:
        raise SystemExit(f"modules imported from outside the copy {copy}: {outside}")
    for name, module in (
        ("src/vos/ops/memory_read.py", "vos.ops.memory_read"),
        ("kernels/contracts.py", "vos.kernels.contracts"),
    ):
        path = copy / name
        original = path.read_text()
        path.write_text(original + '\nraise RuntimeError("mutant canary")\n')
        try:
            broken = run([sys.executable, "-c", f"import {module}"], copy, timeout)
        finally:
            path.write_text(original)
        if broken.returncode == 0 or "mutant canary" not in broken.stderr:
            raise SystemExit(f"a broken {name} in the copy did not break `import {module}`")
    baseline = run(pytest_command(tests), copy, timeout)
    if baseline.returncode != 0:
        raise SystemExit(
            "the named tests fail on the unmutated copy; fix them first:\n"
            + baseline.stdout[-4000:]
            + baseline.stderr[-2000:]
        )


def first_failure(output: str) -> str | None:
    """The node id of the first ``FAILED``/``ERROR`` line of pytest's short summary."""
    match = re.search(r"^(?:FAILED|ERROR) (\S+)", output, flags=re.MULTILINE)
    return match.group(1) if match else None


def run_mutant(mutant: Mutant, files: list[str], timeout: float) -> Result:
    start = time.perf_counter()
    copy = make_copy(files)
    try:
        path = copy / mutant.file
        text = path.read_text()
        if text.count(mutant.old) != 1:
            return Result(mutant, "ERROR", "`old` not found exactly once", 0.0)
        path.write_text(text.replace(mutant.old, mutant.new))
        try:
            result = run(pytest_command(mutant.tests), copy, timeout)
        except subprocess.TimeoutExpired:
            return Result(mutant, "ERROR", f"timed out after {timeout:.0f} s", timeout)
        seconds = time.perf_counter() - start
        output = result.stdout + result.stderr
        if result.returncode == 0:
            return Result(mutant, "SURVIVED", "every named test passed", seconds)
        failed = first_failure(output)
        if result.returncode == 1 and failed:
            return Result(mutant, "caught", failed, seconds)
        tail = " | ".join(output.strip().splitlines()[-3:])
        return Result(mutant, "ERROR", f"pytest exit {result.returncode}: {tail}", seconds)
    finally:
        shutil.rmtree(copy.parent, ignore_errors=True)


def table(results: list[Result]) -> str:
    rows = [
        "| mutant | reader | breaks | file | result |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        outcome = (
            f"caught by `{r.detail}`" if r.status == "caught" else f"**{r.status}**: {r.detail}"
        )
        rows.append(
            f"| `{r.mutant.id}` | {r.mutant.reader} | {r.mutant.breaks} | "
            f"`{r.mutant.file}` | {outcome} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", metavar="ID", help="run this mutant (repeat)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at once (default 1)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per pytest run")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args(argv)

    mutants = load_mutants()
    if args.only:
        unknown = sorted(set(args.only) - {m.id for m in mutants})
        if unknown:
            parser.error(f"unknown mutant id(s) {unknown}; --list shows them")
        mutants = [m for m in mutants if m.id in args.only]
    if args.list:
        for m in mutants:
            print(f"{m.id}: {m.reader}, {m.file} ({m.breaks})")
        return 0
    problems = check_old_strings(mutants)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1

    start = time.perf_counter()
    files = repository_files()
    tests = list(dict.fromkeys(t for m in mutants for t in m.tests))
    copy = make_copy(files)
    try:
        check_copy(copy, tests, args.timeout)
    finally:
        shutil.rmtree(copy.parent, ignore_errors=True)
    print(f"baseline: {len(tests)} named tests pass on an unmutated copy", flush=True)

    def one(mutant: Mutant) -> Result:
        result = run_mutant(mutant, files, args.timeout)
        print(f"{mutant.id}: {result.status} ({result.detail}, {result.seconds:.1f} s)", flush=True)
        return result

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(one, mutants))
    elapsed = time.perf_counter() - start
    print()
    print(table(results))
    bad = [r for r in results if r.status != "caught"]
    print(
        f"\n{len(results) - len(bad)}/{len(results)} mutants caught"
        f"{f', {len(bad)} not' if bad else ''}; wall time {elapsed:.0f} s"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

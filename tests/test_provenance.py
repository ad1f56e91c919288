"""`vos.provenance.source_commit`: the commit a run's code came from, and whether it changed."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

import vos.provenance

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=root, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def test_a_changed_code_file_marks_the_commit_and_a_changed_result_does_not(tmp_path):
    root = tmp_path / "checkout"
    module = root / "src" / "vos" / "provenance.py"
    module.parent.mkdir(parents=True)
    shutil.copy(vos.provenance.__file__, module)
    (root / "conf").mkdir()
    (root / "conf" / "train.yaml").write_text("seed: 0\n")
    (root / "experiments").mkdir()
    (root / "experiments" / "claims.md").write_text("| table |\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-qm", "first")
    head = _git(root, "rev-parse", "HEAD")
    spec = importlib.util.spec_from_file_location("provenance_copy", module)
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)  # its own folder is the checkout's src/vos

    assert copy.source_commit() == head
    (root / "experiments" / "claims.md").write_text("| table, rewritten by a driver |\n")
    (root / "notes.txt").write_text("untracked\n")
    assert copy.source_commit() == head
    (root / "conf" / "train.yaml").write_text("seed: 1\n")
    assert copy.source_commit() == head + "+"


def test_outside_a_checkouts_sources_there_is_no_commit(tmp_path):
    """Alone, or installed inside some git repository (a virtual environment in a checkout):
    that repository's commit says nothing of the installed copy."""
    alone = tmp_path / "alone" / "provenance.py"
    root = tmp_path / "checkout"
    installed = root / ".venv" / "lib" / "site-packages" / "vos" / "provenance.py"
    for module in (alone, installed):
        module.parent.mkdir(parents=True)
        shutil.copy(vos.provenance.__file__, module)
    (root / "README.md").write_text("a checkout\n")
    _git(root, "init", "-q")
    _git(root, "add", "README.md")
    _git(root, "commit", "-qm", "first")
    for name, module in (("alone", alone), ("installed", installed)):
        spec = importlib.util.spec_from_file_location(f"provenance_{name}", module)
        copy = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(copy)
        assert copy.source_commit() is None, name

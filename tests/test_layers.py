"""Every import in the package points down its layers (docs/architecture.md, "Layers").

A module may import modules of its own layer or of a lower one, never of a higher one: the
LightningModule does not reach into a command, a kernel does not import the op that dispatches
to it. Function-level imports count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# lowest first; a module belongs to the longest prefix that names it
LAYERS: list[tuple[str, ...]] = [
    (
        "vos",
        "vos.config",
        "vos.files",
        "vos.checkpoint",
        "vos.profiling",
        "vos.provenance",
        "vos.kernels",
    ),
    ("vos.ops",),
    ("vos.data",),
    ("vos.metrics",),
    ("vos.model",),
    ("vos.inference",),
    ("vos.lightning",),
    ("vos.bench", "vos.results"),
    ("vos.cli",),
]
# `python -m vos.<command>` and `python -m <package>` entry points: thin modules that only
# call into vos.cli, so they sit at its layer
ENTRY_POINTS = {
    "train",
    "train_flow",
    "eval",
    "evaluate",
    "ablate",
    "report",
    "probe",
    "convert",
}


def module_files() -> dict[str, Path]:
    files = {}
    for path in (ROOT / "src" / "vos").rglob("*.py"):
        parts = path.relative_to(ROOT / "src").with_suffix("").parts
        files[".".join(p for p in parts if p != "__init__")] = path
    for path in (ROOT / "kernels").rglob("*.py"):
        parts = ("vos", "kernels", *path.relative_to(ROOT / "kernels").with_suffix("").parts)
        files[".".join(p for p in parts if p != "__init__")] = path
    return files


def layer_of(module: str) -> int:
    if module.endswith(".__main__") or module in {f"vos.{name}" for name in ENTRY_POINTS}:
        return len(LAYERS) - 1
    best, best_length = None, -1
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_length:
                best, best_length = rank, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS")
    return best


def imported_modules(path: Path, module: str) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    found = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            # `from vos import ops` imports the module vos.ops
            found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
    files = module_files()
    return [(line, name) for line, name in found if name in files]


def test_every_import_points_down_the_layers():
    wrong = []
    for module, path in sorted(module_files().items()):
        rank = layer_of(module)
        for line, imported in imported_modules(path, module):
            if layer_of(imported) > rank:
                where = path.relative_to(ROOT)
                wrong.append(f"{where}:{line}: {module} (layer {rank}) imports {imported}")
    assert not wrong, "imports from a lower layer to a higher one:\n" + "\n".join(wrong)


def test_the_layer_check_catches_an_upward_import(tmp_path, monkeypatch):
    """The walk itself works: a module of vos.model importing vos.inference is found."""
    fake = tmp_path / "memory.py"
    fake.write_text("from vos.inference.engine import InferenceEngine\n")
    found = imported_modules(fake, "vos.model.memory")
    assert found and all(layer_of(name) > layer_of("vos.model.memory") for _, name in found)


@pytest.mark.parametrize(
    ("module", "layer"),
    [("vos.kernels.gather_read", 0), ("vos.ops.memory_read", 1), ("vos.cli.train", 8)],
)
def test_layers_are_assigned_by_longest_prefix(module, layer):
    assert layer_of(module) == layer

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject():
    """pyproject lists packages by hand (vos.kernels lives outside src/): none may be missing."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        ".".join(("vos", *init.parent.relative_to(ROOT / "src" / "vos").parts))
        for init in (ROOT / "src" / "vos").rglob("__init__.py")
    }
    assert found | {"vos.kernels"} == listed
    assert config["package-dir"]["vos.kernels"] == "kernels"

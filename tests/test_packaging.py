import subprocess
import sys
from pathlib import Path

import pytest
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


@pytest.mark.parametrize("onednn_cap", [None, "AVX512_CORE_BF16"])
def test_make_train_picks_the_bf16_recipe_only_where_onednn_has_amx(onednn_cap, monkeypatch):
    """`make train` runs experiment=cpu_amx where bf16 is fast (AMX tiles that oneDNN may use)
    and the fp32 defaults elsewhere; TRAIN_RECIPE= forces the defaults."""
    from vos.inference.precision import cpu_has_usable_amx

    if onednn_cap is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", onednn_cap)
    bin_dir = Path(sys.executable).parent

    def command(*extra: str) -> str:
        result = subprocess.run(
            ["make", "--no-print-directory", "-n", "train", f"BIN={bin_dir}", *extra],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        # the last command; under `make test` a sub-make may add its own lines
        return [line for line in result.stdout.splitlines() if " -m vos.train" in line][-1].strip()

    recipe = " experiment=cpu_amx" if cpu_has_usable_amx() else ""
    if onednn_cap is not None:
        assert recipe == ""
    assert command() == f"{bin_dir}/python -m vos.train{recipe}"
    assert command("TRAIN_RECIPE=") == f"{bin_dir}/python -m vos.train"


def test_the_amx_recipe_is_bf16_channels_last_and_more_steps():
    from helpers import compose_config

    cfg = compose_config("train", ["experiment=cpu_amx"])
    default = compose_config("train", [])
    assert cfg.trainer.precision == "bf16-mixed" and cfg.channels_last is True
    assert cfg.trainer.max_steps > default.trainer.max_steps
    assert cfg.model == default.model and cfg.data == default.data and cfg.optim == default.optim

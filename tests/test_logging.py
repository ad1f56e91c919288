from helpers import TINY, run_train_process

from vos.lightning.loggers import resolve_wandb_mode


def test_wandb_mode_auto_is_offline_without_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert resolve_wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode("auto") == "online"
    assert resolve_wandb_mode("disabled") == "disabled"


def test_default_logger_runs_offline_on_a_machine_without_credentials(tmp_path):
    """The default `logger=wandb` must neither prompt nor hang without network or login."""
    run_dir = tmp_path / "run"
    overrides = [o for o in TINY if o != "logger=none"]
    run_train_process(
        [
            *overrides,
            "trainer.max_steps=1",
            "+trainer.limit_val_batches=0",
            f"hydra.run.dir={run_dir}",
        ],
        tmp_path,
    )
    offline_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1
    assert any(offline_runs[0].glob("*.wandb"))

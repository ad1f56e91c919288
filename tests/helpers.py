"""Small configurations that keep end-to-end tests within seconds on a 2-core CPU."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from vos.config import CONFIG_DIR


def run_train_process(
    args: list[str], home: Path, *, env: dict[str, str] | None = None, timeout: int = 300, cwd=None
) -> subprocess.CompletedProcess:
    """``python -m vos.train ARGS``: see `run_command`."""
    return run_command("vos.train", args, home, env=env, timeout=timeout, cwd=cwd)


def run_command(
    module: str,
    args: list[str],
    home: Path,
    *,
    env: dict[str, str] | None = None,
    timeout: int = 300,
    cwd=None,
) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` in its own process, as a user runs it. No WANDB_ variable
    of the calling environment leaks in and HOME is ``home`` (wandb's settings and files stay
    there); ``env`` adds variables. Fails the test with the end of stderr unless it exits 0."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    environment.update(HOME=str(home), **(env or {}))
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


TINY = [
    "logger=none",
    "dataset.height=48",
    "dataset.width=64",
    "dataset.train.num_videos=4",
    "dataset.train.num_frames=12",
    "dataset.eval.num_videos=2",
    "dataset.eval.num_frames=30",
    "model.key_channels=8",
    "model.value_channels=16",
    "model.decoder_channels=8",
    "data.batch_size=2",
    "data.num_workers=0",
    "trainer.max_steps=4",
    "trainer.val_check_interval=4",
    "trainer.log_every_n_steps=1",
    "checkpoint.every_n_steps=2",
]


def compose_config(name: str = "train", overrides: list[str] | None = None) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(name, overrides=list(overrides or []))


def two_object_clip(batch: int, seed: int = 1) -> tuple[Any, Any, Any, Any]:
    """A 3-frame 32×48 training clip of two overlapping box objects present in every frame:
    ``(frames, labels, present, flow)`` as `VOSNetwork.segment_clip` takes them, the flow
    zero."""
    import torch

    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(batch, 3, 3, 32, 48, generator=g)
    labels = torch.zeros(batch, 3, 32, 48, dtype=torch.long)
    labels[:, :, 4:20, 6:30] = 1
    labels[:, :, 14:30, 24:44] = 2
    present = torch.ones(batch, 2, dtype=torch.bool)
    return frames, labels, present, torch.zeros(batch, 3, 2, 32, 48)


def tiny_checkpoint(run_dir: Path) -> Path:
    """Train the `TINY` model one step into ``run_dir`` (no validation); its ``last.ckpt``."""
    from vos.lightning.training import train

    overrides = [*TINY, "trainer.max_steps=1", "+trainer.limit_val_batches=0"]
    train(compose_config("train", overrides), run_dir)
    return run_dir / "checkpoints" / "last.ckpt"


def wandb_records(path: Path) -> Iterator[bytes]:
    """The records of a wandb transaction log (.wandb): a 7-byte file header, then blocks of
    32 KiB holding records with a 7-byte header (checksum, length, type: 1 full, 2 first,
    3 middle, 4 last piece)."""
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk


@dataclass
class WandbLog:
    """What an offline run's .wandb file holds: the run record, the history rows (key ->
    decoded value; a table or images is a dict of its fields), the summary keys (nested ones
    joined by "/") and the config."""

    run: Any = None
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: set[str] = field(default_factory=set)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def keys(self) -> set[str]:
        return {key for row in self.history for key in row} | self.summary


def read_wandb_log(path: Path) -> WandbLog:
    from wandb.proto import wandb_internal_pb2

    log = WandbLog()
    for raw in wandb_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            log.run = record.run
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                if item.key:
                    row[item.key] = json.loads(item.value_json)
                else:  # a media value (a table, images): one item per field of its dict
                    *parents, name = item.nested_key
                    node = row
                    for parent in parents:
                        node = node.setdefault(parent, {})
                    node[name] = json.loads(item.value_json)
            log.history.append(row)
        elif kind == "summary":
            log.summary |= {item.key or "/".join(item.nested_key) for item in record.summary.update}
        elif kind == "config":
            for item in record.config.update:
                log.config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return log


# the commands by their `python -m` names, and the module whose main() each runs
ENTRY_POINTS = {
    "vos.train": "vos.cli.train",
    "vos.eval": "vos.cli.eval",
    "vos.evaluate": "vos.cli.evaluate",
    "vos.bench": "vos.cli.bench",
    "vos.report": "vos.cli.report",
    "vos.data.synthetic": "vos.cli.export",
    "vos.convert": "vos.cli.convert",
}
HYDRA_COMMANDS = {"vos.train", "vos.eval", "vos.evaluate"}


def run_in_process(command: str, args: list[str], monkeypatch, capfd) -> tuple[int, str]:
    """``python -m COMMAND ARGS`` as its ``main()`` in this process (no new Python, no new
    Lightning import): the exit code and stderr, with the message a ``SystemExit(str)`` would
    print as its last line, as the interpreter prints it. Stdout is left for the caller's own
    ``capfd.readouterr()``."""
    result = command_in_process(command, args, monkeypatch, capfd)
    sys.stdout.write(result.stdout)
    return result.returncode, result.stderr


def command_in_process(
    command: str, args: list[str], monkeypatch, capfd
) -> subprocess.CompletedProcess:
    """What `subprocess.run([python, -m, COMMAND, *ARGS], capture_output=True, text=True)`
    gives, from the command's ``main()`` run in this process. Hydra reconfigures logging when
    it runs; the logging state is put back afterwards."""
    import importlib
    import logging

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    main = importlib.import_module(ENTRY_POINTS[command]).main
    monkeypatch.setattr(sys, "argv", [command, *args])
    capfd.readouterr()  # what the test printed before is not the command's
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    loggers = {
        name: (logger.disabled, logger.level, list(logger.handlers), logger.propagate)
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    try:
        main() if command in HYDRA_COMMANDS else main(args)
        code = 0
    except SystemExit as exit:
        code = exit.code
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, (disabled, logger_level, logger_handlers, propagate) in loggers.items():
            logger = logging.getLogger(name)
            logger.disabled, logger.propagate = disabled, propagate
            logger.setLevel(logger_level)
            logger.handlers[:] = logger_handlers
    out, err = capfd.readouterr()
    if isinstance(code, str):
        err, code = err + code + "\n", 1
    return subprocess.CompletedProcess([command, *args], code or 0, out, err)


# The device the kernel tests run on: the CPU (Triton's interpreter) unless
# VOS_TEST_DEVICE=cuda asks for the GPU (`make gpu-check`).
TEST_DEVICE_NAME = os.environ.get("VOS_TEST_DEVICE") or "cpu"


def _interpreter_only():
    import pytest

    return pytest.mark.skipif(
        TEST_DEVICE_NAME != "cpu",
        reason="checks figures of Triton's interpreter (its fixed block sizes), not a GPU's",
    )


# a test of what the interpreter does (its block sizes), skipped when the kernels run on a GPU
interpreter_only = _interpreter_only()


def kernel_test_device():
    """``torch.device`` of VOS_TEST_DEVICE; a clear failure when it names an absent GPU."""
    import pytest
    import torch

    device = torch.device(TEST_DEVICE_NAME)
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.fail(f"VOS_TEST_DEVICE={TEST_DEVICE_NAME} but no CUDA device is present")
    return device


def tensors_created_on(device):
    """A mode in which every tensor made by a factory (``torch.randn``, ``zeros``, ``tensor``,
    ...) that names no device is made as usual, on the CPU, then moved to ``device``: tests
    written for the CPU, CPU generators included, draw the same numbers and run on the GPU."""
    import torch
    from torch.overrides import TorchFunctionMode

    factories = {
        torch.tensor,
        torch.as_tensor,
        torch.zeros,
        torch.ones,
        torch.full,
        torch.empty,
        torch.eye,
        torch.arange,
        torch.linspace,
        torch.rand,
        torch.randn,
        torch.randint,
        torch.randperm,
    }

    class FactoriesOnDevice(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func not in factories or kwargs.get("device") is not None:
                return func(*args, **kwargs)
            requires_grad = kwargs.pop("requires_grad", False)
            tensor = func(*args, **kwargs).to(device)
            # moved after creation, the tensor must still be a leaf when it asked for grads
            return tensor.requires_grad_() if requires_grad else tensor

    return FactoriesOnDevice()

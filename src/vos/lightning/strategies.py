"""Lightning strategies, chosen by ``_target_`` (``strategy=single|ddp|ddp_spawn|fsdp|deepspeed``).

The configs in ``conf/strategy/`` name either a Lightning strategy class with its options
(``ddp``, ``ddp_spawn``) or one of the factories below, which first check that the machine
and the trainer can run it and say why not in one line (`StrategyError`).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from pytorch_lightning.strategies import FSDPStrategy


class StrategyError(ValueError):
    """The ``strategy=`` config cannot run: a missing package, or devices that do not suit it."""


def _device_count(devices: Any) -> int | None:
    """The number of devices ``trainer.devices`` asks for, or None when Lightning decides
    (``auto``, ``-1``)."""
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str):
        devices = devices.strip()
        if "," in devices:
            return len([d for d in devices.split(",") if d.strip()])
        if not devices.lstrip("-").isdigit():
            return None
        devices = int(devices)
    return None if devices == -1 else int(devices)


def single_device(devices: Any = 1, num_nodes: int = 1) -> str:
    """One process on one device (Lightning's single-device strategy on
    ``trainer.accelerator``'s device)."""
    if _device_count(devices) != 1 or num_nodes != 1:
        raise StrategyError(
            f"strategy=single runs one process on one device, but trainer.devices={devices} "
            f"and trainer.num_nodes={num_nodes}: use strategy=ddp for several devices"
        )
    return "auto"


def fsdp(accelerator: str = "gpu", **options: Any) -> FSDPStrategy:
    if accelerator == "cpu":
        raise StrategyError(
            "strategy=fsdp needs GPUs (trainer=gpu), not trainer.accelerator=cpu: "
            "use strategy=ddp on the CPU"
        )
    return FSDPStrategy(**options)


def deepspeed(**options: Any):
    if importlib.util.find_spec("deepspeed") is None:
        raise StrategyError(
            "strategy=deepspeed needs the deepspeed package, which is not installed "
            "(pip install deepspeed)"
        )
    from pytorch_lightning.strategies import DeepSpeedStrategy

    return DeepSpeedStrategy(**options)

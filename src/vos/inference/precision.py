"""Inference precision, by Lightning's names: ``32`` (plain fp32), ``16-mixed`` and
``bf16-mixed`` (the network under `torch.autocast` with fp16 / bf16).

Memory reads turn autocast off and compute their affinities in fp32 whatever the mode
(`vos.ops.memory_read`); the engine's own arithmetic on the network's outputs (label softmax,
aggregation, argmax) stays fp32 too.
"""

from __future__ import annotations

import os
import warnings
from contextlib import AbstractContextManager, nullcontext

import torch

AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {
    "32": None,
    "16-mixed": torch.float16,
    "bf16-mixed": torch.bfloat16,
}


def parse_precision(value: object, key: str = "precision") -> str:
    """The precision's name (``32`` may come as an integer: Hydra and YAML read it so);
    anything else is refused with an error naming ``key``."""
    name = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if name not in AUTOCAST_DTYPES:
        raise ValueError(
            f"{key}={value}: expected one of {', '.join(AUTOCAST_DTYPES)} (Lightning's names)"
        )
    return name


def check_autocast_supported(precision: str, device: torch.device, key: str = "precision") -> None:
    """Refuse a mixed mode this torch cannot autocast on ``device``: torch would otherwise
    warn once and run the network in fp32, under a name that says otherwise."""
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return
    reason = None
    if not torch.amp.is_autocast_available(device.type):
        reason = f"torch {torch.__version__} has no autocast on {device.type}"
    else:
        messages: list[str] = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with torch.autocast(device.type, dtype=dtype):
                    enabled = torch.is_autocast_enabled(device.type)
            except RuntimeError as error:  # e.g. bf16 on a GPU without it
                enabled = False
                messages.append(str(error))
        messages += [str(warning.message) for warning in caught]
        if not enabled:
            said = f" ({messages[0]})" if messages else ""
            reason = f"torch {torch.__version__} cannot autocast to {dtype} on {device.type}{said}"
    if reason:
        raise ValueError(f"{key}={precision}: {reason}; {key}=32 runs the network in fp32")


def network_autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """The context the network runs in: autocast for a mixed mode; for ``32`` none of its
    own, so that validation inside a mixed-precision Lightning run keeps the trainer's."""
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def describe_precision(precision: str, device: torch.device) -> str:
    """One line for logs: the mode and what it means on ``device``."""
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return f"precision={precision}: fp32 throughout"
    name = str(dtype).removeprefix("torch.")
    return (
        f"precision={precision}: the network under {device.type} autocast to {name}, "
        "memory reads in fp32"
    )


def cpu_has_amx_tiles() -> bool:
    """Whether the CPU has AMX tiles (torch's private probe; False where torch lacks it)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe()) if probe is not None else False


def cpu_has_usable_amx() -> bool:
    """Whether oneDNN may run bf16 products on AMX tiles here: the CPU has them and
    ``ONEDNN_MAX_CPU_ISA`` does not cap oneDNN below them."""
    if not cpu_has_amx_tiles():
        return False
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    return cap in ("ALL", "DEFAULT") or "AMX" in cap


def slow_cpu_bf16_note(precision: str, device: torch.device, key: str = "precision") -> str | None:
    """A line to print when a bf16 mode (``bf16-mixed``) runs on a CPU without usable AMX
    tiles, where bf16 convolutions are slower than fp32 ones (docs/benchmarks.md, "Training in
    bf16 with channels-last weights"); None otherwise."""
    if not precision.startswith("bf16") or device.type != "cpu" or cpu_has_usable_amx():
        return None
    return (
        f"{key}={precision} on a CPU without AMX tiles (or with oneDNN kept off them): bf16 "
        f"convolutions run slower than fp32 ones there; {key}=32 is the faster choice"
    )

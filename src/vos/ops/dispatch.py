"""Choosing between an op's PyTorch reference and its Triton kernel.

``backend="auto"`` takes the kernel on CUDA tensors when the kernel supports the case and the
reference otherwise; ``"torch"`` always takes the reference; ``"triton"`` insists on the
kernel: on CPU tensors this needs Triton's interpreter (``TRITON_INTERPRET=1`` set before
``vos.kernels`` is imported), which is how the tests run kernels on a machine without a GPU.
``"flex"`` (``memory_read`` only) runs the read through ``torch.nn.attention.flex_attention``,
the baseline the kernel is measured against (`vos.ops.flex_read`); ``"auto"`` never picks it.
"""

from __future__ import annotations

import os
from typing import Literal

from torch import Tensor

Backend = Literal["auto", "torch", "triton", "flex"]
BACKENDS = ("auto", "torch", "triton", "flex")


class BackendError(RuntimeError):
    """The requested backend cannot run this call; the message says why and what to do."""


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def flex_attention_available() -> bool:
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(
    op: str,
    backend: str,
    tensors: list[Tensor],
    supported: str | None = None,
    *,
    flex_supported: str | None = "it has no flex_attention path",
) -> str:
    """``"torch"``, ``"triton"`` or ``"flex"`` for a call of ``op``.

    ``supported`` is None when the kernel handles this case, else a short reason why not
    (for example "top_k is not implemented in the kernel"), which ``"auto"`` falls back on
    and ``"triton"`` reports. ``flex_supported`` is the same for ``"flex"``, which only
    ``memory_read`` has; flex runs on any device flex_attention runs on (CPU included).
    """
    if backend not in BACKENDS:
        raise ValueError(f"{op}: unknown backend {backend!r}; expected one of {BACKENDS}")
    if backend == "torch":
        return "torch"
    if backend == "flex":
        if flex_supported is not None:
            raise BackendError(f"{op}: backend='flex' cannot run this call: {flex_supported}")
        if not flex_attention_available():
            raise BackendError(
                f"{op}: backend='flex' needs torch.nn.attention.flex_attention (PyTorch >= 2.5)"
            )
        return "flex"
    on_cuda = all(t.is_cuda for t in tensors)
    if backend == "auto":
        return "triton" if on_cuda and supported is None and triton_available() else "torch"
    if not triton_available():
        raise BackendError(f"{op}: backend='triton' but Triton is not installed")
    if supported is not None:
        raise BackendError(f"{op}: backend='triton' cannot run this call: {supported}")
    if not on_cuda and not interpreter_enabled():
        raise BackendError(
            f"{op}: backend='triton' on CPU tensors needs Triton's interpreter: set "
            "TRITON_INTERPRET=1 before importing vos (or move the tensors to CUDA)"
        )
    return "triton"

import pytest
import torch

from vos import ops
from vos.ops.dispatch import BackendError, resolve_backend


def _inputs():
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(1, 4, 6, generator=g),
        torch.randn(1, 4, 9, generator=g),
        torch.randn(1, 3, 9, generator=g),
    )


def test_triton_on_cpu_without_the_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    query, key, value = _inputs()
    with pytest.raises(BackendError, match="TRITON_INTERPRET=1"):
        ops.memory_read(query, key, value, backend="triton")
    with pytest.raises(BackendError, match="TRITON_INTERPRET=1"):
        ops.window_read(
            query.view(1, 4, 2, 3),
            key[..., :6].reshape(1, 4, 2, 3),
            value[..., :6].reshape(1, 3, 2, 3),
            radius=1,
            backend="triton",
        )


def test_auto_takes_the_reference_on_cpu_and_unknown_backends_are_named():
    query, key, value = _inputs()
    assert resolve_backend("memory_read", "auto", [query, key, value]) == "torch"
    assert resolve_backend("memory_read", "torch", [query]) == "torch"
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        resolve_backend("memory_read", "cuda", [query])
    with pytest.raises(BackendError, match="cannot run this call: top_k"):
        resolve_backend("memory_read", "triton", [query], supported="top_k is reference only")

import math

import pytest
import torch

from vos import ops


def naive_read(qk, mk, mv, similarity="dot", memory_mask=None, top_k=None):
    """Loop-free but explicit: S[b, n, m], softmax over n, weighted sum of values."""
    ck = qk.shape[1]
    if similarity == "dot":
        s = torch.einsum("bcn,bcm->bnm", mk, qk) / math.sqrt(ck)
    else:
        s = -((mk.unsqueeze(3) - qk.unsqueeze(2)) ** 2).sum(1) / math.sqrt(ck)
    if memory_mask is not None:
        s = s.masked_fill(~memory_mask.unsqueeze(2), -math.inf)
    if top_k is not None:
        kth = s.sort(dim=1, descending=True).values[:, top_k - 1 : top_k]
        s = s.masked_fill(s < kth, -math.inf)
    return torch.einsum("bcn,bnm->bcm", mv, torch.softmax(s, dim=1))


@pytest.fixture
def qkv():
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(2, 8, 12, generator=g, dtype=torch.float64),
        torch.randn(2, 8, 20, generator=g, dtype=torch.float64),
        torch.randn(2, 5, 20, generator=g, dtype=torch.float64),
    )


@pytest.mark.parametrize("similarity", ["dot", "l2"])
def test_memory_read_matches_naive(qkv, similarity):
    qk, mk, mv = qkv
    out = ops.memory_read(qk, mk, mv, similarity=similarity)
    assert out.shape == (2, 5, 12)
    torch.testing.assert_close(out, naive_read(qk, mk, mv, similarity), rtol=1e-5, atol=1e-5)


def test_l2_drops_only_the_query_norm(qkv):
    """STCN's logits differ from −‖q−k‖² by a per-query constant only."""
    qk, mk, _ = qkv
    s = ops.affinity_logits(qk, mk, similarity="l2", scale=1.0)
    full = -((mk.unsqueeze(3) - qk.unsqueeze(2)) ** 2).sum(1)
    difference = s - full
    torch.testing.assert_close(difference, difference[:, :1].expand_as(difference))


@pytest.mark.parametrize("similarity", ["dot", "l2"])
def test_query_major_logits_are_the_same_logits_transposed(qkv, similarity):
    """The reference's softmax runs over query-major logits: the same numbers, [B, M, N]."""
    qk, mk, _ = qkv
    memory_major = ops.affinity_logits(qk, mk, similarity=similarity, scale=0.3)
    query_major = ops.affinity_logits(qk, mk, similarity=similarity, scale=0.3, query_major=True)
    assert query_major.shape == (2, 12, 20) and query_major.is_contiguous()
    torch.testing.assert_close(query_major, memory_major.transpose(1, 2))
    if similarity == "l2":  # and they are −‖q−k‖²·scale up to a per-query constant
        full = -((mk.unsqueeze(2) - qk.unsqueeze(3)) ** 2).sum(1) * 0.3
        difference = query_major - full
        torch.testing.assert_close(difference, difference[:, :, :1].expand_as(difference))


@pytest.mark.parametrize("top_k", [None, 3])
def test_a_bias_that_excludes_every_memory_pixel_reads_zero(qkv, top_k):
    """A query pixel whose bias is −∞ on every memory pixel reads 0, not NaN (the guarded
    softmax); the other pixels read the biased softmax, with or without truncation."""
    qk, mk, mv = qkv
    bias = torch.zeros(2, 20, 12, dtype=qk.dtype)
    bias[:, :, 4] = -math.inf
    bias[:, :7, 9] = -math.inf
    out = ops.memory_read(qk, mk, mv, bias=bias, top_k=top_k)
    assert torch.isfinite(out).all() and torch.all(out[:, :, 4] == 0)
    s = torch.einsum("bcn,bcm->bnm", mk, qk) / math.sqrt(qk.shape[1]) + bias
    if top_k is not None:
        kth = s.sort(dim=1, descending=True).values[:, top_k - 1 : top_k]
        s = s.masked_fill(s < kth, -math.inf)
    kept = [m for m in range(12) if m != 4]
    expected = torch.einsum("bcn,bnm->bcm", mv, torch.softmax(s[:, :, kept], dim=1))
    torch.testing.assert_close(out[:, :, kept], expected, rtol=1e-5, atol=1e-5)


def test_memory_mask_excludes_pixels(qkv):
    qk, mk, mv = qkv
    mask = torch.zeros(2, 20, dtype=torch.bool)
    mask[:, 5:13] = True
    out = ops.memory_read(qk, mk, mv, memory_mask=mask)
    cropped = ops.memory_read(qk, mk[:, :, 5:13], mv[:, :, 5:13])
    torch.testing.assert_close(out, cropped)
    all_true = ops.memory_read(qk, mk, mv, memory_mask=torch.ones(2, 20, dtype=torch.bool))
    torch.testing.assert_close(all_true, ops.memory_read(qk, mk, mv))


def test_fully_masked_memory_reads_zero(qkv):
    qk, mk, mv = qkv
    mask = torch.zeros(2, 20, dtype=torch.bool)
    mask[0] = True
    out = ops.memory_read(qk, mk, mv, memory_mask=mask)
    assert torch.all(out[1] == 0)
    torch.testing.assert_close(out[0], ops.memory_read(qk[:1], mk[:1], mv[:1])[0])


def test_query_mask_zeroes_queries(qkv):
    qk, mk, mv = qkv
    qmask = torch.zeros(2, 12, dtype=torch.bool)
    qmask[:, :4] = True
    out = ops.memory_read(qk, mk, mv, query_mask=qmask)
    assert torch.all(out[:, :, 4:] == 0)
    torch.testing.assert_close(out[:, :, :4], ops.memory_read(qk, mk, mv)[:, :, :4])


def test_top_k(qkv):
    qk, mk, mv = qkv
    torch.testing.assert_close(ops.memory_read(qk, mk, mv, top_k=20), ops.memory_read(qk, mk, mv))
    torch.testing.assert_close(ops.memory_read(qk, mk, mv, top_k=50), ops.memory_read(qk, mk, mv))
    torch.testing.assert_close(
        ops.memory_read(qk, mk, mv, top_k=3), naive_read(qk, mk, mv, top_k=3)
    )


def test_gradcheck_reference():
    g = torch.Generator().manual_seed(1)
    qk = torch.randn(1, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    mk = torch.randn(1, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    mv = torch.randn(1, 2, 5, generator=g, dtype=torch.float64, requires_grad=True)
    for similarity in ("dot", "l2"):
        assert torch.autograd.gradcheck(
            lambda a, b, c, s=similarity: ops.memory_read(a, b, c, similarity=s), (qk, mk, mv)
        )


def test_shape_errors_are_clear(qkv):
    qk, mk, mv = qkv
    with pytest.raises(ValueError, match="must share"):
        ops.memory_read(qk, mk[:, :4], mv)
    with pytest.raises(ValueError, match="must share"):
        ops.memory_read(qk, mk, mv[:, :, :7])
    with pytest.raises(ValueError, match="unknown similarity"):
        ops.memory_read(qk, mk, mv, similarity="cosine")


def test_zero_bias_equals_no_bias(qkv):
    qk, mk, mv = qkv
    zeros = torch.zeros(2, 20, 12, dtype=qk.dtype)
    torch.testing.assert_close(ops.memory_read(qk, mk, mv, bias=zeros), ops.memory_read(qk, mk, mv))
    # an additive bias shifts the logits exactly
    bias = torch.randn(2, 20, 12, generator=torch.Generator().manual_seed(3), dtype=qk.dtype)
    s = ops.affinity_logits(qk, mk) + bias
    expected = torch.einsum("bcn,bnm->bcm", mv, torch.softmax(s, dim=1))
    torch.testing.assert_close(ops.memory_read(qk, mk, mv, bias=bias), expected)


@pytest.mark.parametrize("masks", ["none", "boxes", "scattered"])
def test_out_receives_the_readout_in_place(qkv, masks):
    """``out=`` (the read's channels of a larger readout, as RMNet's inference assembles it):
    the same readout, written into the caller's strided buffer, zeros where the query mask is
    False, nothing written beside it."""
    qk, mk, mv = qkv
    options = {}
    if masks != "none":
        memory_mask = torch.zeros(2, 20, dtype=torch.bool)
        query_mask = torch.zeros(2, 12, dtype=torch.bool)
        if masks == "boxes":  # cropped by strided slices
            memory_mask[:, 5:13], query_mask[:, 2:7] = True, True
        else:  # runs of unequal lengths: cropped by index
            memory_mask[:, [0, 1, 4, 9, 10, 15]], query_mask[:, [1, 2, 5, 9]] = True, True
        options = dict(memory_mask=memory_mask, query_mask=query_mask)
    expected = ops.memory_read(qk, mk, mv, **options)
    larger = torch.full((2, 2 * 5, 12), float("nan"), dtype=qk.dtype)
    out = larger[:, :5]
    returned = ops.memory_read(qk, mk, mv, out=out, **options)
    assert returned.data_ptr() == out.data_ptr()
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert larger[:, 5:].isnan().all()
    with pytest.raises(ValueError, match=r"out must be \[B, Cv, M\]"):
        ops.memory_read(qk, mk, mv, out=larger)
    with pytest.raises(ValueError, match="out must have memory_value's dtype"):
        ops.memory_read(qk, mk, mv, out=out.float())
    with pytest.raises(ValueError, match="no autograd"):
        ops.memory_read(qk.clone().requires_grad_(), mk, mv, out=out)

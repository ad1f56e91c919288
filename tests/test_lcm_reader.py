"""LCM's reader: GRM (STM's read), PGM (Eq. 3–6) and ORM (Eq. 7–11), in float64."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from vos import ops
from vos.model.memory import MemoryBank
from vos.model.readers.base import FrameFeatures
from vos.model.readers.lcm import (
    FIRST_VALUE,
    LOCAL_KEY,
    LCMReader,
    heatmap,
    pgm_map_bytes,
    position_map,
)
from vos.model.readers.stm import global_read

CK, CV, H, W = 8, 6, 3, 4


def _reader(**overrides) -> LCMReader:
    torch.manual_seed(0)
    settings = dict(key_channels=CK, value_channels=CV, se_reduction=2)
    settings.update(overrides)
    return LCMReader(**settings).double().eval()


def _frame(generator, index: int) -> FrameFeatures:
    def rand(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    return FrameFeatures(
        index=index,
        frames=torch.zeros(1, 3, 16 * H, 16 * W, dtype=torch.float64),
        features={},
        keys={"res4": rand(1, CK, H, W), LOCAL_KEY: rand(1, CK, H, W)},
        query_value=rand(1, CV, H, W),
    )


def _masks(objects: int, frames: int) -> torch.Tensor:
    """[T, 1, O, 16H, 16W] boxes: object o covers columns o..o+1 of the res4 grid."""
    masks = torch.zeros(frames, 1, objects, 16 * H, 16 * W, dtype=torch.float64)
    for o in range(objects):
        masks[:, 0, o, :, 16 * o : 16 * (o + 2)] = 1.0
    return masks


def _memory(reader, generator, objects=2, frames=2, late_object=False, memorised=None):
    """A memory of ``frames`` frames; ``memorised`` (a list) receives each memorised frame."""
    memory = MemoryBank()
    masks = _masks(objects, frames)
    for t in range(frames):
        frame = _frame(generator, t)
        if memorised is not None:
            memorised.append(frame)
        values = {"res4": torch.randn(1, objects, CV, H, W, generator=generator).double()}
        valid = torch.ones(1, objects, dtype=torch.bool)
        probs = masks[t]
        if late_object and t == 0:
            valid[:, -1] = False
            probs = probs.clone()
            probs[:, -1] = 0.0
        extras = reader.memorize(frame, values, memory, object_probs=probs)
        memory.add(t, frame.keys, values, valid, permanent=t == 0, extras=extras)
    return memory, masks


def test_position_map_normalises_over_the_query_and_weights_by_the_previous_mask():
    generator = torch.Generator().manual_seed(1)
    reader = _reader()
    memory, masks = _memory(reader, generator)
    query = _frame(generator, 2)
    previous = masks[-1] * 0.8  # soft previous masks
    maps = reader.position_maps(query, memory, reader.new_state(previous_probs=previous))

    pos = ops.sine_positional_encoding(CK, H, W).double()
    f_n = reader.position_embed
    p_query = f_n(query.keys[LOCAL_KEY] + pos).flatten(2)[0]  # [C, M]
    p_memory = f_n(memory.keys(LOCAL_KEY, positions=[-1])[:, :, 0] + pos).flatten(2)[0]
    response = torch.softmax(p_memory.T @ p_query, dim=1)  # rows: previous pixels; over query
    assert torch.allclose(response.sum(dim=1), torch.ones(H * W, dtype=torch.float64))
    for o in range(2):
        prior = torch.exp(torch.nn.functional.adaptive_avg_pool2d(previous[:, o], (H, W))) / math.e
        weighted = response * prior.flatten()[:, None]
        expected = weighted.topk(8, dim=0).values.mean(dim=0)
        assert torch.allclose(maps[0, o, 0].flatten(), expected, atol=1e-12)


def test_prior_damps_background_by_1_over_e_and_top_k_of_all_is_the_mean():
    """g(x) = exp(x)/e at reader level: a previous mask of 0 everywhere multiplies every
    response by 1/e (damped, never zeroed), a mask of 1 leaves it as without a mask (g = 1)."""
    generator = torch.Generator().manual_seed(5)
    reader = _reader()
    memory, _ = _memory(reader, generator)
    query = _frame(generator, 2)
    shape = (1, 2, 16 * H, 16 * W)
    unknown = reader.position_maps(query, memory, reader.new_state())
    background = reader.position_maps(
        query, memory, reader.new_state(previous_probs=torch.zeros(shape, dtype=torch.float64))
    )
    foreground = reader.position_maps(
        query, memory, reader.new_state(previous_probs=torch.ones(shape, dtype=torch.float64))
    )
    assert torch.all(unknown > 0)
    torch.testing.assert_close(background, unknown / math.e, rtol=1e-12, atol=0)
    torch.testing.assert_close(foreground, unknown, rtol=1e-12, atol=0)
    similarity = torch.softmax(torch.randn(2, 5, 7, dtype=torch.float64), dim=2)
    prior = torch.rand(2, 5, dtype=torch.float64)
    assert torch.allclose(
        position_map(similarity, prior, 5), (similarity * prior[..., None]).mean(dim=1)
    )


def test_orm_equations_on_a_small_set():
    """Eq. 7–11 written out pixel by pixel for one object."""
    reader = _reader()
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():  # g starts at zero (no relation); give it weights to check Eq. 7–8
        reader.relation_value.weight.normal_(generator=generator)
        reader.relation_value.bias.normal_(generator=generator)
    query = torch.randn(1, CV, H * W, generator=generator).double()
    first = torch.randn(1, CV, H * W, generator=generator).double()
    members = torch.zeros(1, H * W, dtype=torch.float64)
    members[0, [1, 2, 5]] = 1.0
    out = reader.relate(query, first, members)

    d = H * W
    conv = reader.relation_value
    g = conv.weight[:, :, 0, 0]
    g_q = g @ query[0] + conv.bias[:, None]
    g_f = g @ first[0] + conv.bias[:, None]
    elements = [1, 2, 5]
    new_query = query[0].clone()
    for j in range(d):
        new_query[:, j] += sum((query[0, :, j] @ first[0, :, i]) * g_f[:, i] for i in elements) / d
    new_set = {
        i: first[0, :, i] + sum((first[0, :, i] @ query[0, :, j]) * g_q[:, j] for j in range(d)) / d
        for i in elements
    }
    pooled = torch.stack(list(new_set.values())).mean(dim=0)
    weights = reader.excite(pooled[None])[0]
    assert torch.allclose(out[0], new_query * weights[:, None], atol=1e-12)


def test_orm_relation_starts_at_zero():
    """g is zero-initialised: a fresh ORM is SE re-weighting of the query value alone."""
    reader = _reader()
    generator = torch.Generator().manual_seed(3)
    query = torch.randn(1, CV, H * W, generator=generator).double()
    first = torch.randn(1, CV, H * W, generator=generator).double()
    members = torch.ones(1, H * W, dtype=torch.float64)
    weights = reader.excite(first[0].mean(dim=1)[None])[0]
    assert torch.allclose(reader.relate(query, first, members)[0], query[0] * weights[:, None])


def test_orm_with_an_empty_set_leaves_the_query_value():
    reader = _reader()
    query = torch.randn(2, CV, H * W, dtype=torch.float64)
    first = torch.randn(2, CV, H * W, dtype=torch.float64)
    members = torch.zeros(2, H * W, dtype=torch.float64)
    members[0, 3] = 1.0
    out = reader.relate(query, first, members)
    assert torch.equal(out[1], query[1])
    assert not torch.equal(out[0], query[0])


def test_first_sets_use_the_frame_each_object_was_given_in():
    """F comes from the first value v^F: the query value (the embedding v^Q comes from) of the
    frame each object was given in, not the memory encoder's value."""
    reader = _reader()
    frames = []
    memory, masks = _memory(
        reader, torch.Generator().manual_seed(3), late_object=True, memorised=frames
    )
    state = reader.new_state()
    values, members = reader.first_sets(memory, state)
    assert torch.equal(values[0, 0], frames[0].query_value[0].flatten(1))  # given at frame 0
    assert torch.equal(values[0, 1], frames[1].query_value[0].flatten(1))  # joined at frame 1
    stored = memory.values("res4")  # [1, O, Cv, T, h, w]: the memory value is another embedding
    assert not torch.allclose(values[0, 0], stored[0, 0, :, 0].flatten(1))
    # object o's set: res4 columns o and o+1
    expected = torch.zeros(H, W)
    expected[:, 1:3] = 1
    assert torch.equal(members[0, 1].view(H, W).float(), expected)
    assert state.first_sets[0] is values  # cached for the video


def test_orm_does_not_read_the_memory_value():
    """With GRM and PGM off, the readout is ORM's alone: it depends on the given frame's query
    value and mask, and not on the values the memory encoder stored."""
    generator = torch.Generator().manual_seed(8)
    reader = _reader(use_grm=False, use_pgm=False)
    with torch.no_grad():
        reader.relation_value.weight.normal_(generator=generator)
    memory, masks = _memory(reader, generator)
    query = _frame(generator, 2)
    before = reader.read(query, memory, reader.new_state()).features["res4"]
    for entry in memory.entries:
        entry.values = {"res4": entry.values["res4"] * 3.0 + 1.0}
    after = reader.read(query, memory, reader.new_state()).features["res4"]
    torch.testing.assert_close(after, before, rtol=1e-12, atol=1e-12)


def test_memorize_keeps_the_query_value_of_possible_given_frames_only():
    """v^F is stored with a frame that may be an object's given frame (an empty memory, or an
    object no memory frame holds yet) and an empty placeholder with every other frame."""
    generator = torch.Generator().manual_seed(9)
    reader = _reader()
    frames = []
    memory, _ = _memory(reader, generator, frames=3, memorised=frames)
    stored = memory.extras(FIRST_VALUE)
    assert stored[0].shape == (1, 2, CV, H, W)
    assert torch.equal(stored[0][0, 1], frames[0].query_value[0])
    assert [x.numel() for x in stored[1:]] == [0, 0]
    late, _ = _memory(reader, generator, frames=3, late_object=True)
    assert [x.dim() for x in late.extras(FIRST_VALUE)] == [5, 5, 3]  # object 1 joins at 1
    without_orm = _reader(use_orm=False).memorize(
        frames[0], {"res4": stored[0]}, MemoryBank(), object_probs=torch.ones(1, 2, 16 * H, 16 * W)
    )
    assert FIRST_VALUE not in without_orm


def test_pgm_enters_the_merge_at_the_scale_of_the_query_value():
    """Eq. 6's map P averages softmax rows over the query, so it is about 1/(H·W): the merge
    takes y_PGM / max_j P(j), which is v^Q itself at each object's peak, and makes up a
    sizeable part of the merge beside ORM's full-size term."""
    generator = torch.Generator().manual_seed(10)
    full = _reader()
    memory, masks = _memory(full, generator)
    reader = _reader(use_orm=False)
    query = _frame(generator, 2)
    state = reader.new_state(previous_probs=masks[-1])
    maps = reader.position_maps(query, memory, state).detach()
    assert float(maps.amax()) < 0.5  # Eq. 6's P is small, as the docstring says
    merged = reader.read(query, memory, state).features["res4"][0, :, CV:]  # [O, Cv, h, w]
    value = query.query_value[0]
    for o in range(2):
        peak = int(maps[0, o, 0].flatten().argmax())
        torch.testing.assert_close(
            merged[o].flatten(1)[:, peak], value.flatten(1)[:, peak], rtol=1e-12, atol=1e-12
        )
    out = full.read(query, memory, full.new_state(previous_probs=masks[-1])).features["res4"]
    pgm = heatmap(maps) * value
    share = pgm.pow(2).mean().sqrt() / out[:, :, CV:].pow(2).mean().sqrt()
    assert share > 0.25, float(share)


def test_switches_merge_as_documented():
    generator = torch.Generator().manual_seed(4)
    query = _frame(generator, 2)
    full = _reader()
    memory, masks = _memory(full, generator)
    state = full.new_state(previous_probs=masks[-1])
    value = query.query_value.unsqueeze(1)
    grm = global_read(query.keys["res4"], memory)
    out = full.read(query, memory, state).features["res4"]
    assert torch.allclose(out[:, :, :CV], grm)

    stm_like = _reader(use_pgm=False, use_orm=False).read(query, memory, state)
    assert torch.allclose(stm_like.features["res4"][:, :, CV:], value.expand(-1, 2, -1, -1, -1))
    pgm_only = _reader(use_orm=False)
    maps = pgm_only.position_maps(query, memory, state)
    out = pgm_only.read(query, memory, state).features["res4"]
    peak = maps.amax(dim=(-2, -1), keepdim=True)
    assert torch.allclose(out[:, :, CV:], maps / peak * value)
    no_grm = _reader(use_grm=False).read(query, memory, state).features["res4"]
    assert not no_grm[:, :, :CV].any()
    with pytest.raises(ValueError, match="at least one"):
        _reader(use_grm=False, use_pgm=False, use_orm=False)


def test_merge_rule_today_is_position_map_times_value_plus_orm():
    """The whole readout against today's combination rule, term by term (written out from
    Eq. 1–11 as the reader's docstring states them; update this one function when the PGM/ORM
    equations change): ``[y_GRM, y_PGM / max_j P(j) + y_ORM]`` with

    - y_GRM = Σ_n softmax_n(k_n·q / √Ck) v_n over every memory frame (Eq. 1–2);
    - P(j) = mean(top-K_i softmax_j(p^M(i)·p^Q(j)) · exp(M_{t−1}(i))/e), y_PGM = P · v^Q
      (Eq. 3–6), merged divided by the map's maximum over the query (per object);
    - y_ORM = (v^Q + 1/d Σ_i (v^Q·f_i) g(f_i)) · SE(GAP(F + F_Q)) over the set F = {f_i} of
      the first value v^F, the *query value* of the frame the object was given in (frame 0),
      at the cells whose area-averaged mask is ≥ 0.5 (Eq. 7–11), g with random weights so
      that the relation is not zero.

    Dropping any term (PGM when ORM is on, ORM, the previous-mask prior, GRM, the map's
    rescaling) or taking F from the memory value fails."""
    generator = torch.Generator().manual_seed(6)
    reader = _reader()
    with torch.no_grad():
        reader.relation_value.weight.normal_(generator=generator)
        reader.relation_value.bias.normal_(generator=generator)
    frames = []
    memory, masks = _memory(reader, generator, objects=2, frames=2, memorised=frames)
    query = _frame(generator, 2)
    previous = masks[-1] * 0.7
    out = reader.read(query, memory, reader.new_state(previous_probs=previous)).features["res4"]
    assert out.shape == (1, 2, 2 * CV, H, W)

    d = H * W
    q_key = query.keys["res4"].flatten(2)[0]  # [Ck, M]
    m_keys = memory.keys("res4").flatten(2)[0]  # [Ck, T·M]
    m_values = memory.values("res4").flatten(3)[0]  # [O, Cv, T·M]
    grm = m_values @ torch.softmax(m_keys.T @ q_key / math.sqrt(CK), dim=0)  # [O, Cv, M]

    pos = ops.sine_positional_encoding(CK, H, W).double()
    f_n = reader.position_embed
    p_query = f_n(query.keys[LOCAL_KEY] + pos).flatten(2)[0]
    p_memory = f_n(memory.keys(LOCAL_KEY, positions=[-1])[:, :, 0] + pos).flatten(2)[0]
    response = torch.softmax(p_memory.T @ p_query, dim=1)  # [N previous, M query]
    v_q = query.query_value.flatten(2)[0]  # [Cv, M]
    v_first = frames[0].query_value.flatten(2)[0]  # v^F: frame 0's query value, [Cv, M]
    conv = reader.relation_value
    weight, bias = conv.weight[:, :, 0, 0], conv.bias[:, None]
    for o in range(2):
        prior = torch.exp(F.adaptive_avg_pool2d(previous[:, o], (H, W))).flatten() / math.e
        position = (response * prior[:, None]).topk(reader.top_k, dim=0).values.mean(dim=0)
        pgm = position / position.max() * v_q
        given_mask = F.adaptive_avg_pool2d(masks[0, :, o], (H, W)).flatten()
        elements = (given_mask >= 0.5).nonzero().squeeze(1)
        assert 0 < len(elements) < d
        f = v_first[:, elements]  # F: the given frame's query value at the set's cells
        affinity = f.T @ v_q  # [|F|, M]
        v_from_set = (weight @ f + bias) @ affinity / d  # Eq. 8
        set_from_v = (weight @ v_q + bias) @ affinity.T / d  # Eq. 7
        excitation = reader.excite((f + set_from_v).mean(dim=1)[None])[0]
        orm = (v_q + v_from_set) * excitation[:, None]
        merged = out[0, o, CV:].flatten(1)
        torch.testing.assert_close(out[0, o, :CV].flatten(1), grm[o], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(merged, pgm + orm, rtol=1e-12, atol=1e-12)
        for term in (pgm, orm):  # each term is a sizeable part of the merge
            assert (merged - term).abs().max() > 1e-3


class _LargestMap(TorchDispatchMode):
    """Records the largest number of elements of any pixel-by-pixel map an op returns (a
    tensor with two dimensions of at least ``pixels``)."""

    def __init__(self, pixels: int):
        super().__init__()
        self.pixels = pixels
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and sum(d >= self.pixels for d in t.shape) >= 2:
                self.largest = max(self.largest, t.numel())
        return out


def test_pgm_builds_one_map_per_object_at_a_time():
    """With three objects, the largest pixel-by-pixel map PGM builds is one H·W × H·W map (the
    size `pgm_map_bytes` reports), not one per object at once."""
    generator = torch.Generator().manual_seed(7)
    reader = _reader()
    memory, masks = _memory(reader, generator, objects=3)
    query = _frame(generator, 2)
    state = reader.new_state(previous_probs=masks[-1] * 0.8)
    with _LargestMap(H * W) as guard:
        maps = reader.position_maps(query, memory, state)
    assert maps.shape == (1, 3, 1, H, W)
    assert guard.largest * 8 == pgm_map_bytes(H, W, dtype_bytes=8) == (H * W) ** 2 * 8

"""LMRC's reader: GMR, LMR, SLMR and the memory comparator (§III-B, §III-C), and the scale loss
(Eq. 12), each against a direct evaluation of the paper's equation."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.utils._python_dispatch import TorchDispatchMode

from vos import ops
from vos.model.memory import MemoryBank
from vos.model.readers.base import FrameFeatures, ReaderState
from vos.model.readers.lmrc import (
    LMRCReader,
    comparison_block,
    memory_split,
    scale_loss,
    window_read_and_reorganise,
)

CK = 6
VALUES = {"res4": 5, "res3": 4, "res2": 3}
FACTORS = {"res4": 1, "res3": 2, "res2": 4}
H4, W4 = 3, 4
SORTED_SCALES = sorted(FACTORS)


def _reader(**overrides) -> LMRCReader:
    settings = dict(
        key_channels=CK,
        value_channels=VALUES["res4"],
        fine_value_channels={"res3": VALUES["res3"], "res2": VALUES["res2"]},
    )
    settings.update(overrides)
    return LMRCReader(**settings).double().eval()


def _frame(generator, index, batch=1, h4=H4, w4=W4) -> FrameFeatures:
    keys = {
        s: torch.randn(batch, CK, f * h4, f * w4, generator=generator, dtype=torch.float64)
        for s, f in FACTORS.items()
    }
    return FrameFeatures(
        index=index,
        frames=torch.zeros(batch, 3, 16 * h4, 16 * w4, dtype=torch.float64),
        features={},
        keys=keys,
        query_value=torch.randn(batch, VALUES["res4"], h4, w4, generator=generator).double(),
    )


def _values(generator, objects, batch=1, h4=H4, w4=W4) -> dict[str, torch.Tensor]:
    return {
        s: torch.randn(batch, objects, VALUES[s], f * h4, f * w4, generator=generator).double()
        for s, f in FACTORS.items()
    }


def _memory(generator, frames, objects=2) -> MemoryBank:
    memory = MemoryBank()
    for t in range(frames):
        f = _frame(generator, t)
        memory.add(t, f.keys, _values(generator, objects), permanent=t == 0)
    return memory


def _window_logits(query_key, memory_key, radius):
    """Eq. 4: S[b, i, j] = −‖k_i^Q − k_j^L‖² / √Ck inside the (2d+1)² window around i, −∞
    elsewhere, ``[B, M, N]`` over the whole grid (dense, float64)."""
    batch, channels, height, width = query_key.shape
    q = query_key.flatten(2).transpose(1, 2)  # [B, M, C]
    k = memory_key.flatten(2).transpose(1, 2)
    logits = -torch.cdist(q, k).pow(2) / math.sqrt(channels)
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    inside = ((ys[:, None] - ys[None]).abs() <= radius) & ((xs[:, None] - xs[None]).abs() <= radius)
    return logits.masked_fill(~inside, float("-inf"))


def _window_affinity(query_key, memory_key, radius):
    """Eq. 4 with the softmax: W[b, y, x, p, q] over the whole memory grid, 0 outside the
    (2d+1)² window (dense, float64: the reference for small grids)."""
    batch, _, height, width = query_key.shape
    logits = _window_logits(query_key, memory_key, radius)
    return torch.softmax(logits, dim=2).view(batch, height, width, height, width)


# -- LMR -----------------------------------------------------------------------------------
@pytest.mark.parametrize("radius", [1, 2])
def test_local_read_is_the_dense_read_restricted_to_the_window(radius):
    g = torch.Generator().manual_seed(0)
    query = torch.randn(2, CK, 6, 7, generator=g, dtype=torch.float64)
    key = torch.randn(2, CK, 6, 7, generator=g, dtype=torch.float64)
    value = torch.randn(2, 3, 6, 7, generator=g, dtype=torch.float64)
    read, _, _ = window_read_and_reorganise(query, key, value, [], radius=radius)
    weights = _window_affinity(query, key, radius).flatten(3)  # [B, h, w, N]
    expected = torch.einsum("byxn,bcn->bcyx", weights, value.flatten(2))
    torch.testing.assert_close(read, expected)


def test_reader_local_readouts_match_the_window_reads_of_the_previous_frame():
    """Setting C (LMR at every scale, no comparator): each scale's readout is the window read
    of the most recent memory frame, whatever the older frames hold."""
    g = torch.Generator().manual_seed(1)
    reader = _reader(sequential_scales=[], comparator=False)
    memory = _memory(g, 3)
    query = _frame(g, 3)
    features = reader.read(query, memory, ReaderState()).features
    previous = memory.entries[-1]
    for scale in ("res3", "res2"):
        expected, _, _ = window_read_and_reorganise(
            query.keys[scale],
            previous.keys[scale],
            previous.values[scale].flatten(1, 2),
            [],
            radius=2,
        )
        torch.testing.assert_close(features[scale], expected.view_as(features[scale]))


# -- SLMR ----------------------------------------------------------------------------------
def test_sequential_reorganisation_is_eq_6_on_the_coarse_affinity():
    """K^S(x, y) = Σ_{u,v} W^{L_{r+1}}(x̄, ȳ; x̄+u, ȳ+v) · K^L_r(x + 2u, y + 2v), x̄ = ⌊x/2⌋,
    evaluated pixel by pixel from the dense coarse affinity."""
    g = torch.Generator().manual_seed(2)
    radius, h, w = 1, 3, 4
    coarse_query = torch.randn(1, CK, h, w, generator=g, dtype=torch.float64)
    coarse_memory = torch.randn(1, CK, h, w, generator=g, dtype=torch.float64)
    fine = torch.randn(1, 2, 2 * h, 2 * w, generator=g, dtype=torch.float64)
    _, _, (moved,) = window_read_and_reorganise(
        coarse_query, coarse_memory, torch.zeros(1, 1, h, w).double(), [fine], radius=radius
    )
    affinity = _window_affinity(coarse_query, coarse_memory, radius)[0]  # [h, w, h, w]
    expected = torch.zeros_like(fine)
    for y in range(2 * h):
        for x in range(2 * w):
            for v in range(-radius, radius + 1):
                for u in range(-radius, radius + 1):
                    cy, cx = y // 2 + v, x // 2 + u
                    if 0 <= cy < h and 0 <= cx < w:
                        weight = affinity[y // 2, x // 2, cy, cx]
                        expected[0, :, y, x] += weight * fine[0, :, y + 2 * v, x + 2 * u]
    torch.testing.assert_close(moved, expected)


def test_sequential_reorganisation_on_a_hand_made_affinity():
    """A one-hot coarse affinity (each query cell matches the cell one to its right) moves every
    fine pixel by two: K^S(x, y) = K^L(x + 2, y)."""
    h, w = 2, 4
    # memory keys: a distinct large code per cell (one-hot row ⊕ one-hot column); the query at
    # column x holds column x+1's code (the last column its own): the window's best is one
    # to the right, and every other cell is far
    rows = torch.eye(h, dtype=torch.float64)[:, :, None].expand(h, h, w)
    cols = torch.eye(w, dtype=torch.float64)[:, None, :].expand(w, h, w)
    memory_key = 20.0 * torch.cat([rows, cols])[None]  # [1, h + w, h, w]
    shift = torch.tensor([min(x + 1, w - 1) for x in range(w)])
    query_key = memory_key[..., shift].contiguous()
    fine = torch.arange(2 * h * 2 * w, dtype=torch.float64).view(1, 1, 2 * h, 2 * w)
    _, _, (moved,) = window_read_and_reorganise(
        query_key, memory_key, torch.zeros(1, 1, h, w).double(), [fine], radius=1
    )
    for x in range(2 * w):
        target = x + 2 if x // 2 < w - 1 else x
        torch.testing.assert_close(moved[..., x], fine[..., target], atol=1e-6, rtol=0)


# -- memory comparator ---------------------------------------------------------------------
def test_comparison_block_is_eq_9_and_bounded():
    local = torch.tensor([-3.0, -1.0, 0.0, 2.0, -700.0]).double()
    global_ = torch.tensor([-1.0, -1.0, -2.0, 0.0, -800.0]).double()
    alpha = 3.0
    d = comparison_block(local, global_, alpha)
    direct = alpha / 2 * (local.exp() - global_.exp()) / (local.exp() + global_.exp())
    torch.testing.assert_close(d[:4], direct[:4])
    assert torch.isfinite(d).all() and float(d[4]) == pytest.approx(alpha / 2)  # exp underflows
    assert (d.abs() <= alpha / 2).all()
    assert float(comparison_block(torch.tensor(float("-inf")), torch.tensor(0.0), alpha)) == -1.5


def test_reliability_is_in_0_1_and_rises_when_local_beats_global():
    reader = _reader()
    k = reader.top_k
    global_top = torch.full((1, k, 1, 1), -4.0).double()
    weights = []
    for advantage in (-3.0, -1.0, 0.0, 1.0, 3.0):
        local_top = global_top + advantage
        readout = torch.ones(1, 2, 3, 1, 1).double()
        weighted = reader.weigh("local_res3", readout, local_top, global_top)
        weights.append(float(weighted[0, 0, 0].detach()))
    assert all(0.0 < w < 1.0 for w in weights)
    assert weights == sorted(weights) and weights[0] < weights[-1]
    assert weights[2] == pytest.approx(0.5)


def test_global_top_is_the_k_best_negative_squared_distances():
    g = torch.Generator().manual_seed(3)
    reader = _reader(top_k=3)
    memory = _memory(g, 3)
    query = _frame(g, 3)
    global_positions, local = memory_split(memory)
    assert (global_positions, local) == ([0, 1], 2)  # the previous frame is the local memory
    top = reader.global_top(query.keys["res4"], memory, global_positions)
    q = query.keys["res4"].flatten(2).transpose(1, 2)[0]  # [M, C]
    k = memory.keys("res4", global_positions).flatten(2).transpose(1, 2)[0]  # [N, C]
    similarity = -torch.cdist(q, k).pow(2) / math.sqrt(CK)
    expected = similarity.topk(3, dim=1).values.T.reshape(1, 3, H4, W4)
    torch.testing.assert_close(top, expected)


def test_memory_split_with_one_frame_uses_it_as_both():
    memory = _memory(torch.Generator().manual_seed(4), 1)
    assert memory_split(memory) == ([0], 0)
    with pytest.raises(ValueError, match="memory is empty"):
        memory_split(MemoryBank())


def _reorganised(fine, coarse_affinity, radius):
    """Eq. 6–7: X^S(x, y) = Σ_{u,v} W̃^{L_{r+1}}(x̄, ȳ; x̄+u, ȳ+v) · X̃^{L_r}(x + 2u, y + 2v),
    x̄ = ⌊x/2⌋, for ``fine [B, C, 2h, 2w]`` and the coarse affinity ``[B, h, w, h, w]``."""
    batch, _, fine_h, fine_w = fine.shape
    height, width = fine_h // 2, fine_w // 2
    y = torch.arange(fine_h)[:, None].expand(fine_h, fine_w)
    x = torch.arange(fine_w)[None, :].expand(fine_h, fine_w)
    out = torch.zeros_like(fine)
    for v in range(-radius, radius + 1):
        for u in range(-radius, radius + 1):
            cy, cx = y // 2 + v, x // 2 + u
            inside = (cy >= 0) & (cy < height) & (cx >= 0) & (cx < width)
            cyc, cxc = cy.clamp(0, height - 1), cx.clamp(0, width - 1)
            weight = coarse_affinity[:, y // 2, x // 2, cyc, cxc] * inside  # [B, 2h, 2w]
            source = fine[:, :, (y + 2 * v).clamp(0, fine_h - 1), (x + 2 * u).clamp(0, fine_w - 1)]
            out += weight[:, None] * source
    return out


def test_full_reader_is_eq_1_to_10_written_out():
    """The default reader (GMR, LMR at res4/res3/res2, SLMR at res3/res2, the comparator) on
    three objects, against Eq. 1–10 evaluated densely in float64: GMR over the global memory
    (frames 0–1), LMR over the previous frame (frame 2) inside the 5×5 window, SLMR reading
    K^{S_r}, V^{S_r} re-organised with the coarser LMR affinity, and each local readout scaled
    by H = σ(conv1×1(D)), D = α/2·(e^{S_L} − e^{S_G})/(e^{S_L} + e^{S_G}) over the top-k
    similarities, the global ones upsampled bilinearly res4 → res3 → res2. The objects share
    the similarities, hence H. The 1×1 convs get random weights so that every rank counts."""
    g = torch.Generator().manual_seed(8)
    reader = _reader()
    with torch.no_grad():
        for conv in reader.comparison.values():
            conv.weight.normal_(generator=g)
            conv.bias.normal_(generator=g)
    memory = _memory(g, 3, objects=3)
    query = _frame(g, 3)
    features = reader.read(query, memory, ReaderState()).features
    spec = reader.needs
    assert spec.fine_values_see_frame_features
    assert features["res4"].shape == (1, 3, spec.readout_channels, H4, W4)

    k, radius, alpha = reader.top_k, reader.radius, reader.alpha
    local = memory.entries[2]
    # GMR (Eq. 1–3) and its top-k similarities, upsampled in turn
    global_keys = memory.keys("res4", [0, 1]).flatten(2).transpose(1, 2)  # [1, N, C]
    q4 = query.keys["res4"].flatten(2).transpose(1, 2)  # [1, M, C]
    global_similarity = -torch.cdist(q4, global_keys).pow(2) / math.sqrt(CK)  # [1, M, N]
    global_values = memory.values("res4", [0, 1]).flatten(3)  # [1, O, Cv, N]
    global_readout = torch.einsum("bocn,bmn->bocm", global_values, global_similarity.softmax(2))
    global_top = {"res4": global_similarity.topk(k, dim=2).values.transpose(1, 2)}
    global_top["res4"] = global_top["res4"].reshape(1, k, H4, W4)
    for coarse, fine in (("res4", "res3"), ("res3", "res2")):
        global_top[fine] = F.interpolate(
            global_top[coarse], scale_factor=2, mode="bilinear", align_corners=False
        )

    def weighted(name, scale, logits, values):
        """R = W·V (Eq. 5/8) and H ⊙ R (Eq. 9–10) for one local or sequential read."""
        h, w = FACTORS[scale] * H4, FACTORS[scale] * W4
        read = torch.einsum("bocn,bmn->bocm", values.flatten(3), logits.softmax(2))
        local_top = logits.topk(k, dim=2).values.transpose(1, 2).reshape(1, k, h, w)
        e_local, e_global = local_top.exp(), global_top[scale].exp()
        difference = alpha / 2 * (e_local - e_global) / (e_local + e_global)
        conv = reader.comparison[name]
        reliability = torch.sigmoid(
            torch.einsum("k,bkyx->byx", conv.weight[:, :, 0, 0][0], difference) + conv.bias
        )
        return (read * reliability.flatten(1)[:, None, None]).view(1, 3, -1, h, w)

    local_logits, readouts = {}, {"res4": [], "res3": [], "res2": []}
    for scale in ("res4", "res3", "res2"):  # LMR (Eq. 4–5)
        local_logits[scale] = _window_logits(query.keys[scale], local.keys[scale], radius)
        readouts[scale].append(
            weighted(f"local_{scale}", scale, local_logits[scale], local.values[scale])
        )
    for coarse, scale in (("res4", "res3"), ("res3", "res2")):  # SLMR (Eq. 6–8)
        h, w = FACTORS[coarse] * H4, FACTORS[coarse] * W4
        affinity = local_logits[coarse].softmax(2).view(1, h, w, h, w)
        key = _reorganised(local.keys[scale], affinity, radius)
        value = _reorganised(local.values[scale].flatten(1, 2), affinity, radius)
        logits = _window_logits(query.keys[scale], key, radius)
        readouts[scale].append(
            weighted(f"sequential_{scale}", scale, logits, value.view(1, 3, -1, 2 * h, 2 * w))
        )

    value = query.query_value.unsqueeze(1).expand(-1, 3, -1, -1, -1)
    expected = {
        "res4": torch.cat([global_readout.view(1, 3, -1, H4, W4), *readouts["res4"], value], 2),
        "res3": torch.cat(readouts["res3"], dim=2),
        "res2": torch.cat(readouts["res2"], dim=2),
    }
    assert set(features) == set(expected)
    for scale, tensor in expected.items():
        if scale != "res4":
            assert features[scale].shape[2] == spec.decoder_memory_channels[scale]
        torch.testing.assert_close(features[scale], tensor, rtol=1e-9, atol=1e-10)


def test_settings_need_lmr_one_scale_coarser_for_slmr():
    with pytest.raises(ValueError, match="add res4 to local_scales"):
        _reader(local_scales=[], sequential_scales=["res3"])
    with pytest.raises(ValueError, match="local_scales"):
        _reader(local_scales=["res5"])
    gmr_only = _reader(local_scales=[], sequential_scales=[], comparator=False)
    assert set(gmr_only.needs.key_scales) == {"res4"}
    assert gmr_only.needs.readout_channels == 2 * VALUES["res4"]


# -- memory: no (H·W)² map at res3/res2 ----------------------------------------------------
class _ShapeGuard(TorchDispatchMode):
    """Records every tensor an op returns; ``dense_maps`` are those with two dimensions of at
    least ``pixels`` (a pixel-by-pixel map) or one of at least ``pixels²`` (the same, flattened)."""

    def __init__(self, pixels: int):
        super().__init__()
        self.pixels = pixels
        self.dense_maps: list[tuple[str, tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                large = [d for d in t.shape if d >= self.pixels]
                if len(large) >= 2 or any(d >= self.pixels**2 for d in t.shape):
                    self.dense_maps.append((str(func), tuple(t.shape)))
        return out


def test_no_pixel_by_pixel_map_at_res3_or_res2_forward_and_backward():
    g = torch.Generator().manual_seed(6)
    # the window reads unfold [channels·(2d+1)², pixels]: at most 56·25 = 1400 rows here, so
    # the grid is large enough that only a pixel-by-pixel map has two dimensions of 1536
    h4, w4 = 16, 24
    res3_pixels = (2 * h4) * (2 * w4)  # 1536
    reader = _reader().float().train()
    memory = MemoryBank()
    for t in range(3):  # global memory of 2 frames: 768 res4 pixels < 1536
        f = _frame(g, t, h4=h4, w4=w4)
        memory.add(
            t,
            {s: k.float() for s, k in f.keys.items()},
            {s: v.float() for s, v in _values(g, 2, h4=h4, w4=w4).items()},
        )
    query = _frame(g, 3, h4=h4, w4=w4)
    query.keys = {s: k.float().requires_grad_() for s, k in query.keys.items()}
    query.query_value = query.query_value.float()
    with _ShapeGuard(res3_pixels) as guard:
        features = reader.read(query, memory, ReaderState())
        loss = sum(v.square().sum() for v in features.features.values())
        loss = loss + reader.extra_losses()["scale_loss"]
        loss.backward()
    assert guard.dense_maps == []
    assert all(k.grad is not None for k in query.keys.values())
    # the guard does catch a dense read at res3
    key = query.keys["res3"].detach()
    with _ShapeGuard(res3_pixels) as guard:
        ops.memory_read(key.flatten(2), key.flatten(2), key.flatten(2), backend="torch")
    assert guard.dense_maps


# -- scale loss ----------------------------------------------------------------------------
def test_scale_loss_is_eq_12():
    res4 = torch.zeros(1, 2, 1, 1)
    res4[0, :, 0, 0] = torch.tensor([1.0, 1.0])  # ‖k‖² = 2
    res3 = torch.zeros(1, 2, 2, 2)
    res3[0, 0] = torch.tensor([[1.0, 2.0], [0.0, 1.0]])  # ‖k‖² = 1, 4, 0, 1
    res2 = torch.full((1, 2, 4, 4), 1.0)  # ‖k‖² = 2 everywhere
    expected = ((2 - 1) ** 2 + (2 - 4) ** 2 + (2 - 0) ** 2 + (2 - 1) ** 2) / 4 + 0.0
    assert float(scale_loss({"res4": res4, "res3": res3, "res2": res2})) == pytest.approx(expected)


def test_scale_loss_is_zero_for_equal_norms_and_stops_after_its_iterations():
    from vos.lightning.callbacks import ReaderSchedule  # Lightning: a slow import

    g = torch.Generator().manual_seed(7)
    equal = {
        s: F.normalize(torch.randn(2, CK, f * 3, f * 4, generator=g), dim=1) * 2.0
        for s, f in FACTORS.items()
    }
    assert float(scale_loss(equal)) == pytest.approx(0.0, abs=1e-9)

    reader = _reader().train()
    schedule = ReaderSchedule(
        {"scale_loss_weight": {"start": 1e-4, "end": 0.0, "start_step": 1000, "end_step": 1000}}
    )
    schedule.check(reader)
    memory = _memory(g, 1)
    for step, active in ((0, True), (999, True), (1000, False), (5000, False)):
        reader.set_scale_loss_weight(schedule.values_at(step)["scale_loss_weight"])
        reader.read(_frame(g, 1), memory, ReaderState())
        losses = reader.extra_losses()
        assert ("scale_loss" in losses) == active, step
    reader.eval()
    reader.set_scale_loss_weight(1e-4)
    reader.read(_frame(g, 1), memory, ReaderState())
    assert reader.extra_losses() == {}  # training only


def test_scale_loss_runs_for_the_first_half_percent_of_training():
    """§III-E-1: L_scale "until 1K iterations" of 200K. `conf/model/lmrc.yaml` gives the end
    as a fraction of trainer.max_steps, which `ReaderSchedule` turns into a step: 1000 of the
    paper's 200K, 5 of a 1000-step CPU run (not the whole run)."""
    from helpers import compose_config

    from vos.lightning.callbacks import ReaderSchedule  # Lightning: a slow import

    reader = _reader()
    for total, last_on in ((200_000, 999), (1000, 4)):
        cfg = compose_config("train", ["model=lmrc", f"trainer.max_steps={total}"])
        schedule = ReaderSchedule(OmegaConf.to_container(cfg.model.schedule, resolve=True))
        trainer = SimpleNamespace(max_steps=cfg.trainer.max_steps)
        schedule.setup(trainer, SimpleNamespace(network=SimpleNamespace(reader=reader)), "fit")
        assert schedule.steps("scale_loss_weight") == (last_on + 1, last_on + 1)
        assert schedule.values_at(last_on)["scale_loss_weight"] == pytest.approx(1e-4)
        assert schedule.values_at(last_on + 1)["scale_loss_weight"] == 0.0
    fraction = {"start": 1.0, "end": 0.0, "start_step": 0, "end_step": 0.001}
    assert ReaderSchedule({"scale_loss_weight": fraction}, total_steps=100).steps(
        "scale_loss_weight"
    ) == (0, 1)  # a fraction is at least one step
    with pytest.raises(ValueError, match="fraction of training"):
        ReaderSchedule({"scale_loss_weight": fraction}).values_at(0)  # no step count


def test_headline_run_samples_three_frames_within_10():
    """§III-E-2: "three different frames within 10 frames" for the run the README reports."""
    from helpers import compose_config

    cfg = compose_config("train", ["experiment=lmrc_cpu"])
    assert cfg.model.name == "lmrc" and cfg.model.lmrc_setting == "F"
    assert cfg.data.clip.sampling == "window" and cfg.data.clip.window == 10
    assert cfg.data.clip.num_frames == 3


def test_memorize_keeps_fine_scales_for_the_local_memory_only():
    """Only the most recent frame is read at res3/res2: memorising a frame drops the fine keys
    and values of every frame before it (global memory from then on), and the read is the one
    of a bank that kept them."""
    g = torch.Generator().manual_seed(11)
    reader = _reader(radius=1)
    kept, dropped = MemoryBank(), MemoryBank()
    for t in range(3):
        frame, values = _frame(g, t), _values(g, 2)
        for memory in (kept, dropped):
            extras = reader.memorize(frame, values, memory) if memory is dropped else {}
            memory.add(t, frame.keys, values, permanent=t == 0, extras=extras)
    assert [sorted(e.values) for e in dropped.entries] == [["res4"], ["res4"], SORTED_SCALES]
    assert [sorted(e.keys) for e in dropped.entries] == [["res4"], ["res4"], SORTED_SCALES]
    frame, values = _frame(g, 3), _values(g, 2)
    reader.memorize(frame, values, dropped)
    dropped.set_temporary(3, frame.keys, values)  # inference's previous frame
    kept.set_temporary(3, frame.keys, values)
    assert sorted(dropped.entries[2].values) == ["res4"]
    assert sorted(dropped.temporary.values) == SORTED_SCALES
    query = _frame(g, 4)
    expected = reader.read(query, kept, ReaderState()).features
    got = reader.read(query, dropped, ReaderState()).features
    assert expected.keys() == got.keys()
    for scale in expected:
        torch.testing.assert_close(got[scale], expected[scale], rtol=0, atol=0)

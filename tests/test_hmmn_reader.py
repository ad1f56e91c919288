"""HMMN's reader: kernel-guided res4 read (§3.1) and top-k guided res3/res2 reads (§3.2)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from vos import ops
from vos.model.memory import MemoryBank
from vos.model.readers.base import FrameFeatures
from vos.model.readers.hmmn import (
    HMMNReader,
    drop_whole,
    group_by_cell,
    ungroup_cells,
    window_argmax,
)

CK, CV = 6, 5
FINE_KEYS = {"res3": 4, "res2": 3}
FINE_VALUES = {"res3": 3, "res2": 2}
H4, W4 = 3, 4


def _reader(**overrides) -> HMMNReader:
    settings = dict(
        key_channels=CK,
        value_channels=CV,
        fine_key_channels=FINE_KEYS,
        fine_value_channels=FINE_VALUES,
    )
    settings.update(overrides)
    return HMMNReader(**settings).eval()


FACTORS = {"res3": 2, "res2": 4}


def _random_frame(generator, batch, index, dtype=torch.float64, grid=(H4, W4)) -> FrameFeatures:
    h4, w4 = grid
    keys = {"res4": torch.randn(batch, CK, h4, w4, generator=generator, dtype=dtype)}
    for scale, factor in FACTORS.items():
        shape = (batch, FINE_KEYS[scale], factor * h4, factor * w4)
        keys[scale] = torch.randn(*shape, generator=generator, dtype=dtype)
    return FrameFeatures(
        index=index,
        frames=torch.zeros(batch, 3, 16 * h4, 16 * w4, dtype=dtype),
        features={},
        keys=keys,
        query_value=torch.randn(batch, CV, h4, w4, generator=generator, dtype=dtype),
    )


def _random_values(
    generator, batch, objects, dtype=torch.float64, grid=(H4, W4)
) -> dict[str, torch.Tensor]:
    h4, w4 = grid
    values = {"res4": torch.randn(batch, objects, CV, h4, w4, generator=generator, dtype=dtype)}
    for scale, factor in FACTORS.items():
        shape = (batch, objects, FINE_VALUES[scale], factor * h4, factor * w4)
        values[scale] = torch.randn(*shape, generator=generator, dtype=dtype)
    return values


def _memory(generator, batch=2, objects=2, frames=3, late_object=False, grid=(H4, W4)):
    bank = MemoryBank()
    for t in range(frames):
        frame = _random_frame(generator, batch, t, grid=grid)
        valid = torch.ones(batch, objects, dtype=torch.bool)
        if late_object and t == 0:
            valid[:, -1] = False  # the last object joins after frame 0
        values = _random_values(generator, batch, objects, grid=grid)
        bank.add(t, frame.keys, values, valid, permanent=t == 0)
    return bank


def test_kernel_guided_read_is_l1_normalised_kernel_times_softmax():
    """Eq. 2–3 spelled out in float64: g = L1(K ⊙ softmax(M)), v' = v_Mᵀ g."""
    generator = torch.Generator().manual_seed(0)
    reader = _reader(fine_scales=())
    memory = _memory(generator)
    query = _random_frame(generator, 2, 3)
    state = reader.new_state()
    centres, sigmas = reader.kernel_centres(query.keys["res4"], memory, state)
    readout = reader.read(query, memory, reader.new_state()).features["res4"][:, :, :CV]

    keys = memory.keys("res4").flatten(2)  # [B, Ck, N]
    values = memory.values("res4")  # [B, O, Cv, T, h, w]
    logits = torch.einsum("bcn,bcm->bnm", keys, query.keys["res4"].flatten(2)) / math.sqrt(CK)
    grid = ops.query_grid_positions((H4, W4), dtype=torch.float64)
    distance = ((grid[None, None] - centres[:, :, None]) ** 2).sum(-1)  # [B, N, M]
    kernel = torch.exp(-distance / (2 * sigmas[..., None] ** 2))
    weights = kernel * torch.softmax(logits, dim=1)
    weights = weights / weights.sum(dim=1, keepdim=True)
    expected = torch.einsum("bocn,bnm->bocm", values.flatten(3), weights)
    assert torch.allclose(readout.flatten(3), expected, atol=1e-10)


@pytest.mark.parametrize("track_rule", ["paper", "official"])
def test_tracking_follows_a_translated_pattern(track_rule):
    """Keys that move by (1, 2) cells per frame: every memory pixel is tracked to where its
    pattern is in the query, frame by frame (the chain), inside the window. The released
    code's rule centres the frames older than the latest one step further on."""
    height, width, shift = 9, 11, (1, 2)
    torch.manual_seed(1)
    canvas = torch.randn(1, 16, height + 16, width + 16, dtype=torch.float64)
    canvas = canvas / canvas.norm(dim=1, keepdim=True)  # unit keys: a key matches itself best

    def keys_at(t: int) -> torch.Tensor:  # the pattern moved by t·shift
        y0, x0 = 8 - t * shift[0], 8 - t * shift[1]
        return canvas[:, :, y0 : y0 + height, x0 : x0 + width]

    reader = HMMNReader(
        key_channels=16, value_channels=2, fine_scales=(), window=7, track_rule=track_rule
    ).eval()
    memory, state = MemoryBank(), reader.new_state()
    for t in range(3):
        values = {"res4": torch.zeros(1, 1, 2, height, width, dtype=torch.float64)}
        memory.add(t, {"res4": keys_at(t)}, values, permanent=t == 0)
        query = keys_at(t + 1)
        tracked = reader._track(query.flatten(2), memory, state, (height, width))
        reader.end_of_read(FrameFeatures(t + 1, None, {}, {}, None), state)
    grid = ops.query_grid_positions((height, width)).long()
    for position, frame in enumerate(range(3)):
        steps = 3 - frame + (track_rule == "official" and frame < 2)
        moved = grid + torch.tensor(shift) * steps
        inside = (moved[:, 0] < height) & (moved[:, 1] < width)
        target = moved[:, 0] * width + moved[:, 1]
        assert torch.equal(tracked[0, position][inside], target[inside]), frame


def test_tracking_adds_one_step_per_frame_from_the_history():
    """Each read computes one window argmax (latest memory frame -> query) and maps the stored
    positions of older frames through it, so the cost does not grow with the memory."""
    generator = torch.Generator().manual_seed(2)
    reader = _reader(fine_scales=())
    memory, state = MemoryBank(), reader.new_state()
    steps = []
    for t in range(4):
        frame = _random_frame(generator, 1, t)
        memory.add(t, frame.keys, _random_values(generator, 1, 1), permanent=t == 0)
        query = _random_frame(generator, 1, t + 1)
        logits = ops.affinity_logits(
            query.keys["res4"].flatten(2), frame.keys["res4"].flatten(2), similarity="dot"
        )
        steps.append(window_argmax(logits, (H4, W4), 7))
        tracked = reader._track(query.keys["res4"].flatten(2), memory, state, (H4, W4))
        reader.end_of_read(query, state)
    chained = steps[0]
    for step in steps[1:]:
        chained = torch.gather(step, 1, chained)
    assert torch.equal(tracked[:, 0], chained)  # frame 0 followed through all four steps
    assert torch.equal(tracked[:, -1], steps[-1])


@pytest.mark.parametrize("similarity", ["dot", "l2"])
@pytest.mark.parametrize("window", [1, 3, 7, 31])
def test_tracking_step_by_a_window_read_equals_the_dense_window_argmax(window, similarity):
    # the tracker's step without the [hw, hw] affinity: same argmax, same first-tie rule
    from vos.model.readers.hmmn import window_argmax_local

    generator = torch.Generator().manual_seed(window)
    memory_key = torch.randn(2, 8, 5, 6, generator=generator, dtype=torch.float64)
    query_key = torch.randn(2, 8, 5, 6, generator=generator, dtype=torch.float64)
    query_key[0, :, 2:, 3:] = 1.0  # equal query keys: ties resolved in raster order
    logits = ops.affinity_logits(query_key.flatten(2), memory_key.flatten(2),
                                 similarity=similarity)  # fmt: skip
    dense = window_argmax(logits, (5, 6), window)
    assert torch.equal(window_argmax_local(memory_key, query_key, window), dense)


def test_window_argmax_stays_inside_the_window():
    logits = torch.randn(2, 20, 20)
    best = window_argmax(logits, (4, 5), 3)
    grid = ops.query_grid_positions((4, 5)).long()
    offset = (grid[best] - grid[None]).abs()
    assert int(offset.max()) <= 1
    assert torch.equal(window_argmax(logits, (4, 5), None), logits.argmax(dim=2))


@pytest.mark.parametrize(
    ("rule", "expected"), [("paper", [4.0, 3.5, 3.0]), ("official", [6.0, 4.5, 3.0])]
)
def test_sigma_grows_with_temporal_distance(rule, expected):
    reader = _reader(sigma_rule=rule)
    assert reader._sigmas(3, torch.device("cpu")).tolist() == expected


def test_kmn_kernel_centres_on_the_global_best_match():
    generator = torch.Generator().manual_seed(3)
    reader = _reader(kernel="kmn", fine_scales=())
    memory = _memory(generator, batch=1, frames=2)
    query = _random_frame(generator, 1, 2)
    centres, sigmas = reader.kernel_centres(query.keys["res4"], memory, reader.new_state())
    logits = ops.affinity_logits(
        query.keys["res4"].flatten(2), memory.keys("res4").flatten(2), similarity="dot"
    )
    grid = ops.query_grid_positions((H4, W4), dtype=centres.dtype)
    assert torch.equal(centres[0], grid[logits[0].argmax(dim=1)])
    assert torch.all(sigmas == reader.sigma_init)


def test_group_by_cell_and_back_is_the_identity_and_groups_children():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    grouped = group_by_cell(x, 2)  # cells of the (2, 3) coarse grid
    assert grouped.shape == (2, 3, 6, 4)
    # coarse cell (1, 2) holds fine pixels (2..3, 4..5) in raster order
    assert grouped[0, 0, 5].tolist() == [x[0, 0, 2, 4], x[0, 0, 2, 5], x[0, 0, 3, 4], x[0, 0, 3, 5]]
    assert torch.equal(ungroup_cells(grouped, 2, (2, 3)), x)


@pytest.mark.parametrize("late_object", [False, True])
@pytest.mark.parametrize("scale", ["res3", "res2"])
def test_top_k_with_every_candidate_equals_the_dense_fine_read(scale, late_object):
    """With k covering every res4 cell of the fine memory (and all of them kept at res2) the
    gathered read sees each fine memory pixel once: it is the dense read at that scale."""
    generator = torch.Generator().manual_seed(4)
    memory = _memory(generator, frames=3, late_object=late_object)
    query = _random_frame(generator, 2, 3)
    cells = 2 * H4 * W4  # first and previous frames
    reader = _reader(top_k=cells)
    candidates = reader.fine_candidates(query.keys["res4"], memory, None, cells)
    if scale == "res2":  # res2 keeps the first quarter: pad so that it keeps every cell
        candidates = torch.cat([candidates] * 4, dim=2)
    sparse = reader._read_fine(scale, query, memory, candidates, (H4, W4))
    dense = reader._read_fine(scale, query, memory, None, (H4, W4))
    assert torch.allclose(sparse, dense, atol=1e-10)


@pytest.mark.parametrize("late_object", [False, True])
def test_fine_reads_do_not_check_the_index_range(monkeypatch, late_object):
    # the candidates are top-k positions, in range by construction: no min/max over the
    # index (a host sync per read on a GPU)
    generator = torch.Generator().manual_seed(6)
    memory = _memory(generator, frames=3, late_object=late_object)
    query = _random_frame(generator, 2, 3)
    reader = _reader(top_k=4)
    candidates = reader.fine_candidates(query.keys["res4"], memory, None, 4)

    def no_min_max(*args, **kwargs):
        raise AssertionError("the index range was checked")

    monkeypatch.setattr(torch, "aminmax", no_min_max)
    for scale in ("res3", "res2"):
        read = reader._read_fine(scale, query, memory, candidates, (H4, W4))
        assert torch.isfinite(read).all()


def test_fine_candidates_are_the_best_res4_cells_of_first_and_previous_frames():
    generator = torch.Generator().manual_seed(5)
    memory = _memory(generator, batch=1, frames=4)
    query = _random_frame(generator, 1, 4)
    reader = _reader()
    candidates = reader.fine_candidates(query.keys["res4"], memory, None, 5)
    subset = memory.keys("res4", [0, -1]).flatten(2)
    logits = ops.affinity_logits(query.keys["res4"].flatten(2), subset, similarity="dot")
    assert torch.equal(candidates, logits.topk(5, dim=1).indices.transpose(1, 2))
    everywhere = _reader(fine_memory="all").fine_candidates(query.keys["res4"], memory, None, 5)
    assert int(everywhere.max()) >= 2 * H4 * W4 or not torch.equal(everywhere, candidates)


def test_stride_and_random_selections():
    generator = torch.Generator().manual_seed(6)
    memory = _memory(generator, batch=1, frames=2)
    query = _random_frame(generator, 1, 2)
    stride = _reader(selection="stride", stride_grid=2).fine_candidates(
        query.keys["res4"], memory, None, 32
    )
    assert stride.shape == (1, H4 * W4, 2 * 4)  # 2 frames x 2 x 2 cells, same for every query
    assert torch.equal(stride[0, 0], stride[0, -1])
    assert stride[0, 0].tolist() == [0, 3, 8, 11, 12, 15, 20, 23]
    random = _reader(selection="random").fine_candidates(query.keys["res4"], memory, None, 7)
    assert random.shape == (1, H4 * W4, 7)
    assert all(len(set(row.tolist())) == 7 for row in random[0])


def test_drop_whole_drops_entire_readouts():
    x = torch.ones(64, 3, 4, 5, 5)
    dropped = drop_whole(x, 0.5, torch.Generator().manual_seed(0))
    per_slice = dropped.flatten(2)
    assert torch.all((per_slice == 0).all(dim=2) | (per_slice == 2.0).all(dim=2))
    assert 0 < int((per_slice == 0).all(dim=2).sum()) < 64 * 3
    assert torch.equal(drop_whole(x, 1.0), torch.zeros_like(x))
    assert torch.equal(drop_whole(x, 0.0), x)


def test_reader_drops_fine_readouts_only_in_training():
    generator = torch.Generator().manual_seed(7)
    memory = _memory(generator, frames=2)
    query = _random_frame(generator, 2, 2)
    reader = _reader(readout_dropout=1.0)
    kept = reader.read(query, memory, reader.new_state()).features
    assert kept["res3"].abs().sum() > 0 and kept["res2"].abs().sum() > 0
    reader.train()
    dropped = reader.read(query, memory, reader.new_state()).features
    assert not dropped["res3"].any() and not dropped["res2"].any()
    assert torch.equal(
        dropped["res4"], reader.read(query, memory, reader.new_state()).features["res4"]
    )


def test_kernel_is_inference_only_unless_asked():
    generator = torch.Generator().manual_seed(8)
    memory = _memory(generator, frames=2)
    query = _random_frame(generator, 2, 2)
    reader = _reader(fine_scales=())
    plain = _reader(fine_scales=(), kernel="none")
    reader.train()
    plain.train()
    assert torch.equal(
        reader.read(query, memory, reader.new_state()).features["res4"],
        plain.read(query, memory, plain.new_state()).features["res4"],
    )
    reader.kernel_in_training = True
    assert not torch.equal(
        reader.read(query, memory, reader.new_state()).features["res4"],
        plain.read(query, memory, plain.new_state()).features["res4"],
    )


def test_readout_dropout_schedule():
    from vos.lightning.callbacks import ReaderSchedule, scheduled_value  # Lightning: slow import

    assert scheduled_value(0, 0.5, 0.0, 0, 100) == 0.5
    assert scheduled_value(50, 0.5, 0.0, 0, 100) == 0.25
    assert scheduled_value(500, 1.0, 0.5, 0, 100) == 0.5
    schedule = ReaderSchedule({"readout_dropout": dict(start=1, end=0.5, start_step=0, end_step=4)})
    reader = _reader()
    schedule.check(reader)
    assert schedule.values_at(2) == {"readout_dropout": 0.75}
    logged = {}
    module = SimpleNamespace(
        network=SimpleNamespace(reader=reader), log=lambda k, v, **_: logged.update({k: v})
    )
    schedule.on_train_batch_start(SimpleNamespace(global_step=3), module, None, 0)
    assert reader.readout_dropout == 0.625 and logged == {"schedule/readout_dropout": 0.625}
    with pytest.raises(ValueError, match="model.schedule.dropout_rate"):
        ReaderSchedule({"dropout_rate": dict(start=1, end=0, start_step=0, end_step=1)}).check(
            reader
        )


@pytest.mark.parametrize(
    ("option", "value"),
    [("kernel", "gauss"), ("selection", "best"), ("window", 4), ("fine_scales", ("res5",))],
)
def test_bad_options_are_named(option, value):
    with pytest.raises(ValueError, match=option):
        _reader(**{option: value})


# -- the default inference path, written out ---------------------------------------------------
def _kernel_weighted_affinity(reader, query, memory):
    """Eq. 1–3 on the res4 memory, from the paper and the reader's documented rule, in float64:
    g4 = L1_memory(K ⊙ softmax_memory(k_M·k_Q / √Ck)) ``[B, N, M]``. K is a Gaussian per memory
    pixel centred on the query pixel its latest-frame position matches best inside the s×s
    window (a new video: no tracking history, every frame is moved by that one step), with
    σ = σ_init + d·σ_factor, d the frame's distance in slots from the latest memory frame."""
    keys = memory.keys("res4")  # [B, Ck, T, h, w]
    batch, channels, frames, height, width = keys.shape
    cells = height * width
    query_key = query.keys["res4"].flatten(2)  # [B, Ck, M]
    logits = torch.einsum("bcn,bcm->bnm", keys.flatten(2), query_key) / math.sqrt(channels)
    yx = [(y, x) for y in range(height) for x in range(width)]
    radius = reader.window // 2
    kernel = torch.empty_like(logits)
    for b in range(batch):
        latest = logits[b, (frames - 1) * cells :]  # [hw memory, hw query]
        for p, (py, px) in enumerate(yx):
            window = [
                q
                for q, (qy, qx) in enumerate(yx)
                if abs(qy - py) <= radius and abs(qx - px) <= radius
            ]
            best = window[int(latest[p, window].argmax())]
            cy, cx = yx[best]
            for t in range(frames):
                sigma = reader.sigma_init + (frames - 1 - t) * reader.sigma_factor
                for q, (qy, qx) in enumerate(yx):
                    distance = (qy - cy) ** 2 + (qx - cx) ** 2
                    kernel[b, t * cells + p, q] = math.exp(-distance / (2 * sigma**2))
    weighted = torch.softmax(logits, dim=1) * kernel
    return weighted / weighted.sum(dim=1, keepdim=True), logits


def _fine_read_written_out(query, memory, candidates, scale, keep):
    """§3.2 for one fine scale: each res4 query cell's first ``keep`` candidates (cells of the
    first and previous memory frames, best first) expanded to their f×f children; the f×f query
    pixels inside the cell read softmax(k·q/√Ck) over those children only."""
    factor = {"res3": 2, "res2": 4}[scale]
    keys = memory.keys(scale, [0, -1])  # [B, Ck, 2, fh, fw]
    values = memory.values(scale, [0, -1])  # [B, O, Cv, 2, fh, fw]
    query_key = query.keys[scale]  # [B, Ck, fh, fw]
    batch, channels, _, fine_h, fine_w = keys.shape
    height, width = fine_h // factor, fine_w // factor
    out = torch.zeros(batch, values.shape[1], values.shape[2], fine_h, fine_w, dtype=keys.dtype)
    for b in range(batch):
        for cell in range(height * width):
            y, x = divmod(cell, width)
            children = []
            for coarse in candidates[b, cell, :keep].tolist():
                frame, (cy, cx) = (
                    coarse // (height * width),
                    divmod(coarse % (height * width), width),
                )
                children += [
                    (frame, factor * cy + i, factor * cx + j)
                    for i in range(factor)
                    for j in range(factor)
                ]
            t, ys, xs = (torch.tensor(c) for c in zip(*children))
            rows, cols = slice(factor * y, factor * (y + 1)), slice(factor * x, factor * (x + 1))
            q = query_key[b, :, rows, cols].flatten(1)  # [Ck, f²]
            weights = torch.softmax(keys[b, :, t, ys, xs].T @ q / math.sqrt(channels), dim=0)
            read = values[b][:, :, t, ys, xs] @ weights  # [O, Cv, f²]
            out[b, :, :, rows, cols] = read.view(*read.shape[:2], factor, factor)
    return out


def test_default_inference_reads_fine_scales_from_the_kernel_weighted_top_k():
    """The default inference path (kernel on, k = 8): res3 reads the k best cells of the
    kernel-weighted res4 affinity g4 (restricted to the first and previous frames) as 2×2
    children, res2 the best k/4 as 4×4 children. The candidates chosen without the kernel
    differ here, and fine keys and values nobody should read are NaN."""
    generator = torch.Generator().manual_seed(9)
    grid = (4, 6)
    reader = _reader(top_k=8)
    memory = _memory(generator, batch=2, frames=3, grid=grid)
    query = _random_frame(generator, 2, 3, grid=grid)

    affinity, logits = _kernel_weighted_affinity(reader, query, memory)
    cells = grid[0] * grid[1]
    fine_rows = torch.cat([torch.arange(cells), torch.arange(2 * cells, 3 * cells)])
    candidates = affinity[:, fine_rows].topk(8, dim=1).indices.transpose(1, 2)  # [B, M, k]
    unguided = logits[:, fine_rows].topk(8, dim=1).indices.transpose(1, 2)
    assert not torch.equal(candidates.sort(dim=2).values, unguided.sort(dim=2).values)
    assert not torch.equal(
        candidates[..., :2].sort(dim=2).values, unguided[..., :2].sort(dim=2).values
    )
    expected = {
        "res3": _fine_read_written_out(query, memory, candidates, "res3", 8),
        "res2": _fine_read_written_out(query, memory, candidates, "res2", 2),
    }
    features = reader.read(query, memory, reader.new_state()).features
    for scale in ("res3", "res2"):
        torch.testing.assert_close(features[scale], expected[scale], rtol=1e-10, atol=1e-10)

    # the same read with every fine key and value outside the chosen children poisoned
    poisoned = MemoryBank()
    for t, entry in enumerate(memory.entries):
        keys, values = dict(entry.keys), dict(entry.values)
        for scale, keep in (("res3", 8), ("res2", 2)):
            factor = FACTORS[scale]
            used = torch.zeros(2, grid[0], grid[1], dtype=torch.bool)
            chosen = candidates[..., :keep].flatten(1)  # [B, M·keep], over frames 0 and 2
            slot = {0: 0, 2: 1}.get(t)
            for b in range(2):
                if slot is not None:
                    mine = chosen[b][chosen[b] // cells == slot] % cells
                    used[b].view(-1)[mine] = True
            outside = ~used.repeat_interleave(factor, 1).repeat_interleave(factor, 2)
            keys[scale] = keys[scale].masked_fill(outside[:, None], float("nan"))
            values[scale] = values[scale].masked_fill(outside[:, None, None], float("nan"))
        poisoned.add(t, keys, values, entry.object_valid, permanent=entry.permanent)
    features = reader.read(query, poisoned, reader.new_state()).features
    for scale in ("res3", "res2"):
        assert torch.isfinite(features[scale]).all(), scale
        torch.testing.assert_close(features[scale], expected[scale], rtol=1e-10, atol=1e-10)


def test_table5_row_without_kernel_or_top_k_is_stm():
    """Table 5's first row (no K*, no K, no T) is STM: the same parameters from the same seed
    and the same logits, in training and in inference, so HMMN's main ablation row (kernel +
    top-k vs none) is measured as HMMN against STM trained alike (docs/benchmarks.md)."""
    from helpers import compose_config

    from vos.model.network import build_network

    stm_cfg = compose_config("train", ["model=stm"]).model
    none_cfg = compose_config(
        "train", ["model=hmmn", "model.reader.kernel=none", "model.reader.fine_scales=[]"]
    ).model
    torch.manual_seed(0)
    stm = build_network(stm_cfg)
    torch.manual_seed(0)
    bare = build_network(none_cfg)
    assert stm.state_dict().keys() == bare.state_dict().keys()
    for name, tensor in stm.state_dict().items():
        torch.testing.assert_close(bare.state_dict()[name], tensor, rtol=0, atol=0, msg=name)

    g = torch.Generator().manual_seed(3)
    frames = [torch.rand(1, 3, 48, 64, generator=g) for _ in range(4)]
    masks = torch.rand(1, 2, 48, 64, generator=g)
    for training in (True, False):
        outputs = []
        for net in (stm, bare):
            net.train(training)
            bank, state = MemoryBank(), net.reader.new_state()
            net.memorize(bank, net.encode_frame(frames[0], 0), masks, permanent=True)
            state.previous_probs = masks
            logits = []
            for t in (1, 2, 3):
                torch.manual_seed(t)  # any dropout draws the same in both networks
                frame = net.encode_frame(frames[t], t)
                logits.append(net.segment(frame, bank, state))
                net.memorize(bank, frame, logits[-1].softmax(1)[:, 1:])
            outputs.append(torch.stack(logits))
        torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-6, atol=1e-6)

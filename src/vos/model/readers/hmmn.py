"""HMMN's hierarchical memory reader (Seong et al., "Hierarchical Memory Matching Network for
Video Object Segmentation", ICCV 2021, §3.1–3.2).

res4: kernel-guided memory matching (§3.1, Eq. 1–3). With M4 = k_M·k_Q / √Ck,

    g4 = L1(K(M4) ⊙ softmax(M4)) = softmax(M4 + log K)     (L1 over memory)
    v'_M4 = v_M4ᵀ g4,  output [v'_M4, v_Q4]

where K is a 2-D Gaussian per memory pixel centred on the query pixel the memory pixel is
tracked to, so the read goes through `vos.ops.memory_read` with ``gaussian_centers`` and
``gaussian_sigma`` (the Gaussian as a log bias; identical to multiply-then-renormalise).

Tracking (Fig. 3c, Fig. 4): between the most recent memory frame and the query, every memory
pixel moves to its best-matching query pixel inside an s×s window (s = ``window``, 7; None =
the whole frame). Older memory frames are tracked by chaining: their pixels' positions on the
previous query's grid (kept in `HMMNState.tracks`) are mapped by this step, so each new
frame adds one tracking step whatever the number of memory frames. A memory frame with no
history (its chain was broken: the previous query was not the latest memory frame) starts at
the latest memory frame's positions, i.e. it is moved by the step alone.

σ per memory frame grows with its distance d = (T − t) in memory slots from the most recent
memory frame (d = 0 for the previous frame):

- ``sigma_rule="paper"``: σ = σ_init + d·σ_factor (§3.1; σ_init 3, σ_factor 0.5);
- ``sigma_rule="official"``: σ = σ_init·(1 + σ_factor·d), as ``Hongje/HMMN:model.py`` computes.

Where an older frame's Gaussian is centred (``track_rule``):

- ``"paper"``: at the frame's tracked position on the query grid (Fig. 4);
- ``"official"``: one tracking step further, as the released ``Memory.forward`` computes: it
  chains the positions onto the query grid and then looks the Gaussian up by that query
  position in the map of the latest memory frame's pixels, so the step is applied twice. The
  most recent memory frame is centred by one step under both rules. Converted HMMN weights use
  this rule (with ``sigma_rule="official"``) so their outputs are the released code's.

``kernel="kmn"`` is KMN's kernel (Table 5's K*): each memory pixel's centre is its global
best-matching query pixel (no window, no tracking), σ = σ_init. ``kernel="none"`` is STM's read.
The kernel is used at inference only (§4.1, as KMN); ``kernel_in_training`` turns it on in
training too.

res3/res2: top-k guided memory matching (§3.2, Fig. 5–6). From the post-kernel res4 affinity
restricted to the fine-scale memory frames (first and previous by default, ``fine_memory``),
the k best memory cells per res4 query cell (k = ``top_k`` at res3, max(k/4, 1) at res2, the
best first) are expanded to their 2×2 (res3) or 4×4 (res2) children; the query pixels inside
one res4 cell share those candidates (`vos.ops.gather_read`, grouped form). The softmax over
the candidates uses the fine keys (dot / √Ck at that scale). ``top_k=None`` is the dense
fine-scale read (Table 6(b)'s k = ∞). Table 6(a)'s other selections:

- ``selection="random"``: k res4 memory cells drawn uniformly per res4 query cell;
- ``selection="stride"``: an n×n grid of res4 cells per fine memory frame (n =
  ``stride_grid``, so k = frames·n², the paper's 2·8² and 2·12²), the same for every query.

The fine readouts leave the reader through a dropout that drops the *whole* readout of a
(batch element, object) with probability ``readout_dropout`` during training (inverted: the
kept ones are scaled by 1/(1 − p)); the decoder adds them to its res3/res2 skips through a
bias-free 3×3 conv (the released decoder's ``convMemory``), a residual next to the query's own
features. The rate follows a schedule over training steps (a `vos.lightning.callbacks.ReaderSchedule` calls
``set_readout_dropout``): 1 → 0.5 in static pre-training, 0.5 → 0 in main training.

The reader sees keys without an object axis, so the res4 affinity, the tracking and the top-k
candidates are shared by the objects it is given: on STCN's network one key per frame serves
every object; on STM's network (the paper's, whose memory keys see the mask) each object is read
as its own batch element (`VOSNetwork.read`, docs/architecture.md). Objects that joined after a
memory frame hold no value there and are masked out of that frame per object, as in the STM
reader.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from vos import ops
from vos.model.memory import MemoryBank
from vos.model.readers.base import FeatureSpec, FrameFeatures, MemoryReader, ReaderState, Readout

KERNELS = ("hmmn", "kmn", "none")
SIGMA_RULES = ("paper", "official")
TRACK_RULES = ("paper", "official")
SELECTIONS = ("topk", "random", "stride")
FINE_MEMORY = ("first_previous", "all")
FINE_FACTORS = {"res3": 2, "res2": 4}


@dataclass
class Tracks:
    """Where each memory frame's pixels are on the grid of frame ``on_frame`` (query indices
    ``[B, hw]`` per memory frame index). ``on_frame`` is None while the read that computed
    them is still going on."""

    on_frame: int | None
    positions: dict[int, Tensor]


@dataclass
class HMMNState(ReaderState):
    tracks: Tracks | None = None


def window_argmax(logits: Tensor, grid_hw: tuple[int, int], window: int | None) -> Tensor:
    """For each memory pixel (rows of ``logits [B, M, M]``, same grid as the query), the query
    pixel with the largest logit inside the s×s window centred on it (s odd; None = anywhere).
    Returns query indices ``[B, M]`` (ties: the first in raster order)."""
    if window is not None:
        yx = ops.query_grid_positions(grid_hw, device=logits.device)
        offset = (yx[:, None, :] - yx[None, :, :]).abs()  # [M mem, M query, 2]
        inside = (offset <= window // 2).all(dim=-1)
        logits = logits.masked_fill(~inside, float("-inf"))
    return logits.argmax(dim=2)


@torch.no_grad()
def window_argmax_local(memory_key: Tensor, query_key: Tensor, window: int) -> Tensor:
    """`window_argmax` of the affinity of ``memory_key`` and ``query_key`` (both
    ``[B, Ck, h, w]``) without building it: each memory pixel's best query pixel inside the s×s
    window centred on it, by `vos.ops.window_read`'s argmax (the memory key as the window's
    centre, the query keys as what it reads; the running argmax of the kernel on CUDA). Ties:
    the first in raster order, as `window_argmax`. Returns query indices ``[B, h·w]``.

    A memory pixel's ``l2`` logits 2 q·k − ‖k‖² (k its own key) and its ``dot`` logits have the
    same argmax over q, so this serves both similarities."""
    batch, _, height, width = memory_key.shape
    placeholder = memory_key.new_zeros(batch, 1, height, width)  # no value is read
    _, top = ops.window_read(
        memory_key, query_key, placeholder, radius=window // 2, similarity="dot", return_top=1
    )
    yx = ops.query_grid_positions((height, width), device=memory_key.device).long()
    target = yx.view(1, height, width, 2) + top.argmax_offset  # [B, h, w, 2] on the query grid
    return (target[..., 0] * width + target[..., 1]).flatten(1)


def group_by_cell(x: Tensor, factor: int) -> Tensor:
    """``[B, C, f·h, f·w]`` -> ``[B, C, h·w, f²]``: the f×f pixels of each coarse cell."""
    batch, channels, height, width = x.shape
    h, w = height // factor, width // factor
    x = x.view(batch, channels, h, factor, w, factor).permute(0, 1, 2, 4, 3, 5)
    return x.reshape(batch, channels, h * w, factor * factor)


def ungroup_cells(x: Tensor, factor: int, coarse_hw: tuple[int, int]) -> Tensor:
    """The inverse of `group_by_cell`: ``[B, C, h·w, f²]`` -> ``[B, C, f·h, f·w]``."""
    batch, channels = x.shape[:2]
    h, w = coarse_hw
    x = x.view(batch, channels, h, w, factor, factor).permute(0, 1, 2, 4, 3, 5)
    return x.reshape(batch, channels, h * factor, w * factor)


def drop_whole(x: Tensor, rate: float, generator: torch.Generator | None = None) -> Tensor:
    """Drop each ``x[b, o]`` whole with probability ``rate`` (inverted dropout scaling)."""
    if rate <= 0.0:
        return x
    if rate >= 1.0:
        return torch.zeros_like(x)
    keep = torch.rand(x.shape[:2], device=x.device, generator=generator) >= rate
    return x * (keep.to(x.dtype) / (1.0 - rate)).view(*x.shape[:2], *([1] * (x.ndim - 2)))


class HMMNReader(MemoryReader):
    def __init__(
        self,
        key_channels: int = 128,
        value_channels: int = 512,
        fine_key_channels: dict[str, int] | None = None,  # paper: res3 128, res2 64
        fine_value_channels: dict[str, int] | None = None,  # paper: res3 256, res2 128
        fine_scales: Sequence[str] = ("res3", "res2"),  # Table 6(e): which fine stages read
        similarity: str = "dot",
        kernel: str = "hmmn",  # hmmn | kmn (Table 5's K*) | none
        kernel_in_training: bool = False,  # §4.1: the kernel is an inference-time guide
        window: int | None = 7,  # s, tracking window in res4 cells (odd); None = ∞
        sigma_init: float = 3.0,
        sigma_factor: float = 0.5,
        sigma_rule: str = "paper",  # paper: σ_init + dσ_f | official: σ_init(1 + σ_f d)
        track_rule: str = "paper",  # paper | official: older frames' centres one step further
        top_k: int | None = 32,  # k at res3 (k/4 at res2); None = dense fine read (k = ∞)
        inference_top_k: int | None | str = "same",  # Table 6(b): k at inference
        selection: str = "topk",  # Table 6(a): topk | random | stride
        stride_grid: int = 8,  # n for selection=stride: n×n res4 cells per fine frame
        fine_memory: str = "first_previous",  # Table 6(d): first_previous | all
        readout_dropout: float = 0.0,  # drops whole fine readouts; set by the schedule
    ):
        super().__init__()
        fine_key_channels = dict(fine_key_channels or {"res3": 128, "res2": 64})
        fine_value_channels = dict(fine_value_channels or {"res3": 256, "res2": 128})
        fine_scales = tuple(fine_scales)
        for name, value, options in (
            ("kernel", kernel, KERNELS),
            ("sigma_rule", sigma_rule, SIGMA_RULES),
            ("track_rule", track_rule, TRACK_RULES),
            ("selection", selection, SELECTIONS),
            ("fine_memory", fine_memory, FINE_MEMORY),
        ):
            if value not in options:
                raise ValueError(f"HMMNReader: {name} must be one of {options}, got {value!r}")
        unknown = set(fine_scales) - set(FINE_FACTORS)
        if unknown:
            raise ValueError(f"HMMNReader: fine_scales must be among res3/res2, got {unknown}")
        if window is not None and (window < 1 or window % 2 == 0):
            raise ValueError(f"HMMNReader: window must be odd and >= 1 or null, got {window}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"HMMNReader: top_k must be >= 1 or null, got {top_k}")
        if sigma_init <= 0 or sigma_factor < 0:
            raise ValueError("HMMNReader: sigma_init must be > 0 and sigma_factor >= 0")
        self.similarity = similarity
        self.fine_scales = fine_scales
        self.kernel = kernel
        self.kernel_in_training = kernel_in_training
        self.window = window
        self.sigma_init = float(sigma_init)
        self.sigma_factor = float(sigma_factor)
        self.sigma_rule = sigma_rule
        self.track_rule = track_rule
        self.top_k = top_k
        self.inference_top_k = top_k if inference_top_k == "same" else inference_top_k
        self.selection = selection
        self.stride_grid = stride_grid
        self.fine_memory = fine_memory
        self.readout_dropout = float(readout_dropout)
        key_scales = {"res4": key_channels}
        key_scales.update({scale: fine_key_channels[scale] for scale in fine_scales})
        self.needs = FeatureSpec(
            key_scales=key_scales,
            value_channels=value_channels,
            readout_channels=2 * value_channels,
            fine_value_channels={scale: fine_value_channels[scale] for scale in fine_scales},
        )

    def set_readout_dropout(self, rate: float) -> None:
        self.readout_dropout = float(rate)

    # -- kernel ----------------------------------------------------------------------------
    def _kernel_active(self) -> bool:
        return self.kernel != "none" and (not self.training or self.kernel_in_training)

    def _sigmas(self, frames: int, device: torch.device) -> Tensor:
        """σ per memory frame ``[T]``, oldest first (d = T − 1 − position)."""
        distance = torch.arange(frames - 1, -1, -1, device=device, dtype=torch.float32)
        if self.sigma_rule == "paper":
            return self.sigma_init + distance * self.sigma_factor
        return self.sigma_init * (1.0 + self.sigma_factor * distance)

    @torch.no_grad()
    def kernel_centres(
        self, query_key: Tensor, memory: MemoryBank, state: HMMNState
    ) -> tuple[Tensor, Tensor]:
        """Gaussian centres ``[B, N, 2]`` (y, x on the query grid) and σ ``[B, N]``."""
        memory_key = memory.keys("res4")  # [B, Ck, T, h, w]
        batch, _, frames, height, width = memory_key.shape
        cells = height * width
        grid = ops.query_grid_positions((height, width), device=query_key.device)
        query = query_key.flatten(2)
        if self.kernel == "kmn":
            positions = []
            for t in range(frames):  # one frame's logits at a time: [B, hw, hw]
                logits = ops.affinity_logits(
                    query, memory_key[:, :, t].flatten(2), similarity=self.similarity
                )
                positions.append(logits.argmax(dim=2))
            tracked = torch.stack(positions, dim=1)  # [B, T, hw]
            sigma = torch.full((frames,), self.sigma_init, device=query_key.device)
        else:
            tracked = self._track(query, memory, state, (height, width))
            sigma = self._sigmas(frames, query_key.device)
        centres = grid[tracked.flatten(1)]  # [B, N, 2]
        sigmas = sigma.repeat_interleave(cells).unsqueeze(0).expand(batch, -1)
        return centres, sigmas.contiguous()

    def _track(
        self, query: Tensor, memory: MemoryBank, state: HMMNState, grid_hw: tuple[int, int]
    ) -> Tensor:
        """Tracked query positions ``[B, T, hw]`` of every memory pixel; updates the history."""
        latest_key = memory.keys("res4", positions=[-1])[:, :, 0]  # [B, Ck, h, w]
        if self.window is None:  # anywhere: the dense affinity's argmax
            logits = ops.affinity_logits(query, latest_key.flatten(2), similarity=self.similarity)
            step = window_argmax(logits, grid_hw, None)
        else:  # inside the s×s window: a window read's argmax, no [hw, hw] affinity
            step = window_argmax_local(latest_key, query.view_as(latest_key), self.window)
            # [B, hw]: latest memory -> query (same for dot and l2, see window_argmax_local)
        frames = memory.frame_indices
        history = state.tracks
        chained = history is not None and history.on_frame == frames[-1]
        tracks = history.positions if chained else {}
        updated = {}
        for frame in frames:
            # positions on the latest memory frame's grid: tracked so far, or its own place
            before = tracks.get(frame)
            updated[frame] = step if before is None else torch.gather(step, 1, before)
        state.tracks = Tracks(on_frame=None, positions=updated)
        centres = [updated[frame] for frame in frames]
        if self.track_rule == "official":
            # the released code indexes the step by positions already moved by it
            centres = [torch.gather(step, 1, c) for c in centres[:-1]] + centres[-1:]
        return torch.stack(centres, dim=1)

    def end_of_read(self, query: FrameFeatures, state: HMMNState) -> None:
        """Mark the stored tracks as being on this query frame's grid (see `_track`)."""
        if state.tracks is not None:
            state.tracks.on_frame = query.index

    def new_state(self, previous_probs: Tensor | None = None) -> HMMNState:
        return HMMNState(previous_probs=previous_probs)

    def parts(self) -> dict:
        """``kernel``: one tracking step and the res4 kernel (as at every frame of a video);
        ``fine``: the fine-scale read alone (candidate selection and the res3/res2 reads)."""
        return {"kernel": self.kernel_step, "fine": self.read_fine_scales}

    def kernel_step(self, query: FrameFeatures, memory: MemoryBank, state: HMMNState):
        centres = self.kernel_centres(query.keys["res4"], memory, state)
        self.end_of_read(query, state)
        return centres

    # -- fine-scale candidates ------------------------------------------------------------
    def _fine_positions(self, memory: MemoryBank) -> list[int] | None:
        return [0, -1] if self.fine_memory == "first_previous" else None

    @torch.no_grad()
    def fine_candidates(
        self,
        query_key: Tensor,
        memory: MemoryBank,
        kernel: tuple[Tensor, Tensor] | None,
        k: int,
    ) -> Tensor:
        """Candidate res4 memory cells ``[B, hw, k']`` per res4 query cell, indexing the fine
        memory frames' cells (``t·hw + y·w + x`` over the selected frames)."""
        positions = self._fine_positions(memory)
        subset_key = memory.keys("res4", positions)  # [B, Ck, F, h, w]
        batch, _, frames, height, width = subset_key.shape
        cells = height * width
        total = frames * cells
        k = min(k, total)
        if self.selection == "stride":
            n = self.stride_grid
            ys = torch.linspace(0, height - 1, min(n, height), device=query_key.device).round()
            xs = torch.linspace(0, width - 1, min(n, width), device=query_key.device).round()
            per_frame = (ys.long()[:, None] * width + xs.long()[None, :]).flatten().unique()
            offsets = torch.arange(frames, device=query_key.device)[:, None] * cells
            chosen = (offsets + per_frame[None, :]).flatten()
            return chosen.view(1, 1, -1).expand(batch, cells, -1).contiguous()
        if self.selection == "random":
            scores = torch.rand(batch, cells, total, device=query_key.device)
            return scores.topk(k, dim=2).indices
        scores = self.fine_candidate_scores(query_key, memory, kernel)
        return scores.topk(k, dim=1).indices.transpose(1, 2)  # best first

    @torch.no_grad()
    def fine_candidate_scores(
        self, query_key: Tensor, memory: MemoryBank, kernel: tuple[Tensor, Tensor] | None
    ) -> Tensor:
        """What the top-k candidates are ranked by, ``[B, F·hw, hw]`` over the fine memory
        frames' res4 cells: the res4 logits, plus the Gaussian's log when ``kernel`` (the
        order of softmax × kernel, which the released code ranks)."""
        positions = self._fine_positions(memory)
        subset_key = memory.keys("res4", positions)  # [B, Ck, F, h, w]
        height, width = subset_key.shape[-2:]
        cells = height * width
        logits = ops.affinity_logits(
            query_key.flatten(2), subset_key.flatten(2), similarity=self.similarity
        )  # [B, F·hw, hw]
        if kernel is None:
            return logits
        centres, sigmas = kernel
        order = memory.resolve_positions(positions)
        index = torch.cat([torch.arange(p * cells, (p + 1) * cells) for p in order])
        index = index.to(centres.device)
        return logits + ops.gaussian_log_bias(
            centres[:, index],
            sigmas[:, index],
            ops.query_grid_positions((height, width), device=logits.device)[None],
        )

    # -- read ------------------------------------------------------------------------------
    def read(self, query: FrameFeatures, memory: MemoryBank, state: HMMNState) -> Readout:
        memory_key = memory.keys("res4")  # [B, Ck, T, h, w]
        memory_value = memory.values("res4")  # [B, O, Cv, T, h, w]
        valid = memory.object_valid()  # [B, O, T]
        batch, objects, channels, frames, height, width = memory_value.shape
        query_key = query.keys["res4"]
        kernel = None
        if self._kernel_active():
            kernel = self.kernel_centres(query_key, memory, state)
        read = self._read_res4(
            query_key, memory_key, memory_value, valid, kernel, memory.all_valid()
        )
        query_value = query.query_value.unsqueeze(1).expand(-1, objects, -1, -1, -1)
        features = {"res4": torch.cat([read, query_value], dim=2)}
        rate = self.readout_dropout if self.training else 0.0
        for scale, fine in self.read_fine_scales(query, memory, state, kernel).items():
            features[scale] = drop_whole(fine, rate)
        self.end_of_read(query, state)
        return Readout(features=features)

    def read_fine_scales(
        self,
        query: FrameFeatures,
        memory: MemoryBank,
        state: HMMNState,
        kernel: tuple[Tensor, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """The res3/res2 readouts ``[B, O, Cv_s, f·h, f·w]`` before the readout dropout, from
        the top-k candidates of the (kernel-weighted, when ``kernel``) res4 affinity."""
        if not self.fine_scales:
            return {}
        query_key = query.keys["res4"]
        k = self.top_k if self.training else self.inference_top_k
        candidates = None if k is None else self.fine_candidates(query_key, memory, kernel, k)
        grid = (query_key.shape[-2], query_key.shape[-1])
        return {
            scale: self._read_fine(scale, query, memory, candidates, grid)
            for scale in self.fine_scales
        }

    def _read_res4(
        self,
        query_key: Tensor,
        memory_key: Tensor,
        memory_value: Tensor,
        valid: Tensor,
        kernel: tuple[Tensor, Tensor] | None,
        all_valid: bool,
    ) -> Tensor:
        batch, objects, channels, frames, height, width = memory_value.shape
        gaussian = {}
        if kernel is not None:
            gaussian = {
                "gaussian_centers": kernel[0],
                "gaussian_sigma": kernel[1],
                "query_hw": (height, width),
            }
        if all_valid:
            read = ops.memory_read(
                query_key.flatten(2),
                memory_key.flatten(2),
                memory_value.flatten(1, 2).flatten(2),  # [B, O·Cv, N]: one affinity
                similarity=self.similarity,
                **gaussian,
            )
        else:
            if kernel is not None:
                gaussian["gaussian_centers"] = kernel[0].repeat_interleave(objects, dim=0)
                gaussian["gaussian_sigma"] = kernel[1].repeat_interleave(objects, dim=0)
            pixel_valid = valid[..., None, None].expand(-1, -1, -1, height, width)
            read = ops.memory_read(
                query_key.flatten(2).repeat_interleave(objects, dim=0),
                memory_key.flatten(2).repeat_interleave(objects, dim=0),
                memory_value.flatten(0, 1).flatten(2),
                similarity=self.similarity,
                memory_mask=pixel_valid.flatten(0, 1).flatten(1),
                **gaussian,
            )
        return read.view(batch, objects, channels, height, width)

    def _read_fine(
        self,
        scale: str,
        query: FrameFeatures,
        memory: MemoryBank,
        candidates: Tensor | None,
        coarse_hw: tuple[int, int],
    ) -> Tensor:
        """The fine readout ``[B, O, Cv_s, f·h, f·w]`` at ``scale``."""
        factor = FINE_FACTORS[scale]
        positions = self._fine_positions(memory)
        valid = memory.object_valid(positions)  # [B, O, F]
        all_valid = memory.all_valid(positions)
        # the gathering read takes the memory as pixel rows [B, N, C]: read it laid out so
        pixel_major = candidates is not None and all_valid
        memory_key = memory.keys(scale, positions, pixel_major=pixel_major)  # [B, Ck, F, fh, fw]
        memory_value = memory.values(scale, positions, pixel_major=pixel_major)  # [B, O, Cv, F, ·]
        batch, objects, channels, frames, fine_h, fine_w = memory_value.shape
        query_key = query.keys[scale]
        if candidates is None:  # k = ∞: the dense fine-scale read
            pixel_valid = valid[..., None, None].expand(-1, -1, -1, fine_h, fine_w)
            read = ops.memory_read(
                query_key.flatten(2).repeat_interleave(objects, dim=0),
                memory_key.flatten(2).repeat_interleave(objects, dim=0),
                memory_value.flatten(0, 1).flatten(2),
                similarity=self.similarity,
                memory_mask=None if all_valid else pixel_valid.flatten(0, 1).flatten(1),
            )
            return read.view(batch, objects, channels, fine_h, fine_w)
        # res2 keeps the best k/4 of the res4 candidates (§3.2): a similar number of pixels
        keep = candidates.shape[2] if scale == "res3" else max(candidates.shape[2] // 4, 1)
        coarse = candidates[..., :keep]
        index = ops.expand_index(coarse, coarse_hw, factor)  # [B, hw, keep·f²]
        grouped_query = group_by_cell(query_key, factor)  # [B, Ck, hw, f²]
        if all_valid:
            read = ops.gather_read(
                grouped_query,
                memory_key.flatten(2),
                memory_value.flatten(1, 2).flatten(2),  # [B, O·Cv, N]
                index,
                similarity=self.similarity,
                check_index_range=False,  # top-k positions expanded to cells: in range
            )  # [B, O·Cv, hw, f²]
            read = ungroup_cells(read, factor, coarse_hw)
            return read.view(batch, objects, channels, fine_h, fine_w)
        # late objects: candidates in frames without their value are dropped (index −1)
        cells_per_frame = fine_h * fine_w
        frame_of = index // cells_per_frame  # [B, hw, K]
        object_index = index.unsqueeze(1).expand(-1, objects, -1, -1)
        frame_valid = torch.gather(
            valid, 2, frame_of.flatten(1).unsqueeze(1).expand(-1, objects, -1)
        ).view_as(object_index)
        object_index = torch.where(frame_valid, object_index, torch.full_like(object_index, -1))
        read = ops.gather_read(
            grouped_query.repeat_interleave(objects, dim=0),
            memory_key.flatten(2).repeat_interleave(objects, dim=0),
            memory_value.flatten(0, 1).flatten(2),
            object_index.flatten(0, 1),
            similarity=self.similarity,
            check_index_range=False,  # as above, with −1 for dropped candidates
        )  # [B·O, Cv, hw, f²]
        read = ungroup_cells(read, factor, coarse_hw)
        return read.view(batch, objects, channels, fine_h, fine_w)

"""LMRC's local memory read-and-comparator (Heo, Koh and Kim, "Local Memory Read-and-Comparator
for Video Object Segmentation", IEEE Access 2022, §III). No public implementation exists; the
paper is the specification, and the choices made where it is silent are listed below.

Memories. The *local* memory L is the previous frame: the most recent frame in the bank (the
temporary frame at inference, the last memorised one in training). The *global* memory G is
every other memorised frame (the first frame and every ``mem_every``-th frame, "except the
previous frame", §III-E-2); when the bank holds one frame only, it is both. Only L is read at
res3/res2, so when a frame is memorised, `LMRCReader.memorize` drops the res3/res2 keys and
values of every frame already in the bank (from then on global memory only): the bank keeps
fine scales for one frame, not for every memory frame. (The network still encodes them for
every memorised frame: each is the local memory of the frame after it.)

Similarity (Eq. 1, 4): S = −‖k_Q − k_M‖² · scale, STCN's negative squared L2, with STCN's
scale 1/√Ck (the paper's Eq. 1 omits it; STCN's code, whose encoders LMRC starts from,
applies it). The same S feeds the softmax reads and the comparator.

GMR (Eq. 1–3): the global read at res4 over the T global frames, through `vos.ops.memory_read`
(`global_read`, shared with STM); objects that joined late read only the frames holding them.

LMR (Eq. 4–5): at each scale r of ``local_scales`` every query pixel reads the previous frame
inside the (2d+1)² window around its own position (d = ``radius``), through
`vos.ops.window_read`: memory O(H_r·W_r·(2d+1)²), never (H_r·W_r)² (§III-E-4). Window
positions outside the frame are excluded from the softmax. ``local_scales=[res4]`` is Table 4's
LMR-S; ``[]`` is setting A (GMR only).

SLMR (Eq. 6–8): for r in ``sequential_scales`` the local key and value at r are re-organised
with the local affinity W^{L_{r+1}} one level coarser,

    K^{S_r}(x, y) = Σ_{u,v ∈ [−d, d]} W^{L_{r+1}}(x̄, ȳ; x̄+u, ȳ+v) · K^{L_r}(x + 2u, y + 2v),

x̄ = ⌊x/2⌋, and the same for V. The fine pixels with one parity (x mod 2, y mod 2) form a grid
on the coarse grid, and on it Eq. 6 is a coarse window read with that sub-grid as the value.
So the re-organisation is one `window_read` at r+1 whose value is the pixel-unshuffled (2×2
space-to-depth) local key and value at r, pixel-shuffled back: exact, O(H·W·(2d+1)²), and it
shares LMR's affinity at r+1 because both are read in the same call. (The paper writes x̄ =
[x/2]; rounding down is the only choice for which x + 2u stays inside the frame exactly when
x̄ + u does.) Then R^{S_r} is LMR's read with K^{S_r}, V^{S_r} as the memory (Eq. 8).

Memory comparator (§III-C, Eq. 9–10): the k best similarities per query pixel (k =
``top_k``, 5) of the global read at res4 (over all T·H·W global pixels) and of each local or
sequential-local read (over its window), sorted best first; the global ones are bilinearly
upsampled res4 → res3 → res2 in turn. The similarity comparison block compares them rank by
rank,

    D = α/2 · (e^{S_L} − e^{S_G}) / (e^{S_L} + e^{S_G}) = α/2 · tanh((S_L − S_G) / 2),

(the tanh form is the same number without the overflow of e^{S}), then a 1×1 conv (k → 1, one
per readout) and a sigmoid give the reliability H ∈ (0, 1) that scales that readout (Eq. 10).
Similarities are object-independent (keys are shared), so H is shared by the objects. A window
with fewer than k positions inside the frame (d = 1 at a corner) has S_L = −∞ in the missing
ranks: D = −α/2 there. With ``comparator=false`` (Table 4 B–D) the readouts enter unweighted.

Decoder (Fig. 5): res4 takes [R^G, R̃^{L_4}, the query's own value] (the query value is the
frame feature at res4, as in STCN); res3 and res2 take [R̃^{L_r}, R̃^{S_r}] (whichever exist)
added to the frame-feature skip (`Refine`'s memory conv).

Scale loss (Eq. 12): (1/H4W4) Σ_i (‖k^{Q4}_i‖² − ‖k^{Q3}_{i'}‖²)² + (‖k^{Q4}_i‖² − ‖k^{Q2}_{i''}‖²)²
where i', i'' are the res3/res2 pixels inside res4 cell i: each term is averaged over those
children (the paper names one "equivalent position"; all of them are equally so). Weighted by β
= ``scale_loss_weight`` (1e-4); the config's schedule sets β to 0 after 0.5% of the training
steps (the paper: "used until 1K iterations" of 200K). It is returned by `extra_losses`
(averaged over the clip's query frames) in training only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vos import ops
from vos.model.memory import MemoryBank
from vos.model.readers.base import FeatureSpec, FrameFeatures, MemoryReader, ReaderState, Readout
from vos.model.readers.stm import global_read
from vos.ops import WindowTop

SCALES = ("res4", "res3", "res2")  # coarse to fine
LOCAL_ONLY = ("res3", "res2")  # scales only the local memory (the most recent frame) is read at
FINER = {"res4": "res3", "res3": "res2"}
COARSER = {"res3": "res4", "res2": "res3"}


def memory_split(memory: MemoryBank) -> tuple[list[int], int]:
    """Read-order positions of the global memory and of the local memory (the most recent
    frame); the global memory is every other frame, or that frame when it is the only one."""
    count = len(memory)
    if count == 0:
        raise ValueError("LMRCReader: the memory is empty; memorise the first frame first")
    local = count - 1
    return (list(range(count - 1)) if count > 1 else [local]), local


def window_read_and_reorganise(
    query_key: Tensor,
    memory_key: Tensor,
    memory_value: Tensor,
    finer: Sequence[Tensor],
    *,
    radius: int,
    top_k: int | None = None,
) -> tuple[Tensor, WindowTop | None, list[Tensor]]:
    """LMR at one scale (Eq. 4–5), with SLMR's re-organisation (Eq. 6–7) of the tensors one
    scale finer riding on the same affinity.

    ``query_key``/``memory_key`` ``[B, Ck, h, w]``, ``memory_value`` ``[B, Cv, h, w]``, each of
    ``finer`` ``[B, C_i, 2h, 2w]`` (the local key and value one scale finer). Returns the readout
    ``[B, Cv, h, w]``, the window's top-k similarities (`vos.ops.WindowTop`, when ``top_k``) and
    each ``finer`` tensor re-organised, ``[B, C_i, 2h, 2w]``: a fine pixel of parity (x mod 2,
    y mod 2) lies on a grid aligned with the coarse one, so Eq. 6 is the coarse window read of
    that sub-grid, and all four sub-grids ride as channels (pixel-unshuffle / -shuffle).
    """
    value_channels = memory_value.shape[1]
    passengers = [F.pixel_unshuffle(t, 2) for t in finer]
    result = ops.window_read(
        query_key,
        memory_key,
        torch.cat([memory_value, *passengers], dim=1),
        radius=radius,
        similarity="l2",
        return_top=top_k,
    )
    read, top = result if top_k is not None else (result, None)
    parts = torch.split(read, [value_channels, *(p.shape[1] for p in passengers)], dim=1)
    return parts[0], top, [F.pixel_shuffle(part, 2) for part in parts[1:]]


def comparison_block(local_top: Tensor, global_top: Tensor, alpha: float) -> Tensor:
    """Eq. 9: D = α/2 · (e^{S_L} − e^{S_G}) / (e^{S_L} + e^{S_G}), ``[B, k, h, w]`` each."""
    return 0.5 * alpha * torch.tanh(0.5 * (local_top - global_top))


def scale_loss(query_keys: dict[str, Tensor]) -> Tensor:
    """Eq. 12 for query keys ``{"res4": [B, C, h, w], "res3": [B, C, 2h, 2w], "res2": ...}``:
    the squared difference of squared key norms between res4 and each finer scale present,
    averaged over the finer pixels inside each res4 cell, then over res4 pixels and batch."""
    coarse = query_keys["res4"].pow(2).sum(dim=1)  # [B, h, w]
    batch, height, width = coarse.shape
    total = coarse.new_zeros(())
    for scale, factor in (("res3", 2), ("res2", 4)):
        if scale not in query_keys:
            continue
        fine = query_keys[scale].pow(2).sum(dim=1)  # [B, f·h, f·w]
        fine = fine.view(batch, height, factor, width, factor)
        total = total + (coarse[:, :, None, :, None] - fine).pow(2).mean(dim=(2, 4)).mean()
    return total


class LMRCReader(MemoryReader):
    def __init__(
        self,
        key_channels: int = 64,  # paper: 64 at every scale
        value_channels: int = 256,  # res4 value, global and local (paper: 256)
        fine_value_channels: dict[str, int] | None = None,  # paper: res3 128, res2 64
        local_scales: Sequence[str] = ("res4", "res3", "res2"),  # LMR; [res4] = LMR-S
        sequential_scales: Sequence[str] = ("res3", "res2"),  # SLMR
        comparator: bool = True,  # MC
        radius: int = 2,  # d: the local region is (2d+1)²
        top_k: int = 5,  # k of the comparator
        alpha: float = 3.0,  # α of Eq. 9
        scale_loss_weight: float = 1e-4,  # β of Eq. 11; the schedule zeroes it after 1K steps
    ):
        super().__init__()
        fine_value_channels = dict(fine_value_channels or {"res3": 128, "res2": 64})
        local_scales = tuple(local_scales)
        sequential_scales = tuple(sequential_scales)
        for name, scales, allowed in (
            ("local_scales", local_scales, SCALES),
            ("sequential_scales", sequential_scales, ("res3", "res2")),
        ):
            unknown = [s for s in scales if s not in allowed]
            if unknown or len(set(scales)) != len(scales):
                raise ValueError(
                    f"LMRCReader: {name} must be distinct scales among {allowed}, got {scales}"
                )
        for scale in sequential_scales:
            if COARSER[scale] not in local_scales:
                raise ValueError(
                    f"LMRCReader: SLMR at {scale} re-organises with LMR's affinity at "
                    f"{COARSER[scale]}; add {COARSER[scale]} to local_scales"
                )
        if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
            raise ValueError(f"LMRCReader: radius must be an int >= 0, got {radius!r}")
        if comparator and top_k < 1:
            raise ValueError(f"LMRCReader: top_k must be >= 1, got {top_k}")
        if scale_loss_weight < 0:
            raise ValueError(f"LMRCReader: scale_loss_weight must be >= 0, got {scale_loss_weight}")
        self.local_scales = tuple(s for s in SCALES if s in local_scales)
        self.sequential_scales = tuple(s for s in SCALES if s in sequential_scales)
        self.comparator = comparator
        self.radius = radius
        self.top_k = top_k
        self.alpha = float(alpha)
        self.scale_loss_weight = float(scale_loss_weight)
        self._pending_scale_losses: list[Tensor] = []

        fine_scales = [s for s in ("res3", "res2") if s in self.local_scales + sequential_scales]
        missing = [s for s in fine_scales if s not in fine_value_channels]
        if missing:
            raise ValueError(f"LMRCReader: fine_value_channels lacks {missing}")
        self.value_channels = {"res4": value_channels}
        self.value_channels.update({s: fine_value_channels[s] for s in fine_scales})
        readout_counts = {
            s: (s in self.local_scales) + (s in self.sequential_scales) for s in fine_scales
        }
        self.needs = FeatureSpec(
            key_scales={"res4": key_channels, **{s: key_channels for s in fine_scales}},
            value_channels=value_channels,
            # [R^G, R̃^{L4}?, query value]
            readout_channels=(2 + ("res4" in self.local_scales)) * value_channels,
            fine_value_channels={s: fine_value_channels[s] for s in fine_scales},
            fine_readout_channels={
                s: n * fine_value_channels[s] for s, n in readout_counts.items()
            },
            fine_values_see_frame_features=True,
            previous_frame_apart=True,  # the local memory (`memory_split`)
        )
        # one similarity comparison block (its 1×1 conv) per weighted readout
        weighted = [f"local_{s}" for s in self.local_scales]
        weighted += [f"sequential_{s}" for s in self.sequential_scales]
        self.comparison = nn.ModuleDict(
            {name: nn.Conv2d(top_k, 1, 1) for name in weighted} if comparator else {}
        )
        for conv in self.comparison.values():
            # H = sigmoid(mean of D) at the start: it rises with the local read's advantage
            # (a random init could start with either sign)
            nn.init.constant_(conv.weight, 1.0 / top_k)
            nn.init.zeros_(conv.bias)

    def set_scale_loss_weight(self, weight: float) -> None:
        self.scale_loss_weight = float(weight)

    # -- memory ----------------------------------------------------------------------------
    def memorize(
        self,
        frame: FrameFeatures,
        values: dict[str, Tensor],
        memory: MemoryBank,
        object_probs: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """No extras. The frame about to be memorised becomes the local memory, so every frame
        already in ``memory`` is global memory from now on, which is read at res4 only: their
        res3/res2 keys and values are dropped from the bank (the frame's own are kept)."""
        held = memory.entries + ([memory.temporary] if memory.temporary is not None else [])
        for entry in held:
            for scale in LOCAL_ONLY:
                entry.keys.pop(scale, None)
                entry.values.pop(scale, None)
        return {}

    # -- pieces ----------------------------------------------------------------------------
    def global_top(self, query_key: Tensor, memory: MemoryBank, positions: list[int]) -> Tensor:
        """The k best global similarities −‖q−k‖²/√Ck per res4 query pixel, best first,
        ``[B, k, h, w]``; ``-inf`` in the ranks beyond the global memory's pixels. Found by
        `ops.memory_top` (a kernel on CUDA, query blocks on the CPU: never the [N, H·W] map)."""
        memory_key = memory.keys("res4", positions).flatten(2)  # [B, Ck, N]
        batch, channels, height, width = query_key.shape
        query = query_key.flatten(2)
        top, _ = ops.memory_top(query, memory_key, self.top_k, similarity="l2")  # [B, M, k]
        top = top.transpose(1, 2) - query.pow(2).sum(dim=1, keepdim=True) / channels**0.5
        return top.reshape(batch, self.top_k, height, width)

    def local_read(
        self,
        query_key: Tensor,
        memory_key: Tensor,
        memory_value: Tensor,
        finer: Sequence[Tensor] = (),
    ) -> tuple[Tensor, Tensor | None, list[Tensor]]:
        """`window_read_and_reorganise`, with the top-k similarities as −‖q−k‖²·scale
        ``[B, k, h, w]`` (best first) when the comparator needs them."""
        read, top, reorganised = window_read_and_reorganise(
            query_key,
            memory_key,
            memory_value,
            finer,
            radius=self.radius,
            top_k=self.top_k if self.comparator else None,
        )
        if top is None:
            return read, None, reorganised
        channels = query_key.shape[1]
        top_values = top.values.permute(0, 3, 1, 2)  # [B, k, h, w]
        top_values = top_values - query_key.pow(2).sum(dim=1, keepdim=True) / channels**0.5
        return read, top_values, reorganised

    def weigh(self, name: str, readout: Tensor, local_top: Tensor | None, global_top) -> Tensor:
        """Eq. 9–10: the readout ``[B, O, C, h, w]`` scaled by its reliability H."""
        if not self.comparator:
            return readout
        difference = comparison_block(local_top, global_top, self.alpha)
        reliability = torch.sigmoid(self.comparison[name](difference))  # [B, 1, h, w]
        return readout * reliability.unsqueeze(1)

    # -- read ------------------------------------------------------------------------------
    def read(self, query: FrameFeatures, memory: MemoryBank, state: ReaderState) -> Readout:
        global_positions, local_position = memory_split(memory)
        query_res4 = query.keys["res4"]
        batch, _, height, width = query_res4.shape
        global_readout = global_read(
            query_res4, memory, similarity="l2", positions=global_positions
        )
        objects = global_readout.shape[1]
        query_value = query.query_value.unsqueeze(1).expand(-1, objects, -1, -1, -1)

        global_tops = {}
        if self.comparator and (self.local_scales or self.sequential_scales):
            top = self.global_top(query_res4, memory, global_positions)
            for scale in SCALES:  # sequential upsampling res4 -> res3 -> res2
                global_tops[scale] = top
                top = F.interpolate(top, scale_factor=2, mode="bilinear", align_corners=False)

        readouts: dict[str, list[Tensor]] = {s: [] for s in SCALES}
        reorganised: dict[str, list[Tensor]] = {}  # SLMR's K^S, V^S per fine scale
        for scale in self.local_scales:
            key = memory.keys(scale, [local_position])[:, :, 0]  # [B, Ck, h, w]
            value = memory.values(scale, [local_position])[:, :, :, 0]  # [B, O, Cv, h, w]
            finer = FINER.get(scale)
            passengers = []
            if finer in self.sequential_scales:  # Eq. 6-7 ride on this read's affinity
                passengers = [
                    memory.keys(finer, [local_position])[:, :, 0],
                    memory.values(finer, [local_position])[:, :, :, 0].flatten(1, 2),
                ]
            # objects share the affinity: their values are read as channels, [B, O·Cv, h, w]
            read, local_top, moved = self.local_read(
                query.keys[scale], key, value.flatten(1, 2), passengers
            )
            read = read.view(*value.shape)
            readouts[scale].append(
                self.weigh(f"local_{scale}", read, local_top, global_tops.get(scale))
            )
            if passengers:
                reorganised[finer] = moved
        for scale in self.sequential_scales:
            key, value = reorganised[scale]
            read, local_top, _ = self.local_read(query.keys[scale], key, value)
            read = read.view(batch, objects, -1, *read.shape[-2:])
            readouts[scale].append(
                self.weigh(f"sequential_{scale}", read, local_top, global_tops.get(scale))
            )

        features = {"res4": torch.cat([global_readout, *readouts["res4"], query_value], dim=2)}
        for scale in ("res3", "res2"):
            if readouts[scale]:
                features[scale] = torch.cat(readouts[scale], dim=2)
        if self.training and self.scale_loss_weight > 0:
            fine = {s: query.keys[s] for s in ("res3", "res2") if s in query.keys}
            if fine:
                self._pending_scale_losses.append(scale_loss({"res4": query_res4, **fine}))
        return Readout(features=features)

    def extra_losses(self) -> dict[str, Tensor]:
        """β·L_scale averaged over the query frames read since the last call (Eq. 11)."""
        pending, self._pending_scale_losses = self._pending_scale_losses, []
        if not pending:
            return {}
        return {"scale_loss": self.scale_loss_weight * torch.stack(pending).mean()}

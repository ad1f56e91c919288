"""RMNet's regional memory reader (Xie et al., "Efficient Regional Memory Network for Video
Object Segmentation", CVPR 2021, §3.1–3.2).

STM's read (`stm.py`) restricted, per object j, to boxes around the object: local-to-local
matching between the memory regions R_M^j and the query region R_Q^j.

Regional attention maps (§3.1.1, Eq. 1–2). A_i^j = 1 inside the box around object j's mask in
frame i (pixels with probability ≥ ``threshold``), padded by φ = ``padding`` res4 cells on every
side (paper: 4 cells = 64 px at 1/16, on 480p frames' 30×54 grid) and clamped to the frame.
φ is a fraction of the frame, so the config scales it with the grid
(``model.widths.<size_name>.padding`` in `conf/model/rmnet.yaml`): 4 cells at
``model/size=paper``, 1 cell at ``tiny`` (128×224 frames, an 8×14 grid, where 4 cells would
make most boxes cover most of the frame). Boxes are found at input resolution
(``vos.ops.boxes_from_masks``, padding φ·16 px) and brought to the res4 grid:

- ``paper``: a cell is in the region when any of its 16×16 pixels is in the box (the box at
  input resolution, rounded outwards to whole cells);
- ``official``: ``F.interpolate(scale_factor=1/16)`` (nearest) as the released code does, i.e.
  a cell is in the region when its top-left pixel is in the box.

Memory side: A^j = 0 when object j is absent from the memory frame (§3.1.1, "Specially ...");
``paper`` semantics therefore uses ``fallback="empty"`` with a 1-pixel minimum. The released
generator treats memory and query alike (fewer than η = 10 pixels → the whole frame), which
``official`` semantics reproduces.

Query side (§3.1.2, Fig. 4). The previous frame's soft mask is warped to the current frame with
the backward flow (``vos.ops.warp_backward``; t → t−1, bilinear, samples outside the frame → 0)
and boxed like a memory mask (``vos.ops.warped_mask_boxes``: the same box, with only the pixels
that can reach the threshold warped); with fewer than η = ``min_pixels`` pixels (counted at input
resolution; paper: 10) A_Q^j = 1, a global read for that object. ``query_region_mode`` selects
Table 6's rows:

- ``flow`` (default): the warped previous mask's box (RMNet);
- ``previous``: the previous mask's box, not warped (FEELVOS-style "previous region");
- ``best_match``: KMN-style "best-match region". Rule used here: for object j, take the most
  recent memory frame in which j's mask has a cell (a res4 cell holding at least one pixel with
  probability ≥ ``threshold``), and the query pixel q* = argmax_q max_{p in those cells} S(p, q)
  (S the read's logits; ties → the first in raster order). The region is a box of the size of
  j's (padded) memory region in that frame, centred on q* (top-left at q* − ⌊size/2⌋) and
  clipped to the frame. KMN's Gaussian is replaced by this box so that the three rows differ
  only in where the box comes from. No such memory cell → the whole frame;
- ``none``: the whole frame.

With no previous mask (the first predicted frame) the ``flow`` and ``previous`` regions are the
whole frame; ``best_match`` needs none.

Regional read (§3.2, Eq. 3–7). Eq. 3–4 are STM's read, s^j(p, q) = exp(k_M^j(p)·k_Q^j(q) / √Ck)
and v^j(q) = Σ_p s / Σ_p s · v_M^j(p), with Ck the key channels (Eq. 3 as printed has no
1/√Ck; STM's read and the released code's ``/ sqrt(128)`` have it, and so does
``similarity="dot"`` here; ``similarity="l2"`` is STCN's −‖k_M − k_Q‖²/√Ck); Eq. 5 concatenates [v_Q^j(q), v^j(q)]; Eq. 6 defines the
regions as the non-zero cells of the attention maps and Eq. 7 sets s^j(p, q) = 0 for p ∉ R_M^j
or q ∉ R_Q^j. Per object, on the B·O fold, through ``vos.ops.memory_read``:

- ``region_semantics="paper"`` (default): memory pixels outside R_M^j are masked out of the
  softmax (Eq. 7: exp(s) = 0, not exp(0) = 1); query pixels outside R_Q^j have every s = 0, so
  Eq. 4 is 0/0 — they read 0 (``query_mask``), which is also what skipping them computes.
- ``region_semantics="official"`` (``hzxie/RMNet:models/rmnet.py``): keys and values are
  multiplied by the box maps and the softmax is not masked. A zeroed memory key has logit 0, so
  it stays in the normaliser with weight e^0 = 1 and a zero value: a query pixel q in R_Q^j
  reads Σ_{p∈R_M} e^{s_p} v_p / (Σ_{p∈R_M} e^{s_p} + |∉R_M|). A zeroed query key gives every
  memory pixel logit 0: q ∉ R_Q^j reads the uniform mean over all memory pixels,
  Σ_{p∈R_M} v_p / N, instead of 0. The query box is found as the released ``segment`` finds
  it: the previous mask and the flow are cropped to the frame inside the padding
  (``FrameFeatures.frame_size``), warped and boxed there (so φ stops at the frame's edge, and
  η's fallback is the frame), and the box is placed back on the padded grid; memory boxes
  are found on the padded mask, as ``memorize`` does.

In both, the query value of Eq. 5 is the *regional* query value v_Q^j = A_Q^j · v_Q (§3.1.2,
"Regional Query Key/Value", and the released code's ``v4e`` multiplied by the map), so the whole
readout is 0 outside the query region under ``paper`` semantics; ``regional_query_value=False``
keeps the frame's full query value everywhere instead.

Objects that joined after a memory frame hold no value there (``memory.object_valid()``): those
(object, frame) pairs are masked out of the softmax under both semantics, as in the STM reader.

Table 5's switches: ``memory_region=False`` / ``query_region=False`` make that side global. With
both off (or every region the whole frame) the reader equals ``STMReader``.

Memory regions come from the memorised frame's object masks. ``memorize`` receives them as
``object_probs [B, O, H, W]`` and stores ``{"region", "object_cells"}`` (bool ``[B, O, h, w]``)
as the frame's extras; without them (``object_probs=None``, or a memory frame stored with no
extras) the mask is unknown and the region is the whole frame.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vos import ops
from vos.model.memory import MemoryBank
from vos.model.padding import padding_for, unpad
from vos.model.readers.base import FeatureSpec, FrameFeatures, MemoryReader, ReaderState, Readout

QUERY_REGION_MODES = ("flow", "previous", "best_match", "none")
REGION_SEMANTICS = ("paper", "official")


def cells_in_boxes(
    boxes: Tensor, grid_hw: tuple[int, int], stride: int, rule: str = "any"
) -> Tensor:
    """Pixel boxes ``[B, O, 4]`` (y0, x0, y1, x1; end-exclusive) -> cell maps ``[B, O, h, w]``.

    ``rule="any"``: a cell is in when any of its ``stride``×``stride`` pixels is in the box;
    ``rule="top_left"``: when its top-left pixel is (nearest downsampling by 1/stride).
    """
    height, width = grid_hw
    starts_y = torch.arange(height, device=boxes.device) * stride
    starts_x = torch.arange(width, device=boxes.device) * stride
    y0, x0, y1, x1 = (boxes[..., i : i + 1] for i in range(4))  # each [B, O, 1]
    if rule == "any":
        in_y = (starts_y < y1) & (starts_y + stride > y0)
        in_x = (starts_x < x1) & (starts_x + stride > x0)
    elif rule == "top_left":
        in_y = (starts_y >= y0) & (starts_y < y1)
        in_x = (starts_x >= x0) & (starts_x < x1)
    else:
        raise ValueError(f"cells_in_boxes: rule must be 'any' or 'top_left', got {rule!r}")
    return in_y.unsqueeze(3) & in_x.unsqueeze(2)


def _maps_like(memory: MemoryBank) -> Tensor:
    """An empty ``[B, O, T, h, w]`` tensor shaped like the memory's res4 maps (one frame's
    value is looked at; stacking every frame's only to read a shape cost a copy per read)."""
    one = memory.frame_values("res4")  # [B, O, Cv, h, w]
    batch, objects, _, height, width = one.shape
    return one.new_empty(batch, objects, len(memory), height, width)


class RMNetReader(MemoryReader):
    def __init__(
        self,
        key_channels: int = 128,
        value_channels: int = 512,
        similarity: str = "dot",  # "dot": STM's q·k/√Ck (RMNet's); "l2": STCN's −‖q−k‖²/√Ck
        memory_region: bool = True,  # Table 5 "M.R.": False = every memory pixel (global)
        query_region: bool = True,  # Table 5 "Q.R.": False = every query pixel (global)
        query_region_mode: str = "flow",  # Table 6: flow | previous | best_match | none
        region_semantics: str = "paper",  # paper: masked softmax | official: zeroed keys/values
        padding: int = 4,  # φ in res4 cells (paper: 4 cells = 64 px at 1/16)
        min_pixels: int = 10,  # η: fewer query-mask pixels (input resolution) -> whole frame
        threshold: float = 0.5,  # a pixel belongs to the object when its probability is ≥ this
        regional_query_value: bool = True,  # §3.1.2: v_Q^j = A_Q^j · v_Q (paper and code)
    ):
        super().__init__()
        if query_region_mode not in QUERY_REGION_MODES:
            raise ValueError(
                f"query_region_mode must be one of {QUERY_REGION_MODES}, got {query_region_mode!r}"
            )
        if region_semantics not in REGION_SEMANTICS:
            raise ValueError(
                f"region_semantics must be one of {REGION_SEMANTICS}, got {region_semantics!r}"
            )
        if padding < 0 or min_pixels < 0:
            raise ValueError("padding and min_pixels must be >= 0")
        self.similarity = similarity
        self.memory_region = memory_region
        self.query_region = query_region
        self.query_region_mode = query_region_mode
        self.region_semantics = region_semantics
        self.padding = padding
        self.min_pixels = min_pixels
        self.threshold = threshold
        self.regional_query_value = regional_query_value
        self.needs = FeatureSpec(
            key_scales={"res4": key_channels},
            value_channels=value_channels,
            readout_channels=2 * value_channels,
            needs_flow=query_region and query_region_mode == "flow",
        )

    # -- regions ---------------------------------------------------------------------------
    def _padding_px(self, stride: int) -> int:
        """φ at input resolution: ``padding`` res4 cells of ``stride`` pixels."""
        return self.padding * stride

    def _cell_rule(self) -> str:
        return "top_left" if self.region_semantics == "official" else "any"

    def _boxes_to_cells(
        self,
        probs: Tensor,
        grid_hw: tuple[int, int],
        *,
        min_pixels: int,
        fallback: str,
    ) -> Tensor:
        """Padded boxes around soft masks ``[B, O, H, W]`` as res4 cell maps ``[B, O, h, w]``."""
        stride = probs.shape[-1] // grid_hw[1]
        boxes = ops.mask_boxes(
            probs,
            threshold=self.threshold,
            padding=self._padding_px(stride),
            min_pixels=min_pixels,
            fallback=fallback,
        )
        return self._cells(boxes, grid_hw, stride, (0, 0))

    def _cells(
        self, boxes: Tensor, grid_hw: tuple[int, int], stride: int, offset: tuple[int, int]
    ) -> Tensor:
        """Pixel boxes found on a crop at ``offset`` (y, x) of the canvas -> res4 cell maps."""
        boxes = boxes + boxes.new_tensor([offset[0], offset[1], offset[0], offset[1]])
        return cells_in_boxes(boxes, grid_hw, stride, self._cell_rule())

    def memorize(
        self,
        frame: FrameFeatures,
        values: dict[str, Tensor],
        memory: MemoryBank,
        object_probs: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """The frame's memory regions A_i^j (Eq. 1–2) and object cells, bool ``[B, O, h, w]``.

        ``object_probs [B, O, H, W]``: the frame's soft masks at input resolution. None means
        the masks are unknown: the region and the object cells are the whole frame.
        """
        batch, objects = values["res4"].shape[:2]
        grid_hw = tuple(values["res4"].shape[-2:])
        if object_probs is None:
            whole = torch.ones(
                batch, objects, *grid_hw, dtype=torch.bool, device=values["res4"].device
            )
            return {"region": whole, "object_cells": whole.clone()}
        if self.region_semantics == "official":
            # the released generator: fewer than η pixels -> the whole frame, memory included
            region = self._boxes_to_cells(
                object_probs, grid_hw, min_pixels=self.min_pixels, fallback="full"
            )
        else:
            # Eq. 1–2 and §3.1.1: an absent object (no pixel ≥ threshold) has A = 0
            region = self._boxes_to_cells(object_probs, grid_hw, min_pixels=1, fallback="empty")
        stride = object_probs.shape[-1] // grid_hw[1]
        object_cells = torch.nn.functional.max_pool2d(
            (object_probs >= self.threshold).float(), stride
        ).bool()
        return {"region": region, "object_cells": object_cells}

    def _stored_maps(self, memory: MemoryBank, name: str, objects: int, like: Tensor) -> Tensor:
        """A per-frame extra stacked to ``[B, O, T, h, w]``; unknown -> True.

        Objects added after a frame was stored (``MemoryBank.add_objects``) get False there:
        the frame holds no value for them anyway.
        """
        try:
            per_frame = memory.extras(name)
        except KeyError:
            return torch.ones_like(like, dtype=torch.bool)
        padded = []
        for maps in per_frame:
            missing = objects - maps.shape[1]
            if missing > 0:
                maps = torch.cat([maps, maps.new_zeros(maps.shape[0], missing, *maps.shape[2:])], 1)
            padded.append(maps)
        return torch.stack(padded, dim=2)

    def memory_regions(self, memory: MemoryBank) -> Tensor:
        """R_M^j as bool ``[B, O, T, h, w]`` (all True when ``memory_region`` is off)."""
        like = _maps_like(memory)
        if not self.memory_region:
            return torch.ones_like(like, dtype=torch.bool)
        return self._stored_maps(memory, "region", like.shape[1], like)

    def query_regions(self, query: FrameFeatures, memory: MemoryBank, state: ReaderState) -> Tensor:
        """R_Q^j as bool ``[B, O, h, w]`` on the query's res4 grid."""
        query_key = query.keys["res4"]
        batch, _, height, width = query_key.shape
        objects = memory.num_objects
        whole = torch.ones(batch, objects, height, width, dtype=torch.bool, device=query_key.device)
        mode = self.query_region_mode
        if not self.query_region or mode == "none":
            return whole
        if mode == "best_match":  # found in memory: needs no previous mask
            return self._best_match_regions(query_key, memory, objects)
        if state.previous_probs is None:  # the first predicted frame: a global read
            return whole
        previous = state.previous_probs
        flow = query.flow
        if mode == "flow" and flow is None:
            raise ValueError(
                "RMNetReader: query_region_mode='flow' needs the query frame's backward flow "
                "(FrameFeatures.flow); give the network a flow source or choose another mode"
            )
        stride = previous.shape[-1] // width
        offset = (0, 0)
        if self.region_semantics == "official" and query.frame_size is not None:
            # the released code warps and boxes the frame itself and zero-pads the box map
            # afterwards: boxes are clamped to the frame, not to the padded canvas
            frame_h, frame_w = query.frame_size
            left, _, top, _ = padding_for(frame_h, frame_w, stride)
            previous = unpad(previous, frame_h, frame_w, stride)
            flow = None if flow is None else unpad(flow, frame_h, frame_w, stride)
            offset = (top, left)
        box_options = dict(
            threshold=self.threshold,
            padding=self._padding_px(stride),
            min_pixels=self.min_pixels,
            fallback="full",
        )
        if mode == "flow":  # the warped previous mask's box, warping only where it can be
            boxes = ops.warped_mask_boxes(previous, flow.to(previous.dtype), **box_options)
        else:
            boxes = ops.mask_boxes(previous, **box_options)
        regions = self._cells(boxes, (height, width), stride, offset)
        # objects that joined at this frame have no previous mask: a global read for them
        if regions.shape[1] < objects:
            regions = torch.cat([regions, whole[:, regions.shape[1] :]], dim=1)
        return regions

    def _best_match_regions(self, query_key: Tensor, memory: MemoryBank, objects: int) -> Tensor:
        """KMN-style region: a box of the object's memory-region size at the best match."""
        batch, channels, height, width = query_key.shape
        memory_key = memory.keys("res4")  # [B, Ck, T, h, w]
        frames = memory_key.shape[2]
        valid = memory.object_valid()  # [B, O, T]
        like = _maps_like(memory)
        cells = self._stored_maps(memory, "object_cells", objects, like)
        cells = cells & valid[..., None, None]
        region_size_maps = self._stored_maps(memory, "region", objects, like)
        present = cells.flatten(3).any(dim=3)  # [B, O, T]
        # the most recent memory frame that holds the object (memory order is oldest first)
        recency = torch.arange(1, frames + 1, device=present.device) * present
        latest = recency.argmax(dim=2)  # [B, O]
        batch_index = torch.arange(batch, device=latest.device)[:, None]
        object_index = torch.arange(objects, device=latest.device)[None, :]
        keys_latest = memory_key.permute(0, 2, 1, 3, 4)[batch_index, latest]  # [B, O, Ck, h, w]
        cells_latest = cells[batch_index, object_index, latest]  # [B, O, h, w]
        size_latest = region_size_maps[batch_index, object_index, latest]  # [B, O, h, w]
        logits = ops.affinity_logits(
            query_key.flatten(2).repeat_interleave(objects, dim=0),
            keys_latest.flatten(0, 1).flatten(2),
            similarity=self.similarity,
        )  # [B·O, h·w memory cells, M]
        outside = ~cells_latest.flatten(0, 1).flatten(1)
        logits = logits.masked_fill(outside.unsqueeze(2), float("-inf"))
        best = logits.amax(dim=1).argmax(dim=1).view(batch, objects)  # first max in raster order
        center_y, center_x = best // width, best % width
        box_h = size_latest.any(dim=3).sum(dim=2)  # rows of the (padded) memory region
        box_w = size_latest.any(dim=2).sum(dim=2)
        y0 = center_y - box_h // 2
        x0 = center_x - box_w // 2
        boxes = torch.stack([y0, x0, y0 + box_h, x0 + box_w], dim=2).clamp(min=0)
        regions = cells_in_boxes(boxes, (height, width), 1, "any")
        found = present.any(dim=2)  # [B, O]
        return torch.where(found[..., None, None], regions, torch.ones_like(regions))

    # -- read ------------------------------------------------------------------------------
    def read(self, query: FrameFeatures, memory: MemoryBank, state: ReaderState) -> Readout:
        memory_key = memory.keys("res4")  # [B, Ck, T, h, w]
        memory_value = memory.values("res4")  # [B, O, Cv, T, h, w]
        valid = memory.object_valid()  # [B, O, T]
        batch, objects, channels, frames, height, width = memory_value.shape
        memory_regions = self.memory_regions(memory)  # [B, O, T, h, w]
        query_regions = self.query_regions(query, memory, state)  # [B, O, h, w]
        pixel_valid = valid[..., None, None].expand(-1, -1, -1, height, width)
        query_key = query.keys["res4"].unsqueeze(1)  # [B, 1, Ck, h, w]
        object_key = memory_key.unsqueeze(1)  # [B, 1, Ck, T, h, w]
        # masks are passed whenever they can exclude a pixel, decided on the host: no device
        # read-back per frame (the regions are device tensors, so their masks always go)
        if self.region_semantics == "paper":
            # a read that is global on a side, known on the host, passes no mask there: the
            # global baseline reads the memory in place instead of cropping it whole
            global_memory = not self.memory_region and memory.all_valid()
            global_query = not self.query_region or self.query_region_mode == "none"
            memory_mask = None if global_memory else pixel_valid & memory_regions
            query_mask = None if global_query else query_regions
            folded_query_key = query_key.expand(-1, objects, -1, -1, -1)
            folded_memory_key = object_key.expand(-1, objects, -1, -1, -1, -1)
            folded_value = memory_value
        else:
            # the released code: A·k and A·v, softmax over every memory pixel (zeros included)
            memory_mask = None if memory.all_valid() else pixel_valid
            query_mask = None
            folded_query_key = query_key * query_regions.unsqueeze(2)
            folded_memory_key = object_key * memory_regions.unsqueeze(2)
            folded_value = memory_value * memory_regions.unsqueeze(2)

        def memory_read(out: Tensor | None = None) -> Tensor:
            return ops.memory_read(
                folded_query_key.flatten(0, 1).flatten(2),  # [B·O, Ck, M]
                folded_memory_key.flatten(0, 1).flatten(2),  # [B·O, Ck, N]
                folded_value.flatten(0, 1).flatten(2),  # [B·O, Cv, N]
                similarity=self.similarity,
                memory_mask=None if memory_mask is None else memory_mask.flatten(0, 1).flatten(1),
                query_mask=None if query_mask is None else query_mask.flatten(0, 1).flatten(1),
                out=out,
            )

        query_value = query.query_value.unsqueeze(1)
        region_maps = query_regions.unsqueeze(2).to(query_value.dtype)
        if torch.is_grad_enabled():
            read = memory_read().view(batch, objects, channels, height, width)
            if self.regional_query_value:
                query_value = query_value * region_maps
            query_value = query_value.expand(-1, objects, -1, -1, -1)
            return Readout(features={"res4": torch.cat([read, query_value], dim=2)})
        # without autograd the readout is assembled in place: the read writes its channels
        # (out=) and the regional query value the others, no concatenation copies either
        # (the dtype the concatenation would promote to, e.g. under autocast)
        dtype = torch.promote_types(folded_value.dtype, query_value.dtype)
        readout = query_value.new_empty(batch, objects, 2 * channels, height, width, dtype=dtype)
        reads = readout[:, :, :channels]
        if dtype == folded_value.dtype:
            memory_read(out=reads.view(batch * objects, channels, height * width))
        else:
            reads.copy_(memory_read().view(batch, objects, channels, height, width))
        if self.regional_query_value:
            torch.mul(query_value, region_maps, out=readout[:, :, channels:])
        else:
            readout[:, :, channels:].copy_(query_value.expand(-1, objects, -1, -1, -1))
        return Readout(features={"res4": readout})

"""LCM's reader (Hu et al., "Learning Position and Target Consistency for Memory-based Video
Object Segmentation", CVPR 2021, §3.2–3.4). No public implementation exists: the paper is the
specification, and the choices made where it is silent are listed at the end.

GRM (§3.2, Eq. 1–2): STM's global read over the memory pool at res4 (`stm.global_read`,
through `vos.ops.memory_read`); the global key is the shared res4 key (C/8 in the paper).

PGM (§3.3, Eq. 3–6): local keys ``k_L`` (a second 3×3 conv on res4, key ``"res4_local"``)
of the query and of the previous frame (the most recent memory frame), plus a fixed 2-D
sine/cosine encoding, through a shared 1×1 conv f_n:

    p^M(i) = f_n(k_L^M(i) + pos(i)),   p^Q(j) = f_n(k_L^Q(j) + pos(j))
    S(i, j) = softmax_j(p^Q(j)·p^M(i)) · g(M_{t−1}(i)),   g(x) = exp(x)/e ∈ [1/e, 1]
    P(j) = mean(top-K_i S(i, j)),   y_PGM(j) = P(j) · v^Q(j)                    (K = 8)

The softmax runs over the *query* dimension (each previous-frame pixel spreads a unit of
response over the query); g, from the previous frame's soft mask at res4 (area average),
damps background rows but never zeroes them. The softmax is shared by the objects, the g
weighting is per object: one H·W × H·W map per object exists at a time (objects are looped),
e.g. 30·54 = 1620 cells at 480p: 1620² · 4 B = 10.5 MB per map, whatever the object count.

ORM (§3.4, Eq. 7–11): the *first value* v^F, the query encoder's value (the embedding v^Q
comes from) of the frame where the object's mask was given (frame 0, or the frame a late
object joined at), restricted to that mask, is the set F = {f_i}; it and the query value v^Q
relate both ways (non-local, normalised by d = H·W, g a 1×1 conv):

    F_Q(i)  = 1/d Σ_j (f_i · v^Q(j)) g(v^Q(j))       v^Q_F(j) = 1/d Σ_i (v^Q(j) · f_i) g(f_i)
    v^Q ← v^Q + v^Q_F,   F ← F + F_Q,   y_ORM(j) = v^Q(j) · σ(FC(ReLU(FC(GAP(F)))))

(SENet's squeeze-excitation on the pooled set, reduction ``se_reduction``). f_i and v^Q(j) are
both the query head's embedding, so f_i · v^Q(j) compares like with like; the memory value
(from the memory encoder, which sees the mask) is not used here. ``memorize`` stores the
frame's query value with a memory frame that may be a given frame (one holding an object that
no earlier memory frame holds), and its res4 masks; only the set's elements are gathered, so
ORM's relation map is |F| × H·W. As Eq. 8 writes, the relation is scaled by 1/d alone (no
1/√C): it sums |F| products, so its size against v^Q grows with |F|/(H·W) and with the
embedding's scale (``python -m vos.probe lcm`` prints it).

Fusion (§3.4, last paragraph: ORM's output "is merged with" PGM's, the result "concatenated
with the memory value from" GRM; Fig. 2, which draws it, did not survive in our copy of the
paper, so the text is what is followed): ``[y_GRM, y_PGM / max_j P(j) + y_ORM]``, 2·Cv
channels into the shared decoder. Table 4's switches drop a term: without PGM the merge is
y_ORM, without ORM it is y_PGM / max_j P(j), without both it is v^Q (STM), without GRM its
half of the readout is zeros.

Choices where the paper is silent:
- the merge rescales y_PGM by the position map's maximum over the query pixels (per object),
  i.e. it merges P/max P ∈ (0, 1] · v^Q, the map as the heatmap the paper normalises it to
  (Fig. 4): each softmax row over the query sums to 1, so P itself is at most 1/K of a
  column's total and about 1/(H·W) on average (0.013 measured); summed as it is with y_ORM, a
  full-size v^Q·SE, PGM's term was 2–10% of the merge, structurally (`vos.probe lcm`'s
  ``pgm_share``; 45% with the rescaling at random weights). After the
  rescaling y_PGM is v^Q at the map's peak, the scale of y_ORM; Eq. 3–6 themselves are
  unchanged (`position_maps` returns Eq. 6's P);
- the affinity p^Q·p^M has no 1/√C scale (Eq. 5 has none; f_n can learn one);
- Eq. 4 adds pos(i) to the query key; read as pos(j), the query pixel's own position;
- one g (1×1 conv) serves both directions of Eq. 7–8, as the equations write one symbol;
  g starts at zero, as the relation branch of the non-local blocks of [14] starts, so a fresh
  ORM is the SE re-weighting alone and the relation (cubic in the value's scale) grows as it
  is learned;
- F's membership at res4: cells whose area-averaged given mask is ≥ 0.5; an object too small
  for any such cell uses every cell its mask touches; an object with no mask pixel at all in
  its given frame has an empty set, and ORM leaves its query value unchanged (y_ORM = v^Q,
  no relation, unit channel weights);
- without a previous mask (none known) g = 1 everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vos import ops
from vos.model.memory import MemoryBank
from vos.model.readers.base import FeatureSpec, FrameFeatures, MemoryReader, ReaderState, Readout
from vos.model.readers.stm import global_read

LOCAL_KEY = "res4_local"
FIRST_VALUE = "query_value"  # the extra holding a possible given frame's query value (ORM)


@dataclass
class LCMState(ReaderState):
    # ORM's per-object first value v^F [B, O, Cv, N] (the given frame's query value) and set
    # membership [B, O, N], kept for the video until objects join
    first_sets: tuple[Tensor, Tensor] | None = None


def position_map(similarity: Tensor, prior: Tensor, top_k: int) -> Tensor:
    """Eq. 5–6 without v^Q: ``similarity [B, N, M]`` (rows: previous-frame pixels, already
    softmax-normalised over the query M), ``prior [B, N]`` = g(M_{t−1}) -> ``[B, M]``, the mean
    of the top-K weighted responses over the previous frame."""
    weighted = similarity * prior.unsqueeze(2)
    k = min(top_k, weighted.shape[1])
    return weighted.topk(k, dim=1).values.mean(dim=1)


class LCMReader(MemoryReader):
    def __init__(
        self,
        key_channels: int = 128,
        value_channels: int = 512,
        local_key_channels: int | None = None,  # paper: C/8 like the global key
        similarity: str = "dot",
        use_grm: bool = True,  # Table 4's switches
        use_pgm: bool = True,
        use_orm: bool = True,
        top_k: int = 8,  # K of the position map
        se_reduction: int = 16,
        mask_threshold: float = 0.5,
    ):
        super().__init__()
        local = local_key_channels or key_channels
        if local % 4:
            raise ValueError(f"LCMReader: local_key_channels must be a multiple of 4, got {local}")
        if top_k < 1:
            raise ValueError(f"LCMReader: top_k must be >= 1, got {top_k}")
        if not (use_grm or use_pgm or use_orm):
            raise ValueError("LCMReader: at least one of use_grm, use_pgm, use_orm must be on")
        self.similarity = similarity
        self.use_grm = use_grm
        self.use_pgm = use_pgm
        self.use_orm = use_orm
        self.top_k = top_k
        self.mask_threshold = mask_threshold
        self.needs = FeatureSpec(
            key_scales={"res4": key_channels, LOCAL_KEY: local},
            value_channels=value_channels,
            readout_channels=2 * value_channels,
        )
        self.position_embed = nn.Conv2d(local, local, 1)  # f_n
        self.relation_value = nn.Conv2d(value_channels, value_channels, 1)  # g of Eq. 7–8
        # zero at the start (see the module docstring): ORM starts as SE re-weighting alone
        nn.init.zeros_(self.relation_value.weight)
        nn.init.zeros_(self.relation_value.bias)
        hidden = max(value_channels // se_reduction, 1)
        self.excite = nn.Sequential(
            nn.Linear(value_channels, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, value_channels),
            nn.Sigmoid(),
        )
        self._encoding: dict[tuple, Tensor] = {}
        # a list turns on recording of each read's branch scales (`vos.probe lcm`)
        self.scale_log: list[dict] | None = None
        self._relation_ratios: list[float] = []

    # -- memory -----------------------------------------------------------------------------
    def memorize(
        self,
        frame: FrameFeatures,
        values: dict[str, Tensor],
        memory: MemoryBank,
        object_probs: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """The frame's masks at res4 (area average) and, when the frame may be an object's given
        frame (the memory holds no earlier frame with that object), its query value v^F
        ``[B, O, Cv, h, w]`` (a view, the same for every object), for ORM's set. Other frames
        store an empty ``[B, O, 0]`` in its place: v^F is needed from given frames only."""
        if object_probs is None:
            return {}
        grid = values["res4"].shape[-2:]
        extras = {"mask": F.adaptive_avg_pool2d(object_probs, grid)}
        if self.use_orm:
            batch, objects = values["res4"].shape[:2]
            if self._may_be_given(memory, objects):
                first = frame.query_value.unsqueeze(1)
                extras[FIRST_VALUE] = first.expand(-1, objects, *first.shape[2:])
            else:
                extras[FIRST_VALUE] = frame.query_value.new_zeros(batch, objects, 0)
        return extras

    @staticmethod
    def _may_be_given(memory: MemoryBank, objects: int) -> bool:
        """Whether a frame memorised now may be the first memory frame holding an object: the
        memory is empty, or some object is held by none of its frames (it joins now)."""
        if len(memory) == 0:
            return True
        if memory.all_valid():  # known on the host: every held object is in every frame
            return memory.num_objects < objects
        known = memory.object_valid().any(dim=2)  # [B, O_memory]
        return known.shape[1] < objects or not bool(known.all())

    # -- PGM --------------------------------------------------------------------------------
    def _positions(self, channels: int, height: int, width: int, like: Tensor) -> Tensor:
        key = (channels, height, width, like.device, like.dtype)
        if key not in self._encoding:
            code = ops.sine_positional_encoding(channels, height, width)
            self._encoding[key] = code.to(device=like.device, dtype=like.dtype)
        return self._encoding[key]

    def position_maps(self, query: FrameFeatures, memory: MemoryBank, state: LCMState) -> Tensor:
        """The H×W position map of every object, ``[B, O, 1, h, w]``."""
        query_local = query.keys[LOCAL_KEY]  # [B, C, h, w]
        previous_local = memory.keys(LOCAL_KEY, positions=[-1])[:, :, 0]
        batch, channels, height, width = query_local.shape
        objects = memory.values("res4", positions=[-1]).shape[1]
        pos = self._positions(channels, height, width, query_local)
        p_query = self.position_embed(query_local + pos).flatten(2)  # [B, C, M]
        p_memory = self.position_embed(previous_local + pos).flatten(2)  # [B, C, N]
        logits = ops.affinity_logits(p_query, p_memory, similarity="dot", scale=1.0)
        similarity = torch.softmax(logits, dim=2)  # over the query dimension, Eq. 5
        if state.previous_probs is None:
            previous = similarity.new_zeros(batch, objects, height * width) + 1.0  # g = 1
        else:
            pooled = F.adaptive_avg_pool2d(state.previous_probs, (height, width))
            previous = torch.exp(pooled.flatten(2).to(similarity.dtype) - 1.0)  # exp(x)/e
            if previous.shape[1] < objects:  # objects that joined at this frame: no mask
                missing = previous.new_ones(batch, objects - previous.shape[1], height * width)
                previous = torch.cat([previous, missing], dim=1)
        maps = [position_map(similarity, previous[:, o], self.top_k) for o in range(objects)]
        return torch.stack(maps, dim=1).view(batch, objects, 1, height, width)

    def new_state(self, previous_probs: Tensor | None = None) -> LCMState:
        return LCMState(previous_probs=previous_probs)

    # -- ORM --------------------------------------------------------------------------------
    def first_sets(self, memory: MemoryBank, state: LCMState) -> tuple[Tensor, Tensor]:
        """Each object's first value v^F ``[B, O, Cv, N]`` (its given frame's query value) and
        its set membership ``[B, O, N]`` (float 0/1), cached per video until objects join."""
        valid = memory.object_valid()  # [B, O, T]
        batch, objects = valid.shape[:2]
        cached = state.first_sets
        if cached is not None and cached[0].shape[1] == objects:
            return cached
        try:
            masks = memory.extras("mask")
            first_values = memory.extras(FIRST_VALUE)
        except KeyError as error:
            raise ValueError(
                "LCMReader: ORM needs the given frame's mask and query value stored with its "
                "memory entry (memorize with object_probs)"
            ) from error
        given = valid.float().argmax(dim=2)  # [B, O]: the first memory frame holding the object
        batch_index = torch.arange(batch, device=given.device)[:, None]
        object_index = torch.arange(objects, device=given.device)[None, :]
        mask_stack = torch.stack(
            [self._pad_objects(m, objects) for m in masks], dim=2
        )  # [B, O, T, h, w]
        first_masks = mask_stack[batch_index, object_index, given].flatten(2)  # [B, O, N]
        chosen = []
        for b in range(batch):
            for o in range(objects):
                stored = first_values[int(given[b, o])]
                if o >= stored.shape[1] or stored.dim() != 5:
                    raise ValueError(
                        f"LCMReader: memory frame {int(given[b, o])}, the first holding object "
                        f"{o}, has no query value stored (memorize it before later frames)"
                    )
                chosen.append(stored[b, o].flatten(1))  # [Cv, N]
        first = torch.stack(chosen).view(batch, objects, *chosen[0].shape)
        members = first_masks >= self.mask_threshold
        touched = first_masks > 0
        empty = ~members.any(dim=2, keepdim=True)
        members = torch.where(empty, touched, members).to(first.dtype)
        sets = (first, members)
        state.first_sets = sets
        return sets

    @staticmethod
    def _pad_objects(mask: Tensor, objects: int) -> Tensor:
        missing = objects - mask.shape[1]
        if missing <= 0:
            return mask
        return torch.cat([mask, mask.new_zeros(mask.shape[0], missing, *mask.shape[2:])], dim=1)

    def relate(self, query_value: Tensor, first_value: Tensor, members: Tensor) -> Tensor:
        """Eq. 7–11 for one object: query value ``[B, Cv, M]``, first value v^F ``[B, Cv, N]``
        (the given frame's query value) with set membership ``[B, N]`` (0/1) -> y_ORM
        ``[B, Cv, M]``.

        Only the set's elements are gathered, so the relation map is |F| × M rather than
        N × M (objects usually cover a small part of the frame)."""
        d = query_value.shape[2]
        g_query = self._relation(query_value)
        outputs = []
        for b in range(query_value.shape[0]):
            elements = members[b].nonzero().squeeze(1)
            if elements.numel() == 0:
                # an empty set: no relation and no re-weighting (see the module docstring)
                outputs.append(query_value[b])
                continue
            subset = first_value[b][:, elements]  # F: [Cv, |F|]
            affinity = subset.transpose(0, 1) @ query_value[b]  # f_i · v^Q(j): [|F|, M]
            query_from_set = self._relation(subset[None])[0] @ affinity / d  # Eq. 8
            if self.scale_log is not None:  # v^Q_F against the v^Q it is added to
                self._relation_ratios.append(_rms(query_from_set) / _rms(query_value[b]))
            set_from_query = g_query[b] @ affinity.transpose(0, 1) / d  # Eq. 7
            pooled = (subset + set_from_query).mean(dim=1)  # GAP of Eq. 10's F
            weights = self.excite(pooled[None])[0]  # [Cv]
            outputs.append((query_value[b] + query_from_set) * weights[:, None])  # Eq. 9, 11
        return torch.stack(outputs)

    def _relation(self, x: Tensor) -> Tensor:
        """g, the 1×1 conv of Eq. 7–8, on ``[B, Cv, L]``."""
        return self.relation_value(x.unsqueeze(-1)).squeeze(-1)

    # -- read -------------------------------------------------------------------------------
    def read(self, query: FrameFeatures, memory: MemoryBank, state: LCMState) -> Readout:
        query_value = query.query_value  # [B, Cv, h, w]
        batch, channels, height, width = query_value.shape
        objects = memory.values("res4", positions=[-1]).shape[1]
        if self.use_grm:
            grm = global_read(query.keys["res4"], memory, similarity=self.similarity)
        else:
            grm = query_value.new_zeros(batch, objects, channels, height, width)
        per_object_value = query_value.unsqueeze(1).expand(-1, objects, -1, -1, -1)
        self._relation_ratios = []
        merged = maps = pgm = orm = None
        if self.use_pgm:
            maps = self.position_maps(query, memory, state)  # Eq. 6's P, [B, O, 1, h, w]
            pgm = heatmap(maps) * per_object_value  # y_PGM / max_j P(j): see the docstring
            merged = pgm
        if self.use_orm:
            first_values, members = self.first_sets(memory, state)
            flat_query = query_value.flatten(2)
            orm = torch.stack(
                [
                    self.relate(flat_query, first_values[:, o], members[:, o])
                    for o in range(objects)
                ],
                dim=1,
            ).view(batch, objects, channels, height, width)
            merged = orm if merged is None else merged + orm
        if merged is None:
            merged = per_object_value
        if self.scale_log is not None:
            self.scale_log.append(self._scales(query_value, grm, maps, pgm, orm, merged))
        return Readout(features={"res4": torch.cat([grm, merged], dim=2)})

    def _scales(self, query_value, grm, maps, pgm, orm, merged) -> dict:
        """One read's branch sizes (root mean square): each module's term as it enters the
        readout, how much of the merged half PGM makes up, and ORM's relation against v^Q per
        object."""
        scales = {"query_value": _rms(query_value), "grm": _rms(grm), "merged": _rms(merged)}
        if maps is not None:
            scales.update(map_mean=maps.mean().item(), map_max=maps.amax().item())
            scales["pgm"] = _rms(pgm)
            scales["pgm_share"] = scales["pgm"] / scales["merged"]
        if orm is not None:
            scales["orm"] = _rms(orm)
        scales["relation_to_query"] = list(self._relation_ratios)
        return scales


def heatmap(maps: Tensor) -> Tensor:
    """Position maps ``[B, O, 1, h, w]`` divided by their maximum over the query pixels, per
    object: values in (0, 1], 1 at each map's peak."""
    peak = maps.amax(dim=(-2, -1), keepdim=True)
    return maps / peak.clamp_min(torch.finfo(maps.dtype).tiny)


def _rms(x: Tensor) -> float:
    return x.detach().float().pow(2).mean().sqrt().item()


def pgm_map_bytes(height: int, width: int, dtype_bytes: int = 4) -> int:
    """Bytes of PGM's one H·W × H·W map (per object at a time) at a res4 grid."""
    cells = height * width
    return cells * cells * dtype_bytes

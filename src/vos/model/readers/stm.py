"""STM's global space-time memory read (Oh et al., ICCV 2019), the baseline of every paper.

For each object, every query pixel attends to every memory pixel of every memory frame at
res4: W = softmax over THW of S(k_M, k_Q); readout = v_M W, concatenated with the query's
own value. S is the dot product / √Ck (STM) or STCN's negative squared L2.
"""

from __future__ import annotations

import torch

from vos import ops
from vos.model.memory import MemoryBank
from vos.model.readers.base import FeatureSpec, FrameFeatures, MemoryReader, ReaderState, Readout


class STMReader(MemoryReader):
    def __init__(
        self,
        key_channels: int = 128,
        value_channels: int = 512,
        similarity: str = "dot",  # "dot": STM's q·k/√Ck; "l2": STCN's −‖q−k‖²/√Ck
        top_k: int | None = None,  # STCN's truncated softmax (inference-time option), None = full
    ):
        super().__init__()
        self.similarity = similarity
        self.top_k = top_k
        self.needs = FeatureSpec(
            key_scales={"res4": key_channels},
            value_channels=value_channels,
            readout_channels=2 * value_channels,
        )

    def read(self, query: FrameFeatures, memory: MemoryBank, state: ReaderState) -> Readout:
        top_k = None if self.training else self.top_k
        read = global_read(query.keys["res4"], memory, similarity=self.similarity, top_k=top_k)
        query_value = query.query_value.unsqueeze(1).expand(-1, read.shape[1], -1, -1, -1)
        return Readout(features={"res4": torch.cat([read, query_value], dim=2)})


def global_read(
    query_key: torch.Tensor,
    memory: MemoryBank,
    *,
    similarity: str = "dot",
    top_k: int | None = None,
    positions: list[int] | None = None,
) -> torch.Tensor:
    """STM's read of every object at res4: query key ``[B, Ck, h, w]`` -> ``[B, O, Cv, h, w]``
    (shared by the readers whose global part is STM's, e.g. LCM's GRM, LMRC's GMR), over the
    memory frames at ``positions`` (all by default)."""
    memory_key = memory.keys("res4", positions)  # [B, Ck, T, H, W]
    memory_value = memory.values("res4", positions)  # [B, O, Cv, T, H, W]
    valid = memory.object_valid(positions)  # [B, O, T]
    batch, objects, channels, frames, height, width = memory_value.shape
    query_key = query_key.flatten(2)  # [B, Ck, M]
    if memory.all_valid(positions):
        # Keys do not depend on the object: one affinity serves all of them (STCN's trick).
        read = ops.memory_read(
            query_key,
            memory_key.flatten(2),
            memory_value.flatten(1, 2).flatten(2),  # [B, O·Cv, N]
            similarity=similarity,
            top_k=top_k,
        )
    else:
        # Some objects joined late: each object reads only the frames that hold its value.
        pixel_valid = valid[..., None, None].expand(-1, -1, -1, height, width)
        read = ops.memory_read(
            query_key.repeat_interleave(objects, dim=0),
            memory_key.flatten(2).repeat_interleave(objects, dim=0),
            memory_value.flatten(0, 1).flatten(2),  # [B·O, Cv, N]
            similarity=similarity,
            memory_mask=pixel_valid.flatten(0, 1).flatten(1),
            top_k=top_k,
        )
    return read.view(batch, objects, channels, height, width)

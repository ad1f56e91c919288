"""The memory bank: what a reader reads from, and the policy of what it keeps.

Values depend on the object; keys do on STM's network and do not on STCN's
(docs/architecture.md): a frame's keys are ``[B, Ck, H, W]`` (one per frame) or
``[B, O, Ck, H, W]`` (one per object), its values ``[B, O, Cv, H, W]``. Readers read keys
``[B, Ck, T, H, W]`` and values ``[B, O, Cv, T, H, W]``; a bank of per-object keys is read
through `MemoryBank.folded`, which makes each object a batch element.

Policy (shared by training, validation, `vos.eval` and `vos.bench`):
- the first frame is permanent;
- other memorised frames are kept first-in first-out, at most ``max_frames`` frames in all
  (first included), so time and memory per frame stay flat on long videos;
- one optional *temporary* frame (the previous frame, STM's habit) is read with the memory
  but replaced at every frame.

Objects may join after frame 0: memory frames from before an object joined hold no value for
it; ``object_valid`` ``[B, O, T]`` says which (object, frame) pairs hold a value, and readers
exclude the others from that object's softmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class MemoryEntry:
    frame_index: int
    keys: dict[str, Tensor]  # scale -> [B, Ck, H, W], or [B, O, Ck, H, W] per object
    values: dict[str, Tensor]  # scale -> [B, O, Cv, H, W]
    object_valid: Tensor  # [B, O] bool
    permanent: bool = False
    extras: dict[str, Tensor] = field(default_factory=dict)  # reader-specific per-frame data
    # object_valid.all(), kept on the host (None: not known yet) so that readers choose their
    # shared-affinity path without reading object_valid back from the device at every read
    _all_valid: bool | None = field(default=None, repr=False, compare=False)

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name == "object_valid":
            super().__setattr__("_all_valid", None)  # a new validity: ask it again

    @property
    def all_valid(self) -> bool:
        """Every object holds a value in this frame (one device read the first time)."""
        if self._all_valid is None:
            super().__setattr__("_all_valid", bool(self.object_valid.all()))
        return self._all_valid


class MemoryBank:
    def __init__(self, max_frames: int | None = None):
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_memory_frames must be >= 1 or null, got {max_frames}")
        self.max_frames = max_frames
        self.entries: list[MemoryEntry] = []
        self.temporary: MemoryEntry | None = None

    # -- writing -------------------------------------------------------------------------
    def add(
        self,
        frame_index: int,
        keys: dict[str, Tensor],
        values: dict[str, Tensor],
        object_valid: Tensor | None = None,
        *,
        permanent: bool = False,
        extras: dict[str, Tensor] | None = None,
    ) -> None:
        """Memorise a frame; drops the oldest non-permanent frame beyond ``max_frames``."""
        entry = self._entry(frame_index, keys, values, object_valid, permanent, extras)
        self.entries.append(entry)
        # the temporary frame is older than any frame being memorised now: it is stale
        self.temporary = None
        if self.max_frames is not None:
            while len(self.entries) > self.max_frames:
                victim = next((i for i, e in enumerate(self.entries) if not e.permanent), None)
                if victim is None:
                    break
                del self.entries[victim]

    def set_temporary(
        self,
        frame_index: int,
        keys: dict[str, Tensor],
        values: dict[str, Tensor],
        object_valid: Tensor | None = None,
        extras: dict[str, Tensor] | None = None,
    ) -> None:
        """The previous frame, read with the memory until the next frame replaces it."""
        self.temporary = self._entry(frame_index, keys, values, object_valid, False, extras)

    def add_objects(self, count: int) -> None:
        """Objects joined: pad every stored value with zeros that no reader may attend to."""

        def padded(x: Tensor) -> Tensor:
            return torch.cat([x, x.new_zeros(x.shape[0], count, *x.shape[2:])], dim=1)

        for entry in self._all_entries():
            entry.values = {scale: padded(value) for scale, value in entry.values.items()}
            if self.keys_per_object:
                entry.keys = {name: padded(key) for name, key in entry.keys.items()}
            valid = entry.object_valid
            known = entry._all_valid
            entry.object_valid = torch.cat([valid, valid.new_zeros(valid.shape[0], count)], dim=1)
            if known is not None:
                entry._all_valid = known and count == 0

    @staticmethod
    def _entry(frame_index, keys, values, object_valid, permanent, extras) -> MemoryEntry:
        if object_valid is None:
            any_value = next(iter(values.values()))
            object_valid = torch.ones(
                any_value.shape[:2], dtype=torch.bool, device=any_value.device
            )
            all_valid = True  # known without asking the device
        else:
            all_valid = None  # asked once, at the first read
        entry = MemoryEntry(
            frame_index, dict(keys), dict(values), object_valid, permanent, dict(extras or {})
        )
        entry._all_valid = all_valid
        return entry

    # -- reading -------------------------------------------------------------------------
    def _all_entries(self) -> list[MemoryEntry]:
        return self.entries + ([self.temporary] if self.temporary is not None else [])

    def __len__(self) -> int:
        return len(self._all_entries())

    @property
    def frame_indices(self) -> list[int]:
        return [e.frame_index for e in self._all_entries()]

    def resolve_positions(self, positions: Sequence[int] | None) -> list[int]:
        """Read-order positions of a selection: all frames for None, else ``positions`` with
        negatives counted from the end (``[0, -1]``: the first and the most recent frame),
        each once, in read order."""
        if positions is None:
            return list(range(len(self)))
        return sorted({p % len(self) for p in positions})

    def _select(self, positions: Sequence[int] | None) -> list[MemoryEntry]:
        entries = self._all_entries()
        return [entries[p] for p in self.resolve_positions(positions)]

    @property
    def keys_per_object(self) -> bool:
        entries = self._all_entries()
        return bool(entries) and next(iter(entries[0].keys.values())).dim() == 5

    def folded(self) -> MemoryBank:
        """The same memory with each object as its own batch element: keys ``[B·O, Ck, ·]``,
        values ``[B·O, 1, Cv, ·]``, validity ``[B·O, 1]``, extras ``[B·O, 1, ·]``. Views, no
        copies, where the layout allows."""
        objects = self.num_objects

        def keys(x: Tensor) -> Tensor:
            return x.flatten(0, 1) if x.dim() == 5 else x.repeat_interleave(objects, dim=0)

        def per_object(x: Tensor) -> Tensor:
            if x.shape[1] < objects:  # a reader's extras from before objects joined: none
                x = torch.cat([x, x.new_zeros(x.shape[0], objects - x.shape[1], *x.shape[2:])], 1)
            return x.flatten(0, 1).unsqueeze(1)

        def fold(entry: MemoryEntry) -> MemoryEntry:
            return MemoryEntry(
                entry.frame_index,
                {name: keys(k) for name, k in entry.keys.items()},
                {scale: per_object(v) for scale, v in entry.values.items()},
                per_object(entry.object_valid),
                entry.permanent,
                {name: per_object(x) for name, x in entry.extras.items()},
                _all_valid=entry._all_valid,
            )

        bank = MemoryBank(self.max_frames)
        bank.entries = [fold(entry) for entry in self.entries]
        bank.temporary = None if self.temporary is None else fold(self.temporary)
        return bank

    def keys(self, scale: str = "res4", positions: Sequence[int] | None = None) -> Tensor:
        """``[B, Ck, T, H, W]`` (T = the selected frames)."""
        if self.keys_per_object:
            raise ValueError("this memory holds a key per object: read it through folded()")
        return torch.stack([e.keys[scale] for e in self._select(positions)], dim=2)

    def values(self, scale: str = "res4", positions: Sequence[int] | None = None) -> Tensor:
        """``[B, O, Cv, T, H, W]``."""
        return torch.stack([e.values[scale] for e in self._select(positions)], dim=3)

    def object_valid(self, positions: Sequence[int] | None = None) -> Tensor:
        """``[B, O, T]`` bool."""
        return torch.stack([e.object_valid for e in self._select(positions)], dim=2)

    def all_valid(self, positions: Sequence[int] | None = None) -> bool:
        """Whether every object holds a value in every selected frame (``object_valid(...)
        .all()``, answered on the host: no device read-back)."""
        return all(e.all_valid for e in self._select(positions))

    def extras(self, name: str) -> list[Tensor]:
        return [e.extras[name] for e in self._all_entries()]

    @property
    def num_objects(self) -> int:
        entries = self._all_entries()
        return entries[0].object_valid.shape[1] if entries else 0

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

Reads without autograd (inference) come from stacks kept between frames (`_FrameStack`): a
frame is copied into its stack once, when it is first read, and the temporary frame's slot is
overwritten in place, so a read of the whole memory is a view and not a re-stack of every
frame. Such a view is valid until the bank changes; readers use it within one frame's read.
With autograd on (training), reads stack the frames anew, since writing into a tensor that a
graph saved would break its backward.

``keys(..., pixel_major=True)`` / ``values(..., pixel_major=True)`` return the same shapes laid
out with the channels innermost (keys: stride 1 along Ck; values: along O·Cv), so that
``flatten(2)`` of them transposed is already the ``[B, N, C]`` rows a gathering read wants
(`vos.ops.gather_read`), with no copy of the memory at every read.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

_SERIALS = itertools.count()
# fields whose replacement changes what a stacked read of this entry holds
_STACKED_FIELDS = ("keys", "values", "object_valid", "extras")


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
    # (serial, version): which frame, as of which change, a stack slot holds (`_FrameStack`)
    _serial: int = field(default_factory=lambda: next(_SERIALS), repr=False, compare=False)
    _version: int = field(default=0, repr=False, compare=False)

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name == "object_valid":
            super().__setattr__("_all_valid", None)  # a new validity: ask it again
        if name in _STACKED_FIELDS:
            super().__setattr__("_version", getattr(self, "_version", 0) + 1)

    @property
    def all_valid(self) -> bool:
        """Every object holds a value in this frame (one device read the first time)."""
        if self._all_valid is None:
            super().__setattr__("_all_valid", bool(self.object_valid.all()))
        return self._all_valid

    @property
    def stamp(self) -> tuple[int, int]:
        return self._serial, self._version


class _FrameStack:
    """One stacked read (e.g. the res4 keys) kept between frames: slot t of ``buffer`` along
    ``axis`` holds the t-th entry read, stamped by `MemoryEntry.stamp`. A read copies only the
    entries whose slot holds something else (the new frame, the replaced temporary frame, the
    frames after a dropped one), and returns a view of the filled slots."""

    def __init__(
        self,
        tensor_of: Callable[[MemoryEntry], Tensor],
        capacity: int | None,
        pixel_major: bool = False,
    ):
        self.tensor_of = tensor_of
        self.capacity = capacity  # slots to allocate (the bank's cap + its temporary frame)
        self.pixel_major = pixel_major
        self.buffer: Tensor | None = None
        self.stamps: list[tuple[int, int]] = []

    def read(self, entries: Sequence[MemoryEntry]) -> Tensor:
        first = self.tensor_of(entries[0])
        axis = _stack_axis(first)
        slot_shape = first.shape
        buffer = self.buffer
        reusable = (
            buffer is not None
            and buffer.shape[axis] >= len(entries)
            and buffer.shape[:axis] + buffer.shape[axis + 1 :] == slot_shape
            and buffer.dtype == first.dtype
            and buffer.device == first.device
            # an inference tensor can only be written in inference mode, and vice versa
            and buffer.is_inference() == torch.is_inference_mode_enabled()
        )
        if not reusable:
            full = buffer is not None and buffer.shape[axis] < len(entries)
            grown = 2 * buffer.shape[axis] if full else 0  # an unbounded bank outgrew it
            slots = max(len(entries), self.capacity or 0, grown)
            shape = (*slot_shape[:axis], slots, *slot_shape[axis:])
            self.buffer = buffer = _new_stack(first, shape, axis, self.pixel_major)
            self.stamps = []
        for t, entry in enumerate(entries):
            if t < len(self.stamps) and self.stamps[t] == entry.stamp:
                continue
            tensor = self.tensor_of(entry)
            if tensor.shape != slot_shape:
                raise ValueError(
                    f"memory frame {entry.frame_index} holds a tensor of shape "
                    f"{tuple(tensor.shape)} where the other frames hold {tuple(slot_shape)}"
                )
            buffer.select(axis, t).copy_(tensor)
            if t < len(self.stamps):
                self.stamps[t] = entry.stamp
            else:
                self.stamps.append(entry.stamp)
        del self.stamps[len(entries) :]
        return buffer.narrow(axis, 0, len(entries))


def _stack_axis(tensor: Tensor) -> int:
    """Where frames stack: before the spatial dims of a map, after the objects of a validity."""
    return tensor.dim() - 2 if tensor.dim() >= 4 else tensor.dim()


def _field(entry: MemoryEntry, kind: str, name: str) -> Tensor:
    if kind == "object_valid":
        return entry.object_valid
    return getattr(entry, kind)[name]


def _pixel_major_orders(dims: int, axis: int) -> tuple[list[int], list[int]]:
    """For a stack of ``dims`` dimensions with frames at ``axis`` ([B, *channels, T,
    *spatial]): the order that puts the channels last ([B, T, *spatial, *channels]) and its
    inverse."""
    channels, spatial = list(range(1, axis)), list(range(axis, dims))
    order = [0, *spatial, *channels]
    return order, [order.index(d) for d in range(dims)]


def _new_stack(like: Tensor, shape: tuple[int, ...], axis: int, pixel_major: bool) -> Tensor:
    if not pixel_major or like.dim() < 4:
        return like.new_empty(shape)
    order, inverse = _pixel_major_orders(len(shape), axis)
    return like.new_empty([shape[d] for d in order]).permute(inverse)


def _stack(tensors: Sequence[Tensor], pixel_major: bool = False) -> Tensor:
    axis = _stack_axis(tensors[0])
    if not pixel_major or tensors[0].dim() < 4:
        return torch.stack(list(tensors), dim=axis)
    order, inverse = _pixel_major_orders(tensors[0].dim() + 1, axis)
    entry_order = [d if d < axis else d - 1 for d in order if d != axis]  # without T
    stacked = torch.stack([t.permute(entry_order) for t in tensors], dim=1)
    return stacked.permute(inverse)


class MemoryBank:
    def __init__(self, max_frames: int | None = None):
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_memory_frames must be >= 1 or null, got {max_frames}")
        self.max_frames = max_frames
        self.entries: list[MemoryEntry] = []
        self.temporary: MemoryEntry | None = None
        self._stacks: dict[tuple[str, str, bool], _FrameStack] = {}
        # a folded bank reads the whole memory from its source's stacks (views where they can be)
        self._fold_source: MemoryBank | None = None

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
        bank._fold_source = self
        return bank

    def keys(
        self,
        scale: str = "res4",
        positions: Sequence[int] | None = None,
        *,
        pixel_major: bool = False,
    ) -> Tensor:
        """``[B, Ck, T, H, W]`` (T = the selected frames); ``pixel_major``: Ck innermost."""
        if self.keys_per_object:
            raise ValueError("this memory holds a key per object: read it through folded()")
        return self._read("keys", scale, positions, pixel_major)

    def values(
        self,
        scale: str = "res4",
        positions: Sequence[int] | None = None,
        *,
        pixel_major: bool = False,
    ) -> Tensor:
        """``[B, O, Cv, T, H, W]``; ``pixel_major``: O·Cv innermost."""
        return self._read("values", scale, positions, pixel_major)

    def object_valid(self, positions: Sequence[int] | None = None) -> Tensor:
        """``[B, O, T]`` bool."""
        return self._read("object_valid", "", positions)

    def _read(
        self, kind: str, name: str, positions: Sequence[int] | None, pixel_major: bool = False
    ) -> Tensor:
        entries = self._all_entries()
        if not entries:
            raise ValueError("the memory holds no frame: memorise one before reading it")
        selected = self.resolve_positions(positions)
        if len(selected) == len(entries) and not torch.is_grad_enabled():
            return self._whole(kind, name, pixel_major)
        return _stack([_field(entries[p], kind, name) for p in selected], pixel_major)

    def _whole(self, kind: str, name: str, pixel_major: bool = False) -> Tensor:
        """Every frame, in read order, from the stacks kept between frames (no autograd)."""
        source = self._fold_source
        if source is not None and len(source) == len(self):
            whole = source._whole(kind, name, pixel_major)
            if kind == "keys":  # as `folded` makes each entry's keys
                return (
                    whole.flatten(0, 1)
                    if whole.dim() == 6
                    else whole.repeat_interleave(self.num_objects, dim=0)
                )
            return whole.flatten(0, 1).unsqueeze(1)
        stack = self._stacks.get((kind, name, pixel_major))
        if stack is None:
            capacity = None if self.max_frames is None else self.max_frames + 1
            stack = _FrameStack(lambda entry: _field(entry, kind, name), capacity, pixel_major)
            self._stacks[(kind, name, pixel_major)] = stack
        return stack.read(self._all_entries())

    def all_valid(self, positions: Sequence[int] | None = None) -> bool:
        """Whether every object holds a value in every selected frame (``object_valid(...)
        .all()``, answered on the host: no device read-back)."""
        return all(e.all_valid for e in self._select(positions))

    def extras(self, name: str) -> list[Tensor]:
        return [e.extras[name] for e in self._all_entries()]

    def frame_values(self, scale: str = "res4", position: int = 0) -> Tensor:
        """One frame's values ``[B, O, Cv, H, W]`` as stored (no stacking: for its shape)."""
        (entry,) = self._select([position])
        return entry.values[scale]

    @property
    def num_objects(self) -> int:
        entries = self._all_entries()
        return entries[0].object_valid.shape[1] if entries else 0

"""The reader interface: the one part that differs between the suite's models.

A reader declares which features it needs (`FeatureSpec`), decides what of a frame goes
into memory (`memorize`), and reads memory for a query frame (`read`). Readers call
`vos.ops` for every memory read, never kernels directly.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor, nn

from vos.model.memory import MemoryBank


@dataclass(frozen=True)
class FeatureSpec:
    """What the shared network must compute for this reader."""

    # key name -> Ck. A name is a scale ("res4"), or a scale with a suffix for a second key at
    # that scale ("res4_local": LCM's local key); each key has its own 3×3 projection.
    key_scales: dict[str, int] = field(default_factory=lambda: {"res4": 128})
    value_channels: int = 512  # Cv of the res4 value (memory) and of the query value
    readout_channels: int = 1024  # channels of the res4 readout fed to the decoder
    # memory values at finer scales (HMMN: res3 256, res2 128): the value encoder adds them, and
    # the reader's readouts at those scales (same channels) enter the decoder's skips there
    fine_value_channels: dict[str, int] = field(default_factory=dict)
    # channels of the reader's readouts at those scales when they differ from the values'
    # (LMRC concatenates its local and sequential-local readouts); None = the values'
    fine_readout_channels: dict[str, int] | None = None
    # fine values from the value encoder's features concatenated with the key encoder's
    # features at that scale (LMRC §III-A-2), instead of from the value encoder's alone (HMMN)
    fine_values_see_frame_features: bool = False
    needs_flow: bool = False
    # the most recent memory frame is read apart from the others, as a local memory (LMRC):
    # memory of T frames then means T frames besides it (what a benchmark of T frames builds)
    previous_frame_apart: bool = False

    @property
    def decoder_memory_channels(self) -> dict[str, int]:
        """Channels of the fine readouts the decoder adds to its res3/res2 skips."""
        if self.fine_readout_channels is None:
            return dict(self.fine_value_channels)
        return dict(self.fine_readout_channels)


@dataclass
class FrameFeatures:
    """Everything computed from one frame (batched), before any memory is read."""

    index: int  # frame index within the video / clip
    frames: Tensor  # [B, 3, H, W] in [0, 1], padded
    features: dict[str, Tensor]  # backbone features per scale, [B, C, h, w]
    keys: dict[str, Tensor]  # per scale [B, Ck, h, w]
    query_value: Tensor  # [B, Cv, h4, w4]: the query's own value (STM's q_v)
    flow: Tensor | None = None  # [B, 2, H, W] backward flow, when a reader needs it
    # (height, width) of the frame inside the padding (`vos.model.padding`, centred); None:
    # the whole tensor is the frame
    frame_size: tuple[int, int] | None = None


@dataclass
class ReaderState:
    """Per-video (per-clip) state kept between frames. A reader that keeps more subclasses it
    with typed fields (HMMN's tracks, LCM's first-frame sets) and returns one from
    `MemoryReader.new_state`."""

    previous_probs: Tensor | None = None  # [B, O, H, W] soft masks of the previous frame
    # (B, O) when the network reads objects as batch elements (keys per object): the reader's
    # own fields are then per B·O element (set by `VOSNetwork.read`)
    folded_layout: tuple[int, int] | None = None


@dataclass
class Readout:
    """What the decoder receives: per-object features per scale, ``[B, O, C, h, w]``: "res4"
    always; "res3"/"res2" for the scales in ``FeatureSpec.fine_value_channels``."""

    features: dict[str, Tensor]


# a part of a read that a benchmark can time alone: (query, memory, state) -> anything
ReadPart = Callable[[FrameFeatures, MemoryBank, ReaderState], object]


class MemoryReader(nn.Module, abc.ABC):
    """Shapes (everywhere): ``B`` batch, ``O`` objects, ``T`` memory frames, ``Ck``/``Cv`` key
    and value channels, ``h, w`` a feature grid; keys ``[B, Ck, h, w]`` per frame (they do not
    depend on the object), values ``[B, O, Cv, h, w]``."""

    needs: FeatureSpec

    def new_state(self, previous_probs: Tensor | None = None) -> ReaderState:
        """The state of a new video (or clip); readers with state of their own override it."""
        return ReaderState(previous_probs=previous_probs)

    def memorize(
        self,
        frame: FrameFeatures,
        values: dict[str, Tensor],
        memory: MemoryBank,
        object_probs: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Extra per-frame tensors to store with the frame's keys and values (none by default).

        ``object_probs [B, O, H, W]`` are the soft masks the values were encoded from (input
        resolution, padded), for readers that keep per-frame regions (RMNet). It is called
        before the frame joins ``memory``; a reader may drop from the frames already there what
        it will never read again (LMRC: the res3/res2 keys and values of frames that are only
        global memory from then on).
        """
        return {}

    @abc.abstractmethod
    def read(self, query: FrameFeatures, memory: MemoryBank, state: ReaderState) -> Readout: ...

    def extra_losses(self) -> dict[str, Tensor]:
        """Losses beside the segmentation's (LMRC's scale loss), collected after each step."""
        return {}

    def parts(self) -> dict[str, ReadPart]:
        """Named parts of `read` that a benchmark may time alone (``vos.bench readers``
        variants with ``part: <name>``); none by default."""
        return {}


def scale_of(key_name: str) -> str:
    """The feature scale of a key name: ``"res4_local"`` -> ``"res4"``."""
    return key_name.split("_", 1)[0]

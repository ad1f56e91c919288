"""What of each segmented frame goes into memory (shared by validation, `vos.eval`, benchmarks).

Memory = every frame where objects are given (permanent) + every ``mem_every``-th frame,
capped at ``max_memory_frames`` (the oldest non-permanent frame dropped first, by
`vos.model.memory.MemoryBank`), + the previous frame as temporary memory when
``include_previous`` (STM's habit; replaced at every frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Memorise(Enum):
    NOTHING = "nothing"
    PERMANENT = "permanent"  # a frame whose masks were given
    PERIODIC = "periodic"  # every mem_every-th frame, dropped first-in first-out
    TEMPORARY = "temporary"  # the previous frame, until the next frame replaces it


@dataclass(frozen=True)
class MemoryPolicy:
    mem_every: int = 5
    include_previous: bool = True
    max_memory_frames: int | None = 10

    def __post_init__(self) -> None:
        if self.mem_every < 1:
            raise ValueError(f"inference.mem_every must be >= 1, got {self.mem_every}")
        if self.max_memory_frames is not None and self.max_memory_frames < 1:
            raise ValueError(
                f"inference.max_memory_frames must be >= 1 or null, got {self.max_memory_frames}"
            )

    def decide(self, t: int, objects_given: bool) -> Memorise:
        if objects_given:
            return Memorise.PERMANENT
        if t % self.mem_every == 0:
            return Memorise.PERIODIC
        return Memorise.TEMPORARY if self.include_previous else Memorise.NOTHING

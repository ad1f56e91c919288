"""Memory readers, one module per paper, all behind `MemoryReader` (see docs/architecture.md)."""

from vos.model.readers.base import FeatureSpec, FrameFeatures, MemoryReader, ReaderState, Readout
from vos.model.readers.stm import STMReader

__all__ = ["FeatureSpec", "FrameFeatures", "MemoryReader", "ReaderState", "Readout", "STMReader"]

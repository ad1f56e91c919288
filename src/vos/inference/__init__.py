"""Segmenting videos with a trained network: the frame-by-frame engine (shared by validation,
`vos.eval` and the benchmarks), its memory policy and object table, loading an engine from a
checkpoint, and writing a split's predictions."""

from vos.inference.engine import InferenceEngine, VideoResult, processing_size
from vos.inference.loading import load_engine
from vos.inference.memory_policy import MemoryPolicy

__all__ = ["InferenceEngine", "MemoryPolicy", "VideoResult", "load_engine", "processing_size"]

"""Memory-read operations: pure tensor functions shared by every reader.

Shapes follow DESIGN.md: keys and values are flattened over pixels, ``[B, C, N]`` for
memory (N = T·H·W) and ``[B, C, M]`` for the query (M = H·W); ``B`` may fold objects in.
"""

from vos.ops.memory_read import affinity_logits, memory_read

__all__ = ["affinity_logits", "memory_read"]

# Copyright © 2026 mlx-kyutai-is contributors
"""Rolling KV cache for sliding-window attention over an unbounded stream.

mlx-lm's `RotatingKVCache` already does what streaming needs: a ring of exactly `max_size`
slots for one-token steps (the current key included, as transformers' sliding-window cache
attends `sliding_window` positions), an `offset` that keeps counting past the window (RoPE
positions grow for hours while memory stays fixed), and re-ordering before multi-token appends.
We only add `reset()` and the window mask helper used by the multi-step forward.
"""

import mlx.core as mx
from mlx_lm.models.cache import RotatingKVCache as _MlxLmRotatingKVCache


class RotatingKVCache(_MlxLmRotatingKVCache):
    """Keys/values of the last `max_size` positions; `offset` counts every position ever seen."""

    def __init__(self, max_size: int):
        super().__init__(max_size=max_size, keep=0)

    def reset(self):
        self.keys = self.values = None
        self.offset = 0
        self._idx = 0

    @property
    def nbytes(self) -> int:
        if self.keys is None:
            return 0
        return self.keys.nbytes + self.values.nbytes


def window_mask(n_queries: int, offset: int, n_keys: int, window: int) -> mx.array:
    """Boolean (n_queries, n_keys) mask for queries at positions offset..offset+n-1 over keys in
    temporal order ending at the last query: key j is visible when 0 <= q - k < window."""
    q = mx.arange(offset, offset + n_queries)[:, None]
    k = mx.arange(offset + n_queries - n_keys, offset + n_queries)[None]
    return (k <= q) & (q - k < window)

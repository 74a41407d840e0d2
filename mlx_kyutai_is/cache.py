# Copyright © 2026 mlx-kyutai-is contributors
"""Rolling KV cache for sliding-window attention over an unbounded stream.

mlx-lm's `RotatingKVCache` already does what streaming needs: a ring of exactly `max_size`
slots for one-token steps (the current key included, as transformers' sliding-window cache
attends `sliding_window` positions), an `offset` that keeps counting past the window (RoPE
positions grow for hours while memory stays fixed), and re-ordering into time order before a
multi-token append, which then returns the `max_size - 1` previous keys plus the chunk.
Its `make_mask(T, window_size=max_size)` is the matching chunk mask: query q sees key k when
0 <= q - k < window ("causal" while the chunk and its history fit in one window).
We only add `reset()`.
"""

from mlx_lm.models.cache import RotatingKVCache as _MlxLmRotatingKVCache


class RotatingKVCache(_MlxLmRotatingKVCache):
    """Keys/values of the last `max_size` positions; `offset` counts every position ever seen.

    Parameters
    ----------
    max_size : int
        The attention window (`sliding_window` in the config): one-token steps attend exactly
        this many positions, the current one included.
    """

    def __init__(self, max_size: int):
        super().__init__(max_size=max_size, keep=0)

    def reset(self):
        """Forget everything: the next update starts at position 0 (memory is allocated again)."""
        self.keys = self.values = None
        self.offset = 0
        self._idx = 0

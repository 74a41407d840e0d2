# Copyright © 2026 mlx-kyutai-is contributors
"""Rolling KV cache for sliding-window attention over an unbounded stream.

The semantics are those of mlx-lm's `RotatingKVCache` (and transformers' sliding-window cache):
a ring of exactly `max_size` slots for one-token steps, the current key included; an `offset`
that keeps counting past the window (RoPE positions grow for hours while memory stays fixed);
and, before a multi-token append, the ring put back in time order so the chunk sees the
`max_size - 1` previous keys plus itself. It is written here rather than imported because
importing `mlx_lm` imports transformers, which the package must not need at run time.
"""

import mlx.core as mx


def window_mask(n_queries: int, offset: int, n_keys: int, window: int) -> mx.array:
    """Bool (n_queries, n_keys) mask: queries at positions offset.., keys in time order ending at
    the last query; key k is visible to query q when 0 <= q - k < window."""
    q = mx.arange(offset, offset + n_queries)[:, None]
    k = mx.arange(offset + n_queries - n_keys, offset + n_queries)[None]
    return (k <= q) & (q - k < window)


class RotatingKVCache:
    """Keys/values of the last `max_size` positions; `offset` counts every position ever seen.

    The single-stream reference path (`LM.make_cache`): one stream, multi-token forwards, as
    transformers runs the model; the parity tests and the benchmark's cost-over-length use it.
    Decoding runs on `BatchRotatingKVCache` (rows at their own positions, one-token steps).

    Parameters
    ----------
    max_size : int
        The attention window (`sliding_window` in the config): one-token steps attend exactly
        this many positions, the current one included.
    """

    def __init__(self, max_size: int):
        self.max_size = max_size
        self.reset()

    def reset(self):
        """Forget everything: the next update starts at position 0."""
        self.keys = self.values = None
        self.offset = 0
        self._idx = 0  # next slot to write: the oldest entry once the ring is full

    @property
    def nbytes(self) -> int:
        return 0 if self.keys is None else self.keys.nbytes + self.values.nbytes

    def _temporal(self, x: mx.array) -> mx.array:
        if self.offset < self.max_size:
            return x[..., : self.offset, :]
        return mx.concatenate([x[..., self._idx :, :], x[..., : self._idx, :]], axis=2)

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        """Append (B, H, T, D) keys/values; return what the T queries attend, in a layout that
        `make_mask(T)` describes (for T == 1: every returned key is visible)."""
        T = keys.shape[2]
        if T == 1:
            if self.keys is None:
                B, H, _, D = keys.shape
                self.keys = mx.zeros((B, H, self.max_size, D), keys.dtype)
                self.values = mx.zeros((B, H, self.max_size, values.shape[3]), values.dtype)
            # In-place slot write: no per-step re-allocation, memory fixed at `max_size` slots.
            self.keys[..., self._idx : self._idx + 1, :] = keys
            self.values[..., self._idx : self._idx + 1, :] = values
            self._idx = (self._idx + 1) % self.max_size
            self.offset += 1
            n = min(self.offset, self.max_size)
            return self.keys[..., :n, :], self.values[..., :n, :]
        keep = self.max_size - 1
        if self.keys is not None and keep > 0:
            k = mx.concatenate([self._temporal(self.keys)[..., -keep:, :], keys], axis=2)
            v = mx.concatenate([self._temporal(self.values)[..., -keep:, :], values], axis=2)
        else:
            k, v = keys, values
        self.offset += T
        # Store the newest `max_size` in time order; the ring then continues from slot 0 (the oldest).
        n = min(k.shape[2], self.max_size)
        B, H, _, D = k.shape
        self.keys = mx.zeros((B, H, self.max_size, D), k.dtype)
        self.values = mx.zeros((B, H, self.max_size, v.shape[3]), v.dtype)
        self.keys[..., :n, :] = k[..., -n:, :]
        self.values[..., :n, :] = v[..., -n:, :]
        self._idx = n % self.max_size
        return k, v

    def make_mask(self, N: int, window_size: int | None = None):
        """Mask for the next `N`-token update (call before it): None for one token, else a bool
        (N, keys) array with 0 <= q - k < window."""
        if N == 1:
            return None
        window = window_size or self.max_size
        n_keys = N + min(self.offset, self.max_size - 1)
        return window_mask(N, self.offset, n_keys, window)


class BatchRotatingKVCache:
    """Rings of `max_size` slots for B independent rows taking one-token steps together.

    Row b writes its key at position p into slot ``p % max_size``, so a row that starts over
    (position 0) never needs its old keys cleared: `seek` supplies the mask of the slots it has
    written (None once every row has filled its ring). Positions live with the caller (the
    decoder), which sets them for every layer before each step.

    Parameters
    ----------
    max_size : int
        The attention window: a step attends exactly the last `max_size` positions of its row.
    """

    def __init__(self, max_size: int):
        self.max_size = max_size
        self.keys = self.values = None
        self.batch_size = 0
        self.offset = None
        self._mask = self._slots = None

    def resize(self, n: int):
        """Grow (zero rows) or shrink to `n` rows."""
        if self.keys is not None:
            if n > self.keys.shape[0]:
                extra = (n - self.keys.shape[0],) + self.keys.shape[1:]
                self.keys = mx.concatenate([self.keys, mx.zeros(extra, self.keys.dtype)])
                self.values = mx.concatenate([self.values, mx.zeros(extra, self.values.dtype)])
            else:
                self.keys, self.values = self.keys[:n], self.values[:n]
        self.batch_size = n

    def seek(self, positions: mx.array, mask: mx.array | None, slots: mx.array | None = None):
        """Set the (B,) positions of the next step's tokens, the bool (B, 1, 1, max_size) mask of
        the slots each row may attend (None: all) and, optionally, the (B,) slots they write
        (``positions % max_size``, computed once per step for every layer by the caller)."""
        self.offset = positions
        self._mask = mask
        self._slots = slots

    def make_mask(self, N: int, window_size: int | None = None):
        if N != 1:
            raise ValueError("BatchRotatingKVCache takes one-token steps")
        return self._mask

    @property
    def state(self) -> list[mx.array]:
        return [] if self.keys is None else [self.keys, self.values]

    @property
    def nbytes(self) -> int:
        return 0 if self.keys is None else self.keys.nbytes + self.values.nbytes

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        B, H, T, D = keys.shape
        if T != 1:
            raise ValueError("BatchRotatingKVCache takes one-token steps")
        if self.keys is None or self.keys.shape[0] != B:
            self.keys = mx.zeros((B, H, self.max_size, D), keys.dtype)
            self.values = mx.zeros((B, H, self.max_size, values.shape[3]), values.dtype)
        slots = self._slots if self._slots is not None else self.offset % self.max_size
        slot = slots.reshape(B, 1, 1, 1)
        self.keys = mx.put_along_axis(self.keys, slot, keys, axis=2)
        self.values = mx.put_along_axis(self.values, slot, values, axis=2)
        return self.keys, self.values

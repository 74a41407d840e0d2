"""The rolling KV cache: exact slots through wrap-around, window size, counting offsets, chunk masks."""

import mlx.core as mx
import numpy as np
import pytest

from mlx_kyutai_is.models.cache import RotatingKVCache


def kv(pos):
    """A (1, 1, T, 1) tensor holding the positions themselves, so slots can be read back."""
    return mx.array(np.asarray(pos, np.float32).reshape(1, 1, -1, 1))


def positions(a):
    return np.array(a).ravel().astype(int).tolist()


def visible(cache, T, window):
    """Update with positions offset..offset+T-1 as the LM does (mask made before the update) and
    return, per query position, the sorted key positions it attends."""
    start = cache.offset
    mask = cache.make_mask(T, window_size=window) if T > 1 else None
    keys, _ = cache.update_and_fetch(kv(range(start, start + T)), kv(range(start, start + T)))
    keys = positions(keys)
    n = len(keys)
    if mask is None:
        m = np.ones((T, n), bool)
    elif isinstance(mask, str):
        assert mask == "causal"
        # mx.fast.scaled_dot_product_attention aligns "causal" to the last key.
        m = np.arange(n)[None] <= (n - T + np.arange(T))[:, None]
    else:
        m = np.array(mask)
    return {start + i: sorted(k for k, v in zip(keys, m[i]) if v) for i in range(T)}


def test_single_steps_fill_exact_slots_through_wrap_around():
    c = RotatingKVCache(4)
    for t in range(11):
        k, v = c.update_and_fetch(kv([t]), kv([t]))
        got = positions(k)
        assert got == positions(v)
        if t < 4:
            assert got == list(range(t + 1))
        else:
            # Slot i holds the newest position p with p % 4 == i: the ring overwrote the oldest.
            assert got == [t - ((t - i) % 4) for i in range(4)]
        assert c.offset == t + 1
    assert c.keys.shape[2] == 4


@pytest.mark.parametrize("window", [1, 4, 16])
def test_one_token_steps_attend_exactly_the_window_including_current(window):
    c = RotatingKVCache(window)
    for t in range(3 * window + 2):
        assert c.make_mask(1, window_size=window) is None  # nothing masked: every returned key counts
        seen = visible(c, 1, window)[t]
        assert seen == list(range(max(0, t - window + 1), t + 1))
        assert len(seen) == min(t + 1, window)


def test_memory_constant_and_offset_counts_past_the_window():
    c = RotatingKVCache(375)
    sizes = []
    for t in range(2000):
        c.update_and_fetch(kv([t]), kv([t]))
        if t >= 375:
            sizes.append(c.nbytes)
    assert len(set(sizes)) == 1 and sizes[0] == 2 * 375 * 4
    assert c.offset == 2000 and c.keys.shape[2] == 375


def test_chunks_and_steps_mixed_every_query_sees_exactly_its_window():
    """Multi-token appends re-order the ring into time order (mlx-lm keeps window - 1 old keys
    plus the chunk) and make_mask hides what lies outside each query's window."""
    window = 5
    c = RotatingKVCache(window)
    for T in [3, 1, 1, 1, 4, 1, 1, 9, 1, 2, 1, 1, 1, 1, 1, 1, 7, 5, 1, 12, 1, 1]:
        for q, keys in visible(c, T, window).items():
            assert keys == list(range(max(0, q - window + 1), q + 1)), (T, q, keys)
    assert c.offset == 57


def test_chunk_mask_after_wrap_is_exact():
    c = RotatingKVCache(4)
    for t in range(6):
        c.update_and_fetch(kv([t]), kv([t]))
    mask = np.array(c.make_mask(3, window_size=4))
    k, _ = c.update_and_fetch(kv([6, 7, 8]), kv([6, 7, 8]))
    assert positions(k) == [3, 4, 5, 6, 7, 8]
    assert mask.tolist() == [
        [True, True, True, True, False, False],
        [False, True, True, True, True, False],
        [False, False, True, True, True, True],
    ]
    # Back to single steps: the ring shrinks to exactly the window again.
    k, _ = c.update_and_fetch(kv([9]), kv([9]))
    assert sorted(positions(k)) == [6, 7, 8, 9] and c.keys.shape[2] == 4


def test_reset():
    c = RotatingKVCache(4)
    for t in range(6):
        c.update_and_fetch(kv([t]), kv([t]))
    c.reset()
    assert c.offset == 0 and c.nbytes == 0
    k, _ = c.update_and_fetch(kv([0]), kv([0]))
    assert positions(k) == [0] and c.offset == 1

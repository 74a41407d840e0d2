"""The rolling KV cache: exact slots through wrap-around, window size, counting offsets."""

import mlx.core as mx
import numpy as np

from mlx_kyutai_is.cache import RotatingKVCache, window_mask


def kv(pos):
    """A (1, 1, T, 1) tensor holding the positions themselves, so slots can be read back."""
    return mx.array(np.asarray(pos, np.float32).reshape(1, 1, -1, 1))


def test_single_steps_keep_exactly_the_window_including_current():
    c = RotatingKVCache(4)
    for t in range(11):
        k, v = c.update_and_fetch(kv([t]), kv([t]))
        seen = sorted(np.array(k).ravel().tolist())
        assert seen == list(range(max(0, t - 3), t + 1))
    assert c.offset == 11
    assert c.keys.shape[2] == 4


def test_memory_constant_and_offset_counts_past_the_window():
    c = RotatingKVCache(8)
    sizes = set()
    for t in range(1000):
        c.update_and_fetch(kv([t]), kv([t]))
        if t >= 8:
            sizes.add(c.nbytes)
    assert len(sizes) == 1 and c.offset == 1000


def test_multi_token_append_after_wrap_is_in_temporal_order():
    c = RotatingKVCache(4)
    for t in range(6):
        c.update_and_fetch(kv([t]), kv([t]))
    k, _ = c.update_and_fetch(kv([6, 7, 8]), kv([6, 7, 8]))
    # window-1 old keys, then the new chunk: every query sees `window` keys through the mask.
    assert np.array(k).ravel().tolist() == [3, 4, 5, 6, 7, 8]
    m = np.array(window_mask(3, 6, 6, 4))
    assert m.tolist() == [
        [True, True, True, True, False, False],
        [False, True, True, True, True, False],
        [False, False, True, True, True, True],
    ]
    assert (m.sum(1) == 4).all()


def test_reset():
    c = RotatingKVCache(4)
    c.update_and_fetch(kv([0]), kv([0]))
    c.reset()
    assert c.offset == 0 and c.nbytes == 0

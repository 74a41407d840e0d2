# Copyright © 2026 mlx-kyutai-is contributors
"""Counting kernels in a graph and host syncs (kernels.py) on hand-made graphs with known counts."""

from functools import partial

import mlx.core as mx
import numpy as np

from mlx_kyutai_is import profiling


def _leaf(*shape, dtype=mx.float32):
    x = mx.array(np.random.default_rng(0).normal(size=shape).astype(np.float32)).astype(dtype)
    mx.eval(x)
    return x


def test_counts_primitives_by_type_and_leaves_views_out():
    x, w = _leaf(2, 8), _leaf(8, 4)
    y = (x @ w).T.reshape(-1)[:5]  # matmul, then three views
    z = mx.exp(y) + y
    assert profiling.count_graph(z) == {"Matmul": 1, "Exp": 1, "Add": 1}
    # Evaluated arrays are leaves: nothing left to count.
    mx.eval(z)
    assert profiling.count_graph(z) == {}


def test_every_call_of_a_compiled_function_counts():
    # The calls replay one tape, so they share primitive addresses in the DOT.
    @partial(mx.compile, shapeless=True)
    def fused(a, b):
        return mx.exp(a) * b + 1

    x = _leaf(4)
    y = x
    for _ in range(3):
        y = fused(y, x)
    assert profiling.count_graph(y) == {"Compiled": 3}


def test_fast_ops_count_one_each_and_results_are_unchanged():
    x, w = _leaf(1, 4, 1, 16, dtype=mx.bfloat16), _leaf(16)
    freqs = _leaf(8)

    def block(x):
        h = mx.fast.rms_norm(x.astype(mx.float32), w, 1e-5).astype(x.dtype)
        q = mx.fast.rope(h, 16, traditional=False, base=None, scale=1.0, offset=mx.array(3), freqs=freqs)
        o = mx.fast.scaled_dot_product_attention(q, q, h, scale=0.25)
        return mx.fast.layer_norm(o, w, None, 1e-5)

    plain = block(x)
    with profiling.fast_ops_as_one():
        fenced = block(x)
        compiled = mx.compile(block)(x)
    counts = [profiling.count_graph(out) for out in (fenced, compiled)]
    for c in counts:
        fast = {k: v for k, v in c.items() if k.startswith("fast.")}
        assert fast == {
            "fast.rms_norm": 1,
            "fast.rope": 1,
            "fast.scaled_dot_product_attention": 1,
            "fast.layer_norm": 1,
        }
        # The two casts around the norm stay separate kernels: compile cannot fuse across a fast op.
        assert c["AsType"] == 2
    assert mx.array_equal(fenced, plain).item() and mx.array_equal(compiled, plain).item()


def test_exclude_takes_a_subgraph_off():
    x, w = _leaf(2, 8), _leaf(8, 8)
    a = mx.exp(x @ w)
    b = mx.sin(a @ w)
    assert profiling.count_graph(b) == {"Matmul": 2, "Exp": 1, "Sin": 1}
    assert profiling.count_graph(b, exclude=[a]) == {"Matmul": 1, "Sin": 1}


def test_count_syncs_counts_evals_and_reads_only_inside_the_block():
    a = mx.arange(3)
    with profiling.count_syncs() as syncs:
        mx.eval(a)
        a.tolist()
        a[0].item()
        int(a[1])
        mx.async_eval(a + 1)  # not a sync
    assert dict(syncs.calls) == {"eval": 1, "tolist": 1, "item": 1, "__int__": 1}
    assert syncs.total == 4
    a.tolist()
    assert syncs.total == 4

# Copyright © 2026 mlx-kyutai-is contributors
"""What one step launches: the primitives of an MLX graph by type, and the host syncs.

On a GPU a one-frame step is launch-bound, so its kernel count is the figure to watch. MLX 0.32
walks a lazy graph in `mx.export_to_dot`; `count_graph` parses that. Every primitive counts as one
kernel (a `mx.compile`d elementwise chain is one `Compiled` primitive), except views (reshape,
transpose, slice, broadcast, ...), which launch nothing.

Each `mx.fast` op counts as one, as on Metal and CUDA. On the CPU they are not primitives: MLX
builds their reference graph (`fallback`) instead. Inside `fast_ops_as_one()` each call is fenced:
its array inputs go through an identity `as_strided` and its output through a `view` round trip
(one per op type, so the type can be read back), which `mx.compile` does not fuse across, as it
does not fuse across a real fast primitive; `count_graph` then counts the graph between the
fences as the one op. The fences must be in place when a compiled function is traced, so enter
the context before the model first runs (a fresh process).

`count_syncs()` counts the host syncs: `mx.eval` and the array methods that read values back
(`item`, `tolist`, `__bool__`, `__int__`, `__float__`, `__index__`, `__array__`). `mx.async_eval`
is not one.
"""

import contextlib
import os
import re
import tempfile
import time
from collections import Counter

import mlx.core as mx

# Primitives that are views of their input (no kernel), and the fences' own.
VIEWS = frozenset(
    {
        "AsStrided",
        "Broadcast",
        "BroadcastAxes",
        "Depends",
        "ExpandDims",
        "Flatten",
        "Reshape",
        "Slice",
        "Split",
        "Squeeze",
        "StopGradient",
        "Transpose",
        "Unflatten",
        "View",
    }
)
FAST_OPS = ("rms_norm", "layer_norm", "rope", "scaled_dot_product_attention")
SYNC_METHODS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "__array__")
_UINT = {1: mx.uint8, 2: mx.uint16, 4: mx.uint32, 8: mx.uint64}


# ------------------------------------------------------------------------------------------
# The graph


def _parse_dot(text: str):
    """DOT from `mx.export_to_dot` -> (labels {node: label}, inputs {node: [node]},
    consumers {node: set(node)}), a node per primitive instance.

    The DOT names a primitive node by its address, which the calls of one compiled function
    share (they replay one tape), so nodes are told apart by position instead: MLX writes each
    primitive instance once, followed by its input edges and its outputs."""
    labels, prim_inputs, producer = {}, {}, {}
    current = {}  # address -> the instance being written
    for line in text.splitlines():
        m = re.match(r'\{ (\d+) \[label ="([^"]*)"', line)
        if m:
            node = len(labels)
            labels[node] = m.group(2)
            prim_inputs[node] = []
            current[m.group(1)] = node
            continue
        m = re.match(r'^("[^"]+") -> (\d+)$', line)
        if m:
            prim_inputs[current[m.group(2)]].append(m.group(1))
            continue
        m = re.match(r'^(\d+) -> ("[^"]+")$', line)
        if m:
            producer[m.group(2)] = current[m.group(1)]
    inputs = {p: [producer[a] for a in arrays if a in producer] for p, arrays in prim_inputs.items()}
    consumers = {p: set() for p in labels}
    for p, ins in inputs.items():
        for q in ins:
            consumers[q].add(p)
    return labels, inputs, consumers


def _dot(arrays) -> str:

    fd, path = tempfile.mkstemp(suffix=".dot")
    os.close(fd)
    try:
        mx.export_to_dot(path, *arrays)
        with open(path) as f:
            return f.read()
    finally:
        os.unlink(path)


def _flat(arrays) -> list:
    out = []
    for a in arrays if isinstance(arrays, (list, tuple)) else [arrays]:
        if isinstance(a, (list, tuple)):
            out += _flat(a)
        elif isinstance(a, mx.array):
            out.append(a)
    return out


def _fast_groups(labels, inputs, consumers) -> dict:
    """{chain start: (op name, internal prims)} for every fenced fast op in the graph."""
    groups = {}
    for p, label in labels.items():
        if not label.startswith("View") or any(labels[q].startswith("View") for q in inputs[p]):
            continue
        # p starts an output fence: View round trips, 1 + the op's index of them.
        chain, q = 1, p
        while True:
            nxt = [c for c in consumers[q] if labels[c].startswith("View")]
            if len(nxt) != 1:
                break
            q, chain = nxt[0], chain + 1
        name = FAST_OPS[min(chain // 2 - 1, len(FAST_OPS) - 1)]
        # The op's own graph: what p reads, up to the input fences (and leaves).
        inner, todo = set(), list(inputs[p])
        while todo:
            q = todo.pop()
            if q in inner or labels[q] in ("AsStrided", "View") or labels[q].startswith("View "):
                continue
            inner.add(q)
            todo += inputs[q]
        # A node also used outside the op is not the op's (compile may share a constant).
        changed = True
        while changed:
            changed = False
            for q in list(inner):
                if any(c not in inner and c != p for c in consumers[q]):
                    inner.discard(q)
                    changed = True
        groups[p] = (name, inner)
    return groups


def _kind(label: str) -> str:
    if label.startswith("Compiled"):
        return "Compiled"
    return label.split(" ")[0]


def count_graph(outputs, exclude=()) -> Counter:
    """Kernels of the lazy graph that computes `outputs` (arrays, nested lists), by type.

    Views are left out, each fenced `mx.fast` op counts one (as "fast.<name>"), and so does
    each `Compiled` primitive. `exclude`: arrays whose graph is part of this one (e.g. a Mimi
    frame's codes, to count the LM step alone); their kernels are taken off. Evaluated arrays
    are leaves: count before evaluating.
    """
    counts = _count(_flat(outputs))
    if _flat(exclude):
        counts -= _count(_flat(exclude))
    return counts


def _count(arrays) -> Counter:
    labels, inputs, consumers = _parse_dot(_dot(arrays))
    groups = _fast_groups(labels, inputs, consumers)
    inner = set().union(*(g[1] for g in groups.values())) if groups else set()
    counts = Counter()
    for p, label in labels.items():
        if p in groups:
            counts["fast." + groups[p][0]] += 1
        elif p not in inner and _kind(label) not in VIEWS:
            counts[_kind(label)] += 1
    return counts


# ------------------------------------------------------------------------------------------
# mx.fast ops as one


def _strides(shape) -> list[int]:
    out, n = [], 1
    for d in reversed(shape):
        out.append(n)
        n *= d
    return out[::-1]


def _fence_in(x):
    return mx.as_strided(x, x.shape, _strides(x.shape)) if isinstance(x, mx.array) else x


def _fence_out(y: mx.array, index: int) -> mx.array:
    for _ in range(index + 1):
        y = y.view(_UINT[y.dtype.size]).view(y.dtype)
    return y


@contextlib.contextmanager
def fast_ops_as_one():
    """Fence every `mx.fast` op (see the module docstring) so `count_graph` counts it as one.
    The results are unchanged (the fences are identities)."""
    originals = {name: getattr(mx.fast, name) for name in FAST_OPS}

    def fenced(name, fn):
        index = FAST_OPS.index(name)

        def op(*args, **kwargs):
            args = [_fence_in(a) for a in args]
            kwargs = {k: _fence_in(v) for k, v in kwargs.items()}
            return _fence_out(fn(*args, **kwargs), index)

        return op

    for name, fn in originals.items():
        setattr(mx.fast, name, fenced(name, fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(mx.fast, name, fn)


# ------------------------------------------------------------------------------------------
# Host syncs


class SyncCounter:
    """How many times the host waited for the device, by call (see `count_syncs`)."""

    def __init__(self):
        self.calls = Counter()

    @property
    def total(self) -> int:
        return sum(self.calls.values())


@contextlib.contextmanager
def count_syncs():
    """Count `mx.eval` calls and value reads of arrays (`item`, `tolist`, ...) in the block."""
    counter = SyncCounter()
    eval_ = mx.eval
    methods = {name: getattr(mx.array, name) for name in SYNC_METHODS if hasattr(mx.array, name)}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            counter.calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    mx.eval = counted("eval", eval_)
    for name, fn in methods.items():
        setattr(mx.array, name, counted(name, fn))
    try:
        yield counter
    finally:
        mx.eval = eval_
        for name, fn in methods.items():
            setattr(mx.array, name, fn)


def repeat(one, steps: int, warmup: int, budget_s: float | None = None) -> list[float]:
    """ms of `one(i)` for i in 0..warmup+steps-1, warm-up calls left out. Stops early (after at
    least 3 timed calls) once `budget_s` seconds are spent: a q4 step takes seconds on a CPU."""
    ms, start = [], time.perf_counter()
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        one(i)
        ms.append((time.perf_counter() - t0) * 1e3)
        if budget_s is not None and i >= warmup + 2 and time.perf_counter() - start > budget_s:
            break
    return ms[warmup:]

# Copyright © 2026 mlx-kyutai-is contributors
"""`BatchDecoder`: the LM half of the protocol (`protocol.py`) for B rows, one LM call per step."""

from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from ..models.cache import BatchRotatingKVCache
from ..tasks import TASK_PREFIXES
from .protocol import DEFAULT_PAD_STEPS


@dataclass
class DecoderRow:
    """One row's protocol state: its task prefix, forced pad steps, and steps since (re)primed."""

    prefix: list[int]
    pad_steps: int
    steps: int = 0  # LM steps since the row was (re)primed


class BatchDecoder:
    """The LM half of the protocol for B independent rows, one LM call per step for all.

    Each row has its own task prefix, protocol phase (prefix, forced pad, free), position and KV
    ring (`models.cache.BatchRotatingKVCache`); rows are added and removed at any step, and a freed row
    is reused without attending its old keys. A step computes every row (a fixed-shape batch);
    rows that are not `ready` get their results thrown away and their state left as it was.
    """

    def __init__(self, lm):
        self.lm = lm
        self.args = lm.args
        self.rows: list[DecoderRow | None] = []
        self.cache = [BatchRotatingKVCache(self.args.sliding_window) for _ in lm.layers]
        self._prev = mx.zeros((0,), mx.int32)

        @mx.compile
        def choose(free, forced, is_forced, ready, prev):
            # The row's token (forced or argmax) and the text input of its next step: one kernel.
            token = mx.where(is_forced, forced, free.astype(mx.int32))
            return token, mx.where(ready, token, prev)

        self._choose = choose

    @property
    def capacity(self) -> int:
        return len(self.rows)

    def add(self, task: str, pad_steps: int = DEFAULT_PAD_STEPS) -> int:
        """A new row (the lowest free index); its first step reads the BOS inputs."""
        row = DecoderRow(list(TASK_PREFIXES[task]), pad_steps)
        for i, r in enumerate(self.rows):
            if r is None:
                self.rows[i] = row
                return i
        self.rows.append(row)
        self._resize(len(self.rows))
        return len(self.rows) - 1

    def remove(self, i: int):
        self.rows[i] = None
        n = len(self.rows)
        while n and self.rows[n - 1] is None:
            n -= 1
        if n < len(self.rows):
            del self.rows[n:]
            self._resize(n)

    def reprime(self, i: int):
        """Start row `i` over (same task): its next step reads the BOS inputs at position 0."""
        self.rows[i].steps = 0

    def steps(self, i: int) -> int:
        return self.rows[i].steps

    def _resize(self, n: int):
        for c in self.cache:
            c.resize(n)
        old = self._prev.shape[0]
        if n > old:
            self._prev = mx.concatenate([self._prev, mx.zeros((n - old,), mx.int32)])
        else:
            self._prev = self._prev[:n]

    def _bos_inputs(self, n: int) -> "mx.array":
        a = self.args
        bos = [a.bos_token_id] + [a.audio_bos_token_id] * a.num_codebooks
        return mx.broadcast_to(mx.array(bos, mx.int32)[None], (n, 1 + a.num_codebooks))

    def step(self, ready: "np.ndarray", audio: "mx.array | None") -> "tuple[mx.array, list[tuple[int, bool]]]":
        """One LM step for every row; only `ready` rows advance.

        Parameters
        ----------
        ready : np.ndarray
            bool (capacity,): the rows that take this step.
        audio : mx.array or None
            int32 (capacity, num_codebooks): each ready row's codes of the frame it reads; None
            for a step where every ready row is at its first step (BOS inputs).

        Returns
        -------
        (tokens, info)
            tokens: lazy int32 (capacity,), the chosen text token of each row (garbage where not
            ready); info: for each ready row, (row, prefix) where prefix tells a forced task-prefix
            token. The caller queues `tokens` and `state` (mx.async_eval) and syncs when it chooses.
        """
        n = self.capacity
        positions = np.zeros(n, np.int32)
        forced = np.full(n, -1, np.int32)
        info = []
        for i, r in enumerate(self.rows):
            if r is None:
                continue
            positions[i] = r.steps
            if not ready[i]:
                continue
            if r.steps < len(r.prefix):
                forced[i] = r.prefix[r.steps]
            elif r.steps < len(r.prefix) + r.pad_steps:
                forced[i] = self.args.pad_token_id
            info.append((i, r.steps < len(r.prefix)))
        if audio is None:
            x = self._bos_inputs(n)
        else:
            x = mx.concatenate([self._prev[:, None], audio.astype(mx.int32)], axis=1)
        # Positions, slots and masks are made on the host: arrays the graph reads, not kernels.
        window = self.args.sliding_window
        positions_mx = mx.array(positions)
        slots = mx.array(positions % window)
        mask = None
        if positions.size and positions.min() < window - 1:
            # Young rows: only the slots written since the row started (the step's own included).
            mask = mx.array((np.arange(window)[None] <= positions[:, None])[:, None, None, :])
        for c in self.cache:
            c.seek(positions_mx, mask, slots)
        logits = self.lm(x[:, None], self.cache)[:, -1]
        free = mx.argmax(logits, axis=-1)
        token, self._prev = self._choose(free, mx.array(forced), mx.array(forced >= 0), mx.array(ready[:n]), self._prev)
        # The caches need no undo: a row that was not ready wrote into the slot its next real step
        # overwrites (the oldest key, which that step no longer attends).
        for i, _ in info:
            self.rows[i].steps += 1
        return token, info

    @property
    def state(self) -> "list[mx.array]":
        return [self._prev] + [a for c in self.cache for a in c.state]

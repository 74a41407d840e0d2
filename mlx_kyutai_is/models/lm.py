# Copyright © 2026 mlx-kyutai-is contributors
"""The speech-to-text language model: a decoder-only transformer over text + audio codebooks.

Each 80 ms step reads one text token and the 32 Mimi codes of one audio frame, sums their
embeddings from one fused table, runs pre-norm layers with RoPE and sliding-window attention,
and predicts the next text token. The arithmetic follows transformers'
`KyutaiSpeechToTextForConditionalGeneration` stepping through its sliding-window cache.
"""

from functools import partial

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .cache import RotatingKVCache, window_mask
from .config import LmArgs

# The elementwise pieces below are compiled (as mlx-lm's `swiglu`): each fuses its casts and
# arithmetic into one kernel, which on a GPU is what a one-token step mostly pays for (launches;
# `mlx-kyutai-is bench --kernels` counts them). The dtype steps are kept, so results are those of
# the uncompiled code, bit for bit. Only the same-shape elementwise `silu_gate` is shapeless; the
# others compile per shape, as a precaution (mimi.py: a shapeless graph with a reduction went
# wrong when reused across shapes). The RMSNorms read float32 from `add_f32`, which makes the
# residual sum and its float32 copy in one kernel, and their weights from a float32 copy made
# once: per norm 3 kernels (add + cast, norm, cast back) instead of 5.


@partial(mx.compile, shapeless=True)
def silu_gate(gate: mx.array, value: mx.array) -> mx.array:
    # SiLU in float32, rounded once, as torch's bf16 kernel does (x * sigmoid(x) in bf16 rounds twice).
    return nn.silu(gate.astype(mx.float32)).astype(value.dtype) * value


@mx.compile
def add_f32(x: mx.array, y: mx.array) -> tuple[mx.array, mx.array]:
    """The residual sum, and that sum (rounded to its dtype) in float32 for the next RMSNorm: one
    kernel for what was an add and a cast."""
    s = x + y
    return s, s.astype(mx.float32)


@mx.compile
def embedding_rows(tokens: mx.array, offsets: mx.array, pad: mx.array) -> mx.array:
    # `pad` (the zero last row) is read as is; other ids are offset to their codebook's rows.
    return mx.where(tokens == pad, tokens, tokens + offsets)


@mx.compile
def sum_embeddings(e: mx.array) -> tuple[mx.array, mx.array]:
    # Summed in float32 and rounded once, as torch sums bf16; and, as `add_f32`, in float32 again.
    x = e.astype(mx.float32).sum(axis=2).astype(e.dtype)
    return x, x.astype(mx.float32)


class Attention(nn.Module):
    def __init__(self, args: LmArgs):
        super().__init__()
        self.n_heads = args.num_attention_heads
        self.n_kv_heads = args.num_key_value_heads
        self.head_dim = args.head_dim
        self.scale = self.head_dim**-0.5
        # q, k and v in one matmul (`LM.sanitize` concatenates transformers' three weights).
        heads = self.n_heads + 2 * self.n_kv_heads
        self.qkv_proj = nn.Linear(args.hidden_size, heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, args.hidden_size, bias=False)
        # RoPE wavelengths as transformers computes them (theta ** (2i / d) in float32). mx.fast.rope's
        # own `base` path derives them differently and the angles drift apart as positions grow
        # (3e-3 at step 10 000, 5e-2 at 200 000 in float32); these match transformers at any position.
        with mx.stream(mx.cpu):
            self._freqs = args.rope_theta ** (mx.arange(0, self.head_dim, 2, dtype=mx.float32) / self.head_dim)
            mx.eval(self._freqs)

    def rope(self, x: mx.array, offset: int | mx.array = 0) -> mx.array:
        """Rotate-half RoPE on (B, heads, T, head_dim) at positions offset.. (transformers stores
        q/k permuted for rotate-half, hence traditional=False; Kyutai's own layout is traditional)."""
        return mx.fast.rope(x, self.head_dim, traditional=False, base=None, scale=1.0, offset=offset, freqs=self._freqs)

    def __call__(self, x: mx.array, cache=None, mask=None) -> mx.array:
        B, T, _ = x.shape
        H, K = self.n_heads, self.n_kv_heads
        qkv = self.qkv_proj(x).reshape(B, T, H + 2 * K, -1).transpose(0, 2, 1, 3)
        offset = cache.offset if cache is not None else 0
        # q and k rotated in one call: RoPE acts on each head and position alone.
        qk = self.rope(qkv[:, : H + K], offset)
        q, k, v = qk[:, :H], qk[:, H:], qkv[:, H + K :]
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(B, T, -1))


class GatedMLP(nn.Module):
    """SiLU-gated FFN with one fused input projection: first half gate, second half value."""

    def __init__(self, args: LmArgs):
        super().__init__()
        self.fc1 = nn.Linear(args.hidden_size, args.ffn_dim, bias=False)
        self.fc2 = nn.Linear(args.ffn_dim // 2, args.hidden_size, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        gate, value = mx.split(self.fc1(x), 2, axis=-1)
        return self.fc2(silu_gate(gate, value))


class RMSNorm(nn.Module):
    """RMSNorm computed in float32, as transformers' KyutaiSpeechToTextRMSNorm (which casts the
    result back to the input's dtype: `__call__` does, `norm` leaves that to the caller).

    The weight is read in float32 from a copy made once (rebuilt whenever the parameter is
    replaced), not cast on every call."""

    def __init__(self, dims: int, eps: float):
        super().__init__()
        self.weight = mx.ones((dims,))
        self.eps = eps
        self._weight_f32 = self._derived_from = None

    def update(self, parameters: dict, strict: bool = True):
        super().update(parameters, strict=strict)
        self._derived_from = None
        return self

    def weight_f32(self) -> mx.array:
        if self._derived_from is not self.weight:
            self._weight_f32 = self.weight.astype(mx.float32)
            self._derived_from = self.weight
        return self._weight_f32

    def norm(self, x32: mx.array) -> mx.array:
        """float32 in (the residual stream cast up, e.g. by `add_f32`), float32 out."""
        return mx.fast.rms_norm(x32, self.weight_f32(), self.eps)

    def __call__(self, x: mx.array) -> mx.array:
        return self.norm(x.astype(mx.float32)).astype(x.dtype)


class DecoderLayer(nn.Module):
    def __init__(self, args: LmArgs):
        super().__init__()
        self.self_attn = Attention(args)
        self.mlp = GatedMLP(args)
        self.input_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps)

    def __call__(self, x, x32, cache=None, mask=None):
        """x: the residual stream, x32: the same in float32 (for the norm). Returns both, updated."""
        h = self.input_layernorm.norm(x32).astype(x.dtype)
        x, x32 = add_f32(x, self.self_attn(h, cache, mask))
        h = self.post_attention_layernorm.norm(x32).astype(x.dtype)
        return add_f32(x, self.mlp(h))


class LM(nn.Module):
    """The text decoder: (text token + 32 audio codes) per step -> next-text-token logits.

    Parameters
    ----------
    args : LmArgs
        The language-model half of the checkpoint's config.
    """

    def __init__(self, args: LmArgs):
        super().__init__()
        if args.hidden_act != "silu":
            raise ValueError(f"config.json: hidden_act {args.hidden_act!r} is not supported (expected 'silu')")
        self.args = args
        self.embed_tokens = nn.Embedding(args.embedding_rows, args.hidden_size)
        self.layers = [DecoderLayer(args) for _ in range(args.num_hidden_layers)]
        self.norm = RMSNorm(args.hidden_size, args.rms_norm_eps)
        self.lm_head = nn.Linear(args.hidden_size, args.vocab_size, bias=False)
        # Row offset of each input column in the fused table: text at 0, codebook k after the
        # text vocabulary and the k previous codebooks.
        self._offsets = mx.array(
            [0] + [args.vocab_size + k * args.codebook_vocab_size for k in range(args.num_codebooks)],
            dtype=mx.int32,
        )
        self._pad = mx.array(args.audio_pad_token_id, dtype=mx.int32)

    def embed(self, tokens: mx.array) -> mx.array:
        """Sum of the text and codebook embeddings; `audio_pad_token_id` is the (zero) last row as is."""
        return self._embed(tokens)[0]

    def _embed(self, tokens: mx.array) -> tuple[mx.array, mx.array]:
        rows = embedding_rows(tokens, self._offsets, self._pad)
        # One gather for all 33 columns.
        return sum_embeddings(self.embed_tokens(rows))

    def __call__(self, tokens: mx.array, cache: list | None = None) -> mx.array:
        """Run T steps at once (prefill / offline) or one step (streaming).

        Parameters
        ----------
        tokens : mx.array
            int32 (B, T, 1 + num_codebooks): [..., 0] the text token, [..., 1 + k] the raw code of
            codebook k (0..codebook_vocab_size - 2, the last value = audio BOS), or
            `audio_pad_token_id` for the zero pad.
        cache : list of RotatingKVCache or BatchRotatingKVCache, optional
            From `make_cache()`, updated in place, positions continuing from `cache[0].offset`;
            or the per-row rings of `runtime.decoder.BatchDecoder` (one-token steps, (B,) positions).

        Returns
        -------
        mx.array
            float32 logits (B, T, vocab_size). Every step attends exactly the last `sliding_window`
            positions (itself included), whether run one at a time or as a chunk.
        """
        x, x32 = self._embed(tokens)
        T, window = x.shape[1], self.args.sliding_window
        if cache is not None:
            mask = cache[0].make_mask(T, window_size=window)
        elif T > 1:
            mask = "causal" if T <= window else window_mask(T, 0, T, window)
        else:
            mask = None
        for layer, c in zip(self.layers, cache or [None] * len(self.layers)):
            x, x32 = layer(x, x32, c, mask)
        return self.lm_head(self.norm.norm(x32).astype(x.dtype)).astype(mx.float32)

    def make_cache(self) -> list[RotatingKVCache]:
        """One rolling cache of `sliding_window` slots per layer: the single-stream reference path
        (parity tests, benchmark); decoding uses `runtime.decoder.BatchDecoder`'s batched caches."""
        return [RotatingKVCache(self.args.sliding_window) for _ in self.layers]

    @property
    def quant_predicate(self):
        """What `nn.quantize(..., class_predicate=lm.quant_predicate)` should quantize: the linear
        layers (attention, FFN, text head). The fused embedding table stays in float: one step
        reads only 33 of its rows, so quantizing it saves memory but no time, and costs accuracy."""
        return lambda path, module: isinstance(module, nn.Linear)

    @staticmethod
    def sanitize(weights: dict) -> dict:
        """transformers keys (`model.*`, `lm_head.*`) -> this module's names; idempotent.

        `model.embed_tokens.embed_tokens.weight` -> `embed_tokens.weight`,
        `model.layers.{i}.self_attn.q_proj.linear.weight` -> `layers.{i}.self_attn.q_proj.weight`,
        `model.layers.{i}.mlp.fc1.weight`, norms, `model.norm.weight`, `lm_head.weight` keep their tails;
        each layer's `q_proj`, `k_proj`, `v_proj` become one `qkv_proj` (see `fuse_qkv`).
        """
        out = {}
        for k, v in weights.items():
            k = k.removeprefix("model.")
            k = k.replace("embed_tokens.embed_tokens.", "embed_tokens.")
            k = k.replace("_proj.linear.", "_proj.")
            out[k] = v
        return fuse_qkv(out)


def fuse_qkv(weights: dict) -> dict:
    """`*.q_proj.X`, `*.k_proj.X`, `*.v_proj.X` -> `*.qkv_proj.X`, concatenated along the output
    axis, for X in weight, bias, scales, biases: a quantized layer quantizes each output row on
    its own, so the fused layer is exactly the three, quantized or not. Idempotent; a names-only
    dict (values None) gives the fused names."""
    out, fused = {}, set()
    for k, v in weights.items():
        names = [k.replace(".q_proj.", f".{n}_proj.") for n in "qkv"]
        if ".q_proj." not in k or not all(n in weights for n in names):
            out[k] = v  # k/v of a fused triple are dropped below; an incomplete one stays for the loader
            continue
        parts = [weights[n] for n in names]
        out[k.replace(".q_proj.", ".qkv_proj.")] = (
            mx.concatenate(parts, axis=0) if all(isinstance(a, mx.array) for a in parts) else None
        )
        fused.update(names)
    return {k: v for k, v in out.items() if k not in fused}


def bytes_per_step(lm, batch: int) -> int:
    """Bytes one decoding step must read at least: every LM weight except the embedding table
    (quantized scales/biases included), 33 embedding rows per batch row, and the K/V of a full
    window in every layer."""
    params = dict(tree_flatten(lm.parameters()))
    table = params.pop("embed_tokens.weight")
    weights = sum(v.nbytes for v in params.values())
    a = lm.args
    rows = batch * (1 + a.num_codebooks) * a.hidden_size * table.itemsize
    # Keys/values are stored in the activations' dtype: the embedding table's.
    kv = 2 * a.num_hidden_layers * batch * a.num_key_value_heads * a.sliding_window * a.head_dim * table.itemsize
    return weights + rows + kv

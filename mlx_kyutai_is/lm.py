# Copyright © 2026 mlx-kyutai-is contributors
"""The speech-to-text language model: a decoder-only transformer over text + audio codebooks.

Each 80 ms step reads one text token and the 32 Mimi codes of one audio frame, sums their
embeddings from one fused table, runs pre-norm layers with RoPE and sliding-window attention,
and predicts the next text token. The arithmetic follows transformers'
`KyutaiSpeechToTextForConditionalGeneration` stepping through its sliding-window cache.
"""

from functools import lru_cache, partial

import mlx.core as mx
import mlx.nn as nn

from .cache import RotatingKVCache, window_mask
from .config import LmArgs


# The elementwise tails below are compiled (as mlx-lm's `swiglu`): each fuses its casts and
# arithmetic into one kernel, which on a GPU is what a one-token step mostly pays for (launches).
# The dtype steps are kept, so results are those of the uncompiled code. Only the same-shape
# elementwise `silu_gate` is shapeless; the norm and the reduction compile per shape, as a
# precaution (mimi.py: a shapeless graph with a reduction went wrong when reused across shapes).


@partial(mx.compile, shapeless=True)
def silu_gate(gate: mx.array, value: mx.array) -> mx.array:
    # SiLU in float32, rounded once, as torch's bf16 kernel does (x * sigmoid(x) in bf16 rounds twice).
    return nn.silu(gate.astype(mx.float32)).astype(value.dtype) * value


@lru_cache(maxsize=None)
def rms_norm_f32(eps: float):
    """RMSNorm in float32, cast back (compiled once per eps)."""

    @mx.compile
    def norm(x: mx.array, weight: mx.array) -> mx.array:
        return mx.fast.rms_norm(x.astype(mx.float32), weight.astype(mx.float32), eps).astype(x.dtype)

    return norm


@mx.compile
def sum_embeddings(e: mx.array) -> mx.array:
    # Summed in float32 and rounded once, as torch sums bf16.
    return e.astype(mx.float32).sum(axis=2).astype(e.dtype)


class Attention(nn.Module):
    def __init__(self, args: LmArgs):
        super().__init__()
        self.n_heads = args.num_attention_heads
        self.n_kv_heads = args.num_key_value_heads
        self.head_dim = args.head_dim
        self.scale = self.head_dim**-0.5
        self.q_proj = nn.Linear(args.hidden_size, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(args.hidden_size, self.n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(args.hidden_size, self.n_kv_heads * self.head_dim, bias=False)
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
        q = self.q_proj(x).reshape(B, T, self.n_heads, -1).transpose(0, 2, 1, 3)
        k = self.k_proj(x).reshape(B, T, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        v = self.v_proj(x).reshape(B, T, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        offset = cache.offset if cache is not None else 0
        q = self.rope(q, offset)
        k = self.rope(k, offset)
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
    """RMSNorm computed in float32 and cast back, as transformers' KyutaiSpeechToTextRMSNorm."""

    def __init__(self, dims: int, eps: float):
        super().__init__()
        self.weight = mx.ones((dims,))
        self.eps = eps

    def __call__(self, x: mx.array) -> mx.array:
        return rms_norm_f32(self.eps)(x, self.weight)


class DecoderLayer(nn.Module):
    def __init__(self, args: LmArgs):
        super().__init__()
        self.self_attn = Attention(args)
        self.mlp = GatedMLP(args)
        self.input_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps)

    def __call__(self, x, cache=None, mask=None):
        x = x + self.self_attn(self.input_layernorm(x), cache, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


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

    def embed(self, tokens: mx.array) -> mx.array:
        """Sum of the text and codebook embeddings; `audio_pad_token_id` is the (zero) last row as is."""
        pad = self.args.audio_pad_token_id
        rows = mx.where(tokens == pad, tokens, tokens + self._offsets)
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
            or the per-row rings of `decoding.BatchDecoder` (one-token steps, (B,) positions).

        Returns
        -------
        mx.array
            float32 logits (B, T, vocab_size). Every step attends exactly the last `sliding_window`
            positions (itself included), whether run one at a time or as a chunk.
        """
        x = self.embed(tokens)
        T, window = x.shape[1], self.args.sliding_window
        if cache is not None:
            mask = cache[0].make_mask(T, window_size=window)
        elif T > 1:
            mask = "causal" if T <= window else window_mask(T, 0, T, window)
        else:
            mask = None
        for layer, c in zip(self.layers, cache or [None] * len(self.layers)):
            x = layer(x, c, mask)
        return self.lm_head(self.norm(x)).astype(mx.float32)

    def make_cache(self) -> list[RotatingKVCache]:
        """One rolling cache of `sliding_window` slots per layer."""
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
        `model.layers.{i}.mlp.fc1.weight`, norms, `model.norm.weight`, `lm_head.weight` keep their tails.
        """
        out = {}
        for k, v in weights.items():
            k = k.removeprefix("model.")
            k = k.replace("embed_tokens.embed_tokens.", "embed_tokens.")
            k = k.replace("_proj.linear.", "_proj.")
            out[k] = v
        return out

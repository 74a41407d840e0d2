# Copyright © 2026 mlx-kyutai-is contributors
"""The speech-to-text language model: a decoder-only transformer over text + audio codebooks.

Each 80 ms step reads one text token and the 32 Mimi codes of one audio frame, sums their
embeddings from one fused table, runs pre-norm layers with RoPE and sliding-window attention,
and predicts the next text token.
"""

import mlx.core as mx
import mlx.nn as nn

from .cache import RotatingKVCache, window_mask
from .config import LmArgs


class Attention(nn.Module):
    def __init__(self, args: LmArgs):
        super().__init__()
        self.n_heads = args.num_attention_heads
        self.n_kv_heads = args.num_key_value_heads
        self.head_dim = args.head_dim
        self.scale = self.head_dim**-0.5
        self.window = args.sliding_window
        self.q_proj = nn.Linear(args.hidden_size, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(args.hidden_size, self.n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(args.hidden_size, self.n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, args.hidden_size, bias=False)
        # transformers stores q/k permuted for rotate-half RoPE, hence traditional=False.
        self.rope = nn.RoPE(self.head_dim, traditional=False, base=args.rope_theta)

    def __call__(self, x: mx.array, cache=None, mask=None) -> mx.array:
        B, T, _ = x.shape
        q = self.q_proj(x).reshape(B, T, self.n_heads, -1).transpose(0, 2, 1, 3)
        k = self.k_proj(x).reshape(B, T, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        v = self.v_proj(x).reshape(B, T, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        offset = cache.offset if cache is not None else 0
        q = self.rope(q, offset=offset)
        k = self.rope(k, offset=offset)
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
        return self.fc2(nn.silu(gate) * value)


class RMSNorm(nn.Module):
    """RMSNorm computed in float32 and cast back, as transformers' MoshiRMSNorm."""

    def __init__(self, dims: int, eps: float):
        super().__init__()
        self.weight = mx.ones((dims,))
        self.eps = eps

    def __call__(self, x: mx.array) -> mx.array:
        y = mx.fast.rms_norm(x.astype(mx.float32), self.weight.astype(mx.float32), self.eps)
        return y.astype(x.dtype)


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
    def __init__(self, args: LmArgs):
        super().__init__()
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
        """Sum of the text and codebook embeddings; `audio_pad_token_id` is the zero row as is."""
        pad = self.args.audio_pad_token_id
        rows = mx.where(tokens == pad, tokens, tokens + self._offsets)
        # One gather for all 33 columns, summed in float32 (torch accumulates bf16 sums in float32).
        x = self.embed_tokens(rows).astype(mx.float32).sum(axis=2)
        return x.astype(self.embed_tokens.weight.dtype)

    def __call__(self, tokens: mx.array, cache: list | None = None) -> mx.array:
        """tokens: int32 (B, T, 1 + num_codebooks) -> float32 logits (B, T, vocab_size)."""
        x = self.embed(tokens)
        T = x.shape[1]
        mask = None
        if T > 1:
            offset = cache[0].offset if cache is not None else 0
            n_keys = T + (min(offset, self.args.sliding_window - 1) if cache is not None else 0)
            mask = window_mask(T, offset, n_keys, self.args.sliding_window)
        for layer, c in zip(self.layers, cache or [None] * len(self.layers)):
            x = layer(x, c, mask)
        return self.lm_head(self.norm(x)).astype(mx.float32)

    def make_cache(self) -> list[RotatingKVCache]:
        return [RotatingKVCache(self.args.sliding_window) for _ in self.layers]

    @property
    def quant_predicate(self):
        """Quantize the linear layers (attention, FFN, text head); keep the embedding table in float."""
        return lambda path, module: isinstance(module, nn.Linear)

    @staticmethod
    def sanitize(weights: dict) -> dict:
        """transformers keys (`model.*`, `lm_head.*`) -> this module's names; idempotent."""
        out = {}
        for k, v in weights.items():
            if k.startswith("model."):
                k = k[len("model.") :]
            k = k.replace("embed_tokens.embed_tokens.", "embed_tokens.")
            k = k.replace(".linear.", ".")
            out[k] = v
        return out

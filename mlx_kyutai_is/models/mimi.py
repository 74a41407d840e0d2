# Copyright © 2026 mlx-kyutai-is contributors
"""The encoder half of the Mimi codec: 24 kHz audio -> 12.5 Hz frames of discrete codes.

causal SEANet convolutions (strides 4, 5, 6, 8 -> 25 Hz) -> 8-layer transformer (sliding window,
causal) -> stride-2 downsample conv (12.5 Hz) -> split residual vector quantizer
(1 semantic + 31 acoustic codebooks).

Everything runs as a stream: each convolution keeps the input it has not consumed yet (its
causal left context plus any samples short of a full stride), the transformer keeps a rolling
KV cache of its window, so any chunk size gives the same codes and memory stays constant.
Offline `encode` is the same computation over the whole file.

Layout is NLC (batch, time, channels) throughout, as mlx-examples whisper; transformers' conv
weights (out, in, kernel) are transposed to MLX's (out, kernel, in) in `sanitize`.
"""

from dataclasses import dataclass, field
from functools import partial

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .config import ConfigError, MimiArgs
from .lm import fuse_qkv

# Small elementwise pieces are compiled (one fused kernel each instead of 2-4): a streaming
# frame is hundreds of tiny ops, and on a GPU their launches, not the arithmetic, set its time
# (`mlx-kyutai-is bench --kernels` counts them). The operations and dtypes are unchanged, so the
# codes are too. Only the unary `elu` is shapeless: a shapeless quantizer stage (matmul, argmin,
# gather) gave wrong codes once reused for another shape (MLX 0.32.4, caught by test_mimi), so, as
# a precaution, the broadcasting pieces recompile per shape (a handful: 1 frame, 12-13 per 1 s
# chunk). The quantizer stage itself has nothing left to fuse (addmm, argmin, gather, subtract).


@partial(mx.compile, shapeless=True)
def elu(x: mx.array) -> mx.array:
    # expm1 as torch's vectorised ELU: exp(x) - 1 loses digits near 0.
    return mx.where(x > 0, x, mx.expm1(mx.minimum(x, 0)))


@mx.compile
def scaled_residual(x: mx.array, scale: mx.array, y: mx.array) -> mx.array:
    return x + scale * y


# A convolution's bias added in the kernel of what follows it (same operations, same order).
@mx.compile
def elu_bias(y: mx.array, bias: mx.array) -> mx.array:
    return elu(y + bias)


@mx.compile
def add_bias(residual: mx.array, y: mx.array, bias: mx.array) -> mx.array:
    return residual + (y + bias)


def nearest_codeword(residual: mx.array, emb: mx.array, emb_sq: mx.array) -> tuple[mx.array, mx.array]:
    """One residual-quantizer stage: the nearest codeword of each row and the new residual."""
    # argmin |x - e|^2 = argmin |e|^2 - 2 x.e (|x|^2 is the same for every codeword), the
    # distances in one kernel (addmm: the matmul's epilogue adds |e|^2; scaling by -2 is exact).
    # uint32 codes, as argmin gives them: the quantizer casts them once, all stages stacked.
    codes = mx.argmin(mx.addmm(emb_sq, residual, emb.T, alpha=-2.0, beta=1.0), axis=-1)
    return codes, residual - emb[codes]


@dataclass(frozen=True)
class CallContext:
    """What one call tells the convolutions besides their input and carried state; nothing here
    outlives the call."""

    final: bool = False  # the stream ends here: pad the right as transformers does offline
    fresh: mx.array | None = None  # bool (B, 1, 1), engine `step`: rows starting a new stream
    # One-frame engine `step`: conv state kept as views of the input, not copies (see `_stream`).
    views: bool = False


class ELU(nn.Module):
    """Parameter-free slot so the layer lists keep transformers' indices (and weight names)."""

    def __call__(self, x):
        return elu(x)


class CausalConv1d(nn.Module):
    """transformers' `MimiConv1d` with `use_causal_conv=True`, as a streaming convolution.

    transformers pads `kernel - stride` (dilated kernel) on the left (zeros, or the first value
    for "replicate") and, offline, just enough on the right to finish the last partial stride
    (zeros, or the last value). Streaming, we keep the unconsumed tail of the input instead and
    only pad the right when the stream is flushed.
    """

    def __init__(self, in_ch, out_ch, kernel_size, stride=1, dilation=1, bias=True, pad_mode="constant"):
        super().__init__()
        if pad_mode not in ("constant", "replicate"):
            raise ValueError(f"config.json: Mimi pad_mode {pad_mode!r} is not supported (constant or replicate)")
        self.weight = mx.zeros((out_ch, kernel_size, in_ch))
        if bias:
            self.bias = mx.zeros((out_ch,))
        self.stride = stride
        self.dilation = dilation
        self.pad_mode = pad_mode
        self.kernel_eff = (kernel_size - 1) * dilation + 1
        self.padding_total = self.kernel_eff - stride
        self.in_ch = in_ch
        self.out_ch = out_ch
        self.idx = -1  # slot in MimiState.conv, set by MimiEncoder

    def _conv(self, x):
        return mx.conv1d(x, self.weight, stride=self.stride, dilation=self.dilation)

    def __call__(self, x: mx.array, state: "MimiState", ctx: CallContext, bias: bool = True) -> mx.array:
        """The convolution of the stream's next `x`; `bias=False` leaves the bias to the caller
        (to fuse it into what follows: `elu_bias`, `add_bias`)."""
        y = self._stream(x, state, ctx)
        return y + self.bias if bias and "bias" in self else y

    def _stream(self, x: mx.array, state: "MimiState", ctx: CallContext) -> mx.array:
        if self.padding_total == 0 and self.stride == 1:
            # A 1x1 convolution needs no context: no state to carry.
            return self._conv(x) if x.shape[1] else mx.zeros((x.shape[0], 0, self.out_ch), x.dtype)
        buf = state.conv[self.idx]
        if buf is None:
            if x.shape[1] == 0:
                return mx.zeros((x.shape[0], 0, self.out_ch), x.dtype)
            if self.pad_mode == "replicate":
                buf = mx.repeat(x[:, :1], self.padding_total, axis=1)
            else:
                buf = mx.zeros((x.shape[0], self.padding_total, x.shape[2]), x.dtype)
        elif ctx.fresh is not None and self.padding_total and x.shape[1]:
            # Rows that joined a running batch start from the padding a new stream starts from.
            if self.pad_mode == "replicate":
                start = mx.repeat(x[:, :1], self.padding_total, axis=1)
            else:
                start = mx.zeros_like(buf)
            buf = mx.where(ctx.fresh, start, buf)
        x = mx.concatenate([buf, x], axis=1) if x.shape[1] else buf
        n = max(0, (x.shape[1] - self.kernel_eff) // self.stride + 1)
        y = self._conv(x[:, : (n - 1) * self.stride + self.kernel_eff]) if n else None
        rest = x[:, n * self.stride :]
        if not ctx.views:
            # A view keeps this call's whole input alive until the next call: 1.7 MB per row for
            # a one-frame call at full size, 20 MB for 12 frames. Only one-frame calls keep views.
            rest = mx.contiguous(rest)
        state.conv[self.idx] = rest
        if ctx.final and rest.shape[1] > self.padding_total:
            # transformers' extra right padding: complete the last, partial stride.
            pad = self.stride - (rest.shape[1] - self.padding_total)
            if self.pad_mode == "replicate":
                tail = mx.repeat(rest[:, -1:], pad, axis=1)
            else:
                tail = mx.zeros((rest.shape[0], pad, rest.shape[2]), rest.dtype)
            last = self._conv(mx.concatenate([rest, tail], axis=1))
            y = last if y is None else mx.concatenate([y, last], axis=1)
        if y is None:
            return mx.zeros((x.shape[0], 0, self.out_ch), x.dtype)
        return y


class ResnetBlock(nn.Module):
    """SEANet residual block: ELU, conv(k=3, dilated), ELU, conv(k=1), plus the (identity) shortcut."""

    def __init__(self, args: MimiArgs, dim: int, dilations: list[int]):
        super().__init__()
        hidden = dim // args.compress
        kernels = (args.residual_kernel_size, 1)
        self.block = []
        for i, (k, d) in enumerate(zip(kernels, dilations)):
            in_ch = dim if i == 0 else hidden
            out_ch = dim if i == len(kernels) - 1 else hidden
            self.block += [ELU(), CausalConv1d(in_ch, out_ch, k, dilation=d, pad_mode=args.pad_mode)]
        if args.use_conv_shortcut:
            self.shortcut = CausalConv1d(dim, dim, 1, pad_mode=args.pad_mode)

    def __call__(self, x, state, ctx):
        residual = x
        x = _run_layers(self.block, x, state, ctx, last_bias=False)
        if "shortcut" in self:
            residual = self.shortcut(residual, state, ctx)
        # Stride-1 causal convs return as many steps as they get: the sum lines up.
        last = self.block[-1]
        if isinstance(last, CausalConv1d) and "bias" in last:
            return add_bias(residual, x, last.bias)
        return residual + x


class SeanetEncoder(nn.Module):
    """transformers' `MimiEncoder`; `layers` keeps its indices so weight names match."""

    def __init__(self, args: MimiArgs):
        super().__init__()
        nf, pm = args.num_filters, args.pad_mode
        layers = [CausalConv1d(args.audio_channels, nf, args.kernel_size, pad_mode=pm)]
        scale = 1
        for ratio in reversed(args.upsampling_ratios):
            dim = scale * nf
            for j in range(args.num_residual_layers):
                layers.append(ResnetBlock(args, dim, [args.dilation_growth_rate**j, 1]))
            layers += [ELU(), CausalConv1d(dim, dim * 2, ratio * 2, stride=ratio, pad_mode=pm)]
            scale *= 2
        layers += [ELU(), CausalConv1d(scale * nf, args.hidden_size, args.last_kernel_size, pad_mode=pm)]
        self.layers = layers

    def __call__(self, x, state, ctx):
        return _run_layers(self.layers, x, state, ctx)


def _run_layers(layers, x, state, ctx, last_bias=True):
    """ELUs, convolutions and blocks in order; a conv's bias goes into the ELU right after it
    (`elu_bias`), and, with `last_bias=False`, a last conv's is left to the caller."""
    i = 0
    while i < len(layers):
        layer = layers[i]
        if isinstance(layer, ELU):
            x = layer(x)
        elif isinstance(layer, CausalConv1d) and "bias" in layer:
            then_elu = i + 1 < len(layers) and isinstance(layers[i + 1], ELU)
            is_last = i + 1 == len(layers)
            x = layer(x, state, ctx, bias=not (then_elu or (is_last and not last_bias)))
            if then_elu:
                x = elu_bias(x, layer.bias)
                i += 1
        else:
            x = layer(x, state, ctx)
        i += 1
    return x


class Attention(nn.Module):
    def __init__(self, args: MimiArgs):
        super().__init__()
        self.n_heads = args.num_attention_heads
        self.n_kv_heads = args.num_key_value_heads
        self.head_dim = args.head_dim
        self.scale = self.head_dim**-0.5
        bias = args.attention_bias
        # q, k and v in one matmul (`MimiEncoder.sanitize` concatenates transformers' three weights).
        heads = self.n_heads + 2 * self.n_kv_heads
        self.qkv_proj = nn.Linear(args.hidden_size, heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, args.hidden_size, bias=bias)
        # transformers' rotate-half RoPE (traditional=False).
        self.rope = nn.RoPE(self.head_dim, traditional=False, base=args.rope_theta)

    def __call__(self, x, cache, mask):
        B, T, _ = x.shape
        H, K = self.n_heads, self.n_kv_heads
        qkv = self.qkv_proj(x).reshape(B, T, H + 2 * K, -1).transpose(0, 2, 1, 3)
        # q and k rotated in one call: RoPE acts on each head and position alone.
        qk = self.rope(qkv[:, : H + K], offset=cache.offset)
        q, k, v = qk[:, :H], qk[:, H:], qkv[:, H + K :]
        k, v = cache.update_and_fetch(k, v)
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, args: MimiArgs):
        super().__init__()
        self.fc1 = nn.Linear(args.hidden_size, args.intermediate_size, bias=False)
        self.fc2 = nn.Linear(args.intermediate_size, args.hidden_size, bias=False)

    def __call__(self, x):
        return self.fc2(nn.gelu(self.fc1(x)))  # exact (erf) GELU, as torch's F.gelu


class LayerScale(nn.Module):
    """Holds the per-channel `scale` under transformers' name; applied by `scaled_residual`."""

    def __init__(self, dims: int, init: float):
        super().__init__()
        self.scale = mx.full((dims,), init)


class TransformerLayer(nn.Module):
    def __init__(self, args: MimiArgs):
        super().__init__()
        self.self_attn = Attention(args)
        self.mlp = MLP(args)
        self.input_layernorm = nn.LayerNorm(args.hidden_size, eps=args.norm_eps)
        self.post_attention_layernorm = nn.LayerNorm(args.hidden_size, eps=args.norm_eps)
        self.self_attn_layer_scale = LayerScale(args.hidden_size, args.layer_scale_initial_scale)
        self.mlp_layer_scale = LayerScale(args.hidden_size, args.layer_scale_initial_scale)

    def __call__(self, x, cache, mask):
        # x + layer_scale(f(x)), fused.
        x = scaled_residual(x, self.self_attn_layer_scale.scale, self.self_attn(self.input_layernorm(x), cache, mask))
        return scaled_residual(x, self.mlp_layer_scale.scale, self.mlp(self.post_attention_layernorm(x)))


class WindowKVCache:
    """Keys/values of the last `window - 1` positions of one attention layer, for a stream whose
    rows all started together (`encode`, `encode_step`).

    With a step's own T new keys, every query attends exactly its window (transformers'
    sliding-window mask: 0 <= q - k < window, itself included); `offset` counts every position ever
    seen, so RoPE positions keep growing while memory stays at one window. The keys are kept in
    time order, only those seen so far (growing to `window - 1`); each call appends its own.
    """

    def __init__(self, window: int):
        self.window = window
        self.keys = self.values = None
        self.offset = 0

    def make_mask(self, T: int) -> mx.array | None:
        """The mask for the next T queries, before `update_and_fetch`, made on the host: (T, keys);
        None when all keys are visible."""
        if T == 1:
            return None  # it gets at most `window` keys, none in its future
        n_prev = 0 if self.keys is None else self.keys.shape[2]
        q = np.arange(self.offset, self.offset + T)[:, None]
        k = np.arange(self.offset - n_prev, self.offset + T)[None]
        return mx.array((k <= q) & (q - k < self.window))

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        self.offset += keys.shape[2]
        if self.keys is not None:
            keys = mx.concatenate([self.keys, keys], axis=2)
            values = mx.concatenate([self.values, values], axis=2)
        start = max(0, keys.shape[2] - (self.window - 1))
        self.keys, self.values = mx.contiguous(keys[:, :, start:]), mx.contiguous(values[:, :, start:])
        return keys, values


class RingKVCache:
    """`WindowKVCache`'s window for the engine's batch, whose rows join and leave at any time: a
    preallocated ring per row.

    Position p is written at slot ``p % ring`` (one scatter per call, nothing copied), `ring` >=
    window - 1 + T slots so a call's T new keys never overwrite a key its queries still attend;
    per-row `offsets` say which position each slot holds, so a new row never sees old keys (their
    positions would be negative) and rows may be at any position. Attention is order-free over the
    keys (RoPE is in them), so the ring's order does not matter but for float rounding.
    """

    def __init__(self, window: int, rows: int, heads: int, head_dim: int):
        self.window = window
        self.offsets = np.zeros(rows, np.int64)  # positions seen per row
        # Room for one frame's keys (2 at Mimi's 25 Hz); grown when a call brings more.
        shape = (rows, heads, window + 1, head_dim)
        self.keys, self.values = mx.zeros(shape), mx.zeros(shape)

    @property
    def offset(self) -> int | mx.array:
        """Each row's RoPE position: an int when all rows are at the same one, else int32 (B,)."""
        if self.offsets.size and (self.offsets == self.offsets[0]).all():
            return int(self.offsets[0])
        return mx.array(self.offsets.astype(np.int32))

    def _ring(self, T: int) -> int:
        return max(self.keys.shape[2], self.window - 1 + T)

    def make_mask(self, T: int) -> mx.array:
        """The mask for the next T queries, before `update_and_fetch`, made on the host: (T, ring),
        or (B, 1, T, ring) when rows are at different positions."""
        R = self._ring(T)
        rows = np.unique(self.offsets) if self.offsets.size else np.zeros(1, np.int64)
        # The position slot j holds once this call's keys are in: the newest p <= last, p = j mod R.
        last = rows[:, None, None] + T - 1
        slot_pos = last - (last - np.arange(R)[None, None]) % R  # (rows, 1, R)
        q = rows[:, None, None] + np.arange(T)[None, :, None]  # (rows, T, 1)
        mask = (slot_pos >= 0) & (slot_pos <= q) & (q - slot_pos < self.window)
        if len(rows) == 1:
            return mx.array(mask[0])
        return mx.array(mask[np.searchsorted(rows, self.offsets)][:, None])

    def _grow(self, R: int):
        """Re-lay the rings out at R slots (rare: a call bringing more keys than ever before)."""
        old = self.keys.shape[2]
        src = np.zeros((len(self.offsets), R), np.int64)
        for b, n in enumerate(self.offsets):
            p = np.arange(max(0, n - (self.window - 1)), n)
            src[b, p % R] = p % old
        index = mx.array(src.astype(np.int32))[:, None, :, None]
        self.keys = mx.take_along_axis(self.keys, index, axis=2)
        self.values = mx.take_along_axis(self.values, index, axis=2)

    def reserve(self, T: int):
        """Make the rings hold a call of T new keys (re-laid out if they must grow)."""
        if self._ring(T) > self.keys.shape[2]:
            self._grow(self._ring(T))

    def reset_rows(self, rows):
        """`rows` start again from position 0 (their old keys are masked out from then on)."""
        self.offsets[rows] = 0

    def resize(self, n: int):
        """Keep the first `n` rows, or add new ones at position 0."""
        old = len(self.offsets)
        self.keys, self.values = _fit_rows(self.keys, n), _fit_rows(self.values, n)
        self.offsets = np.concatenate([self.offsets[:n], np.zeros(max(0, n - old), np.int64)])

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        T = keys.shape[2]
        self.reserve(T)
        R = self.keys.shape[2]
        slots = (self.offsets[:, None] + np.arange(T)[None]) % R
        index = mx.array(slots.astype(np.int32))[:, None, :, None]
        self.keys = mx.put_along_axis(self.keys, index, keys, axis=2)
        self.values = mx.put_along_axis(self.values, index, values, axis=2)
        self.offsets += T
        return self.keys, self.values


def _fit_rows(a: mx.array, n: int) -> mx.array:
    """`a`'s first `n` rows, zero rows appended if it has fewer."""
    if n <= a.shape[0]:
        return a[:n]
    return mx.concatenate([a, mx.zeros((n - a.shape[0],) + a.shape[1:], a.dtype)])


class EncoderTransformer(nn.Module):
    def __init__(self, args: MimiArgs):
        super().__init__()
        self.layers = [TransformerLayer(args) for _ in range(args.num_hidden_layers)]

    def __call__(self, x, caches: list[WindowKVCache] | list[RingKVCache]):
        # Causal within the chunk and windowed over the cache, as transformers' full-sequence mask.
        mask = caches[0].make_mask(x.shape[1])
        for layer, cache in zip(self.layers, caches):
            x = layer(x, cache, mask)
        return x


class EuclideanCodebook(nn.Module):
    """Codewords `embed_sum / clamp(cluster_usage, 1e-5)`, searched by `nearest_codeword`.

    The codewords and their squared norms are derived tensors under `_` names (left out of
    `parameters()`), rebuilt whenever the parameter arrays are replaced, whichever way that
    happens (`load_weights`, `update`, a dtype cast), as moshi_mlx's `EuclideanCodebook`.
    """

    def __init__(self, size: int, dim: int, epsilon: float = 1e-5):
        super().__init__()
        self.embed_sum = mx.zeros((size, dim))
        self.cluster_usage = mx.ones((size,))
        self.epsilon = epsilon
        self._derived_from = None

    def update(self, parameters: dict, strict: bool = True):
        super().update(parameters, strict=strict)
        self._derived_from = None
        return self

    def codewords(self) -> tuple[mx.array, mx.array]:
        src = (self.embed_sum, self.cluster_usage)
        if self._derived_from is None or any(a is not b for a, b in zip(self._derived_from, src)):
            emb = self.embed_sum / mx.maximum(self.cluster_usage, self.epsilon)[:, None]
            self._embed, self._embed_sq = emb, (emb * emb).sum(axis=-1)
            mx.eval(self._embed, self._embed_sq)
            self._derived_from = src
        return self._embed, self._embed_sq


class VectorQuantization(nn.Module):
    def __init__(self, args: MimiArgs):
        super().__init__()
        self.codebook = EuclideanCodebook(args.codebook_size, args.codebook_dim)


class ResidualVectorQuantizer(nn.Module):
    def __init__(self, args: MimiArgs, n: int):
        super().__init__()
        self.layers = [VectorQuantization(args) for _ in range(n)]
        if args.vector_quantization_hidden_dimension != args.hidden_size:
            # A 1x1 conv in transformers: a linear map per frame (the weight's kernel axis is squeezed).
            self.input_proj = nn.Linear(args.hidden_size, args.vector_quantization_hidden_dimension, bias=False)

    def encode(self, x: mx.array) -> mx.array:
        """x (N, hidden) -> codes (N, n_codebooks)."""
        residual = self.input_proj(x) if "input_proj" in self else x
        codes = []
        for layer in self.layers:
            c, residual = nearest_codeword(residual, *layer.codebook.codewords())
            codes.append(c)
        return mx.stack(codes, axis=-1)


class SplitResidualVectorQuantizer(nn.Module):
    def __init__(self, args: MimiArgs):
        super().__init__()
        n_sem = args.num_semantic_quantizers
        self.semantic_residual_vector_quantizer = ResidualVectorQuantizer(args, n_sem)
        self.acoustic_residual_vector_quantizer = ResidualVectorQuantizer(args, args.num_quantizers - n_sem)

    def encode(self, x: mx.array) -> mx.array:
        """x (B, T, hidden) -> codes (B, T, num_quantizers): semantic first, then acoustic."""
        B, T, D = x.shape
        x = x.reshape(B * T, D)
        sem = self.semantic_residual_vector_quantizer.encode(x)
        aco = self.acoustic_residual_vector_quantizer.encode(x)
        return mx.concatenate([sem, aco], axis=-1).reshape(B, T, -1).astype(mx.int32)


@dataclass
class MimiState:
    """Everything a stream of `MimiEncoder.encode_step` calls carries between calls.

    Memory is bounded whatever the stream length: per convolution less than one kernel of input,
    per transformer layer a window of keys/values.
    """

    batch_size: int
    conv: list = field(default_factory=list)  # unconsumed input of each causal conv (or None)
    kv: list = field(default_factory=list)  # per transformer layer: a WindowKVCache (RingKVCache when batched)
    samples: int = 0  # audio samples fed so far
    frames: int = 0  # code frames returned so far
    flushed: bool = False

    @property
    def nbytes(self) -> int:
        n = sum(b.nbytes for b in self.conv if b is not None)
        return n + sum(c.keys.nbytes + c.values.nbytes for c in self.kv if c.keys is not None)

    @property
    def arrays(self) -> list[mx.array]:
        """Every carried array (to evaluate with a step's outputs)."""
        kv = [a for c in self.kv for a in (c.keys, c.values) if a is not None]
        return [b for b in self.conv if b is not None] + kv


@dataclass
class MimiBatchState(MimiState):
    """The engine's fixed layout (`make_state(B, fixed=True)`, fed by `MimiEncoder.step`): every
    buffer allocated at its steady-state size, rows that start, stop and restart independently,
    and a batch that `resize` grows and shrinks."""

    fresh_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # rows not fed yet

    def reset_rows(self, rows):
        """Make `rows` new streams (they start from a new stream's padding and position 0 at their
        next `step`)."""
        for c in self.kv:
            c.reset_rows(rows)
        self.fresh_rows[rows] = True

    def resize(self, n: int):
        """Grow (new rows are new streams) or shrink to `n` rows."""
        self.conv = [_fit_rows(b, n) for b in self.conv]
        for c in self.kv:
            c.resize(n)
        self.fresh_rows = np.concatenate([self.fresh_rows[:n], np.ones(max(0, n - self.batch_size), bool)])
        self.batch_size = n


def _as_audio(audio, name: str) -> mx.array:
    """Validate (B, samples) float audio; returns float32. Raises ValueError with one line."""
    if isinstance(audio, np.ndarray):
        if audio.dtype.kind not in "f":
            raise ValueError(
                f"{name}: audio dtype {audio.dtype} is not float; pass float32 samples in [-1, 1] "
                "(e.g. int16 PCM / 32768)"
            )
        audio = mx.array(audio.astype(np.float32, copy=False))
    elif not isinstance(audio, mx.array):
        raise ValueError(f"{name}: expected an mx.array or np.ndarray of audio, got {type(audio).__name__}")
    if not mx.issubdtype(audio.dtype, mx.floating):
        raise ValueError(
            f"{name}: audio dtype {audio.dtype} is not float; pass float32 samples in [-1, 1] "
            "(e.g. int16 PCM / 32768)"
        )
    if audio.ndim != 2:
        raise ValueError(
            f"{name}: expected mono audio of shape (batch, samples), got shape {tuple(audio.shape)}"
            + ("; use audio[None] for one signal" if audio.ndim == 1 else "")
        )
    if audio.shape[0] == 0:
        raise ValueError(f"{name}: empty batch (shape {tuple(audio.shape)})")
    audio = audio.astype(mx.float32)
    if audio.size and not mx.isfinite(audio).all().item():
        raise ValueError(f"{name}: audio contains NaN or infinite samples")
    return audio


# transformers' in-memory names of the codec's parts -> ours (its saved names are ours already).
ENCODER_NAMES = (
    ("encoder.encoder_seanet.", "encoder."),
    ("encoder.encoder_transformer.", "encoder_transformer."),
    ("encoder.downsample.", "downsample."),
)
DECODER_NAMES = (
    ("decoder.decoder_seanet.", "decoder."),
    ("decoder.decoder_transformer.", "decoder_transformer."),
    ("decoder.upsample.", "upsample."),
)


def codec_key(key: str, names) -> str:
    """A checkpoint key of the codec in our names: the checkpoint's `codec_model.` prefix off and
    transformers' in-memory prefixes (`names`: (theirs, ours) pairs) renamed."""
    key = key.removeprefix("codec_model.")
    for hf, ours in names:
        if key.startswith(hf):
            return ours + key[len(hf) :]
    return key


def check_streaming_codec(args: MimiArgs) -> None:
    """Refuse, in one line naming config.json, a codec this streaming Mimi does not run."""
    if not args.use_causal_conv:
        raise ConfigError("config.json: codec_config.use_causal_conv is false; streaming Mimi needs causal convs")
    if args.audio_channels != 1:
        raise ConfigError(f"config.json: codec_config.audio_channels is {args.audio_channels}; only mono is supported")
    if args.hidden_act != "gelu":
        raise ConfigError(f"config.json: codec_config.hidden_act {args.hidden_act!r} is not supported (gelu)")


class MimiEncoder(nn.Module):
    """Mimi's encoder half: float32 audio at 24 kHz -> int32 codes at 12.5 Hz.

    Parameters
    ----------
    args : MimiArgs
        The checkpoint's `codec_config`.
    """

    def __init__(self, args: MimiArgs):
        super().__init__()
        check_streaming_codec(args)
        self.args = args
        self.encoder = SeanetEncoder(args)
        self.encoder_transformer = EncoderTransformer(args)
        stride = round(args.encodec_frame_rate / args.frame_rate)
        # transformers always pads the downsample with "replicate", whatever pad_mode says.
        self.downsample = CausalConv1d(
            args.hidden_size, args.hidden_size, 2 * stride, stride=stride, bias=False, pad_mode="replicate"
        )
        self.quantizer = SplitResidualVectorQuantizer(args)
        convs = [m for _, m in self.named_modules() if isinstance(m, CausalConv1d)]
        for i, m in enumerate(convs):
            m.idx = i
        self.n_convs = len(convs)

    @property
    def frame_size(self) -> int:
        """Audio samples per code frame (1920 at 24 kHz)."""
        return self.args.frame_size

    def make_state(self, batch_size: int = 1, fixed: bool = False) -> MimiState:
        """A fresh stream: no audio seen, positions start at 0.

        `fixed=True` makes the layout `step` needs, a `MimiBatchState`: every buffer allocated at
        its steady-state size for `batch_size` rows (which `MimiBatchState.resize` grows and
        shrinks), rows that can start and stop independently."""
        if not fixed:
            return MimiState(
                batch_size=batch_size,
                conv=[None] * self.n_convs,
                kv=[WindowKVCache(self.args.sliding_window) for _ in self.encoder_transformer.layers],
            )
        convs = sorted((m for _, m in self.named_modules() if isinstance(m, CausalConv1d)), key=lambda m: m.idx)
        a = self.args
        return MimiBatchState(
            batch_size=batch_size,
            conv=[mx.zeros((batch_size, m.padding_total, m.in_ch)) for m in convs],
            kv=[
                RingKVCache(a.sliding_window, batch_size, a.num_attention_heads, a.head_dim)
                for _ in self.encoder_transformer.layers
            ],
            fresh_rows=np.ones(batch_size, bool),
        )

    def step(self, audio: mx.array, state: MimiBatchState, active: np.ndarray | None = None) -> mx.array:
        """Encode the next whole frames of some rows of a fixed-layout batch (the engine's call).

        Parameters
        ----------
        audio : mx.array
            float32 (B, k * frame_size): k frames for every row (anything for inactive rows).
        state : MimiBatchState
            From ``make_state(B, fixed=True)``; updated in place, lazily (evaluate
            `state.arrays` with the codes).
        active : np.ndarray, optional
            bool (B,): the rows this call feeds; the others keep their state. None: all.

        Returns
        -------
        mx.array
            int32 (B, k, num_quantizers), lazy; rows not active hold garbage. For each row, the
            codes are those `encode_step` gives for the same audio.
        """
        if audio.shape[1] % self.frame_size:
            raise ValueError(f"step: {audio.shape[1]} samples is not a whole number of {self.frame_size}-sample frames")
        B = audio.shape[0]
        active = np.ones(B, bool) if active is None else np.asarray(active, bool)
        partial = not active.all()
        # Rings big enough for this call's transformer positions before any state is kept.
        positions = audio.shape[1] // self.frame_size * round(self.args.encodec_frame_rate / self.args.frame_rate)
        for c in state.kv:
            c.reserve(positions)
        if partial:
            old_conv = list(state.conv)
            old_kv = [(c.keys, c.values, c.offsets.copy()) for c in state.kv]
        fresh = mx.array(state.fresh_rows)[:, None, None] if state.fresh_rows.any() else None
        codes = self._forward(audio, state, CallContext(fresh=fresh, views=audio.shape[1] == self.frame_size))
        state.fresh_rows = state.fresh_rows & ~active
        if partial:
            keep = mx.array(active)
            k3, k4 = keep[:, None, None], keep[:, None, None, None]
            state.conv = [mx.where(k3, new, old) for new, old in zip(state.conv, old_conv)]
            for c, (keys, values, offsets) in zip(state.kv, old_kv):
                c.keys, c.values = mx.where(k4, c.keys, keys), mx.where(k4, c.values, values)
                c.offsets = np.where(active, c.offsets, offsets)
        return codes

    def _forward(self, audio: mx.array, state: MimiState, ctx: CallContext) -> mx.array:
        x = self.encoder(audio[:, :, None], state, ctx)
        if x.shape[1]:
            x = self.encoder_transformer(x, state.kv)
        x = self.downsample(x, state, ctx)
        if x.shape[1] == 0:
            return mx.zeros((audio.shape[0], 0, self.args.num_quantizers), mx.int32)
        return self.quantizer.encode(x)

    def _run(self, audio: mx.array, state: MimiState, final: bool = False) -> mx.array:
        codes = self._forward(audio, state, CallContext(final=final))
        state.samples += audio.shape[1]
        state.frames += codes.shape[1]
        # Evaluate the carried state too: unevaluated, each step's graph would keep the last alive.
        mx.eval(codes, state.arrays)
        return codes

    def encode_step(self, audio_chunk, state: MimiState) -> mx.array:
        """Feed the next chunk of a stream; returns the codes of the frames it completed.

        Parameters
        ----------
        audio_chunk : mx.array or np.ndarray
            float (B, n) at 24 kHz, any n >= 0 (10 ms, 80 ms, 1 s, 1234 samples, ...); B must be
            the state's batch size.
        state : MimiState
            From `make_state(B)`; updated in place.

        Returns
        -------
        mx.array
            int32 (B, n_new_frames, num_quantizers): every 80 ms frame whose audio is now complete
            (possibly none). Concatenated over a stream these are exactly `encode(audio,
            pad_last=False)`, whatever the chunking.

        Raises
        ------
        ValueError
            Non-float samples, a shape other than (B, n), a batch size other than the state's
            (e.g. a (samples, channels) array), NaN/inf samples, or a stream already flushed.
        """
        audio = _as_audio(audio_chunk, "encode_step")
        if state.flushed:
            raise ValueError("encode_step: this stream was flushed; start a new one with make_state()")
        if audio.shape[0] != state.batch_size:
            raise ValueError(
                f"encode_step: chunk has batch {audio.shape[0]} but the state was made for {state.batch_size} "
                f"(shape {tuple(audio.shape)}; mono chunks are (batch, samples))"
            )
        if audio.shape[1] == 0:
            return mx.zeros((audio.shape[0], 0, self.args.num_quantizers), mx.int32)
        return self._run(audio, state)

    def flush(self, state: MimiState) -> mx.array:
        """End a stream the way transformers' `MimiModel.encode` ends a file: zero-pad the last,
        partial frame (if any audio is left over) and return its codes, (B, 0 or 1, num_quantizers).
        The state cannot be fed afterwards."""
        if state.flushed:
            raise ValueError("flush: this stream was already flushed")
        empty = mx.zeros((state.batch_size, 0), mx.float32)
        codes = self._run(empty, state, final=True)
        state.flushed = True
        return codes

    def encode(self, audio, pad_last: bool = True, chunk_seconds: float = 5.0) -> mx.array:
        """Encode whole signals offline.

        Parameters
        ----------
        audio : mx.array or np.ndarray
            float (B, samples) at 24 kHz, mono. float64/16 are converted to float32.
        pad_last : bool
            True (default): `ceil(samples / 1920)` frames, the last one from zero-padded audio,
            exactly transformers' `MimiModel.encode(x)`. False: `floor(samples / 1920)` frames,
            only complete ones, exactly what `KyutaiSpeechToTextForConditionalGeneration.generate`
            gets (it encodes through a conv padding cache, which drops the partial frame) and
            what streaming returns. The frames both give are identical.
        chunk_seconds : float
            The file goes through the network this much at a time, so memory stays bounded on
            long files (~170 MB of activations per second of chunk at full size); the codes do
            not depend on it beyond float rounding.

        Returns
        -------
        mx.array
            int32 codes (B, frames, num_quantizers).

        Raises
        ------
        ValueError
            Empty audio, non-float samples (int16 PCM: divide by 32768 first), a shape other than
            (B, samples) (stereo or (samples, channels) arrays included), NaN/inf samples.
        """
        audio = _as_audio(audio, "encode")
        B, n = audio.shape
        if n == 0:
            raise ValueError("encode: empty audio (0 samples)")
        if n <= 2 < B:
            raise ValueError(
                f"encode: audio of shape {tuple(audio.shape)} looks like (samples, channels); "
                "pass mono (batch, samples)"
            )
        state = self.make_state(B)
        step = max(self.frame_size, int(chunk_seconds * self.args.sampling_rate) // self.frame_size * self.frame_size)
        codes = [self._run(audio[:, i : i + step], state) for i in range(0, n, step)]
        if pad_last:
            codes.append(self.flush(state))
        return mx.concatenate(codes, axis=1)

    @staticmethod
    def sanitize(weights: dict) -> dict:
        """transformers codec keys (`codec_model.` already stripped) -> this module's names.

        `encoder.layers.{i}[.block.{j}].conv.weight` (out, in, k) -> `encoder.layers.{i}[.block.{j}].weight`
        (out, k, in), `downsample.conv.weight` -> `downsample.weight`, quantizer `input_proj.weight`
        (out, in, 1) -> (out, in); transformer keys keep their names, but for each layer's `q_proj`,
        `k_proj`, `v_proj`, fused into one `qkv_proj` (`lm.fuse_qkv`). Decoder, upsample, `output_proj`
        and `initialized` keys are dropped. transformers' in-memory names
        (`encoder.encoder_seanet.`, `encoder.encoder_transformer.`, `encoder.downsample.`) are
        accepted too. Idempotent: our own names pass through unchanged.
        """
        out = {}
        for k, v in weights.items():
            k = codec_key(k, ENCODER_NAMES)
            if k.startswith(("decoder.", "decoder_transformer.", "upsample.")):
                continue
            if k.endswith((".initialized", "output_proj.weight", "rotary_emb.inv_freq")):
                continue
            if ".conv." in k:
                k = k.replace(".conv.", ".")
                if k.endswith(".weight"):
                    v = v.transpose(0, 2, 1)
            elif k.endswith("input_proj.weight") and v.ndim == 3:
                v = v[..., 0]
            out[k] = v
        return fuse_qkv(out)

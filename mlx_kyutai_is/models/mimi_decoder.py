# Copyright © 2026 mlx-kyutai-is contributors
"""The decoder half of the Mimi codec: 12.5 Hz frames of discrete codes -> 24 kHz audio.

codes -> sum of each frame's codebook vectors (semantic and acoustic apart), output projections
(256 -> 512) -> stride-2 transposed depthwise conv (upsample, 25 Hz) -> 8-layer transformer (sliding
window, causal) -> SEANet decoder (transposed convolutions, strides 8, 6, 5, 4 -> 24 kHz), as
transformers' `MimiModel.decode`. Speech-to-text never needs it; `convert` keeps its weights in a
file of their own (`loading.DECODER_WEIGHTS_NAME`) so transcription neither loads nor pays for them.

Everything runs as a stream, as the encoder: causal convolutions keep their left context, each
transposed convolution keeps the part of its output that the next input still adds to (the
overlap), the transformer keeps a window of keys. A frame of codes gives exactly its 1920 samples
(transformers trims the transposed convolutions' whole overlap on the right), so streaming needs no
flush and any chunking gives what decoding the whole signal gives, but for float rounding.

The building blocks (causal convolutions, residual blocks, transformer, caches) are the encoder's
(`mimi.py`); the codebook vectors too, read from the encoder's quantizer by `codec.MimiCodec`.
"""

import mlx.core as mx
import mlx.nn as nn

from .config import ConfigError, MimiArgs
from .lm import fuse_qkv
from .mimi import (
    DECODER_NAMES,
    ELU,
    CallContext,
    CausalConv1d,
    EncoderTransformer,
    MimiState,
    ResnetBlock,
    WindowKVCache,
    _run_layers,
    check_streaming_codec,
    codec_key,
)


class CausalConvTranspose1d(nn.Module):
    """transformers' `MimiConvTranspose1d` (causal, `trim_right_ratio` 1) as a streaming convolution.

    Offline, transformers computes the whole transposed convolution, `(L - 1) * stride + kernel`
    steps for L inputs, and trims `kernel - stride` from the right: L * stride steps. Streaming, each
    call's L inputs give their transposed convolution, the first `kernel - stride` steps get the
    previous call's overlap added, the first L * stride steps are final and returned, and the rest
    (the overlap, before bias) is kept for the next call. Weights are MLX's (out, kernel, in / groups).

    Mimi's kernels are twice their stride, so each input step writes two blocks of `stride` output
    steps: the products come from one matmul (the SEANet layers, MLX's CPU `conv_transpose1d` is
    ~10x slower) or one elementwise product (the depthwise upsample), and the blocks are added with
    the next step's; other shapes use `mx.conv_transpose1d`.
    """

    def __init__(self, in_ch, out_ch, kernel_size, stride, groups=1, bias=True):
        super().__init__()
        if kernel_size < stride:
            raise ValueError(f"transposed conv kernel {kernel_size} shorter than its stride {stride}")
        self.weight = mx.zeros((out_ch, kernel_size, in_ch // groups))
        if bias:
            self.bias = mx.zeros((out_ch,))
        self.stride = stride
        self.groups = groups
        self.overlap = kernel_size - stride
        self.out_ch = out_ch
        self.idx = -1  # slot in MimiState.conv, set by MimiDecoder
        if kernel_size != 2 * stride:
            self.path = "conv"
        elif groups == 1:
            self.path = "matmul"
        elif groups == in_ch == out_ch:
            self.path = "depthwise"
        else:
            self.path = "conv"
        self._derived_from = None

    def _products(self) -> mx.array:
        """The weight as the fast path reads it, derived once per weight array: (in, kernel * out)
        for the matmul, (kernel, channels) for the depthwise product."""
        if self._derived_from is not self.weight:
            w = self.weight
            if self.path == "matmul":
                self._w = w.transpose(2, 1, 0).reshape(w.shape[2], -1)
            else:
                self._w = w[..., 0].T
            mx.eval(self._w)
            self._derived_from = w
        return self._w

    def _blocks(self, x: mx.array) -> tuple[mx.array, mx.array]:
        """Each input step's two output blocks, (B, L * stride, out) each."""
        B, L, _ = x.shape
        s = self.stride
        if self.path == "matmul":
            y = (x @ self._products()).reshape(B, L, 2, s, self.out_ch)
        else:
            y = (x[:, :, None, :] * self._products()).reshape(B, L, 2, s, self.out_ch)
        return y[:, :, 0].reshape(B, L * s, -1), y[:, :, 1].reshape(B, L * s, -1)

    def __call__(self, x: mx.array, state: MimiState, ctx: CallContext) -> mx.array:
        B, L, _ = x.shape
        if L == 0:
            return mx.zeros((B, 0, self.out_ch), x.dtype)
        carry = state.conv[self.idx]
        n = L * self.stride
        if self.path == "conv":
            y = mx.conv_transpose1d(x, self.weight, stride=self.stride, groups=self.groups)
            if carry is not None and self.overlap:
                y = mx.concatenate([y[:, : self.overlap] + carry, y[:, self.overlap :]], axis=1)
            state.conv[self.idx] = mx.contiguous(y[:, n:])
            y = y[:, :n]
        else:
            first, second = self._blocks(x)
            s = self.stride
            if carry is None:
                carry = mx.zeros((B, s, self.out_ch), x.dtype)
            y = first + mx.concatenate([carry, second[:, : n - s]], axis=1)
            state.conv[self.idx] = mx.contiguous(second[:, n - s :])
        return y + self.bias if "bias" in self else y


class SeanetDecoder(nn.Module):
    """transformers' `MimiDecoder`; `layers` keeps its indices so weight names match."""

    def __init__(self, args: MimiArgs):
        super().__init__()
        nf, pm = args.num_filters, args.pad_mode
        scale = 2 ** len(args.upsampling_ratios)
        layers = [CausalConv1d(args.hidden_size, scale * nf, args.kernel_size, pad_mode=pm)]
        for ratio in args.upsampling_ratios:
            dim = scale * nf
            layers += [ELU(), CausalConvTranspose1d(dim, dim // 2, 2 * ratio, ratio)]
            for j in range(args.num_residual_layers):
                layers.append(ResnetBlock(args, dim // 2, [args.dilation_growth_rate**j, 1]))
            scale //= 2
        layers += [ELU(), CausalConv1d(nf, args.audio_channels, args.last_kernel_size, pad_mode=pm)]
        self.layers = layers

    def __call__(self, x, state, ctx):
        return _run_layers(self.layers, x, state, ctx)


class OutputProjection(nn.Module):
    """One residual quantizer's output side: its `output_proj` (a 1x1 conv in transformers, a
    linear map per frame here), absent when the codebook width is the model width."""

    def __init__(self, args: MimiArgs):
        super().__init__()
        if args.vector_quantization_hidden_dimension != args.hidden_size:
            self.output_proj = nn.Linear(args.vector_quantization_hidden_dimension, args.hidden_size, bias=False)

    def __call__(self, x):
        return self.output_proj(x) if "output_proj" in self else x


class QuantizerOutput(nn.Module):
    """The split quantizer's output side, under transformers' names."""

    def __init__(self, args: MimiArgs):
        super().__init__()
        self.semantic_residual_vector_quantizer = OutputProjection(args)
        self.acoustic_residual_vector_quantizer = OutputProjection(args)


class MimiDecoder(nn.Module):
    """Mimi's decoder half: int codes at 12.5 Hz -> float32 audio at 24 kHz.

    Holds the decoder-only weights (`decoder.*`, `decoder_transformer.*`, `upsample.*`, the
    quantizer's `output_proj`s); the codebook vectors are the encoder's and come in as `codewords`.

    Parameters
    ----------
    args : MimiArgs
        The checkpoint's `codec_config`.
    """

    def __init__(self, args: MimiArgs):
        super().__init__()
        check_streaming_codec(args)
        if args.trim_right_ratio != 1.0:
            raise ConfigError(
                f"config.json: codec_config.trim_right_ratio {args.trim_right_ratio} is not supported by the "
                "decoder (1.0: the causal trim)"
            )
        if args.hidden_size % args.upsample_groups:
            raise ConfigError(
                f"config.json: codec_config.upsample_groups ({args.upsample_groups}) does not divide "
                f"hidden_size ({args.hidden_size})"
            )
        self.args = args
        self.quantizer = QuantizerOutput(args)
        stride = round(args.encodec_frame_rate / args.frame_rate)
        self.upsample = CausalConvTranspose1d(
            args.hidden_size, args.hidden_size, 2 * stride, stride, groups=args.upsample_groups, bias=False
        )
        # The same transformer as the encoder's (transformers builds both from `MimiTransformerModel`).
        self.decoder_transformer = EncoderTransformer(args)
        self.decoder = SeanetDecoder(args)
        convs = [m for _, m in self.named_modules() if isinstance(m, (CausalConv1d, CausalConvTranspose1d))]
        for i, m in enumerate(convs):
            m.idx = i
        self.n_convs = len(convs)

    def make_state(self, batch_size: int = 1) -> MimiState:
        """A fresh stream: no codes seen, positions start at 0."""
        return MimiState(
            batch_size=batch_size,
            conv=[None] * self.n_convs,
            kv=[WindowKVCache(self.args.sliding_window) for _ in self.decoder_transformer.layers],
        )

    def latents(self, codes: mx.array, codewords: mx.array) -> mx.array:
        """codes (B, T, K) int, K <= num_quantizers -> latents (B, T, hidden), as transformers'
        `MimiSplitResidualVectorQuantizer.decode`: the semantic codebooks' vectors summed and
        projected, plus the acoustic ones' likewise.

        `codewords` is every codebook's vectors stacked, (num_quantizers * codebook_size, dim).
        """
        K = codes.shape[-1]
        size = self.args.codebook_size
        offsets = mx.arange(K, dtype=mx.int32) * size
        vectors = codewords[codes.astype(mx.int32) + offsets]  # (B, T, K, dim)
        n_sem = self.args.num_semantic_quantizers
        out = self.quantizer.semantic_residual_vector_quantizer(vectors[:, :, :n_sem].sum(axis=2))
        if K > n_sem:
            out = out + self.quantizer.acoustic_residual_vector_quantizer(vectors[:, :, n_sem:].sum(axis=2))
        return out

    def __call__(self, latents: mx.array, state: MimiState) -> mx.array:
        """The next latents (B, T, hidden) of a stream -> their audio, (B, T * frame_size)."""
        ctx = CallContext()
        x = self.upsample(latents, state, ctx)
        if x.shape[1]:
            x = self.decoder_transformer(x, state.kv)
        return self.decoder(x, state, ctx)[..., 0]

    def sanitize(self, weights: dict) -> dict:
        """The decoder's tensors of a checkpoint, under this module's names; everything else is left out.

        transformers' file names (`codec_model.` prefix optional): `decoder.layers.{i}[.block.{j}].conv.X`
        -> `decoder.layers.{i}[.block.{j}].X`, conv weights (out, in, k) -> (out, k, in), transposed
        conv weights (in, out / groups, k) -> (out, k, in / groups); `upsample.conv.weight` likewise;
        `decoder_transformer.*` as is, but q/k/v fused into `qkv_proj` (`lm.fuse_qkv`); the quantizer's
        `output_proj.weight` (out, in, 1) -> (out, in). transformers' in-memory names
        (`decoder.decoder_seanet.`, `decoder.decoder_transformer.`, `decoder.upsample.`) are accepted
        too. Idempotent: our own names pass through unchanged.
        """
        transposed = {
            f"decoder.layers.{i}." for i, m in enumerate(self.decoder.layers) if isinstance(m, CausalConvTranspose1d)
        }
        groups = self.args.upsample_groups
        out = {}
        for k, v in weights.items():
            k = codec_key(k, DECODER_NAMES)
            proj = k.startswith("quantizer.") and k.endswith(".output_proj.weight")
            if not (k.startswith(("decoder.", "decoder_transformer.", "upsample.")) or proj):
                continue
            if k.endswith((".initialized", "rotary_emb.inv_freq")):
                continue
            if ".conv." in k:
                k = k.replace(".conv.", ".")
                if k.endswith(".weight"):
                    if k.startswith("upsample."):
                        v = _transposed_weight(v, groups)
                    elif any(k.startswith(p) for p in transposed):
                        v = _transposed_weight(v, 1)
                    else:
                        v = v.transpose(0, 2, 1)
            elif proj and v.ndim == 3:
                v = v[..., 0]
            out[k] = v
        return fuse_qkv(out)


def _transposed_weight(w: mx.array, groups: int) -> mx.array:
    """torch's ConvTranspose1d weight (in, out / groups, k) -> MLX's (out, k, in / groups)."""
    cin, cout_g, k = w.shape
    w = w.reshape(groups, cin // groups, cout_g, k).transpose(0, 2, 3, 1)
    return w.reshape(groups * cout_g, k, cin // groups)

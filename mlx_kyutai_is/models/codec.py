# Copyright © 2026 mlx-kyutai-is contributors
"""The whole Mimi codec, as the model card's `moshi` snippet uses it: audio -> codes -> audio.

    from mlx_kyutai_is import load_codec
    codec = load_codec("mideind/kyutai-stt-1b-is-en")    # or stt.codec, from a loaded model
    codes = codec.encode(wav, num_codebooks=8)          # int32 (1, 8, frames) at 12.5 Hz
    audio = codec.decode(codes)                          # float32 (1, frames * 1920) at 24 kHz

To hear what the model hears (the speech-to-text model reads 32 codebooks), or to use Mimi as a
speech codec (8 codebooks x 11 bits x 12.5 Hz = 1.1 kbps). Codes are (batch, num_codebooks, frames),
the layout of transformers' `MimiModel` and moshi. Both directions also stream (`encode_stream`,
`decode_stream`) with exactly the whole-signal result, in memory that does not grow with the length.
"""

import json
from pathlib import Path

import mlx.core as mx
import numpy as np

from .._version import __version__
from ..errors import Error
from .config import ModelArgs
from .loading import (
    DECODER_WEIGHTS_NAME,
    MARKER,
    ModelLoadError,
    _load_file,
    load_weights,
    resolve_model_path,
)
from .mimi import MimiEncoder, MimiState
from .mimi_decoder import MimiDecoder

# Whole signals go through the decoder this much at a time (as the encoder's `chunk_seconds`):
# memory stays bounded on long inputs; the audio does not depend on it beyond float rounding.
DECODE_CHUNK_SECONDS = 5.0


class CodecError(Error, ValueError):
    """Codes or audio the codec cannot take, or a model without the decoder; one line."""


def _as_codes(codes, name: str, num_quantizers: int, codebook_size: int) -> mx.array:
    """Validate integer codes (B, K, T), or (K, T) for one signal; returns int32 (B, T, K), the
    decoder's layout."""
    if isinstance(codes, mx.array):
        if not mx.issubdtype(codes.dtype, mx.integer):
            raise CodecError(f"{name}: codes must be integers, got {codes.dtype}")
        a = np.array(codes)
    else:
        a = np.asarray(codes)
        if a.dtype.kind not in "iu":
            raise CodecError(f"{name}: codes must be integers, got {a.dtype}")
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise CodecError(
            f"{name}: expected codes of shape (batch, num_codebooks, frames) or (num_codebooks, frames), "
            f"got {tuple(a.shape)}"
        )
    B, K, _ = a.shape
    if B == 0:
        raise CodecError(f"{name}: empty batch (shape {tuple(a.shape)})")
    if not 1 <= K <= num_quantizers:
        raise CodecError(
            f"{name}: {K} codebooks (shape {tuple(a.shape)}), the codec has 1 to {num_quantizers} "
            "(codes are (batch, num_codebooks, frames))"
        )
    if a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi >= codebook_size:
            bad = lo if lo < 0 else hi
            b, k, t = (int(i[0]) for i in np.nonzero(a == bad))
            raise CodecError(
                f"{name}: code {bad} at codebook {k}, frame {t}{f' of item {b}' if B > 1 else ''} is out of "
                f"range (0 to {codebook_size - 1})"
            )
    return mx.array(a.transpose(0, 2, 1).astype(np.int32))


def _as_audio(audio, name: str) -> mx.array:
    """(samples,), (B, samples) or (B, 1, samples) float audio -> (B, samples); the encoder checks the rest."""
    if isinstance(audio, (mx.array, np.ndarray)):
        if audio.ndim == 1:
            return audio[None]
        if audio.ndim == 3:
            if audio.shape[1] != 1:
                raise CodecError(f"{name}: expected mono audio (batch, 1, samples), got shape {tuple(audio.shape)}")
            return audio[:, 0]
    return audio


class EncodeStream:
    """Audio in, codes out, a chunk at a time (`MimiCodec.encode_stream`)."""

    def __init__(self, codec: "MimiCodec", batch_size: int, num_codebooks: int):
        self.codec = codec
        self.num_codebooks = num_codebooks
        self.state = codec.encoder.make_state(batch_size)

    def feed(self, audio) -> mx.array:
        """float (B, n) at 24 kHz (or (n,) for batch 1), any n -> int32 codes (B, K, frames) of every
        frame the audio completed (possibly none). Raises ValueError for bad audio."""
        audio = _as_audio(audio, "encode_stream")
        return self._codes(self.codec.encoder.encode_step(audio, self.state))

    def flush(self) -> mx.array:
        """End the stream as `encode` ends a signal: the last, zero-padded partial frame's codes
        (B, K, 0 or 1). The stream cannot be fed afterwards."""
        return self._codes(self.codec.encoder.flush(self.state))

    def _codes(self, codes: mx.array) -> mx.array:
        return codes[:, :, : self.num_codebooks].transpose(0, 2, 1)


class DecodeStream:
    """Codes in, audio out, a chunk at a time (`MimiCodec.decode_stream`)."""

    def __init__(self, codec: "MimiCodec", batch_size: int):
        self.codec = codec
        self.state: MimiState = codec.decoder.make_state(batch_size)

    def feed(self, codes) -> mx.array:
        """int codes (B, K, n) (or (K, n) for batch 1), any n, K may vary -> float32 audio
        (B, n * frame_size), evaluated. Concatenated over a stream, exactly `decode` of all codes
        (but for float rounding)."""
        codec = self.codec
        codes = _as_codes(codes, "decode_stream", codec.args.num_quantizers, codec.args.codebook_size)
        if codes.shape[0] != self.state.batch_size:
            raise CodecError(
                f"decode_stream: codes for batch {codes.shape[0]} but the stream was made for {self.state.batch_size}"
            )
        return self._run(codes)

    def _run(self, codes: mx.array) -> mx.array:
        dec = self.codec.decoder
        audio = dec(dec.latents(codes, self.codec.codewords), self.state)
        self.state.frames += codes.shape[1]
        self.state.samples += audio.shape[1]
        # Evaluate the carried state too, or each step's graph would keep the last one alive.
        mx.eval(audio, self.state.arrays)
        return audio


class MimiCodec:
    """Mimi: 24 kHz mono audio <-> codes at 12.5 Hz, float32, on MLX.

    Parameters
    ----------
    encoder : MimiEncoder
        The encoder half (and the codebooks both halves use); a loaded model's `model.mimi` is shared, not copied.
    decoder : MimiDecoder, optional
        The decoder half; without it the codec encodes only and `decode` says why (`missing`).
    num_codebooks : int, optional
        Codebooks `encode` returns by default: all (32, what the speech-to-text model reads).
    missing : str, optional
        Why there is no decoder, for the error `decode` raises.
    """

    def __init__(
        self,
        encoder: MimiEncoder,
        decoder: MimiDecoder | None = None,
        num_codebooks: int | None = None,
        missing: str = "no Mimi decoder weights were loaded",
    ):
        self.encoder = encoder
        self.decoder = decoder
        self.args = encoder.args
        self.missing = missing
        self.num_codebooks = self.args.num_quantizers
        if num_codebooks is not None:
            self.set_num_codebooks(num_codebooks)
        self._codewords = None

    @property
    def sample_rate(self) -> int:
        """Audio samples per second (24000)."""
        return self.args.sampling_rate

    @property
    def frame_size(self) -> int:
        """Audio samples per code frame (1920 = 80 ms)."""
        return self.args.frame_size

    @property
    def frame_rate(self) -> float:
        """Code frames per second (12.5)."""
        return self.args.frame_rate

    @property
    def has_decoder(self) -> bool:
        return self.decoder is not None

    def set_num_codebooks(self, n: int) -> None:
        """Codebooks `encode` returns from now on (as moshi's `mimi.set_num_codebooks`)."""
        self.num_codebooks = self._check_num_codebooks(n)

    def _check_num_codebooks(self, n) -> int:
        top = self.args.num_quantizers
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= top:
            raise CodecError(f"num_codebooks must be an integer from 1 to {top}, got {n!r}")
        return int(n)

    @property
    def codewords(self) -> mx.array:
        """Every codebook's vectors stacked, (num_quantizers * codebook_size, dim): the encoder's."""
        q = self.encoder.quantizer
        books = [
            layer.codebook
            for rvq in (q.semantic_residual_vector_quantizer, q.acoustic_residual_vector_quantizer)
            for layer in rvq.layers
        ]
        src = [cb.codewords()[0] for cb in books]
        if self._codewords is None or any(a is not b for a, b in zip(self._codewords[0], src)):
            table = mx.concatenate(src)
            mx.eval(table)
            self._codewords = (src, table)
        return self._codewords[1]

    def check_codes(self, codes, name: str = "codes") -> np.ndarray:
        """`codes` validated as `decode` takes them: int (batch, num_codebooks, frames) ((num_codebooks,
        frames) for one signal), 1 to 32 codebooks, values in [0, codebook_size). Returns them as int32
        (batch, num_codebooks, frames); raises `CodecError` naming `name` and what is wrong."""
        return np.array(_as_codes(codes, name, self.args.num_quantizers, self.args.codebook_size)).transpose(0, 2, 1)

    def _need_decoder(self, name: str) -> MimiDecoder:
        if self.decoder is None:
            raise CodecError(f"{name}: {self.missing}")
        return self.decoder

    def encode(self, audio, num_codebooks: int | None = None) -> mx.array:
        """Encode whole signals, exactly as transformers' `MimiModel.encode`.

        Parameters
        ----------
        audio : mx.array or np.ndarray
            float at 24 kHz, mono: (samples,), (batch, samples) or (batch, 1, samples).
        num_codebooks : int, optional
            1 to 32; by default the codec's (`set_num_codebooks`, 32 unless set). The first K
            codebooks of 32 are exactly the codes of K: the quantizer is residual.

        Returns
        -------
        mx.array
            int32 codes (batch, num_codebooks, ceil(samples / 1920)); the last frame from zero-padded audio.

        Raises
        ------
        ValueError
            Empty, non-float, NaN/inf or non-mono audio; a bad `num_codebooks` (`CodecError`).
        """
        k = self.num_codebooks if num_codebooks is None else self._check_num_codebooks(num_codebooks)
        codes = self.encoder.encode(_as_audio(audio, "encode"))
        return codes[:, :, :k].transpose(0, 2, 1)

    def decode(self, codes) -> mx.array:
        """Decode whole signals, as transformers' `MimiModel.decode` (within float rounding).

        Parameters
        ----------
        codes : mx.array or np.ndarray
            int (batch, num_codebooks, frames), or (num_codebooks, frames) for one signal; any
            num_codebooks from 1 to 32 (the first K codebooks, as `encode` gives them).

        Returns
        -------
        mx.array
            float32 audio (batch, frames * 1920) at 24 kHz.

        Raises
        ------
        CodecError
            No decoder, or codes of the wrong type, shape or range, or no frames.
        """
        self._need_decoder("decode")
        a = self.args
        codes = _as_codes(codes, "decode", a.num_quantizers, a.codebook_size)
        if codes.shape[1] == 0:
            raise CodecError("decode: no frames (codes of shape (batch, num_codebooks, 0))")
        stream = DecodeStream(self, codes.shape[0])
        step = max(1, round(DECODE_CHUNK_SECONDS * self.frame_rate))
        return mx.concatenate([stream._run(codes[:, i : i + step]) for i in range(0, codes.shape[1], step)], axis=1)

    def encode_stream(self, batch_size: int = 1, num_codebooks: int | None = None) -> EncodeStream:
        """A stream of audio chunks in, codes out: `feed(chunk)` any number of times, then `flush()`.
        Concatenated, the codes are exactly `encode`'s."""
        k = self.num_codebooks if num_codebooks is None else self._check_num_codebooks(num_codebooks)
        return EncodeStream(self, batch_size, k)

    def decode_stream(self, batch_size: int = 1) -> DecodeStream:
        """A stream of code chunks in (a frame, or any number), audio out: `feed(codes)`; no flush
        is needed (each frame gives its 1920 samples at once). Concatenated, exactly `decode`'s audio."""
        self._need_decoder("decode_stream")
        return DecodeStream(self, batch_size)


def _decoder_for(path: Path, args, weights: dict | None) -> tuple[MimiDecoder | None, str]:
    """The decoder of a model directory (or None and why not): `DECODER_WEIGHTS_NAME` in a directory
    written by `convert`, the `codec_model.decoder*` tensors of a Hugging Face checkpoint."""
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))  # valid: ModelArgs read it
    converted = MARKER in config
    file = path / DECODER_WEIGHTS_NAME
    try:
        decoder = MimiDecoder(args)
    except ValueError as e:
        return None, f"{path}: {e}"
    if file.is_file():
        raw = _load_file(file)
    elif converted:
        version = (config.get(MARKER) or {}).get("version", "an older version")
        return None, (
            f"{path}: has no Mimi decoder (converted by mlx-kyutai-is {version}, which kept only the encoder "
            f"that transcription needs); convert the Hugging Face checkpoint again with mlx-kyutai-is "
            f"{__version__} to decode"
        )
    else:
        raw = weights if weights is not None else load_weights(path)
    sanitized = decoder.sanitize(raw)
    if not sanitized:
        where = file if file.is_file() else path
        return None, f"{where}: no Mimi decoder weights in the checkpoint (codec_model.decoder.*)"
    try:
        decoder.load_weights([(k, v.astype(mx.float32)) for k, v in sanitized.items()], strict=True)
    except ValueError as e:
        where = file if file.is_file() else path
        raise ModelLoadError(f"{where}: the Mimi decoder's weights do not fit its config ({str(e).strip()[:200]})") from None
    decoder.eval()
    mx.eval(decoder.parameters())
    return decoder, ""


def load_codec(path_or_repo, encoder: MimiEncoder | None = None) -> MimiCodec:
    """The Mimi codec of a checkpoint: a Hugging Face directory or repo id, or a directory written
    by `convert`. Only the codec's weights are read, never the language model's.

    Parameters
    ----------
    path_or_repo : str or Path
    encoder : MimiEncoder, optional
        A loaded model's encoder (`model.mimi`) to share instead of loading it again.

    Returns
    -------
    MimiCodec
        With its decoder where the directory has one; without, it encodes, and `decode` raises
        `CodecError` saying why (e.g. a directory converted before the decoder was kept).

    Raises
    ------
    ModelLoadError, ConfigError
        One line naming the directory or file and the problem.
    """
    path = resolve_model_path(path_or_repo)
    args = ModelArgs.from_file(path).mimi
    weights = None
    if encoder is None:
        weights = load_weights(path)  # lazy: only the tensors used below are read
        try:
            encoder = MimiEncoder(args)
        except ValueError as e:
            raise ModelLoadError(f"{path}: {e}") from None
        codec = {k.removeprefix("codec_model."): v for k, v in weights.items() if k.startswith("codec_model.")}
        if not codec:  # a converted directory: the encoder is under `mimi.`
            codec = {k.removeprefix("mimi."): v for k, v in weights.items() if k.startswith("mimi.")}
        try:
            encoder.load_weights([(k, v.astype(mx.float32)) for k, v in MimiEncoder.sanitize(codec).items()], strict=True)
        except ValueError as e:
            raise ModelLoadError(f"{path}: the Mimi encoder's weights do not fit its config ({str(e).strip()[:200]})") from None
        encoder.eval()
        mx.eval(encoder.parameters())
    decoder, missing = _decoder_for(path, args, weights)
    return MimiCodec(encoder, decoder, missing=missing or "no Mimi decoder weights were loaded")

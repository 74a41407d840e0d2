# Copyright © 2026 mlx-kyutai-is contributors
"""The input door: every array of samples (API users, live streams, decoded files) becomes 1-D
float32 mono at the model rate here, with one set of rules.

- Channels are averaged to mono; 2-D arrays have their channels on the shorter axis.
- Integer PCM is scaled to [-1, 1]; float16/float64/bfloat16 become float32.
- NaN / inf samples are replaced by 0 (silence) with one `AudioWarning` per input, so a damaged
  recording still gets a transcript.
- Values outside [-1, 1] in float input are kept as they are (no clipping, no normalisation).
"""

import warnings

import mlx.core as mx
import numpy as np
import soxr

from ..errors import Error

# Mimi's rate: the default for callers that have no model at hand (the package always passes the
# model's own, `ModelArgs.sample_rate`).
SAMPLE_RATE = 24_000
MAX_CHANNELS = 64  # a 2-D array whose shorter axis is longer than this is not (frames, channels)
RESAMPLE_QUALITY = "HQ"  # soxr quality for all resampling; one-shot and streaming agree exactly


class AudioError(Error, ValueError):
    """Audio that cannot be used; the one-line message names the file (or "audio array") and the problem."""


class AudioWarning(UserWarning):
    """Audio that was used after a repair (non-finite samples, truncated or unfinalised file)."""


class _Cleaner:
    """Replaces non-finite samples with 0, warning once per input."""

    def __init__(self, name: str):
        self.name, self.warned = name, False

    def __call__(self, x: np.ndarray, offset_s: float | None = None) -> np.ndarray:
        bad = ~np.isfinite(x)
        if not bad.any():
            return x
        if not self.warned:
            where = "" if offset_s is None else f", first near {offset_s:.2f} s"
            warnings.warn(
                f"{self.name}: non-finite samples (NaN/inf) replaced by silence{where}",
                AudioWarning,
                stacklevel=2,
            )
            self.warned = True
        return np.where(bad, np.float32(0), x).astype(np.float32, copy=False)


def _downmix(x: np.ndarray) -> np.ndarray:
    """(frames, channels) -> (frames,) float32 by the mean; row-wise, so blockwise == whole."""
    if x.shape[1] == 1:
        return np.ascontiguousarray(x[:, 0], dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # huge samples: inf, cleaned by the caller
        return x.mean(axis=1, dtype=np.float32)


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, mx.array) and x.dtype == mx.bfloat16:  # numpy has no bfloat16
        x = x.astype(mx.float32)
    return np.asarray(x)


def prepare_array(x, sr_in: int | None = None, sr: int = SAMPLE_RATE, allow_empty: bool = False) -> np.ndarray:
    """Turn a numpy/MLX array (or list) of samples into float32 mono at `sr`.

    Parameters
    ----------
    x : array-like
        1-D samples, or 2-D multichannel audio. The **shorter axis is the channel axis**:
        (frames, channels) as soundfile returns it and (channels, frames) as torch/librosa use both
        work; a shorter axis longer than `MAX_CHANNELS` is refused as ambiguous. Integer samples are
        scaled to [-1, 1] (signed by 2**(bits-1); unsigned around their midpoint, like 8-bit WAV);
        float16/float64/bfloat16 become float32.
    sr_in : int, optional
        Rate of `x`; resampled (soxr, high quality) when it differs from `sr`. None means `x` is
        already at `sr`.
    sr : int
        Output sample rate (the model's).
    allow_empty : bool
        Return an empty array for empty input instead of raising (a live stream's empty chunk).

    Returns
    -------
    np.ndarray
        1-D float32, a new array (the input is never modified).

    Raises
    ------
    AudioError
        Empty input, more than two dimensions, ambiguous 2-D shape, or a non-numeric dtype.
    """
    a = _to_numpy(x)
    if a.dtype.kind not in "biuf" or a.dtype.kind == "b":
        raise AudioError(f"audio array: unsupported dtype {a.dtype} (expected float or integer samples)")
    if a.ndim == 0 or a.ndim > 2:
        raise AudioError(f"audio array: expected 1-D samples or 2-D (frames, channels), got shape {a.shape}")
    if a.ndim == 2:
        if min(a.shape) > MAX_CHANNELS:
            raise AudioError(
                f"audio array: ambiguous shape {a.shape}; pass 1-D mono or (frames, channels) "
                f"with at most {MAX_CHANNELS} channels"
            )
        if a.shape[0] < a.shape[1]:
            a = a.T  # (channels, frames) -> (frames, channels)
    if a.size == 0 and allow_empty:
        return np.zeros(0, np.float32)
    if a.size == 0:
        raise AudioError(f"audio array: empty audio (shape {a.shape})")
    if a.dtype.kind == "i":
        a = (a.astype(np.float64) / float(2 ** (8 * a.dtype.itemsize - 1))).astype(np.float32)
    elif a.dtype.kind == "u":
        half = float(2 ** (8 * a.dtype.itemsize - 1))
        a = ((a.astype(np.float64) - half) / half).astype(np.float32)
    else:
        a = a.astype(np.float32)  # always a copy: callers keep their array
    a = a.reshape(len(a), -1)
    clean = _Cleaner("audio array")
    with np.errstate(over="ignore", invalid="ignore"):
        y = _downmix(clean(a))
        if sr_in is not None and sr_in != sr:
            if sr_in <= 0:
                raise AudioError(f"audio array: invalid sample rate {sr_in}")
            y = soxr.resample(y, sr_in, sr, quality=RESAMPLE_QUALITY)
    # Huge finite samples can overflow to inf in the mean or the resampler: clean again.
    return np.ascontiguousarray(clean(y), dtype=np.float32)

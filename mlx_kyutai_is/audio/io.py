# Copyright © 2026 mlx-kyutai-is contributors
"""Reading audio: files, stdin and pipes in, 1-D float32 mono at the requested rate out.

Decoding is done by libsndfile (`soundfile`: wav, flac, ogg/vorbis, opus, mp3, aiff, ...), resampling by
`soxr` (high quality), so no ffmpeg is needed. Every function takes the target rate as an argument:
the model's rate lives in its config (`ModelArgs.sample_rate`).

Policies (the same for files, stdin and arrays, see `prepare.py` for the samples' rules):

- A truncated WAV (its header promises more data than the file holds: an interrupted copy or
  recording) is decoded as far as it goes, with an `AudioWarning`. A WAV whose header was never
  finalised (data size 0 or 0xFFFFFFFF, as left by a killed recorder or written to a pipe) is read
  to the end of the file. Anything libsndfile cannot open or decode raises `AudioError`.
- Zero-length audio raises `AudioError`.
"""

import io
import os
import stat
import struct
import sys
import warnings
from collections.abc import Iterator

import numpy as np
import soundfile as sf
import soxr

from .prepare import (
    RESAMPLE_QUALITY,
    SAMPLE_RATE,
    AudioError,
    AudioWarning,
    _Cleaner,
    _downmix,
)

BLOCK_SECONDS = 1.0  # default block length of `iter_audio_blocks` (input seconds)


# --------------------------------------------------------------------------------------------
# Sources: each yields (frames, channels) float32 blocks at the file's own rate.


class _SndSource:
    """A libsndfile-readable file, path or in-memory buffer."""

    def __init__(self, file, name: str):
        self.name = name
        try:
            self.f = sf.SoundFile(file)
        except sf.LibsndfileError as e:
            raise AudioError(_unreadable(name, e.error_string)) from None
        except (RuntimeError, TypeError) as e:  # soundfile raises these for some malformed input
            raise AudioError(_unreadable(name, str(e))) from None
        self.samplerate = self.f.samplerate
        self.channels = self.f.channels
        self.frames = self.f.frames

    def blocks(self, n: int) -> Iterator[np.ndarray]:
        try:
            while True:
                try:
                    x = self.f.read(n, dtype="float32", always_2d=True)
                except sf.LibsndfileError as e:
                    raise AudioError(f"{self.name}: decoding failed ({e.error_string})") from None
                except RuntimeError as e:
                    raise AudioError(f"{self.name}: decoding failed ({e})") from None
                if len(x) == 0:
                    return
                yield x
        finally:
            self.f.close()

    def close(self):
        self.f.close()


def _unreadable(name: str, why: str) -> str:
    known = name == "<stdin>" or "not recognised" not in why
    hint = "" if known else f"; convert it first, e.g. `ffmpeg -i {name} out.wav`"
    return f"{name}: unsupported or unreadable audio file ({why.strip().rstrip('.')}){hint}"


# Minimal RIFF/WAVE reader for pipes (libsndfile needs to seek) and for unfinalised headers.
_WAV_PCM, _WAV_FLOAT, _WAV_EXTENSIBLE = 1, 3, 0xFFFE


def _unknown_size(size: int) -> bool:
    """Data sizes written by recorders that could not seek back to fix the header: 0, or a placeholder
    near 2**31 or 2**32 (sox writes 0x7ffff000, arecord 0x7fffffff, ffmpeg 0xffffffff)."""
    return size == 0 or size >= 0x7FFF0000


class _WavHeader:
    def __init__(self, tag, channels, samplerate, bits, block_align, data_offset, data_size):
        self.tag, self.channels, self.samplerate = tag, channels, samplerate
        self.bits, self.block_align = bits, block_align
        self.data_offset, self.data_size = data_offset, data_size

    @property
    def supported(self) -> bool:
        if self.channels < 1 or self.samplerate < 1 or self.block_align != self.channels * self.bits // 8:
            return False
        if self.tag == _WAV_PCM:
            return self.bits in (8, 16, 24, 32)
        return self.tag == _WAV_FLOAT and self.bits in (32, 64)


def _read_exact(stream, n: int) -> bytes:
    """Read n bytes, or fewer only at end of stream (pipes may return short reads)."""
    parts, got = [], 0
    while got < n:
        b = stream.read(n - got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def _parse_wav_header(stream) -> tuple["_WavHeader | None", bytes]:
    """Read a RIFF/WAVE header up to the start of the `data` payload, sequentially (no seeks).

    Returns (header, or None if this is not a plain RIFF/WAVE stream; every byte consumed), so that a
    caller can hand the consumed bytes to another decoder.
    """
    consumed = bytearray()

    def take(n):
        b = _read_exact(stream, n)
        consumed.extend(b)
        return b

    head = take(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None, bytes(consumed)
    fmt = None
    while True:
        chunk = take(8)
        if len(chunk) < 8:
            return None, bytes(consumed)
        cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if cid == b"data":
            if fmt is None:
                return None, bytes(consumed)
            tag, ch, rate, bits, align = fmt
            data_size = None if _unknown_size(size) else size
            return _WavHeader(tag, ch, rate, bits, align, len(consumed), data_size), bytes(consumed)
        if size > 1 << 24:  # a non-data chunk this large is garbage, not a header
            return None, bytes(consumed)
        body = take(size + (size & 1))
        if len(body) < size:
            return None, bytes(consumed)
        if cid == b"fmt ":
            if size < 16:
                return None, bytes(consumed)
            tag, ch, rate, _, align, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == _WAV_EXTENSIBLE and size >= 26:
                tag = struct.unpack("<H", body[24:26])[0]  # first two bytes of the sub-format GUID
            fmt = (tag, ch, rate, bits, align)


def _pcm_to_float(raw: bytes, h: _WavHeader) -> np.ndarray:
    """Little-endian WAV sample bytes -> float32 (frames, channels), scaled as libsndfile does."""
    if h.tag == _WAV_FLOAT:
        with np.errstate(over="ignore", invalid="ignore"):  # beyond float32 -> inf, cleaned with a warning
            x = np.frombuffer(raw, dtype="<f4" if h.bits == 32 else "<f8").astype(np.float32)
    elif h.bits == 8:  # WAV 8-bit is unsigned
        x = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif h.bits == 16:
        x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif h.bits == 24:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = (b[:, 0] << 8) | (b[:, 1] << 16) | (b[:, 2] << 24)  # sign lands in bit 31
        x = (v >> 8).astype(np.float32) / 8388608.0
    else:
        x = (np.frombuffer(raw, dtype="<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    return x.reshape(-1, h.channels)


class _WavStreamSource:
    """Reads the data of a parsed WAV header from a stream, with no seeks (stdin, unfinalised files)."""

    def __init__(self, stream, header: _WavHeader, name: str, owned: bool = False):
        self.stream, self.h, self.name, self.owned = stream, header, name, owned
        self.samplerate, self.channels = header.samplerate, header.channels
        self.frames = None if header.data_size is None else header.data_size // header.block_align

    def blocks(self, n: int) -> Iterator[np.ndarray]:
        h, left = self.h, self.h.data_size
        try:
            while left is None or left > 0:
                want = n * h.block_align if left is None else min(n * h.block_align, left)
                raw = _read_exact(self.stream, want)
                whole = len(raw) - len(raw) % h.block_align
                if whole:
                    yield _pcm_to_float(raw[:whole], h)
                if left is not None:
                    left -= len(raw)
                if len(raw) < want:
                    if left is not None and left > 0:
                        got = (h.data_size - left) // h.block_align
                        _warn_truncated(self.name, h.data_size // h.block_align, got)
                    return
        finally:
            self.close()

    def close(self):
        if self.owned:
            self.stream.close()


def _warn_truncated(name: str, promised: int, got: int):
    warnings.warn(
        f"{name}: truncated file, its header promises {promised} frames but only {got} are there; "
        "using what is there",
        AudioWarning,
        stacklevel=2,
    )


def _open_path(path) -> "_SndSource | _WavStreamSource":
    name = str(path)
    try:
        regular = stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        regular = True  # the open below gives the message
    if not regular and not os.path.isdir(path):  # a FIFO (`<(sox ...)`), a device: read once, like stdin
        try:
            fh = open(path, "rb")
        except OSError as e:
            raise AudioError(f"{name}: cannot read ({e.strerror or e})") from None
        try:
            src = _open_stdin(fh, name=name)
        except BaseException:
            fh.close()
            raise
        if isinstance(src, _WavStreamSource):
            src.owned = True  # closed when its blocks are done
        else:
            fh.close()  # read whole already
        return src
    try:
        with open(path, "rb") as fh:  # a clear message for missing files, directories, permissions
            header, _ = _parse_wav_header(fh)
    except FileNotFoundError:
        raise AudioError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise AudioError(f"{name}: is a directory, not an audio file") from None
    except OSError as e:
        raise AudioError(f"{name}: cannot read ({e.strerror or e})") from None
    if header is None and os.path.getsize(path) == 0:  # not a format problem: say so, no advice
        raise AudioError(f"{name}: empty file (0 bytes)")
    if header is not None and header.supported:
        avail = os.path.getsize(path) - header.data_offset
        if header.data_size is None:
            # Unfinalised header: libsndfile would see 0 frames; read the payload to the end of file.
            if avail >= header.block_align:
                warnings.warn(
                    f"{name}: WAV header was never finalised (recording interrupted?); "
                    "reading the data to the end of the file",
                    AudioWarning,
                    stacklevel=2,
                )
            fh = open(path, "rb")
            fh.seek(header.data_offset)
            header.data_size = avail - avail % header.block_align
            return _WavStreamSource(fh, header, name, owned=True)
        if header.data_size > avail:
            if avail < header.block_align:
                raise AudioError(f"{name}: truncated file, no audio data after the header")
            _warn_truncated(name, header.data_size // header.block_align, avail // header.block_align)
    return _SndSource(name, name)


def _open_stdin(stream=None, name: str = "<stdin>") -> "_SndSource | _WavStreamSource":
    """stdin (or another stream that cannot seek): a plain PCM/float WAV is streamed as it arrives;
    anything else is read whole into memory (still compressed) and decoded by libsndfile, which
    needs to seek."""
    if stream is None:
        if sys.stdin is None or sys.stdin.isatty():
            raise AudioError("<stdin>: no audio piped in (stdin is a terminal); e.g. `sox in.mp3 -t wav - | ...`")
        stream = sys.stdin.buffer
    header, consumed = _parse_wav_header(stream)
    if header is not None and header.supported:
        return _WavStreamSource(stream, header, name)
    data = consumed + stream.read()
    if not data:
        raise AudioError(f"{name}: no audio data (empty input)")
    return _SndSource(io.BytesIO(data), name)


def _open(file) -> "_SndSource | _WavStreamSource":
    if isinstance(file, str) and file == "-":
        return _open_stdin()
    if isinstance(file, (str, os.PathLike)):
        return _open_path(file)
    if hasattr(file, "read"):  # a binary file object, treated like stdin
        return _open_stdin(file)
    raise AudioError(f"{file!r}: expected a path, '-' for stdin, or a binary file object")



def iter_audio_blocks(file, sr: int = SAMPLE_RATE, block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """Stream an audio file as float32 mono blocks at `sr`, never holding the whole file.

    Parameters
    ----------
    file : str, os.PathLike or binary file object
        A path, "-" for stdin, or an open binary stream. A plain PCM/float WAV on stdin is read as it
        arrives (a live pipe works); other formats on stdin are buffered compressed, then decoded.
    block_seconds : float
        Length of the blocks read from the input, in input seconds. Output blocks have about
        `block_seconds * sr` samples; the resampler's delay makes the first shorter and the last longer.
    sr : int
        Output sample rate (the model's).

    Returns
    -------
    Iterator[np.ndarray]
        Non-empty 1-D float32 blocks. Their concatenation equals `load_audio(file, sr)` exactly.

    Raises
    ------
    AudioError
        At the call for a missing or unreadable file or zero-length audio; while iterating for a
        decoding error (or, on stdin, input that turns out empty).
    """
    if block_seconds <= 0:
        raise ValueError(f"block_seconds must be > 0, got {block_seconds}")
    src = _open(file)
    if src.frames == 0:
        src.close()
        raise AudioError(f"{src.name}: empty audio (zero length)")
    return _blocks(src, block_seconds, sr)


def _blocks(src, block_seconds: float, sr: int) -> Iterator[np.ndarray]:
    n = max(1, round(block_seconds * src.samplerate))
    clean = _Cleaner(src.name)
    rs = None
    if src.samplerate != sr:  # stateful: blockwise output == one-shot soxr.resample, bit for bit
        rs = soxr.ResampleStream(src.samplerate, sr, 1, dtype="float32", quality=RESAMPLE_QUALITY)
    seen = out = 0
    for x in src.blocks(n):
        at = seen / src.samplerate
        y = _downmix(clean(x, at))
        seen += len(x)
        if rs is not None:
            y = rs.resample_chunk(y)
        y = clean(y, at)  # huge finite samples can overflow float32 in the mean or the resampler
        if len(y):
            out += len(y)
            yield y
    if seen == 0:
        raise AudioError(f"{src.name}: empty audio (zero length)")
    if rs is not None:
        y = clean(rs.resample_chunk(np.zeros(0, np.float32), last=True), seen / src.samplerate)
        out += len(y)
        if len(y):
            yield y
    if out == 0:  # e.g. one frame at 192 kHz
        raise AudioError(f"{src.name}: empty audio ({seen} frames at {src.samplerate} Hz, not one sample at {sr} Hz)")


def load_audio(file, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Read a whole audio file as float32 mono at `sr`.

    Parameters
    ----------
    file : str, os.PathLike or binary file object
        Any format libsndfile reads (wav, flac, ogg, mp3, ...), any rate, any channel count;
        "-" reads from stdin.
    sr : int
        Output sample rate (the model's).

    Returns
    -------
    np.ndarray
        1-D float32 samples (nominally in [-1, 1]).

    Raises
    ------
    AudioError
        Missing, unreadable or empty file; see the module docstring for what is repaired instead.
    """
    return np.concatenate(list(iter_audio_blocks(file, sr, block_seconds=60.0)))


def audio_duration(file) -> float | None:
    """Duration in seconds read from the header, without decoding; None for stdin, a pipe, or if unknown.

    Raises
    ------
    AudioError
        As `iter_audio_blocks` would: a missing or unreadable file, or zero-length audio.
    """
    if not isinstance(file, (str, os.PathLike)) or file == "-":
        return None
    try:
        if not stat.S_ISREG(os.stat(file).st_mode):  # a FIFO can be read only once: leave it be
            return None
    except OSError:
        pass  # the open below gives the message
    with warnings.catch_warnings():  # repairs are reported when the audio is read, not here
        warnings.simplefilter("ignore", AudioWarning)
        src = _open(file)
    try:
        if src.frames == 0:
            raise AudioError(f"{src.name}: empty audio (zero length)")
        return None if src.frames is None else src.frames / src.samplerate
    finally:
        src.close()


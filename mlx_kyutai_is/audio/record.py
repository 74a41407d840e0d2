# Copyright © 2026 mlx-kyutai-is contributors
"""Writing audio: recordings by file extension, written under a part name and renamed on close."""

from pathlib import Path

import numpy as np
import soundfile as sf

from ..atomic import commit_file, part_path, temp_path_for
from .prepare import SAMPLE_RATE, AudioError

# Recording formats by file extension (libsndfile writes each natively; no ffmpeg).
RECORDING_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS")}


def recording_format(path) -> tuple[str, str]:
    """(soundfile format, subtype) that `path`'s extension names; `AudioError` for any other.

    Raises
    ------
    AudioError
        An extension that is not .wav, .flac or .ogg (a file named .mp3 must not hold WAV data).
    """
    ext = Path(path).suffix.lower()
    if ext not in RECORDING_FORMATS:
        known = ", ".join(RECORDING_FORMATS)
        what = f"unsupported audio format {ext}" if ext else "no extension to tell the audio format"
        raise AudioError(f"{path}: {what} (use {known})")
    return RECORDING_FORMATS[ext]


def write_wav(path, audio: np.ndarray, sr: int = SAMPLE_RATE):
    """Save float32 samples (1-D, or (frames, channels)) as 16-bit PCM WAV (clipped to [-1, 1]),
    atomically: the file appears complete or not at all."""
    tmp = temp_path_for(path)
    try:
        sf.write(str(tmp), np.asarray(audio, dtype=np.float32), sr, subtype="PCM_16", format="WAV")
        commit_file(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_SFC_SET_UPDATE_HEADER_AUTO = 0x1061  # libsndfile: rewrite the header's sizes after every write


class AudioWriter:
    """Incremental recording writer: WAV (16-bit PCM), FLAC or Ogg Vorbis by `path`'s extension.

    A WAV's header sizes are rewritten after every `write` (libsndfile's
    SFC_SET_UPDATE_HEADER_AUTO), so if the process is killed the file on disk is a valid WAV
    holding everything written so far. `flush()` also asks the OS to commit it to disk.

    Parameters
    ----------
    path : str or Path
        The recording; its extension picks the format (`recording_format`).
    part : bool
        Write to `atomic.part_path(path)` and rename it to `path` on `close()`: an existing `path` is
        replaced only by a complete recording, and a killed recorder leaves its audio in the
        part file.

    Examples
    --------
    >>> with AudioWriter("rec.flac", 24000) as w:
    ...     for block in blocks:
    ...         w.write(block)
    """

    def __init__(self, path, sr: int = SAMPLE_RATE, channels: int = 1, *, part: bool = False):
        self.path = str(path)
        fmt, subtype = recording_format(path)
        self.file = str(part_path(path)) if part else self.path
        try:
            self._f = sf.SoundFile(self.file, "w", samplerate=sr, channels=channels, subtype=subtype, format=fmt)
        except (sf.LibsndfileError, RuntimeError, OSError) as e:
            raise AudioError(f"{self.path}: cannot open for writing ({getattr(e, 'error_string', e)})") from None
        self._auto = False
        if fmt == "WAV":
            try:  # private soundfile API; without it, fall back to a flush per write
                self._auto = bool(sf._snd.sf_command(self._f._file, _SFC_SET_UPDATE_HEADER_AUTO, sf._ffi.NULL, 1))
            except AttributeError:
                pass
        self._flush_each = fmt == "WAV" and not self._auto
        self.frames = 0

    def write(self, block: np.ndarray):
        block = np.asarray(block, dtype=np.float32)
        self._f.write(block)
        self.frames += len(block)
        if self._flush_each:
            self._f.flush()

    def flush(self):
        self._f.flush()

    def close(self):
        """Finish the file (and, with ``part=True``, rename it into place)."""
        if self._f.closed:
            return
        self._f.close()
        if self.file != self.path:
            commit_file(self.file, self.path)

    @property
    def closed(self) -> bool:
        return self._f.closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

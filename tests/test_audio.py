"""Audio IO: every format/rate/channel layout to float32 mono at the model rate, errors, streaming."""

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import soxr
from numpy.testing import assert_allclose, assert_array_equal

from mlx_kyutai_is.audio import (
    SAMPLE_RATE,
    AudioError,
    AudioWarning,
    AudioWriter,
    audio_duration,
    iter_audio_blocks,
    load_audio,
    prepare_array,
    write_wav,
)
from mlx_kyutai_is.models.config import ConfigError
from mlx_kyutai_is.models.loading import read_preprocessor_config
from mlx_kyutai_is.runtime.protocol import StreamOptions

# Clean input must never warn; tests that expect a repair use pytest.warns.
pytestmark = pytest.mark.filterwarnings("error::mlx_kyutai_is.audio.AudioWarning")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tone(sr, seconds=1.0, freq=440.0, channels=1, amp=0.5):
    t = np.arange(int(sr * seconds)) / sr
    x = np.stack([amp / (c + 1) * np.sin(2 * np.pi * freq * (c + 1) * t) for c in range(channels)], axis=1)
    return x.astype(np.float32) if channels > 1 else x[:, 0].astype(np.float32)


def peak_hz(x, sr):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spec) * sr / len(x)


class NonSeekable(io.RawIOBase):
    """A pipe-like binary stream: no seek, short reads."""

    def __init__(self, data: bytes, chunk: int = 1000):
        self.data, self.pos, self.chunk = data, 0, chunk

    def readable(self):
        return True

    def seekable(self):
        return False

    def readinto(self, b):
        n = min(len(b), self.chunk, len(self.data) - self.pos)
        b[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


def fake_stdin(monkeypatch, data: bytes, tty: bool = False):
    raw = NonSeekable(data)

    class _Stdin:
        buffer = io.BufferedReader(raw, buffer_size=4096)

        @staticmethod
        def isatty():
            return tty

    monkeypatch.setattr(sys, "stdin", _Stdin)
    return raw


# ---------------------------------------------------------------------------------------------
# Files


def test_native_rate_wav_is_read_unchanged(tmp_path):
    x = tone(24000)
    p = tmp_path / "a.wav"
    sf.write(p, x, 24000, subtype="PCM_16")
    y = load_audio(p)
    assert y.dtype == np.float32 and y.ndim == 1
    assert_array_equal(y, sf.read(p, dtype="float32")[0])
    assert audio_duration(p) == pytest.approx(1.0)


@pytest.mark.parametrize("sr_in", [8000, 16000, 44100, 48000])
def test_resampled_to_model_rate(tmp_path, sr_in):
    p = tmp_path / "a.wav"
    sf.write(p, tone(sr_in, 2.0), sr_in, subtype="FLOAT")
    y = load_audio(p, sr=24000)
    assert abs(len(y) - 48000) <= 1
    assert peak_hz(y, 24000) == pytest.approx(440, abs=1)
    assert_array_equal(y, soxr.resample(sf.read(p, dtype="float32")[0], sr_in, 24000, quality="HQ"))


def test_other_target_rate(tmp_path):
    assert SAMPLE_RATE == 24000  # the default target; the model config's rate is passed as sr
    p = tmp_path / "a.wav"
    sf.write(p, tone(24000, 1.0), 24000)
    y = load_audio(p, sr=16000)
    assert len(y) == 16000 and peak_hz(y, 16000) == pytest.approx(440, abs=1)


def test_six_channels_downmixed_by_mean(tmp_path):
    x = tone(24000, 0.5, channels=6)
    p = tmp_path / "six.wav"
    sf.write(p, x, 24000, subtype="FLOAT")
    assert_allclose(load_audio(p), x.mean(axis=1), atol=1e-7)


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_sample_formats(tmp_path, subtype):
    x = tone(24000, 0.5, channels=2)
    p = tmp_path / "a.wav"
    sf.write(p, x, 24000, subtype=subtype)
    ref = sf.read(p, dtype="float32")[0].mean(axis=1, dtype=np.float32)
    assert_array_equal(load_audio(p), ref)
    assert_allclose(load_audio(p), x.mean(axis=1), atol=2e-2 if subtype == "PCM_U8" else 1e-4)


def test_int16_numpy_data_written_as_int(tmp_path):
    x16 = (tone(24000, 0.25) * 32767).astype(np.int16)
    p = tmp_path / "i16.wav"
    sf.write(p, x16, 24000)
    assert_array_equal(load_audio(p), x16.astype(np.float32) / 32768)


@pytest.mark.parametrize("fmt", ["flac", "ogg", "mp3"])
def test_compressed_formats(tmp_path, fmt):
    if fmt.upper() not in sf.available_formats():
        pytest.skip(f"libsndfile without {fmt}")
    x = tone(44100, 1.0, channels=2)
    p = tmp_path / f"a.{fmt}"
    sf.write(p, x, 44100)
    y = load_audio(p)
    assert abs(len(y) - 24000) <= 1200  # lossy codecs add/strip a little padding
    assert peak_hz(y, 24000) == pytest.approx(440, abs=2)
    if fmt == "flac":
        ref = sf.read(p, dtype="float32")[0].mean(axis=1, dtype=np.float32)
        assert_array_equal(y, soxr.resample(ref, 44100, 24000, quality="HQ"))


# ---------------------------------------------------------------------------------------------
# Errors and repairs


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(AudioError, match=r"nope\.wav: no such file"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioError, match="is a directory"):
        load_audio(tmp_path)


def test_empty_audio(tmp_path):
    p = tmp_path / "empty.wav"
    sf.write(p, np.zeros(0, np.float32), 24000)
    with pytest.raises(AudioError, match=r"empty\.wav: empty audio"):
        load_audio(p)
    with pytest.raises(AudioError, match="empty audio"):
        iter_audio_blocks(p)  # raised at the call, before iterating


def test_garbage_and_unknown_format(tmp_path):
    p = tmp_path / "noise.m4a"
    p.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(AudioError) as e:
        load_audio(p)
    msg = str(e.value)
    assert "noise.m4a" in msg and "\n" not in msg and "unsupported or unreadable" in msg


def test_truncated_header(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, tone(24000), 24000, subtype="PCM_16")
    data = good.read_bytes()
    short = tmp_path / "short.wav"
    short.write_bytes(data[:20])  # inside the fmt chunk
    with pytest.raises(AudioError, match=r"short\.wav: "):
        load_audio(short)
    bare = tmp_path / "bare.wav"
    bare.write_bytes(data[:44])  # header only, promises 1 s of data
    with pytest.raises(AudioError, match=r"bare\.wav: truncated file, no audio"):
        load_audio(bare)


def test_truncated_data_is_read_with_a_warning(tmp_path):
    good = tmp_path / "good.wav"
    x = tone(24000)
    sf.write(good, x, 24000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(good.read_bytes()[: 44 + 2 * 10000 + 1])  # odd byte count: half a sample at the end
    with pytest.warns(AudioWarning, match=r"cut\.wav: truncated"):
        y = load_audio(cut)
    assert_array_equal(y, sf.read(good, dtype="float32")[0][:10000])


@pytest.mark.parametrize("size", [0, 0x7FFFF000, 0xFFFFFFFF])
def test_unfinalised_header_reads_to_end(tmp_path, size):
    good = tmp_path / "good.wav"
    x = tone(24000)
    sf.write(good, x, 24000, subtype="PCM_16")
    b = bytearray(good.read_bytes())
    assert b[36:40] == b"data"
    b[4:8] = struct.pack("<I", size)
    b[40:44] = struct.pack("<I", size)
    p = tmp_path / "killed.wav"
    p.write_bytes(bytes(b))
    with pytest.warns(AudioWarning, match="never finalised"):
        y = load_audio(p)
    assert_array_equal(y, sf.read(good, dtype="float32")[0])
    assert audio_duration(p) == pytest.approx(1.0)


def test_nan_inf_replaced_with_warning(tmp_path):
    x = tone(24000, 0.5)
    x[100], x[200], x[300] = np.nan, np.inf, -np.inf
    p = tmp_path / "nan.wav"
    sf.write(p, x, 24000, subtype="FLOAT")
    with pytest.warns(AudioWarning, match=r"nan\.wav: non-finite samples"):
        y = load_audio(p)
    assert np.isfinite(y).all()
    assert y[100] == y[200] == y[300] == 0
    ok = np.isfinite(x)
    assert_array_equal(y[ok], x[ok])
    with pytest.warns(AudioWarning) as rec:  # streamed: one warning per input, not per block
        blocks = list(iter_audio_blocks(p, block_seconds=0.005))
    assert len(rec) == 1 and "first near 0.00 s" in str(rec[0].message)
    assert_array_equal(np.concatenate(blocks), y)


# ---------------------------------------------------------------------------------------------
# stdin


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_stdin_wav_streamed_equals_file(tmp_path, monkeypatch, subtype):
    p = tmp_path / "a.wav"
    sf.write(p, tone(16000, 0.7, channels=2), 16000, subtype=subtype)
    fake_stdin(monkeypatch, p.read_bytes())
    assert_array_equal(load_audio("-"), load_audio(p))


def test_stdin_wav_unknown_length_and_other_formats(tmp_path, monkeypatch):
    p = tmp_path / "a.wav"
    sf.write(p, tone(24000, 0.5), 24000, subtype="PCM_16")
    b = bytearray(p.read_bytes())
    b[4:8] = b[40:44] = struct.pack("<I", 0xFFFFFFFF)  # as written by a recorder into a pipe
    fake_stdin(monkeypatch, bytes(b))
    assert_array_equal(load_audio("-"), load_audio(p))

    f = tmp_path / "a.flac"
    sf.write(f, tone(44100, 0.5), 44100)
    fake_stdin(monkeypatch, f.read_bytes())  # not a WAV: buffered and decoded by libsndfile
    assert_array_equal(load_audio("-"), load_audio(f))

    fake_stdin(monkeypatch, b"")
    with pytest.raises(AudioError, match="<stdin>"):
        load_audio("-")
    fake_stdin(monkeypatch, b"not audio at all" * 10)
    with pytest.raises(AudioError, match="<stdin>"):
        load_audio("-")
    fake_stdin(monkeypatch, b"", tty=True)
    with pytest.raises(AudioError, match="stdin is a terminal"):
        load_audio("-")


@pytest.mark.parametrize("size", [0x7FFFF000, 0x7FFFFFFF])
def test_stdin_placeholder_sizes_end_quietly(tmp_path, monkeypatch, size):
    """sox/arecord writing to a pipe put a huge placeholder size in the header; EOF is the normal end."""
    p = tmp_path / "a.wav"
    sf.write(p, tone(24000, 0.5), 24000, subtype="PCM_16")
    b = bytearray(p.read_bytes())
    b[40:44] = struct.pack("<I", size)
    fake_stdin(monkeypatch, bytes(b))
    assert_array_equal(load_audio("-"), load_audio(p))  # and no AudioWarning (errors in this module)


def test_stdin_through_a_real_pipe(tmp_path):
    p = tmp_path / "a.wav"
    sf.write(p, tone(8000, 1.0, channels=2), 8000, subtype="PCM_16")
    out = tmp_path / "out.npy"
    code = (
        "import sys, numpy as np; from mlx_kyutai_is.audio import load_audio;"
        f"np.save({str(out)!r}, load_audio('-'))"
    )
    env = {**os.environ, "PYTHONPATH": REPO}
    with open(p, "rb") as fh:  # cat | python: stdin is a real, unseekable pipe
        cat = subprocess.Popen(["cat"], stdin=fh, stdout=subprocess.PIPE)
        r = subprocess.run([sys.executable, "-c", code], stdin=cat.stdout, env=env, capture_output=True, text=True)
        cat.wait()
    assert r.returncode == 0, r.stderr
    assert_array_equal(np.load(out), load_audio(p))


# ---------------------------------------------------------------------------------------------
# Streaming


@pytest.mark.parametrize(
    "sr_in,channels,block_s", [(24000, 1, 0.08), (24000, 2, 1.0), (44100, 2, 0.37), (8000, 1, 0.5), (48000, 6, 2.0)]
)
def test_blocks_concatenate_to_load_audio(tmp_path, sr_in, channels, block_s):
    p = tmp_path / "a.wav"
    sf.write(p, tone(sr_in, 3.1, channels=channels), sr_in, subtype="PCM_16")
    blocks = list(iter_audio_blocks(p, block_seconds=block_s))
    assert all(b.dtype == np.float32 and b.ndim == 1 and len(b) > 0 for b in blocks)
    assert_array_equal(np.concatenate(blocks), load_audio(p))
    if sr_in == 24000:
        assert len(blocks[0]) == round(block_s * 24000)


def test_blocks_from_stdin(tmp_path, monkeypatch):
    p = tmp_path / "a.wav"
    sf.write(p, tone(44100, 2.0), 44100, subtype="PCM_16")
    raw = fake_stdin(monkeypatch, p.read_bytes())
    it = iter_audio_blocks("-", block_seconds=0.1)
    blocks = [next(it)]
    assert raw.pos < 20000  # a live pipe: the first block comes before the input is read (176 kB)
    blocks += list(it)
    assert len(blocks) > 10
    assert_array_equal(np.concatenate(blocks), load_audio(p))


def test_ten_minutes_streamed_with_bounded_memory(tmp_path):
    sr_in, minutes = 16000, 10
    p = tmp_path / "long.wav"
    with AudioWriter(p, sr_in) as w:  # 10 one-minute pieces: silence then a tone
        for i in range(minutes):
            w.write(np.zeros(sr_in * 30, np.float32))
            w.write(tone(sr_in, 30.0, freq=200 + 50 * i))
    assert audio_duration(p) == pytest.approx(minutes * 60)

    tracemalloc.start()
    it = iter_audio_blocks(p, block_seconds=1.0, sr=24000)
    energy = np.zeros(2 * minutes)  # per 30 s segment at 24 kHz
    total, n_blocks, biggest = 0, 0, 0
    for b in it:
        seg = (total + np.arange(len(b))) // (24000 * 30)
        np.add.at(energy, np.minimum(seg, len(energy) - 1), b.astype(np.float64) ** 2)
        total += len(b)
        n_blocks += 1
        biggest = max(biggest, len(b))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert total == minutes * 60 * 24000
    assert n_blocks >= minutes * 60 - 1 and biggest <= 24000 + 1024
    rms = np.sqrt(energy / (24000 * 30))
    assert (rms[0::2] < 1e-3).all() and np.allclose(rms[1::2], 0.5 / np.sqrt(2), atol=1e-3)
    assert peak < 4 * 2**20, f"peak {peak / 2**20:.1f} MiB; the whole file is {total * 4 / 2**20:.0f} MiB"


# ---------------------------------------------------------------------------------------------
# Arrays


def test_prepare_array_dtypes():
    x = tone(24000, 0.2)
    assert_array_equal(prepare_array(x.astype(np.float64)), x)
    i16 = (x * 32767).astype(np.int16)
    assert_array_equal(prepare_array(i16), i16 / np.float32(32768))
    i32 = i16.astype(np.int32) << 16
    assert_allclose(prepare_array(i32), i16 / 32768, atol=1e-7)
    u8 = np.array([0, 128, 255], np.uint8)
    assert_allclose(prepare_array(u8), [-1.0, 0.0, 127 / 128])
    assert prepare_array([0.0, 0.5]).dtype == np.float32
    y = prepare_array(x.astype(np.float16))
    assert y.dtype == np.float32 and np.abs(y - x).max() < 1e-3


def test_prepare_array_channel_rule():
    x = tone(24000, 0.2, channels=2)  # (frames, channels)
    mono = x.mean(axis=1)
    assert_allclose(prepare_array(x), mono, atol=1e-7)
    assert_allclose(prepare_array(x.T), mono, atol=1e-7)  # (channels, frames)
    assert_allclose(prepare_array(x[:, :1]), x[:, 0])
    assert_allclose(prepare_array(x[:, :1].T), x[:, 0])
    with pytest.raises(AudioError, match="ambiguous shape"):
        prepare_array(np.zeros((100, 200), np.float32))
    with pytest.raises(AudioError, match="expected 1-D"):
        prepare_array(np.zeros((2, 2, 100), np.float32))
    with pytest.raises(AudioError, match="empty"):
        prepare_array(np.zeros(0, np.float32))
    with pytest.raises(AudioError, match="empty"):
        prepare_array(np.zeros((2, 0), np.float32))
    with pytest.raises(AudioError, match="dtype"):
        prepare_array(np.array(["a"]))


def test_prepare_array_resample_nan_and_no_mutation():
    x = tone(16000, 0.5, channels=2)
    assert_array_equal(prepare_array(x, sr_in=16000, sr=24000), soxr.resample(x.mean(axis=1), 16000, 24000, "HQ"))
    bad = x.copy()
    bad[10, 0] = np.nan
    keep = bad.copy()
    with pytest.warns(AudioWarning, match="audio array: non-finite"):
        y = prepare_array(bad)
    assert np.isfinite(y).all() and y[10] == x[10, 1] / 2
    assert_array_equal(bad, keep)


def test_prepare_mlx_arrays():
    mx = pytest.importorskip("mlx.core")
    x = tone(24000, 0.1)
    assert_array_equal(prepare_array(mx.array(x)), x)
    assert_allclose(prepare_array(mx.array(x).astype(mx.bfloat16)), x, atol=4e-3)
    assert_array_equal(prepare_array(mx.array(np.stack([x, x]))), x)


# ---------------------------------------------------------------------------------------------
# Model padding (against transformers' feature extractor) and preprocessor config


@pytest.mark.parametrize("prefix,delay", [(0.0, 0.5), (1.0, 0.5), (0.33333, 2.0), (0.0, 0.0)])
def test_stream_padding_matches_transformers(prefix, delay):
    from transformers import KyutaiSpeechToTextFeatureExtractor

    x = tone(24000, 0.77)
    fe = KyutaiSpeechToTextFeatureExtractor(audio_delay_seconds=delay, audio_silence_prefix_seconds=prefix)
    ref = fe(x, sampling_rate=24000, return_tensors="np")["input_values"][0, 0]
    # The left padding and the right one without the recipe's trailing silence.
    left, right = StreamOptions(silence_prefix=prefix, delay=delay, trailing_silence=0.0).padding(24000)
    y = np.pad(x, (left, right))
    assert y.dtype == np.float32
    assert_array_equal(y, ref)


def test_read_preprocessor_config(tmp_path):
    from transformers import KyutaiSpeechToTextFeatureExtractor

    assert read_preprocessor_config(tmp_path) == {
        "audio_silence_prefix_seconds": 0.0,
        "audio_delay_seconds": 0.0,
        "sampling_rate": None,
    }
    fe = KyutaiSpeechToTextFeatureExtractor(audio_delay_seconds=2.5, audio_silence_prefix_seconds=1.0)
    fe.save_pretrained(tmp_path)  # preprocessor_config.json (the hub's older layout)
    assert read_preprocessor_config(tmp_path) == {
        "audio_silence_prefix_seconds": 1.0,
        "audio_delay_seconds": 2.5,
        "sampling_rate": 24000,
    }
    # processor_config.json with a feature_extractor block (what our test checkpoints write) wins,
    # as in transformers' FeatureExtractionMixin.get_feature_extractor_dict
    block = {"audio_delay_seconds": 0.5, "sampling_rate": 24000}
    (tmp_path / "processor_config.json").write_text(json.dumps({"feature_extractor": block}))
    cfg = read_preprocessor_config(tmp_path)
    assert cfg["audio_delay_seconds"] == 0.5 and cfg["audio_silence_prefix_seconds"] == 0.0
    (tmp_path / "processor_config.json").write_text(json.dumps({"processor_class": "X"}))  # no block
    assert read_preprocessor_config(tmp_path)["audio_delay_seconds"] == 2.5

    (tmp_path / "processor_config.json").write_text("{oops")
    with pytest.raises(ConfigError, match="processor_config.json: not valid JSON"):
        read_preprocessor_config(tmp_path)
    (tmp_path / "processor_config.json").write_text(json.dumps({"feature_extractor": {"audio_delay_seconds": -1}}))
    with pytest.raises(ConfigError, match="audio_delay_seconds"):
        read_preprocessor_config(tmp_path)


@pytest.mark.slow
def test_read_preprocessor_config_of_test_checkpoint(tmp_path):
    from transformers import (
        KyutaiSpeechToTextFeatureExtractor,
        KyutaiSpeechToTextProcessor,
    )

    from checkpoints import build_tokenizer

    fe = KyutaiSpeechToTextFeatureExtractor(audio_delay_seconds=0.5, audio_silence_prefix_seconds=1.0)
    KyutaiSpeechToTextProcessor(fe, build_tokenizer()).save_pretrained(tmp_path)
    cfg = read_preprocessor_config(tmp_path)
    assert cfg["audio_silence_prefix_seconds"] == 1.0 and cfg["audio_delay_seconds"] == 0.5


# ---------------------------------------------------------------------------------------------
# Writing


def test_write_wav_roundtrip(tmp_path):
    x = tone(24000, 0.3)
    p = tmp_path / "out.wav"
    write_wav(p, x, 24000)
    info = sf.info(p)
    assert info.subtype == "PCM_16" and info.samplerate == 24000 and info.channels == 1
    assert_allclose(load_audio(p), x, atol=1 / 32768)
    write_wav(p, np.array([1.5, -1.5, 0.5], np.float32), 24000)
    assert_array_equal(sf.read(p, dtype="int16")[0], [32767, -32768, 16384])  # clipped, not wrapped


def test_wav_writer_file_valid_at_every_point(tmp_path):
    p = tmp_path / "rec.wav"
    x = tone(24000, 1.0)
    with AudioWriter(p, 24000) as w:
        for i in range(5):
            w.write(x[i * 4800 : (i + 1) * 4800])
            snap = tmp_path / f"snap{i}.wav"
            shutil.copy(p, snap)  # what a crash would leave behind
            assert sf.info(snap).frames == (i + 1) * 4800
            assert_allclose(load_audio(snap), x[: (i + 1) * 4800], atol=1 / 32768)
        w.flush()
    assert w.closed and w.frames == 24000


def test_wav_writer_survives_kill(tmp_path):
    p = tmp_path / "killed.wav"
    code = (
        "import os, signal, numpy as np; from mlx_kyutai_is.audio import AudioWriter;"
        f"w = AudioWriter({str(p)!r}, 24000);"
        "[w.write(np.full(1920, 0.25, np.float32)) for _ in range(10)];"
        "os.kill(os.getpid(), signal.SIGKILL)"
    )
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": REPO})
    assert r.returncode == -9
    y = load_audio(p)
    assert len(y) == 19200 and np.allclose(y, 0.25, atol=1e-4)


# --------------------------------------------------------------------------------------------
# Property: no input makes the no-seek reader (stdin, pipes, file objects) fail with anything
# but its one-line AudioError.

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _riff(tag, channels, rate, bits, align, data_size, payload, extra=b"", riff_size=None):
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * align & 0xFFFFFFFF, align, bits)
    body = b"WAVE" + extra + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", data_size) + payload
    return b"RIFF" + struct.pack("<I", len(body) if riff_size is None else riff_size) + body


u16, u32 = st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
headers = st.builds(
    _riff,
    tag=st.sampled_from([1, 3, 0xFFFE, 2]) | u16,
    channels=st.sampled_from([0, 1, 2, 6, 65535]) | u16,
    rate=st.sampled_from([0, 1, 8000, 24000, 44100, 0xFFFFFFFF]) | u32,
    bits=st.sampled_from([0, 8, 16, 24, 32, 64, 12]) | u16,
    align=st.sampled_from([0, 1, 2, 3, 4, 8]) | u16,
    data_size=st.sampled_from([0, 1, 2, 3, 0x7FFFF000, 0xFFFFFFFF]) | u32,
    payload=st.binary(max_size=600),
    extra=st.sampled_from([b"", b"LIST\x04\x00\x00\x00abcd", b"junk\xff\xff\xff\xff", b"odd \x01\x00\x00\x00x\x00"]),
    riff_size=st.none() | u32,
)
# Headers libsndfile and the stream reader accept (align = channels * bits / 8), with any rate,
# payload and data size: the stream reader's own paths, not only its refusals.
consistent = st.tuples(
    st.sampled_from([(1, 8), (1, 16), (1, 24), (1, 32), (3, 32), (3, 64), (0xFFFE, 16)]),
    st.integers(1, 2) | st.integers(3, 8) | st.sampled_from([64, 8191]),
    st.sampled_from([1, 8000, 16000, 24000, 48000, 192000]) | st.integers(1, 1 << 20),
    st.sampled_from([0, 0xFFFFFFFF, 0x7FFFF000]) | st.integers(0, 4000),
    st.binary(max_size=4000) | st.binary(min_size=256, max_size=4000),
).map(lambda t: _riff(t[0][0], t[1], t[2], t[0][1], t[1] * t[0][1] // 8, t[3], t[4]))
streams = consistent | headers | st.binary(max_size=800) | consistent.map(lambda b: b[: len(b) // 2])


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=streams, block=st.sampled_from([0.005, 0.1, 1.0]))
def test_stream_reader_fails_only_with_its_one_line_error(data, block):
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no stray numpy/soundfile warnings either
            warnings.simplefilter("ignore", AudioWarning)  # repairs are allowed
            blocks = list(iter_audio_blocks(io.BytesIO(data), block_seconds=block))
    except AudioError as e:
        msg = str(e)
        assert msg.startswith("<stdin>: ") and "\n" not in msg, msg
        return
    assert blocks and all(b.dtype == np.float32 and b.ndim == 1 and len(b) for b in blocks)
    assert all(np.isfinite(b).all() for b in blocks)

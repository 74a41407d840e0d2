"""The whole Mimi codec (models/codec.py, models/mimi_decoder.py): codes and decoded audio against
transformers' `MimiModel.encode` / `decode` on the small test checkpoint and the full-size codec
(random weights, randomised codebooks); streaming == whole signal for any chunking; flat memory over
a minute; the decoder kept by `convert` and missing from directories converted before; the CLI's
round trip, encode and decode as subprocesses; bad codes files."""

import json
import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest
import soundfile as sf
import torch

from mlx_kyutai_is import load, load_codec
from mlx_kyutai_is.models.codec import CodecError, MimiCodec
from mlx_kyutai_is.models.config import MimiArgs
from mlx_kyutai_is.models.convert import convert
from mlx_kyutai_is.models.loading import DECODER_WEIGHTS_NAME
from mlx_kyutai_is.models.mimi import MimiEncoder
from mlx_kyutai_is.models.mimi_decoder import MimiDecoder

import checkpoints

# Servers, clusters and codecs run end to end here: the quick loop (-m 'not slow') leaves them out.
pytestmark = pytest.mark.slow

SR = checkpoints.SAMPLE_RATE
FRAME = 1920
TOL = 1e-4  # max absolute difference from transformers' decoded audio (float32)


def hf_codes(codec, audio, k):
    with torch.no_grad():
        return codec.encode(torch.from_numpy(np.ascontiguousarray(audio))[None, None], num_quantizers=k).audio_codes.numpy()


def hf_audio(codec, codes):
    with torch.no_grad():
        return codec.decode(torch.from_numpy(np.asarray(codes)).long()).audio_values[:, 0].numpy()


def stream_decode(codec, codes, sizes):
    """`codes` (1, K, T) through a decode stream in chunks of `sizes` (cycled)."""
    stream, out, i, j = codec.decode_stream(), [], 0, 0
    while i < codes.shape[2]:
        n = sizes[j % len(sizes)]
        out.append(np.array(stream.feed(codes[:, :, i : i + n])))
        i, j = i + n, j + 1
    return np.concatenate(out, axis=1)


@pytest.fixture(scope="module")
def clips(speech):
    return [checkpoints.read_wav(p) for p in speech]


@pytest.fixture(scope="module")
def small(small_hf):
    from transformers import KyutaiSpeechToTextForConditionalGeneration

    hf = KyutaiSpeechToTextForConditionalGeneration.from_pretrained(small_hf).eval().codec_model
    return hf, load_codec(small_hf)


@pytest.fixture(scope="module")
def converted(small_hf, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted") / "mlx"
    convert(str(small_hf), str(out))
    return out


def test_small_codec_matches_transformers(small, clips):
    """Codes identical; decoded audio within 1e-4 for 1, 8 and 32 codebooks, on speech and on
    random codes longer than the decoder transformer's window (20 positions = 10 frames here)."""
    hf, codec = small
    rng = np.random.default_rng(0)
    assert hf.config.sliding_window < 2 * 40
    for k in (1, 8, 32):
        codes = np.array(codec.encode(clips[0], num_codebooks=k))
        np.testing.assert_array_equal(codes, hf_codes(hf, clips[0], k))
        assert codes.shape == (1, k, -(-len(clips[0]) // FRAME)) and codes.dtype == np.int32
        random_codes = rng.integers(0, hf.config.codebook_size, (1, k, 40))
        for name, c in (("speech", codes), ("random", random_codes)):
            ref, mine = hf_audio(hf, c), np.array(codec.decode(c))
            assert mine.shape == ref.shape == (1, c.shape[2] * FRAME) and mine.dtype == np.float32
            err = np.abs(mine - ref).max()
            print(f"small codec, {k} codebooks, {name}: max |ours - transformers| {err:.2e} (peak {np.abs(ref).max():.2f})")
            assert err <= TOL, (k, name, err)
    # More codebooks change the audio: the decoder reads them all.
    a8, a32 = (np.array(codec.decode(codec.encode(clips[0], num_codebooks=k))) for k in (8, 32))
    assert np.abs(a8 - a32).max() > 1e-2


def test_streaming_equals_whole_signal(small, clips):
    """Decode frame by frame and in uneven chunks == whole-signal decode; encode in uneven chunks
    == whole-signal encode; a batch == its items."""
    _, codec = small
    audio = np.concatenate([clips[0], clips[1]])  # ~8 s: past the window, and across decode's 5 s chunks
    codes = np.array(codec.encode(audio))
    whole = np.array(codec.decode(codes))
    for sizes in ([1], [3, 1, 7, 2, 11, 5]):
        got = stream_decode(codec, codes, sizes)
        assert got.shape == whole.shape
        err = np.abs(got - whole).max()
        print(f"stream decode in chunks {sizes}: max |stream - whole| {err:.2e}")
        assert err <= 1e-5 * max(1.0, np.abs(whole).max()), (sizes, err)
    # Encoding streams too (any chunk size), exactly.
    stream = codec.encode_stream(num_codebooks=8)
    parts = [np.array(stream.feed(audio[i : i + 1234])) for i in range(0, len(audio), 1234)] + [np.array(stream.flush())]
    np.testing.assert_array_equal(np.concatenate(parts, axis=2), codes[:, :8])
    # A batch gives each item's audio.
    n = 30
    both = np.concatenate([codes[:, :, :n], codes[:, :, n : 2 * n]])
    out = np.array(codec.decode(both))
    for i in range(2):
        np.testing.assert_allclose(out[i], np.array(codec.decode(both[i : i + 1]))[0], atol=1e-5)


def test_a_minute_streams_in_flat_memory(small):
    """A minute of codes streamed: the carried state stops growing once the window is full, and
    whole-signal decoding of a minute peaks no higher than of 15 s, but for its output."""
    _, codec = small
    rng = np.random.default_rng(1)
    frames = int(60 * codec.frame_rate)
    codes = rng.integers(0, codec.args.codebook_size, (1, 32, frames))
    stream, sizes = codec.decode_stream(), {}
    for i in range(0, frames, 5):
        stream.feed(codes[:, :, i : i + 5])
        if i + 5 in (frames // 3, frames):
            sizes[i + 5] = stream.state.nbytes
    assert len(set(sizes.values())) == 1, sizes
    assert stream.state.frames == frames and stream.state.samples == frames * FRAME

    def peak(n):
        mx.clear_cache()
        mx.reset_peak_memory()
        before = mx.get_active_memory()
        out = codec.decode(codes[:, :, :n])
        return mx.get_peak_memory() - before - out.nbytes

    short, long = peak(frames // 4), peak(frames)
    print(f"decode peak beyond the output: 15 s {short / 2**20:.1f} MB, 60 s {long / 2**20:.1f} MB")
    assert long <= 1.2 * short + 2**20


def test_num_codebooks_and_bad_codes(small, clips):
    _, codec = small
    assert codec.num_codebooks == 32 and codec.sample_rate == SR and codec.frame_size == FRAME
    codec8 = MimiCodec(codec.encoder, codec.decoder, num_codebooks=8)
    assert codec8.encode(clips[0][:SR]).shape == (1, 8, 13)
    for bad in (0, 33, 2.0, True):
        with pytest.raises(CodecError, match="num_codebooks"):
            codec.encode(clips[0][:SR], num_codebooks=bad)
    ok = np.zeros((1, 8, 4), np.int64)
    for codes, what in [
        (ok.astype(np.float32), "integers"),
        (np.zeros((1, 1, 8, 4), np.int64), "shape"),
        (np.zeros((1, 33, 4), np.int64), "33 codebooks"),
        (ok + 2048, "code 2048 at codebook 0, frame 0 is out of range"),
        (ok - 1, "out of range"),
        (ok[:, :, :0], "no frames"),
    ]:
        with pytest.raises(CodecError, match=what):
            codec.decode(codes)
    assert codec.decode(ok[0]).shape == (1, 4 * FRAME)  # (K, T): one signal


def test_convert_keeps_the_decoder_apart(small_hf, converted, small, clips):
    """`convert` writes the decoder beside the model; transcription loads without it; the codec
    of the converted directory decodes exactly as the checkpoint's."""
    _, codec = small
    assert (converted / DECODER_WEIGHTS_NAME).is_file()
    from_dir = load_codec(converted)
    codes = codec.encode(clips[1])
    np.testing.assert_array_equal(np.array(from_dir.encode(clips[1])), np.array(codes))
    np.testing.assert_array_equal(np.array(from_dir.decode(codes)), np.array(codec.decode(codes)))
    # The model file holds no decoder tensor; the decoder file nothing else.
    names = mx.load(str(converted / "model.safetensors")).keys()
    assert not any(k.startswith(("mimi.decoder", "mimi.upsample")) or "output_proj" in k for k in names)
    assert all(k.startswith(("decoder.", "decoder_transformer.", "upsample.", "quantizer.")) for k in mx.load(str(converted / DECODER_WEIGHTS_NAME)))
    # From a loaded model: the same encoder object, the decoder read from its directory.
    stt = load(str(converted), dtype="float32")
    assert stt.codec.encoder is stt.model.mimi and stt.codec is stt.codec
    np.testing.assert_array_equal(np.array(stt.codec.decode(codes)), np.array(codec.decode(codes)))


def test_directory_converted_before_has_no_decoder(converted, tmp_path, clips):
    """A directory converted before the decoder was kept: transcription loads; the codec encodes,
    and decoding says clearly why it cannot (API and CLI)."""
    old = tmp_path / "old"
    old.mkdir()
    for f in converted.iterdir():
        if f.name != DECODER_WEIGHTS_NAME:
            (old / f.name).write_bytes(f.read_bytes())
    stt = load(str(old), dtype="float32")
    assert stt.transcribe(clips[0][: 2 * SR]).text is not None
    codec = load_codec(old)
    assert not codec.has_decoder
    codes = codec.encode(clips[0][:SR])
    with pytest.raises(CodecError, match="has no Mimi decoder .*convert"):
        codec.decode(codes)
    with pytest.raises(CodecError, match="has no Mimi decoder"):
        stt.codec.decode(codes)
    np.save(tmp_path / "c.npy", np.array(codes))
    p = run_cli("decode", tmp_path / "c.npy", "-o", tmp_path / "out.wav", "-m", old)
    assert p.returncode == 1 and not (tmp_path / "out.wav").exists()
    assert_one_line(p, "has no Mimi decoder")
    # Converting it again from the old directory still has none to keep, and says so.
    again = tmp_path / "again"
    q = subprocess.run(
        [sys.executable, "-m", "mlx_kyutai_is", "convert", "--hf-path", str(old), "--mlx-path", str(again)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert q.returncode == 0, q.stderr
    assert "no Mimi decoder" in q.stdout and not (again / DECODER_WEIGHTS_NAME).exists()


# ------------------------------------------------------------------------------------------
# The command


def run_cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "mlx_kyutai_is", "codec", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def assert_one_line(p, *fragments):
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlx-kyutai-is codec: error: "), p.stderr
    assert "Traceback" not in p.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def test_cli_round_trip_encode_decode(small_hf, small, speech, tmp_path):
    _, codec = small
    audio = checkpoints.read_wav(speech[0])
    # Round trip: the input's length, the audio `decode(encode(x))` gives (as 16-bit PCM).
    p = run_cli("roundtrip", speech[0], "-o", tmp_path / "rt.wav", "-m", small_hf)
    assert p.returncode == 0, p.stderr
    got, sr = sf.read(str(tmp_path / "rt.wav"), dtype="float32")
    expect = np.clip(np.array(codec.decode(codec.encode(audio)))[0, : len(audio)], -1, 1)
    assert sr == SR and got.shape == audio.shape
    assert np.abs(got - expect).max() <= 2 / 32768
    # Encode with 8 codebooks: int16 (1, 8, frames), the codes `encode` gives.
    p = run_cli("encode", speech[0], "-o", tmp_path / "c.npy", "-n", 8, "-m", small_hf)
    assert p.returncode == 0, p.stderr
    codes = np.load(tmp_path / "c.npy")
    assert codes.dtype == np.int16 and codes.shape == (1, 8, -(-len(audio) // FRAME))
    np.testing.assert_array_equal(codes, np.array(codec.encode(audio, num_codebooks=8)))
    assert "kbps" in p.stderr
    # Decode: frames x 1920 samples.
    p = run_cli("decode", tmp_path / "c.npy", "-o", tmp_path / "d.flac", "-m", small_hf)
    assert p.returncode == 0, p.stderr
    got, sr = sf.read(str(tmp_path / "d.flac"), dtype="float32")
    assert sr == SR and got.shape == (codes.shape[2] * FRAME,)
    assert np.abs(got - np.clip(np.array(codec.decode(codes))[0], -1, 1)).max() <= 2 / 32768
    assert not list(tmp_path.glob("*.partial*"))
    # Another rate and format in: the model's rate out, the input's duration.
    subprocess.run(["sox", str(speech[1]), "-r", "16000", str(tmp_path / "in16.flac")], check=True)
    p = run_cli("roundtrip", tmp_path / "in16.flac", "-o", tmp_path / "rt16.wav", "-m", small_hf)
    assert p.returncode == 0, p.stderr
    info = sf.info(str(tmp_path / "rt16.wav"))
    assert info.samplerate == SR and abs(info.frames - len(checkpoints.read_wav(speech[1]))) <= 2


def test_cli_bad_codes_files(small_hf, tmp_path):
    ok = np.zeros((1, 8, 5), np.int16)
    cases = {
        "float.npy": (ok.astype(np.float32), "codes must be integers"),
        "shape.npy": (np.zeros((2, 1, 8, 5), np.int16), "expected codes of shape"),
        "many.npy": (np.zeros((1, 33, 5), np.int16), "33 codebooks"),
        "range.npy": (ok + 4000, "code 4000 at codebook 0, frame 0 is out of range (0 to 2047)"),
        "negative.npy": (ok - 1, "out of range"),
        "batch.npy": (np.zeros((2, 8, 5), np.int16), "codes for 2 signals"),
        "empty.npy": (ok[:, :, :0], "no frames"),
        "objects.npy": (np.array([{"a": 1}], dtype=object), "not a NumPy .npy file"),
    }
    for name, (a, _) in cases.items():
        np.save(tmp_path / name, a, allow_pickle=True)
    (tmp_path / "text.npy").write_text("not codes\n")
    cases["text.npy"] = (None, "not a NumPy .npy file")
    np.savez(tmp_path / "archive.npy", codes=ok)  # an .npz under a .npy name
    (tmp_path / "archive.npy.npz").rename(tmp_path / "archive.npy")
    cases["archive.npy"] = (None, ".npz archive")
    for name, (_, fragment) in cases.items():
        p = run_cli("decode", tmp_path / name, "-o", tmp_path / "out.wav", "-m", small_hf)
        assert p.returncode == 1, (name, p.stderr)
        assert_one_line(p, name, fragment)
        assert not (tmp_path / "out.wav").exists() and not list(tmp_path.glob("out.partial*")), name
    # Other mistakes: missing input, a codes output not named .npy, the input as output, a bad -n.
    for args, fragment in [
        (("decode", tmp_path / "nope.npy", "-o", tmp_path / "o.wav"), "no such file"),
        (("encode", tmp_path / "nope.wav", "-o", tmp_path / "o.npy"), "no such file"),
        (("encode", tmp_path / "text.npy", "-o", tmp_path / "o.wav"), "name it .npy"),
        (("decode", tmp_path / "float.npy", "-o", tmp_path / "o.mp3"), "unsupported audio format"),
        (("roundtrip", tmp_path / "x.wav", "-o", tmp_path / "x.wav"), "overwrite the input"),
    ]:
        p = run_cli(*args, "-m", small_hf)
        assert p.returncode == 1, (args, p.stderr)
        assert_one_line(p, fragment)
    np.save(tmp_path / "good.npy", ok)
    p = run_cli("decode", tmp_path / "good.npy", "-o", tmp_path / "o.wav", "-n", 40, "-m", small_hf)
    assert p.returncode == 1
    assert_one_line(p, "num_codebooks must be an integer from 1 to 32")


# ------------------------------------------------------------------------------------------
# Full size


@pytest.fixture(scope="module")
def full(clips):
    """The published codec's shape (MimiConfig defaults) with random weights, codebooks at the
    latents' scale so codes vary (as test_mimi). Random decoder weights give audio peaking near 50;
    the last convolution is scaled so the audio peaks near 1, as a trained codec's does (the
    output is linear in it: the comparison is at the scale of real audio)."""
    from transformers import MimiConfig, MimiModel

    torch.manual_seed(0)
    config = MimiConfig(**checkpoints.full_codec_kwargs())
    hf = MimiModel(config).eval()
    checkpoints.randomize_codebooks(hf, seed=0, scale=6.0)
    audio = clips[0][: 2 * SR]
    peak = np.abs(hf_audio(hf, hf_codes(hf, audio, 32))).max()
    with torch.no_grad():
        last = hf.decoder.decoder_seanet.layers[-1].conv
        last.weight /= peak
        last.bias /= peak
    w = {k: mx.array(v.numpy()) for k, v in hf.state_dict().items()}  # transformers' in-memory names
    args = MimiArgs.from_dict(config.to_dict())
    encoder, decoder = MimiEncoder(args), MimiDecoder(args)
    encoder.load_weights(list(MimiEncoder.sanitize(w).items()), strict=True)
    decoder.load_weights(list(decoder.sanitize(w).items()), strict=True)
    return hf, MimiCodec(encoder, decoder)


@pytest.mark.slow
def test_full_size_codec_matches_transformers(full, clips):
    hf, codec = full
    audio = clips[0][: 2 * SR]
    for k in (1, 8, 32):
        codes = np.array(codec.encode(audio, num_codebooks=k))
        np.testing.assert_array_equal(codes, hf_codes(hf, audio, k))
        ref, mine = hf_audio(hf, codes), np.array(codec.decode(codes))
        err = np.abs(mine - ref).max()
        print(f"full-size codec, {k} codebooks: max |ours - transformers| {err:.2e} (peak {np.abs(ref).max():.2f})")
        assert 0.2 < np.abs(ref).max() < 5
        assert err <= TOL, (k, err)
    got = stream_decode(codec, codes[:, :, :12], [1, 4, 2, 5])
    whole = np.array(codec.decode(codes[:, :, :12]))
    assert np.abs(got - whole).max() <= 1e-5


def test_bench_codec_prints_its_figures(tmp_path):
    """`bench --codec`: streaming decode ms per 80 ms frame and whole-signal decode RTF (tiny codec)."""
    out = tmp_path / "bench.json"
    p = subprocess.run(
        [sys.executable, "-m", "mlx_kyutai_is", "bench", "--codec", "--quick", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    r = json.loads(out.read_text())["codec"]
    assert r["decode_frame_ms"]["n"] == 4 and r["decode_frame_ms"]["median"] > 0
    assert r["decode_whole"]["audio_s"] == 2.0 and r["decode_whole"]["rtf"] > 0
    assert "streaming decode:" in p.stdout and "ms per 80 ms frame" in p.stdout and "decode RTF" in p.stdout

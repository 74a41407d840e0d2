# Copyright © 2026 mlx-kyutai-is contributors
"""`mlx-kyutai-is bench`: speed and memory of the streaming model, side by side with the references.

    mlx-kyutai-is bench                 # full-size architecture, random weights, bf16 / q8 / q4
    mlx-kyutai-is bench --quick --json  # tiny model, a few steps: checks the code path in seconds

Without `--model`, the model card's architecture (hidden 2048, 16 layers, window 375, vocab 9323,
32 codebooks, full Mimi) is built with random weights in memory and written to a temporary
directory, then converted (bf16, q8, q4) and loaded exactly as a user's model would be. With
torch and transformers installed (the `test` extra), the random checkpoint is made by transformers
in its own layout, so the reference runs on the very same weights. Speed does not depend on the
weights' values: a random model costs what the published one costs.

Figures (one table, or `--json`):
- LM step: one 80 ms step of the language model (embeddings, 16 layers, head, argmax), synced.
- floor: bytes a step must read (LM weights, 33 embedding rows per batch row, the full KV window)
  divided by the best memory bandwidth measured here; ``x floor`` is the step over that.
- Mimi: streaming encode of one 80 ms frame (float32, all precisions share it).
- stream step: `Stream.feed` of one frame (Mimi + LM + word assembly), RTF = step / 80 ms.
- offline RTF: `STT.transcribe` of N s of audio (Mimi on 1 s chunks, one LM step per frame);
  skipped, and said so, where it would take longer than `--max-offline-minutes`.
- load: `load()` of the converted directory, weights evaluated; peak: MLX's peak memory while
  loading and running that precision.
- reference: transformers (torch) on the same checkpoint in bf16: its LM step through its own
  cache, and the model card's recipe (`generate`) per step and as RTF. moshi_mlx, where installed:
  its LM step on the same MLX backend, same architecture and dtype (its own random weights).
- cost over length: a tiny model's ms/step around step 400 and around step 10 000, the two
  streams stepped in alternation.

Sections run on their own (only those asked for):
- `--batch 1,2,4,...`: `engine.Engine.step()` with B streams, each fed one 80 ms frame per step
  (one Mimi call + one LM call for all), synced: ms per step, aggregate throughput in audio
  seconds per wall second, and the capacity in real-time streams (largest B under 80 ms).
- `--bulk`: wall time of `STT.transcribe([files])` on N files of S seconds (16 x 60 s) with
  batch_size 1 and `transcribe.DEFAULT_BATCH_SIZE`, one after the other, and whether the tokens agree.
- `--kernels`: the kernels of one steady-state frame (LM step, Mimi frame, whole frame) by type,
  counted in the lazy graph (`profiling.py`: views left out, each mx.fast op one), and host syncs
  per frame, on the full-size structure with small widths (`KERNELS`; same counts as full size).

On the CPU, `load()` keeps quantized scales in float32 (see `models.loading.adapt_to_device`).
"""

import contextlib
import importlib.metadata
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import mlx.core as mx
import numpy as np
import soundfile as sf
from mlx.utils import tree_flatten
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from .. import profiling
from .._version import __version__
from ..audio import audio_duration, load_audio
from ..audio.vad import speech_probabilities
from ..evaluation.reference import RecipeError, force_prefix, reference_libraries
from ..models.codec import MimiCodec, load_codec
from ..models.config import MimiArgs, ModelArgs
from ..models.convert import convert
from ..models.lm import LM, bytes_per_step
from ..models.loading import resolve_model_path, save_model
from ..models.mimi import MimiEncoder
from ..models.mimi_decoder import MimiDecoder
from ..models.model import Model
from ..models.presets import FULL_SIZE, TINY
from ..runtime.decoder import BatchDecoder
from ..runtime.engine import Engine
from ..stt import DEFAULT_BATCH_SIZE, load
from ..tasks import TASK_PREFIXES

# The benchmark's synthetic audio is at Mimi's rate, as every preset's codec; a step is one frame.
SAMPLE_RATE = MimiArgs().sampling_rate
FRAME_MS = 1e3 * MimiArgs().frame_size / SAMPLE_RATE
PRECISIONS = {"bf16": None, "q8": 8, "q4": 4}


def _quiet():
    """Silence the converter's [INFO] lines inside the benchmark."""
    return contextlib.redirect_stdout(io.StringIO())


def _stats(ms: list[float]) -> dict:
    return {"median": statistics.median(ms), "p95": float(np.percentile(ms, 95)), "n": len(ms)}


def _mb(nbytes: int | float) -> float:
    return nbytes / 2**20


def have_reference() -> bool:
    try:
        _, transformers = reference_libraries()
    except RecipeError:
        return False
    # Their progress bars and generation reminders would interleave with ours.
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    return True


# ------------------------------------------------------------------------------------------
# The model under test


def write_tokenizer(path: Path, vocab_size: int) -> None:
    """A word-level `tokenizer.json` with `vocab_size` pieces ("▁w17", "w18", ...): decoding costs
    what it costs with the real sentencepiece vocabulary; the text itself is meaningless."""

    pieces = ["<unk>", "<s>", "</s>", "<pad>"] + [("▁" if i % 3 == 0 else "") + f"w{i}" for i in range(4, vocab_size)]
    tok = Tokenizer(models.WordLevel({p: i for i, p in enumerate(pieces)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.save(str(path / "tokenizer.json"))


def random_checkpoint(config: dict, path: Path, use_transformers: bool, seed: int = 0) -> Path:
    """A checkpoint directory with random weights in `config`'s architecture.

    With transformers: its own model class, LM cast to bf16, codec float32, `save_pretrained`:
    the published checkpoint's layout, loadable by the reference. Without: our `Model` with MLX's
    default init, LM in bf16, saved as an MLX directory.
    """
    path.mkdir(parents=True, exist_ok=True)
    if use_transformers:
        torch, transformers = reference_libraries()
        torch.manual_seed(seed)
        lm = {k: v for k, v in config.items() if k != "codec_config"}
        hf_config = transformers.KyutaiSpeechToTextConfig(
            codec_config=transformers.MimiConfig(**config["codec_config"]), **lm
        )
        model = transformers.KyutaiSpeechToTextForConditionalGeneration(hf_config).eval()
        # Mimi's codebooks start at zero (every code 0); the encoder's cost does not depend on it.
        model.model.to(torch.bfloat16)
        model.lm_head.to(torch.bfloat16)
        model.save_pretrained(path)
        del model
    else:

        mx.random.seed(seed)
        model = Model(ModelArgs.from_dict(config))
        model.lm.set_dtype(mx.bfloat16)
        mx.eval(model.parameters())
        save_model(model, path, config)
        del model
    write_tokenizer(path, config["vocab_size"] - 1)
    return path


def converted_dirs(source: Path, work: Path, precisions: list[str]) -> dict[str, Path]:
    """Each precision as an MLX directory written by `convert` (as a user would make it)."""

    stored = ModelArgs.from_file(source).quantization
    if stored is not None:  # an already quantized model is benchmarked as it is
        return {f"q{stored['bits']}": source}
    out = {}
    for name in precisions:
        bits = PRECISIONS[name]
        with _quiet():
            out[name] = convert(str(source), str(work / name), quantize=bits is not None, q_bits=bits or 4)
    return out


# ------------------------------------------------------------------------------------------
# Measurements


def random_codes(lm, n: int, seed: int = 0) -> mx.array:
    """(n, num_codebooks) random audio codes for timing LM steps (values do not change the cost)."""
    rng = np.random.default_rng(seed)
    codes = mx.array(rng.integers(0, lm.args.codebook_vocab_size - 1, (n, lm.args.num_codebooks)))
    mx.eval(codes)
    return codes


def lm_decoder(lm, batch: int):
    """A `runtime.decoder.BatchDecoder` with `batch` rows (is, en, is, ...), as the engine runs the LM."""

    decoder = BatchDecoder(lm)
    for i in range(batch):
        decoder.add(("is", "en")[i % 2])
    return decoder


def decode_step(decoder, codes: mx.array) -> None:
    """One synced step of every row of `decoder` (`runtime.decoder.BatchDecoder`): BOS at step 0, then a
    row of `codes` per step, evaluated and the chosen tokens read back, as the engine does."""
    t = decoder.steps(0)
    n = decoder.capacity
    audio = None if t == 0 else mx.broadcast_to(codes[t % codes.shape[0]][None], (n, codes.shape[1]))
    token, _ = decoder.step(np.ones(n, bool), audio)
    mx.eval(decoder.state)
    token.tolist()


def time_lm_steps(lm, batch: int, steps: int, warmup: int, budget_s: float | None = None, seed: int = 0) -> list[float]:
    """ms of each synced decoding step (`runtime.decoder.BatchDecoder`, the engine's path) on random codes."""
    decoder = lm_decoder(lm, batch)
    codes = random_codes(lm, warmup + steps, seed)
    return profiling.repeat(lambda i: decode_step(decoder, codes), steps, warmup, budget_s)


def test_audio(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise bursts and silence: content does not change the cost, only the length does."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    envelope = (np.sin(np.arange(n) / SAMPLE_RATE * 2 * np.pi * 0.5) > 0).astype(np.float32)
    return (rng.normal(0, 0.1, n) * envelope).astype(np.float32)


def time_mimi_frames(mimi, frames: int, warmup: int, budget_s: float | None = None) -> list[float]:
    """ms to stream-encode each 80 ms frame."""
    state = mimi.make_state(1)
    n = mimi.frame_size
    audio = mx.array(test_audio((frames + warmup) * n / SAMPLE_RATE))
    return profiling.repeat(
        lambda i: mx.eval(mimi.encode_step(audio[None, i * n : (i + 1) * n], state)), frames, warmup, budget_s
    )


def time_stream_frames(stt, task: str, frames: int, warmup: int, budget_s: float | None = None) -> list[float]:
    """ms of `Stream.feed` per 80 ms frame (Mimi + LM step + words), as the mic loop runs it."""
    stream = stt.stream(task)
    n = stt.model.args.frame_size
    audio = test_audio((frames + warmup) * n / SAMPLE_RATE)
    return profiling.repeat(lambda i: stream.feed(audio[i * n : (i + 1) * n]), frames, warmup, budget_s)


def time_offline(stt, seconds: float) -> dict:
    audio = test_audio(seconds)
    t0 = time.perf_counter()
    stt.transcribe(audio, task="is")
    elapsed = time.perf_counter() - t0
    return {"audio_s": seconds, "elapsed_s": elapsed, "rtf": elapsed / seconds}


def open_engine(stt, batch: int, task: str = "is"):
    """An `engine.Engine` on `stt`'s model with `batch` open streams."""

    engine = Engine(stt.model, stt.tokenizer)
    return engine, [engine.open(task, stt.options) for _ in range(batch)]


def engine_frame(engine, streams, audio: list[np.ndarray], i: int) -> None:
    """Frame `i` of every stream: each fed its next 80 ms, one `Engine.step()` (one Mimi call and
    one LM call for all), and the tokens read back (synced)."""
    n = engine.frame_size
    for s, a in zip(streams, audio):
        engine.push(s, a[(i % (len(a) // n)) * n :][:n])
    engine.step()
    engine.drain()


def time_engine_steps(stt, batch: int, steps: int, warmup: int, budget_s: float | None = None) -> list[float]:
    """ms of each synced engine step with `batch` streams, each fed one 80 ms frame per step."""
    engine, streams = open_engine(stt, batch)
    # 2 s of distinct audio per stream, reused in a loop (content does not change the cost).
    audio = [test_audio(2.0, seed=i) for i in range(batch)]
    ms = profiling.repeat(lambda i: engine_frame(engine, streams, audio, i), steps, warmup, budget_s)
    for s in streams:
        engine.close(s)
    return ms


def engine_sweep(stt, batches: list[int], steps: int, warmup: int, budget_s: float | None, name: str = "") -> dict:
    """Per batch size B: ms per engine step, aggregate throughput (audio seconds per wall second)
    and real-time factor; `capacity_streams`, the largest B whose step stays under 80 ms."""
    out = {"batch": {}}
    for b in batches:
        _log(f"{name}: engine step, {b} streams, {steps} steps")
        ms = _stats(time_engine_steps(stt, b, steps, warmup, budget_s))
        out["batch"][b] = {
            "step_ms": ms,
            "ms_per_stream": ms["median"] / b,
            "audio_s_per_s": b * FRAME_MS / ms["median"],
            "rtf": ms["median"] / FRAME_MS,
        }
        mx.clear_cache()
    fast = [b for b, r in out["batch"].items() if r["step_ms"]["median"] < FRAME_MS]
    out["capacity_streams"] = max(fast, default=0)
    return out


def time_bulk(stt, files: int, seconds: float, work: Path, name: str = "", batch_sizes=None) -> dict:
    """Wall time of `stt.transcribe(paths, batch_size=...)` on `files` wav files of `seconds`
    each, at batch size 1 and `transcribe.DEFAULT_BATCH_SIZE`, one after the other."""

    work.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(files):
        path = work / f"bulk{i:02d}.wav"
        sf.write(str(path), test_audio(seconds, seed=100 + i), SAMPLE_RATE, subtype="FLOAT")
        paths.append(str(path))
    out = {"files": files, "seconds": seconds, "runs": {}}
    tokens = {}
    for bs in batch_sizes or sorted({1, DEFAULT_BATCH_SIZE}):
        _log(f"{name}: bulk transcribe of {files} x {seconds:g} s, batch_size {bs}")
        t0 = time.perf_counter()
        results = stt.transcribe(paths, task="is", batch_size=bs)
        elapsed = time.perf_counter() - t0
        tokens[bs] = [r.tokens for r in results]
        out["runs"][bs] = {"elapsed_s": elapsed, "audio_s_per_s": files * seconds / elapsed}
        mx.clear_cache()
    first = next(iter(tokens.values()))
    out["same_tokens"] = all(t == first for t in tokens.values())
    out["default_batch_size"] = DEFAULT_BATCH_SIZE
    return out


# The full-size model's structure (16 LM layers, 8 Mimi layers, its convolutions, 32 codebooks)
# with small widths and windows: the graph of a frame has the same primitives as at full size
# (they depend on the structure, not the widths), and the steady state (every window full) comes
# after a few dozen frames instead of 375.
KERNELS = dict(
    TINY,
    num_hidden_layers=16,
    ffn_dim=256,  # fc2's input a multiple of the 64 quantization group, as at full size
    codec_config=dict(TINY["codec_config"], num_hidden_layers=8),
)


def count_frame(stt, warm_frames: int, frames: int = 4) -> dict:
    """Kernels of one steady-state engine frame (one stream, task "is"), and host syncs per frame.

    The model runs `warm_frames` frames (windows full), then the next frame's graph is built
    with `mx.async_eval` held back and counted (`profiling.count_graph`): the LM step (tokens,
    KV rings), the Mimi frame (codes, conv and window state) and the whole frame. Host syncs are
    counted over `frames` more frames (`profiling.count_syncs`).
    """

    engine, streams = open_engine(stt, 1)
    audio = [test_audio(4.0)]
    for i in range(warm_frames):
        engine_frame(engine, streams, audio, i)
    held, codes = [], []
    mimi = stt.model.mimi
    step, async_eval = mimi.step, mx.async_eval
    mimi.step = lambda *a, **k: (codes.append(step(*a, **k)), codes[-1])[1]
    mx.async_eval = lambda *arrays: held.append(arrays)
    try:
        n = engine.frame_size
        engine.push(streams[0], audio[0][(warm_frames % (len(audio[0]) // n)) * n :][:n])
        engine.step()
    finally:
        del mimi.step  # the class's method again
        mx.async_eval = async_eval
    mimi_out = [codes[0], *engine.mimi_state.arrays]
    whole = profiling.count_graph(held)
    figures = {
        "lm_step": profiling.count_graph(held, exclude=mimi_out),
        "mimi_frame": profiling.count_graph(mimi_out),
        "frame": whole,
    }
    mx.eval(held)
    engine.drain()
    with profiling.count_syncs() as syncs:
        for i in range(frames):
            engine_frame(engine, streams, audio, warm_frames + 1 + i)
    out = {k: {"total": sum(c.values()), "by_type": dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))}
           for k, c in figures.items()}  # fmt: skip
    out["host_syncs_per_frame"] = syncs.total / frames
    out["host_syncs_by_call"] = {k: v / frames for k, v in syncs.calls.items()}
    return out


# Icelandic sentences for the long recording (espeak-ng reads them; the words need not be right).
LONG_SENTENCES = [
    "Góðan daginn, ég heiti Jón og ég bý í Reykjavík.",
    "Veðrið á Íslandi er oft mjög breytilegt á veturna.",
    "Hvað kostar miði til Akureyrar með rútunni á morgun?",
    "Alþingi kemur saman á ný eftir jólaleyfi í næstu viku.",
    "Fundurinn hófst klukkan tíu og stóð fram yfir hádegi.",
    "Við fórum í sund og síðan í bíó um kvöldið.",
    "Rannsóknin sýnir að fleiri lesa bækur en áður.",
    "Það er spáð snjókomu á Norðurlandi í nótt.",
]


def long_recording(minutes: float, work: Path, seed: int = 0) -> Path:
    """`minutes` of espeak-ng Icelandic with natural pauses (0.3-1.2 s between sentences, 2-3 s
    now and then), as a 24 kHz wav: the kind of recording segmentation is for."""
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        raise RuntimeError("--long needs espeak-ng and sox to make its recording (or pass --long-audio FILE)")
    work.mkdir(parents=True, exist_ok=True)
    clips = []
    for i, text in enumerate(LONG_SENTENCES):
        raw, wav = work / f"s{i}.raw.wav", work / f"s{i}.wav"
        subprocess.run(["espeak-ng", "-v", "is", "-w", str(raw), text], check=True)
        subprocess.run(["sox", "-R", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", str(wav)], check=True)
        clips.append(sf.read(str(wav), dtype="float32")[0])
    rng = np.random.default_rng(seed)
    parts, n = [], 0
    while n < minutes * 60 * SAMPLE_RATE:
        pause = rng.uniform(2.0, 3.0) if rng.random() < 0.15 else rng.uniform(0.3, 1.2)
        parts += [clips[rng.integers(len(clips))], np.zeros(int(pause * SAMPLE_RATE), np.float32)]
        n += len(parts[-2]) + len(parts[-1])
    path = work / "long.wav"
    sf.write(str(path), np.concatenate(parts)[: int(minutes * 60 * SAMPLE_RATE)], SAMPLE_RATE, subtype="FLOAT")
    return path


def long_figures(model: str | None, audio: str | None, minutes: float, work: Path) -> dict:
    """A long recording transcribed with `segment="vad"` and with `segment=None`, in one
    process: wall times and their ratio, the segments, rows per step, the measured batching cost
    the plan used, and the detector's time against the segmented run's."""
    if model:
        source = resolve_model_path(model)
    else:
        _log("long: the full-size structure with small widths, random weights")
        source = random_checkpoint(KERNELS, work / "source", use_transformers=False)
    stt = load(str(source))
    path = Path(audio) if audio else long_recording(minutes, work / "audio")
    duration = audio_duration(str(path))
    out = {"model": model or "full-size structure, small widths (bench.KERNELS)", "audio_s": duration}
    rows = DEFAULT_BATCH_SIZE
    t0 = time.perf_counter()
    out["batch_cost"] = stt.batch_cost(rows)
    out["batch_cost_s"] = time.perf_counter() - t0
    out["rows"] = rows
    t0 = time.perf_counter()
    speech_probabilities(load_audio(str(path), stt.sample_rate), stt.sample_rate)
    out["detector_s"] = time.perf_counter() - t0
    for name, segment in (("none", None), ("vad", "vad")):
        _log(f"long: {duration:.0f} s with --segment {name}")
        job = stt.transcribe_iter([str(path)], task="is", segment=segment)
        t0 = time.perf_counter()
        (item,) = list(job)
        elapsed = time.perf_counter() - t0
        stats = job.engine.stats()
        t = item.result["is"]
        out[name] = {
            "elapsed_s": elapsed,
            "rtf": elapsed / duration,
            "segments": [[seg.start, seg.end] for seg in t.segments] or [[0.0, round(duration, 2)]],
            "mean_rows_per_step": stats["mean_rows_per_step"],
            "steps": stats["steps"],
        }
    out["speedup"] = out["none"]["elapsed_s"] / out["vad"]["elapsed_s"]
    out["detector_share"] = out["detector_s"] / out["vad"]["elapsed_s"]
    return out


def _format_long(r: dict) -> str:
    x = r.get("long")
    if not x:
        return ""
    v, n = x["vad"], x["none"]
    lengths = [b - a for a, b in v["segments"]]
    return "\n".join(
        [
            f"long recording ({x['model']}): {x['audio_s']:.0f} s, --segment vad vs none in one process",
            f"  none: {n['elapsed_s']:.1f} s (RTF {n['rtf']:.3f}), 1 stream, {n['steps']} steps",
            f"  vad:  {v['elapsed_s']:.1f} s (RTF {v['rtf']:.3f}), {len(lengths)} segments of "
            f"{min(lengths):.1f}-{max(lengths):.1f} s, {v['mean_rows_per_step']:.2f} rows per step, {v['steps']} steps",
            f"  speedup {x['speedup']:.2f}x; batching cost at {x['rows']} rows {x['batch_cost']:.2f} single steps "
            f"(measured in {x['batch_cost_s']:.1f} s); detector {x['detector_s']:.1f} s = "
            f"{100 * x['detector_share']:.0f} % of the segmented run",
        ]
    )


def random_codec(config: dict, seed: int = 0) -> MimiCodec:
    """The whole Mimi codec of `config` with MLX's random init and random codebooks (speed does not
    depend on the values)."""
    mx.random.seed(seed)
    args = MimiArgs.from_dict(config["codec_config"])
    encoder, decoder = MimiEncoder(args), MimiDecoder(args)
    for _, m in encoder.named_modules():
        if hasattr(m, "embed_sum"):
            m.embed_sum = mx.random.normal(m.embed_sum.shape) * 0.1
    mx.eval(encoder.parameters(), decoder.parameters())
    return MimiCodec(encoder, decoder)


def codec_figures(model: str | None, config: dict, seconds: float, frames: int, warmup: int, budget_s) -> dict:
    """The Mimi codec alone (`codec` command, `MimiCodec`): streaming decode of one 80 ms frame of 32
    codebooks (and encode, for comparison), and whole-signal decode and encode of `seconds` as RTF."""
    codec = load_codec(model) if model else random_codec(config)
    if not codec.has_decoder:
        raise RuntimeError(codec.missing)
    rng = np.random.default_rng(0)
    codes = mx.array(rng.integers(0, codec.args.codebook_size, (1, codec.args.num_quantizers, warmup + frames)))
    stream = codec.decode_stream()
    out = {"model": model or ("full-size Mimi, random weights" if config is FULL_SIZE else "tiny Mimi, random weights")}
    _log(f"codec: streaming decode, {frames} frames")
    out["decode_frame_ms"] = _stats(
        profiling.repeat(lambda i: stream.feed(codes[:, :, i : i + 1]), frames, warmup, budget_s)
    )
    _log(f"codec: streaming encode, {frames} frames")
    out["encode_frame_ms"] = _stats(time_mimi_frames(codec.encoder, frames, warmup, budget_s))
    n = int(seconds * codec.frame_rate)
    whole = mx.array(rng.integers(0, codec.args.codebook_size, (1, codec.args.num_quantizers, n)))
    audio = test_audio(seconds)[None]
    codec.decode(whole[:, :, :2])  # warm: compiled pieces, derived weights
    for name, fn in (("decode", lambda: codec.decode(whole)), ("encode", lambda: mx.eval(codec.encode(audio)))):
        _log(f"codec: whole-signal {name} of {seconds:g} s")
        t0 = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - t0
        out[f"{name}_whole"] = {"audio_s": seconds, "elapsed_s": elapsed, "rtf": elapsed / seconds}
    out["decode_frame_rtf"] = out["decode_frame_ms"]["median"] / FRAME_MS
    return out


def _format_codec(r: dict) -> str:
    c = r.get("codec")
    if not c:
        return ""
    d, e = c["decode_frame_ms"], c["encode_frame_ms"]
    return "\n".join(
        [
            f"Mimi codec ({c['model']}, float32, 32 codebooks):",
            f"  streaming decode: {d['median']:.1f} ms per 80 ms frame (p95 {d['p95']:.1f}), RTF {c['decode_frame_rtf']:.2f}; "
            f"encode {e['median']:.1f} ms (p95 {e['p95']:.1f})",
            f"  whole signal, {c['decode_whole']['audio_s']:g} s: decode RTF {c['decode_whole']['rtf']:.3f} "
            f"({c['decode_whole']['elapsed_s']:.1f} s), encode RTF {c['encode_whole']['rtf']:.3f} "
            f"({c['encode_whole']['elapsed_s']:.1f} s)",
        ]
    )


def kernel_figures(model: str | None, precisions: list[str], work: Path) -> dict:
    """`count_frame` for each precision of `model` (default: `KERNELS`, random weights), with each
    mx.fast op counted as one (`profiling.fast_ops_as_one`)."""

    with profiling.fast_ops_as_one():
        if model:

            source = resolve_model_path(model)
        else:
            _log("kernels: the full-size structure with small widths, random weights")
            source = random_checkpoint(KERNELS, work / "source", use_transformers=False)
        cfg = ModelArgs.from_file(source)
        # Every window full: the LM's, and the Mimi transformer's (2 positions per frame).
        warm = max(cfg.lm.sliding_window, cfg.mimi.sliding_window // 2 + 1) + 8
        out = {"model": model or "full-size structure, small widths (bench.KERNELS)", "warm_frames": warm}
        for name, path in converted_dirs(source, work, precisions).items():
            _log(f"kernels: {name}, {warm} frames to the steady state")
            out[name] = count_frame(load(str(path)), warm)
    return out


def memory_bandwidth(nbytes: int = 2**30, repeats: int = 5) -> dict:
    """Best read bandwidth (GB/s) of the device MLX runs on: a float32 sum over `nbytes`, and a
    copy (bytes read + written). On the CPU numpy's sum counts too (MLX's CPU reduction is
    slower than the memory bus); on a GPU only MLX sees the device's memory."""
    n = nbytes // 4
    a = mx.ones((n,), mx.float32)
    mx.eval(a)
    gbs = {
        "mlx_sum": nbytes / min(_time(lambda: mx.eval(a.sum())) for _ in range(repeats)) / 1e9,
        "mlx_copy": 2 * nbytes / min(_time(lambda: mx.eval(a + 1)) for _ in range(repeats)) / 1e9,
    }
    if mx.default_device().type == mx.cpu:
        b = np.ones(n, np.float32)
        gbs["numpy_sum"] = nbytes / min(_time(lambda: b.sum()) for _ in range(repeats)) / 1e9
    return {**gbs, "best": max(gbs.values()), "mb": _mb(nbytes)}


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_over_length(config: dict, total: int, around: tuple[int, int], width: int = 200) -> dict:
    """Median ms/step of a tiny random LM around step `around[0]` and around step `around[1]`.

    Two streams are run up to `point - width / 2` steps, then stepped in alternation for `width`
    steps each, so that whatever else the machine does weighs on both alike (timed one after the
    other, a busy minute on a shared CPU moved the ratio between 0.8 and 1.4 with the same code).
    """

    mx.random.seed(0)
    lm = LM(ModelArgs.from_dict(config).lm)
    lm.set_dtype(mx.bfloat16)
    mx.eval(lm.parameters())
    codes = random_codes(lm, 256)

    def step(decoder) -> float:
        t0 = time.perf_counter()
        decode_step(decoder, codes)
        return (time.perf_counter() - t0) * 1e3

    decoders = [lm_decoder(lm, 1) for _ in around]
    for decoder, point in zip(decoders, around):
        for _ in range(max(0, min(point - width // 2, total - width))):
            step(decoder)
    ms = {point: [] for point in around}
    for _ in range(width):
        for decoder, point in zip(decoders, around):
            ms[point].append(step(decoder))
    out = {point: statistics.median(v) for point, v in ms.items()}
    a, b = around
    return {
        "ms_per_step": out,
        "ratio": out[b] / out[a],
        "steps": decoders[-1].steps(0),
        "window": lm.args.sliding_window,
    }


# ------------------------------------------------------------------------------------------
# References


def reference_transformers(ckpt: Path, batches: list[int], steps: int, warmup: int, offline_s: float) -> dict:
    """transformers on the same checkpoint, bf16 as the model card loads it: LM step through its
    own sliding-window cache, and the card's recipe (`generate` with the forced prefix)."""
    torch, transformers = reference_libraries()
    DynamicCache = transformers.DynamicCache
    KyutaiSpeechToTextFeatureExtractor = transformers.KyutaiSpeechToTextFeatureExtractor
    KyutaiSpeechToTextForConditionalGeneration = transformers.KyutaiSpeechToTextForConditionalGeneration

    # Same kind of device as MLX: CUDA when MLX runs on a GPU (mlx[cuda]) and torch has it.
    device = "cuda" if mx.default_device().type == mx.gpu and torch.cuda.is_available() else "cpu"
    model = KyutaiSpeechToTextForConditionalGeneration.from_pretrained(ckpt, dtype=torch.bfloat16).to(device).eval()
    cfg = model.config
    out = {"torch": torch.__version__, "device": device, "threads": torch.get_num_threads(), "lm_step": {}}
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for batch in batches:
            cache = DynamicCache(config=cfg)
            shape = (warmup + steps, batch, 1, 1 + cfg.num_codebooks)
            ids = torch.randint(0, cfg.codebook_vocab_size - 1, shape, generator=g)
            ids[..., 0] = torch.randint(4, cfg.vocab_size - 1, ids.shape[:-1], generator=g)
            ids[0, ..., 0], ids[0, ..., 1:] = cfg.bos_token_id, cfg.audio_bos_token_id
            ids = ids.to(device)
            ms = profiling.repeat(
                lambda i: model(input_ids=ids[i], cache=cache, use_cache=True).logits[:, -1].argmax(-1).tolist(),
                steps,
                warmup,
            )
            out["lm_step"][batch] = _stats(ms)

    if offline_s > 0:
        fe = KyutaiSpeechToTextFeatureExtractor()
        if (ckpt / "preprocessor_config.json").exists():
            fe = KyutaiSpeechToTextFeatureExtractor.from_pretrained(ckpt)
        audio = np.concatenate([test_audio(offline_s), np.zeros(5 * SAMPLE_RATE, np.float32)])
        t0 = time.perf_counter()
        inputs = fe(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt").to(device)
        with torch.no_grad():
            force = force_prefix(TASK_PREFIXES["is"], pad_token_id=cfg.pad_token_id)
            seq = model.generate(**inputs, logits_processor=[force])
        elapsed = time.perf_counter() - t0
        n = seq.shape[1] - 1
        out["recipe"] = {
            "audio_s": offline_s,
            "elapsed_s": elapsed,
            "rtf": elapsed / offline_s,
            "steps": n,
            "ms_per_step": elapsed / n * 1e3,
        }
    return out


def reference_moshi_mlx(config: dict, steps: int, warmup: int, budget_s: float | None = None) -> dict | None:
    """Kyutai's moshi_mlx LM (if installed) with this architecture in bf16, on the same MLX
    backend: one `LmGen.step` per frame, as its STT script runs it. None if not installed."""
    try:
        import moshi_mlx.models as models
        import moshi_mlx.utils.sampling as sampling
    except ImportError:
        return None
    a = config
    n_q = a["num_codebooks"]
    lm_config = models.LmConfig.from_config_dict(
        {
            "dim": a["hidden_size"],
            "num_heads": a["num_attention_heads"],
            "num_layers": a["num_hidden_layers"],
            "causal": True,
            "layer_scale": None,
            "context": a["sliding_window"],
            "max_period": a["rope_parameters"]["rope_theta"],
            "positional_embedding": "rope",
            "depformer_dim": 1024,
            "depformer_num_heads": 16,
            "depformer_num_layers": 0,
            "depformer_dim_feedforward": 4096,
            "depformer_pos_emb": "none",
            "dep_q": 0,
            "n_q": n_q,
            "card": a["codebook_vocab_size"] - 1,
            "text_card": a["vocab_size"] - 1,
            "existing_text_padding_id": a["pad_token_id"],
            "delays": [0] * (n_q + 1),
            "conditioners": {},
        }
    )
    # moshi_mlx 0.3 fixes dim_feedforward at 4 x dim (gated hidden 2/3 of it); Kyutai's STT configs
    # use hidden_scale 4.125. Set it so the gated FFN has exactly ffn_dim / 2 hidden units, as ours.
    lm_config.transformer.dim_feedforward = a["ffn_dim"] * 3 // 4
    mx.random.seed(0)
    model = models.Lm(lm_config)
    model.set_dtype(mx.bfloat16)
    mx.eval(model.parameters())
    gen = models.LmGen(
        model=model,
        max_steps=warmup + steps + 1,
        text_sampler=sampling.Sampler(temp=0.0),
        audio_sampler=sampling.Sampler(temp=0.0),
        check=False,
    )
    rng = np.random.default_rng(0)
    codes = mx.array(rng.integers(0, lm_config.audio_vocab_size - 1, (warmup + steps, 1, n_q)), dtype=mx.int32)
    mx.eval(codes)

    def one(i):
        token, _ = gen.step(codes[i])
        mx.eval(token)
        token.tolist()

    ms = profiling.repeat(one, steps, warmup, budget_s)
    return {"version": importlib.metadata.version("moshi_mlx"), "lm_step": _stats(ms)}


# ------------------------------------------------------------------------------------------
# The run


def run(args) -> dict:

    quick = args.quick
    steps = args.steps or (4 if quick else 30)
    warmup = args.warmup if args.warmup is not None else (2 if quick else 5)
    budget = args.budget
    offline_s = args.offline_seconds if args.offline_seconds is not None else (2.0 if quick else 60.0)
    batches = [1, 2]
    precisions = args.precisions
    # --batch, --bulk and --kernels each run only their own section; without them, the classic set.
    classic = not (args.batch or args.bulk or args.kernels or getattr(args, "long", False) or getattr(args, "codec", False))
    use_ref = classic and have_reference() and not args.no_reference
    config = TINY if quick else FULL_SIZE
    result = {
        "date": date.today().isoformat(),
        "machine": _machine(),
        "mlx": mx.__version__,
        "package": __version__,
        "device": str(mx.default_device()),
        "model": args.model or ("tiny random" if quick else "full-size random"),
    }
    work = Path(tempfile.mkdtemp(prefix="mlx-kyutai-is-bench-"))
    try:
        if args.kernels:
            # First: the fences that count each mx.fast op as one must be there when the compiled
            # functions are traced.
            result["kernels"] = kernel_figures(args.model, precisions, work / "kernels")
            _save_partial(result, args.output)
        if getattr(args, "long", False):
            result["long"] = long_figures(args.model, args.long_audio, args.long_minutes, work / "long")
            _save_partial(result, args.output)
        if getattr(args, "codec", False):
            seconds = args.offline_seconds if args.offline_seconds else (2.0 if quick else 20.0)
            result["codec"] = codec_figures(args.model, config, seconds, steps, warmup, budget)
            _save_partial(result, args.output)
        if not (classic or args.batch or args.bulk):
            result["model"] = (result.get("kernels") or result.get("long") or result.get("codec"))["model"]
            return result
        if args.model:

            source = resolve_model_path(args.model)
            config_json = json.loads((source / "config.json").read_text())
            use_ref = use_ref and "mlx_kyutai_is" not in config_json  # the reference needs the HF layout
        else:
            _log(f"building the {'tiny' if quick else 'full-size'} architecture with random weights")
            source = random_checkpoint(config, work / "source", use_transformers=use_ref)
            config_json = config
        cfg = ModelArgs.from_file(source)
        result["config"] = {
            "hidden": cfg.lm.hidden_size, "layers": cfg.lm.num_hidden_layers, "window": cfg.lm.sliding_window,
            "vocab": cfg.lm.vocab_size, "codebooks": cfg.lm.num_codebooks, "mimi_hidden": cfg.mimi.hidden_size,
        }  # fmt: skip
        if classic:
            _log("measuring memory bandwidth")
            result["bandwidth_gbs"] = memory_bandwidth(2**26 if quick else 2**30)
            bw = result["bandwidth_gbs"]["best"] * 1e9
            result["precisions"] = {}
        dirs = converted_dirs(source, work, precisions)
        mimi_done = False
        for name, path in dirs.items():
            _log(f"{name}: loading")
            mx.clear_cache()
            mx.reset_peak_memory()
            t0 = time.perf_counter()
            stt = load(str(path))
            load_s = time.perf_counter() - t0
            if args.batch:
                result.setdefault("engine", {})[name] = engine_sweep(stt, args.batch, steps, warmup, budget, name)
                _save_partial(result, args.output)
            if args.bulk:
                result.setdefault("bulk", {})[name] = time_bulk(
                    stt, args.bulk_files, args.bulk_seconds, work / "bulk", name
                )
                _save_partial(result, args.output)
            if not classic:
                del stt
                continue
            lm = stt.model.lm
            row = {
                "load_s": load_s,
                "weights_mb": _mb(sum(v.nbytes for _, v in tree_flatten(stt.model.parameters()))),
                "lm_weights_mb": _mb(sum(v.nbytes for _, v in tree_flatten(lm.parameters()))),
                "file_mb": _mb(sum(f.stat().st_size for f in Path(path).glob("*.safetensors"))),
                "batch": {},
            }
            if not mimi_done:
                _log(f"{name}: Mimi streaming, {steps} frames")
                result["mimi_frame_ms"] = _stats(time_mimi_frames(stt.model.mimi, steps, warmup, budget))
                mimi_done = True
            for batch in batches:
                _log(f"{name}: LM step and stream step, batch {batch}, {steps} steps")
                lm_ms = _stats(time_lm_steps(lm, batch, steps, warmup, budget))
                floor_ms = bytes_per_step(lm, batch) / bw * 1e3
                stream_ms = _stats(time_stream_frames(stt, "is" if batch == 1 else "both", steps, warmup, budget))
                row["batch"][batch] = {
                    "lm_step_ms": lm_ms,
                    "floor_ms": floor_ms,
                    "x_floor": lm_ms["median"] / floor_ms,
                    "stream_step_ms": stream_ms,
                    "rtf": stream_ms["median"] / FRAME_MS,
                }
            if offline_s > 0:
                # transcribe() runs one step per frame of the audio plus ~6 s of flush padding.
                estimate = (offline_s + 6) / (FRAME_MS / 1e3) * row["batch"][1]["stream_step_ms"]["median"] / 1e3
                if estimate > args.max_offline_minutes * 60:
                    row["offline"] = {"skipped": f"would take ~{estimate / 60:.0f} min (--max-offline-minutes)"}
                    _log(f"{name}: offline transcribe skipped: {row['offline']['skipped']}")
                else:
                    _log(f"{name}: offline transcribe of {offline_s:g} s (~{estimate / 60:.1f} min)")
                    row["offline"] = time_offline(stt, offline_s)
            row["peak_mb"] = _mb(mx.get_peak_memory())
            result["precisions"][name] = row
            _save_partial(result, args.output)
            del stt, lm
        if not classic:
            return result
        if use_ref:
            _log("transformers reference (bf16)")
            result["transformers"] = reference_transformers(source, batches, steps, warmup, offline_s)
            _save_partial(result, args.output)
        if not args.no_reference:
            _log("moshi_mlx reference (if installed)")
            mm = reference_moshi_mlx({**FULL_SIZE, **_lm_config(config_json)}, steps, warmup, budget)
            if mm is not None:
                result["moshi_mlx"] = mm
        total = args.length_steps or (1200 if quick else 10_100)
        _log(f"cost over length: tiny model, {total} steps")
        result["length"] = time_over_length(TINY, total, (min(400, total // 3), min(10_000, total - 100)))
        _ratios(result)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _save_partial(result: dict, output: str | None) -> None:
    """A long run keeps what it has measured so far in `--output` (the end rewrites it whole)."""
    if output:
        Path(output).write_text(json.dumps(result, indent=2) + "\n")


def _lm_config(config: dict) -> dict:
    return {k: v for k, v in config.items() if k in FULL_SIZE and k != "codec_config"}


def _ratios(r: dict) -> None:
    """Ours over the references, for the headline rows (bf16)."""
    ours = r["precisions"].get("bf16") or next(iter(r["precisions"].values()))
    out = {}
    ref = r.get("transformers")
    if ref:
        for b, row in ours["batch"].items():
            out[f"lm_step_vs_transformers_b{b}"] = row["lm_step_ms"]["median"] / ref["lm_step"][b]["median"]
        if "recipe" in ref and "rtf" in ours.get("offline", {}):
            out["offline_rtf_vs_recipe"] = ours["offline"]["rtf"] / ref["recipe"]["rtf"]
            step = ours["batch"][1]["stream_step_ms"]["median"]
            out["stream_step_vs_recipe_step"] = step / ref["recipe"]["ms_per_step"]
    if r.get("moshi_mlx"):
        out["lm_step_vs_moshi_mlx"] = ours["batch"][1]["lm_step_ms"]["median"] / r["moshi_mlx"]["lm_step"]["median"]
    r["ratios"] = out


def _machine() -> str:
    try:  # MLX's own name for the device it runs on ("AMD EPYC", "NVIDIA H100 80GB HBM3", "Apple M3 Max")
        name = mx.device_info().get("device_name", "")
    except Exception:
        name = ""
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {name or platform.processor()}"


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def format_table(r: dict) -> str:
    title = (
        f"mlx-kyutai-is {r['package']} bench — {r['model']} — {r['date']} — {r['machine']} — "
        f"mlx {r['mlx']} ({r['device']})"
    )
    sections = [_format_kernels(r), _format_engine(r), _format_bulk(r), _format_long(r), _format_codec(r)]
    if "precisions" not in r:
        return "\n\n".join([title] + [x for x in sections if x])
    return "\n\n".join([title, _format_classic(r)] + [x for x in sections if x])


def _format_kernels(r: dict) -> str:
    k = r.get("kernels")
    if not k:
        return ""
    lines = [
        f"kernels per 80 ms frame ({k['model']}; one stream, steady state after {k['warm_frames']} frames; "
        "graph primitives, views left out, each mx.fast op one):",
        f"{'prec':<5} {'LM step':>8} {'Mimi frame':>11} {'whole frame':>12} {'host syncs/frame':>17}",
    ]
    precs = [name for name in k if isinstance(k[name], dict)]
    for name in precs:
        f = k[name]
        lines.append(
            f"{name:<5} {f['lm_step']['total']:>8} {f['mimi_frame']['total']:>11} {f['frame']['total']:>12} "
            f"{f['host_syncs_per_frame']:>17.2f}"
        )
    for part in ("lm_step", "mimi_frame"):
        by_type = k[precs[0]][part]["by_type"]
        lines.append(f"{precs[0]} {part} by type: " + ", ".join(f"{t} {n}" for t, n in by_type.items()))
    return "\n".join(lines)


def _format_engine(r: dict) -> str:
    e = r.get("engine")
    if not e:
        return ""
    lines = [
        "engine step (one Mimi call + one LM call for B streams, each fed one 80 ms frame; synced):",
        f"{'prec':<5} {'B':>3} {'step ms':>17} {'ms/stream':>10} {'audio s/s':>10} {'RTF':>6}",
    ]
    for name, sweep in e.items():
        for b, row in sweep["batch"].items():
            ms = row["step_ms"]
            lines.append(
                f"{name:<5} {b:>3} {ms['median']:>8.1f} / {ms['p95']:>6.1f} {row['ms_per_stream']:>10.1f} "
                f"{row['audio_s_per_s']:>10.2f} {row['rtf']:>6.2f}"
            )
    lines.append(
        "capacity in real-time streams (largest B measured whose step is under 80 ms): "
        + ", ".join(f"{name} {sweep['capacity_streams']}" for name, sweep in e.items())
    )
    return "\n".join(lines)


def _format_bulk(r: dict) -> str:
    b = r.get("bulk")
    if not b:
        return ""
    lines = []
    for name, row in b.items():
        runs = row["runs"]
        first = next(iter(runs.values()))["elapsed_s"]
        lines.append(
            f"bulk ({name}): {row['files']} files x {row['seconds']:g} s through transcribe([...]): "
            + ", ".join(
                f"batch_size {bs} {x['elapsed_s']:.1f} s ({x['audio_s_per_s']:.2f} audio s/s, "
                f"{first / x['elapsed_s']:.2f}x)"
                for bs, x in runs.items()
            )
            + f"; same tokens: {'yes' if row['same_tokens'] else 'NO'}"
        )
    return "\n".join(lines)


def _format_classic(r: dict) -> str:
    lines = [
        f"memory bandwidth (best over {r['bandwidth_gbs']['mb']:.0f} MB of float32): "
        f"{r['bandwidth_gbs']['best']:.1f} GB/s ("
        + ", ".join(f"{k} {v:.1f}" for k, v in r["bandwidth_gbs"].items() if k not in ("best", "mb"))
        + ")",
        f"Mimi streaming encode: {r['mimi_frame_ms']['median']:.1f} ms per 80 ms frame "
        f"(p95 {r['mimi_frame_ms']['p95']:.1f})",
        "",
        f"{'prec':<5} {'B':>1} {'LM step ms':>17} {'floor ms':>9} {'x floor':>8} {'stream step ms':>17} {'RTF':>6} "
        f"{'offline RTF':>11} {'load s':>7} {'weights MB':>10} {'peak MB':>8}",
    ]
    for name, row in r["precisions"].items():
        for b, br in row["batch"].items():
            off = row.get("offline", {}).get("rtf", "skipped" if "offline" in row else None)
            lines.append(
                f"{name:<5} {b:>1} {br['lm_step_ms']['median']:>8.1f} / {br['lm_step_ms']['p95']:>6.1f} "
                f"{br['floor_ms']:>9.1f} {br['x_floor']:>8.2f} "
                f"{br['stream_step_ms']['median']:>8.1f} / {br['stream_step_ms']['p95']:>6.1f} {br['rtf']:>6.2f} "
                f"{(_fmt(off) if b == 1 else ''):>11} {row['load_s']:>7.2f} "
                f"{row['weights_mb']:>10.0f} {row['peak_mb']:>8.0f}"
            )
    ref = r.get("transformers")
    if ref:
        where = f"{ref['threads']} CPU threads" if ref.get("device", "cpu") == "cpu" else ref["device"]
        lines += ["", f"transformers (torch {ref['torch']}, bf16, {where}), same weights:"]
        for b, s in ref["lm_step"].items():
            lines.append(f"  LM step, batch {b}: {s['median']:.1f} ms (p95 {s['p95']:.1f})")
        if "recipe" in ref:
            rc = ref["recipe"]
            lines.append(
                f"  model card recipe (generate) on {rc['audio_s']:g} s: {rc['ms_per_step']:.1f} ms per step, "
                f"RTF {rc['rtf']:.2f}"
            )
    else:
        lines += ["", 'transformers reference: not run (install the test extra: pip install "mlx-kyutai-is[test]")']
    mm = r.get("moshi_mlx")
    if mm:
        lines.append(
            f"moshi_mlx {mm['version']} (same backend, same architecture, bf16): "
            f"LM step {mm['lm_step']['median']:.1f} ms"
        )
    else:
        lines.append("moshi_mlx: not installed (pip install --no-deps moshi_mlx to compare)")
    if r["ratios"]:
        lines += ["", "ratios (ours / reference, bf16): " + ", ".join(f"{k} {v:.2f}" for k, v in r["ratios"].items())]
    ln = r["length"]
    (a, ma), (b, mb) = ln["ms_per_step"].items()
    lines.append(
        f"cost over length (tiny model, window {ln['window']}): {ma:.2f} ms/step around step {a}, "
        f"{mb:.2f} around step {b}: ratio {ln['ratio']:.2f}"
    )
    return "\n".join(lines)


def _fmt(x) -> str:
    return "" if x is None else x if isinstance(x, str) else f"{x:.2f}"

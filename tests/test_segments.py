# Copyright © 2026 mlx-kyutai-is contributors
"""Long recordings cut at pauses and decoded as parallel segments (runtime/segments.py, stt.py):
every segment equals `transcribe()` of its slice alone, cuts fall on frame boundaries inside
pauses, short clips and `segment=None` are decoded exactly as one stream, outputs in every format."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from checkpoints import parse_srt, read_wav

from mlx_kyutai_is import load
from mlx_kyutai_is.runtime.segments import plan_segments

SR = 24_000
FRAME_S = 0.08
GAP = 1.5
MAX_SEGMENT = 20.0


@pytest.fixture(scope="module")
def stt(small_hf):
    s = load(small_hf, dtype="float32")
    for rows in (2, 4, 8):
        s.batch_costs[rows] = 1.0  # as on a GPU: batching is free, so cutting pays
    return s


@pytest.fixture(scope="module")
def long_recording(speech, tmp_path_factory):
    """~2.5 minutes: the three sentences nine times over, 1.5 s of silence between them; the
    silences' bounds (s) where a cut may fall."""
    clips = [read_wav(p) for p in speech]
    parts, gaps, t, t_end_speech = [], [], 0.0, 0.0
    for i in range(27):
        x = clips[i % 3]
        loud = np.flatnonzero(np.abs(x) > 0.01)
        if parts:
            gaps.append((t_end_speech, t + loud[0] / SR))
        parts += [x, np.zeros(int(GAP * SR), np.float32)]
        t_end_speech = t + loud[-1] / SR
        t += len(x) / SR + GAP
    audio = np.concatenate(parts)
    path = tmp_path_factory.mktemp("long") / "long.wav"
    sf.write(path, audio, SR, subtype="FLOAT")
    return path, audio, gaps


def _shifted(words, offset):
    return [(w.text, round(w.start - offset, 6), round(w.end - offset, 6), w.tokens) for w in words]


@pytest.mark.slow
def test_every_segment_decodes_as_its_slice_alone(stt, long_recording):
    path, audio, gaps = long_recording
    result = stt.transcribe(str(path), task="is", max_segment=MAX_SEGMENT)
    t = result["is"]
    assert len(audio) / SR > 140 and len(t.segments) >= 7
    assert t.segments[0].start == 0.0 and t.duration == pytest.approx(len(audio) / SR)
    first_word = 0
    for seg, nxt in zip(t.segments, t.segments[1:] + [None]):
        if nxt is not None:
            assert seg.end == nxt.start
            assert abs(seg.end / FRAME_S - round(seg.end / FRAME_S)) < 1e-6  # a frame boundary
            assert any(a <= seg.end <= b for a, b in gaps), (seg.end, gaps)  # inside a pause
            assert seg.end - seg.start <= MAX_SEGMENT + 1e-6
        piece = audio[round(seg.start * SR) : round(seg.end * SR) if nxt is not None else len(audio)]
        alone = stt.transcribe(piece, task="is", segment=None)
        assert alone.tokens == seg.tokens and alone.text == seg.text
        mine = t.words[first_word : first_word + seg.words]
        assert _shifted(mine, seg.start) == _shifted(alone.words, 0.0)
        first_word += seg.words
    assert first_word == len(t.words)
    assert [w.start for w in t.words] == sorted(w.start for w in t.words)
    assert t.text == " ".join(s.text for s in t.segments if s.text)


@pytest.mark.slow
def test_segment_none_is_one_unbroken_stream(stt, long_recording):
    path, audio, _ = long_recording
    result = stt.transcribe(str(path), task="is", segment=None)
    assert result["is"].segments == []
    with stt.stream("is") as s:
        s.feed(audio)
    assert result.tokens == s.transcripts()["is"].tokens


@pytest.mark.slow
def test_short_clips_are_never_cut(stt, speech):
    for path in speech:
        cut = stt.transcribe(str(path), task="both")
        whole = stt.transcribe(str(path), task="both", segment=None)
        assert cut == whole and cut["is"].segments == []


@pytest.mark.slow
def test_both_shares_one_segmentation_and_batches_of_long_files(stt, long_recording, tmp_path):
    path, audio, _ = long_recording
    both = stt.transcribe(str(path), task="both", max_segment=MAX_SEGMENT)
    spans = [[(s.start, s.end) for s in both[t].segments] for t in ("is", "en")]
    assert spans[0] == spans[1] and len(spans[0]) >= 7
    other = tmp_path / "other.wav"
    sf.write(other, audio[: len(audio) * 2 // 3], SR, subtype="FLOAT")
    together = stt.transcribe([str(path), str(other)], task="is", max_segment=MAX_SEGMENT, batch_size=8)
    for p, r in zip((path, other), together):
        assert r == stt.transcribe([str(p), str(p)], task="is", max_segment=MAX_SEGMENT, batch_size=8)[0]
        assert len(r["is"].segments) >= 2


@pytest.mark.slow
def test_interrupted_job_keeps_the_segments_decoded(stt, long_recording):
    path, audio, _ = long_recording
    seen = []

    def stop_after_some_words(i, words):
        seen.extend(words)
        if len(seen) > 40:
            raise KeyboardInterrupt

    job = stt.transcribe_iter([str(path)], task="is", max_segment=MAX_SEGMENT, on_words=stop_after_some_words)
    with pytest.raises(KeyboardInterrupt):
        list(job)
    (item,) = job.partials()
    t = item.result["is"]
    assert item.partial and t.partial and 0 < t.duration <= len(audio) / SR
    assert len(t.words) >= 40 and t.segments


def test_the_plan_never_cuts_where_batching_does_not_pay():
    overhead, rate = 81.0, 12.5
    # A CPU at full size: 8 rows cost 5 single steps; cutting would be slower.
    assert plan_segments(300.0, 8, 5.0, overhead, rate) is None
    # Batching nearly free (a GPU): a few long balanced segments, none over the longest.
    target = plan_segments(300.0, 8, 1.1, overhead, rate)
    assert target is not None and 15.0 <= target <= 30.0
    # Audio no longer than the longest segment is never cut; one row cannot gain.
    assert plan_segments(29.0, 8, 1.0, overhead, rate) is None
    assert plan_segments(300.0, 1, 1.0, overhead, rate) is None
    # Unknown length (a pipe): the longest segments, if a full batch would gain.
    assert plan_segments(None, 8, 1.0, overhead, rate) == 30.0
    assert plan_segments(None, 8, 8.0, overhead, rate) is None


@pytest.mark.slow
def test_cli_writes_segments_in_every_format(small_hf, long_recording, tmp_path):
    path, audio, _ = long_recording
    env = {**os.environ, "MLX_KYUTAI_IS_BATCH_COST": "1.0"}
    cmd = [sys.executable, "-m", "mlx_kyutai_is", "transcribe", str(path), "--model", str(small_hf)]
    cmd += ["-f", "all", "-o", str(tmp_path), "--max-segment", str(MAX_SEGMENT)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr
    data = json.loads((tmp_path / "long.json").read_text(encoding="utf-8"))
    segments = data["segments"]
    assert len(segments) >= 7 and set(segments[0]) == {"start", "end", "text", "tokens"}
    for s in segments[:-1]:
        assert abs(s["end"] / FRAME_S - round(s["end"] / FRAME_S)) < 1e-6
    assert data["text"] == " ".join(s["text"] for s in segments if s["text"])
    bounds = [s["start"] for s in segments[1:]]
    for _, start, end, _ in parse_srt((tmp_path / "long.srt").read_text(encoding="utf-8")):
        assert not any(start < b < end for b in bounds), (start, end)  # no cue spans two segments
    assert (tmp_path / "long.txt").read_text(encoding="utf-8").strip() == data["text"]
    assert (tmp_path / "long.vtt").exists()

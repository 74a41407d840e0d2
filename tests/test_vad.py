# Copyright © 2026 mlx-kyutai-is contributors
"""The voice-activity detector (audio/vad.py) on espeak-ng Icelandic speech with known silences,
on silence, noise and clipped audio, and its live form (SpeechTracker) against the offline one."""

import numpy as np
import pytest
from checkpoints import read_wav

from mlx_kyutai_is.audio.vad import SpeechParams, SpeechTracker, VoiceActivity, speech_probabilities, speech_spans

SR = 24_000
GAP = 1.5


def _speech_extent(x, threshold=0.01):
    """(first, last) second where the espeak recording is not silent."""
    loud = np.flatnonzero(np.abs(x) > threshold)
    return loud[0] / SR, loud[-1] / SR


@pytest.fixture(scope="module")
def recording(speech):
    """Three sentences between 1.5 s silences, and where each sentence really is (s)."""
    parts, truth, t = [np.zeros(int(GAP * SR), np.float32)], [], GAP
    for path in speech:
        x = read_wav(path)
        a, b = _speech_extent(x)
        truth.append((t + a, t + b))
        parts += [x, np.zeros(int(GAP * SR), np.float32)]
        t += len(x) / SR + GAP
    return np.concatenate(parts), truth


def test_spans_of_speech_with_known_silences(recording):
    audio, truth = recording
    spans = speech_spans(speech_probabilities(audio, SR), duration=len(audio) / SR)
    assert len(spans) == len(truth), spans
    for (s, e), (ts, te) in zip(spans, truth):
        assert abs(s - ts) <= 0.1 and abs(e - te) <= 0.1, (spans, truth)


def test_any_input_rate_gives_the_same_spans(recording, tmp_path):
    audio, truth = recording
    import soxr

    at_16k = soxr.resample(audio, SR, 16_000)
    at_44k = soxr.resample(audio, SR, 44_100)
    for x, rate in ((at_16k, 16_000), (at_44k, 44_100)):
        spans = speech_spans(speech_probabilities(x, rate), duration=len(x) / rate)
        assert len(spans) == len(truth)
        for (s, e), (ts, te) in zip(spans, truth):
            assert abs(s - ts) <= 0.1 and abs(e - te) <= 0.1


def test_silence_noise_and_clipping():
    silence = np.zeros(5 * SR, np.float32)
    assert speech_spans(speech_probabilities(silence, SR)) == []
    noise = np.random.default_rng(0).normal(scale=0.3, size=5 * SR).astype(np.float32)
    probs = speech_probabilities(noise, SR)
    assert probs.shape == (5 * 16_000 // 512,) and np.all((probs >= 0) & (probs <= 1))
    assert sum(e - s for s, e in speech_spans(probs)) < 1.0  # white noise is not speech


def test_clipped_speech_is_still_speech(recording):
    audio, truth = recording
    clipped = np.clip(audio * 20, -1, 1)
    spans = speech_spans(speech_probabilities(clipped, SR), duration=len(audio) / SR)
    assert len(spans) == len(truth)
    for (s, e), (ts, te) in zip(spans, truth):
        assert s <= ts + 0.2 and e >= te - 0.2


@pytest.mark.parametrize("chunk", [160, 1920, 7777])
def test_live_tracker_agrees_with_the_offline_spans(recording, chunk):
    audio, _ = recording
    params = SpeechParams()
    offline = speech_spans(speech_probabilities(audio, SR), params, duration=len(audio) / SR)
    vad, tracker, events = VoiceActivity(SR), SpeechTracker(params, prefix=0.0), []
    for i in range(0, len(audio), chunk):
        events += tracker.update(vad.feed(audio[i : i + chunk], last=i + chunk >= len(audio)))
    starts = [t for kind, t in events if kind == "start"]
    stops = [t for kind, t in events if kind == "stop"]
    assert len(starts) == len(stops) == len(offline)
    for (s, e), a, b in zip(offline, starts, stops):  # the offline spans are padded by 30 ms
        assert abs(a - s) <= params.pad + 1e-6 and abs(b - e) <= params.pad + 1e-6


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="threshold"):
        SpeechParams(threshold=1.5)
    with pytest.raises(ValueError, match="min_silence"):
        SpeechParams(min_silence=-1)

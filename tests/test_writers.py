"""Writers: files parsed back with small srt/vtt parsers written here, timestamps, bilingual names."""

import json
import re

import pytest

from mlx_kyutai_is.decoding import Word
from mlx_kyutai_is.decoding import Transcript
from mlx_kyutai_is.writers import build_cues, format_timestamp, get_writer

SRT_TIME = r"(\d\d):(\d\d):(\d\d),(\d\d\d)"
VTT_TIME = r"(\d\d):(\d\d):(\d\d)\.(\d\d\d)"


def _seconds(h, m, s, ms):
    return round(int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000, 3)


def parse_srt(text):
    """[(index, start, end, text)] from an srt file; fails on any malformed block."""
    cues = []
    for block in text.strip().split("\n\n") if text.strip() else []:
        lines = block.split("\n")
        m = re.fullmatch(f"{SRT_TIME} --> {SRT_TIME}", lines[1])
        assert m, f"bad srt timing line {lines[1]!r}"
        g = m.groups()
        assert len(lines) >= 3, block
        cues.append((int(lines[0]), _seconds(*g[:4]), _seconds(*g[4:]), "\n".join(lines[2:])))
    assert [c[0] for c in cues] == list(range(1, len(cues) + 1))
    return cues


def parse_vtt(text):
    """[(start, end, text)] from a WebVTT file."""
    head, _, body = text.partition("\n\n")
    assert head == "WEBVTT"
    cues = []
    for block in body.strip().split("\n\n") if body.strip() else []:
        lines = block.split("\n")
        m = re.fullmatch(f"{VTT_TIME} --> {VTT_TIME}", lines[0])
        assert m, f"bad vtt timing line {lines[0]!r}"
        g = m.groups()
        cues.append((_seconds(*g[:4]), _seconds(*g[4:]), "\n".join(lines[1:])))
    return cues


def make_transcript(spec, task="is", duration=None):
    """spec: [(text, start, end)]."""
    words = [Word(text=t, start=s, end=e, task=task, tokens=[100 + i]) for i, (t, s, e) in enumerate(spec)]
    text = " ".join(t for t, _, _ in spec)
    duration = duration if duration is not None else (spec[-1][2] + 1.0 if spec else 0.0)
    tokens = [tok for w in words for tok in w.tokens]
    return Transcript(text=text, words=words, task=task, duration=duration, tokens=tokens)


SPEC = [
    ("Góðan", 0.24, 0.56),
    ("daginn,", 0.56, 0.96),
    ("ég", 1.04, 1.12),
    ("heiti", 1.2, 1.44),
    ("Jón.", 1.52, 1.84),
    ("Veðrið", 4.0, 4.4),  # after a long pause
    ("er", 4.48, 4.56),
    ("oft", 4.64, 4.8),
    ("mjög", 4.88, 5.12),
    ("breytilegt", 5.2, 5.76),
]


@pytest.mark.parametrize(
    "seconds, srt, vtt",
    [
        (0.0, "00:00:00,000", "00:00:00.000"),
        (1.234, "00:00:01,234", "00:00:01.234"),
        (61.0005, "00:01:01,000", "00:01:01.000"),
        (3599.9996, "01:00:00,000", "01:00:00.000"),
        (3723.456, "01:02:03,456", "01:02:03.456"),
        (-0.3, "00:00:00,000", "00:00:00.000"),
    ],
)
def test_format_timestamp(seconds, srt, vtt):
    assert format_timestamp(seconds, ",") == srt
    assert format_timestamp(seconds) == vtt


def test_srt_vtt_json_round_trip(tmp_path):
    tr = make_transcript(SPEC)
    paths = get_writer("all", tmp_path)(tr, "talk")
    assert sorted(p.name for p in paths) == ["talk.json", "talk.srt", "talk.txt", "talk.vtt"]

    srt = parse_srt((tmp_path / "talk.srt").read_text(encoding="utf-8"))
    vtt = parse_vtt((tmp_path / "talk.vtt").read_text(encoding="utf-8"))
    # sentence end closes the first cue; the pause would too
    assert [c[3] for c in srt] == ["Góðan daginn, ég heiti Jón.", "Veðrið er oft mjög breytilegt"]
    assert [c[1:3] for c in srt] == [(0.24, 1.84), (4.0, 5.76)]
    assert [(s, e, t) for _, s, e, t in srt] == vtt

    data = json.loads((tmp_path / "talk.json").read_text(encoding="utf-8"))
    assert data["text"] == tr.text
    assert data["task"] == "is"
    assert data["duration"] == pytest.approx(6.76)
    assert data["words"][0] == {"start": 0.24, "end": 0.56, "text": "Góðan"}
    assert [w["text"] for w in data["words"]] == [w[0] for w in SPEC]
    assert data["tokens"] == list(range(100, 100 + len(SPEC)))
    assert (tmp_path / "talk.txt").read_text(encoding="utf-8") == tr.text + "\n"


def test_cues_split_long_lines_and_durations():
    spec = [(f"orð{i:02d}", i * 0.3, i * 0.3 + 0.25) for i in range(60)]  # 18 s, no pauses
    cues = build_cues(make_transcript(spec).words, max_line_width=20, max_line_count=2, max_duration=5.0)
    assert " ".join(" ".join(c.lines) for c in cues) == " ".join(t for t, _, _ in spec)
    for c in cues:
        assert 1 <= len(c.lines) <= 2
        assert all(len(line) <= 20 for line in c.lines)
        assert c.end - c.start <= 5.0
        assert c.end > c.start
    assert all(a.end <= b.start for a, b in zip(cues, cues[1:]))


def test_cues_pause_and_instant_words():
    # no punctuation: only the pause splits; zero-length words still get a visible cue
    spec = [("a", 1.0, 1.0), ("b", 1.2, 1.2), ("c", 3.0, 3.0)]
    cues = build_cues(make_transcript(spec).words)
    assert [c.lines for c in cues] == [["a b"], ["c"]]
    assert cues[0].start == 1.0 and cues[0].end == pytest.approx(1.2)
    assert cues[1].start == 3.0 and cues[1].end == pytest.approx(3.5)
    # a word with no end time, and negative start times from the delay, clamp sanely
    w = [Word(text="x", start=-0.2, end=None, task="is", tokens=[])]
    (cue,) = build_cues(w)
    assert cue.start == 0.0 and cue.end > 0.0


def test_bilingual_names(tmp_path):
    result = {
        "is": make_transcript(SPEC[:5], task="is"),
        "en": make_transcript([("Good", 0.3, 0.6), ("morning,", 0.6, 1.0), ("I'm", 1.1, 1.2)], task="en"),
    }
    paths = get_writer("srt", tmp_path)(result, "talk")
    assert [p.name for p in paths] == ["talk.is.srt", "talk.en.srt"]
    assert parse_srt((tmp_path / "talk.en.srt").read_text(encoding="utf-8"))[0][3] == "Good morning, I'm"
    get_writer("json", tmp_path)(result, "talk")
    assert json.loads((tmp_path / "talk.en.json").read_text(encoding="utf-8"))["task"] == "en"
    assert json.loads((tmp_path / "talk.is.json").read_text(encoding="utf-8"))["task"] == "is"


def test_empty_transcript(tmp_path):
    tr = make_transcript([], duration=2.0)
    get_writer("all", tmp_path)(tr, "silence")
    assert parse_srt((tmp_path / "silence.srt").read_text()) == []
    assert parse_vtt((tmp_path / "silence.vtt").read_text()) == []
    assert json.loads((tmp_path / "silence.json").read_text())["words"] == []


def test_vtt_escapes_arrow(tmp_path):
    tr = make_transcript([("a-->b", 0.0, 0.5)])
    get_writer("vtt", tmp_path)(tr, "x")
    assert parse_vtt((tmp_path / "x.vtt").read_text()) == [(0.0, 0.5, "a->b")]


def test_unknown_format():
    with pytest.raises(ValueError, match="unknown output format"):
        get_writer("docx", ".")

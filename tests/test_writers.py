"""Writers: files parsed back (srt/vtt parsers in checkpoints.py), timestamps, bilingual names, cues
clamped to the audio, the partial flag, completeness checks, and writes that fail."""

import json

import pytest

from mlx_kyutai_is import atomic
from mlx_kyutai_is.results import Result, Transcript, Word
from mlx_kyutai_is.writers import (
    WriteError,
    build_cues,
    format_timestamp,
    get_writer,
    is_complete,
)

from checkpoints import parse_srt, parse_vtt


def make_transcript(spec, task="is", duration=None):
    """spec: [(text, start, end)]."""
    words = [Word(text=t, start=s, end=e, task=task, tokens=[100 + i]) for i, (t, s, e) in enumerate(spec)]
    text = " ".join(t for t, _, _ in spec)
    duration = duration if duration is not None else (spec[-1][2] + 1.0 if spec else 0.0)
    tokens = [tok for w in words for tok in w.tokens]
    return Transcript(text=text, words=words, task=task, duration=duration, tokens=tokens)


def one(transcript):
    """The `Result` of one task that writers take."""
    return Result(transcript.task, {transcript.task: transcript})


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
    paths = get_writer("all", tmp_path)(one(tr), "talk")
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
    paths = get_writer("srt", tmp_path)(Result("both", result), "talk")
    assert [p.name for p in paths] == ["talk.is.srt", "talk.en.srt"]
    assert parse_srt((tmp_path / "talk.en.srt").read_text(encoding="utf-8"))[0][3] == "Good morning, I'm"
    get_writer("json", tmp_path)(Result("both", result), "talk")
    assert json.loads((tmp_path / "talk.en.json").read_text(encoding="utf-8"))["task"] == "en"
    assert json.loads((tmp_path / "talk.is.json").read_text(encoding="utf-8"))["task"] == "is"


def test_empty_transcript(tmp_path):
    tr = make_transcript([], duration=2.0)
    get_writer("all", tmp_path)(one(tr), "silence")
    assert parse_srt((tmp_path / "silence.srt").read_text()) == []
    assert parse_vtt((tmp_path / "silence.vtt").read_text()) == []
    assert json.loads((tmp_path / "silence.json").read_text())["words"] == []


def test_vtt_escapes_arrow(tmp_path):
    tr = make_transcript([("a-->b", 0.0, 0.5)])
    get_writer("vtt", tmp_path)(one(tr), "x")
    assert parse_vtt((tmp_path / "x.vtt").read_text()) == [(0.0, 0.5, "a->b")]


def test_unknown_format():
    with pytest.raises(ValueError, match="unknown output format"):
        get_writer("docx", ".")


def test_last_cue_never_ends_after_the_audio(tmp_path):
    # words dated at the very end of the audio (the stream clamps times to it) used to get a
    # 0.5 s display time past the end
    tr = make_transcript([("a", 0.5, 0.9), ("b.", 1.0, 1.0), ("c", 2.0, 2.0)], duration=2.0)
    for fmt, parse in [("srt", lambda t: [c[1:] for c in parse_srt(t)]), ("vtt", parse_vtt)]:
        get_writer(fmt, tmp_path)(one(tr), "end")
        cues = parse((tmp_path / f"end.{fmt}").read_text())
        assert cues == [(0.5, 1.0, "a b."), (1.999, 2.0, "c")]
    (cue,) = build_cues(make_transcript([("x", 2.0, 2.0)]).words, max_end=3.0)
    assert (cue.start, cue.end) == (2.0, 2.5)  # an instant word inside the audio keeps its 0.5 s


def test_partial_flag_and_is_complete(tmp_path):
    tr = make_transcript(SPEC)
    paths = get_writer("all", tmp_path)(one(tr), "done")
    assert all(is_complete(p) for p in paths)
    assert "partial" not in json.loads((tmp_path / "done.json").read_text())
    tr.partial = True
    get_writer("json", tmp_path)(one(tr), "cut")
    assert json.loads((tmp_path / "cut.json").read_text())["partial"] is True
    assert not is_complete(tmp_path / "cut.json")  # --skip-existing redoes an interrupted file
    # a truncated file (as a non-atomic writer killed mid-write leaves) is not complete
    for p in paths:
        data = p.read_bytes()
        for cut in (data[:-1], data[: len(data) // 2]) if p.suffix == ".json" else (data[:-1],):
            p.write_bytes(cut)
            assert not is_complete(p), (p, cut)
    assert not is_complete(tmp_path / "missing.txt")
    get_writer("srt", tmp_path)(one(make_transcript([], duration=1.0)), "silent")
    assert (tmp_path / "silent.srt").read_bytes() == b"" and is_complete(tmp_path / "silent.srt")


def test_paths_match_what_is_written(tmp_path):
    tr = make_transcript(SPEC)
    for fmt in ("txt", "all"):
        w = get_writer(fmt, tmp_path / fmt)
        (tmp_path / fmt).mkdir()
        assert w(one(tr), "a") == w.paths("a", ["is"])
        assert w(Result("both", {"is": tr, "en": tr}), "b") == w.paths("b", ["is", "en"])


def test_failed_writes_leave_old_files_and_write_the_rest(tmp_path, monkeypatch):
    """A disk that fills up mid-write (ENOSPC injected into the writes of .json and .vtt): those
    keep their previous contents, no temporary file is left, the other formats are written,
    and one WriteError names the two files that were not."""
    import errno

    for ext in ("txt", "srt", "vtt", "json"):
        (tmp_path / f"t.{ext}").write_text("old\n")
    real = atomic.atomic_open

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, s):
            self.f.write(s[: len(s) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

    from contextlib import contextmanager

    @contextmanager
    def failing(path, mode="w", encoding="utf-8"):
        with real(path, mode, encoding=encoding) as f:
            yield Full(f) if str(path).endswith((".json", ".vtt")) else f

    monkeypatch.setattr("mlx_kyutai_is.writers.atomic_open", failing)
    with pytest.raises(WriteError) as e:
        get_writer("all", tmp_path)(one(make_transcript(SPEC)), "t")
    assert sorted(p.name for p, _ in e.value.failed) == ["t.json", "t.vtt"]
    assert sorted(p.name for p in e.value.written) == ["t.srt", "t.txt"]
    assert "No space left on device" in str(e.value) and "\n" not in str(e.value)
    assert (tmp_path / "t.json").read_text() == "old\n" and (tmp_path / "t.vtt").read_text() == "old\n"
    assert (tmp_path / "t.txt").read_text() == make_transcript(SPEC).text + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json", "t.srt", "t.txt", "t.vtt"]

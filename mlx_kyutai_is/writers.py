# Copyright © 2026 mlx-kyutai-is contributors
"""Transcript writers: txt, srt, vtt, json (as mlx_whisper/writers.py).

A writer takes a `Result` and an output name, and writes ``out_dir/name.ext`` for a result of one
task (bilingual: ``name.is.ext`` and ``name.en.ext``).
Subtitle cues are built from the word timestamps the stream gives.

Every file is written atomically (`atomic.atomic_open`): a kill, a full disk or an error leaves the
previous file or none, never a truncated one. A file that cannot be written does not stop the
others; the writer then raises `WriteError` naming it.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .atomic import atomic_open
from .errors import Error
from .results import Result

FORMATS = ("txt", "srt", "vtt", "json")

# A word ending a sentence (closing quotes/brackets allowed after the mark) ends a cue.
SENTENCE_END = re.compile(r"[.?!…][\"'”»)\]]*$")


def format_timestamp(seconds: float, decimal_marker: str = ".") -> str:
    """``HH:MM:SS.mmm`` (srt uses ``,`` as the marker); negative times clamp to zero."""
    ms = max(0, round(seconds * 1000.0))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1_000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{ms:03d}"


@dataclass
class Cue:
    start: float
    end: float
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _word_times(word) -> tuple[float, float]:
    start = max(0.0, float(word.start))
    end = word.end if word.end is not None else start
    return start, max(start, float(end))


def build_cues(
    words,
    max_line_width: int = 42,
    max_line_count: int = 2,
    max_duration: float = 6.0,
    max_gap: float = 1.0,
    max_end: float | None = None,
) -> list[Cue]:
    """Group words into subtitle cues.

    A new cue starts after a sentence end, at a pause longer than `max_gap` seconds, when the
    cue would last longer than `max_duration` seconds, or when its `max_line_count` lines of at
    most `max_line_width` characters are full (a single longer word gets a line of its own).

    Parameters
    ----------
    words : iterable of Word
        Objects with ``text``, ``start`` and ``end`` (seconds; ``end`` may be None).
    max_end : float, optional
        The audio's duration: no cue ends after it (the short display time given to instant
        words would otherwise run past the end of the audio).

    Returns
    -------
    list[Cue]
        In time order; every cue ends after it starts and no later than the next one starts.
    """
    cues: list[Cue] = []
    lines: list[list[str]] = []
    start = end = 0.0
    prev_text = ""

    def close():
        if lines:
            cues.append(Cue(start, end, [" ".join(line) for line in lines]))
            lines.clear()

    for word in words:
        text = word.text.strip()
        if not text:
            continue
        w_start, w_end = _word_times(word)
        if lines and (
            w_start - end > max_gap
            or w_end - start > max_duration
            or SENTENCE_END.search(prev_text)
        ):
            close()
        if lines and len(" ".join(lines[-1] + [text])) > max_line_width:
            if len(lines) >= max_line_count:
                close()
            else:
                lines.append([])
        if not lines:
            lines.append([])
            start, end = w_start, w_end
        lines[-1].append(text)
        end = max(end, w_end)
        prev_text = text
    close()

    # Players skip empty cues: give instant words a short display time, never past the next cue
    # nor past the end of the audio.
    end_of_audio = float("inf") if max_end is None else max(float(max_end), 0.001)
    for cue, nxt in zip(cues, cues[1:] + [None]):
        limit = min(nxt.start if nxt is not None else float("inf"), end_of_audio)
        if cue.end <= cue.start:
            cue.end = min(cue.start + 0.5, max(limit, cue.start + 0.001))
        cue.end = max(min(cue.end, limit), cue.start + 0.001)
        if cue.end > end_of_audio:  # a word dated at the very end: move its start back a little
            cue.end = end_of_audio
            cue.start = min(cue.start, cue.end - 0.001)
    return cues


class WriteError(Error, OSError):
    """Some output files could not be written (the others were); `failed` lists
    ``(path, OSError)``, `written` the paths that were."""

    def __init__(self, failed: list, written: list):
        self.failed, self.written = failed, written
        path, err = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        super().__init__(err.errno, f"cannot write it ({err.strerror or err}){more}", str(path))

    def __str__(self):
        return f"{self.filename}: {self.strerror}"


def _items(result: Result, output_name: str) -> list:
    """[(file stem, Transcript)]: ``name`` for one task, ``name.<task>`` for each of "both"."""
    if len(result.transcripts) > 1:
        return [(f"{output_name}.{task}", t) for task, t in result.items()]
    return [(output_name, result.first)]


class ResultWriter:
    """Base writer: ``writer(result, name) -> list[Path]`` writes ``out_dir/name[.task].ext``."""

    extension: str

    def __init__(self, output_dir: str | Path = ".", **options):
        self.output_dir = Path(output_dir)
        self.options = options

    def paths(self, output_name: str, tasks=None) -> list[Path]:
        """The files ``self(result, output_name)`` writes for a result of `tasks`
        (None or one task: ``name.ext``; several: ``name.<task>.ext``)."""
        tasks = list(tasks or [])
        stems = [f"{output_name}.{t}" for t in tasks] if len(tasks) > 1 else [output_name]
        return [self.output_dir / f"{stem}.{self.extension}" for stem in stems]

    def __call__(self, result: Result, output_name: str) -> list[Path]:
        written, failed = [], []
        for name, transcript in _items(result, output_name):
            path = self.output_dir / f"{name}.{self.extension}"
            try:
                with atomic_open(path, "w", encoding="utf-8") as f:
                    self.write_result(transcript, f)
            except OSError as e:
                failed.append((path, e))
                continue
            written.append(path)
        if failed:
            raise WriteError(failed, written)
        return written

    def write_result(self, transcript, file: TextIO):
        raise NotImplementedError


class WriteTXT(ResultWriter):
    extension = "txt"

    def write_result(self, transcript, file):
        print(transcript.text.strip(), file=file)


class SubtitlesWriter(ResultWriter):
    decimal_marker: str

    def cues(self, transcript) -> list[Cue]:
        words = list(transcript.words)
        if not words and transcript.text.strip():  # no word timings: one cue for the whole text
            return [Cue(0.0, max(float(transcript.duration or 0.0), 0.001), [transcript.text.strip()])]
        duration = float(transcript.duration) if transcript.duration else None
        if not transcript.segments:
            return build_cues(words, **{"max_end": duration, **self.options})
        # A cue never spans two segments (each was decoded as a stream of its own).
        cues, first = [], 0
        for seg in transcript.segments:
            cues += build_cues(words[first : first + seg.words], **{**self.options, "max_end": seg.end})
            first += seg.words
        return cues

    def timestamp(self, seconds: float) -> str:
        return format_timestamp(seconds, self.decimal_marker)


class WriteSRT(SubtitlesWriter):
    extension = "srt"
    decimal_marker = ","

    def write_result(self, transcript, file):
        for i, cue in enumerate(self.cues(transcript), start=1):
            print(f"{i}\n{self.timestamp(cue.start)} --> {self.timestamp(cue.end)}", file=file)
            print(f"{cue.text}\n", file=file)


class WriteVTT(SubtitlesWriter):
    extension = "vtt"
    decimal_marker = "."

    def write_result(self, transcript, file):
        print("WEBVTT\n", file=file)
        for cue in self.cues(transcript):
            # "-->" would end the cue timing line early in a VTT parser
            text = cue.text.replace("-->", "->")
            print(f"{self.timestamp(cue.start)} --> {self.timestamp(cue.end)}\n{text}\n", file=file)


def transcript_to_dict(transcript) -> dict:
    """The JSON form: text, task, duration, words (start/end/text) and token ids; the segments
    (start/end/text/tokens) of a recording cut at pauses; ``"partial": true`` for the transcript
    of audio cut short (an interrupted run)."""
    words = []
    for w in transcript.words:
        start, end = _word_times(w)
        words.append({"start": round(start, 3), "end": round(end, 3), "text": w.text.strip()})
    d = {
        "text": transcript.text.strip(),
        "task": transcript.task,
        "duration": round(float(transcript.duration), 3),
        "words": words,
        "tokens": [int(t) for t in transcript.tokens],
    }
    if transcript.segments:
        d["segments"] = [
            {"start": seg.start, "end": seg.end, "text": seg.text, "tokens": [int(t) for t in seg.tokens]}
            for seg in transcript.segments
        ]
    if getattr(transcript, "partial", False):
        d["partial"] = True
    return d


class WriteJSON(ResultWriter):
    extension = "json"

    def write_result(self, transcript, file):
        json.dump(transcript_to_dict(transcript), file, ensure_ascii=False)
        print(file=file)


WRITERS = {"txt": WriteTXT, "srt": WriteSRT, "vtt": WriteVTT, "json": WriteJSON}


class WriteAll:
    """Every format at once (``-f all``); like a `ResultWriter`, it writes all it can and then
    raises one `WriteError` for the files it could not."""

    def __init__(self, writers: list[ResultWriter]):
        self.writers = writers

    def paths(self, output_name: str, tasks=None) -> list[Path]:
        return [p for w in self.writers for p in w.paths(output_name, tasks)]

    def __call__(self, result: Result, output_name: str) -> list[Path]:
        written, failed = [], []
        for w in self.writers:
            try:
                written += w(result, output_name)
            except WriteError as e:
                written += e.written
                failed += e.failed
        if failed:
            raise WriteError(failed, written)
        return written


def get_writer(output_format: str, output_dir: str | Path = ".", **options) -> "ResultWriter | WriteAll":
    """Return ``writer(result, output_name) -> list[Path]`` for txt, srt, vtt, json or all.

    Parameters
    ----------
    output_format : str
        One of ``txt``, ``srt``, ``vtt``, ``json``, ``all``.
    output_dir : str or Path
        Directory the files go to (must exist).
    **options
        Cue options for srt/vtt: ``max_line_width``, ``max_line_count``, ``max_duration``,
        ``max_gap`` (see `build_cues`).

    Returns
    -------
    ResultWriter or WriteAll
        Called as ``writer(result, name)``; ``writer.paths(name, tasks)`` lists the files it
        would write. Raises `WriteError` (after writing every file it can) when some fail.

    Examples
    --------
    >>> get_writer("srt", "out")(stt.transcribe("a.wav"), "a")          # out/a.srt
    >>> get_writer("srt", "out")(stt.transcribe("a.wav", task="both"), "a")  # out/a.is.srt, out/a.en.srt
    """
    if output_format == "all":
        return WriteAll([get_writer(fmt, output_dir, **options) for fmt in FORMATS])
    if output_format not in WRITERS:
        raise ValueError(f"unknown output format {output_format!r}; choose from {', '.join(FORMATS)}, all")
    cls = WRITERS[output_format]
    return cls(output_dir, **(options if issubclass(cls, SubtitlesWriter) else {}))


def is_complete(path: str | Path) -> bool:
    """True if `path` looks like a whole output of these writers, not one cut short: it exists
    and ends as the writers end files (a newline; srt/vtt a blank line, and an srt without cues
    is empty); a .json parses and is not marked ``partial`` (what `--skip-existing` trusts).
    Files written here are atomic anyway; this guards against older or foreign ones."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError:
        return False
    if path.suffix == ".srt" and not data:  # an srt without cues is empty
        return True
    if not data.endswith(b"\n\n" if path.suffix in (".srt", ".vtt") else b"\n"):  # cues end with a blank line
        return False
    if path.suffix == ".json":
        try:
            d = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return False
        return isinstance(d, dict) and "text" in d and not d.get("partial", False)
    if path.suffix == ".vtt":
        return data.startswith(b"WEBVTT")
    return True

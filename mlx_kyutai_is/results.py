# Copyright © 2026 mlx-kyutai-is contributors
"""What transcription gives: `Word`s, one `Transcript` per task, and the `Result` of one input.

Every task returns the same shape, a `Result`: its `transcripts` map each decoded task ("is",
"en", or both for task "both") to a `Transcript`; `text`, `words` and `tokens` are those of the
first task (Icelandic for "both"), so a consumer that shows one text never branches on the task,
and one that wants every task iterates `result.transcripts`.
"""

from dataclasses import dataclass, field


@dataclass
class Word:
    text: str
    start: float
    end: float
    task: str
    tokens: list[int] = field(default_factory=list)


@dataclass
class Segment:
    """A stretch of the input decoded as a stream of its own (long recordings are cut at pauses):
    `start`/`end` in seconds of the input, its `text` and `tokens` (task prefix included)."""

    start: float
    end: float
    text: str
    tokens: list[int] = field(default_factory=list)
    words: int = 0  # how many of the transcript's words are this segment's (in order)


@dataclass
class Transcript:
    """The result of one task over one input.

    `text` is the decoded transcript (the task prefix left out), `words` carry `start`/`end` in
    seconds of the input audio, `tokens` are every generated text id, the 4 prefix ids included.
    `partial` is True when decoding was stopped before the end of the audio. `segments` lists
    the stretches decoded as streams of their own when the input was cut at pauses (empty when it
    was decoded as one stream); `tokens` is then theirs end to end.
    """

    text: str
    words: "list[Word]" = field(default_factory=list)
    task: str = "is"
    duration: float = 0.0
    tokens: list[int] = field(default_factory=list)
    partial: bool = False
    segments: "list[Segment]" = field(default_factory=list)


@dataclass
class Result:
    """The result of transcribing one input, for any task.

    Attributes
    ----------
    task : {"is", "en", "both"}
        What was asked for.
    transcripts : dict[str, Transcript]
        One per decoded task, in order ("is" then "en" for "both").
    """

    task: str
    transcripts: dict[str, Transcript]

    @property
    def first(self) -> Transcript:
        return next(iter(self.transcripts.values()))

    @property
    def text(self) -> str:
        """The first task's text (the Icelandic one for task "both")."""
        return self.first.text

    @property
    def words(self) -> list[Word]:
        return self.first.words

    @property
    def tokens(self) -> list[int]:
        return self.first.tokens

    @property
    def duration(self) -> float:
        """Seconds of input audio the result covers (decoded so far, when partial)."""
        return max(t.duration for t in self.transcripts.values())

    @property
    def partial(self) -> bool:
        return any(t.partial for t in self.transcripts.values())

    def __getitem__(self, task: str) -> Transcript:
        return self.transcripts[task]

    def __contains__(self, task: str) -> bool:
        return task in self.transcripts

    def get(self, task: str, default=None) -> Transcript | None:
        return self.transcripts.get(task, default)

    def items(self):
        return self.transcripts.items()

# Copyright © 2026 mlx-kyutai-is contributors
"""OpenAI's speech-to-text wire shapes: request options, responses, SSE events and errors.

Pure functions over `Transcript`s (no web framework here), so that the routes in `app.py` only
parse, run and send. Shapes follow OpenAI's `/v1/audio/transcriptions` and `/translations`:

- ``json``: ``{"text"}``; ``text``: the text and a newline; ``srt`` / ``vtt``: subtitles built from
  the word times by the same cue rules as the `transcribe` command (`writers.py`);
- ``verbose_json``: ``{"task", "language", "duration", "text", "segments", "words"?}``, one segment
  per subtitle cue, ``words`` only when ``timestamp_granularities[]`` asks for ``word``;
- ``stream=true``: server-sent events ``transcript.text.delta`` (as words become final) and one
  ``transcript.text.done``;
- errors: ``{"error": {"message", "type", "param", "code"}}`` with the HTTP status.
"""

import io
import json
import zlib
from dataclasses import dataclass, field

from ...errors import Error
from ...runtime.protocol import TextDeltas  # noqa: F401  (the routes' and realtime's)
from ...writers import WriteSRT, WriteVTT, build_cues

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("word", "segment")
MEDIA_TYPES = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}
# verbose_json names the language of the text, as OpenAI does ("english" for translations).
LANGUAGE_NAMES = {"is": "icelandic", "en": "english"}
# `language` values that mean Icelandic input (the only input language the model reads).
ICELANDIC = ("is", "isl", "ice", "icelandic")


class ApiError(Error):
    """An error sent to the client as OpenAI's error JSON with an HTTP status.

    Parameters
    ----------
    status : int
        HTTP status (400, 401, 404, 413, 503, ...).
    message : str
        One line saying which field is wrong and how.
    type : str
        OpenAI's error type: ``invalid_request_error``, ``server_error``, ...
    param : str, optional
        The request field at fault.
    code : str, optional
        A machine-readable code (``invalid_api_key``, ``engine_overloaded``, ...).
    """

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param=None, code=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str = "invalid_request_error", param=None, code=None) -> dict:
    """OpenAI's error JSON."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def unauthorized(given: bool) -> ApiError:
    why = "Incorrect API key provided" if given else "Missing API key: send 'Authorization: Bearer KEY'"
    return ApiError(401, why, param=None, code="invalid_api_key")


def overloaded(max_streams: int) -> ApiError:
    # OpenAI's own wording for a busy model; 503 so that clients (the openai SDK included) retry.
    return ApiError(
        503,
        f"The engine is currently overloaded: all {max_streams} stream slots are busy, please try again later",
        type="server_error",
        code="engine_overloaded",
    )


@dataclass
class TranscriptionRequest:
    """The form fields of a transcription or translation request that change its result.

    `model`, `prompt` and `temperature` are accepted and ignored (one model, greedy decoding)."""

    task: str
    response_format: str = "json"
    granularities: list[str] = field(default_factory=list)
    stream: bool = False

    @classmethod
    def from_form(cls, task: str, form) -> "TranscriptionRequest":
        """Validate the multipart form (a mapping with ``getlist``); raises `ApiError` (400)."""
        fmt = (form.get("response_format") or "json").strip()
        if fmt not in RESPONSE_FORMATS:
            raise ApiError(
                400, f"response_format: {fmt!r} is not one of {', '.join(RESPONSE_FORMATS)}", param="response_format"
            )
        grans = [g.strip() for g in form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities")]
        for g in grans:
            if g not in GRANULARITIES:
                raise ApiError(
                    400,
                    f"timestamp_granularities[]: {g!r} is not one of {', '.join(GRANULARITIES)}",
                    param="timestamp_granularities[]",
                )
        stream = _form_bool(form.get("stream"), "stream")
        if stream and fmt not in ("json", "text"):
            raise ApiError(
                400, f"stream: not available with response_format {fmt!r} (use json or text)", param="stream"
            )
        language = (form.get("language") or "").strip().lower()
        if task == "is" and language and language not in ICELANDIC:
            raise ApiError(
                400,
                f"language: {language!r} is not supported: this model hears Icelandic ('is'); "
                "for English text use /v1/audio/translations",
                param="language",
            )
        return cls(task=task, response_format=fmt, granularities=grans, stream=stream)


def _form_bool(value, name: str) -> bool:
    if value is None or value == "":
        return False
    v = str(value).strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off"):
        return False
    raise ApiError(400, f"{name}: expected true or false, got {value!r}", param=name)


# --------------------------------------------------------------------------------------------
# Responses


def render(transcript, request: TranscriptionRequest) -> tuple[str, str]:
    """The response body and its media type for `request.response_format`."""
    fmt = request.response_format
    if fmt == "json":
        return json.dumps({"text": transcript.text}, ensure_ascii=False), MEDIA_TYPES[fmt]
    if fmt == "text":
        return transcript.text + "\n", MEDIA_TYPES[fmt]
    if fmt in ("srt", "vtt"):
        buf = io.StringIO()
        (WriteSRT() if fmt == "srt" else WriteVTT()).write_result(transcript, buf)
        return buf.getvalue(), MEDIA_TYPES[fmt]
    return json.dumps(verbose_json(transcript, request.granularities), ensure_ascii=False), MEDIA_TYPES[fmt]


def verbose_json(transcript, granularities=()) -> dict:
    """OpenAI's verbose_json: segments are the subtitle cues (`writers.build_cues`), each with the
    ids of its words' tokens.

    The model decodes greedily and scores nothing, so ``temperature`` is 0, ``avg_logprob`` and
    ``no_speech_prob`` are 0 (not computed); ``compression_ratio`` is computed as Whisper does."""
    out = {
        "task": "translate" if transcript.task == "en" else "transcribe",
        "language": LANGUAGE_NAMES.get(transcript.task, transcript.task),
        "duration": round(float(transcript.duration), 3),
        "text": transcript.text,
    }
    if "segment" in granularities or not granularities:
        out["segments"] = segments(transcript)
    if "word" in granularities:
        out["words"] = [
            {"word": w.text, "start": round(float(w.start), 3), "end": round(float(w.end), 3)} for w in transcript.words
        ]
    return out


def segments(transcript) -> list[dict]:
    words = [w for w in transcript.words if w.text.strip()]
    cues = build_cues(words)
    out, i = [], 0
    for n, cue in enumerate(cues):
        # build_cues keeps every non-empty word, in order, and joins a cue's words with spaces:
        # the cue's words are the next ones whose joined text is the cue's.
        text = " ".join(cue.lines)
        j, joined = i, ""
        while j < len(words) and len(joined) < len(text):
            joined = f"{joined} {words[j].text.strip()}" if joined else words[j].text.strip()
            j += 1
        tokens = [int(t) for w in words[i:j] for t in w.tokens]
        i = j
        out.append(
            {
                "id": n,
                "seek": 0,
                "start": round(cue.start, 3),
                "end": round(cue.end, 3),
                "text": " " + text,
                "tokens": tokens,
                "temperature": 0.0,
                "avg_logprob": 0.0,
                "compression_ratio": compression_ratio(text),
                "no_speech_prob": 0.0,
            }
        )
    return out


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return round(len(data) / len(zlib.compress(data)), 3) if data else 0.0


# --------------------------------------------------------------------------------------------
# Server-sent events (stream=true)


def sse(event: dict) -> str:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"


def sse_delta(delta: str) -> str:
    return sse({"type": "transcript.text.delta", "delta": delta})


def sse_done(text: str) -> str:
    return sse({"type": "transcript.text.done", "text": text})


def sse_error(err: ApiError) -> str:
    return sse({"type": "error", **err.body()})


# --------------------------------------------------------------------------------------------
# Incremental text: deltas that add up to the final transcript

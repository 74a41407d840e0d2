# Copyright © 2026 mlx-kyutai-is contributors
"""What the server says it is (`describe` -> `info`) and how a `transcribe` request picks a task.

One ASR program with one model per task: ``<model>:is`` (Icelandic speech -> Icelandic text) and
``<model>:en`` (Icelandic speech -> English text). Home Assistant offers the union of the models'
languages, ``is`` and ``en``, and sends the pipeline's language in `transcribe`; ``both`` (ours)
decodes the two at once.
"""

from wyoming.info import AsrModel, AsrProgram, Attribution, Info

from ..._version import __version__
from ...errors import Error
from ...tasks import TASK_PREFIXES

PROGRAM = "mlx-kyutai-is"
DEFAULT_TASK = "is"
MODEL_CARD = "https://huggingface.co/mideind/kyutai-stt-1b-is-en"
PROJECT = "https://github.com/ml-explore/mlx"
DESCRIPTIONS = {
    "is": "Icelandic speech -> Icelandic text",
    "en": "Icelandic speech -> English text (translation)",
}
LANGUAGES = {"is": "'is' (Icelandic text)", "en": "'en' (English translation)", "both": "'both' (the two at once)"}


class RequestError(Error):
    """A request this server cannot serve; sent to the client as a Wyoming ``error`` event.

    `fatal`: the connection is closed after the error (the request cannot go on: a client waiting
    for its transcript learns at once); otherwise only the bad event is dropped.
    """

    def __init__(self, text: str, code: str, fatal: bool = False):
        super().__init__(text)
        self.text, self.code, self.fatal = text, code, fatal


def model_names(model_name: str) -> dict[str, str]:
    """The advertised model name of each task: ``{"<model>:is": "is", "<model>:en": "en"}``."""
    return {f"{model_name}:{task}": task for task in TASK_PREFIXES}


def describe(model_name: str) -> Info:
    """The `info` answer to `describe`: one ASR program, one model per task, streaming transcripts.

    Parameters
    ----------
    model_name : str
        What the model is called (the ``--model`` repo id or directory name).
    """
    model_attribution = Attribution(name="Miðeind (fine-tune of Kyutai STT)", url=MODEL_CARD)
    models = [
        AsrModel(
            name=name,
            attribution=model_attribution,
            installed=True,
            description=f"{DESCRIPTIONS[task]}, streaming ({model_name})",
            version=None,
            languages=[task],
        )
        for name, task in model_names(model_name).items()
    ]
    return Info(
        asr=[
            AsrProgram(
                name=PROGRAM,
                attribution=Attribution(name="mlx-kyutai-is (MLX)", url=PROJECT),
                installed=True,
                description="Streaming Icelandic speech-to-text and Icelandic -> English translation "
                "(Kyutai STT on MLX); words stream as transcript-chunk events while you speak",
                version=__version__,
                models=models,
                supports_transcript_streaming=True,
            )
        ]
    )


def _language_task(language) -> str | None:
    if language is None or language == "":
        return None
    if not isinstance(language, str):
        raise RequestError(f"transcribe: language must be a string, got {language!r}", "unsupported-language", True)
    base = language.strip().lower().replace("_", "-").split("-")[0]  # "is-IS" -> "is"
    if base not in LANGUAGES:
        raise RequestError(
            f"language {language!r} is not supported: {', '.join(LANGUAGES.values())}",
            "unsupported-language",
            fatal=True,
        )
    return base


def _name_task(name, model_name: str) -> str | None:
    if name is None or name in ("", PROGRAM, model_name):
        return None
    names = model_names(model_name)
    if name in names:
        return names[name]
    if name in LANGUAGES:
        return name
    raise RequestError(
        f"model {name!r} is not served here: {', '.join(names)} (or a language: is, en, both)",
        "unknown-model",
        fatal=True,
    )


def pick_task(language, name, model_name: str, default: str = DEFAULT_TASK) -> str:
    """The task a `transcribe` asks for: by its `language` ("is", "en", "both"; region tags like
    "is-IS" allowed) and/or its model `name`; `default` when it names neither.

    Raises
    ------
    RequestError
        An unsupported language or model, or a language and a model that disagree.
    """
    by_language, by_name = _language_task(language), _name_task(name, model_name)
    if by_language and by_name and by_language != by_name:
        raise RequestError(
            f"model {name!r} decodes {by_name!r}, but the language asked for is {language!r}",
            "unsupported-language",
            fatal=True,
        )
    return by_language or by_name or default

# Copyright © 2026 mlx-kyutai-is contributors
"""The model card's transformers recipe, run on a local Hugging Face checkpoint: the reference
`mlx-kyutai-is eval --reference transformers` compares against.

The package never imports torch or transformers on its own: they are imported when a
`TransformersRecipe` is made, and are in the test extra (``pip install "mlx-kyutai-is[test]"``, which
works for a wheel and for an editable clone alike).
"""

import json
from pathlib import Path

import numpy as np

from ..errors import Error
from ..models.loading import MARKER
from ..runtime.protocol import DEFAULT_PAD_STEPS, DEFAULT_TRAILING_SILENCE_S
from ..tasks import TASK_PREFIXES

EXTRA = 'needs the test extra: pip install "mlx-kyutai-is[test]"'
TORCH_DTYPES = ("float32", "bfloat16", "float16")


class RecipeError(Error, RuntimeError):
    """The reference cannot run (no transformers, not a Hugging Face checkpoint); one line."""


def reference_libraries():
    """(torch, transformers): the reference's libraries, in the test extra only."""
    try:
        import torch
        import transformers
    except ImportError as e:
        raise RecipeError(f"--reference transformers {EXTRA} ({e})") from None
    return torch, transformers


def force_prefix(prefix: list[int], prompt_len: int = 1, pad_steps: int = DEFAULT_PAD_STEPS, pad_token_id: int = 3):
    """The model card's `ForcePrefix` logits processor for transformers' `generate`: the first
    generated tokens are the task prefix, the next `pad_steps` are pad (needs transformers)."""
    _, transformers = reference_libraries()

    class ForcePrefix(transformers.LogitsProcessor):
        def __call__(self, input_ids, scores):
            i = input_ids.shape[1] - prompt_len
            if 0 <= i < len(prefix):
                scores[:] = float("-inf")
                scores[:, prefix[i]] = 0.0
            elif i < len(prefix) + pad_steps:
                scores[:] = float("-inf")
                scores[:, pad_token_id] = 0.0
            return scores

    return ForcePrefix()


def check_checkpoint(path: Path) -> None:
    """Raise `RecipeError` unless `path` is a Hugging Face checkpoint directory (the recipe
    cannot read an MLX directory written by `convert`: its weights carry MLX names)."""
    config = Path(path) / "config.json"
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError) as e:
        raise RecipeError(f"{config}: cannot read the checkpoint's config ({e})") from None
    if MARKER in data:
        raise RecipeError(
            f"{path}: an MLX directory written by `convert`; the transformers reference needs the "
            "Hugging Face checkpoint it came from"
        )


class TransformersRecipe:
    """The model card's quick start: processor + `generate` with its `ForcePrefix` logits
    processor, 5 s of trailing silence, greedy decoding.

    Parameters
    ----------
    checkpoint : str or Path
        A Hugging Face checkpoint directory (weights, processor and tokenizer files).
    dtype : {"bfloat16", "float32", "float16"}
        The model's `torch_dtype` (the card loads bf16; float32 reproduces our float32 tokens exactly).
    device : str, optional
        torch device; by default the card's choice (cuda, then mps, then cpu).
    """

    def __init__(self, checkpoint, dtype: str = "bfloat16", device: str | None = None):
        torch, transformers = reference_libraries()
        # Their progress bars and generation reminders would interleave with ours (as bench does).
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        if dtype not in TORCH_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(TORCH_DTYPES)}, got {dtype!r}")
        check_checkpoint(Path(checkpoint))
        if device is None:
            device = (
                "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
            )
        self.torch, self.device, self.dtype = torch, device, dtype
        self.processor = transformers.KyutaiSpeechToTextProcessor.from_pretrained(checkpoint)
        self.sample_rate = self.processor.feature_extractor.sampling_rate
        self.model = (
            transformers.KyutaiSpeechToTextForConditionalGeneration.from_pretrained(
                checkpoint, torch_dtype=getattr(torch, dtype)
            )
            .to(device)
            .eval()
        )

    def __call__(self, audio: np.ndarray, task: str) -> tuple[list[int], str]:
        """Run the recipe on `audio` (1-D float32 at `sample_rate`) for task "is" or "en".

        Returns
        -------
        (tokens, text)
            The generated ids (the BOS prompt left out, so the 4 prefix ids come first, as in
            `Transcript.tokens`) and the text of the free-running tokens (the prefix left out).
        """
        torch = self.torch
        prefix = TASK_PREFIXES[task]
        silence = np.zeros(int(DEFAULT_TRAILING_SILENCE_S * self.sample_rate), np.float32)
        audio = np.concatenate([np.asarray(audio, np.float32), silence])
        inputs = self.processor(audio=audio, sampling_rate=self.sample_rate)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        pad_id = self.model.config.pad_token_id
        force = force_prefix(prefix, pad_steps=DEFAULT_PAD_STEPS, pad_token_id=3 if pad_id is None else pad_id)
        with torch.no_grad():
            out = self.model.generate(**inputs, logits_processor=[force])
        tokens = out[0, 1:].tolist()
        # The text is decoded from the free-running tokens only, as `Transcript.text` is: decoding
        # the whole output and stripping the prefix's text afterwards fails for a tokenizer that
        # gives the text start or the prefix ids ordinary pieces (the prefix then leaks into the
        # hypothesis and identical tokens score differently).
        text = self.processor.batch_decode([tokens[len(prefix) :]], skip_special_tokens=True)[0]
        return tokens, text.strip()


def token_agreement(ours: list[int], theirs: list[int], skip: int = 0) -> tuple[int, int]:
    """(steps where both chose the same token, steps compared) after the first `skip` steps
    (the forced prefix and pad steps agree by construction); a length difference counts as
    disagreement on the extra steps."""
    a, b = ours[skip:], theirs[skip:]
    same = sum(x == y for x, y in zip(a, b))
    return same, max(len(a), len(b))

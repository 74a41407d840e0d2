# Copyright © 2026 mlx-kyutai-is contributors
"""The fine-tune's tasks and the prompts that select them: the one home of both."""

# The task prompts of the fine-tune: forced as the first 4 generated text tokens (model card).
TASK_PREFIXES = {
    "is": [9318, 8002, 8003, 9193],  # <is>: Icelandic speech -> Icelandic text
    "en": [9318, 8032, 8015, 9193],  # <en>: Icelandic speech -> English text
}
# What a caller may ask for: one of the prompts, or "both" (one audio pass, two decoding rows).
TASKS = ("is", "en", "both")
TASK_NAMES = {"is": "Icelandic transcript", "en": "English translation", "both": "both at once"}


def task_list(task: str) -> list[str]:
    """The decoding rows of a task: ["is"], ["en"], or both (one audio, two rows)."""
    if task == "both":
        return ["is", "en"]
    if task not in TASK_PREFIXES:
        raise ValueError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
    return [task]

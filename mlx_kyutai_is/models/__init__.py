# Copyright © 2026 mlx-kyutai-is contributors
"""The model family: configuration, the language model, the Mimi codec, caches, the tokenizer,
loading and conversion. Plain `mlx.nn.Module`s; imports nothing of the runtime, audio or apps."""

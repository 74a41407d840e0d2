# Copyright © 2026 mlx-kyutai-is contributors
"""`mlx-kyutai-is serve`'s app: OpenAI's speech-to-text API, realtime transcription over a websocket
and a live-captions page, every request a stream of one shared batched `LiveEngine`."""

from .app import create_app, drain

__all__ = ["create_app", "drain"]

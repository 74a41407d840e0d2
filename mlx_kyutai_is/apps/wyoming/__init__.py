# Copyright © 2026 mlx-kyutai-is contributors
"""`mlx-kyutai-is wyoming`'s app: a Wyoming speech-to-text server (Home Assistant, Rhasspy, Wyoming
satellites) whose utterances are streams of one shared batched `LiveEngine`, words streamed as
`transcript-chunk` events while the person speaks."""

from .announce import Announcement, announcement
from .info import describe
from .server import DEFAULT_URI, Limits, WyomingServer, parse_uri

__all__ = ["DEFAULT_URI", "Announcement", "Limits", "WyomingServer", "announcement", "describe", "parse_uri"]

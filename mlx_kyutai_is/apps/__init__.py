# Copyright © 2026 mlx-kyutai-is contributors
"""Front ends on top of the library: the OpenAI-compatible server (`openai/`) and the live
microphone app (`mic`). They never import each other."""

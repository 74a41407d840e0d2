# Copyright © 2026 mlx-kyutai-is contributors
"""Decoding at run time: the protocol, the batched decoder and engine, streams (synchronous and
live on a thread), list jobs and the stall watchdog. Reads no files and prints nothing."""

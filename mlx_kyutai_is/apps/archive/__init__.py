# Copyright © 2026 mlx-kyutai-is contributors
"""Archive transcription: a list of audio files, each transcribed once, on this machine or
spread over a Ray cluster (one model per worker), resumable.

The driver (`job.Archive`) decides what is left, writes every output atomically and one line per
input to ``results.jsonl``; workers (`workers.LocalWorkers`, `cluster.RayWorkers`) run the
batched engine and send transcripts back, never audio.
"""

from .cluster import ClusterError, RayWorkers
from .job import Archive, Entry, Outcome, Tally, plan_entries
from .ledger import RESULTS_NAME, JobRunning, Ledger
from .workers import LocalWorkers, Transcriber

__all__ = [
    "Archive",
    "ClusterError",
    "Entry",
    "JobRunning",
    "Ledger",
    "LocalWorkers",
    "Outcome",
    "RESULTS_NAME",
    "RayWorkers",
    "Tally",
    "Transcriber",
    "plan_entries",
]

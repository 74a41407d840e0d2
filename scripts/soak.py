#!/usr/bin/env python
"""Soak test: stream hours of synthetic audio through a small model at full speed.

The audio cycles through espeak-ng Icelandic sentences, silence and noise. Every simulated
`--report-minutes` it prints the process RSS, the MLX cache memory and the ms per step of the
last window, so a leak or a cost that grows with stream length shows as a drifting column.

    python scripts/soak.py --hours 2            # the figures in the README
    python scripts/soak.py --model DIR --hours 1

Needs the test extras (transformers builds the random checkpoint) plus espeak-ng and sox.
"""

import argparse
import gc
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def rss_mb() -> float:
    """Current resident set size (Linux /proc; falls back to the peak on other systems)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_audio(workdir: Path, sr: int = 24_000):
    """An endless generator of 1 s blocks: speech clips, silence and noise in turn."""
    from checkpoints import SENTENCES, espeak, read_wav

    clips = [read_wav(espeak(s, workdir / f"soak{i}.wav")) for i, s in enumerate(SENTENCES)]
    rng = np.random.default_rng(0)
    pieces = []
    for clip in clips:
        pieces += [clip, np.zeros(2 * sr, np.float32), (rng.standard_normal(sr) * 0.05).astype(np.float32)]
    cycle = np.concatenate(pieces)
    pos = 0
    while True:
        block = np.take(cycle, np.arange(pos, pos + sr), mode="wrap")
        pos = (pos + sr) % len(cycle)
        yield block


def live_mlx_mb() -> float:
    """MLX memory held by live arrays (garbage collected first: cycles other code left behind
    would otherwise show up at whatever report the collector happens to run after)."""
    import mlx.core as mx

    gc.collect()
    return round(mx.get_active_memory() / 2**20, 1)


def soak(stt, hours: float, report_minutes: float, task: str = "is", workdir: Path | None = None, log=print):
    """Stream `hours` of audio; returns the list of report rows (dicts)."""

    workdir = Path(workdir or tempfile.mkdtemp())
    sr = stt.sample_rate
    total_s = int(hours * 3600)
    report_every = max(1, int(report_minutes * 60))
    rows = []
    words = 0
    stream = stt.stream(task, watchdog=True)
    audio = synthetic_audio(workdir, sr)
    t0 = time.perf_counter()
    last_t, last_steps = t0, 0
    row = dict(audio_s=0, rss_mb=round(rss_mb(), 1), mlx_active_mb=live_mlx_mb(), ms_per_step=None)
    rows.append(row)
    log(json.dumps(row))
    for second in range(1, total_s + 1):
        words += len(stream.feed(next(audio)))
        if second % report_every == 0 or second == total_s:
            now = time.perf_counter()
            steps = stream.steps
            row = dict(
                audio_s=second,
                rss_mb=round(rss_mb(), 1),
                mlx_active_mb=live_mlx_mb(),
                ms_per_step=round(1000 * (now - last_t) / max(steps - last_steps, 1), 3),
                steps=steps,
                words=words,
                recoveries=len(stream.recoveries),
                wall_s=round(now - t0, 1),
            )
            rows.append(row)
            log(json.dumps(row))
            last_t, last_steps = now, steps
    words += len(stream.flush())
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model dir (default: a small random checkpoint built here)")
    p.add_argument("--hours", type=float, default=2.0)
    p.add_argument("--report-minutes", type=float, default=10.0)
    p.add_argument("--task", default="is", choices=["is", "en", "both"])
    args = p.parse_args(argv)

    from mlx_kyutai_is import load

    work = Path(tempfile.mkdtemp(prefix="soak"))
    if args.model is None:
        from checkpoints import build_checkpoint

        args.model = str(build_checkpoint(work / "model"))
    stt = load(args.model)
    rows = soak(stt, args.hours, args.report_minutes, args.task, work)
    first, last = rows[1], rows[-1]
    print(
        f"\n{last['audio_s'] / 3600:.2f} h of audio in {last['wall_s']:.0f} s: RSS {rows[0]['rss_mb']} -> "
        f"{last['rss_mb']} MB, ms/step {first['ms_per_step']} -> {last['ms_per_step']}, "
        f"{last['words']} words, {last['recoveries']} watchdog recoveries"
    )


if __name__ == "__main__":
    main()

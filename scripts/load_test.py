# Copyright © 2026 mlx-kyutai-is contributors
"""Load test for `mlx-kyutai-is serve`: N concurrent real-time clients on the realtime websocket.

    python scripts/load_test.py --tiny                      # a tiny random model, N = 1, 4, 16, 64
    python scripts/load_test.py --full-size --clients 1 16  # the model card's architecture (random weights)
    python scripts/load_test.py --model DIR --seconds 30
    python scripts/load_test.py --url http://127.0.0.1:8000 # a server that is already running

Each client opens `/v1/realtime?intent=transcription` and sends 80 ms of pcm16 every 80 ms (on an
absolute schedule, as a microphone would) for `--seconds`, then commits and waits for the
transcript. Unless `--url` is given the script starts the server itself (`python -m mlx_kyutai_is
serve`, loopback, `--max-streams` = the largest N) and stops it at the end. Per N it reports:

- word latency p50/p95: from sending the chunk that holds a word's end (its timestamp) to receiving
  that word's delta. It includes the model's own text delay (~5 s for the published weights), and
  is only measured for words that come out while the client is still talking.
- emit lag p50/p95: from sending the chunk that holds the audio the engine had just read when a word
  came out (the delta's ``audio_time``) to receiving the delta: how far the server runs behind the
  audio, whatever the model's delay (0 + network + one step when it keeps up).
- audio dropped: audio sent that the server's transcript does not cover (the completed event's
  ``duration``); the server queues, it never drops, so this should be 0: a server that cannot keep up
  shows it as growing lag instead. Also: sends that fell behind the client's own schedule.
- step time and rows per step over the run, from the server's ``/v1/status`` (the engine's stats):
  how many streams each engine step decoded together, and the engine's busy share of the wall time.

Word times and latencies mean something only with real weights (random weights with MLX's default
init, `--tiny`/`--full-size`, mostly emit padding: no words, "–"); random weights still cost the
same per step, so the lag, step time and rows per step are the real figures of that architecture.
The test suite's tiny checkpoint (`tests/checkpoints.py`, larger init) babbles words: pass its
directory with `--model` for word figures on a small model.
"""

import argparse
import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import numpy as np

SAMPLE_RATE = 24_000
CHUNK = 1_920  # 80 ms
CHUNK_S = CHUNK / SAMPLE_RATE


def percentile(values, q):
    return float(np.percentile(values, q)) if values else float("nan")


def load_audio(paths, seconds: float) -> list[np.ndarray]:
    """Each client's pcm16: the given files (looped to `seconds`), else noise bursts and silence."""
    n = int(seconds * SAMPLE_RATE)
    if not paths:
        from mlx_kyutai_is.tools.bench import test_audio

        return [np.clip(test_audio(seconds, seed=i) * 32768, -32768, 32767).astype(np.int16) for i in range(4)]
    from mlx_kyutai_is.audio import load_audio as read

    out = []
    for p in paths:
        x = read(p, sr=SAMPLE_RATE)
        x = np.tile(x, int(np.ceil(n / len(x))))[:n]
        out.append(np.clip(x * 32768, -32768, 32767).astype(np.int16))
    return out


async def client(url: str, samples: np.ndarray, language: str, start_at: float) -> dict:
    import websockets

    ws_url = url.replace("http://", "ws://").replace("https://", "wss://") + "/v1/realtime?intent=transcription"
    sent_at = []  # send time of chunk k (holds samples [k*CHUNK, (k+1)*CHUNK))
    words, late = [], 0
    async with websockets.connect(ws_url, max_size=None) as ws:
        await ws.recv()  # session.created
        update = {
            "type": "session.update",
            "session": {"type": "transcription", "audio": {"input": {"transcription": {"language": language}}}},
        }
        await ws.send(json.dumps(update))
        done = asyncio.get_running_loop().create_future()

        async def receive():
            while True:
                ev = json.loads(await ws.recv())
                now = time.perf_counter()
                if ev["type"] == "conversation.item.input_audio_transcription.delta" and "end" in ev:
                    words.append((now, ev["end"], ev["audio_time"], len(sent_at)))
                elif ev["type"] == "conversation.item.input_audio_transcription.completed":
                    done.set_result(ev)
                    return
                elif ev["type"] == "error":
                    done.set_exception(RuntimeError(ev["error"]["message"]))
                    return

        receiver = asyncio.ensure_future(receive())
        await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
        t0 = time.perf_counter()
        for k, i in enumerate(range(0, len(samples), CHUNK)):
            due = t0 + k * CHUNK_S
            if (wait := due - time.perf_counter()) > 0:
                await asyncio.sleep(wait)
            elif wait < -CHUNK_S:
                late += 1
            chunk = samples[i : i + CHUNK]
            await ws.send(
                json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk.tobytes()).decode()})
            )
            sent_at.append(time.perf_counter())
        talking_until = len(sent_at)
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        completed = await asyncio.wait_for(done, timeout=600)
        receiver.cancel()

    def sent_time(t):
        return sent_at[min(len(sent_at) - 1, max(0, int(t * SAMPLE_RATE) // CHUNK))]

    live = [(now, end, audio_time) for now, end, audio_time, n_sent in words if n_sent < talking_until]
    return {
        "word_latency": [now - sent_time(end) for now, end, _ in live if end > 0],
        "emit_lag": [now - sent_time(audio_time) for now, _, audio_time in live],
        "sent_s": len(samples) / SAMPLE_RATE,
        "covered_s": float(completed.get("duration", len(samples) / SAMPLE_RATE)),
        "late_sends": late,
        "words": len(words),
    }


def status(url: str) -> dict:
    import httpx

    return httpx.get(f"{url}/v1/status", timeout=10).json()["engine"]


async def run_n(url: str, n: int, audio: list[np.ndarray], language: str) -> dict:
    before = status(url)
    samples_rows = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            try:
                samples_rows.append(status(url)["rows_last_step"])
            except Exception:
                pass
            stop.wait(0.25)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    start_at = t0 + 0.5  # everyone connected first, then all start talking (staggered within a frame)
    results = await asyncio.gather(
        *(client(url, audio[i % len(audio)], language, start_at + (i % 8) * CHUNK_S / 8) for i in range(n))
    )
    wall = time.perf_counter() - t0
    stop.set()
    watcher.join()
    after = status(url)
    steps = after["steps"] - before["steps"]
    step_ms_total = after["mean_step_ms"] * after["steps"] - before["mean_step_ms"] * before["steps"]
    rows_total = after["mean_rows_per_step"] * after["steps"] - before["mean_rows_per_step"] * before["steps"]
    latency = [x for r in results for x in r["word_latency"]]
    lag = [x for r in results for x in r["emit_lag"]]
    sent = sum(r["sent_s"] for r in results)
    dropped = sum(max(0.0, r["sent_s"] - r["covered_s"]) for r in results)
    return {
        "clients": n,
        "word_latency_p50_s": percentile(latency, 50),
        "word_latency_p95_s": percentile(latency, 95),
        "emit_lag_p50_s": percentile(lag, 50),
        "emit_lag_p95_s": percentile(lag, 95),
        "audio_sent_s": round(sent, 2),
        "audio_dropped_s": round(dropped, 3),
        "late_sends": sum(r["late_sends"] for r in results),
        "words": sum(r["words"] for r in results),
        "steps": steps,
        "mean_step_ms": step_ms_total / steps if steps else float("nan"),
        "mean_rows_per_step": rows_total / steps if steps else float("nan"),
        "max_rows_per_step_seen": max(samples_rows, default=0),
        "engine_busy": step_ms_total / 1e3 / wall,
        "wall_s": round(wall, 1),
    }


def start_server(model: str, max_streams: int, dtype: str | None, quantize: int | None):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "mlx_kyutai_is",
        "serve",
        "--model",
        model,
        "--port",
        str(port),
        "--max-streams",
        str(max_streams),
    ]
    if dtype:
        cmd += ["--dtype", dtype]
    if quantize:
        cmd += ["--quantize", str(quantize)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    for line in proc.stdout:
        if url in line:
            break
    else:
        raise SystemExit(f"the server did not start (exit {proc.wait()})")
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return url, proc


def format_table(rows: list[dict]) -> str:
    head = (
        "| N | word latency p50 / p95 s | emit lag p50 / p95 s | audio dropped | late sends | step ms "
        "| rows per step (max seen) | engine busy |\n|---|---|---|---|---|---|---|---|"
    )
    lines = [head]

    def pair(a, b):
        return "–" if np.isnan(a) else f"{a:.2f} / {b:.2f}"

    for r in rows:
        lines.append(
            f"| {r['clients']} | {pair(r['word_latency_p50_s'], r['word_latency_p95_s'])} "
            f"| {pair(r['emit_lag_p50_s'], r['emit_lag_p95_s'])} "
            f"| {r['audio_dropped_s']:g} s of {r['audio_sent_s']:g} s | {r['late_sends']} | {r['mean_step_ms']:.1f} "
            f"| {r['mean_rows_per_step']:.1f} ({r['max_rows_per_step_seen']}) | {100 * r['engine_busy']:.0f} % |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="model directory or hub id for the server this script starts")
    src.add_argument("--tiny", action="store_true", help="a tiny random model (the benchmark's)")
    src.add_argument("--full-size", action="store_true", help="the model card's architecture, random weights")
    src.add_argument("--url", help="load an already running server instead of starting one")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64], metavar="N")
    p.add_argument("--seconds", type=float, default=10.0, help="audio each client sends, in real time")
    p.add_argument("--audio", nargs="*", default=[], metavar="WAV", help="clients' audio (default: noise bursts)")
    p.add_argument("--language", default="is", choices=("is", "en", "both"))
    p.add_argument("--dtype", default=None, choices=("bfloat16", "float16", "float32"))
    p.add_argument("--quantize", type=int, choices=(4, 8), default=None)
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = p.parse_args(argv)

    audio = load_audio(args.audio, args.seconds)
    proc, work = None, None
    if args.url:
        url = args.url.rstrip("/")
    else:
        model = args.model
        if model is None:
            from mlx_kyutai_is import bench

            work = tempfile.TemporaryDirectory()
            config = bench.FULL_SIZE if args.full_size else bench.TINY
            model = str(bench.random_checkpoint(config, Path(work.name) / "model", use_transformers=False))
        url, proc = start_server(model, max(args.clients), args.dtype, args.quantize)
    rows = []
    try:
        for n in args.clients:
            print(f"[load] {n} client(s), {args.seconds:g} s of audio each ...", file=sys.stderr, flush=True)
            rows.append(asyncio.run(run_n(url, n, audio, args.language)))
            print(format_table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        if work is not None:
            work.cleanup()
    import platform

    print(
        f"{date.today().isoformat()}, {platform.system()} {platform.machine()}, {os.cpu_count()} cores; "
        f"{args.seconds:g} s of audio per client, language {args.language}"
    )
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"date": date.today().isoformat(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

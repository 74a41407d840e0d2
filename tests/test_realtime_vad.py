# Copyright © 2026 mlx-kyutai-is contributors
"""Turn detection in the realtime server (`apps/openai/realtime.py`): `mlx-kyutai-is serve` as a
subprocess on loopback, driven by the official openai SDK's realtime clients (GA and beta).

Three espeak-ng Icelandic sentences with 1.5 s of silence between them, sent faster than real time
and never committed, must come back as three items, each with speech_started, speech_stopped,
committed and one completed, in order; each item's transcript must be exactly `STT.transcribe()`
of the audio the item's events say it holds (from ``audio_start_ms`` to ``audio_end_ms``)."""

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
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

# Servers, clusters and codecs run end to end here: the quick loop (-m 'not slow') leaves them out.
pytestmark = pytest.mark.slow

openai = pytest.importorskip("openai")

START_TIMEOUT_S = 120
RATE = 24_000
GAP_S = 1.5
TRANSCRIPTION = "conversation.item.input_audio_transcription"
VAD_EVENTS = (
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    f"{TRANSCRIPTION}.completed",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(model_dir, *args):
    """`python -m mlx_kyutai_is serve` (float32) on a free loopback port; stopped with SIGTERM."""
    port = free_port()
    cmd = [sys.executable, "-m", "mlx_kyutai_is", "serve", "--model", str(model_dir), "--port", str(port)]
    err = tempfile.NamedTemporaryFile("w+", suffix=".log")
    proc = subprocess.Popen(
        [*cmd, "--dtype", "float32", *args],
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    lines = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not any(url in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, Path(err.name).read_text()
            time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(30) == 0, Path(err.name).read_text()
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("server did not stop within 30 s of SIGTERM")
        finally:
            err.close()


@pytest.fixture(scope="module")
def server(small_hf):
    with serve(small_hf, "--max-streams", "8") as url:
        yield url


@pytest.fixture(scope="module")
def stt(small_hf):
    from mlx_kyutai_is import load

    return load(str(small_hf), dtype="float32")


@pytest.fixture(scope="module")
def talk(speech):
    """(pcm16 samples, [(start, end) of each sentence in seconds]): the three sentences with
    `GAP_S` of silence before, between and after them."""
    gap = np.zeros(round(GAP_S * RATE), np.int16)
    parts, spans, t = [gap], [], GAP_S
    for path in speech:
        audio, sr = sf.read(str(path), dtype="int16")
        assert sr == RATE
        parts += [audio, gap]
        spans.append((t, t + len(audio) / RATE))
        t += (len(audio) + len(gap)) / RATE
    return np.concatenate(parts), spans


def ga_client(url):
    return openai.AsyncOpenAI(
        base_url=f"{url}/v1", websocket_base_url=url.replace("http", "ws") + "/v1", api_key="unused", max_retries=0
    )


def appended(samples) -> dict:
    return {"type": "input_audio_buffer.append", "audio": base64.b64encode(samples.tobytes()).decode()}


async def recv(conn, timeout=60) -> dict:
    """The next server event as JSON (our extra fields included); an error event fails the test."""
    ev = json.loads(await asyncio.wait_for(conn.recv_bytes(), timeout))
    assert ev["type"] != "error", ev
    return ev


async def converse(conn, samples, update, chunk=4800, commit_at=(), completed=3, first="session.created"):
    """Send `update`, then `samples` in `chunk`-sample appends (a commit before each sample index in
    `commit_at`), never committing otherwise; returns every event up to the `completed`-th
    completed transcript (the session's own events, the update's answer first)."""
    events = [await recv(conn)]
    assert events[0]["type"] == first, events[0]
    await conn.send(update)
    for i in range(0, len(samples), chunk):
        for at in commit_at:
            if i <= at < i + chunk:
                await conn.send(appended(samples[i:at]))
                await conn.send({"type": "input_audio_buffer.commit"})
                await conn.send(appended(samples[at : i + chunk]))
                break
        else:
            await conn.send(appended(samples[i : i + chunk]))
    while sum(e["type"] == f"{TRANSCRIPTION}.completed" for e in events) < completed:
        events.append(await recv(conn))
    return events


def items(events) -> list[dict]:
    """Per item, in the order of its first event: its VAD and commit events (in order) and what
    came back for it."""
    out = {}
    for e in events:
        if e["type"] in VAD_EVENTS:
            it = out.setdefault(e["item_id"], {"events": [], "deltas": ""})
            it["events"].append(e["type"])
            it.update({k: e[k] for k in ("audio_start_ms", "audio_end_ms", "transcript") if k in e})
        elif e["type"] == f"{TRANSCRIPTION}.delta":
            out[e["item_id"]]["deltas"] += e["delta"]
    return list(out.values())


def check_utterances(events, samples, spans, stt):
    found = items(events)
    assert [it["events"] for it in found] == [list(VAD_EVENTS)] * len(spans), [it["events"] for it in found]
    previous_end = 0
    for it, (start, end) in zip(found, spans):
        # the prefix padding (300 ms) reaches back before the speech; the 0.5 s of silence that ends
        # an utterance is part of its audio, as OpenAI counts audio_end_ms
        assert (start - 0.4) * 1000 <= it["audio_start_ms"] <= (start + 0.3) * 1000, (it, start)
        assert end * 1000 - 500 <= it["audio_end_ms"] <= (end + GAP_S) * 1000, (it, end)
        assert it["audio_start_ms"] >= previous_end
        previous_end = it["audio_end_ms"]
        audio = samples[it["audio_start_ms"] * RATE // 1000 : it["audio_end_ms"] * RATE // 1000]
        assert it["transcript"] == it["deltas"] == stt.transcribe(audio, task="is").text


def test_session_reports_openais_default_turn_detection(server):
    default = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500}

    async def main():
        async with ga_client(server).realtime.connect(model="m") as conn:
            created = await recv(conn)
            assert created["session"]["audio"]["input"]["turn_detection"] == default
            # fields left out take the defaults; semantic_vad is reported as asked; bad values are errors
            asked = {"type": "server_vad", "threshold": 0.7}
            await conn.send({"type": "session.update", "session": {"audio": {"input": {"turn_detection": asked}}}})
            assert (await recv(conn))["session"]["audio"]["input"]["turn_detection"] == {**default, "threshold": 0.7}
            await conn.send({"type": "session.update", "session": {
                "audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "low"}}}}})  # fmt: skip
            td = (await recv(conn))["session"]["audio"]["input"]["turn_detection"]
            assert td == {"type": "semantic_vad", "eagerness": "low"}
            for bad, code in [
                ({"type": "magic_vad"}, "unsupported_turn_detection"),
                ({"type": "server_vad", "threshold": 1.5}, "invalid_event"),
                ({"type": "server_vad", "silence_duration_ms": -1}, "invalid_event"),
                ({"type": "server_vad", "prefix_padding_ms": "300"}, "invalid_event"),
                ({"type": "semantic_vad", "eagerness": "eager"}, "invalid_event"),
                ("server_vad", "invalid_event"),
            ]:
                await conn.send({"type": "session.update", "session": {"audio": {"input": {"turn_detection": bad}}}})
                ev = json.loads(await asyncio.wait_for(conn.recv_bytes(), 10))
                assert ev["type"] == "error" and ev["error"]["code"] == code, (bad, ev)

        beta = openai.AsyncOpenAI(
            base_url=f"{server}/v1", websocket_base_url=server.replace("http", "ws") + "/v1", api_key="unused"
        )
        async with beta.beta.realtime.connect(model="m") as conn:
            created = await recv(conn)
            assert (
                created["type"] == "transcription_session.created" and created["session"]["turn_detection"] == default
            )

    asyncio.run(main())


@pytest.mark.slow
def test_server_vad_ga_client_never_committing(server, talk, stt):
    samples, spans = talk
    update = {
        "type": "session.update",
        "session": {
            "type": "transcription",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": RATE},
                    "transcription": {"language": "is"},
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                }
            },
        },
    }

    async def main():
        async with ga_client(server).realtime.connect(model="m") as conn:
            return await converse(conn, samples, update)

    events = asyncio.run(main())
    assert events[1]["type"] == "session.updated"
    check_utterances(events, samples, spans, stt)
    # each committed item is announced with the item event a manual commit sends
    created = [e["item"]["id"] for e in events if e["type"] == "conversation.item.created"]
    assert created == [e["item_id"] for e in events if e["type"] == "input_audio_buffer.committed"]


@pytest.mark.slow
def test_server_vad_beta_client_and_semantic_vad(server, talk, stt):
    samples, spans = talk

    def update(turn_detection):
        return {
            "type": "transcription_session.update",
            "session": {"input_audio_format": "pcm16", "turn_detection": turn_detection},
        }

    async def session(turn_detection, completed=3, tail=0.0):
        beta = openai.AsyncOpenAI(
            base_url=f"{server}/v1", websocket_base_url=server.replace("http", "ws") + "/v1", api_key="unused"
        )
        audio = np.concatenate([samples, np.zeros(round(tail * RATE), np.int16)])
        async with beta.beta.realtime.connect(model="m") as conn:
            return await converse(
                conn, audio, update(turn_detection), chunk=1111, completed=completed,
                first="transcription_session.created",
            )  # fmt: skip

    # the beta client, odd chunk sizes, the session's default turn detection: three items
    events = asyncio.run(session({"type": "server_vad"}))
    check_utterances(events, samples, spans, stt)
    # semantic_vad "high" waits 0.5 s of silence, as server_vad's default: the same three items
    events = asyncio.run(session({"type": "semantic_vad", "eagerness": "high"}))
    check_utterances(events, samples, spans, stt)
    # "low" waits 2 s: the 1.5 s pauses do not end an utterance, the 2.5 s after the last one does
    events = asyncio.run(session({"type": "semantic_vad", "eagerness": "low"}, completed=1, tail=1.0))
    (it,) = items(events)
    assert it["events"] == list(VAD_EVENTS) and it["audio_start_ms"] < spans[0][0] * 1000
    assert (spans[2][1] + 1.5) * 1000 <= it["audio_end_ms"] <= (spans[2][1] + 2.5) * 1000  # 2 s after the speech
    audio = np.concatenate([samples, np.zeros(RATE, np.int16)])[it["audio_start_ms"] * 24 : it["audio_end_ms"] * 24]
    assert it["transcript"] == it["deltas"] == stt.transcribe(audio, task="is").text


@pytest.mark.slow
def test_server_vad_with_a_client_that_also_commits(server, talk, stt):
    """A commit in the middle of the second sentence ends that item there; the rest of the sentence
    is the next item, which the detector ends."""
    samples, spans = talk
    commit_at = round((spans[1][0] + 2.0) * RATE)
    update = {"type": "session.update", "session": {"audio": {"input": {"transcription": {"language": "is"}}}}}

    async def main():
        async with ga_client(server).realtime.connect(model="m") as conn:
            return await converse(conn, samples, update, commit_at=[commit_at], completed=4)

    events = asyncio.run(main())
    found = items(events)
    assert [it["events"] for it in found] == [
        list(VAD_EVENTS),
        ["input_audio_buffer.speech_started", "input_audio_buffer.committed", f"{TRANSCRIPTION}.completed"],
        ["input_audio_buffer.speech_stopped", "input_audio_buffer.committed", f"{TRANSCRIPTION}.completed"],
        list(VAD_EVENTS),
    ]
    bounds = [
        (found[0]["audio_start_ms"] * 24, found[0]["audio_end_ms"] * 24),
        (found[1]["audio_start_ms"] * 24, commit_at),
        (commit_at, found[2]["audio_end_ms"] * 24),
        (found[3]["audio_start_ms"] * 24, found[3]["audio_end_ms"] * 24),
    ]
    for it, (a, b) in zip(found, bounds):
        assert it["transcript"] == it["deltas"] == stt.transcribe(samples[a:b], task="is").text


@pytest.mark.slow
def test_turn_detection_null_is_manual_commit(server, talk, stt):
    """No detection: no speech events, every sample sent is decoded, one item per commit."""
    samples, _ = talk
    update = {"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}}

    async def main():
        async with ga_client(server).realtime.connect(model="m") as conn:
            events = await converse(conn, samples, update, commit_at=[len(samples) - 1], completed=1)
            return events

    events = asyncio.run(main())
    assert events[1]["session"]["audio"]["input"]["turn_detection"] is None
    assert not [e for e in events if e["type"].startswith("input_audio_buffer.speech")]
    (it,) = items(events)
    assert it["events"] == ["input_audio_buffer.committed", f"{TRANSCRIPTION}.completed"]
    assert it["transcript"] == stt.transcribe(samples[: len(samples) - 1], task="is").text

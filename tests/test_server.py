# Copyright © 2026 mlx-kyutai-is contributors
"""`mlx-kyutai-is serve` as a subprocess on loopback: the official openai client, the realtime
websocket, many clients at once on the batched engine, faults, auth, limits and shutdown.

Every transcript is compared with `STT.transcribe()` of the same audio on the same model in
float32 (the server runs with --dtype float32), so equality is exact, not approximate."""

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

openai = pytest.importorskip("openai")
websockets = pytest.importorskip("websockets")

from mlx_kyutai_is.apps.openai.schemas import verbose_json  # noqa: E402
from mlx_kyutai_is.writers import WriteSRT, WriteVTT  # noqa: E402

START_TIMEOUT_S = 120
REALTIME = "/v1/realtime?intent=transcription"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(model_dir, *args, check_exit=True):
    """Run `python -m mlx_kyutai_is serve` on a free loopback port; yields (base url, process, log),
    `log()` being its stderr so far. Stopped with SIGTERM at the end; it must exit 0 within 30 s."""
    import tempfile

    port = free_port()
    cmd = [sys.executable, "-m", "mlx_kyutai_is", "serve", "--model", str(model_dir), "--port", str(port)]
    err = tempfile.NamedTemporaryFile("w+", suffix=".log")  # a file: a pipe nobody reads could fill up
    proc = subprocess.Popen(
        [*cmd, "--dtype", "float32", *args],
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    lines = []

    def log() -> str:
        return Path(err.name).read_text()

    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not any(url in line for line in lines):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not start: {log()}")
            time.sleep(0.1)
        yield url, proc, log
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError("server did not stop within 30 s of SIGTERM")
            if check_exit:
                assert code == 0, log()
        err.close()


@pytest.fixture(scope="module")
def stt(small_hf):
    from mlx_kyutai_is import load

    return load(str(small_hf), dtype="float32")


@pytest.fixture(scope="module")
def server(small_hf):
    with serve(small_hf, "--max-streams", "24") as (url, proc, log):
        yield url


@pytest.fixture(scope="module")
def pcm(speech):
    """The espeak files as pcm16 samples (the websocket's input)."""
    return [pcm16(p) for p in speech]


@pytest.fixture(scope="module")
def reference(stt, pcm):
    """transcribe() of each espeak clip per task, computed once. A 16-bit wav file decodes to the
    same float32 samples as its pcm16 (both divide by 32768), so uploads share these."""
    cache = {}

    def get(i, task="is"):
        if (i, task) not in cache:
            cache[i, task] = stt.transcribe(pcm[i], task=task)
        return cache[i, task]

    return get


def pcm16(path) -> np.ndarray:
    audio, sr = sf.read(str(path), dtype="int16")
    assert sr == 24_000 and audio.ndim == 1
    return audio


def client(url, key="unused", **kw):
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120, **kw)


def status(url, key=None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(f"{url}/v1/status", headers=headers, timeout=10).json()


def append(samples) -> str:
    return json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(samples.tobytes()).decode()})


async def realtime(url, samples, language="is", chunk=1920, beta=False, headers=None, subprotocols=None):
    """One realtime session: session update, the audio in `chunk`-sample appends, commit; returns
    (events, deltas joined, completed transcript)."""
    ws_url = url.replace("http://", "ws://") + REALTIME
    extra = {**({"OpenAI-Beta": "realtime=v1"} if beta else {}), **(headers or {})}
    async with websockets.connect(ws_url, additional_headers=extra, subprotocols=subprotocols, max_size=None) as ws:
        created = json.loads(await ws.recv())
        assert created["type"] == ("transcription_session.created" if beta else "session.created")
        if beta:
            update = {
                "type": "transcription_session.update",
                "session": {"input_audio_format": "pcm16", "input_audio_transcription": {"language": language}},
            }
        else:
            update = {
                "type": "session.update",
                "session": {
                    "type": "transcription",
                    "audio": {
                        "input": {
                            "format": {"type": "audio/pcm", "rate": 24000},
                            "transcription": {"language": language},
                        }
                    },
                },
            }
        await ws.send(json.dumps(update))
        for i in range(0, len(samples), chunk):
            await ws.send(append(samples[i : i + chunk]))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        return await _until_completed(ws)


async def _until_completed(ws, timeout=120):
    events, deltas = [], []
    deadline = time.monotonic() + timeout
    while True:
        ev = json.loads(await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic())))
        events.append(ev)
        assert ev["type"] != "error", ev
        if ev["type"] == "conversation.item.input_audio_transcription.delta":
            deltas.append(ev["delta"])
        if ev["type"] == "conversation.item.input_audio_transcription.completed":
            return events, "".join(deltas), ev["transcript"]


# --------------------------------------------------------------------------------------------
# The openai client


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the client's translations API
def test_openai_client_formats_equal_transcribe(server, stt, speech):
    c = client(server)
    path = speech[0]
    ref = stt.transcribe(str(path), task="is")
    en = stt.transcribe(str(path), task="en")
    assert ref.text and en.text != ref.text

    def create(**kw):
        with open(path, "rb") as f:
            return c.audio.transcriptions.create(file=f, model="whisper-1", **kw)

    assert create().text == ref.text
    assert create(response_format="text").strip() == ref.text
    assert create(response_format="srt") == _written(WriteSRT, ref["is"])
    assert create(response_format="vtt") == _written(WriteVTT, ref["is"])
    verbose = create(response_format="verbose_json", timestamp_granularities=["word", "segment"])
    expected = verbose_json(ref, ["word", "segment"])
    assert verbose.text == ref.text and verbose.language == "icelandic" and verbose.task == "transcribe"
    assert verbose.duration == pytest.approx(ref.duration, abs=1e-3) and ref.duration > 3
    assert [(w.word, w.start, w.end) for w in verbose.words] == [
        (w.text, round(w.start, 3), round(w.end, 3)) for w in ref.words
    ]
    assert [s.model_dump() for s in verbose.segments] == expected["segments"]
    assert " ".join(s.text.strip() for s in verbose.segments) == " ".join(w.text for w in ref.words)
    assert (
        not hasattr(create(response_format="verbose_json"), "words")
        or create(response_format="verbose_json").words is None
    )

    with open(path, "rb") as f:
        assert c.audio.translations.create(file=f, model="whisper-1").text == en.text

    events = list(create(stream=True))
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    assert len(deltas) > 5 and events[-1].type == "transcript.text.done"
    assert "".join(deltas) == events[-1].text == ref.text


def _written(writer_class, transcript) -> str:
    import io

    buf = io.StringIO()
    writer_class().write_result(transcript, buf)
    return buf.getvalue()


def test_models_status_page(server):
    models = client(server).models.list()
    assert [m.id for m in models.data] and models.data[0].owned_by == "mlx-kyutai-is"
    s = status(server)
    assert {"steps", "rows_last_step", "max_rows_per_step", "mean_rows_per_step", "mean_step_ms"} <= set(s["engine"])
    assert s["engine"]["max_streams"] == 24
    metrics = httpx.get(f"{server}/metrics").text
    assert "mlx_kyutai_is_engine_mean_rows_per_step " in metrics
    page = httpx.get(f"{server}/")
    assert page.status_code == 200 and 'data-testid="start"' in page.text and 'data-testid="transcript"' in page.text
    for asset in ("app.js", "capture-worklet.js", "style.css"):
        assert httpx.get(f"{server}/static/{asset}").status_code == 200


# --------------------------------------------------------------------------------------------
# Realtime


@pytest.mark.slow
def test_realtime_equals_transcribe_and_deltas_add_up(server, pcm, reference):
    events, deltas, transcript = asyncio.run(realtime(server, pcm[1]))
    ref = reference(1, "is")
    assert transcript == ref.text and deltas == transcript
    types = [e["type"] for e in events]
    assert types[0] == "session.updated" and "input_audio_buffer.committed" in types
    words = [e for e in events if e["type"].endswith(".delta") and "start" in e]
    assert len(words) > 5 and all(0 <= e["start"] <= e["end"] <= ref.duration + 1e-3 for e in words)

    # the beta event shapes; English is the translation task; odd chunk sizes change nothing
    events, deltas, transcript = asyncio.run(realtime(server, pcm[1], language="en", chunk=777, beta=True))
    assert transcript == reference(1, "en").text and deltas == transcript
    assert events[0]["type"] == "transcription_session.updated"
    assert events[0]["session"]["input_audio_transcription"]["language"] == "en"


@pytest.mark.slow
def test_many_clients_at_once_step_together(server, pcm, reference):
    """16 realtime clients and 4 uploads at once, mixed tasks and chunk sizes: each result equals
    its own single-stream transcribe(), and the engine stepped them in one batch."""
    seen_rows = []

    async def upload(ac, i, task):
        path = "translations" if task == "en" else "transcriptions"
        buf = _wav_bytes(pcm[i])
        r = await ac.post(
            f"{server}/v1/audio/{path}", files={"file": ("a.wav", buf, "audio/wav")}, data={"model": "whisper-1"}
        )
        assert r.status_code == 200, r.text
        return r.json()["text"]

    async def watch(stop):
        async with httpx.AsyncClient(timeout=10) as ac:
            while not stop.is_set():
                seen_rows.append((await ac.get(f"{server}/v1/status")).json()["engine"]["rows_last_step"])
                await asyncio.sleep(0.05)

    async def main():
        stop = asyncio.Event()
        watcher = asyncio.ensure_future(watch(stop))
        jobs, expected = [], []
        async with httpx.AsyncClient(timeout=120) as ac:
            for k in range(16):
                i, task = k % 3, ("is", "en")[k % 2]
                jobs.append(realtime(server, pcm[i], language=task, chunk=(1920, 960, 4800)[k % 3]))
                expected.append(reference(i, task).text)
            for k in range(4):
                i, task = (k + 1) % 3, ("is", "en")[k % 2]
                jobs.append(upload(ac, i, task))
                expected.append(reference(i, task).text)
            results = await asyncio.gather(*jobs)
        stop.set()
        await watcher
        return results, expected

    for i in range(3):  # references first, so that the clients overlap on the server
        reference(i, "is"), reference(i, "en")
    results, expected = asyncio.run(main())
    for k, (result, want) in enumerate(zip(results, expected)):
        if k < 16:
            _, deltas, transcript = result
            assert transcript == want and deltas == want, f"realtime client {k}"
        else:
            assert result == want, f"upload {k - 16}"
    s = status(server)
    assert max(seen_rows) > 1 and s["engine"]["max_rows_per_step"] >= 16, (max(seen_rows), s["engine"])
    assert s["engine"]["active_streams"] == 0


def _wav_bytes(samples) -> bytes:
    import io

    buf = io.BytesIO()
    sf.write(buf, samples, 24_000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# Faults


def test_bad_messages_give_error_events_and_the_session_goes_on(server, pcm, reference):
    bad = [
        ("garbage{", "invalid_json"),
        ("[1, 2]", "invalid_event"),
        (json.dumps({"type": "response.create"}), "unknown_event"),
        (json.dumps({"type": "input_audio_buffer.append", "audio": "!!not base64!!"}), "invalid_base64"),
        (
            json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"abc").decode()}),
            "invalid_audio",
        ),
        (json.dumps({"type": "input_audio_buffer.commit"}), "input_audio_buffer_commit_empty"),
        (
            json.dumps(
                {"type": "session.update", "session": {"audio": {"input": {"transcription": {"language": "de"}}}}}
            ),
            "unsupported_language",
        ),
        (
            json.dumps({"type": "transcription_session.update", "session": {"input_audio_format": "g711_ulaw"}}),
            "unsupported_audio_format",
        ),
        (b"\x00\x01binary", "invalid_event"),
    ]

    async def main():
        async with websockets.connect(server.replace("http", "ws") + REALTIME) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            codes = []
            for message, _ in bad:
                await ws.send(message)
                ev = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert ev["type"] == "error" and set(ev["error"]) >= {"type", "code", "message", "param"}, ev
                codes.append(ev["error"]["code"])
            assert codes == [code for _, code in bad]
            # still alive: a good utterance on the same connection
            for i in range(0, len(pcm[2]), 1920):
                await ws.send(append(pcm[2][i : i + 1920]))
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            return await _until_completed(ws)

    _, deltas, transcript = asyncio.run(main())
    assert transcript == reference(2, "is").text == deltas


def _wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_a_client_that_leaves_frees_its_slot_at_once(server, pcm):
    base = status(server)["engine"]["active_streams"]

    async def leave_mid_stream():
        ws = await websockets.connect(server.replace("http", "ws") + REALTIME)
        await ws.recv()
        for i in range(0, 24_000 * 2, 1920):
            await ws.send(append(pcm[0][i : i + 1920]))
        await asyncio.to_thread(_wait_for, lambda: status(server)["engine"]["active_streams"] == base + 1)
        ws.transport.abort()  # no close handshake: the client just vanishes

    asyncio.run(leave_mid_stream())
    t0 = time.monotonic()
    _wait_for(lambda: status(server)["engine"]["active_streams"] == base, timeout=5, what="the slot to be freed")
    assert time.monotonic() - t0 < 2.0

    # an upload whose client hangs up mid-stream
    with httpx.Client(timeout=60) as hc:
        with hc.stream(
            "POST",
            f"{server}/v1/audio/transcriptions",
            files={"file": ("a.wav", _wav_bytes(pcm[0]))},
            data={"model": "m", "stream": "true"},
        ) as r:
            assert r.status_code == 200
            lines = r.iter_lines()  # (dropping the iterator would close the response)
            assert next(lines).startswith("data: ")
            assert status(server)["engine"]["active_streams"] == base + 1
    _wait_for(lambda: status(server)["engine"]["active_streams"] == base, timeout=5, what="the upload's slot")


# --------------------------------------------------------------------------------------------
# Auth, busy, limits: a server with a key, one stream slot and a 0.3 MB upload limit

KEY = "sekrit-key"


@pytest.fixture(scope="module")
def guarded(small_hf):
    with serve(small_hf, "--api-key", KEY, "--max-streams", "1", "--max-upload-mb", "0.3") as (url, proc, log):
        yield url


def _error(response, status_code):
    assert response.status_code == status_code, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def test_api_key_required_on_uploads_and_websocket(guarded, pcm, reference):
    wav = _wav_bytes(pcm[0][:24_000])
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = httpx.post(
            f"{guarded}/v1/audio/transcriptions", files={"file": ("a.wav", wav)}, data={"model": "m"}, headers=headers
        )
        assert _error(r, 401)["code"] == "invalid_api_key"
        assert httpx.get(f"{guarded}/v1/models", headers=headers).status_code == 401
    with pytest.raises(openai.AuthenticationError):
        client(guarded, key="wrong").audio.transcriptions.create(file=("a.wav", wav), model="m")
    assert client(guarded, key=KEY).audio.transcriptions.create(file=("a.wav", wav), model="m").text is not None

    async def handshake(**kw):
        async with websockets.connect(guarded.replace("http", "ws") + REALTIME, **kw) as ws:
            return json.loads(await ws.recv())["type"], ws.subprotocol

    for kw in (
        {},
        {"additional_headers": {"Authorization": "Bearer wrong"}},
        {"subprotocols": ["realtime", "openai-insecure-api-key.wrong"]},
    ):
        with pytest.raises(websockets.exceptions.InvalidStatus) as e:
            asyncio.run(handshake(**kw))
        assert e.value.response.status_code == 401
    assert asyncio.run(handshake(additional_headers={"Authorization": f"Bearer {KEY}"})) == ("session.created", None)
    # a browser's way: the key as a subprotocol; the server answers with the other one
    protocols = ["realtime", f"openai-insecure-api-key.{KEY}"]
    assert asyncio.run(handshake(subprotocols=protocols)) == ("session.created", "realtime")


def test_busy_slots_upload_limits_and_bad_audio(guarded, pcm, reference):
    auth = {"Authorization": f"Bearer {KEY}"}
    wav = _wav_bytes(pcm[1])
    assert status(guarded, KEY)["engine"]["active_streams"] == 0

    async def hold_the_slot():
        async with websockets.connect(guarded.replace("http", "ws") + REALTIME, additional_headers=auth) as ws:
            await ws.recv()
            r = await asyncio.to_thread(
                httpx.post,
                f"{guarded}/v1/audio/transcriptions",
                files={"file": ("a.wav", wav)},
                data={"model": "m"},
                headers=auth,
            )
            assert _error(r, 503)["code"] == "engine_overloaded"
            assert r.headers["retry-after"]
            with pytest.raises(openai.InternalServerError):
                client(guarded, key=KEY).audio.transcriptions.create(file=("a.wav", wav), model="m")
            with pytest.raises(websockets.exceptions.InvalidStatus) as e:
                await websockets.connect(guarded.replace("http", "ws") + REALTIME, additional_headers=auth)
            assert e.value.response.status_code == 503

    asyncio.run(hold_the_slot())
    _wait_for(lambda: status(guarded, KEY)["engine"]["active_streams"] == 0, what="the slot")
    r = httpx.post(
        f"{guarded}/v1/audio/transcriptions",
        files={"file": ("a.wav", wav)},
        data={"model": "m"},
        headers=auth,
        timeout=60,
    )
    assert r.status_code == 200 and r.json()["text"] == reference(1, "is").text

    big = _wav_bytes(np.zeros(24_000 * 8, np.int16))  # 384 kB > 0.3 MB
    r = httpx.post(
        f"{guarded}/v1/audio/transcriptions", files={"file": ("a.wav", big)}, data={"model": "m"}, headers=auth
    )
    assert _error(r, 413)["param"] == "file"
    # no Content-Length (chunked): counted as it arrives
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
    chunks = [head, *[big[i : i + 65536] for i in range(0, len(big), 65536)], b"\r\n--b--\r\n"]
    r = httpx.post(
        f"{guarded}/v1/audio/transcriptions",
        content=iter(chunks),
        headers={**auth, "Content-Type": "multipart/form-data; boundary=b"},
    )
    assert "Content-Length" not in r.request.headers
    _error(r, 413)

    r = httpx.post(
        f"{guarded}/v1/audio/transcriptions",
        files={"file": ("a.wav", b"not audio at all" * 10)},
        data={"model": "m"},
        headers=auth,
    )
    err = _error(r, 400)
    assert err["param"] == "file" and err["code"] == "invalid_audio" and "a.wav" in err["message"]
    assert (
        _error(httpx.post(f"{guarded}/v1/audio/transcriptions", data={"model": "m"}, headers=auth), 400)["param"]
        == "file"
    )
    r = httpx.post(
        f"{guarded}/v1/audio/transcriptions",
        files={"file": ("a.wav", wav)},
        data={"model": "m", "response_format": "docx"},
        headers=auth,
    )
    assert _error(r, 400)["param"] == "response_format"
    assert status(guarded, KEY)["engine"]["active_streams"] == 0


# --------------------------------------------------------------------------------------------
# The command


@pytest.mark.slow
def test_sigterm_finishes_in_flight_work_then_exits_0(small_hf, pcm, reference):
    ref_upload, ref_ws = reference(0, "is").text, reference(1, "is").text
    with serve(small_hf, check_exit=False) as (url, proc, log):
        result = {}

        def upload():
            r = httpx.post(
                f"{url}/v1/audio/transcriptions",
                files={"file": ("a.wav", _wav_bytes(pcm[0]))},
                data={"model": "m"},
                timeout=60,
            )
            result["upload"] = (r.status_code, r.json())

        async def main():
            async with websockets.connect(url.replace("http", "ws") + REALTIME) as ws:
                await ws.recv()
                for i in range(0, len(pcm[1]), 1920):
                    await ws.send(append(pcm[1][i : i + 1920]))
                # answered once every append before it is handled: the SIGTERM finds all the audio in
                await ws.send(json.dumps({"type": "session.update", "session": {}}))
                early = []
                while (ev := json.loads(await asyncio.wait_for(ws.recv(), 30)))["type"] != "session.updated":
                    assert not ev["type"].endswith(".completed"), ev
                    early.append(ev.get("delta", "") if ev["type"].endswith(".delta") else "")
                thread = threading.Thread(target=upload)
                thread.start()
                await asyncio.to_thread(_wait_for, lambda: status(url)["uploads_in_flight"] == 1)
                proc.send_signal(signal.SIGTERM)  # audio not committed, an upload in flight
                _, deltas, transcript = await _until_completed(ws)
                deltas = "".join(early) + deltas
                with pytest.raises(websockets.exceptions.ConnectionClosed) as e:
                    while True:
                        await asyncio.wait_for(ws.recv(), 30)
                await asyncio.to_thread(thread.join, 60)
                return transcript, deltas, e.value.rcvd.code

        transcript, deltas, close_code = asyncio.run(main())
        assert transcript == deltas == ref_ws and close_code == 1001
        assert result["upload"] == (200, {"text": ref_upload})
        assert proc.wait(30) == 0, log()
        assert "stopped" in log()


def test_port_in_use_is_one_line(small_hf):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "mlx_kyutai_is", "serve", "--model", str(small_hf), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"mlx-kyutai-is serve: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


# --------------------------------------------------------------------------------------------
# The wire shapes, without a server


def test_text_deltas_add_up_to_the_decoded_text():
    """Deltas are the growth of the decoded text, so a piece that decoding joins to the word
    before it (no word marker after a boundary) still adds up to the transcript."""
    from mlx_kyutai_is.runtime.protocol import TextDeltas
    from mlx_kyutai_is.results import Word

    pieces = {1: "▁góðan", 2: "▁dag", 3: "inn", 4: "▁jón"}
    decode = lambda ids: "".join(pieces[i] for i in ids).replace("▁", " ").strip()  # noqa: E731
    words = [Word("góðan", 0, 1, "is", [1]), Word("dag", 1, 2, "is", [2]), Word("inn", 2, 3, "is", [3]),
             Word("jón", 3, 4, "is", [4])]  # fmt: skip
    d = TextDeltas(decode)
    deltas = [d.add(w) for w in words]
    assert deltas == ["góðan", " dag", "inn", " jón"]
    assert d.finish("góðan daginn jón") == "" and "".join(deltas) == "góðan daginn jón"
    # text the words never carried (the final transcript is the reference) comes as a last delta
    d = TextDeltas(decode)
    d.add(words[0])
    assert d.finish("góðan dag") == " dag"


def test_verbose_json_segments_are_the_subtitle_cues():
    from mlx_kyutai_is.apps.openai.schemas import verbose_json
    from mlx_kyutai_is.results import Transcript, Word
    from mlx_kyutai_is.writers import build_cues

    words = [Word(f"w{i}.", i * 0.5, i * 0.5 + 0.4, "is", [10 + i]) for i in range(5)]
    t = Transcript(" ".join(w.text for w in words), words, "is", 3.0, [1, 2, 3, 4] + [10 + i for i in range(5)])
    out = verbose_json(t, ["word"])
    assert set(out) == {"task", "language", "duration", "text", "words"}
    out = verbose_json(t)
    cues = build_cues(words)
    assert len(out["segments"]) == len(cues) == 5  # a sentence end closes each cue
    assert [s["tokens"] for s in out["segments"]] == [[10 + i] for i in range(5)]
    assert [(s["start"], s["end"], s["text"]) for s in out["segments"]] == [
        (round(c.start, 3), round(c.end, 3), " " + c.text) for c in cues
    ]
    assert verbose_json(Transcript("x", [], "en", 1.0))["task"] == "translate"

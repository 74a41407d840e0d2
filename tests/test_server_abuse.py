# Copyright © 2026 mlx-kyutai-is contributors
"""`mlx-kyutai-is serve` tried as an attacker and as a careless client would, on loopback (issue 20).

Each case runs against the server as a subprocess with real clients (the openai SDK, websockets,
httpx, raw sockets): memory stays bounded per client (RSS read from /proc), every engine stream counts
against --max-streams (read from /v1/status), foreign hosts and origins are refused, wrong-shape JSON
is an error event, latency has no Nagle stall, slow or idle clients time out, the shutdown deadline
is applied once, and https/wss work with a certificate made here. Every loop is bounded in count and
time; transcripts are compared with `STT.transcribe()` on the same float32 model."""

import asyncio
import base64
import http.client
import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
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

from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402

# Servers, clusters and codecs run end to end here: the quick loop (-m 'not slow') leaves them out.
pytestmark = pytest.mark.slow

START_TIMEOUT_S = 120
REALTIME = "/v1/realtime?intent=transcription"
KEY = "abuse-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(model_dir, *args, scheme="http"):
    """`python -m mlx_kyutai_is serve` on a free loopback port; yields (url, process, log, banner lines).
    Stopped with SIGTERM at the end if still running."""
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
    url = f"{scheme}://127.0.0.1:{port}"
    lines = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()

    def log() -> str:
        return Path(err.name).read_text()

    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not any(url in line for line in lines):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not start: {log()}")
            time.sleep(0.1)
        yield url, proc, log, lines
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        err.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def status(url, headers=None):
    return httpx.get(f"{url}/v1/status", headers=headers or {}, timeout=10).json()


def pcm16(path) -> np.ndarray:
    audio, sr = sf.read(str(path), dtype="int16")
    assert sr == 24_000 and audio.ndim == 1
    return audio


def append(samples) -> str:
    return json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(samples.tobytes()).decode()})


def ws_url(url: str) -> str:
    return url.replace("http", "ws", 1) + REALTIME


def wav_bytes(samples) -> bytes:
    import io

    buf = io.BytesIO()
    sf.write(buf, samples, 24_000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def error_of(response, status_code):
    assert response.status_code == status_code, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


async def until_completed(ws, timeout=120):
    """(events, deltas joined, transcript) of the next completed item; an error event fails."""
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


async def utterance(ws, samples, chunk=1920):
    for i in range(0, len(samples), chunk):
        await ws.send(append(samples[i : i + chunk]))
    await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
    return await until_completed(ws)


async def realtime_once(url, samples, headers=None):
    async with websockets.connect(ws_url(url), additional_headers=headers or {}, max_size=None) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        _, deltas, transcript = await utterance(ws, samples)
        assert deltas == transcript
        return transcript


@pytest.fixture(scope="module")
def stt(small_hf):
    from mlx_kyutai_is import load

    return load(str(small_hf), dtype="float32")


@pytest.fixture(scope="module")
def pcm(speech):
    return [pcm16(p) for p in speech]


@pytest.fixture(scope="module")
def reference(stt, pcm):
    cache = {}

    def get(i, task="is"):
        if (i, task) not in cache:
            cache[i, task] = stt.transcribe(pcm[i], task=task).text
        return cache[i, task]

    return get


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory):
    """sox-made files: a 10-hour FLAC of silence (under 1 MB), and a WAV whose header never says its
    length (data size 0, as a recorder writing to a pipe leaves it) holding 60 s."""
    d = tmp_path_factory.mktemp("abuse_audio")
    flac = d / "ten_hours.flac"
    subprocess.run(["sox", "-D", "-n", "-r", "8000", "-c", "1", "-b", "16", str(flac), "trim", "0", "10:00:00"],
                   check=True, timeout=300)  # fmt: skip
    assert flac.stat().st_size < 1_000_000
    samples = (np.random.default_rng(0).standard_normal(24_000 * 60) * 3000).astype("<i2").tobytes()
    header = b"RIFF" + struct.pack("<I", 0) + b"WAVE" + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 24000, 48000, 2, 16)
    unsized = d / "unsized.wav"
    unsized.write_bytes(header + b"data" + struct.pack("<I", 0) + samples)
    return {"flac": flac, "unsized": unsized}


# --------------------------------------------------------------------------------------------
# One server for the quick cases: 4 streams, tight limits and timeouts, no key


@pytest.fixture(scope="module")
def server(small_hf):
    args = ["--max-streams", "4", "--max-unread-seconds", "5", "--max-audio-minutes", "0.5",
            "--read-timeout", "2", "--idle-timeout", "3"]  # fmt: skip
    with serve(small_hf, *args) as (url, proc, log, _lines):
        yield url, proc, log


def test_audio_longer_than_the_limit_is_413_at_once(server, audio_files, pcm, reference):
    url, proc, _log = server
    base = rss_mb(proc.pid)
    t0 = time.monotonic()
    with open(audio_files["flac"], "rb") as f:
        r = httpx.post(
            f"{url}/v1/audio/transcriptions", files={"file": ("ten.flac", f)}, data={"model": "m"}, timeout=30
        )
    err = error_of(r, 413)
    assert err["code"] == "audio_too_long" and err["param"] == "file" and "ten.flac: 600.0 minutes" in err["message"]
    assert time.monotonic() - t0 < 5 and rss_mb(proc.pid) < base + 100
    # a header that does not say how long: refused as the decoded audio passes the limit (30 s)
    with open(audio_files["unsized"], "rb") as f:
        r = httpx.post(f"{url}/v1/audio/translations", files={"file": ("rec.wav", f)}, data={"model": "m"}, timeout=60)
    assert "rec.wav: the audio goes on, over the server's limit of 0.5 minutes" in error_of(r, 413)["message"]
    # the openai client sees it as the 413 it is; a short clip is still transcribed
    c = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)
    with pytest.raises(openai.APIStatusError) as e:
        c.audio.transcriptions.create(file=("ten.flac", audio_files["flac"].read_bytes()), model="m")
    assert e.value.status_code == 413
    assert c.audio.transcriptions.create(file=("a.wav", wav_bytes(pcm[0])), model="m").text == reference(0)
    assert status(url)["engine"]["active_streams"] == 0


def test_a_truncated_upload_says_so_naming_the_file(server, pcm):
    url, _proc, log = server
    whole = wav_bytes(pcm[1])
    r = httpx.post(
        f"{url}/v1/audio/transcriptions", files={"file": ("cut.wav", whole[: len(whole) // 2])}, data={"model": "m"},
        timeout=60,
    )  # fmt: skip
    assert r.status_code == 200 and r.json()["text"]
    assert r.headers["x-audio-warning"].startswith("cut.wav: truncated file, its header promises")
    assert "upload cut.wav: truncated file" in log() and "<stdin>" not in log()


def test_a_fast_websocket_gets_an_error_then_a_clean_close(server, pcm, reference):
    """--max-unread-seconds 5: a client sending far faster than the engine reads is told and closed;
    a client beside it is served exactly."""
    url, _proc, _log = server
    noise = np.tile(pcm[0], 20)  # minutes of audio, sent as fast as the socket takes it

    async def flood():
        async with websockets.connect(ws_url(url), max_size=None) as ws:
            await ws.recv()
            errors = []
            with pytest.raises(ConnectionClosed) as closed:
                for i in range(0, len(noise), 24_000):  # bounded: the audio's length in seconds
                    await ws.send(append(noise[i : i + 24_000]))
                    while True:  # take what came back without waiting
                        try:
                            ev = json.loads(await asyncio.wait_for(ws.recv(), 0.001))
                        except asyncio.TimeoutError:
                            break
                        errors.append(ev)
                async with asyncio.timeout(10):
                    while True:
                        errors.append(json.loads(await ws.recv()))
            return errors, closed.value.rcvd

    async def main():
        return await asyncio.gather(flood(), realtime_once(url, pcm[2]))

    (events, close), transcript = asyncio.run(main())
    overflow = [e for e in events if e["type"] == "error"]
    assert [e["error"]["code"] for e in overflow] == ["input_audio_buffer_overflow"], events
    assert close is not None and close.code == 1008
    assert transcript == reference(2)
    _wait_for(lambda: status(url)["engine"]["active_streams"] == 0, what="the slots")
    assert status(url)["closed_unread"] >= 1


def _wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class StatusWatch:
    """Polls /v1/status in a thread: the most engine streams and slots seen while it runs."""

    def __init__(self, url):
        self.url, self.seen, self.stop = url, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        with httpx.Client(timeout=10) as c:
            for _ in range(10_000):  # bounded; stopped long before
                if self.stop.is_set():
                    return
                e = c.get(f"{self.url}/v1/status").json()["engine"]
                self.seen.append((e["engine_streams"], e["active_streams"]))
                time.sleep(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(20)


def test_commit_flood_and_clear_hog_stay_within_max_streams(server, pcm, reference):
    """300 commits on one websocket, then 200 append/clear pairs: never more engine streams than
    --max-streams (4), the session holds at most 2, and another client is served meanwhile."""
    url, _proc, _log = server
    bit = pcm[0][:240]  # 10 ms: 300 of them stay under --max-unread-seconds

    async def flood():
        async with websockets.connect(ws_url(url), max_size=None) as ws:
            await ws.recv()
            for _ in range(300):
                await ws.send(append(bit))
                await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            for _ in range(200):
                await ws.send(append(bit))
                await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
            # every commit comes back, or is refused while 16 are in flight; every clear is answered
            n = {"completed": 0, "refused": 0, "cleared": 0}
            async with asyncio.timeout(240):
                while n["completed"] + n["refused"] < 300 or n["cleared"] < 200:
                    ev = json.loads(await ws.recv())
                    if ev["type"].endswith("transcription.completed"):
                        n["completed"] += 1
                    elif ev["type"] == "error":
                        assert ev["error"]["code"] == "too_many_commits", ev
                        n["refused"] += 1
                    elif ev["type"] == "input_audio_buffer.cleared":
                        n["cleared"] += 1
            return n["completed"], n["refused"]

    async def main():
        return await asyncio.gather(flood(), realtime_once(url, pcm[1]))

    with StatusWatch(url) as watch:
        (completed, refused), transcript = asyncio.run(main())
    assert transcript == reference(1)
    assert completed >= 16 and completed + refused == 300
    assert max(s for s, _ in watch.seen) <= 4 and max(a for _, a in watch.seen) <= 4, max(watch.seen)
    _wait_for(lambda: status(url)["engine"]["active_streams"] == 0, what="the slots")


def test_foreign_host_and_origin_are_refused_the_page_is_not(server, pcm, reference, small_hf):
    url, _proc, _log = server
    port = url.rsplit(":", 1)[1]
    for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.1.attacker.example"):
        r = httpx.get(f"{url}/v1/models", headers={"Host": host})
        assert error_of(r, 400)["code"] == "invalid_host"
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST"):
        assert httpx.get(f"{url}/v1/models", headers={"Host": host}).status_code == 200, host
    # /v1/models names the model, not where it lies on this machine
    ids = [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]]
    assert ids == [Path(small_hf).name] and str(Path(small_hf).parent) not in json.dumps(ids)

    wav = wav_bytes(pcm[0])
    for origin in ("http://evil.example", "null", f"http://127.0.0.1:{int(port) + 1}", f"https://127.0.0.1:{port}"):
        r = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("a.wav", wav)}, data={"model": "m"},
                       headers={"Origin": origin})  # fmt: skip
        assert error_of(r, 403)["code"] == "origin_not_allowed", origin
    r = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("a.wav", wav)}, data={"model": "m"},
                   headers={"Origin": f"http://127.0.0.1:{port}"}, timeout=60)  # fmt: skip
    assert r.status_code == 200 and r.json()["text"] == reference(0)

    async def handshake(headers, host="127.0.0.1"):
        # the URL names `host` (the Host header); the connection goes to 127.0.0.1 all the same
        uri = f"ws://{host}:{port}{REALTIME}"
        async with websockets.connect(uri, additional_headers=headers, host="127.0.0.1", port=int(port)) as ws:
            return json.loads(await ws.recv())["type"]

    for headers, host, code in (
        ({"Origin": "http://evil.example"}, "127.0.0.1", "origin_not_allowed"),
        ({}, "attacker.example", "invalid_host"),
        ({"Origin": f"http://attacker.example:{port}"}, "attacker.example", "invalid_host"),
    ):
        with pytest.raises(InvalidStatus) as e:
            asyncio.run(handshake(headers, host))
        assert json.loads(e.value.response.body)["error"]["code"] == code
    assert asyncio.run(handshake({"Origin": f"http://127.0.0.1:{port}"})) == "session.created"
    assert asyncio.run(handshake({"Origin": f"http://localhost:{port}"}, "localhost")) == "session.created"
    s = status(url)
    assert s["rejected_host"] >= 4 and s["rejected_origin"] >= 5


def test_wrong_shape_json_is_an_error_event_and_the_session_goes_on(server, pcm, reference):
    url, _proc, log = server

    def update(session):
        return json.dumps({"type": "session.update", "session": session})

    bad = [
        update({"audio": {"input": {"transcription": {"language": ["is"]}}}}),
        update({"audio": {"input": {"transcription": {"language": {}}}}}),
        update({"audio": [1]}),
        update({"audio": {"input": [1]}}),
        update({"audio": {"input": {"transcription": "is"}}}),
        update({"audio": {"input": {"format": {"type": "audio/pcm", "rate": [24000]}}}}),
        update({"audio": {"input": {"transcription": {"language": "is", "model": {"x": 1}}}}}),
        update({"include": [1, 2]}),
        update({"type": ["transcription"]}),
        json.dumps({"type": "transcription_session.update", "session": {"input_audio_format": {"type": 5}}}),
        json.dumps({"type": "input_audio_buffer.append", "audio": 5}),
        json.dumps({"type": "input_audio_buffer.append", "audio": ["AAAA"]}),
        json.dumps({"type": "input_audio_buffer.append", "event_id": {"deep": [1]}}),
        json.dumps({"type": ["input_audio_buffer.append"]}),
        json.dumps({}),
        "[" * 100_000 + "]" * 100_000,
        '{"type": "input_audio_buffer.append", "audio": ' + "7" * 5000 + "}",
        '{"type": "session.update", "session": ' + '{"a": ' * 50_000 + "1" + "}" * 50_000 + "}",
    ]

    async def main():
        async with websockets.connect(ws_url(url), max_size=None) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            codes = []
            for message in bad:
                await ws.send(message)
                ev = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert ev["type"] == "error" and set(ev["error"]) >= {"type", "code", "message", "param"}, ev
                codes.append(ev["error"]["code"])
            return codes, await utterance(ws, pcm[2])

    codes, (_, deltas, transcript) = asyncio.run(main())
    assert "server_error" not in codes, codes  # each one is a client error the server names
    assert transcript == deltas == reference(2)
    assert "Traceback" not in log()


def test_no_nagle_stall_on_keep_alive_requests_and_websocket_events(server):
    """The listening socket is TCP, so accepted connections get TCP_NODELAY: a keep-alive request or
    a websocket round trip takes well under the 40 ms of a delayed-ACK stall."""
    url, _proc, _log = server
    port = int(url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    times = []
    for _ in range(60):
        t0 = time.perf_counter()
        conn.request("GET", "/health")
        assert conn.getresponse().read()
        times.append(time.perf_counter() - t0)
    conn.close()
    http_ms = 1e3 * float(np.median(times[10:]))

    async def ws_rounds():
        async with websockets.connect(ws_url(url)) as ws:
            await ws.recv()
            out = []
            for _ in range(60):
                t0 = time.perf_counter()
                await ws.send("{")  # answered with an error event
                await ws.recv()
                out.append(time.perf_counter() - t0)
            return out

    ws_ms = 1e3 * float(np.median(asyncio.run(ws_rounds())[10:]))
    print(f"keep-alive request {http_ms:.2f} ms, websocket round trip {ws_ms:.2f} ms (median)")
    assert http_ms < 5 and ws_ms < 5, (http_ms, ws_ms)


def _raw(url, data: bytes, read_for: float):
    """Send `data` on a fresh connection and read what comes back within `read_for` seconds (or
    until the server closes); returns (bytes, seconds until the first byte, closed by the server)."""
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=read_for) as s:
        if data:
            s.sendall(data)
        t0, got, first, closed = time.monotonic(), b"", None, False
        deadline = t0 + read_for
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                closed = True
                break
            if first is None:
                first = time.monotonic() - t0
            got += chunk
        return got, first, closed


def test_header_body_and_idle_timeouts_and_early_413(server):
    """--read-timeout 2: silent, half-sent headers and a stalled body are answered 408 and closed;
    a declared Content-Length over the limit is 413 before any body; --idle-timeout 3 closes a silent
    websocket and frees its slot."""
    url, _proc, _log = server
    for data in (b"", b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"):
        got, first, closed = _raw(url, data, read_for=8)
        assert got.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in got and closed, got
        assert 1.5 < first < 5, first
    head = (b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n")  # fmt: skip
    got, first, closed = _raw(url, head, read_for=8)
    assert got.startswith(b"HTTP/1.1 408") and b"stopped arriving for 2 s" in got and closed, got
    assert 1.5 < first < 5

    huge = (b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000000000\r\n\r\n")  # fmt: skip
    got, first, _ = _raw(url, huge, read_for=1.5)
    assert got.startswith(b"HTTP/1.1 413") and b'"request_too_large"' in got and first < 1.0, got

    async def idle():
        async with websockets.connect(ws_url(url)) as ws:
            await ws.recv()
            assert status(url)["engine"]["active_streams"] == 1
            t0 = time.monotonic()
            ev = json.loads(await asyncio.wait_for(ws.recv(), 10))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            return ev, closed.value.rcvd, time.monotonic() - t0

    ev, close, waited = asyncio.run(idle())
    assert ev["type"] == "error" and ev["error"]["code"] == "session_idle_timeout"
    assert close.code == 1000 and 2.5 < waited < 6
    _wait_for(lambda: status(url)["engine"]["active_streams"] == 0, what="the idle session's slot")


def test_busy_websocket_gets_retry_after(server):
    url, _proc, _log = server

    async def main():
        held = [await websockets.connect(ws_url(url)) for _ in range(4)]
        try:
            for ws in held:
                await ws.recv()
            with pytest.raises(InvalidStatus) as e:
                await websockets.connect(ws_url(url))
            return e.value.response
        finally:
            for ws in held:
                await ws.close()

    response = asyncio.run(main())
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert json.loads(response.body)["error"]["code"] == "engine_overloaded"


def test_a_tls_client_on_the_plain_port_is_one_log_line(server):
    url, _proc, log = server
    port = int(url.rsplit(":", 1)[1])
    ctx = ssl.create_default_context()
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1"):
                pass
    _wait_for(lambda: "reached this plain-HTTP port" in log(), timeout=5, what="the log line")
    lines = [line for line in log().splitlines() if "TLS" in line]
    assert len(lines) == 1 and "--ssl-certfile" in lines[0] and "Invalid HTTP request" not in log()


# --------------------------------------------------------------------------------------------
# Memory: a 10-hour FLAC and a fast websocket, while an honest client is served


@pytest.mark.slow
def test_memory_stays_bounded_under_a_ten_hour_flac_and_a_fast_websocket(small_hf, audio_files, pcm, reference):
    """The 10-hour FLAC (0.9 MB) accepted (--max-audio-minutes 700) is decoded only as the engine reads
    it; a websocket sending hours of audio as fast as it can is closed past --max-unread-seconds 30;
    the server's RSS stays within a few hundred MB of idle, and another client's transcript equals
    its solo run."""
    args = ["--max-streams", "8", "--max-audio-minutes", "700", "--max-unread-seconds", "30"]
    with serve(small_hf, *args) as (url, proc, _log, _lines):
        solo = asyncio.run(realtime_once(url, pcm[1]))  # also warms the engine up
        assert solo == reference(1)
        time.sleep(0.5)
        idle = rss_mb(proc.pid)
        peak = [idle]
        stop = threading.Event()

        def sample():
            for _ in range(100_000):  # bounded; stopped long before
                if stop.is_set():
                    return
                peak.append(rss_mb(proc.pid))
                time.sleep(0.1)

        def upload(seconds=20.0):
            """The FLAC, streamed back as server-sent events for `seconds`, then the client leaves."""
            deltas = 0
            with httpx.Client(timeout=30) as c, open(audio_files["flac"], "rb") as f:
                with c.stream("POST", f"{url}/v1/audio/transcriptions", files={"file": ("ten.flac", f)},
                              data={"model": "m", "stream": "true"}) as r:  # fmt: skip
                    assert r.status_code == 200
                    t0 = time.monotonic()
                    for line in r.iter_lines():
                        deltas += line.startswith("data:")
                        if time.monotonic() - t0 > seconds:
                            break
            return deltas

        async def fast_sender():
            hours = np.tile(pcm[0], 100)  # ~10 minutes; the loop stops at the server's close
            chunk = 24_000 * 5
            async with websockets.connect(ws_url(url), max_size=None) as ws:
                await ws.recv()
                # no turn detection: every sample goes to the engine (with it on, the detector reads
                # the audio at its own pace and TCP holds the client back)
                await ws.send(json.dumps({"type": "session.update", "session": {"turn_detection": None}}))
                t0, sent = time.monotonic(), 0
                try:
                    for rep in range(12):  # up to ~2 hours of audio
                        for i in range(0, len(hours), chunk):
                            await ws.send(append(hours[i : i + chunk]))
                            sent += len(hours[i : i + chunk])
                            await asyncio.sleep(0)  # let the client read: the close frame is among it
                    async with asyncio.timeout(30):
                        while True:
                            await ws.recv()
                except ConnectionClosed as e:
                    return sent / 24_000, time.monotonic() - t0, e.rcvd.code if e.rcvd else None
            return sent / 24_000, time.monotonic() - t0, None

        async def attack():
            up = asyncio.to_thread(upload)
            await asyncio.sleep(2)  # the upload is in the engine
            return await asyncio.gather(up, fast_sender(), realtime_once(url, pcm[1]))

        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        try:
            deltas, (sent_s, sent_in, code), again = asyncio.run(attack())
        finally:
            stop.set()
            watcher.join(10)
        _wait_for(lambda: status(url)["engine"]["active_streams"] == 0, timeout=20, what="every slot")
        time.sleep(1)
        after = rss_mb(proc.pid)
        print(f"RSS idle {idle:.0f} MB, peak {max(peak):.0f} MB (+{max(peak) - idle:.0f}), after {after:.0f} MB; "
              f"fast websocket sent {sent_s:.0f} s of audio in {sent_in:.1f} s before close {code}; "
              f"upload deltas {deltas}")  # fmt: skip
        assert again == solo
        assert code == 1008
        assert max(peak) - idle < 300, (idle, max(peak))
        assert after - idle < 150, (idle, after)


# --------------------------------------------------------------------------------------------
# Shutdown: the deadline once, OpenAI's JSON for what is dropped, a non-zero status


@pytest.mark.slow
def test_shutdown_deadline_is_applied_once_and_dropped_work_is_json(small_hf, audio_files):
    args = ["--shutdown-timeout", "3", "--max-audio-minutes", "700"]
    with serve(small_hf, *args) as (url, proc, log, lines):
        result = {}

        def upload():
            with open(audio_files["flac"], "rb") as f:
                r = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("ten.flac", f)},
                               data={"model": "m"}, timeout=60)  # fmt: skip
            result["r"] = r

        thread = threading.Thread(target=upload)
        thread.start()
        _wait_for(lambda: status(url)["uploads_in_flight"] == 1, what="the upload")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        took = time.monotonic() - t0
        thread.join(30)
        err = error_of(result["r"], 503)
        assert err["code"] == "shutting_down" and result["r"].headers["retry-after"]
        assert code == 128 + signal.SIGTERM, log()
        assert 3 <= took < 5.5, took
        assert "unfinished work dropped" in log()

    # a second Ctrl-C stops at once, and says work was dropped by its status
    with serve(small_hf, "--max-audio-minutes", "700") as (url, proc, log, _lines):
        thread = threading.Thread(target=lambda: _quiet_upload(url, audio_files["flac"]))
        thread.start()
        _wait_for(lambda: status(url)["uploads_in_flight"] == 1, what="the upload")
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 128 + signal.SIGINT
        thread.join(30)


def _quiet_upload(url, path):
    try:
        with open(path, "rb") as f:
            httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("a.flac", f)}, data={"model": "m"}, timeout=60)
    except httpx.HTTPError:
        pass


# --------------------------------------------------------------------------------------------
# TLS: https and wss with a certificate made here, the openai client trusting it


def test_https_and_wss_with_the_openai_client(small_hf, tmp_path, pcm, reference):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    certfile.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(keyfile))
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    args = ["--ssl-certfile", str(certfile), "--ssl-keyfile", str(keyfile), "--api-key", KEY,
            "--max-streams", "1", "--allow-origin", "https://app.example"]  # fmt: skip
    with serve(small_hf, *args, scheme="https") as (url, _proc, _log, lines):
        assert any(f"{url}/v1; 1 stream;" in line for line in lines), lines  # "1 stream", not "1 streams"
        c = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60,
                          http_client=openai.DefaultHttpxClient(verify=ctx))  # fmt: skip
        assert c.audio.transcriptions.create(file=("a.wav", wav_bytes(pcm[0])), model="m").text == reference(0)
        with httpx.Client(verify=ctx) as hc:
            assert hc.get(f"{url}/openapi.json").status_code == 401  # the schema needs the key too
            assert "/v1/audio/transcriptions" in hc.get(f"{url}/openapi.json", headers=AUTH).json()["paths"]
            # an origin allowed with --allow-origin may upload, and gets CORS headers
            r = hc.post(f"{url}/v1/audio/transcriptions", files={"file": ("a.wav", wav_bytes(pcm[0][:24_000]))},
                        data={"model": "m"}, headers={**AUTH, "Origin": "https://app.example"}, timeout=60)  # fmt: skip
            assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"

        # wss with the official SDK's GA realtime client (it rewrites https:// to wss://)
        with c.realtime.connect(extra_query={"intent": "transcription"},
                                websocket_connection_options={"ssl": ctx}) as conn:  # fmt: skip
            assert conn.recv().type == "session.created"
            conn.send({"type": "session.update", "session": {"type": "transcription",
                       "audio": {"input": {"transcription": {"language": "is"}}}}})  # fmt: skip
            samples = pcm[1]
            for i in range(0, len(samples), 4800):
                conn.send({"type": "input_audio_buffer.append",
                           "audio": base64.b64encode(samples[i : i + 4800].tobytes()).decode()})  # fmt: skip
            conn.send({"type": "input_audio_buffer.commit"})
            deltas, transcript = [], None
            for _ in range(10_000):
                ev = json.loads(conn.recv_bytes())
                assert ev["type"] != "error", ev
                if ev["type"] == "conversation.item.input_audio_transcription.delta":
                    deltas.append(ev["delta"])
                if ev["type"] == "conversation.item.input_audio_transcription.completed":
                    transcript = ev["transcript"]
                    break
        assert transcript == "".join(deltas) == reference(1)

"""The Wyoming server (`apps/wyoming`, `mlx-kyutai-is wyoming`), tested with the `wyoming` library's
own `AsyncTcpClient` over loopback, the tiny model in float32 on both sides: `info`; transcripts at
16 and 24 kHz equal to `stt.transcribe()` of the same file, their chunks joining to them; both
languages; 8 clients at once; faults; and the command run as a subprocess (row limit, SIGTERM
finishing the utterance in progress). Nothing is announced: only what would be is checked."""

import asyncio
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
import soxr

wyoming = pytest.importorskip("wyoming")

from wyoming.asr import Transcribe, Transcript, TranscriptChunk  # noqa: E402
from wyoming.audio import AudioChunk, AudioStart, AudioStop  # noqa: E402
from wyoming.client import AsyncTcpClient  # noqa: E402
from wyoming.error import Error as ErrorEvent  # noqa: E402
from wyoming.event import Event  # noqa: E402
from wyoming.info import Describe, Info  # noqa: E402
from wyoming.ping import Ping  # noqa: E402

from mlx_kyutai_is import load  # noqa: E402
from mlx_kyutai_is._version import __version__  # noqa: E402
from mlx_kyutai_is.apps.wyoming import Limits, WyomingServer, announcement  # noqa: E402
from mlx_kyutai_is.apps.wyoming.announce import AnnounceError  # noqa: E402

# Servers, clusters and codecs run end to end here: the quick loop (-m 'not slow') leaves them out.
pytestmark = pytest.mark.slow

READ_TIMEOUT_S = 60
UNREAD_CAP_S = 1.0  # small, so that the test clients (which send faster than real time) meet it
IDLE_S = 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# Audio, references, the server


@pytest.fixture(scope="module")
def clips(speech, tmp_path_factory):
    """(rate, index) -> a pcm16 mono wav: the espeak clips at 24 kHz and resampled to 16 kHz."""
    d = tmp_path_factory.mktemp("wyoming_clips")
    out = {}
    for i, path in enumerate(speech):
        x, sr = sf.read(str(path), dtype="float32")
        assert sr == 24_000
        out[24_000, i] = str(path)
        y = soxr.resample(x, 24_000, 16_000)
        p16 = d / f"s{i}_16k.wav"
        sf.write(str(p16), y, 16_000, subtype="PCM_16")
        out[16_000, i] = str(p16)
    return out


def pcm_of(path) -> tuple[bytes, int]:
    x, sr = sf.read(str(path), dtype="int16")
    return x.astype("<i2").tobytes(), sr


@pytest.fixture(scope="module")
def stt(small_hf):
    return load(str(small_hf), dtype="float32")


CASES = [
    (24_000, 0, "is"),
    (16_000, 0, "is"),
    (24_000, 1, "en"),
    (16_000, 1, "en"),
    (16_000, 2, "is"),
    (24_000, 2, "en"),
]
PARTIAL_SECONDS = 1.5  # the audio client A sends before SIGTERM in the command test


@pytest.fixture(scope="module")
def reference(stt, clips, tmp_path_factory):
    """`stt.transcribe()` of the files, computed before any server runs (one MLX user at a time)."""
    pcm, sr = pcm_of(clips[24_000, 1])
    part = tmp_path_factory.mktemp("part") / "part.wav"
    sf.write(str(part), np.frombuffer(pcm, "<i2")[: int(PARTIAL_SECONDS * sr)], sr, subtype="PCM_16")
    jobs = {key: clips[key[:2]] for key in [*CASES, (16_000, 0, "both")]}
    jobs["partial", 0, "is"] = str(part)
    ref = {}
    for task in ("is", "en", "both"):  # batched: each input decodes exactly as it would alone
        keys = [k for k in jobs if k[2] == task]
        for key, result in zip(keys, stt.transcribe([jobs[k] for k in keys], task=task, batch_size=8)):
            ref[key] = result
    ref["partial"] = ref.pop(("partial", 0, "is"))
    return ref


class ServerThread:
    """A `WyomingServer` on its own event loop in a thread of this process (so tests can read its
    engine's stats and row count), listening on a free loopback port."""

    def __init__(self, stt, **limits):
        self.port = free_port()
        self.server = WyomingServer(stt, model_name="small_hf", limits=Limits(**limits))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self.server.start(f"tcp://127.0.0.1:{self.port}"))

    def call(self, coro, timeout=60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stats(self) -> dict:
        async def get():
            return self.server.stats()

        return self.call(get())

    def close(self):
        self.call(self.server.drain(10))
        self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def served(stt, reference):
    s = ServerThread(stt, max_rows=10, idle_timeout=IDLE_S, max_unread_seconds=UNREAD_CAP_S)
    yield s
    s.close()


# --------------------------------------------------------------------------------------------
# A client


async def read(client) -> Event | None:
    return await asyncio.wait_for(client.read_event(), READ_TIMEOUT_S)


async def read_until_stop(client, stop_on_error=True) -> list[Event]:
    events = []
    for _ in range(100_000):  # bounded; each read is bounded in time
        ev = await read(client)
        assert ev is not None, f"connection closed after {[e.type for e in events]}"
        events.append(ev)
        if ev.type == "transcript-stop" or (stop_on_error and ev.type == "error"):
            return events
    raise AssertionError("no transcript-stop")


async def send_audio(client, pcm: bytes, rate: int, chunk_bytes: int = 3200, width=2, channels=1, stop=True):
    await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
    for i in range(0, len(pcm), chunk_bytes):
        await client.write_event(
            AudioChunk(rate=rate, width=width, channels=channels, audio=pcm[i : i + chunk_bytes]).event()
        )
    if stop:
        await client.write_event(AudioStop().event())


async def transcribe(port, path, language=None, name=None, chunk_bytes=3200) -> list[Event]:
    pcm, rate = pcm_of(path)
    async with AsyncTcpClient("127.0.0.1", port) as client:
        if language is not None or name is not None:
            await client.write_event(Transcribe(language=language, name=name).event())
        await send_audio(client, pcm, rate, chunk_bytes)
        return await read_until_stop(client)


def parse(events: list[Event]):
    """(chunk texts, [(transcript text, language)]), checking the order of the events."""
    types = [e.type for e in events]
    assert types[0] == "transcript-start" and types[-1] == "transcript-stop", types
    first = types.index("transcript")
    assert set(types[1:first]) <= {"transcript-chunk"} and set(types[first:-1]) == {"transcript"}, types
    chunks = [TranscriptChunk.from_event(e).text for e in events if e.type == "transcript-chunk"]
    transcripts = [(Transcript.from_event(e).text, Transcript.from_event(e).language) for e in events[first:-1]]
    return chunks, transcripts


def wait_for(predicate, timeout=10.0, what="a condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# --------------------------------------------------------------------------------------------
# The protocol


def test_describe_answers_info(served):
    async def go():
        async with AsyncTcpClient("127.0.0.1", served.port) as client:
            await client.write_event(Describe().event())
            return await read(client)

    ev = asyncio.run(go())
    info = Info.from_event(ev)
    assert len(info.asr) == 1 and not info.tts
    program = info.asr[0]
    assert program.name == "mlx-kyutai-is" and program.installed and program.version == __version__
    assert program.supports_transcript_streaming is True
    assert program.attribution.name and program.attribution.url.startswith("https://")
    assert [(m.name, m.languages) for m in program.models] == [("small_hf:is", ["is"]), ("small_hf:en", ["en"])]
    for m in program.models:
        assert m.installed and "huggingface.co/mideind" in m.attribution.url
    assert "English" in program.models[1].description


@pytest.mark.parametrize("rate,i,task", CASES)
def test_transcript_equals_transcribe_of_the_file(served, clips, reference, rate, i, task):
    events = asyncio.run(transcribe(served.port, clips[rate, i], language=task, chunk_bytes=2 * (257 + 700 * i)))
    chunks, transcripts = parse(events)
    expected = reference[rate, i, task][task].text
    assert expected  # the tiny model babbles: a non-empty text to compare
    assert transcripts == [(expected, task)]
    assert "".join(chunks) == expected
    assert events[0].data.get("language") == task


def test_both_languages_and_task_by_name(served, clips, reference):
    events = asyncio.run(transcribe(served.port, clips[16_000, 0], language="both"))
    chunks, transcripts = parse(events)
    ref = reference[16_000, 0, "both"]
    assert transcripts == [(ref["is"].text, "is"), (ref["en"].text, "en")]
    assert "".join(chunks) == ref["is"].text  # the chunks stream the first language
    # the model's advertised name picks the task; a region tag is understood
    by_name = parse(asyncio.run(transcribe(served.port, clips[24_000, 1], name="small_hf:en")))[1]
    assert by_name == [(reference[24_000, 1, "en"]["en"].text, "en")]
    by_tag = parse(asyncio.run(transcribe(served.port, clips[24_000, 0], language="is-IS")))[1]
    assert by_tag == [(reference[24_000, 0, "is"]["is"].text, "is")]
    # no transcribe event: the default task
    assert parse(asyncio.run(transcribe(served.port, clips[24_000, 0])))[1] == by_tag


def test_words_stream_while_audio_arrives(served, clips, reference):
    """transcript-chunk events come before the client sends audio-stop."""

    async def go():
        pcm, rate = pcm_of(clips[24_000, 0])
        async with AsyncTcpClient("127.0.0.1", served.port) as client:
            await send_audio(client, pcm, rate, stop=False)
            events = [await read(client), await read(client)]
            await client.write_event(AudioStop().event())
            return events + await read_until_stop(client)

    events = asyncio.run(go())
    assert [e.type for e in events[:2]] == ["transcript-start", "transcript-chunk"]
    chunks, transcripts = parse(events)
    assert "".join(chunks) == transcripts[0][0] == reference[24_000, 0, "is"].text


@pytest.mark.slow
def test_eight_clients_at_once_step_together(served, clips, reference):
    jobs = [CASES[k % len(CASES)] for k in range(8)]
    before = served.stats()

    async def go():
        return await asyncio.gather(
            *(
                transcribe(served.port, clips[r, i], language=t, chunk_bytes=640 * (k + 1))
                for k, (r, i, t) in enumerate(jobs)
            )
        )

    results = asyncio.run(go())
    for (rate, i, task), events in zip(jobs, results):
        chunks, transcripts = parse(events)
        assert transcripts == [(reference[rate, i, task][task].text, task)]
        assert "".join(chunks) == transcripts[0][0]
    after = served.stats()
    assert after["max_rows_per_step"] >= 8, after  # the engine stepped the 8 streams together
    assert after["steps"] > before["steps"]
    wait_for(lambda: served.stats()["rows_in_use"] == 0, what="the rows to be given back")


def test_unread_audio_is_capped(served, clips, reference):
    """A client sending 6 s of audio at once waits for the model: its unread audio stays under the
    cap (plus a chunk), and the transcript is unchanged."""
    pcm = b"".join(pcm_of(clips[24_000, i])[0] for i in (0, 1))
    seen = []

    async def peek():
        return [h.utterance.stream.unread() for h in list(served.server.handlers) if h.utterance is not None]

    stop = threading.Event()

    def watch():
        while not stop.is_set():
            seen.extend(served.call(peek()))
            time.sleep(0.02)

    async def go():
        async with AsyncTcpClient("127.0.0.1", served.port) as client:
            await send_audio(client, pcm, 24_000, chunk_bytes=4800)
            return await read_until_stop(client)

    t = threading.Thread(target=watch)
    t.start()
    try:
        events = asyncio.run(go())
    finally:
        stop.set()
        t.join()
    parse(events)
    assert seen and max(seen) <= UNREAD_CAP_S + 0.1 + 1e-6, max(seen)


# --------------------------------------------------------------------------------------------
# Faults


def test_bad_events_get_an_error_and_the_connection_goes_on(served, clips, reference):
    pcm, rate = pcm_of(clips[24_000, 0])

    async def go():
        async with AsyncTcpClient("127.0.0.1", served.port) as client:
            errors = []
            await client.write_event(AudioChunk(rate=rate, width=2, channels=1, audio=pcm[:3200]).event())
            errors.append(ErrorEvent.from_event(await read(client)))
            await client.write_event(Event(type="make-coffee", data={"sugar": 2}))
            errors.append(ErrorEvent.from_event(await read(client)))
            await client.write_event(AudioStop().event())
            errors.append(ErrorEvent.from_event(await read(client)))
            # an utterance with an odd-sized chunk in the middle: that chunk alone is dropped
            await client.write_event(AudioStart(rate=rate, width=2, channels=1).event())
            half = len(pcm) // 4 * 2  # whole samples
            await client.write_event(AudioChunk(rate=rate, width=2, channels=1, audio=pcm[:half]).event())
            await client.write_event(AudioChunk(rate=rate, width=2, channels=1, audio=b"\x01\x02\x03").event())
            await client.write_event(AudioChunk(rate=rate, width=2, channels=1, audio=pcm[half:]).event())
            await client.write_event(AudioStop().event())
            events = await read_until_stop(client, stop_on_error=False)
            return errors, events

    errors, events = asyncio.run(go())
    assert [e.code for e in errors] == ["audio-before-start", "unknown-event", "audio-before-start"]
    assert "make-coffee" in errors[1].text
    odd = [e for e in events if e.type == "error"]
    assert [ErrorEvent.from_event(e).code for e in odd] == ["bad-audio"], [e.type for e in events]
    assert "3 bytes" in ErrorEvent.from_event(odd[0]).text
    chunks, transcripts = parse([e for e in events if e.type != "error"])
    assert transcripts == [(reference[24_000, 0, "is"].text, "is")] and "".join(chunks) == transcripts[0][0]


@pytest.mark.parametrize(
    "request_event,code",
    [
        (Transcribe(language="de").event(), "unsupported-language"),
        (Transcribe(name="whisper-large").event(), "unknown-model"),
        (AudioStart(rate=16_000, width=5, channels=1).event(), "bad-audio"),
    ],
)
def test_a_request_that_cannot_be_served_is_refused_and_the_server_goes_on(served, request_event, code):
    async def go():
        async with AsyncTcpClient("127.0.0.1", served.port) as client:
            await client.write_event(request_event)
            err = await read(client)
            closed = await read(client)
        async with AsyncTcpClient("127.0.0.1", served.port) as client:
            await client.write_event(Ping(text="still there?").event())
            return err, closed, await read(client)

    err, closed, pong = asyncio.run(go())
    assert err.type == "error" and ErrorEvent.from_event(err).code == code, err
    if code == "unsupported-language":
        assert "'is' (Icelandic text)" in ErrorEvent.from_event(err).text
    assert closed is None  # the request cannot go on: the client learns at once
    assert pong.type == "pong" and pong.data["text"] == "still there?"
    assert served.stats()["rows_in_use"] == 0


def test_garbage_and_oversized_events_are_refused(served):
    async def raw(data: bytes):
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(data)
        await writer.drain()
        out = await asyncio.wait_for(reader.read(), READ_TIMEOUT_S)  # until the server closes
        writer.close()
        return out

    for data in (
        b"this is not json\n",
        b'{"type": "audio-chunk", "payload_length": 999999999999}\n',
        b'{"type": "x", "data": [1, 2]}\n',
        b"[" * 100_000 + b"\n",
    ):
        out = asyncio.run(raw(data))
        assert b'"type": "error"' in out and b"bad-event" in out, (data[:40], out[:300])
    assert asyncio.run(transcribe_nothing(served.port)) == "pong"


async def transcribe_nothing(port):
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Ping().event())
        return (await read(client)).type


def test_a_client_that_leaves_mid_utterance_frees_its_row(served, clips):
    pcm, rate = pcm_of(clips[24_000, 1])
    base = served.stats()["active_streams"]

    async def go():
        client = AsyncTcpClient("127.0.0.1", served.port)
        await client.connect()
        await client.write_event(Transcribe(language="both").event())
        await send_audio(client, pcm[: len(pcm) // 2], rate, stop=False)
        await asyncio.to_thread(wait_for, lambda: served.stats()["rows_in_use"] == 2, 10, "2 rows in use")
        assert served.stats()["active_streams"] == base + 1
        client._writer.transport.abort()  # no goodbye: the client just vanishes

    asyncio.run(go())
    t0 = time.monotonic()
    wait_for(
        lambda: served.stats()["rows_in_use"] == 0 and served.stats()["active_streams"] == base, 5, "the row freed"
    )
    assert time.monotonic() - t0 < 2.0


def test_an_idle_connection_is_closed(served):
    async def go():
        async with AsyncTcpClient("127.0.0.1", served.port) as client:
            await client.write_event(AudioStart(rate=16_000, width=2, channels=1).event())
            assert (await read(client)).type == "transcript-start"
            t0 = time.monotonic()
            err, closed = await read(client), await read(client)
            return err, closed, time.monotonic() - t0

    err, closed, waited = asyncio.run(go())
    assert ErrorEvent.from_event(err).code == "idle-timeout" and closed is None
    assert IDLE_S - 0.5 < waited < IDLE_S + 5
    wait_for(lambda: served.stats()["rows_in_use"] == 0, 5, "the idle client's row freed")


# --------------------------------------------------------------------------------------------
# What --zeroconf would announce (nothing is sent)


def test_zeroconf_announcement():
    a = announcement("192.168.1.20", 10300, "kitchen")
    assert (a.name, a.address, a.port) == ("kitchen", "192.168.1.20", 10300)
    assert a.service_name == "kitchen._wyoming._tcp.local."
    wildcard = announcement("0.0.0.0", 10301, find_address=lambda: "10.1.2.3")
    assert (wildcard.address, wildcard.port) == ("10.1.2.3", 10301)
    assert wildcard.name == f"mlx-kyutai-is-{socket.gethostname()}"
    with pytest.raises(AnnounceError, match="loopback"):
        announcement("127.0.0.1", 10300)


# --------------------------------------------------------------------------------------------
# The command


def run_cli(*args, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "mlx_kyutai_is", "wyoming", *args], capture_output=True, text=True, timeout=timeout
    )


def test_command_errors_are_one_line(small_hf):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = run_cli("--model", str(small_hf), "--uri", f"tcp://127.0.0.1:{port}")
    assert p.returncode == 1 and p.stderr.strip() == (
        f"mlx-kyutai-is wyoming: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ), p.stderr
    for args, says in [
        (["--uri", "http://127.0.0.1:1"], "use tcp://HOST:PORT"),
        (["--uri", "tcp://127.0.0.1"], "needs a host and a port"),
        (["--zeroconf"], "loopback"),
    ]:
        p = run_cli("--model", str(small_hf), *args)
        assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1 and says in p.stderr, p.stderr


@contextmanager
def wyoming_command(model_dir, *args):
    """`python -m mlx_kyutai_is wyoming` on a free loopback port; yields (port, process, log)."""
    port = free_port()
    err = tempfile.NamedTemporaryFile("w+", suffix=".log")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlx_kyutai_is", "wyoming", "--uri", f"tcp://127.0.0.1:{port}"]
        + ["--model", str(model_dir), "--dtype", "float32", *args],
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()

    def log():
        return Path(err.name).read_text()

    try:
        wait_for(
            lambda: any(f"tcp://127.0.0.1:{port}" in line for line in lines) or proc.poll() is not None, 120, "start"
        )
        assert proc.poll() is None, log()
        assert lines[0].startswith("mlx-kyutai-is wyoming: tcp://127.0.0.1:") and "languages is, en, both" in lines[0]
        yield port, proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err.close()


def test_command_row_limit_and_sigterm_finishing_the_utterance(small_hf, clips, reference):
    pcm, rate = pcm_of(clips[24_000, 1])
    part = pcm[: int(PARTIAL_SECONDS * rate) * 2]
    with wyoming_command(small_hf, "--max-streams", "1") as (port, proc, log):

        async def go():
            a = AsyncTcpClient("127.0.0.1", port)
            await a.connect()
            await send_audio(a, part, rate, stop=False)
            await a.write_event(Ping(text="sync").event())  # every chunk before it has been handled
            events = []
            while (ev := await read(a)).type != "pong":
                events.append(ev)
            # a second client is over the row limit
            async with AsyncTcpClient("127.0.0.1", port) as b:
                await b.write_event(AudioStart(rate=16_000, width=2, channels=1).event())
                busy, closed = await read(b), await read(b)
            # SIGTERM: a's utterance is ended as if it had stopped, answered, then the server exits 0
            proc.send_signal(signal.SIGTERM)
            events += await read_until_stop(a)
            assert await read(a) is None
            return events, busy, closed

        events, busy, closed = asyncio.run(go())
        assert ErrorEvent.from_event(busy).code == "busy" and "1 engine rows" in ErrorEvent.from_event(busy).text
        assert closed is None
        chunks, transcripts = parse(events)
        assert transcripts == [(reference["partial"].text, "is")] and "".join(chunks) == transcripts[0][0]
        assert proc.wait(30) == 0, log()
        assert "stopped" in log()

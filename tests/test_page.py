# Copyright © 2026 mlx-kyutai-is contributors
"""The live-captions page in a real browser: headless Chromium (Debian's, driven by Playwright)
with a fake microphone playing an espeak-ng Icelandic WAV, against `mlx-kyutai-is serve`.

After start, words must appear in the transcript element, and what the page shows (per language)
must be exactly what the server sent on that websocket; the downloads carry the same text."""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
START_TIMEOUT_S = 120
SCREENSHOT = Path(tempfile.gettempdir()) / "mlx-kyutai-is-page.png"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (.ci/run installs it: apt-get install chromium)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(small_hf):
    """`python -m mlx_kyutai_is serve` on a free loopback port (stopped with SIGTERM)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    err = tempfile.NamedTemporaryFile("w+", suffix=".log")
    cmd = [sys.executable, "-m", "mlx_kyutai_is", "serve", "--model", str(small_hf), "--port", str(port)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=err, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
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
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err.close()


@pytest.fixture
def browser_page(speech, tmp_path):
    """A Chromium page whose microphone plays speech[0]; yields (page, frames the server sent)."""
    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={speech[0]}",
        "--autoplay-policy=no-user-gesture-required",
    ]
    frames = []
    with playwright.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=args, headless=True, accept_downloads=True
        )
        try:
            page = context.new_page()
            page.on("websocket", lambda ws: ws.on("framereceived", lambda f: frames.append(f)))
            yield page, frames
        finally:
            context.close()


def lane_lines(page, task) -> list[str]:
    """The lane's caption lines: one per utterance (item)."""
    return page.eval_on_selector_all(
        f'[data-testid=transcript] .lane[data-task="{task}"] .confirmed', "els => els.map(e => e.textContent)"
    )


def lane_text(page, task) -> str:
    return "\n".join(line.strip() for line in lane_lines(page, task) if line.strip())


@pytest.mark.slow
def test_page_shows_what_the_server_sent(server, browser_page, tmp_path):
    page, frames = browser_page
    page.goto(server + "/")
    page.select_option("[data-testid=language]", "both")
    page.click("[data-testid=start]")
    # words appear while the "microphone" speaks
    page.wait_for_function(
        """() => ['is', 'en'].every(t => {
                 const e = document.querySelector(`[data-testid=transcript] .lane[data-task=${t}] .confirmed`);
                 return e && e.textContent.trim().split(/\\s+/).length >= 3; })""",
        timeout=30_000,
    )
    assert page.inner_text("[data-testid=state]").lower() == "listening"
    time.sleep(1.0)
    page.screenshot(path=str(SCREENSHOT))
    page.click("[data-testid=stop]")
    page.wait_for_function("document.querySelector('[data-testid=state]').textContent === 'idle'", timeout=60_000)

    events = [json.loads(f) for f in frames if isinstance(f, str)]
    assert [e for e in events if e["type"] == "error"] == []
    assert events[0]["type"] == "session.created"
    assert (
        events[1]["type"] == "session.updated"
        and events[1]["session"]["audio"]["input"]["transcription"]["language"] == "both"
    )
    # the server's turn detection is on (its default): each utterance is an item, and a line
    assert events[1]["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    items = [e["item_id"] for e in events if e["type"] == "input_audio_buffer.committed"]
    assert items
    for task in ("is", "en"):
        deltas = {i: "" for i in items}
        for e in events:
            if e["type"].endswith(".delta") and e["language"] == task:
                deltas[e["item_id"]] += e["delta"]
        completed = [e for e in events if e["type"].endswith(".completed") and e["language"] == task]
        assert sorted(e["item_id"] for e in completed) == sorted(items), task  # one completed per item
        assert all(e["transcript"] == deltas[e["item_id"]] for e in completed), task
        shown = lane_lines(page, task)
        assert len(" ".join(shown).split()) >= 3
        assert shown == [deltas[i] for i in items], task
    assert lane_text(page, "is") != lane_text(page, "en")
    sent = float(page.inner_text("#sent"))
    assert sent > 1.0 and page.inner_text("[data-testid=lag]") != "–"

    txt = downloads_of(page, "download-txt", 2)
    assert txt == {f"transcript.{t}.txt": lane_text(page, t) + "\n" for t in ("is", "en")}
    srt = downloads_of(page, "download-srt", 2)
    for task in ("is", "en"):
        blocks = srt[f"transcript.{task}.srt"].strip().split("\n\n")
        assert blocks[0].startswith("1\n00:00:") and all(" --> " in b.split("\n")[1] for b in blocks)
        cue_words = [w for b in blocks for line in b.split("\n")[2:] for w in line.split()]
        assert cue_words == lane_text(page, task).split()


def downloads_of(page, testid, count) -> dict:
    """{file name: text} of the `count` downloads one click on `testid` starts."""
    downloads = []

    def on_download(d):
        downloads.append(d)

    page.on("download", on_download)
    page.click(f"[data-testid={testid}]")
    deadline = time.monotonic() + 10
    while len(downloads) < count and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    page.remove_listener("download", on_download)
    return {d.suggested_filename: Path(d.path()).read_text() for d in downloads}

"""The batched engine: every row decodes exactly as its audio alone would (float32, tiny model),
whatever joins, leaves, or shares the batch with it."""

import asyncio
import threading

import numpy as np
import pytest

from mlx_kyutai_is.audio import AudioError, load_audio
from mlx_kyutai_is.runtime.engine import MAX_FRAMES_PER_CALL, Engine
from mlx_kyutai_is.runtime.live import EngineFull

SR, FRAME = 24000, 1920


@pytest.fixture(scope="module")
def stt(small_hf):
    from mlx_kyutai_is import load

    return load(str(small_hf), dtype="float32")


@pytest.fixture(scope="module")
def clips(speech):
    """Inputs of different lengths and content: sentences, a cut sentence, noise, near silence."""
    rng = np.random.default_rng(0)
    said = [load_audio(p) for p in speech]
    return [
        said[0],
        said[1],
        said[2],
        said[0][: int(1.3 * SR)],
        np.concatenate([said[1], said[2]]),
        (rng.standard_normal(int(2.7 * SR)) * 0.05).astype(np.float32),
        np.zeros(int(0.5 * SR), np.float32),
        said[2][int(0.4 * SR) :],
    ]


_alone = {}


def alone(stt, audio, task):
    """The reference: the same audio decoded on its own (one stream), computed once per input."""
    key = (audio.ctypes.data, len(audio), task)
    if key not in _alone:
        result = stt.stream(task)
        with result as s:
            s.feed(audio)
        _alone[key] = (audio, s.transcripts())  # the audio is kept so its buffer is not reused
    return _alone[key][1]


def summary(transcripts):
    return {
        t: (r.tokens, r.text, [(w.text, w.start, w.end, w.task) for w in r.words]) for t, r in transcripts.items()
    }


def engine_for(stt):
    return Engine(stt.model, stt.tokenizer)


def drive(engine, options, plan, chunk=FRAME, close_at=None):
    """Run a schedule: plan[i] = (join tick, audio, task). Each open stream gets `chunk` samples per
    tick (a live client), is finished when its audio is out, and collected when done.
    close_at = {i: tick} makes stream i leave early. Returns {i: transcripts}."""
    results, open_, tick = {}, {}, 0
    close_at = close_at or {}
    last_join = max(join for join, _, _ in plan)
    while tick <= last_join or open_:
        for i, (join, audio, task) in enumerate(plan):
            if join == tick:
                open_[i] = [engine.open(task, options), 0]
        for i, entry in list(open_.items()):
            s, pos = entry
            if close_at.get(i) == tick:
                engine.close(s)
                del open_[i]
                continue
            audio = plan[i][1]
            if pos < len(audio):
                engine.push(s, audio[pos : pos + chunk])
                entry[1] = pos + chunk
                if entry[1] >= len(audio):
                    engine.finish(s)
        engine.step()
        engine.drain()
        for i, (s, _) in list(open_.items()):
            if s.done:
                results[i] = s.transcripts()
                engine.close(s)
                del open_[i]
        tick += 1
        assert tick < 10_000
    return results


@pytest.mark.slow
def test_sixteen_rows_joining_at_different_steps_with_mixed_tasks_equal_each_alone(stt, clips):
    tasks = ["is", "en", "both", "is"]
    long = [clips[i] for i in (0, 1, 2, 4, 7)]  # 2.5 to 9 s: every stream is still fed when the last joins
    plan = [(2 * i, long[i % len(long)], tasks[i % len(tasks)]) for i in range(13)]
    engine = engine_for(stt)
    results = drive(engine, stt.options, plan)
    assert engine.max_rows == 16  # 13 streams, 3 of them "both": 16 rows in one step at the peak
    assert engine.mimi_state.batch_size == 0 and engine.decoder.capacity == 0  # all freed at the end
    for i, (_, audio, task) in enumerate(plan):
        assert summary(results[i]) == summary(alone(stt, audio, task)), f"stream {i} ({task})"


@pytest.mark.slow
def test_rows_flushed_at_different_times_in_big_chunks(stt, clips):
    """Files fed faster than real time: Mimi takes several frames per call, and streams of
    different lengths finish (and are flushed) at different steps."""
    plan = [(0, clips[i], "is") for i in range(5)]
    engine = engine_for(stt)
    results = drive(engine, stt.options, plan, chunk=7777)
    for i, (_, audio, task) in enumerate(plan):
        assert summary(results[i]) == summary(alone(stt, audio, task))


@pytest.mark.slow
def test_a_freed_slot_is_reused_without_seeing_the_old_stream(stt, clips):
    engine = engine_for(stt)
    plan = [(0, clips[0], "is"), (0, clips[1], "en"), (40, clips[2], "is"), (41, clips[4], "both")]
    results = drive(engine, stt.options, plan, close_at={0: 30})  # stream 0 leaves at tick 30
    assert 0 not in results
    for i in (1, 2, 3):
        _, audio, task = plan[i]
        assert summary(results[i]) == summary(alone(stt, audio, task))


@pytest.mark.slow
def test_memory_follows_active_rows_not_stream_length(stt, clips):
    engine = engine_for(stt)
    a, b = engine.open("is", stt.options), engine.open("both", stt.options)
    sizes = []
    for _ in range(3):  # many cache wraps (tiny LM window: 16 steps; Mimi: 20 positions)
        for s in (a, b):
            engine.push(s, np.tile(clips[0], 2))
        engine.run()
        sizes.append(sum(c.nbytes for c in engine.decoder.cache) + engine.mimi_state.nbytes)
    assert a.steps > 10 * stt.model.args.lm.sliding_window
    assert sizes[0] == sizes[1] == sizes[2]
    engine.close(b)
    assert engine.decoder.capacity == 1 and engine.mimi_state.batch_size == 1


def test_feed_size_does_not_change_the_work(stt, clips):
    """1-sample or 256-sample feeds run the same steps and Mimi frames as 80 ms feeds."""
    audio = clips[3][: SR // 2]
    runs = {}
    for chunk in (1, 256, FRAME):
        s = stt.stream("is")
        for i in range(0, len(audio), chunk):
            s.feed(audio[i : i + chunk])
        s.flush()
        runs[chunk] = (s.steps, s.engine.steps, s.transcripts()["is"].tokens)
    assert runs[1] == runs[256] == runs[FRAME]


def test_the_input_door_scales_pcm_and_downmixes(stt, clips):
    audio = np.clip(clips[0], -1, 1)
    pcm = np.round(audio * 32767).astype(np.int16)
    as_float = stt.transcribe(pcm.astype(np.float32) / 32768, task="is").tokens
    s = stt.stream("is")
    s.feed(pcm[: len(pcm) // 2])
    s.feed(np.stack([pcm[len(pcm) // 2 :]] * 2, axis=1))  # (N, 2) stereo: the same signal twice
    s.flush()
    assert s.transcripts()["is"].tokens == as_float
    assert s.duration == pytest.approx(len(pcm) / SR)
    assert stt.transcribe(np.stack([pcm, pcm]), task="is").tokens == as_float  # (2, N) too
    with pytest.raises(AudioError, match="dtype"):
        stt.stream("is").feed(np.array(["a", "b"]))


@pytest.mark.slow
def test_list_transcription_in_input_order_with_a_batch_cap(stt, clips):
    inputs = clips[:5]
    seen = []
    results = stt.transcribe(inputs, task="en", batch_size=2, progress=lambda done, total: seen.append((done, total)))
    for audio, r in zip(inputs, results):
        assert summary({"en": r}) == summary(alone(stt, audio, "en"))
    total = sum(len(x) for x in inputs) / SR
    assert seen[-1] == (pytest.approx(total), pytest.approx(total))
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))


@pytest.mark.slow
def test_a_failing_input_is_reported_and_the_others_go_on(stt, clips, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wav")
    job = stt.transcribe_iter([clips[0], bad, clips[3]], task="is", batch_size=2)
    items = {item.index: item for item in job}
    assert items[1].error is not None and "bad.wav" in str(items[1].error)
    assert items[0].result.tokens == alone(stt, clips[0], "is")["is"].tokens
    assert items[2].result.tokens == alone(stt, clips[3], "is")["is"].tokens
    with pytest.raises(AudioError):
        stt.transcribe([clips[0], bad])


def test_interrupted_job_gives_partial_transcripts(stt, clips):
    job = stt.transcribe_iter([clips[4], clips[1], clips[2]], task="is", batch_size=2)
    calls = []

    def stop(index, words):
        calls.append(index)
        if len(calls) == 3:
            raise KeyboardInterrupt

    job.on_words = stop
    with pytest.raises(KeyboardInterrupt):
        list(job)
    partials = job.partials()
    assert [p.index for p in partials] == [0, 1] and job.not_started() == [2]
    full = alone(stt, clips[4], "is")["is"]
    p = partials[0].result
    assert p.partial and partials[0].partial
    assert p.tokens == full.tokens[: len(p.tokens)] and 0 < len(p.tokens) < len(full.tokens)


def test_api_arguments_are_checked(stt, clips):
    with pytest.raises(ValueError, match="sr"):
        stt.transcribe(clips[0], sr=-5)
    with pytest.raises(ValueError, match="sr"):
        stt.transcribe(clips[0], sr=16000.5)
    for name in ("trailing_silence", "pad_steps", "text_delay"):
        with pytest.raises(ValueError, match=name):
            stt.transcribe(clips[0], **{name: -1})
    with pytest.raises(ValueError, match="batch_size"):
        stt.transcribe([clips[0]], batch_size=0)


@pytest.mark.slow
def test_transcribe_accepts_an_open_binary_file(stt, speech):
    with open(speech[0], "rb") as f:
        assert stt.transcribe(f, task="is").tokens == stt.transcribe(speech[0], task="is").tokens


def test_load_quantize_accepts_bits_as_text(small_hf):
    from mlx_kyutai_is import load

    assert load(str(small_hf), quantize="8").model.args is not None
    with pytest.raises(ValueError, match="4 or 8"):
        load(str(small_hf), quantize="three")


# -- the live engine ------------------------------------------------------------------------------


@pytest.mark.slow
def test_live_streams_fed_from_threads_equal_each_alone(stt, clips):
    plan = [(clips[i % 5], ("is", "en", "both")[i % 3]) for i in range(6)]
    with stt.live(max_streams=6) as live:
        streams = [live.open(task) for _, task in plan]
        with pytest.raises(EngineFull):
            live.open("is")

        def client(s, audio):
            for j in range(0, len(audio), 3000):
                s.feed(audio[j : j + 3000])

        threads = [threading.Thread(target=client, args=(s, a)) for s, (a, _) in zip(streams, plan)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        results = [s.flush().result(timeout=120) for s in streams]
        stats = live.stats()
    assert stats["max_rows_per_step"] > 2
    for (audio, task), r in zip(plan, results):
        assert summary(r) == summary(alone(stt, audio, task))


def test_live_events_from_asyncio_and_a_second_utterance(stt, clips):
    async def main(live):
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()
        s = live.open("is", on_event=lambda ev: loop.call_soon_threadsafe(q.put_nowait, ev))
        done = []
        for audio in (clips[0], clips[3]):  # two utterances on one stream
            for j in range(0, len(audio), FRAME):
                s.feed(audio[j : j + FRAME])
            s.flush()
            words = []
            while True:
                ev = await asyncio.wait_for(q.get(), 60)
                if ev.type == "word":
                    words.append(ev.word)
                if ev.type == "done":
                    done.append((ev.utterance, words, ev.transcripts["is"]))
                    break
        s.close()
        return done

    with stt.live(max_streams=2) as live:
        done = asyncio.run(main(live))
        assert live.stats()["active_streams"] == 0
    for (utt, words, t), audio in zip(done, (clips[0], clips[3])):
        ref = alone(stt, audio, "is")["is"]
        assert t.tokens == ref.tokens and [w.text for w in words] == [w.text for w in ref.words]
    assert [d[0] for d in done] == [0, 1]


def test_a_closed_live_stream_frees_its_slot_at_once(stt, clips):
    with stt.live(max_streams=1) as live:
        s = live.open("is")
        s.feed(clips[0])
        s.close()
        s2 = live.open("en")  # the slot is free again
        s2.feed(clips[3])
        r = s2.flush().result(timeout=60)
    assert r["en"].tokens == alone(stt, clips[3], "en")["en"].tokens


def test_mimi_calls_are_bounded(stt, clips):
    engine = engine_for(stt)
    s = engine.open("is", stt.options)
    engine.push(s, np.tile(clips[0], 3))
    calls = []
    step = stt.model.mimi.step

    def spy(audio, state, active=None):
        calls.append(audio.shape)
        return step(audio, state, active)

    stt.model.mimi.step = spy
    try:
        engine.finish(s)
        engine.run()
    finally:
        del stt.model.mimi.step
    assert max(c[1] for c in calls) == MAX_FRAMES_PER_CALL * FRAME and s.done


def test_a_process_that_used_the_live_engine_exits_cleanly(small_hf, clips):
    """The engine thread frees what MLX made on it: left to the interpreter's exit, the thread's
    stream aborted the process ("terminate called without an active exception", status 134)."""
    import subprocess
    import sys

    code = (
        "import numpy as np\n"
        "from mlx_kyutai_is import load\n"
        f"stt = load({str(small_hf)!r})\n"
        "with stt.live(max_streams=2) as live:\n"
        "    s = live.open('both')\n"
        "    s.feed(np.random.default_rng(0).standard_normal(48000).astype(np.float32) * 0.1)\n"
        "    print(len(s.flush().result(60)['en'].tokens))\n"
    )
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-500:]

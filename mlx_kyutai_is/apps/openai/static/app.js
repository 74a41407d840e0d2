// Copyright © 2026 mlx-kyutai-is contributors
// Live captions: the microphone, resampled to 24 kHz pcm16 by an AudioWorklet, goes to the
// server's realtime websocket (OpenAI's transcription events); confirmed words and the words
// still being decided are shown apart, per language, one line per utterance: the server's turn
// detection (server_vad, its default) ends an utterance at a pause and makes it an item. Plain JS,
// no build step.
"use strict";

const RATE = 24000;
const CHUNK = 1920; // 80 ms: one model frame
const PARTIAL = "item.input_audio_transcription.partial";
const TASKS = { is: ["is"], en: ["en"], both: ["is", "en"] };
const TITLES = { is: "Íslenska", en: "English" };

const $ = (id) => document.getElementById(id);
const ui = {
  language: $("language"), start: $("start"), stop: $("stop"), key: $("api-key"),
  state: $("state"), sent: $("sent"), lag: $("lag"), behind: $("behind"), message: $("message"),
  transcript: $("transcript"), txt: $("download-txt"), srt: $("download-srt"),
};

// Everything said, per language: items (one per utterance), each with its text and words.
const lanes = {}; // task -> {el, items: Map(itemId -> item)}
let session = null; // the running session
let offset = 0; // seconds of audio in the sessions before this one (for subtitle times)

ui.key.value = localStorage.getItem("mlx-kyutai-is-key") || "";

function setState(text, cls) {
  ui.state.textContent = text;
  ui.state.className = cls || "";
}

function say(msg) {
  ui.message.textContent = msg || "";
}

function lane(task) {
  if (!lanes[task]) {
    const el = document.createElement("div");
    el.className = "lane";
    el.dataset.task = task;
    el.innerHTML = `<h2>${TITLES[task]}</h2>`;
    ui.transcript.appendChild(el);
    lanes[task] = { el, items: new Map() };
  }
  return lanes[task];
}

function item(task, itemId) {
  const l = lane(task);
  let it = l.items.get(itemId);
  if (!it) {
    const p = document.createElement("p");
    p.className = "item";
    p.dataset.item = itemId;
    p.innerHTML = '<span class="confirmed"></span> <span class="pending"></span>';
    l.el.appendChild(p);
    // Word times are seconds into the item's audio, which starts audio_start_ms into the session.
    const start = session && session.starts.has(itemId) ? session.starts.get(itemId) : 0;
    it = {
      el: p, confirmed: "", pending: "", words: [], offset: (session ? session.offset : offset) + start,
      start, done: false,
    };
    l.items.set(itemId, it);
  }
  return it;
}

function render(it) {
  it.el.querySelector(".confirmed").textContent = it.confirmed;
  it.el.querySelector(".pending").textContent = it.pending;
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

function b64(int16) {
  const bytes = new Uint8Array(int16.buffer, int16.byteOffset, int16.byteLength);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

// When the chunk holding sample `n` of this session was sent (performance.now()).
function sentAt(s, n) {
  const log = s.sendLog;
  let lo = 0, hi = log.length - 1;
  if (hi < 0) return null;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (log[mid].end > n) hi = mid; else lo = mid + 1;
  }
  return log[lo].t;
}

function onEvent(s, ev) {
  switch (ev.type) {
    case "session.created":
    case "session.updated":
      s.vad = !!(ev.session && ev.session.audio && ev.session.audio.input.turn_detection);
      break;
    case "input_audio_buffer.speech_started":
      s.starts.set(ev.item_id, ev.audio_start_ms / 1000);
      s.speaking = true;
      break;
    case "input_audio_buffer.speech_stopped":
      s.speaking = false;
      break;
    case "input_audio_buffer.committed":
      s.open.set(ev.item_id, new Set(s.tasks)); // waiting for a completed per language
      s.committing = false;
      break;
    case "conversation.item.input_audio_transcription.delta": {
      const it = item(ev.language || s.tasks[0], ev.item_id);
      it.confirmed += ev.delta;
      it.pending = "";
      if (/^\s/.test(ev.delta) || it.words.length === 0 || ev.start === undefined) {
        if (ev.delta.trim()) {
          const last = it.words[it.words.length - 1];
          const start = ev.start !== undefined ? ev.start : last ? last.end : 0;
          const end = ev.end !== undefined ? ev.end : start;
          it.words.push({ text: ev.delta.trim(), start, end });
        }
      } else {
        const last = it.words[it.words.length - 1]; // a piece joined to the word before it
        last.text += ev.delta;
        last.end = Math.max(last.end, ev.end || last.end);
      }
      if (ev.end !== undefined) {
        const t = sentAt(s, Math.round((it.start + ev.end) * RATE));
        if (t !== null) ui.lag.textContent = ((performance.now() - t) / 1000).toFixed(1);
      }
      if (ev.audio_time !== undefined) behind(s, it, ev.audio_time);
      render(it);
      break;
    }
    case "conversation.item.input_audio_transcription.partial": {
      const it = item(ev.language || s.tasks[0], ev.item_id);
      it.pending = ev.text;
      if (ev.audio_time !== undefined) behind(s, it, ev.audio_time);
      render(it);
      break;
    }
    case "conversation.item.input_audio_transcription.completed": {
      const it = item(ev.language || s.tasks[0], ev.item_id);
      it.confirmed = ev.transcript;
      it.pending = "";
      it.done = true;
      render(it);
      const open = s.open.get(ev.item_id);
      if (open) {
        open.delete(ev.language || s.tasks[0]);
        if (!open.size) s.open.delete(ev.item_id);
      }
      maybeFinish(s);
      break;
    }
    case "error":
      if (ev.error && ev.error.code === "input_audio_buffer_commit_empty") { // nothing left to end
        s.committing = false;
        maybeFinish(s);
        break;
      }
      say(ev.error && ev.error.message ? ev.error.message : "server error");
      break;
    default:
      break;
  }
  const any = Object.values(lanes).some((l) => [...l.items.values()].some((i) => i.confirmed));
  ui.txt.disabled = ui.srt.disabled = !any;
}

// How far the model is behind what was sent (seconds).
function behind(s, it, audioTime) {
  ui.behind.textContent = Math.max(0, s.samples / RATE - it.start - audioTime).toFixed(1);
}

// Once stopping, the session ends when every item committed has its transcripts.
function maybeFinish(s) {
  if (s.stopping && s.stopSent && !s.committing && !s.open.size && !s.finished) finish(s);
}

async function start() {
  say("");
  const language = ui.language.value;
  const key = ui.key.value.trim();
  localStorage.setItem("mlx-kyutai-is-key", key);
  ui.start.disabled = true;
  ui.language.disabled = true;
  setState("connecting");
  const s = {
    tasks: TASKS[language], samples: 0, sendLog: [], stopping: false, offset,
    ws: null, ctx: null, node: null, mic: null,
    vad: false, speaking: false, starts: new Map(), open: new Map(), committing: false, stopSent: false,
  };
  session = s;
  for (const t of s.tasks) lane(t);
  try {
    s.mic = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
  } catch (e) {
    fail(s, `microphone: ${e.message || e}`);
    return;
  }
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const protocols = key ? ["realtime", `openai-insecure-api-key.${key}`] : ["realtime"];
  const ws = new WebSocket(`${proto}//${location.host}/v1/realtime?intent=transcription`, protocols);
  s.ws = ws;
  ws.onmessage = (m) => {
    let ev;
    try { ev = JSON.parse(m.data); } catch (e) { return; }
    onEvent(s, ev);
  };
  ws.onclose = (e) => {
    if (session === s && !s.finished) {
      fail(s, e.code === 1006 ? "could not connect (wrong API key, or every stream slot busy?)"
        : `connection closed (${e.code}${e.reason ? ": " + e.reason : ""})`);
    }
  };
  await new Promise((resolve) => {
    ws.onopen = resolve;
    ws.onerror = resolve;
  });
  if (ws.readyState !== WebSocket.OPEN) return; // onclose reports it
  ws.send(JSON.stringify({
    type: "session.update",
    session: {
      type: "transcription",
      audio: { input: { format: { type: "audio/pcm", rate: RATE }, transcription: { language } } },
      include: [PARTIAL],
    },
  }));
  s.ctx = new AudioContext();
  await s.ctx.audioWorklet.addModule("/static/capture-worklet.js");
  const source = s.ctx.createMediaStreamSource(s.mic);
  s.node = new AudioWorkletNode(s.ctx, "pcm24k-capture", { processorOptions: { targetRate: RATE, chunk: CHUNK } });
  s.node.port.onmessage = (m) => {
    if (ws.readyState !== WebSocket.OPEN || s.finished) return;
    const pcm = new Int16Array(m.data);
    ws.send(JSON.stringify({ type: "input_audio_buffer.append", audio: b64(pcm) }));
    s.samples += pcm.length;
    s.sendLog.push({ end: s.samples, t: performance.now() });
    ui.sent.textContent = (s.samples / RATE).toFixed(1);
  };
  // The worklet must be pulled by the graph to run: through a muted gain to the speakers.
  const mute = s.ctx.createGain();
  mute.gain.value = 0;
  source.connect(s.node).connect(mute).connect(s.ctx.destination);
  if (s.ctx.state === "suspended") await s.ctx.resume();
  setState("listening", "listening");
  ui.stop.disabled = false;
}

function stopAudio(s) {
  if (s.node) { s.node.port.postMessage("stop"); s.node.disconnect(); }
  if (s.mic) s.mic.getTracks().forEach((t) => t.stop());
  if (s.ctx) s.ctx.close();
}

function stop() {
  const s = session;
  if (!s || s.stopping) return;
  s.stopping = true;
  ui.stop.disabled = true;
  stopAudio(s);
  setState("finishing");
  // Let the worklet's last chunk go out, then end the utterance being spoken (all the audio when
  // the server detects no turns): its pending words come out. Then wait for every item's transcript.
  setTimeout(() => {
    if (s.ws.readyState !== WebSocket.OPEN) return;
    if (s.samples === 0) { finish(s); return; }
    if (!s.vad || s.speaking) {
      s.committing = true;
      s.ws.send(JSON.stringify({ type: "input_audio_buffer.commit" }));
    }
    s.stopSent = true;
    maybeFinish(s);
  }, 150);
}

function finish(s) {
  s.finished = true;
  offset = s.offset + s.samples / RATE;
  if (s.ws && s.ws.readyState === WebSocket.OPEN) s.ws.close(1000);
  if (session === s) session = null;
  setState("idle");
  ui.start.disabled = false;
  ui.language.disabled = false;
  ui.stop.disabled = true;
}

function fail(s, msg) {
  stopAudio(s);
  s.finished = true;
  offset = s.offset + s.samples / RATE;
  if (session === s) session = null;
  say(msg);
  setState("error", "error");
  ui.start.disabled = false;
  ui.language.disabled = false;
  ui.stop.disabled = true;
}

// --- downloads --------------------------------------------------------------------------------

function stamp(t) {
  const ms = Math.max(0, Math.round(t * 1000));
  const p = (n, w) => String(n).padStart(w, "0");
  return `${p(Math.floor(ms / 3600000), 2)}:${p(Math.floor(ms / 60000) % 60, 2)}:${p(Math.floor(ms / 1000) % 60, 2)},${p(ms % 1000, 3)}`;
}

// The same cue rules as the `transcribe` command's srt (writers.build_cues): a new cue after a
// sentence end, a pause over 1 s, 6 s of cue, or two full lines of 42 characters.
function cues(words) {
  const out = [];
  let lines = [], start = 0, end = 0, prev = "";
  const close = () => { if (lines.length) out.push({ start, end, text: lines.map((l) => l.join(" ")).join("\n") }); lines = []; };
  for (const w of words) {
    if (lines.length && (w.start - end > 1.0 || w.end - start > 6.0 || /[.?!…]["'”»)\]]*$/.test(prev))) close();
    if (lines.length && [...lines[lines.length - 1], w.text].join(" ").length > 42) {
      if (lines.length >= 2) close(); else lines.push([]);
    }
    if (!lines.length) { lines.push([]); start = w.start; end = w.end; }
    lines[lines.length - 1].push(w.text);
    end = Math.max(end, w.end);
    prev = w.text;
  }
  close();
  out.forEach((c, i) => {
    const limit = i + 1 < out.length ? out[i + 1].start : Infinity;
    if (c.end <= c.start) c.end = Math.min(c.start + 0.5, Math.max(limit, c.start + 0.001));
    c.end = Math.max(Math.min(c.end, limit), c.start + 0.001);
  });
  return out;
}

function download(name, text, type) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type }));
  a.download = name;
  document.body.appendChild(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}

function suffix(task) {
  return Object.keys(lanes).length > 1 ? `.${task}` : "";
}

ui.txt.onclick = () => {
  for (const [task, l] of Object.entries(lanes)) {
    const text = [...l.items.values()].map((i) => i.confirmed.trim()).filter(Boolean).join("\n");
    download(`transcript${suffix(task)}.txt`, text + "\n", "text/plain");
  }
};

ui.srt.onclick = () => {
  for (const [task, l] of Object.entries(lanes)) {
    const words = [...l.items.values()].flatMap((i) => i.words.map((w) => ({
      text: w.text, start: w.start + i.offset, end: w.end + i.offset,
    })));
    const srt = cues(words).map((c, n) => `${n + 1}\n${stamp(c.start)} --> ${stamp(c.end)}\n${c.text}\n`).join("\n");
    download(`transcript${suffix(task)}.srt`, srt, "application/x-subrip");
  }
};

ui.start.onclick = start;
ui.stop.onclick = stop;

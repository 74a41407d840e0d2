// Copyright © 2026 mlx-kyutai-is contributors
// AudioWorklet: the microphone (at the AudioContext's rate, usually 48 kHz) resampled to 24 kHz
// mono pcm16, posted to the page in 80 ms chunks (1920 samples, one model frame).
//
// Resampling: windowed-sinc interpolation (Blackman window, 8 zero crossings each side), its
// cutoff just under the lower Nyquist so that downsampling does not alias; any input rate works.

class Pcm24kCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.outRate = opts.targetRate || 24000;
    this.chunk = opts.chunk || 1920;
    this.ratio = sampleRate / this.outRate; // input samples per output sample
    this.cutoff = 0.5 * Math.min(1, this.outRate / sampleRate) * 0.92; // cycles per input sample
    this.half = Math.ceil(8 / (2 * this.cutoff)); // kernel half-width, input samples
    this.buf = new Float32Array(16384);
    // buf starts with `half` zeros, so that output sample 0 is centred on input sample 0.
    this.len = this.half; // samples in buf
    this.pos = this.half; // index in buf of the next output sample's centre (fractional)
    this.out = new Int16Array(this.chunk);
    this.outLen = 0;
    this.running = true;
    this.port.onmessage = (e) => {
      if (e.data === "stop") {
        this.flushChunk();
        this.running = false;
      }
    };
  }

  kernel(t) {
    if (t === 0) return 2 * this.cutoff;
    const x = Math.PI * 2 * this.cutoff * t;
    const w = t / this.half; // -1..1
    const blackman = 0.42 + 0.5 * Math.cos(Math.PI * w) + 0.08 * Math.cos(2 * Math.PI * w);
    return (Math.sin(x) / (Math.PI * t)) * blackman;
  }

  push(samples) {
    if (this.len + samples.length > this.buf.length) {
      const bigger = new Float32Array(Math.max(this.buf.length * 2, this.len + samples.length));
      bigger.set(this.buf.subarray(0, this.len));
      this.buf = bigger;
    }
    this.buf.set(samples, this.len);
    this.len += samples.length;
  }

  emit(v) {
    const s = Math.max(-1, Math.min(1, v));
    this.out[this.outLen++] = s < 0 ? Math.round(s * 32768) : Math.round(s * 32767);
    if (this.outLen === this.chunk) this.flushChunk();
  }

  flushChunk() {
    if (this.outLen === 0) return;
    const chunk = this.out.slice(0, this.outLen);
    this.port.postMessage(chunk.buffer, [chunk.buffer]);
    this.outLen = 0;
  }

  process(inputs) {
    if (!this.running) return false;
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    // Mono: the average of the channels.
    const n = input[0].length;
    const mono = new Float32Array(n);
    for (let c = 0; c < input.length; c++) {
      const ch = input[c];
      for (let i = 0; i < n; i++) mono[i] += ch[i] / input.length;
    }
    this.push(mono);
    const h = this.half;
    while (this.pos + h < this.len) {
      const center = Math.floor(this.pos);
      let acc = 0;
      for (let k = center - h + 1; k <= center + h; k++) acc += this.buf[k] * this.kernel(this.pos - k);
      this.emit(acc);
      this.pos += this.ratio;
    }
    // Drop the input no later output needs.
    const keep = Math.floor(this.pos) - h;
    if (keep > 0) {
      this.buf.copyWithin(0, keep, this.len);
      this.len -= keep;
      this.pos -= keep;
    }
    return true;
  }
}

registerProcessor("pcm24k-capture", Pcm24kCapture);

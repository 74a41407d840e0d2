"""Test fixtures built offline: small Kyutai STT checkpoints in the real transformers layout,
a tokenizer over the full text vocabulary, and Icelandic speech from espeak-ng.

The hub is out of reach in tests, so every checkpoint is made here with transformers
(`save_pretrained`), random weights with a fixed seed, the LM cast to bf16 and the codec kept f32,
exactly like the published `mideind/kyutai-stt-1b-is-en`.
"""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

from mlx_kyutai_is.models import presets

SAMPLE_RATE = 24_000
TEXT_VOCAB = 9323  # out vocab 9322 + the unused start slot (model card)
TEXT_BOS = 9322
# Task prefixes from the model card; their pieces decode to "<is>" / "<en>".
PREFIX_PIECES = {9318: "▁<", 8002: "i", 8003: "s", 8032: "e", 8015: "n", 9193: ">"}

SENTENCES = [
    "Góðan daginn, ég heiti Jón og ég bý í Reykjavík.",
    "Veðrið á Íslandi er oft mjög breytilegt á veturna.",
    "Hvað kostar miði til Akureyrar með rútunni á morgun?",
]


def _lm_part(config):
    return {k: v for k, v in config.items() if k != "codec_config"}


def small_lm_kwargs(**overrides):
    """The benchmark's tiny LM (hidden 64, 2 layers, window 16) with the real vocabularies."""
    return {**_lm_part(presets.TINY), **overrides}


def small_codec_kwargs(**overrides):
    """A small Mimi (hidden 64, 2 transformer layers, window 20) with 32 full-size codebooks."""
    return {**presets.TINY["codec_config"], **overrides}


def full_codec_kwargs():
    """The published checkpoint's codec: transformers' MimiConfig defaults (512 hidden, 8 layers)."""
    return dict(presets.FULL_SIZE["codec_config"])


def full_lm_kwargs():
    """The model card's LM: hidden 2048, 16 layers, 16 heads, window 375, vocab 9323."""
    return _lm_part(presets.FULL_SIZE)


def randomize_codebooks(model, seed=0, scale=None):
    """transformers zero-initialises Mimi's `embed_sum`, which maps all audio to code 0.
    Fill the codebooks so codes follow the audio."""
    import torch

    g = torch.Generator().manual_seed(seed)
    for name, buf in model.named_buffers():
        if name.endswith("embed_sum"):
            s = scale if scale is not None else 0.1
            buf.copy_(torch.randn(buf.shape, generator=g) * s)
        elif name.endswith("cluster_usage"):
            buf.copy_(torch.rand(buf.shape, generator=g) * 0.5 + 0.75)


def build_tokenizer(vocab_size=TEXT_VOCAB - 1, seed=0):
    """A Unigram/Metaspace tokenizer with `vocab_size` pieces: ids 0-3 special like Kyutai's
    sentencepiece model, task-prefix ids decoding to <is>/<en>, the rest Icelandic-looking pieces.
    The unused start slot (9322) has no piece, as in the real vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    rng = np.random.default_rng(seed)
    letters = list("aábdðeéfghiíjklmnoóprstuúvxyýþæö")
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    pieces, seen = {}, set(specials) | set(PREFIX_PIECES.values())
    for i, s in enumerate(specials):
        pieces[i] = s
    pieces.update(PREFIX_PIECES)
    for i in range(vocab_size):
        if i in pieces:
            continue
        while True:
            p = "".join(rng.choice(letters, size=rng.integers(1, 5)))
            p = ("▁" + p) if rng.random() < 0.5 else p
            if p not in seen:
                break
        seen.add(p)
        pieces[i] = p
    vocab = [(pieces[i], -float(rng.uniform(5, 12))) for i in range(vocab_size)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def build_checkpoint(
    out_dir,
    seed=0,
    lm=None,
    codec=None,
    init_std=0.2,
    codebook_scale=0.1,
    audio_delay_seconds=0.5,
    audio_silence_prefix_seconds=0.0,
):
    """Save a random KyutaiSpeechToText checkpoint + processor (tokenizer, feature extractor).

    `init_std` is larger than transformers' 0.02 so that the tiny random LM emits real text
    tokens, not only pad; the codebooks are randomised so codes depend on the audio.
    """
    import torch
    from transformers import (
        KyutaiSpeechToTextConfig,
        KyutaiSpeechToTextFeatureExtractor,
        KyutaiSpeechToTextForConditionalGeneration,
        KyutaiSpeechToTextProcessor,
        MimiConfig,
    )

    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    codec_config = MimiConfig(**(codec if codec is not None else small_codec_kwargs()))
    config = KyutaiSpeechToTextConfig(
        codec_config=codec_config,
        initializer_range=init_std,
        **(lm if lm is not None else small_lm_kwargs()),
    )
    model = KyutaiSpeechToTextForConditionalGeneration(config).eval()
    randomize_codebooks(model.codec_model, seed=seed, scale=codebook_scale)
    model.model.to(torch.bfloat16)
    model.lm_head.to(torch.bfloat16)
    model.save_pretrained(out_dir)
    fe = KyutaiSpeechToTextFeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLE_RATE,
        padding_value=0.0,
        audio_delay_seconds=audio_delay_seconds,
        audio_silence_prefix_seconds=audio_silence_prefix_seconds,
    )
    KyutaiSpeechToTextProcessor(fe, build_tokenizer(seed=seed)).save_pretrained(out_dir)
    return out_dir


def espeak(text, path, voice="is", speed=150):
    """Icelandic speech from espeak-ng, converted by sox to 24 kHz mono 16-bit wav."""
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        raise RuntimeError("tests need espeak-ng and sox: apt-get install espeak-ng sox")
    path = Path(path)
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True)
    # -R: no random dither, so the same sentence gives the same samples in every session.
    subprocess.run(["sox", "-R", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(path)], check=True)
    raw.unlink()
    return path


def read_wav(path):
    import soundfile as sf

    audio, sr = sf.read(str(path), dtype="float32")
    assert sr == SAMPLE_RATE
    return audio


def hf_config(path):
    return json.loads((Path(path) / "config.json").read_text())


# Subtitle files parsed back (shared by the writer and CLI tests).
SRT_TIME = r"(\d\d):(\d\d):(\d\d),(\d\d\d)"
VTT_TIME = r"(\d\d):(\d\d):(\d\d)\.(\d\d\d)"


def _seconds(h, m, s, ms):
    return round(int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000, 3)


def parse_srt(text):
    """[(index, start, end, text)] from an srt file; fails on any malformed block."""
    import re

    cues = []
    for block in text.strip().split("\n\n") if text.strip() else []:
        lines = block.split("\n")
        m = re.fullmatch(f"{SRT_TIME} --> {SRT_TIME}", lines[1])
        assert m, f"bad srt timing line {lines[1]!r}"
        g = m.groups()
        assert len(lines) >= 3, block
        cues.append((int(lines[0]), _seconds(*g[:4]), _seconds(*g[4:]), "\n".join(lines[2:])))
    assert [c[0] for c in cues] == list(range(1, len(cues) + 1))
    return cues


def parse_vtt(text):
    """[(start, end, text)] from a WebVTT file."""
    import re

    head, _, body = text.partition("\n\n")
    assert head == "WEBVTT"
    cues = []
    for block in body.strip().split("\n\n") if body.strip() else []:
        lines = block.split("\n")
        m = re.fullmatch(f"{VTT_TIME} --> {VTT_TIME}", lines[0])
        assert m, f"bad vtt timing line {lines[0]!r}"
        g = m.groups()
        cues.append((_seconds(*g[:4]), _seconds(*g[4:]), "\n".join(lines[1:])))
    return cues

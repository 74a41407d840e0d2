"""The README's Python API runs as written: every ```python block of its "Python API" section
(the subsections included), in order, in one namespace, on the tests' tiny checkpoint.

The only mapping is the prelude below: `load` of the published model id loads the tiny
checkpoint in float32, and the names the snippets take as given (speech.wav, a.wav, b.flac,
interview.flac, `samples`, `files`, `chunks`, `pcm`) are made from espeak-ng speech."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import mlx_kyutai_is
from mlx_kyutai_is.stt import DEFAULT_MODEL

from checkpoints import read_wav

README = Path(__file__).parents[1] / "README.md"


def python_api_blocks() -> list[str]:
    """The ```python blocks between "## Python API" and the next "## " heading."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```python\n(.*?)^```$", section, flags=re.S | re.M)


def test_the_section_has_the_snippets():
    blocks = python_api_blocks()
    assert len(blocks) >= 3
    assert any("stt.stream(" in b and "s.transcripts()" in b for b in blocks)  # the loop ends with the transcript


@pytest.mark.slow  # 10-20 s: a dozen transcriptions on the tiny model
def test_python_api_snippets_run_as_written(small_hf, speech, tmp_path, monkeypatch, capsys):
    real_load = mlx_kyutai_is.load

    def load(path_or_repo=DEFAULT_MODEL, **kwargs):
        assert path_or_repo == DEFAULT_MODEL and not kwargs  # the README names the published model
        return real_load(str(small_hf), dtype="float32")

    monkeypatch.setattr(mlx_kyutai_is, "load", load)  # `from mlx_kyutai_is import load` gets this one
    monkeypatch.chdir(tmp_path)
    shutil.copy(speech[0], "speech.wav")
    shutil.copy(speech[1], "a.wav")
    sf.write("b.flac", read_wav(speech[2]), 24_000)
    sf.write("interview.flac", np.concatenate([read_wav(w) for w in speech]), 24_000)
    samples = read_wav(speech[0])
    rate = 24_000
    namespace = {
        "samples": samples,
        "files": ["a.wav", "b.flac"],
        "chunks": [samples[i : i + rate // 2] for i in range(0, len(samples), rate // 2)],
        "pcm": samples,
    }
    first = {}  # each name as the first snippet that made it left it (later ones reuse `r` and `s`)
    for block in python_api_blocks():
        exec(compile(block, "README.md", "exec"), namespace)
        for name in ("r", "both", "s"):
            if name in namespace:
                first.setdefault(name, namespace[name])

    # What the snippets computed agrees with itself (speech.wav, `samples`, `chunks` and `pcm` are
    # one recording), so they show real, complete results: the stream's last words included.
    r, both, results, streamed = first["r"], first["both"], namespace["results"], first["s"].transcripts()["en"]
    assert r.text and r.text == both["is"].text == results[2].text == namespace["result"]["is"].text
    assert streamed.text == both["en"].text and streamed.tokens == both["en"].tokens
    assert len(results) == 3 and all(x.text for x in results)
    printed = capsys.readouterr().out.splitlines()
    word_lines = [line for line in printed if re.fullmatch(r" *\d+\.\d\d \S+", line)]  # the stream's loop
    assert word_lines == [f"{w.start:6.2f} {w.text}" for w in streamed.words]  # feed()'s and flush()'s: every word
    assert streamed.text in printed

# Copyright © 2026 mlx-kyutai-is contributors
"""`mlx-kyutai-is eval` end to end on the small random checkpoint and espeak-ng speech: each
hypothesis is what `transcribe()` gives for its file, the transformers recipe agrees token for
token in float32, several models give a row each, failures are reported and counted."""

import csv
import io
import json
import shutil
import subprocess
import sys

import pytest

from mlx_kyutai_is.evaluation.evaluate import (
    ModelSpec,
    evaluate,
    format_table,
    model_specs,
)
from mlx_kyutai_is.evaluation.manifest import read_manifest
from mlx_kyutai_is.evaluation.metrics import corpus_scores
from mlx_kyutai_is.tasks import TASK_PREFIXES

from checkpoints import SENTENCES, TEXT_BOS, TEXT_VOCAB, build_tokenizer

TRANSLATIONS = [
    "Good morning, my name is Jón and I live in Reykjavík.",
    "The weather in Iceland is often very changeable in winter.",
    "How much is a ticket to Akureyri on the bus tomorrow?",
]
MISSING = "clips/missing.wav"


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, speech):
    """clips/s0..2.wav with their sentences and translations, then a file that does not exist."""
    d = tmp_path_factory.mktemp("eval")
    (d / "clips").mkdir()
    rows = []
    for wav, text, en in zip(speech, SENTENCES, TRANSLATIONS):
        shutil.copy(wav, d / "clips" / wav.name)
        rows.append({"audio": f"clips/{wav.name}", "text": text, "translation": en})
    rows.append({"audio": MISSING, "text": "Hér er ekkert.", "translation": "Nothing here."})
    path = d / "test.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def stt_f32(small_hf):
    from mlx_kyutai_is import load

    return load(str(small_hf), dtype="float32")


@pytest.fixture(scope="module")
def both_report(manifest, small_hf):
    """--task both with the transformers reference, float32, two utterances decoded at a time."""
    pytest.importorskip("transformers")
    utterances = read_manifest(manifest, ["is", "en"])
    spec = ModelSpec(str(small_hf), str(small_hf))
    return evaluate(utterances, "both", [spec], dtype="float32", batch_size=2, reference="transformers", progress=False)


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "mlx_kyutai_is", "eval", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


@pytest.mark.slow
def test_hypotheses_are_transcribe_of_each_file(both_report, manifest, stt_f32):
    report = both_report
    assert set(report) == {"task", "n", "models"}
    assert report["task"] == "both" and report["n"] == 3
    ours = report["models"][0]
    assert set(ours) == {"model", "raw", "normalised", "utterances"}
    assert [u["audio"] for u in ours["utterances"]] == [f"clips/s{i}.wav" for i in range(3)] + [MISSING]
    for u in ours["utterances"][:3]:
        assert set(u) == {"audio", "reference", "hypothesis"}
        alone = stt_f32.transcribe(str(manifest.parent / u["audio"]), task="both")
        assert u["hypothesis"] == {"is": alone["is"].text, "en": alone["en"].text}
        assert len(alone["is"].words) >= 3  # the random model says something, or this proves little
    # The missing file is reported, counted and left out of the figures.
    gone = ours["utterances"][3]
    assert gone["hypothesis"] is None and "missing.wav" in gone["error"] and "no such file" in gone["error"]
    # The figures are those of the scored utterances, every metric of both tasks.
    scored = ours["utterances"][:3]
    for t, metrics in (("is", ("wer", "cer")), ("en", ("bleu", "chrf"))):
        s = corpus_scores(t, [u["reference"][t] for u in scored], [u["hypothesis"][t] for u in scored])
        for form in ("raw", "normalised"):
            assert {m: ours[form][m] for m in metrics} == s[form]
    assert set(ours["raw"]) == set(ours["normalised"]) == {"wer", "cer", "bleu", "chrf"}


def test_transformers_recipe_agrees_token_for_token_in_float32(both_report):
    ours, recipe = both_report["models"]
    assert recipe["model"] == "transformers recipe (float32)"
    for t in ("is", "en"):
        a = recipe["agreement"][t]
        assert a["model"] == ours["model"]
        assert a["tokens"] == 100.0 and a["identical"] == a["n"] == 3 and a["steps"] > 3 * 50
    for mine, theirs in zip(ours["utterances"][:3], recipe["utterances"][:3]):
        assert theirs["agreement"] == {"is": 100.0, "en": 100.0}
        assert theirs["hypothesis"] == mine["hypothesis"]
    assert recipe["raw"] == ours["raw"] and recipe["normalised"] == ours["normalised"]
    table = format_table(both_report)
    assert "token agreement, transformers recipe (float32) vs" in table and "3 of 3 utterances identical" in table


def test_reference_scores_equal_ours_when_the_tokens_agree(manifest, small_hf, tmp_path):
    """The tests' checkpoint with a tokenizer that gives the text start (9322) an ordinary piece and
    marks neither it nor the task-prefix ids special: the recipe's text is decoded from its
    free-running tokens, as ours is, so 100 % token agreement gives the same hypotheses and metrics.
    (Decoding its whole output let the start piece and "<is>" into every hypothesis: WER +14.29.)"""
    pytest.importorskip("transformers")
    checkpoint = tmp_path / "hf"
    shutil.copytree(small_hf, checkpoint)
    tokenizer = build_tokenizer(vocab_size=TEXT_VOCAB)
    tokenizer.save_pretrained(checkpoint)
    marked = set(tokenizer.all_special_ids)
    assert tokenizer.convert_ids_to_tokens(TEXT_BOS) is not None and TEXT_BOS not in marked
    assert not marked & set(TASK_PREFIXES["is"])

    spec = ModelSpec(str(checkpoint), str(checkpoint))
    utterances = read_manifest(manifest, ["is"])[:2]
    report = evaluate(utterances, "is", [spec], dtype="float32", batch_size=2, reference="transformers", progress=False)
    ours, recipe = report["models"]
    assert recipe["agreement"]["tokens"] == 100.0 and recipe["agreement"]["identical"] == 2
    for mine, theirs in zip(ours["utterances"], recipe["utterances"]):
        assert theirs["hypothesis"] == mine["hypothesis"] and "<is>" not in theirs["hypothesis"]
    assert recipe["raw"] == ours["raw"] and recipe["normalised"] == ours["normalised"]
    assert "(+0.00) | 1" in format_table(report)  # the recipe's row: no difference to ours


@pytest.mark.slow
def test_several_models_give_a_row_each_cli(manifest, small_hf, stt_f32, tmp_path):
    """Two model directories and --quantize 4 from the first: three rows, deltas to the first;
    the run goes on past the missing file, reports it on one line, and exits 1."""
    from mlx_kyutai_is import load
    from mlx_kyutai_is.models.convert import convert

    q8 = tmp_path / "mlx_q8"
    convert(str(small_hf), str(q8), quantize=True, q_bits=8)
    out = tmp_path / "out"  # made by eval
    r = run_cli(
        manifest, "--task", "is", "--model", small_hf, q8, "--quantize", "4", "--dtype", "float32",
        "--batch-size", "3", "-o", out / "report.json", "--csv", out / "utterances.csv",
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if "missing.wav" in line]
    assert len(errors) == 1 and errors[0].startswith("mlx-kyutai-is eval: error:")
    assert "1 of 4 utterances failed" in r.stderr

    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert set(report) == {"task", "n", "models"} and report["task"] == "is" and report["n"] == 3
    labels = [m["model"] for m in report["models"]]
    assert labels == [str(small_hf), str(q8), f"{small_hf} q4"]
    for m in report["models"]:
        assert set(m) == {"model", "raw", "normalised", "utterances"}
        assert set(m["raw"]) == set(m["normalised"]) == {"wer", "cer"}
    # Row 1 is transcribe() of each file; the q4 row is the first model quantized on load.
    q4 = load(str(small_hf), quantize=4, dtype="float32")
    for base, quant, u in zip(report["models"][0]["utterances"], report["models"][2]["utterances"], range(3)):
        path = str(manifest.parent / base["audio"])
        assert base["hypothesis"] == stt_f32.transcribe(path, task="is").text
        assert quant["hypothesis"] == q4.transcribe(path, task="is").text
    assert report["models"][0]["utterances"][0]["hypothesis"] != report["models"][2]["utterances"][0]["hypothesis"]

    # The table: a row per model, the later ones with their difference to the first.
    rows = [line for line in r.stdout.splitlines() if line.startswith("| ") and not line.startswith("| model")]
    assert [row.split(" | ")[0][2:] for row in rows] == labels
    first = report["models"][0]["raw"]["wer"]
    for row, m in zip(rows[1:], report["models"][1:]):
        assert f"{m['raw']['wer']:.2f} % ({m['raw']['wer'] - first:+.2f})" in row
    assert "3 of 4 utterances scored" in r.stdout and "WER 13.43 % raw, 11.22 % normalised" in r.stdout

    # The CSV: one line per model and utterance, the failed one with its error.
    lines = list(csv.DictReader(io.StringIO((out / "utterances.csv").read_text(encoding="utf-8"))))
    assert len(lines) == 3 * 4
    assert [(x["model"], x["audio"]) for x in lines[:4]] == [(str(small_hf), f"clips/s{i}.wav") for i in range(3)] + [
        (str(small_hf), MISSING)
    ]
    assert lines[3]["hypothesis"] == "" and "no such file" in lines[3]["error"] and lines[3]["wer_raw"] == ""
    assert lines[0]["hypothesis"] == report["models"][0]["utterances"][0]["hypothesis"]
    assert float(lines[0]["wer_raw"]) >= 0
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "utterances.csv"]  # no temporary files left


def test_errors_before_any_model_runs(manifest, small_hf, tmp_path):
    """One line each and exit 1, before a model is loaded; bad options are argparse's (exit 2)."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"audio": "a.wav", "text": "x"}\n{"audio": "b.wav"}\n', encoding="utf-8")
    r = run_cli(bad)
    assert r.returncode == 1
    assert r.stderr.strip() == f"mlx-kyutai-is eval: error: {bad}:2: no 'text' field (fields: 'audio')"

    r = run_cli(manifest, "--task", "en", "--model", tmp_path / "nope")
    assert r.returncode == 1 and r.stderr.strip().endswith("nope: no such directory"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1

    mlx_dir = tmp_path / "mlx"
    mlx_dir.mkdir()
    (mlx_dir / "config.json").write_text(json.dumps({"mlx_kyutai_is": {"format": 1}}))
    r = run_cli(manifest, "--model", mlx_dir, "--reference", "transformers")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "an MLX directory written by `convert`" in r.stderr

    r = run_cli(manifest, "--quantize", "8,3")
    assert r.returncode == 2 and "expected a comma-separated list of 4 and 8" in r.stderr


def test_reference_without_the_test_extra_says_what_to_install(manifest, small_hf):
    code = (
        "import sys; sys.modules['torch'] = None; from mlx_kyutai_is.cli import main; "
        f"sys.exit(main(['eval', {str(manifest)!r}, '--model', {str(small_hf)!r}, '--reference', 'transformers']))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert '--reference transformers needs the test extra: pip install "mlx-kyutai-is[test]"' in r.stderr


def test_table_deltas_and_model_specs():
    specs = model_specs(["a", "b"], [8, 4])
    assert [(s.label, s.path, s.quantize) for s in specs] == [
        ("a", "a", None), ("b", "b", None), ("a q8", "a", 8), ("a q4", "a", 4)
    ]  # fmt: skip
    utt = [{"audio": "x.wav", "reference": "r", "hypothesis": "h"}]
    report = {
        "task": "en",
        "n": 1,
        "models": [
            {"model": "bf16", "raw": {"bleu": 30.0, "chrf": 50.0}, "normalised": {"bleu": 31.0, "chrf": None}},
            {"model": "q4", "raw": {"bleu": 27.5, "chrf": 50.25}, "normalised": {"bleu": 31.0, "chrf": 49.0}},
        ],
    }  # fmt: skip
    for row in report["models"]:
        row["utterances"] = utt
    lines = format_table(report).splitlines()
    assert "| bf16 | 30.00 | 31.00 | 50.00 | n/a |" in lines
    assert "| q4 | 27.50 (-2.50) | 31.00 (+0.00) | 50.25 (+0.25) | 49.00 |" in lines
    assert lines[0] == "translation (en): 1 of 1 utterances scored"


@pytest.mark.slow
def test_progress_bar_over_utterances_on_a_terminal(manifest, small_hf):
    """On a terminal, stderr shows a tqdm bar per model over the utterances run (the last state is
    cleared when it closes), and the error line of the missing file is printed whole beside it."""
    import fcntl
    import os
    import pty
    import struct
    import termios
    import threading

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # tqdm needs a width
    chunks = []

    def read():
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the terminal closed
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    args = [manifest, "--model", small_hf, "--dtype", "float32", "--batch-size", "3"]
    cmd = [sys.executable, "-m", "mlx_kyutai_is", "eval", *map(str, args)]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=slave, timeout=120)
    os.close(slave)
    reader.join(timeout=10)
    os.close(master)
    lines = b"".join(chunks).decode().replace("\r", "\n").splitlines()
    assert r.returncode == 1
    bars = [line for line in lines if line.startswith(f"{small_hf}:") and "/3 [" in line and "utt" in line]
    assert bars and bars[0].split("|")[0].strip().endswith("0%"), lines  # counts utterances, from 0 of 3
    error = "no such file (not scored)"
    assert any(line.startswith("mlx-kyutai-is eval: error:") and line.endswith(error) for line in lines), lines

# Copyright © 2026 mlx-kyutai-is contributors
"""Manifests: JSONL, CSV and TSV read alike, paths relative to the manifest, one-line errors
naming the manifest and the line."""

import json
from pathlib import Path

import pytest

from mlx_kyutai_is.evaluation.manifest import ManifestError, read_manifest

ROWS = [
    {"audio": "clips/a.wav", "text": 'Hann sagði: „Já, "auðvitað".“', "translation": 'He said: "Yes."'},
    {"audio": "/abs/b.flac", "text": "Þetta er próf.", "translation": "This is a test."},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_csv_tsv_read_alike(tmp_path):
    import csv

    jsonl = write_jsonl(tmp_path / "m.jsonl", ROWS)
    with (tmp_path / "m.csv").open("w", newline="", encoding="utf-8-sig") as f:  # with a BOM, as Excel
        w = csv.DictWriter(f, fieldnames=["id", "audio", "text", "translation"])
        w.writeheader()
        w.writerows([{"id": i, **r} for i, r in enumerate(ROWS)])
    # TSV: no quoting, so quotes in the text are the text's own
    tsv = tmp_path / "m.tsv"
    tsv.write_text(
        "audio\ttext\ttranslation\n" + "".join(f"{r['audio']}\t{r['text']}\t{r['translation']}\n" for r in ROWS),
        encoding="utf-8",
    )
    for path in (jsonl, tmp_path / "m.csv", tsv):
        both = read_manifest(path, ["is", "en"])
        assert [u.audio for u in both] == ["clips/a.wav", "/abs/b.flac"]
        assert both[0].path == tmp_path / "clips" / "a.wav"  # relative to the manifest
        assert str(both[1].path) == "/abs/b.flac"
        assert [u.references for u in both] == [{"is": r["text"], "en": r["translation"]} for r in ROWS]
        assert [u.references for u in read_manifest(path, ["is"])] == [{"is": r["text"]} for r in ROWS]
        assert [u.line for u in both] == ([1, 2] if path.suffix == ".jsonl" else [2, 3])


def test_only_the_fields_of_the_task_are_needed(tmp_path):
    m = write_jsonl(tmp_path / "m.jsonl", [{"audio": "a.wav", "translation": "Hello."}])
    assert read_manifest(m, ["en"])[0].references == {"en": "Hello."}
    with pytest.raises(ManifestError, match=r"m.jsonl:1: no 'text' field \(fields: 'audio', 'translation'\)"):
        read_manifest(m, ["is"])


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("m.jsonl", '{"audio": "a.wav", "text": "x"}\n\n{"audio": "b.wav"\n', r"m.jsonl:3: not valid JSON"),
        ("m.jsonl", '["a.wav", "x"]\n', r"m.jsonl:1: expected a JSON object, got list"),
        ("m.jsonl", '{"audio": "a.wav", "text": "  "}\n', r"m.jsonl:1: empty 'text'"),
        ("m.jsonl", '{"audio": 3, "text": "x"}\n', r"m.jsonl:1: 'audio' must be a string, got int"),
        ("m.jsonl", "\n\n", r"m.jsonl: no entries"),
        ("m.csv", 'audio,text\na.wav,"one,\ntwo"\nb.wav,x,extra\n', r"m.csv:4: 3 fields, the header has 2"),
        ("m.csv", "file,text\na.wav,x\n", r"m.csv:2: no 'audio' field \(fields: 'file', 'text'\)"),
        ("m.tsv", "audio\ttext\n", r"m.tsv: no entries"),
        ("m.xml", "a.wav x\n", r"m.xml: unknown manifest format '.xml' \(use .jsonl, .csv, .tsv or a .txt list\)"),
        ("m.txt", "a.wav\n", r"m.txt: a plain list of paths has no reference texts; use .jsonl, .csv or .tsv"),
    ],
)
def test_errors_name_the_manifest_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ManifestError, match=message) as e:
        read_manifest(path, ["is"])
    assert "\n" not in str(e.value)


def test_missing_and_undecodable_manifest(tmp_path):
    with pytest.raises(ManifestError, match=r"nope.jsonl: no such file"):
        read_manifest(tmp_path / "nope.jsonl", ["is"])
    bad = tmp_path / "latin1.tsv"
    bad.write_bytes("audio\ttext\na.wav\tGóðan\n".encode("latin-1"))
    with pytest.raises(ManifestError, match=r"latin1.tsv: not UTF-8 text"):
        read_manifest(bad, ["is"])


def test_plain_list_of_paths(tmp_path):
    """`transcribe --manifest`'s plain list: one path a line, relative to the list's folder;
    blank lines and # comments skipped; line numbers as in the file."""
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "files.txt"
    path.write_text("# the archive\na.wav\n\n  /abs/b.flac  \nc d.wav\n", encoding="utf-8")
    got = read_manifest(path, [])
    assert [u.audio for u in got] == ["a.wav", "/abs/b.flac", "c d.wav"]
    assert [u.path for u in got] == [tmp_path / "sub" / "a.wav", Path("/abs/b.flac"), tmp_path / "sub" / "c d.wav"]
    assert [u.line for u in got] == [2, 4, 5] and all(u.references == {} for u in got)
    (tmp_path / "empty.lst").write_text("# nothing yet\n\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"empty.lst: no entries"):
        read_manifest(tmp_path / "empty.lst", [])

# Copyright © 2026 mlx-kyutai-is contributors
"""Evaluation manifests: which audio to run and the reference text of each.

A manifest is JSONL (``.jsonl``/``.ndjson``: one object a line), CSV (``.csv``, comma, quoted
as Excel writes it) or TSV (``.tsv``/``.tab``: tab-separated, no quoting, as Samrómur's metadata
files are), with a header row for CSV/TSV; or, where no reference is needed (`transcribe
--manifest`), a plain list of paths (``.txt``/``.lst``/``.list``: one a line, blank lines and
``#`` comments skipped). Fields (other fields are ignored):

- ``audio``: path of the audio file, relative to the manifest's directory (or absolute);
- ``text``: the Icelandic reference transcript (needed for ``--task is`` and ``both``);
- ``translation``: the English reference translation (needed for ``--task en`` and ``both``).

Every problem is a `ManifestError` with one line naming the manifest and the line.
"""

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import Error

AUDIO_FIELD = "audio"
# The reference field of each task.
REFERENCE_FIELDS = {"is": "text", "en": "translation"}
FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".txt": "lines",
    ".lst": "lines",
    ".list": "lines",
}


class ManifestError(Error, ValueError):
    """A manifest that cannot be read; the message is one line naming the file (and line)."""


@dataclass
class Utterance:
    """One manifest entry: `audio` as written, `path` resolved, `references` by task."""

    audio: str
    path: Path
    references: dict[str, str]
    line: int


def _rows(path: Path, fmt: str):
    """(line number, dict of fields) for each entry."""
    # utf-8-sig: a byte-order mark (as spreadsheet programs write) is not part of the first name
    with path.open(encoding="utf-8-sig", newline="") as f:
        if fmt == "lines":  # a plain list: the line is the path
            for n, line in enumerate(f, start=1):
                line = line.strip()
                if line and not line.startswith("#"):
                    yield n, {AUDIO_FIELD: line}
            return
        if fmt == "jsonl":
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ManifestError(f"{path}:{n}: not valid JSON ({e.msg}, column {e.colno})") from None
                if not isinstance(row, dict):
                    raise ManifestError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
                yield n, row
            return
        if fmt == "tsv":
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        else:
            reader = csv.DictReader(f)
        if reader.fieldnames is None:
            return
        while True:
            start = reader.line_num + 1  # a quoted cell may span lines: report where the row starts
            row = next(reader, None)
            if row is None:
                return
            if None in row:  # more cells than the header names
                raise ManifestError(
                    f"{path}:{start}: {len(reader.fieldnames) + len(row[None])} fields, the header has "
                    f"{len(reader.fieldnames)}"
                )
            yield start, row


def read_manifest(path: str | Path, tasks: list[str]) -> list[Utterance]:
    """Read a manifest, checking every entry has an audio path and the references of `tasks`.

    Parameters
    ----------
    path : str or Path
        A ``.jsonl``, ``.csv`` or ``.tsv`` file, or a plain ``.txt`` list of paths when `tasks`
        is empty (see the module docstring).
    tasks : list of str
        ``["is"]``, ``["en"]`` or ``["is", "en"]``: which reference fields are required.

    Returns
    -------
    list of Utterance
        In manifest order. The audio files are not opened here.

    Raises
    ------
    ManifestError
        Missing or unreadable manifest, unknown extension, bad line, missing or empty field,
        no entries.
    """
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ManifestError(f"{path}: unknown manifest format '{path.suffix}' (use .jsonl, .csv, .tsv or a .txt list)")
    if fmt == "lines" and tasks:
        raise ManifestError(f"{path}: a plain list of paths has no reference texts; use .jsonl, .csv or .tsv")
    if not path.is_file():
        raise ManifestError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    fields = [AUDIO_FIELD] + [REFERENCE_FIELDS[t] for t in tasks]
    out = []
    try:
        for n, row in _rows(path, fmt):
            values = {}
            for name in fields:
                value = row.get(name)
                if value is None:
                    have = ", ".join(repr(k) for k in row if k is not None) or "none"
                    raise ManifestError(f"{path}:{n}: no '{name}' field (fields: {have})")
                if not isinstance(value, str):
                    raise ManifestError(f"{path}:{n}: '{name}' must be a string, got {type(value).__name__}")
                if not value.strip():
                    raise ManifestError(f"{path}:{n}: empty '{name}'")
                values[name] = value
            audio = values[AUDIO_FIELD].strip()
            refs = {t: values[REFERENCE_FIELDS[t]] for t in tasks}
            out.append(Utterance(audio=audio, path=path.parent / Path(audio).expanduser(), references=refs, line=n))
    except UnicodeDecodeError as e:
        raise ManifestError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise ManifestError(f"{path}: {e}") from None
    if not out:
        raise ManifestError(f"{path}: no entries")
    return out

# Copyright © 2026 mlx-kyutai-is contributors
"""`mlx-kyutai-is eval`: WER/CER and BLEU/chrF of one or more models on a manifest, as the model
card's table (and what q8 and q4 cost beside it):

    mlx-kyutai-is eval samromur100.jsonl --task both --quantize 8,4 -o report.json

Each model (``--model A B ...``, and ``--quantize 8,4``: the first model quantized on load) runs
every utterance on the batched engine and gets a row; rows after the first show their difference
to it. ``--reference transformers`` also runs the model card's transformers recipe on the first
model's Hugging Face checkpoint and reports its figures and the per-utterance token agreement.

Report (``-o``; written atomically)::

    {"task": "is", "n": 100,              # n: utterances scored (in every row)
     "models": [{"model": "<label>",
                 "raw": {"wer": 13.4, "cer": 5.1}, "normalised": {"wer": 11.2, "cer": 4.2},
                 "utterances": [{"audio": "clips/a.wav", "reference": "...", "hypothesis": "..."}]}]}

Metric keys: ``wer``, ``cer`` for ``is``; ``bleu``, ``chrf`` for ``en``; ``--task both`` puts
all four in ``raw``/``normalised`` and makes ``reference`` and ``hypothesis`` ``{"is": ..,
"en": ..}`` objects. Every figure is on a 0-100 scale (see `metrics`). An utterance that failed
has ``"hypothesis": null`` and an ``"error"``; it is left out of the figures of every row, so the
rows compare the same set. The recipe's row has the same keys plus ``"agreement"`` (overall, and
per utterance): the share of free-running steps (after the 4 prefix and 12 pad steps, forced on
both sides) where it chose the same token as the first row.
"""

import csv
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
from tqdm import tqdm

from ..audio import audio_duration, load_audio
from ..errors import Error
from ..models.loading import resolve_model_path
from ..runtime.protocol import DEFAULT_PAD_STEPS
from ..runtime.segments import DEFAULT_MAX_SEGMENT
from ..stt import DEFAULT_BATCH_SIZE, load
from ..tasks import TASK_PREFIXES, task_list
from .metrics import TASK_METRICS, corpus_scores, utterance_scores
from .reference import (
    TransformersRecipe,
    check_checkpoint,
    reference_libraries,
    token_agreement,
)

# The model card's figures (bf16, 100 clips of a filtered subset of the Samrómur test split).
CARD = {"is": ("WER", 13.43, 11.22), "en": ("BLEU", 37.79, 38.91)}
METRIC_NAMES = {"wer": "WER", "cer": "CER", "bleu": "BLEU", "chrf": "chrF"}


class EvalError(Error, ValueError):
    """A problem with the command's inputs; printed as one line."""


@dataclass
class ModelSpec:
    """One row: `label` as shown, the model to `load()` and its on-load quantization."""

    label: str
    path: str
    quantize: int | None = None


def model_specs(models: list[str], quantize: list[int]) -> list[ModelSpec]:
    """A row per `--model`, then one per `--quantize` bits of the first model."""
    specs = [ModelSpec(m, m) for m in models]
    specs += [ModelSpec(f"{models[0]} q{bits}", models[0], bits) for bits in quantize]
    return specs


# --------------------------------------------------------------------------------------------
# Running


def transcribe_all(stt, paths: list[Path], task: str, batch_size: int, **segment_options):
    """Yield ``(position, result, error)`` for each of `paths`, in completion order, from the
    batched engine: the `Result` or the exception that input raised (one
    bad file is reported and counted; the others go on)."""
    for item in stt.transcribe_iter([str(p) for p in paths], task=task, batch_size=batch_size, **segment_options):
        yield item.index, item.result, item.error


def _message(e: BaseException, audio: str) -> str:
    lines = str(e).strip().splitlines()
    msg = lines[0] if lines else type(e).__name__
    if isinstance(e, OSError) and e.filename is not None:
        msg = f"{e.filename}: {e.strerror or msg}"
    return msg if audio in msg or str(Path(audio).name) in msg else f"{audio}: {msg}"


class Console:
    """One-line messages on stderr (after `prefix`) that do not break a progress bar drawn there."""

    def __init__(self, progress: bool, prefix: str = ""):
        self.progress, self.prefix = progress, prefix

    def bar(self, total: int, desc: str):
        # disable=None: drawn only when stderr is a terminal
        disable = None if self.progress else True
        return tqdm(total=total, unit="utt", desc=desc, file=sys.stderr, leave=False, disable=disable)

    def warn(self, msg: str):
        tqdm.write(f"{self.prefix}: {msg}" if self.prefix else msg, file=sys.stderr)


def _per_task(tasks: list[str], values: dict):
    """A task's value alone for one task, the {task: value} dict for "both"."""
    return values[tasks[0]] if len(tasks) == 1 else {t: values[t] for t in tasks}


def _texts(result, tasks: list[str]) -> dict[str, str]:
    return {t: result[t].text for t in tasks}


def _tokens(result, tasks: list[str]) -> dict[str, list[int]]:
    return {t: list(result[t].tokens) for t in tasks}


def evaluate(
    utterances,
    task: str,
    specs: list[ModelSpec],
    *,
    dtype: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    reference: str | None = None,
    progress: bool = True,
    console: "Console | None" = None,
    segment: str | None = "vad",
    max_segment: float = DEFAULT_MAX_SEGMENT,
) -> dict:
    """Run every model on every utterance and score them.

    Parameters
    ----------
    utterances : list of manifest.Utterance
    task : {"is", "en", "both"}
    specs : list of ModelSpec
        One row each; the first is the baseline of the deltas and of the token agreement.
    dtype : str, optional
        Compute type of the LM ("float32" for exact parity with the float32 recipe).
    batch_size : int
        Utterances decoded together on the batched engine.
    reference : {"transformers"}, optional
        Also run the model card's transformers recipe on the first model's checkpoint.
    progress : bool
        A progress bar over utterances on stderr (on a terminal).
    segment : {"vad", None}, max_segment : float
        How long recordings are decoded (`STT.transcribe_iter`); utterances shorter than
        `max_segment` seconds are never cut.

    Returns
    -------
    dict
        The report (see the module docstring); the token ids are used for the agreement only
        and are not in it.
    """

    tasks = task_list(task)
    console = console or Console(progress)
    n = len(utterances)
    failed: dict[int, str] = {}

    # Everything that can fail before any model runs: model paths (a hub id is downloaded
    # here), the reference's requirements, every audio header.
    paths = {s.path: resolve_model_path(s.path) for s in specs}
    recipe_ckpt = None
    if reference == "transformers":
        recipe_ckpt = paths[specs[0].path]
        check_checkpoint(recipe_ckpt)
        reference_libraries()  # needed later anyway; fail before the models run, not after
    elif reference is not None:
        raise EvalError(f"unknown reference {reference!r} (choose: transformers)")
    for i, u in enumerate(utterances):
        try:
            audio_duration(u.path)
        except Exception as e:
            failed[i] = _message(e, u.audio)
            console.warn(f"error: {failed[i]} (not scored)")

    runnable = [i for i in range(n) if i not in failed]
    rows = []
    for spec in specs:
        stt = load(str(paths[spec.path]), quantize=spec.quantize, dtype=dtype)
        hyps: dict[int, dict[str, str]] = {}
        tokens: dict[int, dict[str, list[int]]] = {}
        errors: dict[int, str] = {}
        with console.bar(len(runnable), spec.label) as bar:
            paths_run = [utterances[i].path for i in runnable]
            cut = {"segment": segment, "max_segment": max_segment}
            for pos, result, error in transcribe_all(stt, paths_run, task, batch_size, **cut):
                i = runnable[pos]
                if error is not None:
                    errors[i] = _message(error, utterances[i].audio)
                    console.warn(f"error: {spec.label}: {errors[i]} (not scored)")
                else:
                    hyps[i], tokens[i] = _texts(result, tasks), _tokens(result, tasks)
                bar.update(1)
        rows.append({"label": spec.label, "hyps": hyps, "tokens": tokens, "errors": errors})
        del stt
        mx.clear_cache()  # the next model's weights take the room

    if recipe_ckpt is not None:
        rows.append(_run_recipe(recipe_ckpt, utterances, runnable, tasks, dtype, console))

    # Score the utterances every row decoded, so that the rows compare the same set.
    scored = [i for i in runnable if all(i in r["hyps"] for r in rows)]
    report_rows = []
    for r in rows:
        raw, norm = {}, {}
        for t in tasks:
            s = corpus_scores(t, [utterances[i].references[t] for i in scored], [r["hyps"][i][t] for i in scored])
            raw.update(s["raw"])
            norm.update(s["normalised"])
        entries = []
        for i, u in enumerate(utterances):
            e = {"audio": u.audio, "reference": _per_task(tasks, u.references)}
            if i in r["hyps"]:
                e["hypothesis"] = _per_task(tasks, r["hyps"][i])
            else:
                e["hypothesis"] = None
                e["error"] = failed.get(i) or r["errors"].get(i) or "not run: failed in another row"
            entries.append(e)
        row = {"model": r["label"], "raw": raw, "normalised": norm, "utterances": entries}
        if "recipe" in r:
            _add_agreement(row, r, rows[0], scored, tasks)
        report_rows.append(row)
    return {"task": task, "n": len(scored), "models": report_rows}


def _run_recipe(ckpt: Path, utterances, runnable, tasks, dtype, console) -> dict:

    torch_dtype = dtype or "bfloat16"  # the card's; --dtype float32 for exact parity
    recipe = TransformersRecipe(ckpt, dtype=torch_dtype)
    label = f"transformers recipe ({torch_dtype})"
    hyps, tokens, errors = {}, {}, {}
    with console.bar(len(runnable), label) as bar:
        for i in runnable:
            try:
                audio = load_audio(utterances[i].path, recipe.sample_rate)
                out = {t: recipe(audio, t) for t in tasks}
            except Exception as e:
                errors[i] = _message(e, utterances[i].audio)
                console.warn(f"error: {label}: {errors[i]} (not scored)")
            else:
                hyps[i] = {t: text for t, (_, text) in out.items()}
                tokens[i] = {t: ids for t, (ids, _) in out.items()}
            bar.update(1)
    return {"label": label, "hyps": hyps, "tokens": tokens, "errors": errors, "recipe": str(ckpt)}


def _add_agreement(row: dict, recipe: dict, base: dict, scored: list[int], tasks: list[str]) -> None:

    totals = {t: [0, 0, 0] for t in tasks}  # same steps, steps, identical utterances
    per_utt: dict[int, dict[str, float]] = {}
    for i in scored:
        per_utt[i] = {}
        for t in tasks:
            skip = len(TASK_PREFIXES[t]) + DEFAULT_PAD_STEPS
            same, steps = token_agreement(base["tokens"][i][t], recipe["tokens"][i][t], skip=skip)
            totals[t][0] += same
            totals[t][1] += steps
            totals[t][2] += base["tokens"][i][t] == recipe["tokens"][i][t]
            per_utt[i][t] = 100.0 * same / steps if steps else 100.0
    for i, e in enumerate(row["utterances"]):
        if i in per_utt:
            e["agreement"] = _per_task(tasks, per_utt[i])
    row["agreement"] = _per_task(
        tasks,
        {
            t: {
                "model": base["label"],
                "tokens": 100.0 * same / steps if steps else 100.0,
                "steps": steps,
                "identical": identical,
                "n": len(scored),
            }
            for t, (same, steps, identical) in totals.items()
        },
    )


# --------------------------------------------------------------------------------------------
# Output


def _fmt(metric: str, v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.2f} %" if metric in ("wer", "cer") else f"{v:.2f}"


def format_table(report: dict) -> str:
    """The card-style table for each task: a row per model, metrics raw and normalised, each
    row after the first with its difference to the first (in the metric's units)."""

    tasks = task_list(report["task"])
    total = len(report["models"][0]["utterances"]) if report["models"] else 0
    lines = []
    for t in tasks:
        cols = [(m, form) for m in TASK_METRICS[t] for form in ("raw", "normalised")]
        head = ["model"] + [f"{METRIC_NAMES[m]} {'raw' if form == 'raw' else 'norm.'}" for m, form in cols]
        what = "transcription (is)" if t == "is" else "translation (en)"
        lines.append(f"{what}: {report['n']} of {total} utterances scored")
        lines.append("")
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        first = report["models"][0] if report["models"] else None
        for k, row in enumerate(report["models"]):
            cells = [row["model"]]
            for m, form in cols:
                v = row[form].get(m)
                cell = _fmt(m, v)
                base = first[form].get(m)
                if k > 0 and v is not None and base is not None:
                    cell += f" ({v - base:+.2f})"
                cells.append(cell)
            lines.append("| " + " | ".join(cells) + " |")
        name, raw, norm = CARD[t]
        lines.append("")
        m = name.lower()
        card = f"{name} {_fmt(m, raw)} raw, {_fmt(m, norm)} normalised"
        lines.append(f"model card (bf16, 100 Samrómur test clips): {card}")
        for row in report["models"]:
            if "agreement" in row:
                a = row["agreement"][t] if len(tasks) > 1 else row["agreement"]
                lines.append(
                    f"token agreement, {row['model']} vs {a['model']}: {a['tokens']:.2f} % of {a['steps']} "
                    f"free-running steps; {a['identical']} of {a['n']} utterances identical"
                )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def to_json(report: dict) -> str:
    return json.dumps(report, ensure_ascii=False, indent=2) + "\n"


def to_csv(report: dict) -> str:
    """One row per model, utterance and task: texts, error, and that utterance's metrics raw
    and normalised (sentence-level BLEU/chrF); the recipe's rows add its token agreement."""

    tasks = task_list(report["task"])
    metrics = [m for t in tasks for m in TASK_METRICS[t]]
    cols = ["model", "audio", "task", "reference", "hypothesis", "error"]
    cols += [f"{m}_{form}" for m in metrics for form in ("raw", "normalised")]
    agreement = any("agreement" in row for row in report["models"])
    if agreement:
        cols.append("token_agreement")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for row in report["models"]:
        for e in row["utterances"]:
            for t in tasks:
                pick = (lambda v: v) if len(tasks) == 1 else (lambda v: None if v is None else v[t])
                ref, hyp = pick(e["reference"]), pick(e["hypothesis"])
                out = {"model": row["model"], "audio": e["audio"], "task": t, "reference": ref}
                out["hypothesis"] = "" if hyp is None else hyp
                out["error"] = e.get("error", "")
                if hyp is not None:
                    for form, scores in utterance_scores(t, ref, hyp).items():
                        for m, v in scores.items():
                            out[f"{m}_{form}"] = "" if v is None else f"{v:.2f}"
                if "agreement" in e:
                    out["token_agreement"] = f"{pick(e['agreement']):.2f}"
                w.writerow(out)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# Command line

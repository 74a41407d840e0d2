# Copyright © 2026 mlx-kyutai-is contributors
"""Accuracy metrics as the model card reports them: WER and CER (jiwer) for the Icelandic
transcript, BLEU and chrF (sacrebleu) for the English translation, each raw and normalised.

- **raw**: the texts as they are (case and punctuation kept), only brought to Unicode NFC so that
  a letter typed as one code point (``á``) and as two (``a`` + combining acute) compare equal.
- **normalised** (the card's "lowercased, punctuation stripped, whitespace squeezed"): NFC,
  ``str.lower()``, every character of a Unicode punctuation category (``P*``: Pc, Pd, Ps, Pe,
  Pi, Pf, Po, e.g. ``. , ; : ! ? - – — ' " „ “ ” « » ( ) [ ] … % / & * @ #``) deleted (not
  replaced by a space, so ``Suður-Ameríka`` becomes ``suðurameríka``), and runs of whitespace
  squeezed to one space, ends stripped. Letters of every script are kept, Icelandic ``á é í ó
  ú ý ð þ æ ö`` included, and so are digits and symbols (Unicode ``S*``: ``$ + = € °``).

Every figure is on a 0-100 scale: WER and CER in percent (13.43 means 13.43 %), BLEU and chrF as
sacrebleu scores. Corpus figures pool the whole set (jiwer: total edits / total reference words or
characters; sacrebleu: corpus statistics), as the card's table does, not a mean of utterances.
BLEU is sacrebleu's default (13a tokenizer, exponential smoothing off), chrF its chrF2.
"""

import unicodedata

import jiwer
import sacrebleu

# The metrics of each task, in table order; lower is better for WER and CER only.
TASK_METRICS = {"is": ("wer", "cer"), "en": ("bleu", "chrf")}
LOWER_IS_BETTER = {"wer": True, "cer": True, "bleu": False, "chrf": False}
FORMS = ("raw", "normalised")


def raw(text: str) -> str:
    """The raw form: the text in Unicode NFC, nothing else changed."""
    return unicodedata.normalize("NFC", text)


def normalise(text: str) -> str:
    """The normalised form: NFC, lowercased, Unicode punctuation (categories P*) deleted,
    whitespace squeezed.

    Examples
    --------
    >>> normalise("Góðan daginn, Jón!  Hvað segir þú?")
    'góðan daginn jón hvað segir þú'
    """
    text = unicodedata.normalize("NFC", text).lower()
    text = "".join(c for c in text if not unicodedata.category(c).startswith("P"))
    return " ".join(text.split())


FORM_FUNCTIONS = {"raw": raw, "normalised": normalise}


def _wer(refs: list[str], hyps: list[str], chars: bool) -> float | None:

    # jiwer divides by the reference length; with no reference word at all there is no rate.
    if not any(r.strip() for r in refs):
        return None
    return 100.0 * (jiwer.cer(refs, hyps) if chars else jiwer.wer(refs, hyps))


def _metric(name: str, refs: list[str], hyps: list[str]) -> float | None:

    if name == "wer":
        return _wer(refs, hyps, chars=False)
    if name == "cer":
        return _wer(refs, hyps, chars=True)
    if name == "bleu":
        return sacrebleu.corpus_bleu(hyps, [refs]).score
    if name == "chrf":
        return sacrebleu.corpus_chrf(hyps, [refs]).score
    raise ValueError(f"unknown metric {name!r}")


def corpus_scores(task: str, references: list[str], hypotheses: list[str]) -> dict[str, dict[str, float | None]]:
    """Corpus metrics of one task over pairs of texts, raw and normalised.

    Parameters
    ----------
    task : {"is", "en"}
        "is": WER and CER; "en": BLEU and chrF.
    references, hypotheses : list of str
        Same length, in the same order.

    Returns
    -------
    dict
        ``{"raw": {metric: value}, "normalised": {metric: value}}``, values on a 0-100 scale
        (None for WER/CER when the references hold no word).
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    out = {}
    for form, f in FORM_FUNCTIONS.items():
        refs, hyps = [f(r) for r in references], [f(h) for h in hypotheses]
        # no pairs (every utterance failed): no figures rather than sacrebleu's error
        out[form] = {m: _metric(m, refs, hyps) if refs else None for m in TASK_METRICS[task]}
    return out


def utterance_scores(task: str, reference: str, hypothesis: str) -> dict[str, dict[str, float | None]]:
    """The same metrics for one pair (sentence-level BLEU/chrF: sacrebleu's `sentence_bleu` and
    `sentence_chrf`), for per-utterance listings; same shape as `corpus_scores`."""

    out = {}
    for form, f in FORM_FUNCTIONS.items():
        ref, hyp = f(reference), f(hypothesis)
        scores = {}
        for m in TASK_METRICS[task]:
            if m == "bleu":
                scores[m] = sacrebleu.sentence_bleu(hyp, [ref]).score
            elif m == "chrf":
                scores[m] = sacrebleu.sentence_chrf(hyp, [ref]).score
            else:
                scores[m] = _metric(m, [ref], [hyp])
        out[form] = scores
    return out

# Copyright © 2026 mlx-kyutai-is contributors
"""WER/CER and BLEU/chrF, raw and normalised: equal to jiwer and sacrebleu run directly, and to
values worked out by hand, on Icelandic and English strings with punctuation."""

import unicodedata

import jiwer
import pytest
import sacrebleu

from mlx_kyutai_is.evaluation.metrics import (
    corpus_scores,
    normalise,
    raw,
    utterance_scores,
)

# (reference, hypothesis): case and punctuation errors only, then one real word error.
IS_PAIRS = [
    ("Góðan daginn, Jón.", "góðan daginn Jón"),
    ("Veðrið á Íslandi er oft mjög breytilegt.", "Veðrið á íslandi er oft mjög breytilegt"),
    ("Hvað kostar miði til Akureyrar?", "hvað kostar miðinn til akureyrar"),
]
EN_PAIRS = [
    ("Good morning, my name is Jón from Reykjavík.", "good morning my name is jón from reykjavík"),
    ("What does a ticket to Akureyri cost on the bus tomorrow?", "What does a bus ticket to Akureyri cost tomorrow?"),
]


def test_normalise_strips_unicode_punctuation_and_keeps_icelandic_letters():
    assert normalise("ÁÉÍÓÚÝÐÞÆÖ áéíóúýðþæö") == "áéíóúýðþæö áéíóúýðþæö"
    # every P* category: „ “ (Ps, Pi) — (Pd) « » (Pi, Pf) … , % ¿ ¡ · (Po) ( ) [ ] (Ps, Pe) _ (Pc)
    text = "„Já,“ sagði hún — «nei!» … (3,5%) [x] ¿qué? ¡olé! a·b a_b"
    assert normalise(text) == "já sagði hún nei 35 x qué olé ab ab"
    # deleted, not replaced by a space
    assert normalise("Suður-Ameríka") == "suðurameríka"
    # symbols (S*) and digits stay
    assert normalise("$5 + 3 = 8 € 20°C") == "$5 + 3 = 8 € 20°c"
    # whitespace of any kind squeezed, ends stripped
    assert normalise("  a\t b\n\u00a0c  ") == "a b c"
    # NFC: a decomposed letter equals the composed one, in both forms
    decomposed = unicodedata.normalize("NFD", "Jón Þór")
    assert decomposed != "Jón Þór"
    assert raw(decomposed) == "Jón Þór" and normalise(decomposed) == "jón þór"
    assert raw("Góðan daginn, Jón.") == "Góðan daginn, Jón."  # raw keeps case and punctuation


def test_wer_cer_equal_jiwer_and_hand_values():
    refs, hyps = [r for r, _ in IS_PAIRS], [h for _, h in IS_PAIRS]
    s = corpus_scores("is", refs, hyps)
    assert s["raw"]["wer"] == pytest.approx(100 * jiwer.wer(refs, hyps))
    assert s["raw"]["cer"] == pytest.approx(100 * jiwer.cer(refs, hyps))
    nrefs, nhyps = [normalise(r) for r in refs], [normalise(h) for h in hyps]
    assert s["normalised"]["wer"] == pytest.approx(100 * jiwer.wer(nrefs, nhyps))
    assert s["normalised"]["cer"] == pytest.approx(100 * jiwer.cer(nrefs, nhyps))
    # By hand. Raw words: pair 1 has 3 of 3 wrong ("Góðan"/"góðan", "daginn,", "Jón."), pair 2
    # 2 of 7 ("Íslandi", "breytilegt."), pair 3 3 of 5 ("Hvað", "miðinn", "Akureyrar?"): pooled
    # 8 / 15 (not the mean of the three rates). Normalised only "miðinn" is wrong: 1 / 15.
    assert s["raw"]["wer"] == pytest.approx(100 * 8 / 15)
    assert s["normalised"]["wer"] == pytest.approx(100 * 1 / 15)
    # Normalised characters: references of 16 + 39 + 30 characters, 2 inserted ("nn").
    assert [len(r) for r in nrefs] == [16, 39, 30]
    assert s["normalised"]["cer"] == pytest.approx(100 * 2 / 85)
    # Pair 1 raw characters: G->g, "," and "." deleted: 3 edits in 18 characters.
    one = utterance_scores("is", *IS_PAIRS[0])
    assert one["raw"] == {"wer": pytest.approx(100.0), "cer": pytest.approx(100 * 3 / 18)}
    assert one["normalised"] == {"wer": 0.0, "cer": 0.0}


def test_bleu_chrf_equal_sacrebleu_and_hand_values():
    refs, hyps = [r for r, _ in EN_PAIRS], [h for _, h in EN_PAIRS]
    s = corpus_scores("en", refs, hyps)
    assert s["raw"]["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert s["raw"]["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    nrefs, nhyps = [normalise(r) for r in refs], [normalise(h) for h in hyps]
    assert s["normalised"]["bleu"] == pytest.approx(sacrebleu.corpus_bleu(nhyps, [nrefs]).score)
    assert s["normalised"]["chrf"] == pytest.approx(sacrebleu.corpus_chrf(nhyps, [nrefs]).score)
    assert 0 < s["raw"]["bleu"] < s["normalised"]["bleu"] < 100
    # The first pair differs only in case and punctuation: 100 normalised, less raw.
    one = utterance_scores("en", *EN_PAIRS[0])
    assert one["normalised"]["bleu"] == pytest.approx(100.0)
    assert one["normalised"]["chrf"] == pytest.approx(100.0)
    assert one["raw"]["bleu"] == pytest.approx(sacrebleu.sentence_bleu(EN_PAIRS[0][1], [EN_PAIRS[0][0]]).score)
    assert one["raw"]["chrf"] == pytest.approx(sacrebleu.sentence_chrf(EN_PAIRS[0][1], [EN_PAIRS[0][0]]).score)
    assert one["raw"]["bleu"] < 100 and one["raw"]["chrf"] < 100
    # Identical texts score 100 in both forms, whatever the metric.
    same = corpus_scores("en", refs, refs)
    assert same["raw"] == same["normalised"] == {"bleu": pytest.approx(100.0), "chrf": pytest.approx(100.0)}


def test_no_pairs_and_no_reference_words_give_no_rate():
    assert corpus_scores("is", [], []) == {"raw": {"wer": None, "cer": None}, "normalised": {"wer": None, "cer": None}}
    assert corpus_scores("en", [], [])["raw"] == {"bleu": None, "chrf": None}
    # a reference that normalises to nothing has no word to divide by
    s = utterance_scores("is", "…!", "eitthvað")
    assert s["normalised"]["wer"] is None and s["raw"]["wer"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        corpus_scores("is", ["a", "b"], ["a"])

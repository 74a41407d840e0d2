"""Tokenizer: decode parity with transformers' batch_decode(skip_special_tokens=True), pieces, errors."""

import json
import sys

import numpy as np
import pytest

from mlx_kyutai_is.models.config import ModelArgs
from mlx_kyutai_is.models.tokenizer import Tokenizer, TokenizerError

from checkpoints import (
    SENTENCES,
    TEXT_BOS,
    TEXT_VOCAB,
    build_tokenizer,
    small_codec_kwargs,
    small_lm_kwargs,
)

PREFIX_IS = [9318, 8002, 8003, 9193]
PREFIX_EN = [9318, 8032, 8015, 9193]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    """tokenizer.json + config.json (no weights: the tokenizer only reads the special ids)."""
    d = tmp_path_factory.mktemp("tok")
    build_tokenizer().save_pretrained(d)
    (d / "config.json").write_text(json.dumps({**small_lm_kwargs(), "codec_config": small_codec_kwargs()}))
    return d


@pytest.fixture(scope="module")
def hf(tok_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tok_dir)


@pytest.fixture(scope="module")
def tok(tok_dir):
    return Tokenizer.from_dir(tok_dir)


def random_sequences(n=400, seed=0):
    """Random ids over the whole LM text vocabulary, with specials, the start slot and task prefixes."""
    rng = np.random.default_rng(seed)
    seqs = []
    for i in range(n):
        s = rng.integers(0, TEXT_VOCAB, size=rng.integers(0, 40)).tolist()
        s += rng.integers(0, 4, size=rng.integers(0, 10)).tolist() + [TEXT_BOS] * int(rng.integers(0, 2))
        rng.shuffle(s)
        if i % 3 == 0:
            s = (PREFIX_IS if i % 2 else PREFIX_EN) + [3] * 12 + s
        seqs.append(s)
    return seqs


def test_decode_matches_transformers(tok, hf):
    seqs = random_sequences()
    ref = hf.batch_decode(seqs, skip_special_tokens=True)
    assert [tok.decode(s) for s in seqs] == ref


def test_task_prefixes(tok, hf):
    assert tok.decode(PREFIX_IS) == "<is>" == hf.decode(PREFIX_IS, skip_special_tokens=True)
    assert tok.decode(PREFIX_EN) == "<en>" == hf.decode(PREFIX_EN, skip_special_tokens=True)
    assert tok.decode(PREFIX_IS + [3, 3, 0, 3]) == "<is>"
    assert tok.decode([]) == tok.decode([3, 0, TEXT_BOS, 1, 2]) == ""


def test_ids_from_numpy_and_mlx(tok):
    ids = PREFIX_IS + [5, 6, 7]
    assert tok.decode(np.array(ids, np.int32)) == tok.decode(ids)
    mx = pytest.importorskip("mlx.core")
    assert tok.decode(mx.array(ids).tolist()) == tok.decode(ids)
    assert tok.decode(list(mx.array(ids))) == tok.decode(ids)  # 0-d mx arrays as ids


def test_pieces_and_word_starts(tok, hf):
    assert tok.vocab_size == len(hf) == TEXT_VOCAB - 1
    ids = list(range(tok.vocab_size))
    assert [tok.id_to_piece(i) for i in ids] == hf.convert_ids_to_tokens(ids)
    assert tok.id_to_piece(TEXT_BOS) == "" and tok.id_to_piece(-1) == ""
    assert tok.is_word_start(9318) and not tok.is_word_start(8002)
    assert not any(tok.is_word_start(i) for i in (0, 1, 2, 3, TEXT_BOS))
    starts = [i for i in ids if tok.id_to_piece(i).startswith("▁")]
    assert all(tok.is_word_start(i) for i in starts) and 1000 < len(starts) < 8000


def test_words_decode_exactly(tok):
    """Splitting ids at word starts and decoding each word reproduces the whole text."""
    rng = np.random.default_rng(1)
    for _ in range(100):
        ids = rng.integers(4, tok.vocab_size, size=30).tolist()
        ids[0] = 9318  # start with a word
        words, cur = [], []
        for i in ids + [0, 3]:
            if tok.is_special(i):
                continue
            if tok.is_word_start(i) and cur:
                words.append(cur)
                cur = []
            cur.append(i)
        words.append(cur)
        texts = [tok.decode(w) for w in words]
        assert all(" " not in t and not t.startswith("▁") for t in texts)
        assert " ".join(texts) == tok.decode(ids)


def test_special_ids_come_from_config(tok_dir, tok):
    assert tok.pad_id == 3 and tok.bos_id == TEXT_BOS
    assert {0, 1, 2, 3, TEXT_BOS} <= tok.special_ids
    args = ModelArgs.from_file(tok_dir)
    args.lm.pad_token_id = 7  # a config with another pad id: that id never decodes
    t = Tokenizer.from_dir(tok_dir, args=args)
    assert t.pad_id == 7 and t.decode([7, 5]) == tok.decode([5])
    assert Tokenizer.from_dir(tok_dir, args=args.lm).pad_id == 7


def test_encode_roundtrip(tok, hf):
    text = "góðan daginn ég heiti jón"  # letters of the test vocabulary only
    assert tok.encode(text) == hf.encode(text, add_special_tokens=False)
    assert tok.decode(tok.encode(text)) == text


def test_errors(tmp_path):
    with pytest.raises(TokenizerError, match=f"{tmp_path}: no tokenizer.json or tokenizer.model"):
        Tokenizer.from_dir(tmp_path)
    with pytest.raises(TokenizerError, match="no such directory"):
        Tokenizer.from_dir(tmp_path / "missing")
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="tokenizer.json: cannot load tokenizer") as e:
        Tokenizer.from_dir(tmp_path)
    assert "\n" not in str(e.value)


def test_clean_up_tokenization_spaces_follows_tokenizer_config(tmp_path):
    from tokenizers import Tokenizer as HFTok
    from tokenizers import decoders, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    vocab = [("<unk>", 0.0), ("<s>", 0.0), ("</s>", 0.0), ("<pad>", 0.0)]
    vocab += [(p, -1.0) for p in ["▁hann", "▁sagði", "▁.", "▁,", "▁?", "s", "▁'s"]]
    for clean in (False, True):
        t = HFTok(models.Unigram(vocab, unk_id=0, byte_fallback=False))
        t.pre_tokenizer = pre_tokenizers.Metaspace()
        t.decoder = decoders.Metaspace()
        d = tmp_path / str(clean)
        PreTrainedTokenizerFast(
            tokenizer_object=t, unk_token="<unk>", pad_token="<pad>", clean_up_tokenization_spaces=clean
        ).save_pretrained(d)
        hf = AutoTokenizer.from_pretrained(d)
        ours = Tokenizer.from_dir(d)
        for ids in ([4, 6, 5, 7, 3, 8, 9, 10, 6], [5, 9, 7, 4, 0, 6]):
            assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=True)
        assert ("hann. sagði" == ours.decode([4, 6, 5])) == clean


# ---------------------------------------------------------------------------------------------
# sentencepiece tokenizer.model (used when there is no tokenizer.json)


@pytest.fixture(scope="module")
def spm_dir(tmp_path_factory):
    spm = pytest.importorskip("sentencepiece")
    d = tmp_path_factory.mktemp("spm")
    (d / "text.txt").write_text("\n".join(SENTENCES * 20))
    spm.SentencePieceTrainer.train(
        input=str(d / "text.txt"),
        model_prefix=str(d / "tokenizer"),
        vocab_size=50,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,
        minloglevel=2,
    )
    return d


def test_sentencepiece_model(spm_dir):
    import sentencepiece as spm

    tok = Tokenizer.from_dir(spm_dir)
    sp = spm.SentencePieceProcessor(model_file=str(spm_dir / "tokenizer.model"))
    assert tok.kind == "sentencepiece" and tok.vocab_size == sp.get_piece_size() == 50
    assert tok.special_ids >= {0, 1, 2, 3}
    for s in SENTENCES:
        ids = sp.encode(s)
        assert tok.encode(s) == ids and tok.decode(ids) == s
        noisy = [3, 0] + ids[:5] + [0, 3, 3, 50, 1] + ids[5:] + [2]
        assert tok.decode(noisy) == s  # unk/bos/eos/pad and out-of-vocab ids dropped
    assert [tok.id_to_piece(i) for i in range(50)] == [sp.id_to_piece(i) for i in range(50)]
    assert [tok.is_word_start(i) for i in range(4, 50)] == [sp.id_to_piece(i).startswith("▁") for i in range(4, 50)]
    assert Tokenizer.from_dir(spm_dir / "tokenizer.model").vocab_size == 50  # a file path works too


def test_tokenizer_json_preferred_over_model(spm_dir, tok_dir, tmp_path):
    import shutil

    shutil.copy(spm_dir / "tokenizer.model", tmp_path)
    shutil.copy(tok_dir / "tokenizer.json", tmp_path)
    assert Tokenizer.from_dir(tmp_path).kind == "tokenizers"


def test_sentencepiece_missing_gives_clear_error(spm_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "sentencepiece", None)
    with pytest.raises(TokenizerError, match="pip install sentencepiece"):
        Tokenizer.from_dir(spm_dir)

# Copyright © 2026 mlx-kyutai-is contributors
"""Text tokenizer: ids <-> text for the model's text stream.

Reads `tokenizer.json` (Hugging Face `tokenizers`, a runtime dependency) or, failing that, a
sentencepiece `tokenizer.model` (optional `sentencepiece` package). `decode` matches
`PreTrainedTokenizerFast.batch_decode(..., skip_special_tokens=True)` of transformers.

Special ids. Kyutai's text vocabulary (a sentencepiece model) reserves ids 0..3 (unk, bos, eos, pad).
The STT model reuses them as markers, never as text: 3 is the text pad (`pad_token_id` in config.json),
0 marks a word boundary. The LM's vocabulary also has one id more than the tokenizer: the text start
token (`bos_token_id` in config.json, 9322 here) that has no piece. `decode` drops all of these:
the tokenizer's own special tokens, ids 0..3 (`RESERVED_IDS`), the config's pad/bos ids, and any id
outside the tokenizer's vocabulary.
"""

import json
from pathlib import Path

from tokenizers import Tokenizer as _Tok

from ..errors import Error
from .config import ConfigError, ModelArgs

RESERVED_IDS = frozenset(range(4))  # unk/bos/eos/pad in Kyutai's sentencepiece vocab; never text
WORD_START = "▁"  # sentencepiece's word-boundary marker (U+2581)


class TokenizerError(Error, ValueError):
    """A tokenizer that cannot be loaded; the one-line message names the directory or file."""


class _HFBackend:
    kind = "tokenizers"

    def __init__(self, path: Path):

        try:
            self.tok = _Tok.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception for malformed files
            raise TokenizerError(f"{path}: cannot load tokenizer ({str(e).splitlines()[0]})") from None
        n = self.tok.get_vocab_size(with_added_tokens=True)
        self.pieces = [self.tok.id_to_token(i) or "" for i in range(n)]
        self.special = frozenset(i for i, t in self.tok.get_added_tokens_decoder().items() if t.special)
        self.model_type = type(self.tok.model).__name__

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids


class _SPBackend:
    kind = "sentencepiece"

    def __init__(self, path: Path):
        try:
            import sentencepiece as spm
        except ImportError:
            raise TokenizerError(
                f"{path}: a sentencepiece tokenizer needs the sentencepiece package (pip install sentencepiece)"
            ) from None
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.Load(str(path))
        except (OSError, RuntimeError) as e:
            raise TokenizerError(f"{path}: cannot load sentencepiece model ({str(e).splitlines()[0]})") from None
        n = self.sp.get_piece_size()
        self.pieces = [self.sp.id_to_piece(i) for i in range(n)]
        self.special = frozenset(i for i in range(n) if self.sp.is_control(i) or self.sp.is_unknown(i))
        self.model_type = "SentencePiece"

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode(ids)

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)


def _clean_up_tokenization(text: str) -> str:
    # transformers' `clean_up_tokenization`, applied only when tokenizer_config.json asks for it.
    for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                 (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):  # fmt: skip
        text = text.replace(a, b)
    return text


class Tokenizer:
    """The text tokenizer plus the model's special ids.

    Build it with `Tokenizer.from_dir`.

    Attributes
    ----------
    vocab_size : int
        Pieces in the tokenizer (9322 for this model; the LM has one id more, the text start token).
    pad_id : int
        The text pad id, from config.json (`pad_token_id`).
    bos_id : int or None
        The text start id, from config.json (`bos_token_id`); it has no piece.
    special_ids : frozenset[int]
        Ids that `decode` drops (ids >= vocab_size are dropped too).
    """

    def __init__(self, backend, pad_id: int = 3, bos_id: int | None = None, clean_up: bool = False):
        self._backend = backend
        self._pieces = backend.pieces
        self.vocab_size = len(self._pieces)
        self.pad_id = pad_id
        self.bos_id = bos_id
        extra = {pad_id} | ({bos_id} if bos_id is not None else set())
        self.special_ids = frozenset(backend.special | RESERVED_IDS | extra)
        # transformers never cleans up for BPE models (it would corrupt them); follow it.
        self._clean_up = clean_up and backend.model_type != "BPE"

    @property
    def kind(self) -> str:
        """"tokenizers" (tokenizer.json) or "sentencepiece" (tokenizer.model)."""
        return self._backend.kind

    @classmethod
    def from_dir(cls, path, args=None) -> "Tokenizer":
        """Load the tokenizer of a checkpoint directory.

        Parameters
        ----------
        path : str or Path
            A directory with `tokenizer.json` (preferred) or `tokenizer.model` (sentencepiece), or
            the path of one of those files.
        args : LmArgs or ModelArgs, optional
            Where `pad_token_id` / `bos_token_id` come from. By default the directory's `config.json`
            if it has one, else pad 3 and no bos.

        Raises
        ------
        TokenizerError
            No tokenizer file, or one that cannot be loaded.
        """
        path = Path(path)
        if path.is_file():
            model_dir, files = path.parent, [path]
        else:
            if not path.is_dir():
                raise TokenizerError(f"{path}: no such directory")
            model_dir, files = path, [path / "tokenizer.json", path / "tokenizer.model"]
        found = next((f for f in files if f.is_file()), None)
        if found is None:
            raise TokenizerError(f"{path}: no tokenizer.json or tokenizer.model in this directory")
        backend = _HFBackend(found) if found.suffix == ".json" else _SPBackend(found)

        pad_id, bos_id = 3, None
        if args is None and (model_dir / "config.json").is_file():

            try:
                args = ModelArgs.from_file(model_dir)
            except ConfigError:
                args = None  # the model loader reports a bad config; the tokenizer can do without
        if args is not None:
            lm = getattr(args, "lm", args)
            pad_id, bos_id = lm.pad_token_id, lm.bos_token_id
        return cls(backend, pad_id=pad_id, bos_id=bos_id, clean_up=_read_clean_up(model_dir))

    def is_special(self, token_id: int) -> bool:
        """True for ids that carry no text (pad, word boundary, start token, out of vocabulary)."""
        token_id = int(token_id)
        return token_id in self.special_ids or not 0 <= token_id < self.vocab_size

    def decode(self, ids) -> str:
        """Text of a sequence of ids, special ids skipped.

        Equal to transformers' `batch_decode([ids], skip_special_tokens=True)[0]`. A leading word
        marker is dropped, so the pieces of one word decode to that word without a space.
        """
        keep = [int(i) for i in ids if not self.is_special(i)]
        text = self._backend.decode(keep) if keep else ""
        return _clean_up_tokenization(text) if self._clean_up else text

    def encode(self, text: str) -> list[int]:
        """Ids of `text`, without special tokens (for tests and scoring)."""
        return list(self._backend.encode(text))

    def id_to_piece(self, token_id: int) -> str:
        """The piece of an id ("▁word", "ing", "<pad>"), or "" for an id outside the vocabulary."""
        token_id = int(token_id)
        return self._pieces[token_id] if 0 <= token_id < self.vocab_size else ""

    def is_word_start(self, token_id: int) -> bool:
        """True if the id is a text piece that begins a new word (its piece starts with "▁")."""
        return not self.is_special(token_id) and self._pieces[int(token_id)].startswith(WORD_START)


def _read_clean_up(model_dir: Path) -> bool:
    path = model_dir / "tokenizer_config.json"
    if not path.is_file():
        return False
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{path}: not valid JSON ({e})") from None
    return bool(cfg.get("clean_up_tokenization_spaces", False)) if isinstance(cfg, dict) else False

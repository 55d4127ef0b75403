"""Tokenizers for language modelling: UTF-8 bytes, characters, or byte-level BPE.

All three share one face: ``vocab_size``, ``encode(text) -> ids``, ``decode(ids) -> text`` and
``to_dict()``, a JSON-serializable description that :func:`tokenizer_from_dict` turns back into
the same tokenizer. The dict is stored with the run (``DatasetInfo.extra["tokenizer"]``) so that
`layerwise generate` encodes a prompt exactly as training did.

- ``byte``: the 256 byte values of UTF-8; no training, any text round-trips.
- ``char``: the sorted distinct characters of a text (nanoGPT's ``shakespeare_char``); small and
  readable, but a character it was not built with cannot be encoded.
- ``bpe``: byte-level BPE (GPT-2's scheme) trained with the Hugging Face ``tokenizers`` library;
  starts from the 256 bytes, so any text round-trips exactly. The library is imported only here.
- ``word``: lower-cased words and punctuation marks, the ``data.vocab_size`` most frequent in the
  training text, the rest one unknown id; for classifying sentences (Kim 2014's vocabulary).
  Decoding joins the words with spaces: not an exact round trip.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from layerwise.choices import unknown_choice_error
from layerwise.data.datasets import DataError


class Tokenizer(ABC):
    """Text <-> token ids; subclasses set ``kind`` and implement the four methods below."""

    kind: ClassVar[str]

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of distinct ids; every id is in [0, vocab_size)."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """The token ids of ``text``."""

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``; ``decode(encode(text)) == text``."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable description, ``{"kind": ..., ...}``; see :func:`tokenizer_from_dict`."""

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_dict` as JSON (read back with :func:`load_tokenizer`)."""
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes as ids (vocabulary 256). Decoding a cut-off multi-byte character gives U+FFFD."""

    kind = "byte"

    @property
    def vocab_size(self) -> int:
        return 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < 256]
        if bad:
            raise ValueError(f"byte tokenizer ids must lie in [0, 255]; got {bad[0]}. The ids come from "
                             f"a model with a larger vocabulary or another tokenizer.")
        return bytes(ids).decode("utf-8", errors="replace")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind}


class CharTokenizer(Tokenizer):
    """One id per distinct character, in sorted (code point) order, as nanoGPT's shakespeare_char."""

    kind = "char"

    def __init__(self, chars: Iterable[str]):
        self.chars: list[str] = sorted(set(chars))
        if not self.chars or any(len(c) != 1 for c in self.chars):
            raise ValueError("a char tokenizer needs a non-empty set of single characters.")
        self._stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The vocabulary of ``text``: its sorted distinct characters."""
        return cls(set(text))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        stoi = self._stoi
        try:
            return [stoi[c] for c in text]
        except KeyError as e:
            c = e.args[0]
            raise ValueError(f"character {c!r} (U+{ord(c):04X}, at position {text.index(c)}) is not in the "
                             f"char tokenizer's vocabulary of {self.vocab_size} characters, which was built from "
                             f"the training text. Remove or replace it, or train with data.tokenizer=byte "
                             f"or bpe, which encode any text.") from None

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < len(self.chars)]
        if bad:
            raise ValueError(f"char tokenizer ids must lie in [0, {len(self.chars) - 1}]; got {bad[0]}.")
        return "".join(self.chars[i] for i in ids)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "chars": "".join(self.chars)}


class WordTokenizer(Tokenizer):
    """Lower-cased words (letters, digits, _ and an inner apostrophe: "don't", "film's") and single
    punctuation marks; id 0 is the unknown word, ids 1.. the vocabulary, most frequent first."""

    kind = "word"
    PATTERN = re.compile(r"\w+(?:'\w+)*|[^\w\s]")
    UNKNOWN = "<unk>"

    def __init__(self, words: Iterable[str]):
        self.words: list[str] = [self.UNKNOWN, *words]
        self._ids = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def split(cls, text: str) -> list[str]:
        """The text's words and punctuation, lower-cased."""
        return cls.PATTERN.findall(text.lower())

    @classmethod
    def train(cls, text: str, vocab_size: int) -> WordTokenizer:
        """The ``vocab_size - 1`` most frequent words of ``text`` (ties in alphabetical order)."""
        from collections import Counter

        if vocab_size < 2:
            raise DataError(f"data.vocab_size={vocab_size} leaves no room for words (id 0 is the unknown "
                            f"word); use data.vocab_size >= 2, e.g. 20000.")
        counts = Counter(cls.split(text))
        ranked = sorted(counts, key=lambda w: (-counts[w], w))[:vocab_size - 1]
        return cls(ranked)

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def encode(self, text: str) -> list[int]:
        get = self._ids.get
        return [get(w, 0) for w in self.split(text)]

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < len(self.words)]
        if bad:
            raise ValueError(f"word tokenizer ids must lie in [0, {len(self.words) - 1}]; got {bad[0]}.")
        return " ".join(self.words[i] for i in ids)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "words": self.words[1:]}


def _hf_tokenizers():
    """The Hugging Face ``tokenizers`` module, imported only when bpe is used."""
    try:
        import tokenizers
    except ImportError:
        raise DataError("data.tokenizer=bpe needs the Hugging Face `tokenizers` library, which is not "
                        "installed. Run `pip install tokenizers`, or use data.tokenizer=byte or "
                        "data.tokenizer=char, which need nothing extra.") from None
    return tokenizers


class BPETokenizer(Tokenizer):
    """Byte-level BPE (GPT-2's pre-tokenization and byte alphabet) from Hugging Face ``tokenizers``.

    Wraps a ``tokenizers.Tokenizer``; build one with :meth:`train` or :meth:`from_json`.
    No special tokens are added: ids are exactly the text's tokens.
    """

    kind = "bpe"

    def __init__(self, hf_tokenizer: Any):
        self.hf = hf_tokenizer

    @classmethod
    def train(cls, text: str, vocab_size: int) -> BPETokenizer:
        """Learn merges on ``text`` until ``vocab_size`` ids (fewer if the text runs out of pairs).

        Deterministic: the trainer picks the most frequent pair and breaks ties by the pair's ids,
        and the byte alphabet is fixed, so the same text gives the same vocabulary.
        """
        if vocab_size < 256:
            raise DataError(f"data.vocab_size={vocab_size} is too small for the bpe tokenizer: its "
                            f"vocabulary starts with the 256 byte values and adds merges on top. Use "
                            f"data.vocab_size >= 256 (e.g. 1024), or data.tokenizer=char for a tiny vocabulary.")
        hf = _hf_tokenizers()
        tok = hf.Tokenizer(hf.models.BPE())
        tok.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = hf.decoders.ByteLevel()
        trainer = hf.trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, special_tokens=[],
                                         initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator([text], trainer=trainer)
        return cls(tok)

    @classmethod
    def from_json(cls, s: str) -> BPETokenizer:
        """From the JSON string of ``tokenizers.Tokenizer.to_str()`` (as kept in :meth:`to_dict`)."""
        return cls(_hf_tokenizers().Tokenizer.from_str(s))

    @property
    def vocab_size(self) -> int:
        return int(self.hf.get_vocab_size())

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"bpe tokenizer ids must lie in [0, {self.vocab_size - 1}]; got {bad[0]}.")
        return self.hf.decode(ids, skip_special_tokens=False)

    def extensions(self, token_id: int) -> list[int]:
        """The ids whose bytes start with the bytes of ``token_id`` (itself included): what may
        follow a prompt whose last token was backed up (token healing: a prompt ending in a space
        ends in a lone " " token, which training text almost never has, as " foo" is one token)."""
        prefix = self.hf.id_to_token(int(token_id))  # byte-level string: one character per byte
        return [i for i in range(self.vocab_size) if (self.hf.id_to_token(i) or "").startswith(prefix)]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "vocab_size": self.vocab_size, "json": self.hf.to_str()}


TOKENIZERS: dict[str, type[Tokenizer]] = {"byte": ByteTokenizer, "char": CharTokenizer, "bpe": BPETokenizer,
                                          "word": WordTokenizer}


def build_tokenizer(kind: str, train_text: str, vocab_size: int) -> Tokenizer:
    """A tokenizer of ``kind`` built from ``train_text``.

    byte ignores both arguments; char takes the characters of ``train_text`` (pass the whole text,
    as nanoGPT does, so validation characters are known); bpe trains ``vocab_size`` ids on it;
    word keeps its ``vocab_size - 1`` most frequent words.
    """
    check_kind(kind)
    if kind == "byte":
        return ByteTokenizer()
    if kind == "word":
        return WordTokenizer.train(train_text, vocab_size)
    if kind == "char":
        if not train_text:
            raise DataError("the char tokenizer is built from the text's characters, and the text is empty.")
        return CharTokenizer.from_text(train_text)
    return BPETokenizer.train(train_text, vocab_size)


def check_kind(kind: str) -> None:
    """DataError unless ``kind`` is a known tokenizer (byte, char, bpe)."""
    if kind not in TOKENIZERS:
        raise DataError(f"data.tokenizer: {unknown_choice_error('tokenizer', kind, list(TOKENIZERS))}.")


def tokenizer_from_dict(d: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from its :meth:`Tokenizer.to_dict`."""
    kind = d.get("kind") if isinstance(d, dict) else None
    try:
        if kind == "byte":
            return ByteTokenizer()
        if kind == "char":
            return CharTokenizer(d["chars"])
        if kind == "bpe":
            return BPETokenizer.from_json(d["json"])
        if kind == "word":
            return WordTokenizer(d["words"])
    except DataError:  # `tokenizers` missing: that message already says what to do
        raise
    except Exception as e:  # KeyError, TypeError, and the bare Exception tokenizers raises for bad JSON
        raise DataError(f"the saved {kind} tokenizer is incomplete or corrupt ({type(e).__name__}: {e}). "
                        f"Re-train the run, or copy its tokenizer from a good run directory.") from None
    raise DataError(f"the saved tokenizer has kind {kind!r}; known kinds are {', '.join(TOKENIZERS)}. "
                    f"It was written by another program or a newer layerwise.")


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Read a tokenizer written by :meth:`Tokenizer.save`."""
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"tokenizer file '{path}' does not exist. Give the tokenizer JSON saved with "
                        f"the run.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"tokenizer file '{path}' is not readable JSON ({e}). Replace it with a good "
                        f"copy from the run directory.") from None
    return tokenizer_from_dict(d)

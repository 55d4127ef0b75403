"""Text datasets for language modelling, and the device-resident loader over their token streams.

A text dataset is one long string (the files concatenated in order) split nanoGPT's way: the first
``int(n * (1 - val_fraction))`` characters train, the rest validate. Each split becomes a 1-D int64
tensor of token ids; :class:`TokenLoader` cuts (B, T) batches of next-token pairs from it on the
device, with the same resumable interface as :class:`layerwise.data.loader.BatchLoader`.
"""

from __future__ import annotations

import glob
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from layerwise.data.datasets import DataError, Dataset, DatasetInfo, register_dataset
from layerwise.data.loader import _gen
from layerwise.data.tokenizers import build_tokenizer, check_kind

SHAKESPEARE_FILE = "tinyshakespeare/input.txt"  # karpathy/char-rnn's Tiny Shakespeare, 1,115,394 bytes


def _text_files(root: Path, path: str) -> list[Path]:
    """data.path -> the files it names: a file, a folder's *.txt (by name), or a glob pattern."""
    if not path:
        raise DataError("dataset 'text' needs data.path: a text file, a folder of *.txt files or a glob "
                        "pattern such as 'books/*.txt' (relative to data.root, or absolute). "
                        "Set it with --data.path=PATH.")
    full = Path(path).expanduser()
    full = full if full.is_absolute() else root / full
    if full.is_file():
        return [full]
    if full.is_dir():
        # top level only, so a stray sub-folder (backups, other splits) is not read by surprise;
        # a recursive glob ('dir/**/*.txt') reads sub-folders on purpose
        files = sorted((p for p in full.glob("*.txt") if p.is_file()), key=lambda p: p.name)
        if not files:
            raise DataError(f"data.path folder '{full}' holds no *.txt files. Put the text in files ending "
                            f"in .txt, or point data.path at a file or a glob pattern such as '{path}/*.md'.")
        return files
    if any(c in path for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(full), recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(f"data.path pattern '{full}' matches no files. Check the pattern and "
                            f"data.root ('{root}'); relative patterns are relative to data.root.")
        return files
    raise DataError(f"data.path '{full}' does not exist. Give a text file, a folder of *.txt files or a "
                    f"glob pattern, relative to data.root ('{root}') or absolute.")


class _Unusable(Exception):
    """A text file that cannot be used: ``problem`` completes "the file ...", ``fix`` says what to do."""

    def __init__(self, problem: str, fix: str):
        super().__init__(problem)
        self.problem, self.fix = problem, fix


def normalize_newlines(text: str) -> tuple[str, int]:
    """``text`` with Windows (CR LF) and old Mac (CR) line ends made ``\\n``, and how many were
    changed. A tokenizer would otherwise learn ``\\r`` as a symbol of its own, and text from two
    systems would read as two different texts."""
    n = text.count("\r")
    return (text.replace("\r\n", "\n").replace("\r", "\n"), n) if n else (text, 0)


def _read(path: Path, allow_empty: bool = False) -> tuple[bytes, str]:
    """A UTF-8 file's bytes and text (non-empty unless ``allow_empty``) (a leading byte-order mark is dropped; the caller
    normalizes line ends with :func:`normalize_newlines`); else _Unusable."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise _Unusable(f"cannot be read ({e.strerror})", "Check its permissions") from None
    try:
        text = raw.decode("utf-8-sig")  # Windows editors start UTF-8 files with a BOM; it is not text
    except UnicodeDecodeError as e:
        raise _Unusable(f"is not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start})",
                        "Re-save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)") from None
    if not text and not allow_empty:
        raise _Unusable("is empty", "Remove it or add text")
    return raw, text  # line ends are normalized by the caller, which records how many changed


def _display(path: Path, root: Path) -> str:
    """The path as the user gave it: relative to data.root when it lies there."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def check_text_options(opts: Any) -> None:
    """DataError for text options no text source can use (block_size, val_fraction, on_error, tokenizer)."""
    T = int(opts.block_size)
    if T < 1:
        raise DataError(f"data.block_size={T}; the context length must be at least 1 token.")
    if not 0.0 < opts.val_fraction < 1.0:
        raise DataError(f"data.val_fraction={opts.val_fraction}; a text dataset needs a validation part, "
                        f"so use a fraction strictly between 0 and 1 (nanoGPT uses 0.1).")
    if opts.on_error not in ("refuse", "skip"):
        raise DataError(f"data.on_error={opts.on_error!r}; use refuse (stop on a bad file) or skip.")
    check_kind(opts.tokenizer)


def read_text_files(files: list[Path], root: Path, on_error: str, *, allow_empty: bool = False,
                    names: list[str] | None = None) -> tuple[list[str], list[dict], list[str]]:
    """Each usable file's text (line ends made ``\\n``), its record (path as the user gave it, or
    ``names[i]``; bytes, chars, sha256) and the warnings for files left out under ``on_error=skip``.

    An unreadable, non-UTF-8 (or, unless ``allow_empty``, empty) file raises DataError naming the
    file and the fix under ``on_error=refuse``; under ``skip`` it is left out with a warning."""
    texts, kept, warnings = [], [], []
    for i, f in enumerate(files):
        try:
            raw, text = _read(f, allow_empty)
        except _Unusable as e:
            if on_error == "refuse":
                raise DataError(f"text file '{f}' {e.problem}. {e.fix}, or set data.on_error=skip to "
                                f"leave it out.") from None
            warnings.append(f"skipped text file '{_display(f, root)}': it {e.problem}")
            continue
        text, converted = normalize_newlines(text)
        texts.append(text)
        kept.append({"path": names[i] if names else _display(f, root), "bytes": len(raw), "chars": len(text),
                     "sha256": hashlib.sha256(raw).hexdigest()}
                    | ({"line_ends_converted": converted} if converted else {}))
    return texts, kept, warnings


def lm_dataset(name: str, train_text: str, val_text: str, opts: Any, source: dict, *,
               char_text: str | None = None, warnings: list[str] | None = None) -> Dataset:
    """Tokenize a language-modelling text already split into train and validation, and describe it.

    The tokenizer (``opts.tokenizer``) is built from ``train_text`` (char: from ``char_text``, the
    whole text, so validation characters have ids); bpe therefore never sees the validation text.
    ``info.extra`` records the validation text's UTF-8 bytes and characters per token, which the
    lm task turns into bits per byte and per character (comparable across tokenizers and with
    compressors). ``source`` (provenance) gains the tokenizer, vocabulary and token counts.
    Raises DataError when a split is shorter than one context of ``opts.block_size`` + 1 tokens.
    """
    T = int(opts.block_size)
    tok = build_tokenizer(opts.tokenizer, char_text if opts.tokenizer == "char" and char_text else train_text,
                          opts.vocab_size)
    x_train = torch.tensor(tok.encode(train_text), dtype=torch.int64)  # (N_train,)
    x_val = torch.tensor(tok.encode(val_text), dtype=torch.int64)  # (N_val,)
    for split, x in (("train", x_train), ("validation", x_val)):
        if len(x) < T + 1:
            raise DataError(f"dataset '{name}' {split} split has {len(x)} tokens ({opts.tokenizer} tokenizer), "
                            f"fewer than one context of data.block_size={T} plus the next token. Use more "
                            f"text, a smaller data.block_size, or a different data.val_fraction "
                            f"(now {opts.val_fraction}).")
    val_bytes = len(val_text.encode("utf-8"))
    # text_start: what `generate` starts from when "\n" (its default prompt) is not in a char vocabulary
    extra = {"tokenizer": tok.to_dict(), "text_start": train_text[:1],
             "bytes_per_token": val_bytes / len(x_val), "chars_per_token": len(val_text) / len(x_val)}
    info = DatasetInfo(name, (T,), tok.vocab_size, [], 1.0, [], [], task="lm", extra=extra)
    source = source | {"tokenizer": opts.tokenizer, "vocab_size": tok.vocab_size, "train_tokens": len(x_train),
                       "val_tokens": len(x_val), "val_bytes": val_bytes}
    if warnings:
        source["skipped"] = len(warnings)
    return Dataset(info, x_train, None, x_val, None, source, tokenizer=tok, warnings=list(warnings or []))


def text_dataset(name: str, files: list[Path], root: Path, opts: Any) -> Dataset:
    """Read ``files`` (concatenated in order), split by characters, tokenize, and describe.

    Options used: tokenizer, vocab_size (bpe), block_size, val_fraction, on_error.
    """
    check_text_options(opts)
    texts, kept, warnings = read_text_files(files, root, opts.on_error)
    if not texts:
        raise DataError(f"dataset '{name}': all {len(files)} text files were skipped as unusable "
                        f"({'; '.join(warnings[:3])}{'; ...' if len(warnings) > 3 else ''}). "
                        f"Fix or replace the files.")
    text = "".join(texts)  # concatenated as they are: a file that should end a line ends with "\n"

    n = len(text)
    n_train = int(n * (1 - opts.val_fraction))  # nanoGPT: data[:int(n*0.9)]
    train_text, val_text = text[:n_train], text[n_train:]
    source = {"files": kept, "chars": n, "train_chars": len(train_text), "val_chars": len(val_text),
              "split": f"first int(chars * (1 - {opts.val_fraction})) characters train, the rest validation"}
    return lm_dataset(name, train_text, val_text, opts, source, char_text=text, warnings=warnings)


@register_dataset("text")
def _text(root: Path, opts: Any) -> Dataset:
    """Your own text: data.path is a file, a folder of *.txt (sorted by name) or a glob pattern."""
    return text_dataset("text", _text_files(root, opts.path), root, opts)


@register_dataset("shakespeare")
def _shakespeare(root: Path, opts: Any) -> Dataset:
    """Tiny Shakespeare (1,115,394 ASCII characters, 65 distinct), read from data.root."""
    path = root / SHAKESPEARE_FILE
    if not path.is_file():
        raise DataError(
            f"dataset 'shakespeare' needs the file {SHAKESPEARE_FILE} under the data root '{root}', and it "
            f"is not there. Set data.root (--data.root=DIR) or the environment variable LAYERWISE_DATA to "
            f"the folder that holds {SHAKESPEARE_FILE}, or add --data.download=true to fetch it (1.1 MB).")
    return text_dataset("shakespeare", [path], root, opts)


class TokenLoader:
    """Yields (x, y) next-token batches, (B, T) int64 each, cut from a 1-D token tensor on the device.

    An epoch is a set of windows of T+1 tokens; window k starts at ``offset + k*T``, so consecutive
    windows share one token and every token after the first is a target once. With shuffle, the
    offset is drawn from [0, T) and the window order is a permutation, both from a generator seeded
    by (seed, epoch): the state is just (epoch, position), and a resumed run sees the same batches.
    Without shuffle (evaluation), offset 0 and windows in order. A tail shorter than T tokens is
    not a target that epoch (with shuffle the random offset moves the tail, so no token is always
    left out). With shuffle there are ``(N - T) // T`` windows, so that every offset in [0, T) fits
    the same number and ``len`` is the same each epoch; without shuffle ``(N - 1) // T``.

    Distributed: pass ``rank`` and ``world_size`` and the same ``seed`` on every rank. As torch's
    DistributedSampler (and :class:`layerwise.data.loader.EpochOrder`), the epoch's order is padded
    to ceil(W / world_size) * world_size by wrapping around to its start, and rank r takes positions
    r, r + world_size, ...: every window is seen once per epoch across the ranks (the first few of
    the order twice) and every rank has the same number of batches. drop_last drops only the last
    short batch of each rank.
    """

    def __init__(self, tokens: torch.Tensor, batch_size: int, block_size: int, *, shuffle: bool = False,
                 seed: int = 0, drop_last: bool = False, rank: int = 0, world_size: int = 1):
        if tokens.dim() != 1:
            raise ValueError(f"TokenLoader takes a 1-D tensor of token ids; got shape {tuple(tokens.shape)}.")
        if batch_size < 1 or block_size < 1:
            raise ValueError(f"batch_size ({batch_size}) and block_size ({block_size}) must be at least 1.")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside [0, world_size={world_size}).")
        N, T = len(tokens), block_size
        if N < T + 1:
            raise ValueError(f"{N} tokens are fewer than one window of block_size + 1 = {T + 1}.")
        self.tokens = tokens
        self.batch_size, self.block_size = batch_size, block_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.rank, self.world_size = rank, world_size
        # with shuffle: the most windows that fit after any offset in [0, T); a text shorter than
        # 2T keeps one window and draws the offset from the room it has
        self.num_examples = max((N - T) // T, 1) if shuffle else (N - 1) // T
        self._max_offset = min(T, N - self.num_examples * T)  # offset in [0, _max_offset)
        self._window = torch.arange(T, device=tokens.device)  # (T,)
        self.epoch, self.position = 0, 0

    @property
    def examples_per_rank(self) -> int:
        """Windows this rank sees per epoch (padding included, before drop_last)."""
        return -(-self.num_examples // self.world_size)

    def __len__(self) -> int:
        n, B = self.examples_per_rank, self.batch_size
        return n // B if self.drop_last else -(-n // B)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def _starts(self) -> torch.Tensor:
        """This rank's window start offsets for the current epoch, (examples_per_rank,) on the device."""
        W, R, T = self.num_examples, self.world_size, self.block_size
        if self.shuffle:
            g = _gen(self.seed, self.epoch)
            offset = int(torch.randint(self._max_offset, (1,), generator=g))
            order = torch.randperm(W, generator=g)  # (W,)
        else:
            offset, order = 0, torch.arange(W)
        order = order[torch.arange(self.examples_per_rank * R) % W]  # pad by wrapping around
        return (offset + order[self.rank::R] * T).to(self.tokens.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Iterate over the rest of the current epoch (all of it unless resumed mid-epoch)."""
        starts, B = self._starts(), self.batch_size
        while self.position < len(self):
            s = starts[self.position * B:(self.position + 1) * B]  # (B,)
            # x and y in one gather: (2, B, T), each half contiguous, so y.view(-1) works
            idx = torch.stack((s, s + 1))[:, :, None] + self._window[None, None, :]
            xy = self.tokens[idx].long()
            self.position += 1
            yield xy[0], xy[1]
        self.epoch, self.position = self.epoch + 1, 0

    def evaluation_view(self, batch_size: int) -> TokenLoader:
        """A loader over the same tokens for evaluation: offset 0, windows in order, whole on every
        rank (padding would count windows twice), at epoch 0."""
        return TokenLoader(self.tokens, batch_size, self.block_size)

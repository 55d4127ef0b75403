"""Sentences and documents with labels (dataset ``text-classes``): natural-language understanding.

``data.path`` (relative to ``data.root``, or absolute) is one of

    <path>/<class>/<file>.txt        one example per file (its whole text); or train/<class>/ and
                                     test/<class>/ (val/ instead of test/ works)
    <path>/ holding files            one example per line; each file is a class, named by its
                                     suffix when the files share a stem (Pang & Lee's
                                     rt-polarity.pos / rt-polarity.neg: classes neg, pos), else by
                                     its stem (pos.txt, neg.txt)
    <path>.csv (or .tsv)             a text column (data.text_column, default: the column whose
                                     values are longest) and a label column (data.target, default:
                                     the first other column); data.label_sep splits labels into
                                     several per example (multilabel)

Text is read as the ``text`` dataset reads it (UTF-8, a BOM dropped, CR LF and CR made \\n; a blank
line is not an example). Without a test split, ``data.val_fraction`` of every class is held out,
or fold ``data.fold`` of ``data.folds`` (:func:`layerwise.data.datasets.holdout_split`).

Tokens come from ``data.tokenizer`` (``word`` suits sentences; byte, char and bpe work too),
built on the training split only, and are cut at ``data.block_size`` tokens per example. Ids are
shifted by one so that 0 pads: a model's vocabulary is the tokenizer's plus one, and it finds the
real tokens as ``x != 0``. :class:`SequenceLoader` pads each batch to its longest example and,
when training, forms batches of similar lengths (less padding), in a seeded order that resumes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from layerwise.data.datasets import DataError, Dataset, DatasetInfo, holdout_split, register_dataset, user_path
from layerwise.data.loader import _gen
from layerwise.data.text import normalize_newlines
from layerwise.data.tokenizers import build_tokenizer, check_kind

__all__ = ["PAD", "SequenceLoader", "SequenceSet", "encode_texts", "pad_batch", "read_text_classes",
           "split_text_classes"]

PAD = 0  # the padding id; token ids are the tokenizer's + 1
_BUCKET = 50  # training batches are cut from runs of this many batches' examples sorted by length


class SequenceSet:
    """N token sequences of different lengths in one flat tensor: ``ids`` (sum of lengths,) int32
    and ``offsets`` (N + 1,) int64; ``set[i]`` is sequence i as int64. Picklable."""

    def __init__(self, seqs: Sequence[Sequence[int]]):
        lengths = np.array([len(s) for s in seqs], np.int64)
        self.offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)]))
        flat = np.fromiter((t for s in seqs for t in s), np.int32, count=int(lengths.sum()))
        self.ids = torch.from_numpy(flat)
        self.lengths = torch.from_numpy(lengths)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.ids[self.offsets[i]:self.offsets[i + 1]].long()

    def subset(self, idx: Sequence[int]) -> SequenceSet:
        return SequenceSet([self[int(i)].tolist() for i in idx])

    def head(self, n: int) -> SequenceSet:
        return self.subset(range(min(n, len(self))))


def pad_batch(seqs: Sequence[torch.Tensor], device: torch.device | str = "cpu") -> torch.Tensor:
    """Sequences of token ids -> (B, T) int64 padded with PAD to the longest, on ``device``."""
    T = max(1, max(len(s) for s in seqs))
    out = torch.full((len(seqs), T), PAD, dtype=torch.int64)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = s
    return out.to(device, non_blocking=True)


class SequenceLoader:
    """Yields (x (B, T) int64 padded token ids, y (B,) targets) on ``device``.

    The epoch's order is :class:`~layerwise.data.loader.EpochOrder`'s (a seeded permutation per
    epoch, split over ranks as DistributedSampler does). Training (``shuffle``) sorts runs of
    ``_BUCKET`` batches' examples by length before cutting them into batches, then shuffles the
    batches (seeded by seed and epoch): similar lengths pad less, and a resumed loader rebuilds
    the same batches from (epoch, position). Evaluation keeps the order and cuts it in turn. A
    subclass for other variable-size examples (molecular graphs: layerwise.data.molecules.GraphLoader)
    overrides :meth:`collate` and may turn the length bucketing off (``bucket_by_length``).
    """

    bucket_by_length = True  # sort runs of examples by length before batching (less padding)

    def __init__(self, x: SequenceSet, y: torch.Tensor, batch_size: int, device: torch.device | str = "cpu", *,
                 shuffle: bool = False, seed: int = 0, drop_last: bool = False, rank: int = 0, world_size: int = 1):
        if len(x) != len(y) or len(y) == 0:
            raise ValueError(f"a loader needs as many inputs as labels, and some: got {len(x)} and {len(y)}")
        if batch_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need batch_size >= 1 and 0 <= rank < world_size; got {batch_size}, {rank}, {world_size}")
        self.x, self.y, self.device = x, y.cpu(), torch.device(device)
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch, self.position = 0, 0

    @property
    def num_examples(self) -> int:
        return len(self.y)

    @property
    def examples_per_rank(self) -> int:
        return -(-self.num_examples // self.world_size)

    def __len__(self) -> int:
        n = self.examples_per_rank
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def _rank_order(self) -> torch.Tensor:
        n, w = self.num_examples, self.world_size
        order = torch.randperm(n, generator=_gen(self.seed, self.epoch)) if self.shuffle else torch.arange(n)
        if w > 1:
            total = self.examples_per_rank * w
            order = order.repeat(-(-total // n))[:total][self.rank::w]
        return order

    def batches(self) -> list[torch.Tensor]:
        """This epoch's batches of example indices, in the order they are yielded."""
        order, B = self._rank_order(), self.batch_size
        if not self.shuffle or not self.bucket_by_length:
            cut = [order[i:i + B] for i in range(0, len(order), B)]
        else:
            cut = []
            span = B * _BUCKET
            for start in range(0, len(order), span):
                run = order[start:start + span]
                run = run[torch.argsort(self.x.lengths[run], stable=True)]
                cut += [run[i:i + B] for i in range(0, len(run), B)]
            perm = torch.randperm(len(cut), generator=_gen(self.seed, self.epoch, 1))
            cut = [cut[int(i)] for i in perm]
        if self.drop_last:
            cut = [b for b in cut if len(b) == B]
        return cut

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = self.batches()
        while self.position < len(batches):
            idx = batches[self.position]
            x = self.collate(idx)
            y = self.y[idx].to(self.device, non_blocking=True)
            self.position += 1
            yield x, y
        self.epoch, self.position = self.epoch + 1, 0

    def collate(self, idx: torch.Tensor) -> torch.Tensor:
        """Examples ``idx`` as one batch on the device: (B, T) token ids padded to the longest."""
        return pad_batch([self.x[int(i)] for i in idx], self.device)

    def evaluation_view(self, batch_size: int) -> SequenceLoader:
        """The same examples in order, whole on every rank, at epoch 0 (for evaluation)."""
        return SequenceLoader(self.x, self.y, batch_size, self.device)


# ---------------------------------------------------------------------------------------- reading
def _read_text(path: Path) -> str:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"text file '{path}' is not valid UTF-8 (byte 0x{path.read_bytes()[e.start]:02x} at offset "
                        f"{e.start}). Re-save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`).") from None
    except OSError as e:
        raise DataError(f"text file '{path}' cannot be read ({e.strerror or e}). Check its permissions.") from None
    return normalize_newlines(text)[0]


def _files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith("."))


def _class_folders(d: Path, skip: bool, warnings: list[str]) -> dict[str, list[str]]:
    """{class: its examples} from <d>/<class>/<file>, one example per file; an empty file is an
    error naming it (dropped with a warning under data.on_error=skip)."""
    out = {}
    for sub in sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")):
        texts = []
        for f in _files(sub):
            t = _read_text(f).strip()
            if t:
                texts.append(t)
            elif not skip:
                raise DataError(f"text file '{f}' is empty (an example of class '{sub.name}'). Remove it or add "
                                f"text, or set data.on_error=skip to drop empty files with a warning.")
            else:
                warnings.append(f"skipped the empty text file '{f}'")
        if not texts:
            raise DataError(f"class folder '{sub}' holds no non-empty text files. Add examples or remove it.")
        out[sub.name] = texts
    return out


def _line_files(d: Path) -> dict[str, list[str]]:
    """{class: its examples} from files of one example per line; the class is the file's suffix
    when every file shares one stem (rt-polarity.pos), else the file's stem (pos.txt)."""
    files = _files(d)
    stems = {f.name.split(".")[0] for f in files}
    by_suffix = len(stems) == 1 and all("." in f.name for f in files)
    out = {}
    for f in files:
        name = f.name.rsplit(".", 1)[1] if by_suffix else f.stem
        lines = [ln.strip() for ln in _read_text(f).split("\n")]
        out[name] = [ln for ln in lines if ln]
        if not out[name]:
            raise DataError(f"text file '{f}' holds no non-empty lines; each line is an example of class "
                            f"'{name}'. Add examples or remove the file.")
    if len(out) < 2:
        raise DataError(f"'{d}' holds {len(out)} file(s); text classes need one file per class (one example "
                        f"per line, e.g. rt-polarity.pos and rt-polarity.neg), or class folders of files.")
    return out


def _pool(d: Path, skip: bool = False, warnings: list[str] | None = None) -> dict[str, list[str]]:
    if any(p.is_dir() and not p.name.startswith(".") for p in d.iterdir()):
        return _class_folders(d, skip, [] if warnings is None else warnings)
    return _line_files(d)


def _texts_and_labels(groups: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    return [t for c in groups for t in groups[c]], [c for c in groups for _ in groups[c]]


def read_text_classes(path: Path, opts: Any, warnings: list[str] | None = None
                      ) -> tuple[list[str], list[str], int | None, str]:
    """(texts, labels, the number of training examples when the source gives a train/test split
    (they come first) else None, the layout read) for any layout of the module docstring;
    ``warnings`` receives what was skipped under data.on_error=skip."""
    from layerwise.data.tabular import read_text_table

    skip = getattr(opts, "on_error", "refuse") == "skip"
    if path.is_file():
        texts, labels, columns = read_text_table(path, opts, warnings)
        return texts, labels, None, f"CSV '{path.name}', {columns}"
    held = next((path / n for n in ("val", "test") if (path / n).is_dir()), None)
    if (path / "train").is_dir() and held is not None:
        tr_t, tr_l = _texts_and_labels(_pool(path / "train", skip, warnings))
        te_t, te_l = _texts_and_labels(_pool(held, skip, warnings))
        extra = sorted(set(te_l) - set(tr_l))
        if extra:
            raise DataError(f"'{held}' has classes that train/ lacks: {', '.join(extra)}. A class needs "
                            f"training examples; add them to train/ or remove those.")
        return tr_t + te_t, tr_l + te_l, len(tr_t), f"train/ and {held.name}/"
    texts, labels = _texts_and_labels(_pool(path, skip, warnings))
    return texts, labels, None, "class folders" if any(p.is_dir() for p in path.iterdir()) else "one file per class"


def split_text_classes(labels: list[str], n_train: int | None, opts: Any) -> tuple[np.ndarray, np.ndarray, str]:
    """(train indices, test indices, how) for :func:`read_text_classes`' examples: the given parts,
    or a held-out part / a fold, stratified by the labels (unless data.label_sep makes them sets)."""
    if n_train is not None:
        return np.arange(n_train), np.arange(n_train, len(labels)), "train/ and test/ parts"
    strata = labels if not getattr(opts, "label_sep", "") else None
    ids = {c: i for i, c in enumerate(sorted(set(strata)))} if strata else None
    return holdout_split(np.array([ids[c] for c in strata]) if strata else None, opts, len(labels))


@register_dataset("text-classes")
def _text_classes(root: Path, opts: Any) -> Dataset:
    """Labelled texts; see the module docstring for the layouts and options."""
    from layerwise.data.tabular import targets_from_labels

    path = user_path(root, opts, "text-classes", "a folder of <class>/<file>.txt, a folder of files with one "
                     "example per line (one file per class), or a CSV with a text and a label column")
    check_kind(opts.tokenizer)
    warnings: list[str] = []
    texts, labels, n_train, layout = read_text_classes(path, opts, warnings)
    tr, te, how = split_text_classes(labels, n_train, opts)
    y, classes, task = targets_from_labels([labels[i] for i in tr], [labels[i] for i in te], opts,
                                           what=f"the labels of '{path}'", strict=n_train is not None)
    train_text = "\n".join(texts[i] for i in tr)
    tok = build_tokenizer(opts.tokenizer, train_text, opts.vocab_size)
    T = int(opts.block_size)
    if T < 1:
        raise DataError(f"data.block_size={T}; an example needs at least one token.")

    def encode(idx: np.ndarray) -> tuple[SequenceSet, int]:
        seqs, cut = [], 0
        for i in idx:
            ids = [t + 1 for t in tok.encode(texts[i])] or [1]  # an example of no token is one unknown
            cut += len(ids) > T
            seqs.append(ids[:T])
        return SequenceSet(seqs), cut

    (x_tr, cut_tr), (x_te, cut_te) = encode(tr), encode(te)
    lengths = x_tr.lengths.float()
    info = DatasetInfo("text-classes", (T,), len(classes), classes, 1.0, [], [], task=task,
                       extra={"tokenizer": tok.to_dict(), "text": {"max_length": T, "pad_id": PAD, "id_offset": 1,
                                                                   "vocab_size": tok.vocab_size + 1}})
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    source = {"path": str(path), "layout": layout, "split": how, "train": len(tr), "test": len(te),
              "tokenizer": opts.tokenizer, "vocab_size": tok.vocab_size + 1,
              "mean_tokens": round(float(lengths.mean()), 2),
              "max_tokens": int(lengths.max()), "cut_to_block_size": cut_tr + cut_te, "sha256_texts": digest}
    if path.is_file():  # a CSV: say which columns were read (the Trainer prints it)
        source["task_reason"] = layout.split(", ", 1)[-1]
    if cut_tr + cut_te:
        warnings.append(f"{cut_tr + cut_te} of {len(texts)} examples are longer than data.block_size={T} tokens "
                        f"and keep their first {T}; raise data.block_size if their ends matter.")
    ytr, yte = y
    return Dataset(info, x_tr, ytr, x_te, yte, source, tokenizer=tok, warnings=warnings)


def encode_texts(texts: Sequence[str], info: DatasetInfo, cut: bool = True) -> torch.Tensor:
    """New texts -> (N, T) padded token ids, exactly as a trained text-classes dataset encodes
    (``cut``: at its max_length tokens, as training did)."""
    from layerwise.data.tokenizers import tokenizer_from_dict

    tok = tokenizer_from_dict(info.extra["tokenizer"])
    T = info.extra["text"]["max_length"] if cut else None
    seqs = [torch.tensor(([t + 1 for t in tok.encode(normalize_newlines(s)[0])] or [1])[:T]) for s in texts]
    return pad_batch(seqs)


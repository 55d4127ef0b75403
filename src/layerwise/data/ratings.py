"""Explicit ratings (user, item, rating): the MovieLens 100K source in GroupLens' own layout.

    <data.root>/movielens/ml-100k/u.data     user<TAB>item<TAB>rating<TAB>unix_time, 100,000 lines
                                  u.item     id|title|release|video release|IMDb URL|19 genre flags (Latin-1)
                                  u.user     id|age|gender|occupation|zip
                                  u{1..5}.base / u{1..5}.test   the five official cross-validation folds

Inputs are integer index columns, one row per rating, int64 (N, 2 + 3 + 19):

    0 user index, 1 item index        contiguous, from the training file; 0 = "unknown"
    2 age bucket, 3 gender, 4 occupation   from u.user (0 = unknown)
    5..23 the 19 genre flags of u.item (0/1)

and the target is the rating (N, 1) float32 in stars (task ``regress``). Ids are mapped to indices
1..n in sorted order of the ids that occur in the *training* file; a user or item seen only in the
test file gets index 0, which no training rating reaches: a model keeps that row at its prior
(zero), so its prediction falls back to the global mean plus the other side's bias. How many test
ratings that concerns is said in a warning and kept in ``source``.

Splits: ``data.folds=5 data.fold=i`` reads the official fold ``u{i+1}.base`` / ``u{i+1}.test``, so
``layerwise cv RECIPE --folds 5`` runs exactly GroupLens' five folds; without folds the run uses
fold u1. GroupLens made the folds with ``mku.sh``: u{i}.test holds lines 20000(i-1)+1 .. 20000 i of
u.data (sorted by user, item) and u{i}.base the rest. A fold file that is missing or damaged (the
two files do not hold exactly the ratings of u.data) is rebuilt from u.data by that rule, with a
warning, when u.data matches GroupLens' sha256; otherwise it is an error.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from layerwise.data.datasets import DataError, Dataset, DatasetInfo, register_dataset

__all__ = ["AGE_BUCKETS", "COLUMNS", "GENRES", "RatingsTable", "movielens_folder", "read_items",
           "read_ratings", "read_users", "U_DATA_SHA256"]

U_DATA_SHA256 = "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"  # GroupLens' u.data
GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
          "War", "Western")
# MovieLens 1M's age groups (its README), used here to bucket u.user's ages: 1..7, 0 = unknown
AGE_BUCKETS = (18, 25, 35, 45, 50, 56)  # lower edges of buckets 2..7
COLUMNS = ("user", "item", "age", "gender", "occupation") + tuple(f"genre_{g}" for g in GENRES)
FOLDS = 5
_FOLD_SIZE = 20_000  # mku.sh: test lines per fold


@dataclass
class RatingsTable:
    """Ratings as read from one file: ids as written (not yet indices), int64 (N,) each; rating
    (N,) float32 in stars; time (N,) int64 unix seconds; ``line`` (N,) the 1-based line numbers."""

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    time: np.ndarray

    def __len__(self) -> int:
        return len(self.user)

    def take(self, idx: np.ndarray) -> RatingsTable:
        return RatingsTable(self.user[idx], self.item[idx], self.rating[idx], self.time[idx])


def _bad(path: Path, line: int, text: str, why: str) -> DataError:
    shown = text if len(text) <= 80 else text[:77] + "..."
    return DataError(f"'{path}' line {line}: {why} (the line reads {shown!r}). A MovieLens ratings file holds "
                     f"one rating per line, user<TAB>item<TAB>rating<TAB>unix_time with integer ids and a "
                     f"rating of 1 to 5; fix or delete that line, or download the data again (data.download=true).")


def read_ratings(path: str | Path, sep: str = "\t", low: float = 1.0, high: float = 5.0) -> RatingsTable:
    """Read a GroupLens ratings file (``u.data``, ``u1.base``, ...): one ``user sep item sep rating
    sep time`` per line; blank lines are skipped. Raises DataError naming the file and line for a
    wrong field count, a non-integer id or time, or a rating outside [low, high]; and for a
    missing or empty file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"ratings file '{path}' does not exist. Point data.root at the folder that holds "
                        f"movielens/ml-100k/, or pass --data.download=true to fetch it from GroupLens.")
    text = path.read_bytes().decode("latin-1")  # ASCII in practice; latin-1 never fails to decode
    rows: list[tuple[int, int, float, int]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        f = line.split(sep)
        if len(f) != 4:
            raise _bad(path, n, line, f"{len(f)} fields where 4 were expected")
        try:
            u, i, t = int(f[0]), int(f[1]), int(f[3])
        except ValueError:
            raise _bad(path, n, line, "the user id, item id and time must be integers") from None
        try:
            r = float(f[2])
        except ValueError:
            raise _bad(path, n, line, f"the rating {f[2].strip()!r} is not a number") from None
        if not low <= r <= high:
            raise _bad(path, n, line, f"the rating {r:g} is outside {low:g}..{high:g}")
        if u < 1 or i < 1:
            raise _bad(path, n, line, "user and item ids start at 1")
        rows.append((u, i, r, t))
    if not rows:
        raise DataError(f"ratings file '{path}' holds no ratings. Download the data again (data.download=true).")
    a = np.array([(u, i, t) for u, i, _, t in rows], dtype=np.int64)  # (N, 3)
    return RatingsTable(a[:, 0], a[:, 1], np.array([r for _, _, r, _ in rows], np.float32), a[:, 2])


def read_items(path: str | Path) -> dict[int, tuple[str, int]]:
    """``u.item`` (Latin-1, ``|``-separated) -> {item id: (title, genre bitmask over GENRES)}.
    Raises DataError naming the line for a line without an integer id or its 19 genre flags."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"'{path}' does not exist; MovieLens 100K keeps the movie titles there. Download the "
                        f"data again (data.download=true).")
    out: dict[int, tuple[str, int]] = {}
    for n, line in enumerate(path.read_bytes().decode("latin-1").splitlines(), 1):
        if not line.strip():
            continue
        f = line.split("|")
        try:
            flags = [int(v) for v in f[-len(GENRES):]]
            if len(f) < 5 + len(GENRES) or any(v not in (0, 1) for v in flags):
                raise ValueError
            out[int(f[0])] = (f[1], sum(1 << k for k, v in enumerate(flags) if v))
        except ValueError:
            raise DataError(f"'{path}' line {n} is not 'id|title|release date|video release date|IMDb URL|"
                            f"{len(GENRES)} genre flags (0/1)'. Download the data again.") from None
    return out


def read_users(path: str | Path) -> dict[int, tuple[int, int, str]]:
    """``u.user`` -> {user id: (age bucket 1..7, gender 1 = F / 2 = M, occupation)}. Raises
    DataError naming the line for a malformed one."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"'{path}' does not exist; MovieLens 100K keeps the users' age, gender and occupation "
                        f"there. Download the data again (data.download=true).")
    out: dict[int, tuple[int, int, str]] = {}
    for n, line in enumerate(path.read_bytes().decode("latin-1").splitlines(), 1):
        if not line.strip():
            continue
        f = line.split("|")
        try:
            if len(f) != 5 or f[2] not in ("F", "M"):
                raise ValueError
            out[int(f[0])] = (1 + int(np.searchsorted(AGE_BUCKETS, int(f[1]), side="right")),
                              1 if f[2] == "F" else 2, f[3])
        except ValueError:
            raise DataError(f"'{path}' line {n} is not 'id|age|gender (F/M)|occupation|zip'. Download the "
                            f"data again.") from None
    return out


def movielens_folder(root: Path) -> Path:
    """The ml-100k folder under the data root (``<root>/movielens/ml-100k``), which must exist."""
    folder = Path(root) / "movielens" / "ml-100k"
    if not (folder / "u.data").is_file():
        raise DataError(f"dataset 'movielens' needs GroupLens' MovieLens 100K files in '{folder}' (u.data, u.item, "
                        f"u.user, u1.base ... u5.test), and u.data is not there. Set data.root (or LAYERWISE_DATA) "
                        f"to the folder holding movielens/ml-100k/, or pass --data.download=true to fetch "
                        f"ml-100k.zip from GroupLens (its licence allows research use; see its README).")
    return folder


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fold(folder: Path, fold: int, warnings: list[str]) -> tuple[RatingsTable, RatingsTable, str]:
    """(train, test, where they came from) of official fold ``fold`` (0-based): u{fold+1}.base/.test,
    or rebuilt from u.data by GroupLens' mku.sh rule when those files are missing or damaged."""
    base, test = folder / f"u{fold + 1}.base", folder / f"u{fold + 1}.test"
    everything = read_ratings(folder / "u.data")
    why = None
    if base.is_file() and test.is_file():
        tr, te = read_ratings(base), read_ratings(test)
        if len(tr) + len(te) == len(everything):
            return tr, te, f"{base.name}/{test.name}"
        why = (f"{base.name} holds {len(tr)} ratings and {test.name} {len(te)}, while together they should hold "
               f"the {len(everything)} of u.data (the files are truncated or damaged)")
    else:
        why = f"{base.name} or {test.name} is missing"
    if len(everything) < FOLDS * _FOLD_SIZE or _sha256(folder / "u.data") != U_DATA_SHA256:
        raise DataError(f"dataset 'movielens': {why}, and u.data is not GroupLens' file (its sha256 differs), so "
                        f"the fold cannot be rebuilt. Download the data again (data.download=true), or restore "
                        f"{base.name} and {test.name} in '{folder}'.")
    lo, hi = fold * _FOLD_SIZE, (fold + 1) * _FOLD_SIZE
    in_test = np.zeros(len(everything), bool)
    in_test[lo:hi] = True
    warnings.append(f"dataset 'movielens': {why}; fold {fold} was rebuilt from u.data (sha256 verified) by "
                    f"GroupLens' mku.sh rule (test = lines {lo + 1}..{hi} of u.data), which gives exactly the "
                    f"official fold. Download the data again to restore the files.")
    return (everything.take(np.flatnonzero(~in_test)), everything.take(np.flatnonzero(in_test)),
            f"u.data lines {lo + 1}..{hi} as test (mku.sh rule; {base.name}/{test.name} damaged)")


def index_ids(train_ids: np.ndarray) -> np.ndarray:
    """The sorted distinct ids of the training split: id ``ids[k]`` has index k + 1 (0 = unknown)."""
    return np.unique(train_ids)


def to_index(ids: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Ids (N,) -> indices (N,) int64 into ``known`` + 1; ids not in ``known`` -> 0 (unknown)."""
    pos = np.searchsorted(known, ids)
    pos = np.clip(pos, 0, max(len(known) - 1, 0))
    hit = (known[pos] == ids) if len(known) else np.zeros(len(ids), bool)
    return np.where(hit, pos + 1, 0).astype(np.int64)


def side_features(users: np.ndarray, items: np.ndarray, user_info: dict, item_info: dict,
                  occupations: list[str]) -> np.ndarray:
    """(N, 3 + 19) int64: age bucket, gender, occupation (1-based in ``occupations``; 0 = unknown),
    then the 19 genre flags of each rating's item (ids as written, not indices)."""
    occ = {o: k + 1 for k, o in enumerate(occupations)}
    ut = {u: (a, g, occ.get(o, 0)) for u, (a, g, o) in user_info.items()}
    uf = np.array([ut.get(int(u), (0, 0, 0)) for u in users], np.int64).reshape(-1, 3)
    masks = np.array([item_info.get(int(i), ("", 0))[1] for i in items], np.int64)
    gf = (masks[:, None] >> np.arange(len(GENRES))[None, :]) & 1  # (N, 19)
    return np.concatenate([uf, gf], 1)


def build_ratings_dataset(name: str, folder: Path, train: RatingsTable, test: RatingsTable, how: str,
                          warnings: list[str]) -> Dataset:
    """The Dataset of a (train, test) pair of MovieLens-layout ratings with the side features of
    ``folder``'s u.user / u.item (see the module docstring for the columns)."""
    items, users = read_items(folder / "u.item"), read_users(folder / "u.user")
    occupations = sorted({o for _, _, o in users.values()})
    uids, iids = index_ids(train.user), index_ids(train.item)

    def x_of(t: RatingsTable) -> torch.Tensor:
        x = np.concatenate([to_index(t.user, uids)[:, None], to_index(t.item, iids)[:, None],
                            side_features(t.user, t.item, users, items, occupations)], 1)
        return torch.from_numpy(x)  # (N, 24) int64

    x_train, x_test = x_of(train), x_of(test)
    unknown_u, unknown_i = int((x_test[:, 0] == 0).sum()), int((x_test[:, 1] == 0).sum())
    if unknown_u or unknown_i:
        warnings.append(f"dataset '{name}': {unknown_u} test ratings are by users and {unknown_i} of items that "
                        f"the training split does not hold; they use the reserved index 0 (the model's prior: "
                        f"the global mean plus the known side's bias) and are kept in the test metrics.")
    titles = [items.get(int(i), (f"item {int(i)}", 0))[0] for i in iids]
    extra = {"inputs": "indices",  # not normalized by the loaders (data.augment.Normalize)
             "ratings": {"user_ids": uids.tolist(), "item_ids": iids.tolist(), "titles": titles,
                         "columns": list(COLUMNS), "occupations": occupations,
                         "scale": [1, 5]},
             # what a recommender model needs to size its tables (Trainer passes keys it accepts)
             "model_args": {"num_users": len(uids) + 1, "num_items": len(iids) + 1,
                            "feature_sizes": (len(AGE_BUCKETS) + 2, 3, len(occupations) + 1) + (2,) * len(GENRES)}}
    info = DatasetInfo(name, (len(COLUMNS),), 1, ["rating"], 1.0, mean=[], std=[], task="regress", extra=extra)
    y_of = lambda t: torch.from_numpy(t.rating.astype(np.float32)[:, None])  # (N, 1) stars  # noqa: E731
    source = {"source": str(folder), "split": how, "train_ratings": len(train), "test_ratings": len(test),
              "users": len(uids), "items": len(iids), "unknown_test_users": unknown_u,
              "unknown_test_items": unknown_i}
    return Dataset(info, x_train, y_of(train), x_test, y_of(test), source, warnings=warnings)


@register_dataset("movielens")
def _movielens(root: Path, opts: Any) -> Dataset:
    """MovieLens 100K (Harper & Konstan 2015, "The MovieLens Datasets: History and Context"):
    943 users, 1,682 movies, 100,000 ratings of 1..5 stars; the five official folds."""
    folds, fold = int(getattr(opts, "folds", 0) or 0), int(getattr(opts, "fold", 0) or 0)
    if folds not in (0, FOLDS):
        from layerwise.config import ConfigError
        raise ConfigError(f"data.folds={folds}: MovieLens 100K comes with GroupLens' {FOLDS} official folds "
                          f"(u1.base/u1.test ... u5.base/u5.test), the split every published figure uses. Use "
                          f"data.folds={FOLDS} (layerwise cv RECIPE --folds {FOLDS}), or data.folds=0 for fold u1.")
    if not 0 <= fold < FOLDS:
        raise DataError(f"data.fold={fold} is not one of the {FOLDS} official folds; use 0 .. {FOLDS - 1}.")
    folder = movielens_folder(root)
    warnings: list[str] = []
    train, test, files = _fold(folder, fold, warnings)
    how = (f"fold {fold} of {FOLDS} official folds ({files})" if folds else f"official fold u1 ({files})")
    return build_ratings_dataset("movielens", folder, train, test, how, warnings)


@register_dataset("movielens-loo")
def _movielens_loo(root: Path, opts: Any) -> Dataset:
    """MovieLens 100K split for top-k evaluation with implicit feedback (He et al. 2017): each
    user's latest rating >= 4 (by timestamp) is the test split, every other rating of u.data
    trains. Train on the ratings (regression), then rank with layerwise.tasks.ranking."""
    from layerwise.tasks.ranking import leave_one_out

    if int(getattr(opts, "folds", 0) or 0):
        from layerwise.config import ConfigError
        raise ConfigError("dataset 'movielens-loo' holds out each user's latest positive rating; it has no folds. "
                          "Set data.folds=0 (or use dataset 'movielens' for the five official folds).")
    folder = movielens_folder(root)
    everything = read_ratings(folder / "u.data")
    tr, te = leave_one_out(everything.user, everything.item, everything.rating, everything.time)
    return build_ratings_dataset("movielens-loo", folder, everything.take(tr), everything.take(te),
                                 "leave-one-out: each user's latest rating >= 4 held out", [])

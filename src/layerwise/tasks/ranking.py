"""Top-k evaluation of a recommender with implicit feedback: leave-one-out, sampled negatives,
HR@k and NDCG@k (He et al. 2017, "Neural Collaborative Filtering", section 4.1).

For each user the latest positive interaction (rating >= ``threshold``, latest by timestamp) is
held out; ``n_neg`` items the user never rated are sampled (seeded); the model scores the 1 + n_neg
items and the held-out item's rank r (0-based, among them) gives

    HR@k   = 1[r < k]                      (hit ratio)
    NDCG@k = 1[r < k] / log2(r + 2)        (one relevant item: the ideal DCG is 1)

averaged over users. Ties are counted against the held-out item (a constant scorer gets rank
n_neg, never a hit), so a model cannot gain from ties.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["hit_ratio_ndcg", "leave_one_out", "sample_negatives"]


def hit_ratio_ndcg(pos_scores: torch.Tensor, neg_scores: torch.Tensor, k: int = 10) -> dict[str, float]:
    """HR@k and NDCG@k of held-out items among sampled negatives.

    Args:
        pos_scores: (U,) the model's score of each user's held-out item.
        neg_scores: (U, M) its scores of the user's M sampled negatives.
        k: the cut-off.
    Returns ``{"hr": float, "ndcg": float, "users": U}``. Raises ValueError for mismatched shapes,
    k < 1 or no users.
    """
    pos, neg = torch.as_tensor(pos_scores).double(), torch.as_tensor(neg_scores).double()
    if pos.dim() != 1 or neg.dim() != 2 or len(pos) != len(neg) or not len(pos):
        raise ValueError(f"pos_scores must be (U,) and neg_scores (U, M) with U >= 1; got {tuple(pos.shape)} and "
                         f"{tuple(neg.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rank = (neg >= pos[:, None]).sum(1)  # (U,) negatives scored at least as high: ties count against
    hit = rank < k
    ndcg = torch.where(hit, 1.0 / torch.log2(rank.double() + 2.0), torch.zeros_like(pos))
    return {"hr": float(hit.double().mean()), "ndcg": float(ndcg.mean()), "users": len(pos)}


def leave_one_out(user: np.ndarray, item: np.ndarray, rating: np.ndarray, time: np.ndarray,
                  threshold: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """(train row indices, held-out row indices): for every user with a rating >= ``threshold``,
    that user's latest such rating (largest time; among equal times the last row) is held out;
    all other rows train. Inputs are (N,) arrays of one ratings table. Users without a positive
    hold nothing out."""
    pos = np.flatnonzero(rating >= threshold)
    order = pos[np.lexsort((pos, time[pos], user[pos]))]  # by user, then time, then row
    last = order[np.r_[user[order][1:] != user[order][:-1], True]]  # the last row of each user
    keep = np.ones(len(user), bool)
    keep[last] = False
    return np.flatnonzero(keep), np.sort(last)


def sample_negatives(users: np.ndarray, rated: dict[int, set[int]], num_items: int, n_neg: int = 99,
                     seed: int = 0, first: int = 1) -> np.ndarray:
    """(U, n_neg) int64: for each user of ``users`` (U,), ``n_neg`` distinct items in
    [first, num_items) that ``rated[user]`` (every item the user rated, held-out one included)
    does not hold, drawn with numpy's generator seeded by ``seed`` (the same on every run).
    Raises ValueError when a user has rated too many items to leave n_neg."""
    rng = np.random.default_rng(seed)
    out = np.empty((len(users), n_neg), np.int64)
    for row, u in enumerate(users):
        seen = rated.get(int(u), set())
        free = num_items - first - len(seen)
        if free < n_neg:
            raise ValueError(f"user {u} rated all but {free} of the {num_items - first} items; {n_neg} negatives "
                             f"cannot be drawn")
        picked: list[int] = []
        chosen: set[int] = set()
        while len(picked) < n_neg:
            for c in rng.integers(first, num_items, 2 * n_neg).tolist():
                if c not in seen and c not in chosen:
                    chosen.add(c)
                    picked.append(c)
                    if len(picked) == n_neg:
                        break
        out[row] = picked
    return out

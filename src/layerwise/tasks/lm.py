"""lm: the next token at every position (causal language modelling)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from layerwise.tasks.base import Task


class LanguageModel(Task):
    """Cross-entropy of the next token (train.label_smoothing applies), summed over the batch's
    token positions.

    Outputs (B, T, V) logits for targets (B, T) token ids. Metrics per token: loss (nats),
    accuracy (the most likely next token is the right one), perplexity exp(loss), bits per
    token loss / ln 2, and bits per byte (and per character) of the held-out text: bits per token
    divided by the text's bytes (characters) per token, which the dataset measured on it
    (``info.extra["bytes_per_token"]``), so models with different tokenizers compare."""

    name = "lm"
    headline = "loss"
    higher_is_better = False

    def __init__(self, info: Any, options: Any = None, label_smoothing: float = 0.0):
        super().__init__(info, options)
        self.label_smoothing = float(label_smoothing)

    @property
    def stats_size(self) -> int:
        return 2  # loss, correct

    def count(self, y: torch.Tensor) -> int:
        return int(y.numel())

    def loss(self, out: torch.Tensor, y: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        logits, target = self._full(out).flatten(0, 1), y.flatten()  # (B*T, V), (B*T,)
        if keep is None:
            return F.cross_entropy(logits, target, reduction="sum", label_smoothing=self.label_smoothing)
        per = F.cross_entropy(logits, target, reduction="none", label_smoothing=self.label_smoothing).view_as(y)
        return (per * self._weights(keep, per)[:, None]).sum()

    def stats(self, out: torch.Tensor, y: torch.Tensor, loss_sum: torch.Tensor,
              keep: torch.Tensor | None = None) -> torch.Tensor:
        hit = (out.argmax(-1) == y).double()  # (B, T)
        if keep is not None:
            hit = hit * keep.to(hit.device, hit.dtype)[:, None]
        return torch.stack([loss_sum.detach().double(), hit.sum()])

    def metrics(self, sums: list[float], count: int) -> dict[str, Any]:
        if not count:
            return {"loss": None, "accuracy": None}
        loss = sums[0] / count
        bits = loss / math.log(2)
        out = {"loss": loss, "accuracy": sums[1] / count, "perplexity": math.exp(min(loss, 700.0)),
               "bits_per_token": bits}
        extra = self.info.extra
        if extra.get("bytes_per_token"):
            out["bits_per_byte"] = bits / extra["bytes_per_token"]
        if extra.get("chars_per_token"):
            out["bits_per_char"] = bits / extra["chars_per_token"]
        return out


def unigram_bits(train_ids: torch.Tensor, eval_ids: torch.Tensor, vocab_size: int) -> float:
    """Total bits of ``eval_ids`` (1-D ids) under a unigram model of ``train_ids``: each id's
    training frequency with add-one (Laplace) smoothing, p(i) = (n_i + 1) / (N + V), so an id
    never seen in training still has a cost. The baseline a language model must beat: divided by
    the evaluated text's bytes it is the unigram bits per byte."""
    counts = torch.bincount(train_ids.flatten().long(), minlength=vocab_size).double() + 1.0  # (V,)
    logp = torch.log2(counts / counts.sum())
    return float(-logp[eval_ids.flatten().long()].sum())

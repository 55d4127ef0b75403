"""Text classifiers over padded token ids (B, T), 0 = padding (layerwise.data.textclass).

    text-transformer   ids -> token + position embeddings -> bidirectional TransformerBlocks
                       (padding masked out of attention) -> final norm -> mean over the real
                       tokens -> fc: the encoder side of Vaswani et al. 2017, the same block as
                       `gpt` and `vit` (layerwise.nn.TransformerBlock), trained from scratch
    ngram-bag          the mean of word and hashed word-bigram embeddings -> dropout -> fc:
                       fastText's bag of tricks (Joulin et al. 2017), a fast, strong baseline for
                       sentence classification

Both take ``vocab_size``: the tokenizer's vocabulary plus the padding id (the Trainer passes the
data's when the recipe leaves it at 0).
"""

from __future__ import annotations


import torch
from torch import nn

from ..nn import TransformerBlock, make_transformer_norm, transformer_block_cost, transformer_norm_params
from .base import Model
from .registry import register_model
from .transformer import _check_trunk, _init_transformer

__all__ = ["NGramBag", "TextTransformer", "ngram_bag", "text_transformer"]


def _check_ids(name: str, x: torch.Tensor, max_len: int | None = None) -> None:
    if x.dim() != 2 or x.is_floating_point():
        raise ValueError(f"{name} expects padded token ids (B, T) of an integer dtype, got {x.dtype} {tuple(x.shape)}")
    if max_len is not None and x.shape[1] > max_len:
        raise ValueError(f"{name}: {x.shape[1]} tokens exceed max_len {max_len}; cut the input to {max_len}")


def _need_vocab(name: str, vocab_size: int) -> None:
    if vocab_size < 2:
        raise ValueError(f"{name} needs vocab_size >= 2 (the tokenizer's vocabulary plus the padding id 0); "
                         f"got {vocab_size}. A text-classes run fills it in from the data.")


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of h (B, T, d) over the positions where mask (B, T) is true -> (B, d)."""
    w = mask.to(h.dtype)[..., None]  # (B, T, 1)
    return (h * w).sum(1) / w.sum(1).clamp_min(1.0)


class TextTransformer(Model):
    """Bidirectional transformer encoder for sequence classification; see the module docstring.

    Input (B, T) ids, T <= max_len (in_shape[0]); output (B, num_classes). `forward_features`
    gives the normalized token states (B, T, d) with the padding mask kept in ``self._mask``
    for `forward_head`, which pools the real tokens."""

    def __init__(self, *, in_shape: tuple[int, ...], num_classes: int, vocab_size: int, n_layer: int, n_head: int,
                 n_embd: int, mlp: str, norm: str, rotary: bool, dropout: float, bias: bool = True) -> None:
        super().__init__()
        if len(in_shape) != 1:
            raise ValueError(f"text-transformer expects in_shape (max_len,), got {tuple(in_shape)!r}")
        _check_trunk(n_layer, n_head, n_embd, mlp, norm, dropout)
        _need_vocab("text-transformer", vocab_size)
        self.max_len, self.vocab_size = in_shape[0], vocab_size
        self.n_layer, self.n_head, self.n_embd = n_layer, n_head, n_embd
        self.mlp, self.norm, self.rotary, self.bias = mlp, norm, rotary, bias
        self.num_classes, self.num_features = num_classes, n_embd
        self.wte = nn.Embedding(vocab_size, n_embd, padding_idx=0)
        self.wpe = None if rotary else nn.Embedding(self.max_len, n_embd)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.blocks = nn.ModuleList(
            TransformerBlock(n_embd, n_head, causal=False, rotary=rotary, mlp=mlp, norm=norm, dropout=dropout,
                             bias=bias)
            for _ in range(n_layer))
        self.ln_f = make_transformer_norm(norm, n_embd, bias=bias)
        self.fc = nn.Linear(n_embd, num_classes) if num_classes else nn.Identity()
        _init_transformer(self, n_layer)
        with torch.no_grad():
            self.wte.weight[0].zero_()  # the padding embedding is never used (masked), keep it 0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        _check_ids("text-transformer", x, self.max_len)
        mask = x != 0  # (B, T) the real tokens
        h = self.wte(x)  # (B, T, d)
        if self.wpe is not None:
            h = h + self.wpe(torch.arange(x.shape[1], device=x.device))
        h = self.drop(h)
        for blk in self.blocks:
            h = blk(h, mask)  # (B, T, d)
        self._mask = mask
        return self.ln_f(h)

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        mask = getattr(self, "_mask", None)
        pooled = feats.mean(1) if mask is None or mask.shape != feats.shape[:2] else masked_mean(feats, mask)
        return pooled if pre_logits else self.fc(pooled)  # (B, d) or (B, num_classes)

    def _cost(self) -> tuple[int, int]:
        d, T = self.n_embd, self.max_len
        p_blk, f_blk = transformer_block_cost(d, T, mlp=self.mlp, norm=self.norm, bias=self.bias)
        params = self.vocab_size * d + (0 if self.rotary else T * d) + self.n_layer * p_blk
        params += transformer_norm_params(self.norm, d, bias=self.bias) + (d + 1) * self.num_classes
        return params, self.n_layer * f_blk + 2 * d * self.num_classes

    def num_params(self) -> int:
        return self._cost()[0]

    def flops_per_example(self) -> int:
        """Forward FLOPs of one sequence of max_len tokens: every block's matmuls and attention,
        and the head; lookups and pooling count 0. Padding makes real batches cheaper."""
        return self._cost()[1]


class NGramBag(Model):
    """A bag of word n-grams: each of a sequence's words and (hashed) word bigrams has a learned
    vector; the bag is their sum (or mean), then dropout and fc. With ``n_embd`` 2 and sum
    pooling over binary features it is a logistic regression on the n-gram indicators; wider it
    is fastText (Joulin et al. 2017). ``nb`` scales each n-gram's vector by its naive-Bayes
    log-count ratio r = log((p / |p|_1) / (q / |q|_1)) from the training split (Wang & Manning
    2012's NBSVM features; two classes), set by :meth:`init_from_data`. The bag's vectors are a
    plain 2-D parameter, so the optimizer's weight decay regularizes them (an L2 penalty)."""

    def __init__(self, *, in_shape: tuple[int, ...], num_classes: int, vocab_size: int, n_embd: int, buckets: int,
                 ngrams: int, pool: str, binary: bool, nb: bool, dropout: float) -> None:
        super().__init__()
        if len(in_shape) != 1:
            raise ValueError(f"ngram-bag expects in_shape (max_len,), got {tuple(in_shape)!r}")
        _need_vocab("ngram-bag", vocab_size)
        if ngrams not in (1, 2) or buckets < (1 if ngrams == 2 else 0) or n_embd < 1:
            raise ValueError(f"ngram-bag needs ngrams 1 or 2, buckets >= 1 for bigrams and n_embd >= 1; got "
                             f"ngrams={ngrams}, buckets={buckets}, n_embd={n_embd}")
        if pool not in ("sum", "mean"):
            raise ValueError(f"ngram-bag pool must be sum or mean, got {pool!r}")
        if nb and num_classes != 2:
            raise ValueError(f"ngram-bag nb=True weighs n-grams by their naive-Bayes log-count ratio between two "
                             f"classes; this task has {num_classes} outputs. Set model.nb=false.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.max_len, self.vocab_size, self.n_embd = in_shape[0], vocab_size, n_embd
        self.buckets, self.ngrams = buckets if ngrams == 2 else 0, ngrams
        self.pool, self.binary = pool, binary
        self.num_classes, self.num_features = num_classes, n_embd
        rows = vocab_size + self.buckets  # row 0: padding, always zero
        self.bag = nn.Parameter(torch.randn(rows, n_embd) * 0.01)
        with torch.no_grad():
            self.bag[0].zero_()
        # naive-Bayes weights, one per row (1 without nb): data, not learned; saved with the model
        self.register_buffer("nb_ratio", torch.ones(rows), persistent=nb)
        self.nb = nb
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(n_embd, num_classes) if num_classes else nn.Identity()
        self.blocks = nn.ModuleList()  # no trunk blocks: the bag is the whole body

    def ngram_ids(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) word ids -> (B, T') rows of the bag: the words, then the bigrams hashed into
        [vocab_size, vocab_size + buckets); 0 where a word is padding. With ``binary`` each row
        appears once per sequence (repeats become 0)."""
        ids = x
        if self.ngrams == 2 and x.shape[1] > 1:
            a, b = x[:, :-1], x[:, 1:]
            h = (a * 1_000_003 + b) % self.buckets + self.vocab_size  # a multiplicative hash of the pair
            ids = torch.cat([x, torch.where((a != 0) & (b != 0), h, torch.zeros_like(h))], 1)
        if self.binary:
            ids = ids.sort(1).values
            repeat = torch.cat([torch.zeros_like(ids[:, :1], dtype=torch.bool), ids[:, 1:] == ids[:, :-1]], 1)
            ids = ids.masked_fill(repeat, 0)
        return ids

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, targets: torch.Tensor | None = None, alpha: float = 1.0) -> None:
        """With ``nb``: the naive-Bayes log-count ratio of every bag row from the training
        sequences x (N, T) and their classes (N,) (alpha: add-alpha smoothing). A no-op otherwise."""
        if not self.nb or targets is None:
            return
        ids = self.ngram_ids(x)  # (N, T')
        rows = self.bag.shape[0]
        counts = torch.full((2, rows), alpha, dtype=torch.float64, device=ids.device)
        for c in (0, 1):
            sel = ids[targets == c]
            counts[c] += torch.bincount(sel.flatten(), minlength=rows).double()
        counts[:, 0] = alpha  # padding
        p, q = counts[1] / counts[1].sum(), counts[0] / counts[0].sum()
        self.nb_ratio.copy_((p / q).log().float())
        self.nb_ratio[0] = 0.0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        _check_ids("ngram-bag", x)
        ids = self.ngram_ids(x)  # (B, T')
        vec = self.bag[ids] * self.nb_ratio[ids][..., None]  # (B, T', d)
        mask = (ids != 0).to(vec.dtype)[..., None]
        h = (vec * mask).sum(1)  # (B, d)
        return h / mask.sum(1).clamp_min(1.0) if self.pool == "mean" else h

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return feats if pre_logits else self.fc(self.drop(feats))

    def num_params(self) -> int:
        return (self.vocab_size + self.buckets) * self.n_embd + (self.n_embd + 1) * self.num_classes

    def flops_per_example(self) -> int:
        """The head's matmul; the bag is lookups and a sum (no matmul)."""
        return 2 * self.n_embd * self.num_classes


@register_model("text-transformer")
def text_transformer(*, in_shape: tuple[int, ...], num_classes: int, vocab_size: int = 0, n_layer: int = 2,
                     n_head: int = 4, n_embd: int = 128, mlp: str = "gelu", norm: str = "layernorm",
                     rotary: bool = False, dropout: float = 0.1, bias: bool = True) -> TextTransformer:
    """Bidirectional transformer encoder over padded token ids (B, max_len), mean-pooled.

    Args:
        vocab_size: token ids are < vocab_size; 0 takes the data's (tokenizer vocabulary + padding).
        n_layer, n_head, n_embd, mlp, norm, rotary, dropout: as for `vit` (layerwise.models.transformer).
        bias: biases in the blocks' Linears and LayerNorms, as `gpt`'s (False to take the body of a
            bias-free GPT through model.init_from; the classifier `fc` keeps its bias).
    """
    return TextTransformer(in_shape=in_shape, num_classes=num_classes, vocab_size=vocab_size, n_layer=n_layer,
                           n_head=n_head, n_embd=n_embd, mlp=mlp, norm=norm, rotary=rotary, dropout=dropout,
                           bias=bias)


@register_model("ngram-bag")
def ngram_bag(*, in_shape: tuple[int, ...], num_classes: int, vocab_size: int = 0, n_embd: int = 16,
              buckets: int = 262_144, ngrams: int = 2, pool: str = "sum", binary: bool = True, nb: bool = False,
              dropout: float = 0.0) -> NGramBag:
    """A bag of word and hashed word-bigram vectors, then a linear classifier (fastText; with
    n_embd 2, sum pooling and binary features, a logistic regression on n-gram indicators).

    Args:
        vocab_size: word ids are < vocab_size; 0 takes the data's (tokenizer vocabulary + padding).
        n_embd: vector size. buckets: rows of the hashed bigram table. ngrams: 1 (words) or 2
            (words and bigrams). pool: sum or mean of the vectors. binary: count each n-gram once
            per sequence. nb: scale each n-gram by its naive-Bayes log-count ratio from the training
            split (two classes; Wang & Manning 2012). dropout: on the bag.
    """
    return NGramBag(in_shape=in_shape, num_classes=num_classes, vocab_size=vocab_size, n_embd=n_embd, buckets=buckets,
                    ngrams=ngrams, pool=pool, binary=binary, nb=nb, dropout=dropout)

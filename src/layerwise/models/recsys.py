"""Recommenders over (user, item) index pairs: biased matrix factorization, a neural two-tower model, an autoencoder.

Inputs are the rows of a ratings source (layerwise.data.ratings), int64 (B, C): column 0 the user
index, 1 the item index (0 = a user or item the training split did not hold), then categorical side
features (age bucket, gender, occupation, the genre flags). The output is (B, 1): the predicted
(standardized) rating, which the regress task maps back to stars.

    mf     r_hat = mu + b_u + b_i + p_u . q_i                  (Koren, Bell & Volinsky 2009)
    neumf  r_hat = mu + b_u + b_i + h(GMF(p_u, q_i) ++ MLP(u_tower, i_tower))   (He et al. 2017)
    autorec r_hat = V_u . sigmoid(W r_i + b) + c_u, r_i item i's training ratings  (Sedhain et al. 2015)

Regularization: the classical L2 penalty of matrix factorization is per rating,
lambda * (|p_u|^2 + |q_i|^2 + b_u^2 + b_i^2) for every (u, i) in the batch (Koren et al. 2009,
eq. 5): frequent users are pulled toward zero as often as they appear. Optimizer weight decay
cannot express that (it shrinks every row every step, and layerwise's param groups never decay
embeddings), so the models apply it to the rows a batch looks up, in backward: :class:`_L2InBackward`
adds ``l2 * row / B`` to each looked-up row's gradient, exactly the gradient of
``l2 * mean_b(|row_b|^2) / 2`` added to a per-example mean loss. Index 0 ("unknown") is
``padding_idx``: zero and never updated, so an unseen user or item predicts from the biases of the
other side (the "prior").

In an ensemble (``model.ensemble=M``) each member's data term reaches it scaled by 1/M
(Task.member_loss is the mean of the members' losses), so :class:`~layerwise.models.ensemble.Ensemble`
sets each member's ``loss_share`` to 1/M and the in-backward penalty is scaled by it: a member
then trains exactly as it would alone, up to a common factor that Adam removes. Without that, the
penalty would weigh M times more in each member (measured: ensemble=5 of the recipe's mf fell from
0.922 to 0.955 test RMSE on fold u1, the biases-only level).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Model
from .registry import register_model

__all__ = ["AutoRec", "MatrixFactorization", "NeuMF", "autorec", "mf", "neumf"]


class _L2InBackward(torch.autograd.Function):
    """Identity in forward; backward adds ``c * x``: the gradient of ``c |x|^2 / 2``, an L2
    penalty applied where the tensor is used (per looked-up embedding row, or a whole weight)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, c: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.c = c
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (x,) = ctx.saved_tensors
        return g + ctx.c * x, None


def _lookup(table: nn.Embedding, idx: torch.Tensor, l2: float) -> torch.Tensor:
    out = table(idx)  # (B, D)
    # the per-example penalty of the rows x (B, D): l2 * x / B, B = rows in the batch
    return _L2InBackward.apply(out, l2 / max(len(out), 1)) if (l2 and torch.is_grad_enabled()) else out


def _check_ids(name: str, x: torch.Tensor, num_users: int, num_items: int, min_cols: int = 2) -> None:
    if x.is_floating_point() or x.dim() != 2 or x.shape[1] < min_cols:
        raise TypeError(f"{name} takes rows of integer indices (B, >= {min_cols}): user, item, ... from a ratings "
                        f"dataset such as movielens; got {x.dtype} {tuple(x.shape)}")
    if num_users < 2 or num_items < 2:
        raise ValueError(f"{name} needs num_users and num_items (the ratings dataset sets them); got "
                         f"{num_users} and {num_items}")


class MatrixFactorization(Model):
    """Biased matrix factorization; see the module docstring and :func:`mf`.

    forward: x (B, >= 2) int64 -> (B, 1) = mu + b_u + b_i + p_u . q_i, with u = x[:, 0], i = x[:, 1].
    """

    def __init__(self, *, num_users: int, num_items: int, dim: int, init_std: float, l2: float,
                 bias_l2: float) -> None:
        super().__init__()
        if dim < 1 or init_std < 0 or l2 < 0 or bias_l2 < 0:
            raise ValueError(f"mf needs dim >= 1 and init_std, l2, bias_l2 >= 0; got {dim}, {init_std}, {l2}, "
                             f"{bias_l2}")
        self.num_users, self.num_items, self.dim = num_users, num_items, dim
        self.l2, self.bias_l2 = float(l2), float(bias_l2)
        self.loss_share = 1.0  # this model's weight in the training loss; 1/M in an ensemble of M
        nu, ni = max(num_users, 1), max(num_items, 1)
        self.user_factors = nn.Embedding(nu, dim, padding_idx=0)  # P (U, D)
        self.item_factors = nn.Embedding(ni, dim, padding_idx=0)  # Q (I, D)
        self.user_bias = nn.Embedding(nu, 1, padding_idx=0)  # b_u (U, 1)
        self.item_bias = nn.Embedding(ni, 1, padding_idx=0)  # b_i (I, 1)
        self.global_bias = nn.Parameter(torch.zeros(1))  # mu (0 for standardized targets, learned anyway)
        with torch.no_grad():
            for t in (self.user_factors, self.item_factors):
                t.weight.normal_(0.0, init_std)
                t.weight[0].zero_()
            self.user_bias.weight.zero_()
            self.item_bias.weight.zero_()
        self.num_classes, self.num_features = 1, 1
        self.fc = nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        _check_ids("mf", x, self.num_users, self.num_items)
        u, i = x[:, 0], x[:, 1]  # (B,), (B,)
        l2, bias_l2 = self.l2 * self.loss_share, self.bias_l2 * self.loss_share
        p, q = _lookup(self.user_factors, u, l2), _lookup(self.item_factors, i, l2)  # (B, D)
        b = _lookup(self.user_bias, u, bias_l2) + _lookup(self.item_bias, i, bias_l2)  # (B, 1)
        return self.global_bias + b + (p * q).sum(1, keepdim=True)  # (B, 1)

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return feats

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_example(self) -> int:
        return 2 * self.dim + 3  # the dot product and three adds


@register_model("mf")
def mf(*, in_shape: tuple[int, ...], num_classes: int, num_users: int = 0, num_items: int = 0, dim: int = 64,
       init_std: float = 0.01, l2: float = 0.05, bias_l2: float = 0.0) -> MatrixFactorization:
    """Biased matrix factorization, r_hat = mu + b_u + b_i + p_u . q_i (Koren, Bell & Volinsky 2009,
    "Matrix Factorization Techniques for Recommender Systems", eq. 4): the two-tower form with one
    embedding per tower. Regression output (num_classes must be 1).

    Args:
        num_users, num_items: table sizes including the reserved index 0; set from the ratings
            dataset (``info.extra["model_args"]``) unless given.
        dim: factors per user and item (D).
        init_std: std of the normal initialization of P and Q (biases start at 0).
        l2: per-rating L2 penalty on p_u and q_i (lambda of eq. 5, in the units of the mean
            squared error of standardized ratings).
        bias_l2: the same for b_u and b_i.
    """
    if num_classes != 1:
        raise ValueError(f"mf predicts one rating per (user, item) pair (task regress); got num_classes="
                         f"{num_classes}: it is a recommender for a ratings dataset (data.name=movielens); for classes "
                         f"choose a classifier (see `layerwise models`)")
    return MatrixFactorization(num_users=num_users, num_items=num_items, dim=dim, init_std=init_std, l2=l2,
                               bias_l2=bias_l2)


class NeuMF(Model):
    """Neural matrix factorization with side features; see the module docstring and :func:`neumf`.

    forward: x (B, 2 + F) int64 -> (B, 1). Each tower embeds its id and its side features
    (user: age bucket, gender, occupation; item: genres, summed over the flags that are on); the
    GMF branch multiplies the id factors p_u * q_i (B, D); the MLP branch reads the concatenated
    towers (B, 2E) through ``depth`` ReLU layers; a linear head on their concatenation adds to
    mu + b_u + b_i.
    """

    def __init__(self, *, num_users: int, num_items: int, feature_sizes: tuple[int, ...], dim: int, width: int,
                 depth: int, dropout: float, init_std: float, l2: float, n_user_features: int) -> None:
        super().__init__()
        self.num_users, self.num_items, self.dim, self.l2 = num_users, num_items, dim, float(l2)
        self.n_user_features, self.feature_sizes = n_user_features, tuple(feature_sizes)
        self.loss_share = 1.0  # as MatrixFactorization's
        nu, ni = max(num_users, 1), max(num_items, 1)
        self.user_factors = nn.Embedding(nu, dim, padding_idx=0)  # GMF P (U, D)
        self.item_factors = nn.Embedding(ni, dim, padding_idx=0)  # GMF Q (I, D)
        self.user_tower = nn.Embedding(nu, dim, padding_idx=0)  # MLP-side ids (U, D)
        self.item_tower = nn.Embedding(ni, dim, padding_idx=0)
        # one table per side feature; genres (flags) get a table of 2 rows each, row 1 = "has it"
        self.features = nn.ModuleList(nn.Embedding(max(n, 1), dim, padding_idx=0) for n in self.feature_sizes)
        self.user_bias = nn.Embedding(nu, 1, padding_idx=0)
        self.item_bias = nn.Embedding(ni, 1, padding_idx=0)
        self.global_bias = nn.Parameter(torch.zeros(1))
        layers: list[nn.Module] = []
        d_in = 2 * dim
        for _ in range(depth):
            layers += [nn.Linear(d_in, width), nn.ReLU(), nn.Dropout(dropout)]
            d_in = width
        self.blocks = nn.ModuleList(layers)
        self.num_features = dim + d_in
        self.num_classes = 1
        self.fc = nn.Linear(self.num_features, 1)
        with torch.no_grad():
            for t in [self.user_factors, self.item_factors, self.user_tower, self.item_tower, *self.features]:
                t.weight.normal_(0.0, init_std)
                t.weight[0].zero_()
            self.user_bias.weight.zero_()
            self.item_bias.weight.zero_()
            self.fc.weight.zero_()  # starts as the biases-only model
            self.fc.bias.zero_()
            self.fc.weight[0, :dim].fill_(1.0)  # ... plus the plain dot product p_u . q_i

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        _check_ids("neumf", x, self.num_users, self.num_items, 2 + len(self.feature_sizes))
        u, i, l2 = x[:, 0], x[:, 1], self.l2 * self.loss_share
        gmf = _lookup(self.user_factors, u, l2) * _lookup(self.item_factors, i, l2)  # (B, D)
        side = [_lookup(t, x[:, 2 + k], l2) for k, t in enumerate(self.features)]  # F x (B, D)
        k = self.n_user_features
        hu = _lookup(self.user_tower, u, l2) + sum(side[:k])  # (B, D) user tower
        hi = _lookup(self.item_tower, i, l2) + sum(side[k:])  # (B, D) item tower (genre flags summed)
        h = torch.cat([hu, hi], 1)  # (B, 2D)
        for block in self.blocks:
            h = block(h)  # (B, width)
        self._bias = self.global_bias + self.user_bias(u) + self.item_bias(i)  # (B, 1)
        return torch.cat([gmf, h], 1)  # (B, D + width)

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return feats if pre_logits else self.fc(feats) + self._bias  # (B, 1)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_example(self) -> int:
        return 2 * sum(m.in_features * m.out_features for m in self.blocks if isinstance(m, nn.Linear)) \
            + 2 * self.num_features + 3 * self.dim


@register_model("neumf")
def neumf(*, in_shape: tuple[int, ...], num_classes: int, num_users: int = 0, num_items: int = 0,
          feature_sizes: tuple[int, ...] = (), dim: int = 32, width: int = 64, depth: int = 2,
          dropout: float = 0.0, init_std: float = 0.01, l2: float = 0.05,
          n_user_features: int = 3) -> NeuMF:
    """NeuMF (He et al. 2017, "Neural Collaborative Filtering", WWW): a GMF branch (p_u * q_i) and
    an MLP branch over a user tower and an item tower, fused by a linear head, here for explicit
    ratings and with side features in each tower (u.user's age, gender, occupation; u.item's
    genres), plus the biases of :func:`mf`. The head starts as the plain dot product, so training
    begins at biased MF and the MLP learns what MF leaves.

    Args:
        num_users, num_items, feature_sizes: table sizes (index 0 reserved); from the dataset.
        dim: embedding size D of every table.
        width, depth: the MLP branch's hidden units and layers.
        dropout: after each MLP layer.
        init_std: normal init of the embeddings.
        l2: per-rating L2 penalty on the looked-up embedding rows (as :func:`mf`'s).
        n_user_features: how many of the side-feature columns belong to the user tower (the first).
    """
    if num_classes != 1:
        raise ValueError(f"neumf predicts one rating per (user, item) pair (task regress); got num_classes="
                         f"{num_classes}: it is a recommender for a ratings dataset (data.name=movielens); for classes "
                         f"choose a classifier (see `layerwise models`)")
    return NeuMF(num_users=num_users, num_items=num_items, feature_sizes=feature_sizes, dim=dim, width=width,
                 depth=depth, dropout=dropout, init_std=init_std, l2=l2, n_user_features=n_user_features)


class AutoRec(Model):
    """Item-based autoencoder (I-AutoRec); see :func:`autorec`.

    forward: x (B, >= 2) int64 -> (B, 1). Item i's vector of training ratings r_i (U,) (stars,
    0 = not rated; buffer ``ratings`` (I, U) set by :meth:`init_from_data`) is encoded,
    h = sigmoid(W r_i + b) (B, H), and decoded at user u only: out = mu + V_u . h + c_u. An
    unknown user or item (index 0) predicts mu, the training mean.
    """

    def __init__(self, *, num_users: int, num_items: int, hidden: int, l2: float) -> None:
        super().__init__()
        if hidden < 1 or l2 < 0:
            raise ValueError(f"autorec needs hidden >= 1 and l2 >= 0; got {hidden}, {l2}")
        self.num_users, self.num_items, self.hidden, self.l2 = num_users, num_items, hidden, float(l2)
        nu, ni = max(num_users, 1), max(num_items, 1)
        self.encoder = nn.Linear(nu, hidden)  # W (H, U), b (H,)
        self.decoder = nn.Parameter(torch.empty(nu, hidden))  # V (U, H): user u's output row
        self.decoder_bias = nn.Parameter(torch.zeros(nu))  # c (U,)
        self.global_bias = nn.Parameter(torch.zeros(1))  # mu
        nn.init.uniform_(self.decoder, -hidden ** -0.5, hidden ** -0.5)  # nn.Linear(H, U)'s init
        self.register_buffer("ratings", torch.zeros(ni, nu))  # R (I, U) stars, 0 = unrated
        self.train_ratings = 1  # N, the training ratings: lambda / N per rating (set from the data)
        self.loss_share = 1.0  # this model's weight in the training loss; 1/M in an ensemble of M
        self.num_classes, self.num_features = 1, hidden
        self.fc = nn.Identity()

    def init_from_data(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> None:
        """R from the training rows x (N, >= 2) and their ratings ``targets`` (N, 1) in stars."""
        _check_ids("autorec", x, self.num_users, self.num_items)
        if targets is None or len(targets) != len(x):
            raise ValueError("autorec builds each item's rating vector from the training ratings: init_from_data "
                             "needs targets (N, 1) in stars beside the rows x (N, >= 2)")
        u, i = x[:, 0].long().cpu(), x[:, 1].long().cpu()
        ok = (u > 0) & (i > 0) & (u < self.num_users) & (i < self.num_items)
        r = torch.zeros_like(self.ratings, device="cpu")
        r[i[ok], u[ok]] = targets.reshape(-1).float().cpu()[ok]
        self.ratings.copy_(r)
        self.train_ratings = max(int(ok.sum()), 1)
        with torch.no_grad():  # start the output at the mean rating of the training split (standardized: ~0)
            self.global_bias.zero_()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        _check_ids("autorec", x, self.num_users, self.num_items)
        u, i = x[:, 0], x[:, 1]  # (B,), (B,)
        c = self.l2 * self.loss_share / self.train_ratings
        w, v = self.encoder.weight, self.decoder
        if c and torch.is_grad_enabled():
            w, v = _L2InBackward.apply(w, c), _L2InBackward.apply(v, c)
        items, where = torch.unique(i, return_inverse=True)  # encode each distinct item once
        h = torch.sigmoid(nn.functional.linear(self.ratings[items], w, self.encoder.bias))[where]  # (B, H)
        out = (h * v[u]).sum(1) + self.decoder_bias[u]  # (B,)
        known = ((u > 0) & (i > 0)).to(out.dtype)
        return self.global_bias + (known * out)[:, None]  # (B, 1)

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return feats

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_example(self) -> int:
        return 2 * self.hidden * (self.num_users + 1)  # encoder matvec and the decoder row


@register_model("autorec")
def autorec(*, in_shape: tuple[int, ...], num_classes: int, num_users: int = 0, num_items: int = 0,
            hidden: int = 500, l2: float = 100.0) -> AutoRec:
    """I-AutoRec (Sedhain, Menon, Sanner & Xie 2015, "AutoRec: Autoencoders Meet Collaborative
    Filtering", WWW): each item's vector of observed ratings r_i (one entry per user) through a
    one-hidden-layer autoencoder, h(r_i) = V sigmoid(W r_i + b) + c, trained on the observed
    entries only; the rating of (u, i) is entry u of h(r_i). Trained here one rating at a time:
    a batch of (u, i) rows encodes each item's row and decodes only column u, which is the
    paper's masked loss sampled by rating. Regression output (num_classes must be 1); the
    encoder reads stars, the output is in the task's (standardized) units.

    Args:
        num_users, num_items: table sizes including the reserved index 0; from the dataset.
        hidden: H, the hidden units (the paper's 500).
        l2: lambda of the paper's lambda / 2 (|W|^2 + |V|^2) added to the sum of squared errors
            over the training ratings; applied per rating as lambda / N (N training ratings).
    """
    if num_classes != 1:
        raise ValueError(f"autorec predicts one rating per (user, item) pair (task regress); got num_classes="
                         f"{num_classes}: it is a recommender for a ratings dataset (data.name=movielens); for classes "
                         f"choose a classifier (see `layerwise models`)")
    return AutoRec(num_users=num_users, num_items=num_items, hidden=hidden, l2=l2)

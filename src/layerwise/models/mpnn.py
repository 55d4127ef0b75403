"""Directed message passing neural network (D-MPNN) for molecular property prediction.

Yang et al. 2019, "Analyzing Learned Molecular Representations for Property Prediction" (J.
Chem. Inf. Model. 59, Chemprop), a variant of Gilmer et al. 2017's MPNN whose hidden states
live on *directed bonds*, so a message never returns along the bond it came by. For directed
bond v->w with atom features x_v and bond features e_vw:

    h0_vw      = relu(W_i [x_v ; e_vw])                                  (E, H)
    m_vw       = sum_{k in N(v), k != w} h_kv = (sum_{k in N(v)} h_kv) - h_wv
    h_vw       <- relu(h0_vw + W_m m_vw)                  depth - 1 times
    m_v        = sum_{k in N(v)} h_kv                                    (N_atoms, H)
    h_v        = relu(W_o [x_v ; m_v])                                   (N_atoms, H)
    h_mol      = sum or mean of h_v over the molecule's atoms            (B, H)
    y          = FFN([h_mol ; f_mol])                                    (B, num_classes)

``f_mol`` are optional molecule-level features (standardized RDKit descriptors; Chemprop's
``--features_generator rdkit_2d``). Sums over neighbours are ``index_add_`` over the edge list
(no PyTorch Geometric). The input is a batch object with ``atom_x`` (N_atoms, F_a), ``bond_x``
(E, F_b), ``edge_index`` (2, E), ``rev_index`` (E,), ``graph_index`` (N_atoms,), ``features``
(B, D) and ``num_graphs`` (layerwise.data.molecules.GraphBatch; the model does not import it).
``in_shape`` is (F_a, F_b) or (F_a, F_b, D).
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn import ACTIVATIONS, get_activation, unknown_choice_error
from .base import Model
from .registry import register_model

__all__ = ["MPNN", "mpnn", "mpnn_cost"]

READOUTS = ("mean", "sum")
# the molecule analytic FLOPs are counted for (FLOPs grow with size): ESOL's median is 12 heavy
# atoms; 13 atoms and 14 bonds (28 directed) is a typical small drug-like molecule
REF_ATOMS, REF_EDGES = 13, 28


def mpnn_cost(f_atom: int, f_bond: int, f_mol: int, num_classes: int, *, hidden: int, depth: int, ffn_depth: int,
              ffn_width: int, n_atoms: int = REF_ATOMS, n_edges: int = REF_EDGES) -> tuple[int, int]:
    """(parameters, forward FLOPs for one molecule of ``n_atoms`` atoms and ``n_edges`` directed
    bonds). W_i and W_m have no bias (Chemprop's), W_o and the FFN layers do; FLOPs count 2 per
    multiply-add of the linear layers (the neighbour sums are adds and are not counted)."""
    p_i, p_m, p_o = (f_atom + f_bond) * hidden, hidden * hidden, (f_atom + hidden) * hidden + hidden
    params, flops = p_i + p_m + p_o, 2 * (n_edges * p_i + (depth - 1) * n_edges * p_m + n_atoms * (p_o - hidden))
    d_in = hidden + f_mol
    for _ in range(ffn_depth):
        params, flops, d_in = params + d_in * ffn_width + ffn_width, flops + 2 * d_in * ffn_width, ffn_width
    return params + (d_in + 1) * num_classes, flops + 2 * d_in * num_classes


class MPNN(Model):
    """D-MPNN encoder + FFN head; see the module docstring and `mpnn` for the arguments.

    `forward_features(batch)` -> (B, hidden + D) molecule vectors (the readout, with the
    molecule features appended); `forward_head` -> (B, num_classes) through the FFN."""

    def __init__(self, *, in_shape: tuple[int, ...], num_classes: int, hidden: int, depth: int, dropout: float,
                 readout: str, ffn_depth: int, ffn_width: int, activation: str) -> None:
        super().__init__()
        if hidden < 1 or depth < 1 or ffn_depth < 0 or ffn_width < 1:
            raise ValueError(f"mpnn needs hidden >= 1, depth >= 1, ffn_depth >= 0 and ffn_width >= 1; got "
                             f"hidden={hidden}, depth={depth}, ffn_depth={ffn_depth}, ffn_width={ffn_width}")
        if readout not in READOUTS:
            raise unknown_choice_error("readout", readout, READOUTS)
        if activation not in ACTIVATIONS:
            raise unknown_choice_error("activation", activation, ACTIVATIONS)
        # (F_a, F_b[, D]); any other shape still builds, and forward then says what it needs
        self.in_shape = tuple(in_shape)
        self.f_atom = in_shape[0]
        self.f_bond = in_shape[1] if len(in_shape) > 1 else 0
        self.f_mol = in_shape[2] if len(in_shape) > 2 else 0
        self.hidden, self.depth, self.readout = hidden, depth, readout
        self.ffn_depth, self.ffn_width, self.num_classes = ffn_depth, ffn_width, num_classes
        self.W_i = nn.Linear(self.f_atom + self.f_bond, hidden, bias=False)
        self.W_m = nn.Linear(hidden, hidden, bias=False)
        self.W_o = nn.Linear(self.f_atom + hidden, hidden)
        self.act = get_activation(activation)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        blocks: list[nn.Module] = []
        d_in = hidden + self.f_mol
        for _ in range(ffn_depth):
            blocks.append(nn.Sequential(nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
                                        nn.Linear(d_in, ffn_width), get_activation(activation)))
            d_in = ffn_width
        self.blocks = nn.ModuleList(blocks)  # the FFN's hidden layers
        self.num_features = d_in
        self.fc = nn.Linear(d_in, num_classes) if num_classes else nn.Identity()

    def _check(self, g) -> None:
        if not hasattr(g, "edge_index"):
            shape = tuple(g.shape) if hasattr(g, "shape") else type(g).__name__
            raise TypeError(f"mpnn takes molecular graphs (a GraphBatch: atoms and bonds; data.featurize=graph), got "
                            f"{shape}")
        if g.atom_x.shape[1] != self.f_atom or g.bond_x.shape[1] != self.f_bond or g.features.shape[1] != self.f_mol:
            raise ValueError(f"mpnn was built for {self.f_atom} atom, {self.f_bond} bond and {self.f_mol} molecule "
                             f"features; the batch has {g.atom_x.shape[1]}, {g.bond_x.shape[1]} and "
                             f"{g.features.shape[1]}")

    def encode(self, g) -> torch.Tensor:
        """Atom states h_v (N_atoms, hidden) after ``depth`` steps of directed message passing."""
        self._check(g)
        src, dst = g.edge_index  # (E,), (E,): directed bond src -> dst
        # index_select rather than x[idx]: its backward is index_add_, several times faster on the CPU
        # than advanced indexing's accumulating index_put_
        h0 = self.act(self.W_i(torch.cat([g.atom_x.index_select(0, src), g.bond_x], 1)))  # (E, H)
        h = h0
        # sizes read from tensor shapes, never Python ints from the batch: an exported graph
        # (layerwise export, torch.export) keeps the atom and molecule counts dynamic
        n_atoms = g.atom_x.shape[0]
        for _ in range(self.depth - 1):
            # incoming sum per atom, then for bond v->w drop the reverse bond w->v's own state
            into = h.new_zeros(n_atoms, self.hidden).index_add_(0, dst, h)  # (N_atoms, H)
            m = into.index_select(0, src) - h.index_select(0, g.rev_index)  # (E, H)
            h = self.drop(self.act(h0 + self.W_m(m)))
        m_v = h.new_zeros(n_atoms, self.hidden).index_add_(0, dst, h)  # (N_atoms, H)
        return self.drop(self.act(self.W_o(torch.cat([g.atom_x, m_v], 1))))  # (N_atoms, H)

    def forward_features(self, g) -> torch.Tensor:
        h_v = self.encode(g)
        B = g.features.shape[0]  # (B, D) even when D is 0
        h_mol = h_v.new_zeros(B, self.hidden).index_add_(0, g.graph_index, h_v)  # (B, H) sum readout
        if self.readout == "mean":  # atoms per molecule counted by index_add (bincount's size is data-dependent)
            n = h_v.new_zeros(B).index_add_(0, g.graph_index, h_v.new_ones(h_v.shape[0])).clamp_min(1)
            h_mol = h_mol / n[:, None]
        return torch.cat([h_mol, g.features.to(h_mol.dtype)], 1)  # (B, H + D)

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        for block in self.blocks:
            feats = block(feats)  # (B, ffn_width)
        return feats if pre_logits else self.fc(feats)  # (B, num_classes)

    def _cost(self) -> tuple[int, int]:
        return mpnn_cost(self.f_atom, self.f_bond, self.f_mol, self.num_classes, hidden=self.hidden, depth=self.depth,
                         ffn_depth=self.ffn_depth, ffn_width=self.ffn_width)

    def num_params(self) -> int:
        return self._cost()[0]

    def flops_per_example(self) -> int:
        """Forward FLOPs for a molecule of REF_ATOMS atoms and REF_EDGES directed bonds."""
        return self._cost()[1]


@register_model("mpnn")
def mpnn(*, in_shape: tuple[int, ...], num_classes: int, hidden: int = 300, depth: int = 3, dropout: float = 0.0,
         readout: str = "mean", ffn_depth: int = 1, ffn_width: int = 300, activation: str = "relu") -> MPNN:
    """D-MPNN (Yang et al. 2019) on molecular graphs (dataset molecules, data.featurize=graph).

    Args:
        hidden: H, the size of the bond and atom states (Chemprop: 300).
        depth: message-passing steps T (Chemprop: 3).
        dropout: dropout probability in the encoder and before each FFN layer.
        readout: mean or sum of the atom states over each molecule.
        ffn_depth: hidden layers of the FFN head (0: a linear head on the readout).
        ffn_width: units per FFN hidden layer.
        activation: one of `ACTIVATIONS`.
    """
    return MPNN(in_shape=in_shape, num_classes=num_classes, hidden=hidden, depth=depth, dropout=dropout,
                readout=readout, ffn_depth=ffn_depth, ffn_width=ffn_width, activation=activation)

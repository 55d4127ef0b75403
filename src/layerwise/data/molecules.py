"""Molecules (dataset ``molecules``): a CSV of SMILES strings with numeric targets, for property
prediction such as aqueous solubility (ESOL; Delaney 2004, MoleculeNet: Wu et al. 2018).

``data.path`` (relative to ``data.root``, or absolute) is a CSV file read as the ``csv`` source
reads it (layerwise.data.tabular.read_table: delimiter sniffed, lines counted as in the file,
header = line 1). Its columns:

- **SMILES**: ``data.smiles_column``, or the one column whose name contains ``smiles`` (any
  case). Each is parsed by RDKit (surrounding spaces dropped). An empty or unparsable SMILES is
  an error naming its line; under ``data.on_error=skip`` the row is dropped with a warning.
- **Targets**: ``data.target`` (one or more numeric columns; default: the last column other
  than the SMILES). The task is regression (``data.task`` auto or regress). A cell that is not a
  finite number is an error naming its line (dropped under skip).
- **Nothing else is read.** Inputs come from the SMILES alone, so a column such as ESOL's
  ``ESOL predicted log solubility`` (Delaney's own model) can never leak into the features.

Featurization (``data.featurize``):

- ``graph``: a molecular graph per molecule (:class:`GraphSet`): atom features (N_atoms, F_a),
  bond features per *directed* bond (2 * N_bonds, F_b), and the directed edges; batches are
  :class:`GraphBatch` objects for the ``mpnn`` model. Hydrogens are implicit (a count per atom).
- ``ecfp``: Morgan fingerprints of radius 2 (ECFP4; Rogers & Hahn 2010), 2048 bits as 0/1
  floats (N, 2048), RDKit's ``rdFingerprintGenerator``: a table for the ``mlp`` model.

``data.descriptors=true`` appends :data:`DESCRIPTORS`, RDKit 2D descriptors computed from the
SMILES (the quantities of Delaney's ESOL equation - logP, molecular weight, rotatable bonds,
aromatic proportion - and a few more), standardized with the training split's mean and std:
to the readout of the graph model (as Chemprop's ``--features_generator rdkit_2d``, Yang et al.
2019) or to the fingerprint bits.

Split (``data.split``): ``random`` (MoleculeNet's: a permutation seeded by ``data.split_seed``;
the first ``data.val_fraction`` is the test part, the next ``data.valid_fraction`` the
validation part, the rest trains: 80/10/10 by default) or ``scaffold`` (Bemis & Murcko 1996
scaffolds by RDKit; whole scaffold groups, largest first, fill train, then validation, then
test, as DeepChem's ScaffoldSplitter: deterministic, and harder, since test molecules have
scaffolds never seen in training). The Trainer selects nothing on the validation part: a run
trains a fixed schedule and reports the test part at its end; the validation part is held out
(not trained on) so that the training set is MoleculeNet's 80%. ``data.folds`` (random split
only) gives K-fold cross-validation instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from layerwise.choices import unknown_choice_error
from layerwise.data.datasets import DataError, Dataset, DatasetInfo, holdout_split, register_dataset, user_path
from layerwise.data.textclass import SequenceLoader

__all__ = ["ATOM_FDIM", "BOND_FDIM", "DESCRIPTORS", "GraphBatch", "GraphLoader", "GraphSet", "atom_features",
           "bond_features", "featurize", "parse_smiles", "read_smiles_inputs", "scaffold_split"]

INSTALL_HINT = "pip install 'layerwise[molecules]'"
FEATURIZERS = ("graph", "ecfp")
SPLITS = ("random", "scaffold")
ECFP_RADIUS, ECFP_BITS = 2, 2048  # ECFP4: Morgan radius 2 (diameter 4), 2048 bits

# ---------------------------------------------------------------------------------------- RDKit
def rdkit() -> Any:
    """``rdkit.Chem``; DataError with the install command when RDKit is missing (it is an optional
    dependency: the rest of layerwise imports without it)."""
    try:
        from rdkit import Chem, RDLogger
    except ImportError:
        raise DataError(f"molecules need RDKit to read SMILES, and it is not installed. Install it with "
                        f"`{INSTALL_HINT}` (or `pip install rdkit`).") from None
    RDLogger.DisableLog("rdApp.*")  # parse failures are reported by line here, not on stderr
    return Chem


def parse_smiles(smiles: str) -> Any | None:
    """An RDKit molecule for a SMILES string (spaces around it dropped), or None when it is empty
    or RDKit cannot parse (or sanitize) it."""
    Chem = rdkit()
    s = str(smiles).strip()
    if not s:
        return None
    mol = Chem.MolFromSmiles(s)
    return mol if mol is not None and mol.GetNumAtoms() > 0 else None


# ---------------------------------------------------------------------------------------- features
# one-hot vocabularies; each has a last "other" slot (Chemprop's convention, Yang et al. 2019)
_ELEMENTS = (1, 5, 6, 7, 8, 9, 14, 15, 16, 17, 35, 53)  # H B C N O F Si P S Cl Br I
_DEGREES = (0, 1, 2, 3, 4, 5)
_CHARGES = (-2, -1, 0, 1, 2)
_HS = (0, 1, 2, 3, 4)
_HYBRID = ("SP", "SP2", "SP3", "SP3D", "SP3D2")
_CHIRAL = ("CHI_UNSPECIFIED", "CHI_TETRAHEDRAL_CW", "CHI_TETRAHEDRAL_CCW")
_BOND_TYPES = ("SINGLE", "DOUBLE", "TRIPLE", "AROMATIC")
_STEREO = ("STEREONONE", "STEREOANY", "STEREOZ", "STEREOE", "STEREOCIS", "STEREOTRANS")
# atomic number, degree, formal charge, chirality, hydrogens, hybridization (+1 "other" each),
# aromatic, in a ring, mass / 100
ATOM_FDIM = sum(len(v) + 1 for v in (_ELEMENTS, _DEGREES, _CHARGES, _CHIRAL, _HS, _HYBRID)) + 3
# bond type, conjugated, in a ring, stereo (+1 "other")
BOND_FDIM = len(_BOND_TYPES) + 2 + len(_STEREO) + 1


def _onehot(value: Any, choices: Sequence[Any]) -> list[float]:
    out = [0.0] * (len(choices) + 1)
    out[choices.index(value) if value in choices else len(choices)] = 1.0
    return out


def atom_features(atom: Any) -> list[float]:
    """An RDKit atom -> ATOM_FDIM floats: one-hots of atomic number, degree (heavy neighbours),
    formal charge, chiral tag, total hydrogens and hybridization (each with an "other" slot),
    aromatic, in a ring, and the mass in units of 100 Da."""
    return (_onehot(atom.GetAtomicNum(), _ELEMENTS) + _onehot(atom.GetDegree(), _DEGREES)
            + _onehot(atom.GetFormalCharge(), _CHARGES) + _onehot(str(atom.GetChiralTag()), _CHIRAL)
            + _onehot(atom.GetTotalNumHs(), _HS) + _onehot(str(atom.GetHybridization()), _HYBRID)
            + [float(atom.GetIsAromatic()), float(atom.IsInRing()), atom.GetMass() / 100.0])


def bond_features(bond: Any) -> list[float]:
    """An RDKit bond -> BOND_FDIM floats: bond type one-hot (single, double, triple, aromatic),
    conjugated, in a ring, stereo one-hot (with an "other" slot)."""
    t = str(bond.GetBondType())
    return ([float(t == b) for b in _BOND_TYPES] + [float(bond.GetIsConjugated()), float(bond.IsInRing())]
            + _onehot(str(bond.GetStereo()), _STEREO))


def _aromatic_proportion(mol: Any) -> float:
    return sum(a.GetIsAromatic() for a in mol.GetAtoms()) / max(1, mol.GetNumHeavyAtoms())


def _descriptor_functions() -> dict[str, Any]:
    from rdkit.Chem import Crippen, Descriptors, Lipinski, rdMolDescriptors

    return {"MolLogP": Crippen.MolLogP, "MolWt": Descriptors.MolWt, "TPSA": rdMolDescriptors.CalcTPSA,
            "NumRotatableBonds": Lipinski.NumRotatableBonds, "NumHDonors": Lipinski.NumHDonors,
            "NumHAcceptors": Lipinski.NumHAcceptors, "AromaticProportion": _aromatic_proportion,
            "HeavyAtomCount": Lipinski.HeavyAtomCount, "RingCount": rdMolDescriptors.CalcNumRings,
            "FractionCSP3": rdMolDescriptors.CalcFractionCSP3, "NumAromaticRings": rdMolDescriptors.CalcNumAromaticRings}


# the descriptors data.descriptors=true adds, in this order (ESOL's four come first after logP)
DESCRIPTORS = ("MolLogP", "MolWt", "NumRotatableBonds", "AromaticProportion", "TPSA", "NumHDonors",
               "NumHAcceptors", "HeavyAtomCount", "RingCount", "FractionCSP3", "NumAromaticRings")


def descriptors(mols: Sequence[Any]) -> np.ndarray:
    """(N, len(DESCRIPTORS)) float64 RDKit 2D descriptors of each molecule, computed from its
    structure only."""
    fns = _descriptor_functions()
    return np.array([[float(fns[d](m)) for d in DESCRIPTORS] for m in mols], np.float64).reshape(len(mols), -1)


# ---------------------------------------------------------------------------------------- graphs
@dataclass
class GraphBatch:
    """A batch of B molecular graphs, concatenated (the layout of Gilmer et al. 2017's and
    Chemprop's batches). Directed edge e runs from atom ``edge_index[0, e]`` to atom
    ``edge_index[1, e]``; each bond gives two, stored next to each other, so ``rev_index[e]``
    (the same bond the other way) is ``e ^ 1``.

    atom_x (N_atoms, F_a) float32; bond_x (E, F_b) float32, E = 2 * N_bonds; edge_index (2, E)
    int64 atom indices into the batch; rev_index (E,) int64; graph_index (N_atoms,) int64, the
    molecule of each atom (0 .. B-1); features (B, D) float32 molecule-level features
    (standardized descriptors; D may be 0)."""

    atom_x: torch.Tensor
    bond_x: torch.Tensor
    edge_index: torch.Tensor
    rev_index: torch.Tensor
    graph_index: torch.Tensor
    features: torch.Tensor
    num_graphs: int

    def __len__(self) -> int:
        return self.num_graphs

    def to(self, device: torch.device | str, non_blocking: bool = False) -> GraphBatch:
        """The same batch with every tensor on ``device``."""
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return GraphBatch(move(self.atom_x), move(self.bond_x), move(self.edge_index), move(self.rev_index),
                          move(self.graph_index), move(self.features), self.num_graphs)


class GraphSet:
    """N molecular graphs in flat tensors: ``atom_x`` (sum of atoms, F_a), ``bond_x`` (sum of
    directed edges, F_b), ``edges`` (sum of directed edges, 2) atom indices *within* each
    molecule, offsets ``atom_offsets`` / ``edge_offsets`` (N + 1,), and ``features`` (N, D).
    ``set.collate(idx)`` is the :class:`GraphBatch` of molecules ``idx``."""

    def __init__(self, atom_x: torch.Tensor, bond_x: torch.Tensor, edges: torch.Tensor, atom_offsets: torch.Tensor,
                 edge_offsets: torch.Tensor, features: torch.Tensor):
        self.atom_x, self.bond_x, self.edges = atom_x, bond_x, edges
        self.atom_offsets, self.edge_offsets, self.features = atom_offsets, edge_offsets, features
        self.lengths = atom_offsets[1:] - atom_offsets[:-1]  # atoms per molecule

    @classmethod
    def from_mols(cls, mols: Sequence[Any], features: np.ndarray | None = None) -> GraphSet:
        """Graphs of RDKit molecules; ``features`` (N, D) molecule-level features (or none)."""
        atoms, bonds, edges, n_atoms, n_edges = [], [], [], [0], [0]
        for m in mols:
            atoms += [atom_features(a) for a in m.GetAtoms()]
            for b in m.GetBonds():
                i, j, f = b.GetBeginAtomIdx(), b.GetEndAtomIdx(), bond_features(b)
                bonds += [f, f]
                edges += [(i, j), (j, i)]  # the pair e, e ^ 1
            n_atoms.append(m.GetNumAtoms())
            n_edges.append(2 * m.GetNumBonds())
        f = np.zeros((len(mols), 0)) if features is None else features
        return cls(torch.tensor(atoms, dtype=torch.float32).reshape(-1, ATOM_FDIM),
                   torch.tensor(bonds, dtype=torch.float32).reshape(-1, BOND_FDIM),
                   torch.tensor(edges, dtype=torch.int64).reshape(-1, 2),
                   torch.from_numpy(np.cumsum(n_atoms)), torch.from_numpy(np.cumsum(n_edges)),
                   torch.as_tensor(f, dtype=torch.float32).reshape(len(mols), -1))

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def feature_dims(self) -> tuple[int, ...]:
        """(F_a, F_b) or (F_a, F_b, D): the in_shape a graph model is built for."""
        D = self.features.shape[1]
        return (self.atom_x.shape[1], self.bond_x.shape[1]) + ((D,) if D else ())

    def collate(self, idx: Sequence[int] | torch.Tensor) -> GraphBatch:
        """Molecules ``idx`` as one :class:`GraphBatch` (atoms renumbered by their offset in it)."""
        idx = [int(i) for i in idx]
        a0, a1 = self.atom_offsets[idx].tolist(), self.atom_offsets[[i + 1 for i in idx]].tolist()
        e0, e1 = self.edge_offsets[idx].tolist(), self.edge_offsets[[i + 1 for i in idx]].tolist()
        atom_sl = [torch.arange(s, t) for s, t in zip(a0, a1, strict=True)]
        edge_sl = [torch.arange(s, t) for s, t in zip(e0, e1, strict=True)]
        atoms = torch.cat(atom_sl) if atom_sl else torch.zeros(0, dtype=torch.int64)
        edge_ids = torch.cat(edge_sl) if edge_sl else torch.zeros(0, dtype=torch.int64)
        n_atoms = torch.tensor([t - s for s, t in zip(a0, a1, strict=True)], dtype=torch.int64)
        n_edges = torch.tensor([t - s for s, t in zip(e0, e1, strict=True)], dtype=torch.int64)
        start = torch.cumsum(n_atoms, 0) - n_atoms  # each molecule's first atom in the batch
        shift = torch.repeat_interleave(start, n_edges)  # (E,)
        edge_index = (self.edges[edge_ids] + shift[:, None]).T.contiguous()  # (2, E)
        rev = torch.arange(len(edge_ids)) ^ 1  # pairs stay pairs: every molecule has an even count
        graph_index = torch.repeat_interleave(torch.arange(len(idx)), n_atoms)
        return GraphBatch(self.atom_x[atoms], self.bond_x[edge_ids], edge_index, rev, graph_index,
                          self.features[idx], len(idx))

    def subset(self, idx: Sequence[int]) -> GraphSet:
        b = self.collate(idx)
        n_atoms = torch.bincount(b.graph_index, minlength=len(b)) if len(b) else torch.zeros(0, dtype=torch.int64)
        starts = torch.cumsum(n_atoms, 0) - n_atoms
        n_edges = self.edge_offsets[[int(i) + 1 for i in idx]] - self.edge_offsets[[int(i) for i in idx]]
        local = b.edge_index.T - torch.repeat_interleave(starts, n_edges)[:, None]
        zero = torch.zeros(1, dtype=torch.int64)
        return GraphSet(b.atom_x, b.bond_x, local, torch.cat([zero, torch.cumsum(n_atoms, 0)]),
                        torch.cat([zero, torch.cumsum(n_edges, 0)]), b.features)

    def head(self, n: int) -> GraphSet:
        return self.subset(range(min(n, len(self))))

    def digest(self) -> str:
        """sha256 of every tensor (a resumed run checks it continues on the same data)."""
        h = hashlib.sha256()
        for t in (self.atom_x, self.bond_x, self.edges, self.atom_offsets, self.edge_offsets, self.features):
            h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()


class GraphLoader(SequenceLoader):
    """Yields (:class:`GraphBatch` on ``device``, y (B, K)) over a :class:`GraphSet`.

    The same face and order as :class:`~layerwise.data.textclass.SequenceLoader` (a seeded
    permutation per epoch; ``state_dict()`` = (epoch, position) resumes exactly; sharded over
    ranks), without its length bucketing: a graph batch needs no padding."""

    bucket_by_length = False

    def collate(self, idx: torch.Tensor) -> GraphBatch:
        return self.x.collate(idx).to(self.device, non_blocking=True)

    def evaluation_view(self, batch_size: int) -> GraphLoader:
        return GraphLoader(self.x, self.y, batch_size, self.device)


# ---------------------------------------------------------------------------------------- splits
def scaffold_split(mols: Sequence[Any], fractions: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, valid, test) indices, each sorted, by Bemis-Murcko scaffold (Bemis & Murcko 1996;
    RDKit's MurckoScaffold, chirality ignored). ``fractions`` = (valid, test). Molecules with the
    same scaffold stay together; groups sorted by size (largest first, ties by first index,
    descending, as DeepChem's ScaffoldSplitter) go to train while it stays within its share, then
    to valid while train + valid stay within theirs, else to test. Deterministic."""
    from rdkit.Chem.Scaffolds import MurckoScaffold

    groups: dict[str, list[int]] = {}
    for i, m in enumerate(mols):
        groups.setdefault(MurckoScaffold.MurckoScaffoldSmiles(mol=m, includeChirality=False), []).append(i)
    ordered = sorted(groups.values(), key=lambda g: (len(g), g[0]), reverse=True)
    n = len(mols)
    valid_f, test_f = fractions
    train_cut, valid_cut = (1.0 - valid_f - test_f) * n, (1.0 - test_f) * n
    train: list[int] = []
    valid: list[int] = []
    test: list[int] = []
    for g in ordered:
        if len(train) + len(g) <= train_cut:
            train += g
        elif len(train) + len(valid) + len(g) <= valid_cut:
            valid += g
        else:
            test += g
    return np.sort(np.array(train, np.int64)), np.sort(np.array(valid, np.int64)), np.sort(np.array(test, np.int64))


def random_split(n: int, fractions: tuple[float, float], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, valid, test) indices, each sorted: a permutation seeded by ``seed`` whose first
    round(n * test) are the test part and next round(n * valid) the validation part (DeepChem's
    RandomSplitter cuts its permutation the same way, train first)."""
    valid_f, test_f = fractions
    perm = np.random.default_rng(seed).permutation(n)
    n_te = min(max(int(round(n * test_f)), 1), n - 1)
    n_va = min(int(round(n * valid_f)), n - 1 - n_te)
    return np.sort(perm[n_te + n_va:]), np.sort(perm[n_te:n_te + n_va]), np.sort(perm[:n_te])


# ---------------------------------------------------------------------------------------- featurize
def featurize(mols: Sequence[Any], kind: str, extra: np.ndarray | None) -> GraphSet | torch.Tensor:
    """RDKit molecules -> a :class:`GraphSet` (``graph``) or (N, 2048 [+ D]) float32 ECFP4 bits
    (``ecfp``); ``extra`` (N, D) molecule features appended (the graph set's ``features``)."""
    if kind == "graph":
        return GraphSet.from_mols(mols, extra)
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=ECFP_RADIUS, fpSize=ECFP_BITS)
    bits = np.stack([gen.GetFingerprintAsNumPy(m) for m in mols]).astype(np.float32) if len(mols) else \
        np.zeros((0, ECFP_BITS), np.float32)
    if extra is not None:
        bits = np.concatenate([bits, extra.astype(np.float32)], 1)
    return torch.from_numpy(bits)


def _smiles_column(header: list[str], opts: Any, path: Path) -> str:
    asked = getattr(opts, "smiles_column", "") or ""
    if asked:
        if asked not in header:
            raise DataError(f"{unknown_choice_error('SMILES column', asked, header)} in '{path}'. Set "
                            f"data.smiles_column to the column holding the SMILES strings.")
        return asked
    found = [c for c in header if "smiles" in c.lower()]
    if len(found) != 1:
        what = "no column whose name contains 'smiles'" if not found else f"several ({', '.join(found)})"
        raise DataError(f"'{path}' has {what}; its columns are {', '.join(header)}. Name the column holding the "
                        f"SMILES strings with data.smiles_column.")
    return found[0]


def _check_options(opts: Any) -> tuple[str, str]:
    from layerwise.config import ConfigError

    kind, split = getattr(opts, "featurize", "graph"), getattr(opts, "split", "random")
    if kind not in FEATURIZERS:
        raise ConfigError(str(unknown_choice_error("data.featurize", kind, FEATURIZERS)))
    if split not in SPLITS:
        raise ConfigError(str(unknown_choice_error("data.split", split, SPLITS)))
    if getattr(opts, "task", "auto") not in ("auto", "regress"):
        raise ConfigError(f"data.task={opts.task}: the molecules source predicts numbers (regression) from SMILES. "
                          f"Use data.task=auto or regress.")
    if getattr(opts, "folds", 0) and split == "scaffold":
        raise ConfigError("data.folds splits molecules at random into folds; data.split=scaffold makes one "
                          "deterministic split. Use one or the other.")
    if getattr(opts, "label_sep", ""):
        raise ConfigError("data.label_sep applies to class labels; the molecules source reads numeric targets.")
    return kind, split


@register_dataset("molecules")
def _molecules(root: Path, opts: Any) -> Dataset:
    """SMILES and numeric targets from a CSV; see the module docstring for the rules."""
    from layerwise.data.tabular import _delimiter, _header, read_table

    kind, split = _check_options(opts)
    path = user_path(root, opts, "molecules", "a CSV file with a SMILES column and numeric target column(s)")
    if path.is_dir():
        raise DataError(f"molecules: data.path '{path}' is a folder; point it at one CSV file of SMILES and targets.")
    rdkit()  # before reading: a missing RDKit is the first thing to fix
    header = _header(path, _delimiter(path, opts))
    col = _smiles_column(header, opts, path)
    others = [c for c in header if c != col]
    targets = list(getattr(opts, "target", []) or []) or others[-1:]
    if not targets:
        raise DataError(f"'{path}' has only the SMILES column '{col}'; add a numeric target column.")
    for t in targets:
        if t not in header or t == col:
            raise DataError(f"{unknown_choice_error('target column', t, others)} in '{path}'. Set data.target to "
                            f"the numeric column(s) to predict (default: the last column other than the SMILES).")
    skip, warnings = getattr(opts, "on_error", "refuse") == "skip", []
    table = read_table(path, opts, text_columns=[col, *targets])
    warnings += table.warnings
    df, lines = table.df, table.lines
    smiles = [str(s).strip() for s in df[col].fillna("")]
    mols, keep, dropped = [], [], []
    y = np.zeros((len(df), len(targets)), np.float64)
    for i, s in enumerate(smiles):
        problem = None
        for j, t in enumerate(targets):
            cell = str(df[t].iloc[i]).strip()
            try:
                y[i, j] = float(cell)
            except ValueError:
                y[i, j] = np.nan
            if not np.isfinite(y[i, j]) or abs(y[i, j]) > np.finfo(np.float32).max:
                problem = problem or (f"column '{t}' (the target): {cell!r} is not a finite number"
                                      if cell else f"column '{t}' (the target) is empty")
        mol = parse_smiles(s) if s else None
        if not s:
            problem = f"column '{col}': the SMILES is empty"
        elif mol is None:
            problem = f"column '{col}': RDKit cannot parse the SMILES {s!r}"
        if problem:
            if not skip:
                raise DataError(f"'{path}' line {lines[i]}, {problem}. Fix that row, or set data.on_error=skip to "
                                f"drop such rows with a warning.")
            dropped.append(f"line {lines[i]} ({problem})")
            continue
        mols.append(mol)
        keep.append(i)
    if dropped:
        warnings.append(f"skipped {len(dropped)} rows of '{path}': {'; '.join(dropped[:3])}"
                        f"{' ...' if len(dropped) > 3 else ''}")
    if len(mols) < 3:
        raise DataError(f"'{path}' has {len(mols)} usable molecules; a train/test split needs at least three.")
    y = y[keep].astype(np.float32)
    smiles = [smiles[i] for i in keep]

    fractions = (float(getattr(opts, "valid_fraction", 0.1)), float(opts.val_fraction))
    if not 0 < fractions[1] < 1 or not 0 <= fractions[0] < 1 or sum(fractions) >= 1:
        raise DataError(f"data.val_fraction={fractions[1]} (test) and data.valid_fraction={fractions[0]} "
                        f"(validation) must each be in [0, 1) (test > 0) and leave a training part: their sum < 1.")
    seed = int(getattr(opts, "split_seed", 0))
    if getattr(opts, "folds", 0):
        tr, te, how = holdout_split(None, opts, len(mols))
        va = np.zeros(0, np.int64)
    elif split == "scaffold":
        tr, va, te = scaffold_split(mols, fractions)
        how = f"Bemis-Murcko scaffold split, valid {fractions[0]} test {fractions[1]} (deterministic)"
    else:
        tr, va, te = random_split(len(mols), fractions, seed)
        how = f"random split, valid {fractions[0]} test {fractions[1]}, data.split_seed={seed}"
    if not len(tr) or not len(te):
        raise DataError(f"'{path}': the {split} split leaves {len(tr)} training and {len(te)} test molecules. Use "
                        f"more molecules or other data.val_fraction / data.valid_fraction.")

    extra, names, mean, std = None, [], None, None
    if getattr(opts, "descriptors", False):
        names = list(DESCRIPTORS)
        raw = descriptors(mols)
        mean, std = raw[tr].mean(0), raw[tr].std(0)
        std = np.where(std > 0, std, 1.0)
        extra = raw if kind == "ecfp" else (raw - mean) / std  # ecfp: standardized by the input normalization
    x_all = featurize(mols, kind, extra)
    enc = {"featurize": kind, "smiles_column": col, "descriptors": names,
           "descriptor_mean": [] if mean is None else mean.tolist(),
           "descriptor_std": [] if std is None else std.tolist(), "ecfp": [ECFP_RADIUS, ECFP_BITS]}
    if kind == "graph":
        x_tr, x_te = x_all.subset(tr), x_all.subset(te)
        in_shape, f_mean, f_std = x_all.feature_dims, [], []
    else:
        x_tr, x_te = x_all[tr], x_all[te]
        in_shape = (x_all.shape[1],)
        f_mean = [0.0] * ECFP_BITS + ([] if mean is None else mean.tolist())  # bits stay 0/1
        f_std = [1.0] * ECFP_BITS + ([] if std is None else std.tolist())
    info = DatasetInfo("molecules", tuple(int(d) for d in in_shape), len(targets), list(targets), 1.0, f_mean, f_std,
                       task="regress", extra={"molecules": enc, "targets": targets})
    digest = hashlib.sha256(path.read_bytes() + repr((kind, names, how, list(tr), list(te))).encode()).hexdigest()
    reason = f"target(s) {', '.join(targets)} from SMILES column '{col}'" + (
        "" if getattr(opts, "target", None) else " (the last column other than the SMILES; set data.target)")
    source = {"path": str(path), "split": how, "train": len(tr), "valid_unused": len(va), "test": len(te),
              "featurize": kind, "descriptors": names, "task_reason": reason, "files_sha256": digest,
              "smiles_train_first": smiles[int(tr[0])]}
    ytr, yte = torch.from_numpy(y[tr]), torch.from_numpy(y[te])
    return Dataset(info, x_tr, ytr, x_te, yte, source, warnings=warnings)


# ---------------------------------------------------------------------------------------- predict
def read_smiles_inputs(inputs: Sequence[str]) -> Iterator[tuple[str, str]]:
    """(name, SMILES) for each of ``inputs``: a string is a SMILES, unless it names an existing
    .csv (its SMILES column) or .txt / .smi file (the first field of each non-blank line), whose
    molecules are named ``file:line``."""
    for inp in inputs:
        p = Path(inp)
        if p.suffix.lower() in (".csv", ".txt", ".smi") and p.is_file():
            if p.suffix.lower() == ".csv":
                from layerwise.data.tabular import _delimiter, _header, read_table

                class _Opts:
                    delimiter, on_error, skip_hint, decimal, thousands, smiles_column = "", "refuse", False, ".", "", ""
                header = _header(p, _delimiter(p, _Opts()))
                col = _smiles_column(header, _Opts(), p)
                table = read_table(p, _Opts(), text_columns=header)
                for line, s in zip(table.lines, table.df[col].fillna(""), strict=True):
                    yield f"{p}:{line}", str(s)
            else:
                from layerwise.data.inputs import text_lines
                for line, text in text_lines(p):
                    yield f"{p}:{line}", text.split()[0]
        else:
            yield inp, inp


def encode_smiles(inputs: Sequence[str], info: DatasetInfo) -> tuple[list[str], GraphBatch | torch.Tensor]:
    """``predict``'s inputs (SMILES strings, or files of them) -> (a name per molecule, the model's
    raw input: a GraphBatch or (N, F) fingerprint bits), featurized exactly as training did
    (descriptors standardized with the training statistics saved in ``info``). DataError naming
    the input for an empty or unparsable SMILES."""
    enc = info.extra["molecules"]
    names, mols = [], []
    for name, s in read_smiles_inputs(inputs):
        mol = parse_smiles(s)
        if mol is None:
            where = f"'{name}'" if name != s else "the input"
            what = "is empty" if not s.strip() else f"{s.strip()!r} is not a SMILES string RDKit can parse"
            raise DataError(f"{where}: {what} (nor a .csv/.txt/.smi file of SMILES). Give a valid SMILES such as "
                            f"'CCO' (ethanol), or a file of them.")
        names.append(name if name != s else s.strip())
        mols.append(mol)
    extra = None
    if enc["descriptors"]:
        raw = descriptors(mols)
        if enc["featurize"] == "graph":
            extra = (raw - np.array(enc["descriptor_mean"])) / np.array(enc["descriptor_std"])
        else:
            extra = raw
    x = featurize(mols, enc["featurize"], extra)
    return names, (x.collate(range(len(x))) if isinstance(x, GraphSet) else x)


"""The molecules source: featurization, graph batches, the graph loader's resume, message passing,
splits and bad input (layerwise.data.molecules, layerwise.models.mpnn)."""

from __future__ import annotations

import builtins

import numpy as np
import pytest
import torch

pytest.importorskip("rdkit", reason="RDKit is an optional dependency: pip install 'layerwise[molecules]'")

from layerwise.config import ConfigError, DataConfig  # noqa: E402
from layerwise.data import DataError, load_dataset  # noqa: E402
from layerwise.data.molecules import (ATOM_FDIM, BOND_FDIM, DESCRIPTORS, ECFP_BITS, GraphLoader, GraphSet,  # noqa: E402
                                      encode_smiles, parse_smiles, random_split, scaffold_split)
from layerwise.models import create_model  # noqa: E402

SMILES = ["CCO", "c1ccccc1O", "CC(=O)Oc1ccccc1C(=O)O", "C", "CCN(CC)CC", "c1ccc2ccccc2c1", "OCC(O)CO",
          "Clc1ccc(Cl)cc1", "CCCCCCCC", "c1ccncc1", "CC(C)O", "O=C1CCCCC1", "CCOC(=O)C", "c1ccc(cc1)C(=O)N",
          "CCCCl", "C1CCCCC1", "CC#N", "Oc1ccc(cc1)C", "CCOCC", "NC(=O)N"]


def _csv(tmp_path, rows=None, header="name,smiles,logS", name="m.csv") -> str:
    rows = rows if rows is not None else [f"m{i},{s},{-0.1 * len(s) + 0.05 * i:.3f}" for i, s in enumerate(SMILES)]
    (tmp_path / name).write_text("\n".join([header, *rows]) + "\n")
    return str(tmp_path / name)


def _load(tmp_path, *rows, **opts):
    path = opts.pop("path", None) or _csv(tmp_path, list(rows) if rows else None)
    return load_dataset("molecules", tmp_path, DataConfig(name="molecules", path=path, **opts))


# ---------------------------------------------------------------------------------------- featurization
def test_ethanol_graph_has_three_atoms_and_four_directed_bonds():
    g = GraphSet.from_mols([parse_smiles("CCO")])
    assert g.atom_x.shape == (3, ATOM_FDIM) and g.bond_x.shape == (4, BOND_FDIM)
    assert g.edges.tolist() == [[0, 1], [1, 0], [1, 2], [2, 1]]
    # every atom: one element, one degree, one charge, one chirality, one H count, one hybridization
    assert g.atom_x[:, :ATOM_FDIM - 3].sum(1).tolist() == [6.0, 6.0, 6.0]
    assert g.atom_x[:, 0:13].argmax(1).tolist() == [2, 2, 4]  # C C O in (H B C N O ...)
    assert g.bond_x[:, 0].tolist() == [1.0] * 4  # single bonds
    benzene = GraphSet.from_mols([parse_smiles("c1ccccc1")])
    assert benzene.bond_x.shape == (12, BOND_FDIM) and benzene.bond_x[:, 3].tolist() == [1.0] * 12  # aromatic


def test_fingerprints_and_descriptors(tmp_path):
    ds = _load(tmp_path, featurize="ecfp", descriptors=True)
    assert ds.x_train.shape[1] == ECFP_BITS + len(DESCRIPTORS) and ds.info.in_shape == (ECFP_BITS + len(DESCRIPTORS),)
    bits = ds.x_train[:, :ECFP_BITS]
    assert set(bits.unique().tolist()) == {0.0, 1.0}
    # descriptors stay raw here and are standardized by the input normalization with training statistics
    d = ds.x_train[:, ECFP_BITS:].double()
    assert ds.info.mean[ECFP_BITS:] == pytest.approx(d.mean(0).tolist(), rel=1e-5)
    assert ds.info.mean[:ECFP_BITS] == [0.0] * ECFP_BITS and ds.info.std[:ECFP_BITS] == [1.0] * ECFP_BITS
    g = _load(tmp_path, descriptors=True)
    assert g.info.in_shape == (ATOM_FDIM, BOND_FDIM, len(DESCRIPTORS))
    f = g.x_train.features.double()
    assert f.mean(0).abs().max() < 1e-5 and (f.std(0, unbiased=False) - 1).abs().max() < 1e-4  # standardized on train
    assert DESCRIPTORS[0] == "MolLogP" and g.info.extra["molecules"]["descriptors"] == list(DESCRIPTORS)


# ---------------------------------------------------------------------------------------- batches and loader
def test_collate_offsets_graph_index_and_reverse_edges():
    s = GraphSet.from_mols([parse_smiles(x) for x in ("CCO", "C", "c1ccccc1O")])
    b = s.collate([2, 0, 1])  # phenol (7 atoms, 14 edges), ethanol (3, 4), methane (1, 0)
    assert len(b) == 3 and b.atom_x.shape == (11, ATOM_FDIM) and b.bond_x.shape == (18, BOND_FDIM)
    assert b.graph_index.tolist() == [0] * 7 + [1] * 3 + [2]
    assert b.edge_index[:, 14:].tolist() == [[7, 8, 8, 9], [8, 7, 9, 8]]  # ethanol's atoms shifted by 7
    src, dst = b.edge_index
    assert torch.equal(src[b.rev_index], dst) and torch.equal(dst[b.rev_index], src)
    sub = s.subset([2, 1])
    assert torch.equal(sub.collate([0, 1]).edge_index, s.collate([2, 1]).edge_index)


def test_graph_loader_resumes_exactly():
    s = GraphSet.from_mols([parse_smiles(x) for x in SMILES])
    y = torch.arange(len(SMILES), dtype=torch.float32)[:, None]
    a = GraphLoader(s, y, 3, shuffle=True, seed=5)
    full = [yb.flatten().tolist() for _ in range(2) for _, yb in a]
    assert sorted(v for b in full[:7] for v in b) == list(range(20))  # an epoch: every molecule once
    assert full[:7] != full[7:]  # a new order each epoch
    b = GraphLoader(s, y, 3, shuffle=True, seed=5)
    it = iter(b)
    first = [next(it)[1].flatten().tolist() for _ in range(3)]
    state = b.state_dict()
    c = GraphLoader(s, y, 3, shuffle=True, seed=5)
    c.load_state_dict(state)
    rest = [yb.flatten().tolist() for _, yb in c] + [yb.flatten().tolist() for _, yb in c]
    assert first + rest == full and state == {"epoch": 0, "position": 3}


# ---------------------------------------------------------------------------------------- message passing
def test_mpnn_matches_a_hand_computation_and_is_permutation_invariant():
    torch.manual_seed(0)
    s = GraphSet.from_mols([parse_smiles("CCO")])
    m = create_model("mpnn", in_shape=(ATOM_FDIM, BOND_FDIM), num_classes=1, hidden=8, depth=2, readout="sum",
                     ffn_depth=0)
    b = s.collate([0])
    # by hand: edges 0:0->1 1:1->0 2:1->2 3:2->1; h0 = relu(W_i [x_src; e])
    relu, x, e = torch.relu, b.atom_x, b.bond_x
    h0 = relu(torch.cat([x[[0, 1, 1, 2]], e], 1) @ m.W_i.weight.T)
    # m_vw = sum of h_kv over k in N(v) \ {w}: 0->1 and 2->1 have none; 1->0 gets 2->1; 1->2 gets 0->1
    msg = torch.stack([torch.zeros(8), h0[3], h0[0], torch.zeros(8)])
    h1 = relu(h0 + msg @ m.W_m.weight.T)
    m_v = torch.stack([h1[1], h1[0] + h1[3], h1[2]])  # incoming states per atom
    h_v = relu(torch.cat([x, m_v], 1) @ m.W_o.weight.T + m.W_o.bias)
    want = h_v.sum(0) @ m.fc.weight.T + m.fc.bias
    assert m(b).flatten().tolist() == pytest.approx(want.tolist(), abs=1e-5)
    # renumbering the atoms (RDKit order reversed) leaves the prediction unchanged
    big = GraphSet.from_mols([parse_smiles("CC(=O)Oc1ccccc1C(=O)O"), parse_smiles("OC(=O)c1ccccc1OC(C)=O")])
    out = create_model("mpnn", in_shape=(ATOM_FDIM, BOND_FDIM), num_classes=1)(big.collate([0, 1]))
    assert out[0].item() == pytest.approx(out[1].item(), abs=1e-5)


def test_mpnn_refuses_a_tensor_with_a_message():
    m = create_model("mpnn", in_shape=(ECFP_BITS,), num_classes=1)
    with pytest.raises(TypeError, match="data.featurize=graph"):
        m(torch.zeros(2, ECFP_BITS))


# ---------------------------------------------------------------------------------------- splits
def test_random_split_is_80_10_10_and_seeded():
    tr, va, te = random_split(1128, (0.1, 0.1), seed=0)
    assert (len(tr), len(va), len(te)) == (902, 113, 113)
    assert len(np.unique(np.concatenate([tr, va, te]))) == 1128
    assert not np.array_equal(te, random_split(1128, (0.1, 0.1), seed=1)[2])
    assert np.array_equal(te, random_split(1128, (0.1, 0.1), seed=0)[2])


def test_scaffold_split_keeps_scaffolds_apart():
    from rdkit.Chem.Scaffolds import MurckoScaffold

    mols = [parse_smiles(s) for s in SMILES]
    tr, va, te = scaffold_split(mols, (0.1, 0.1))
    assert len(tr) + len(va) + len(te) == len(mols) and len(te) > 0 and len(tr) >= 0.7 * len(mols)
    scaf = [MurckoScaffold.MurckoScaffoldSmiles(mol=m, includeChirality=False) for m in mols]
    parts = [{scaf[i] for i in p} for p in (tr, va, te)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert "" in parts[0]  # the largest group (acyclic molecules) goes to train first
    again = scaffold_split(mols, (0.1, 0.1))
    assert all(np.array_equal(a, b) for a, b in zip((tr, va, te), again, strict=True))


def test_dataset_split_sizes_and_only_smiles_are_read(tmp_path):
    ds = _load(tmp_path)
    assert ds.source["train"] == 16 and ds.source["valid_unused"] == 2 and ds.source["test"] == 2
    assert ds.info.task == "regress" and ds.info.classes == ["logS"] and ds.y_train.shape == (16, 1)
    sc = _load(tmp_path, split="scaffold")
    assert sc.source["split"].startswith("Bemis-Murcko")


# ---------------------------------------------------------------------------------------- bad input
def test_empty_and_unparsable_smiles_are_named_by_line(tmp_path):
    rows = [f"m{i},{s},{-i}" for i, s in enumerate(SMILES[:6])]
    with pytest.raises(DataError, match=r"line 4, column 'smiles': the SMILES is empty"):
        _load(tmp_path, *rows[:2], "bad,,1.0", *rows[2:])
    with pytest.raises(DataError, match=r"line 3, column 'smiles': RDKit cannot parse the SMILES 'C1CC'.*on_error=skip"):
        _load(tmp_path, rows[0], "bad,C1CC,1.0", *rows[1:])
    ds = _load(tmp_path, rows[0], "bad,C1CC,1.0", "e,,2", *rows[1:], on_error="skip")
    assert ds.source["train"] + ds.source["valid_unused"] + ds.source["test"] == 6
    assert "skipped 2 rows" in ds.warnings[0] and "line 3" in ds.warnings[0] and "line 4" in ds.warnings[0]


def test_missing_smiles_column_bad_target_and_options(tmp_path):
    path = _csv(tmp_path, ["a,CCO,1", "b,CCC,2", "c,CCCC,3"], header="name,structure,y")
    with pytest.raises(DataError, match="no column whose name contains 'smiles'.*data.smiles_column"):
        _load(tmp_path, path=path)
    assert _load(tmp_path, path=path, smiles_column="structure").source["train"] >= 1
    with pytest.raises(DataError, match="line 3, column 'logS' \\(the target\\): 'x' is not a finite number"):
        _load(tmp_path, "a,CCO,1", "b,CCC,x", "c,CCCC,3", "d,CO,4")
    with pytest.raises(DataError, match="target column"):
        _load(tmp_path, target=["nope"])
    with pytest.raises(ConfigError, match="data.featurize"):
        _load(tmp_path, featurize="graphs")
    with pytest.raises(ConfigError, match="regression"):
        _load(tmp_path, task="classify")


def test_missing_rdkit_names_the_install_command(tmp_path, monkeypatch):
    real = builtins.__import__

    def no_rdkit(name, *a, **k):
        if name == "rdkit" or name.startswith("rdkit."):
            raise ImportError("No module named 'rdkit'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_rdkit)
    with pytest.raises(DataError, match=r"pip install 'layerwise\[molecules\]'"):
        _load(tmp_path)


def test_predict_encoding_matches_training_and_refuses_bad_smiles(tmp_path):
    ds = _load(tmp_path, descriptors=True)
    names, b = encode_smiles(["CCO ", "c1ccccc1O"], ds.info)
    assert names == ["CCO", "c1ccccc1O"] and len(b) == 2 and b.features.shape == (2, len(DESCRIPTORS))
    (tmp_path / "in.txt").write_text("CCO ethanol\n\nC\n")
    names, b = encode_smiles([str(tmp_path / "in.txt")], ds.info)
    assert names == [f"{tmp_path / 'in.txt'}:1", f"{tmp_path / 'in.txt'}:3"] and b.atom_x.shape[0] == 4
    with pytest.raises(DataError, match="'C1CC' is not a SMILES string RDKit can parse"):
        encode_smiles(["CCO", "C1CC"], ds.info)
    with pytest.raises(DataError, match="is empty"):
        encode_smiles([" "], ds.info)


def test_folds_partition_the_molecules_and_scaffold_refuses_them(tmp_path):
    tests = [_load(tmp_path, folds=4, fold=k).y_test.flatten().tolist() for k in range(4)]
    assert [len(t) for t in tests] == [5] * 4  # no validation part is held out with folds
    y_all = sorted(float(r.split(",")[2]) for r in open(_csv(tmp_path)).read().split()[1:])
    assert sorted(v for t in tests for v in t) == pytest.approx(y_all)  # the folds partition all 20
    assert _load(tmp_path, folds=4, fold=1).source["split"].startswith("fold 1 of 4")
    with pytest.raises(ConfigError, match="scaffold"):
        _load(tmp_path, folds=4, split="scaffold")

"""The movielens ratings source on small synthetic files in GroupLens' layout (never the real data),
the recommenders, and HR@k / NDCG@k on hand-made rankings."""

import numpy as np
import pytest
import torch

from layerwise.config import ConfigError, DataConfig
from layerwise.data import DataError, load_dataset
from layerwise.models import create_model
from layerwise.tasks.ranking import hit_ratio_ndcg, leave_one_out, sample_negatives

GENRE_FLAGS = "|".join(["0"] * 19)


def write_ml(root, n_users=6, n_items=8, seed=0, fold_lines=None):
    """A tiny ml-100k folder: every user rates every item except one; five folds by mku.sh's rule."""
    d = root / "movielens" / "ml-100k"
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows = [(u, i, int(rng.integers(1, 6)), 880000000 + 10 * u + i)
            for u in range(1, n_users + 1) for i in range(1, n_items + 1) if i != u]
    (d / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    flags = lambda i: "|".join("1" if k == i % 19 else "0" for k in range(19))  # noqa: E731
    items = "".join(f"{i}|Caf\xe9 {i} (1995)|01-Jan-1995||http://x|{flags(i)}\n" for i in range(1, n_items + 1))
    (d / "u.item").write_bytes(items.encode("latin-1"))
    (d / "u.user").write_text("".join(f"{u}|{20 + u}|{'MF'[u % 2]}|occ{u % 3}|00000\n" for u in range(1, n_users + 1)))
    n = len(rows)
    for f in range(5):  # test: an equal slice per fold
        lo, hi = f * n // 5, (f + 1) * n // 5
        (d / f"u{f + 1}.test").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows[lo:hi]))
        (d / f"u{f + 1}.base").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows[:lo] + rows[hi:]))
    return d, rows


def test_reader_folds_titles_and_unknown_ids(tmp_path):
    d, rows = write_ml(tmp_path)
    seen = []
    for f in range(5):
        ds = load_dataset("movielens", tmp_path, DataConfig(name="movielens", folds=5, fold=f))
        assert ds.source["split"].startswith(f"fold {f} of 5") and f"u{f + 1}.base" in ds.source["split"]
        assert len(ds.x_train) + len(ds.x_test) == len(rows)
        assert ds.x_train.dtype == torch.int64 and ds.x_train.shape[1] == 24
        assert ds.y_train.shape == (len(ds.x_train), 1) and float(ds.y_train.min()) >= 1
        seen.append(ds.y_test[:, 0].tolist())
        titles = ds.info.extra["ratings"]["titles"]
        assert titles[0].startswith("Café")  # Latin-1 decoded
        assert int(ds.x_train[:, :2].min()) >= 1  # training ids all known
    assert sum(len(s) for s in seen) == len(rows)  # the five test parts cover the ratings once
    # a user only in the test file: index 0, said in a warning, not dropped
    (d / "u1.test").write_text((d / "u1.test").read_text() + "99\t1\t4\t1\n")
    (d / "u.data").write_text((d / "u.data").read_text() + "99\t1\t4\t1\n")
    ds = load_dataset("movielens", tmp_path, DataConfig(name="movielens"))
    assert ds.source["split"].startswith("official fold u1")
    # (u1.test holds every rating of user 1 here, so user 1 is unknown too)
    assert int(ds.x_test[-1, 0]) == 0 and len(ds.x_test) == len(rows) // 5 + 1
    assert ds.source["unknown_test_users"] == int((ds.x_test[:, 0] == 0).sum()) == 8
    assert any("reserved index 0" in w for w in ds.warnings)
    # a damaged fold file with a u.data that is not GroupLens': a clear error, nothing rebuilt
    (d / "u1.test").write_text("1\t2\t3\t4\n")
    with pytest.raises(DataError, match="truncated or damaged.*cannot be rebuilt"):
        load_dataset("movielens", tmp_path, DataConfig(name="movielens"))


def test_malformed_lines_named(tmp_path):
    d, _ = write_ml(tmp_path)
    for bad, why in [("1\t2\t3\n", "3 fields"), ("1\tx\t3\t5\n", "integers"), ("1\t2\t7\t5\n", "outside 1..5")]:
        (d / "u2.base").write_text("1\t1\t4\t5\n" + bad)
        with pytest.raises(DataError, match=rf"u2.base' line 2: .*{why}"):
            load_dataset("movielens", tmp_path, DataConfig(name="movielens", folds=5, fold=1))
    with pytest.raises(ConfigError, match="five official folds|5 official folds"):
        load_dataset("movielens", tmp_path, DataConfig(name="movielens", folds=10, fold=0))
    with pytest.raises(DataError, match="movielens/ml-100k"):
        load_dataset("movielens", tmp_path / "nowhere", DataConfig(name="movielens"))


def test_mf_forward_by_hand():
    m = create_model("mf", in_shape=(24,), num_classes=1, num_users=4, num_items=5, dim=3)
    with torch.no_grad():
        for t in (m.user_factors, m.item_factors, m.user_bias, m.item_bias):
            t.weight.normal_()
            t.weight[0].zero_()  # as built: the reserved "unknown" row is zero (padding_idx: never updated)
        m.global_bias.fill_(0.25)
        x = torch.tensor([[1, 2] + [0] * 22, [3, 4] + [0] * 22, [0, 4] + [0] * 22])
        out = m(x)
    P, Q, bu, bi = m.user_factors.weight, m.item_factors.weight, m.user_bias.weight[:, 0], m.item_bias.weight[:, 0]
    for row, (u, i) in enumerate([(1, 2), (3, 4)]):
        want = 0.25 + bu[u] + bi[i] + (P[u] * Q[i]).sum()
        assert float(out[row, 0]) == pytest.approx(float(want), abs=1e-6)
    # unknown user (index 0): its factors and bias stay zero -> mu + b_i
    assert float(out[2, 0]) == pytest.approx(0.25 + float(bi[4]), abs=1e-6)
    with pytest.raises(TypeError, match="integer indices"):
        m(torch.randn(2, 24))


def test_row_l2_gradient_is_per_rating_penalty():
    m = create_model("mf", in_shape=(2,), num_classes=1, num_users=3, num_items=3, dim=2, l2=0.5)
    x = torch.tensor([[1, 1], [1, 2]])
    m(x).sum().mul(0).backward()  # only the penalty's gradient remains
    P = m.user_factors.weight
    assert torch.allclose(m.user_factors.weight.grad[1], 0.5 * 2 * P[1].detach() / 2)  # user 1 in both rows
    assert float(m.user_factors.weight.grad[0].abs().sum()) == 0.0


def test_neumf_shapes():
    m = create_model("neumf", in_shape=(24,), num_classes=1, num_users=4, num_items=5,
                     feature_sizes=(8, 3, 4) + (2,) * 19, dim=4, width=8)
    x = torch.zeros(3, 24, dtype=torch.long)
    x[:, 0], x[:, 1], x[:, 2] = torch.tensor([1, 2, 3]), torch.tensor([1, 4, 0]), 2
    assert m(x).shape == (3, 1)


def test_hit_ratio_ndcg_by_hand():
    pos = torch.tensor([5.0, 1.0, 3.0])
    neg = torch.tensor([[1.0, 2.0, 3.0], [2.0, 3.0, 4.0], [3.0, 4.0, 0.0]])
    # ranks: 0 (best), 3 (last), 2 (a tie counts against it)
    m = hit_ratio_ndcg(pos, neg, k=2)
    assert m["hr"] == pytest.approx(1 / 3)
    assert m["ndcg"] == pytest.approx(1.0 / 3)
    m = hit_ratio_ndcg(pos, neg, k=3)
    assert m["hr"] == pytest.approx(2 / 3)
    assert m["ndcg"] == pytest.approx((1.0 + 1.0 / np.log2(4)) / 3)


def test_leave_one_out_and_negatives():
    user = np.array([1, 1, 1, 2, 2, 3])
    item = np.array([1, 2, 3, 1, 2, 3])
    rating = np.array([5, 4, 2, 3, 4, 1.0])
    time = np.array([10, 30, 40, 5, 1, 9])
    tr, te = leave_one_out(user, item, rating, time)
    assert te.tolist() == [1, 4]  # user 1's latest positive (time 30), user 2's only one; user 3 none
    assert sorted(tr.tolist() + te.tolist()) == list(range(6))
    neg = sample_negatives(np.array([1, 2]), {1: {1, 2}, 2: {5}}, num_items=10, n_neg=5, seed=3)
    assert neg.shape == (2, 5)
    assert not set(neg[0]) & {0, 1, 2} and not set(neg[1]) & {0, 5}
    assert all(len(set(r)) == 5 for r in neg)
    assert (neg == sample_negatives(np.array([1, 2]), {1: {1, 2}, 2: {5}}, 10, 5, seed=3)).all()


def test_autorec_forward_by_hand_and_its_ratings_travel_with_the_weights():
    torch.manual_seed(0)
    m = create_model("autorec", in_shape=(24,), num_classes=1, num_users=4, num_items=5, hidden=3, l2=10.0)
    x_train = torch.tensor([[1, 2], [3, 2], [2, 4], [0, 1]])  # the last row: an unknown user, left out of R
    m.init_from_data(x_train, targets=torch.tensor([[4.0], [2.0], [5.0], [3.0]]))
    R = torch.zeros(5, 4)
    R[2, 1], R[2, 3], R[4, 2] = 4.0, 2.0, 5.0
    assert torch.equal(m.ratings, R) and m.train_ratings == 3
    with torch.no_grad():
        m.global_bias.fill_(0.5)
        m.decoder_bias.normal_()
        x = torch.tensor([[3, 2], [1, 4], [0, 4], [2, 0]])
        out = m(x)
    W, b, V, c = m.encoder.weight, m.encoder.bias, m.decoder, m.decoder_bias
    for row, (u, i) in enumerate([(3, 2), (1, 4)]):
        want = 0.5 + V[u] @ torch.sigmoid(W @ R[i] + b) + c[u]
        assert float(out[row, 0]) == pytest.approx(float(want), abs=1e-6)
    assert out[2:, 0].tolist() == [0.5, 0.5]  # an unknown user or item: mu
    # lambda / 2 |W|^2 per training rating: the gradient lambda / N * W beside the data term
    m.zero_grad()
    m(x).sum().mul(0).backward()
    assert torch.allclose(m.encoder.weight.grad, 10.0 / 3 * W.detach())
    # the rating vectors are a buffer: a model rebuilt from its config and state predicts the same
    again = create_model(**m.config)
    again.load_state_dict(m.state_dict())
    with torch.no_grad():
        assert torch.equal(again(x), out)
    with pytest.raises(ValueError, match="needs targets"):
        m.init_from_data(x_train)


def test_ensemble_members_scale_their_penalty_by_their_loss_share():
    x = torch.tensor([[1, 1], [1, 2]])
    for name, kw in [("mf", {"dim": 2, "l2": 0.5}), ("autorec", {"hidden": 2, "l2": 3.0})]:
        one = create_model(name, in_shape=(2,), num_classes=1, num_users=3, num_items=3, **kw)
        ens = create_model(name, in_shape=(2,), num_classes=1, num_users=3, num_items=3, ensemble=4, **kw)
        assert one.loss_share == 1.0 and all(m.loss_share == 0.25 for m in ens.members)
    m = ens.members[0] if name == "mf" else create_model("mf", in_shape=(2,), num_classes=1, num_users=3,
                                                           num_items=3, dim=2, l2=0.5, ensemble=4).members[0]
    m(x).sum().mul(0).backward()  # Task.member_loss weighs each member 1/M: so does its penalty
    assert torch.allclose(m.user_factors.weight.grad[1], 0.25 * 0.5 * 2 * m.user_factors.weight[1].detach() / 2)

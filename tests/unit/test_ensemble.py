"""The ensemble of M members (models/ensemble.py): each member trains on its own loss, the
evaluated output is the members' mean, costs add up, and M = 1 is the plain model."""

import pytest
import torch
import torch.nn.functional as F

from layerwise.config import load_config
from layerwise.data import DatasetInfo
from layerwise.models import create_model
from layerwise.tasks import create_task


def test_members_train_apart_and_evaluate_as_their_mean():
    torch.manual_seed(0)
    m = create_model("mlp", in_shape=(5,), num_classes=2, depth=2, width=8, ensemble=3)  # any family takes it
    torch.manual_seed(0)
    single = create_model("mlp", in_shape=(5,), num_classes=2, depth=2, width=8)
    x = torch.randn(4, 5)
    m.train()
    out = m(x)
    assert out.shape == (4, 3, 2)
    for i, member in enumerate(m.members):
        assert torch.equal(out[:, i], member(x))
    assert torch.equal(out[:, 0], single(x))  # member 0 is the model one seed would build alone
    assert not torch.allclose(out[:, 0], out[:, 1])  # independently initialized
    m.eval()
    assert torch.allclose(m(x), out.mean(1), atol=1e-6)
    assert m.num_params() == sum(p.numel() for p in m.parameters()) == 3 * single.num_params()
    assert m.flops_per_example() == 3 * single.flops_per_example()
    assert create_model(**m.config).num_members == 3  # the saved config rebuilds an ensemble
    with pytest.raises(ValueError, match="must be an int >= 1"):
        create_model("mlp", in_shape=(5,), num_classes=2, ensemble=0)


@pytest.mark.parametrize("kind", ["classify", "regress"])
def test_member_loss_is_the_mean_of_each_members_loss(kind):
    torch.manual_seed(0)
    cfg = load_config(None, [])
    if kind == "classify":
        info = DatasetInfo(name="t", in_shape=(5,), num_classes=3, classes=["a", "b", "c"], scale=1.0, mean=(0.0,), std=(1.0,))
        y = torch.tensor([0, 2, 1, 2])
    else:
        info = DatasetInfo(name="t", in_shape=(5,), num_classes=1, classes=["y"], scale=1.0, mean=(0.0,), std=(1.0,), task="regress")
        y = torch.randn(4, 1) * 3 + 7
    task = create_task(info, cfg)
    task.fit(y if kind == "regress" else None)
    out = torch.randn(4, 2, task.num_outputs)
    by_hand = sum(task.loss(out[:, i], y) for i in range(2)) / 2
    assert task.member_loss(out, y).item() == pytest.approx(by_hand.item(), rel=1e-6)
    if kind == "classify":
        ce = sum(F.cross_entropy(out[:, i], y, reduction="sum") for i in range(2)) / 2
        assert task.member_loss(out, y).item() == pytest.approx(ce.item(), rel=1e-6)


def test_any_family_is_an_ensemble_and_data_initialization_reaches_every_member():
    torch.manual_seed(0)
    m = create_model("convnet", in_shape=(3, 16, 16), num_classes=4, ensemble=2)
    assert m.num_members == 2 and hasattr(m, "init_from_data")
    x = torch.randn(64, 3, 16, 16)
    before = m.members[1].stem.weight.clone()
    m.init_from_data(x)
    assert torch.equal(m.members[0].stem.weight, m.members[1].stem.weight)  # the data's whitening in both
    assert not torch.equal(before, m.members[1].stem.weight)
    m.eval()
    assert m(x[:3]).shape == (3, 4)


def test_an_ensemble_of_text_models_takes_padded_token_ids():
    torch.manual_seed(0)
    m = create_model("text-transformer", in_shape=(16,), num_classes=2, vocab_size=50, n_layer=1, n_embd=16,
                     n_head=2, ensemble=2)
    x = torch.randint(1, 50, (3, 16))
    x[0, 10:] = 0  # padding
    m.train()
    assert m(x).shape == (3, 2, 2)
    m.eval()
    assert torch.allclose(m(x), torch.stack([mm(x) for mm in m.members], 1).mean(1), atol=1e-6)


def test_training_memory_grows_with_members_not_their_square():
    # slicing one stacked (B, M, F) feature tensor per member made backward materialize a full
    # (B, M, F) gradient for each of the M slices: memory ~ M^2 (4.8 GB at M=250 on a 3x256 MLP,
    # 0.9 GB now). Each member's own forward is stacked instead: no per-member select in the graph.
    m = create_model("mlp", in_shape=(5,), num_classes=2, depth=2, width=8, ensemble=4)
    m.train()
    seen, todo = set(), [m(torch.randn(3, 5)).grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        todo.extend(f for f, _ in fn.next_functions)
    names = {type(fn).__name__ for fn in seen}
    assert "StackBackward0" in names and "SelectBackward0" not in names, names

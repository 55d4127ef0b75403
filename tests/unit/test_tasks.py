"""Each task's loss and metrics against a hand computation or scikit-learn, summed over uneven
batches (the metrics are exact sums, weighted by examples or tokens), and what predict shows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn import metrics as skm

from layerwise.data import DatasetInfo
from layerwise.tasks import create_task
from layerwise.train.metrics import Accumulator

BATCHES = (30, 30, 30, 7)  # 97 examples in uneven batches: a short last one


def _over_batches(task, out: torch.Tensor, y: torch.Tensor) -> dict:
    acc = Accumulator(task.stats_size, torch.device("cpu"))
    start = 0
    for b in BATCHES:
        o, t = out[start:start + b], y[start:start + b]
        loss = task.loss(o, t)
        acc.add(task.stats(o, t, loss), task.count(t))
        start += b
    sums, count, _ = acc.read()
    return task.metrics(sums, count)


def test_classify_metrics_match_scikit_learn():
    g = torch.Generator().manual_seed(0)
    C = 13
    out = torch.randn(97, C, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (97,), generator=g)
    y[:10] = out[:10].argmax(1)  # some right answers
    info = DatasetInfo("t", (4,), C, [f"c{i}" for i in range(C)], 1.0, [0.0] * 4, [1.0] * 4)
    m = _over_batches(create_task(info), out, y)
    pred = out.argmax(1).numpy()
    assert m["loss"] == pytest.approx(F.cross_entropy(out, y).item(), abs=1e-9)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert m["top5_accuracy"] == pytest.approx(skm.top_k_accuracy_score(y, out.numpy(), k=5, labels=range(C)), abs=1e-12)
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=1e-9)
    assert np.array_equal(np.array(m["confusion"]), skm.confusion_matrix(y, pred, labels=range(C)))
    # ten classes or fewer: no top-5
    info10 = DatasetInfo("t", (4,), 10, [str(i) for i in range(10)], 1.0, [0.0] * 4, [1.0] * 4)
    assert "top5_accuracy" not in _over_batches(create_task(info10), out[:, :10], y % 10)


def test_classify_with_label_smoothing_and_soft_targets():
    from layerwise.config import load_config

    g = torch.Generator().manual_seed(1)
    out, y = torch.randn(16, 4, generator=g), torch.randint(0, 4, (16,), generator=g)
    info = DatasetInfo("t", (2,), 4, list("abcd"), 1.0, [0.0] * 2, [1.0] * 2)
    task = create_task(info, load_config(None, ["--train.label_smoothing=0.1"]))
    assert task.loss(out, y).item() == pytest.approx(F.cross_entropy(out, y, reduction="sum", label_smoothing=0.1).item())
    soft = F.one_hot(y, 4).float() * 0.7 + 0.075  # mixup-like soft targets
    assert task.loss(out, soft).item() == pytest.approx(
        F.cross_entropy(out, soft, reduction="sum", label_smoothing=0.1).item(), rel=1e-6)
    stats = task.stats(out, soft, task.loss(out, soft))
    assert stats[1].item() == (out.argmax(1) == y).sum().item()  # the soft target's argmax is the label


def test_multilabel_metrics_match_scikit_learn():
    g = torch.Generator().manual_seed(2)
    L = 6
    out = torch.randn(97, L, generator=g, dtype=torch.float64)
    y = (torch.rand(97, L, generator=g) < 0.3).double()
    y[:, 5] = 0  # a label that never occurs
    info = DatasetInfo("t", (4,), L, [f"l{i}" for i in range(L)], 1.0, [0.0] * 4, [1.0] * 4, task="multilabel")
    task = create_task(info)
    m = _over_batches(task, out, y)
    pred = (torch.sigmoid(out) >= 0.5).numpy()
    yt = y.numpy().astype(bool)
    expected_loss = F.binary_cross_entropy_with_logits(out, y, reduction="none").mean(1).mean().item()
    assert m["loss"] == pytest.approx(expected_loss, abs=1e-9)
    assert m["micro_f1"] == pytest.approx(skm.f1_score(yt, pred, average="micro", zero_division=0), abs=1e-9)
    assert m["macro_f1"] == pytest.approx(skm.f1_score(yt, pred, average="macro", zero_division=0), abs=1e-9)
    assert m["exact_match"] == pytest.approx(skm.accuracy_score(yt, pred), abs=1e-12)
    ap = task.final_metrics(out, y)["map"]
    assert ap == pytest.approx(skm.average_precision_score(yt[:, :5], out.numpy()[:, :5], average="macro"), abs=1e-9)


def test_regression_metrics_in_the_target_units_match_scikit_learn():
    g = torch.Generator().manual_seed(3)
    y = torch.stack([200_000 + 90_000 * torch.randn(97, generator=g), torch.randn(97, generator=g) - 3], 1)
    info = DatasetInfo("t", (4,), 2, ["price", "logS"], 1.0, [0.0] * 4, [1.0] * 4, task="regress")
    task = create_task(info)
    task.fit(y[:60])  # the training split's mean and std
    assert task.mean[0].item() == pytest.approx(y[:60, 0].double().mean().item())
    pred = y.double() + torch.stack([30_000 * torch.randn(97, generator=g), 0.5 * torch.randn(97, generator=g)], 1).double()
    out = (pred - task.mean) / task.std  # what the model would output: standardized targets
    m = _over_batches(task, out.float(), y)
    for j, col in enumerate(["price", "logS"]):
        p = task.to_units(out.float())[:, j].numpy()
        assert m[f"rmse_{col}"] == pytest.approx(math.sqrt(skm.mean_squared_error(y[:, j], p)), rel=1e-6)
        assert m[f"mae_{col}"] == pytest.approx(skm.mean_absolute_error(y[:, j], p), rel=1e-6)
        assert m[f"r2_{col}"] == pytest.approx(skm.r2_score(y[:, j], p), abs=1e-6)
    assert m["r2"] == pytest.approx((m["r2_price"] + m["r2_logS"]) / 2) and task.headline == "r2"
    z = (y.double() - task.mean) / task.std
    assert m["loss"] == pytest.approx(((out - z) ** 2).sum(1).mean().item(), rel=1e-6)
    # huber and l1 on the standardized targets
    for kind, fn in (("huber", lambda d: F.huber_loss(d, torch.zeros_like(d), reduction="none", delta=1.0)),
                     ("l1", lambda d: d.abs())):
        from layerwise.config import load_config
        t = create_task(info, load_config(None, [f"--task.loss={kind}"]))
        t.fit(y[:60])
        assert t.loss(out.float(), y).item() == pytest.approx(fn((out - z).float()).sum().item(), rel=1e-5)


def test_regression_metrics_exact_to_1e9_in_float64():
    g = torch.Generator().manual_seed(4)
    y = torch.randn(97, 1, generator=g, dtype=torch.float64) * 3 + 1
    info = DatasetInfo("t", (4,), 1, ["y"], 1.0, [0.0] * 4, [1.0] * 4, task="regress")
    task = create_task(info)
    task.fit(y)
    out = torch.randn(97, 1, generator=g, dtype=torch.float64)
    m = _over_batches(task, out, y)
    p = task.to_units(out)[:, 0].numpy()
    assert m["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(y[:, 0], p)), abs=1e-9)
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y[:, 0], p), abs=1e-9)
    assert m["r2"] == pytest.approx(skm.r2_score(y[:, 0], p), abs=1e-9)
    assert task.headline == "rmse"


def test_language_model_metrics():
    g = torch.Generator().manual_seed(5)
    out = torch.randn(9, 7, 11, generator=g, dtype=torch.float64)
    y = torch.randint(0, 11, (9, 7), generator=g)
    info = DatasetInfo("t", (7,), 11, [], 1.0, [], [], task="lm", extra={"bytes_per_token": 1.5, "chars_per_token": 1.25})
    task = create_task(info)
    acc = Accumulator(task.stats_size, torch.device("cpu"))
    for part in (slice(0, 4), slice(4, 9)):  # micro-batches holding 28 and 35 target tokens
        loss = task.loss(out[part], y[part])
        acc.add(task.stats(out[part], y[part], loss), task.count(y[part]))
    sums, count, _ = acc.read()
    m = task.metrics(sums, count)
    ce = F.cross_entropy(out.flatten(0, 1), y.flatten()).item()
    assert count == 63 and m["loss"] == pytest.approx(ce, abs=1e-9)
    assert m["perplexity"] == pytest.approx(math.exp(ce)) and m["bits_per_token"] == pytest.approx(ce / math.log(2))
    assert m["bits_per_byte"] == pytest.approx(ce / math.log(2) / 1.5)
    assert m["bits_per_char"] == pytest.approx(ce / math.log(2) / 1.25)
    assert m["accuracy"] == pytest.approx((out.argmax(-1) == y).double().mean().item())


def test_predict_presents_each_task():
    info = DatasetInfo("t", (2,), 3, ["cat", "dog", "eel"], 1.0, [0.0] * 2, [1.0] * 2)
    out = torch.tensor([[0.0, 2.0, 1.0]])
    r = create_task(info).present(out, top_k=2)[0]
    assert [t["class"] for t in r["top"]] == ["dog", "eel"] and r["top"][0]["probability"] == pytest.approx(
        math.exp(2) / (1 + math.exp(2) + math.e))
    assert create_task(info).describe(r).startswith("dog (0.665)")
    ml = DatasetInfo("t", (2,), 3, ["red", "round", "soft"], 1.0, [0.0] * 2, [1.0] * 2, task="multilabel")
    r = create_task(ml).present(torch.tensor([[2.0, -1.0, 0.1]]))[0]
    assert r["labels"] == ["red", "soft"] and r["probabilities"]["round"] == pytest.approx(1 / (1 + math.e))
    reg = DatasetInfo("t", (2,), 1, ["price"], 1.0, [0.0] * 2, [1.0] * 2, task="regress")
    task = create_task(reg, state={"mean": [100.0], "std": [10.0]})
    r = task.present(torch.tensor([[1.5]]))[0]
    assert r == {"values": {"price": 115.0}} and task.describe(r) == "price = 115"


def test_label_smoothing_applies_to_classes_and_tokens_and_is_refused_elsewhere():
    from layerwise.config import ConfigError, load_config

    cfg = load_config(None, ["--train.label_smoothing=0.1"])
    g = torch.Generator().manual_seed(6)
    out, y = torch.randn(2, 5, 9, generator=g), torch.randint(0, 9, (2, 5), generator=g)
    lm = create_task(DatasetInfo("t", (5,), 9, [], 1.0, [], [], task="lm"), cfg)
    want = F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="sum", label_smoothing=0.1)
    assert lm.loss(out, y).item() == pytest.approx(want.item(), rel=1e-6)
    for kind in ("regress", "multilabel"):
        info = DatasetInfo("t", (2,), 2, ["a", "b"], 1.0, [0.0] * 2, [1.0] * 2, task=kind)
        with pytest.raises(ConfigError, match=f"the task '{kind}' has none"):
            create_task(info, cfg)


@pytest.mark.parametrize("arg, kind", [("--task.target_transform=log", "classify"), ("--task.threshold=0.3", "regress"),
                                       ("--task.clip_predictions=true", "multilabel"), ("--task.huber_delta=2", "regress")])
def test_task_options_for_another_task_are_refused(arg, kind):
    from layerwise.config import ConfigError, load_config

    info = DatasetInfo("t", (2,), 2, ["a", "b"], 1.0, [0.0] * 2, [1.0] * 2, task=kind)
    with pytest.raises(ConfigError, match=f"does nothing for the task '{kind}'"):
        create_task(info, load_config(None, [arg]))


@pytest.mark.parametrize("C", [2, 10, 37])  # 37: top-5 counted
def test_classify_training_sums_equal_the_weighted_path(C):
    """The training step's sums (no keep: one count of the confusion, correct read off its
    diagonal) equal those of the general path (keep all) exactly, hard and soft targets."""
    info = DatasetInfo("t", (2,), C, [str(i) for i in range(C)], 1.0, [0.0] * 2, [1.0] * 2)
    task = create_task(info)
    g = torch.Generator().manual_seed(C)
    for _ in range(10):
        out, y = torch.randn(64, C, generator=g), torch.randint(0, C, (64,), generator=g)
        loss = torch.rand((), generator=g) * 100
        keep = torch.ones(64, dtype=torch.bool)
        assert task.stats(out, y, loss).equal(task.stats(out, y, loss, keep))
        soft = F.one_hot(y, C).float() * 0.7 + 0.3 / C
        assert task.stats(out, soft, loss).equal(task.stats(out, soft, loss, keep))
    stats = task.stats(out, y, loss)
    assert stats[1].item() == (out.argmax(1) == y).sum().item()
    assert stats[3:].sum().item() == 64


def test_confusion_counts_without_bincount_equal_bincounts():
    """The way taken off the CPU (CUDA's bincount reads its input's range on the host, a sync per
    training step): index_put_ with accumulate gives the same counts, weighted or not."""
    from layerwise.tasks.classify import confusion_counts
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 100, (500,), generator=g)
    w = (torch.rand(500, generator=g) < 0.7).double()
    assert confusion_counts(codes, 100, bincount=False).equal(torch.bincount(codes, minlength=100).double())
    assert confusion_counts(codes, 100, w, bincount=False).equal(torch.bincount(codes, weights=w, minlength=100))
    assert confusion_counts(codes, 100).equal(torch.bincount(codes, minlength=100))  # the CPU's way

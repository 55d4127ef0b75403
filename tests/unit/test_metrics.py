import json

import pytest
import torch

from layerwise.train.metrics import Accumulator, MetricsLog, plot_metrics


def test_accumulator_sums_on_device_and_resets():
    acc = Accumulator(2, torch.device("cpu"))
    acc.add(torch.tensor([1.5, 2.0], dtype=torch.float64), 3)
    acc.add(torch.tensor([0.5, 0.0], dtype=torch.float64), 1)
    assert acc.read() == ([2.0, 2.0], 4, 0)
    assert acc.read() == ([0.0, 0.0], 0, 0)  # reset after reading


def test_a_dropped_step_stays_out_of_the_sums_and_is_counted_apart():
    acc = Accumulator(2, torch.device("cpu"))
    acc.stage(torch.tensor([1.0, 1.0], dtype=torch.float64), 2)
    acc.commit()
    acc.stage(torch.tensor([float("nan"), 1.0], dtype=torch.float64), 2)  # a step with a NaN loss
    acc.stage(torch.tensor([3.0, 0.0], dtype=torch.float64), 2)
    acc.drop()
    acc.stage(torch.tensor([2.0, 2.0], dtype=torch.float64), 2)
    acc.commit()
    assert acc.read() == ([3.0, 3.0], 4, 1)
    acc.stage(torch.tensor([float("inf"), 0.0], dtype=torch.float64), 2)
    acc.drop()
    assert acc.read() == ([0.0, 0.0], 0, 1)


def test_log_truncates_replayed_steps_on_resume(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl", tensorboard=False)
    for step in (10, 20, 30):
        log.write({"kind": "train", "step": step, "loss": 1.0 / step})
    log.truncate_after(20)
    log.write({"kind": "train", "step": 30, "loss": 0.5})
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [10, 20, 30] and lines[-1]["loss"] == 0.5


def test_plots_are_written(tmp_path):
    recs = [{"kind": "train", "step": s, "loss": 1 / s, "accuracy": 1 - 1 / s, "lr": 0.1} for s in range(1, 20)]
    recs += [{"kind": "test", "step": 19, "loss": 0.1, "accuracy": 0.9}]
    paths = plot_metrics(recs, tmp_path / "plots")
    assert sorted(p.name for p in paths) == ["accuracy.png", "loss.png", "lr.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000 for p in paths)


def test_tensorboard_receives_the_scalars(tmp_path):
    pytest.importorskip("tensorboard", reason="optional extra: pip install layerwise[tensorboard]")
    log = MetricsLog(tmp_path / "metrics.jsonl", tensorboard=True)
    log.write({"kind": "train", "step": 1, "loss": 2.0})
    log.close()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ev = EventAccumulator(str(tmp_path / "tensorboard"))
    ev.Reload()
    assert [s.value for s in ev.Scalars("train/loss")] == [2.0]


def test_settle_on_the_device_commits_or_drops_like_the_host():
    # the Trainer's sync-free step: the decision is a device flag; the count waits on the device
    acc = Accumulator(2, torch.device("cpu"))
    acc.stage(torch.tensor([1.0, 1.0], dtype=torch.float64), 2)
    acc.settle(torch.tensor(True))
    acc.stage(torch.tensor([float("nan"), 1.0], dtype=torch.float64), 3)  # a NaN selected away, not times 0
    acc.stage(torch.tensor([3.0, 0.0], dtype=torch.float64), 3)
    acc.settle(torch.tensor(False))
    acc.count_skipped()
    acc.stage(torch.tensor([2.0, 2.0], dtype=torch.float64), 4)
    acc.settle(torch.tensor(True))
    assert acc.state_dict()["count"] == 6
    assert acc.read() == ([3.0, 3.0], 6, 1)
    assert acc.read() == ([0.0, 0.0], 0, 0)


def _classify_task(C: int):
    from layerwise.data.datasets import DatasetInfo
    from layerwise.tasks import create_task
    return create_task(DatasetInfo("t", (2,), C, [f"c{i}" for i in range(C)], 1.0, [0.0] * 2, [1.0] * 2))


@pytest.mark.parametrize("C", [3, 12])  # 12: top-5 counted too
def test_deferred_sums_equal_the_per_step_sums_bit_for_bit(C):
    """Training steps whose sums wait for the log interval (Deferred, computed many at once) give
    the sums, float64 loss included, of stats computed at every step: over taken and skipped steps,
    several micro-batches per step, a short last batch, soft targets, more steps than MAX_DEFERRED,
    and a state_dict read in between."""
    from layerwise.train.metrics import MAX_DEFERRED, Deferred
    task = _classify_task(C)
    g = torch.Generator().manual_seed(C)
    now = Accumulator(task.stats_size, torch.device("cpu"))
    later = Accumulator(task.stats_size, torch.device("cpu"), stats=task.stats)
    for step in range(MAX_DEFERRED + 37):
        micro = 1 + step % 3
        for _ in range(micro):
            B = 5 if step % 11 == 0 else 16  # a short batch now and then
            out = torch.randn(B, C, generator=g) * 3
            y = torch.randint(0, C, (B,), generator=g)
            if step % 7 == 0:  # mixup-like soft targets
                y = torch.nn.functional.one_hot(y, C).float() * 0.8 + 0.2 / C
            loss = (torch.rand((), generator=g) * 10 ** (step % 5)).float()  # magnitudes that round differently
            now.stage(task.stats(out, y, loss), B)
            later.stage(Deferred(out, y, loss), B)
        if step % 13 == 5:
            now.drop()
            later.drop()
        else:
            now.commit()
            later.commit()
        if step == 40:
            assert later.state_dict()["sums"].equal(now.state_dict()["sums"])  # a checkpoint folds them
    a, b = now.read(), later.read()
    assert a == b  # sums (as floats), count, skipped
    assert later.read()[1] == 0  # and reset


def test_deferred_sums_settled_on_the_device_match_the_host():
    """The sync-free step's settle() computes a Deferred micro-batch's sums at once, so that a
    skipped step's NaN is selected away as for a tensor."""
    from layerwise.train.metrics import Deferred
    task = _classify_task(4)
    g = torch.Generator().manual_seed(0)
    host = Accumulator(task.stats_size, torch.device("cpu"))
    dev = Accumulator(task.stats_size, torch.device("cpu"), stats=task.stats)
    for step in range(9):
        out, y = torch.randn(8, 4, generator=g), torch.randint(0, 4, (8,), generator=g)
        loss = torch.tensor(float("nan")) if step == 3 else torch.rand((), generator=g)
        host.stage(task.stats(out, y, loss), 8)
        dev.stage(Deferred(out, y, loss), 8)
        taken = torch.tensor(step != 3)
        dev.settle(taken)
        if step == 3:
            host.drop()
        else:
            host.commit()
    sums, n = dev.totals()
    assert sums.tolist() == host.read()[0] and n == 64


def test_a_deferred_micro_batch_needs_the_tasks_stats():
    from layerwise.train.metrics import Deferred
    acc = Accumulator(6, torch.device("cpu"))
    with pytest.raises(ValueError, match="stats=task.stats"):
        acc.stage(Deferred(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), torch.zeros(())), 2)

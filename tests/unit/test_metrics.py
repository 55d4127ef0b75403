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

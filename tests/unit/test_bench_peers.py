"""The pure parts of the side-by-side harness (benchmarks/peers.py, benchmarks/recipes.py and their
helpers): the child's result line, medians, spreads and same-round ratios, the epoch clock's
steady state and time to target, the table, and the paths kept out of the JSON. The harness
itself (fresh processes, the peers' environments) is never run by the test suite."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "benchmarks" / "peers"))

import _child
import _common
import peers

import recipes


def test_the_last_result_line_is_read_and_a_missing_one_is_an_error():
    out = "noise\nBENCH_RESULT {\"a\": 1}\nmore noise\nBENCH_RESULT {\"a\": 2.5}\ntrailing log line\n"
    assert _child.parse_result(out) == {"a": 2.5}
    with pytest.raises(_child.ChildError, match="no result line"):
        _child.parse_result("Traceback (most recent call last):\n  ...\n")


def test_a_failing_child_is_reported_with_its_stderr(tmp_path):
    script = tmp_path / "child.py"
    script.write_text("import sys\nsys.stderr.write('DataError: no mnist here\\n')\nsys.exit(3)\n")
    with pytest.raises(_child.ChildError, match=r"exit status 3: DataError: no mnist here"):
        _child.run_child([sys.executable, str(script)])
    script.write_text("from _child import emit\nemit({'steady_epoch_s': 1.5})\n")
    r = _child.run_child([sys.executable, str(script)], env=_child.child_env(1, PYTHONPATH=str(REPO / "benchmarks")))
    assert r["steady_epoch_s"] == 1.5 and r["process_s"] > 0


def test_summary_and_same_round_ratios():
    assert _child.summarize([3.0, None, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert _child.summarize([None]) is None
    assert _child.round_ratios([2.0, 3.0, None], [1.0, 2.0, 4.0]) == [2.0, 1.5, None]
    assert _child.round_ratios([1.0], [0.0]) == [None]


def _run(contestant, rnd, epoch, **kw):
    return {"contestant": contestant, "round": rnd, "case": "mlp", "steady_epoch_s": epoch, **kw}


def test_each_ratio_is_against_the_plain_loop_of_the_same_round():
    # round 0 ran on a quiet machine, round 1 on a busy one (everything 2x slower): the per-round
    # ratios are both 1.2, while a ratio of medians across rounds would mix the two
    runs = [_run("plain", 0, 1.0), _run("layerwise", 0, 1.2), _run("plain", 1, 2.0), _run("layerwise", 1, 2.4),
            _run("keras", 1, 3.0)]
    s = peers.summarize_case(runs, ["plain", "layerwise", "keras"])
    r = s["layerwise"]["ratio_to_plain"]["steady_epoch_s"]
    assert r["median"] == pytest.approx(1.2) and r["min"] == pytest.approx(1.2) and r["max"] == pytest.approx(1.2)
    assert s["keras"]["ratio_to_plain"]["steady_epoch_s"] == {"median": 1.5, "min": 1.5, "max": 1.5, "n": 1}
    assert s["plain"]["steady_epoch_s"]["median"] == pytest.approx(1.5)
    assert "ratio_to_plain" not in s["plain"]
    assert s["layerwise"]["time_to_target_s"] is None  # not reported: not reached
    table = peers.format_table({"mlp": s}, {"mlp": 0.97})
    assert "1.200x" in table and "1.500x" in table and "not reached" in table


def test_differing_initial_weights_are_flagged():
    runs = [_run("plain", 0, 1.0, init_checksum=1.5), _run("keras", 0, 1.0, init_checksum=1.5)]
    assert peers.checksum_notes(runs) == []
    runs.append(_run("fastai", 0, 1.0, init_checksum=2.0))
    assert "initial weights differ" in peers.checksum_notes(runs)[0]


def test_the_json_carries_no_path_of_this_machine():
    text = peers.public_json({"recipe": str(peers.REPO / "recipes" / "mnist-fast.yaml"),
                              "data": "/somewhere/data/mnist", "note": "python at /somewhere/data",
                              "command": "peers.py --venvs /elsewhere/venvs"}, "/somewhere/data", "/elsewhere/venvs")
    assert json.loads(text) == {"recipe": "./recipes/mnist-fast.yaml", "data": "<data-root>/mnist",
                                "note": "python at <data-root>", "command": "peers.py --venvs <venvs>"}


def test_the_epoch_clock_keeps_its_evaluation_out_and_finds_the_target(monkeypatch):
    accs = iter([0.95, 0.975, 0.98])
    monkeypatch.setattr(_common, "accuracy", lambda predict, x, y: next(accs))
    clock = _common.EpochClock(lambda x: x, {"x_test": None, "y_test": None}, target=0.97)
    clock.start()
    for _ in range(3):
        clock.epoch_end()
    clock.seconds, clock.cpu_seconds = [3.0, 2.0, 4.0], [6.0, 4.0, 8.0]  # the clock's readings, made exact
    r = clock.result()
    assert r["steady_epoch_s"] == pytest.approx(3.0)  # epochs 2..N: (2 + 4) / 2; the first (warm-up) left out
    assert r["steady_epoch_cpu_s"] == pytest.approx(6.0)
    assert r["epochs_to_target"] == 2 and r["time_to_target_s"] == pytest.approx(5.0)
    assert r["test_accuracy"] == 0.98 and clock.reached
    clock.target = 0.99
    assert clock.result()["time_to_target_s"] is None and not clock.reached


def test_the_shared_models_start_from_the_same_weights_as_layerwise():
    from layerwise.models import create_model

    ref = _common.build_model("mlp", seed=0)
    torch.manual_seed(0)
    lw = create_model("mlp", in_shape=(1, 28, 28), num_classes=10, depth=2, width=512)
    assert _common.init_checksum(list(ref.parameters())) == _common.init_checksum(list(lw.parameters()))
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(ref(x), lw(x))
    cnn = _common.build_model("cnn", seed=0)
    assert cnn(x).shape == (4, 10) and cnn.num_params() == 16 * 9 + 16 + 32 * 144 + 32 + 1568 * 128 + 128 + 1290


def test_in_memory_batches_cover_the_data_once_per_epoch():
    x, y = torch.arange(10.0).reshape(10, 1), torch.arange(10)
    batches = list(_common.in_memory_batches(x, y, batch_size=4, seed=0))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    seen = torch.cat([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(10)) and torch.equal(torch.cat([b[0] for b in batches])[:, 0].long(), seen)


def test_recipes_totals_and_the_fastest_peer():
    r = recipes.with_totals({"import_s": 2.0, "setup_s": 1.0, "time_to_target_s": 10.0})
    assert r["to_target_total_s"] == pytest.approx(13.0)
    assert recipes.with_totals({"import_s": 2.0, "setup_s": 1.0, "time_to_target_s": None})["to_target_total_s"] is None
    summary = {"layerwise": {"time_to_target_s": {"median": 5.0}}, "keras": {"time_to_target_s": {"median": 30.0}},
               "fastai": {"time_to_target_s": {"median": 20.0}}, "lightning": {"time_to_target_s": None}}
    assert recipes.fastest_peer(summary) == ("fastai", 20.0)
    assert recipes.fastest_peer({"layerwise": summary["layerwise"], "lightning": {"time_to_target_s": None}}) is None

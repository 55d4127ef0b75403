"""Scaling sweeps: spec validation, grid naming and order, the results table a tiny digits sweep
writes (checked against the models' own parameter counts), resuming, and the run budget."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

import layerwise
from layerwise.config import ConfigError
from layerwise.scaling import (
    ScalingError,
    SweepRunError,
    load_spec,
    plan,
    read_table,
    run_sweep,
)

# every run: a one-hidden-layer MLP on the built-in digits, 20 steps of 32 examples, nothing extra written
TINY = ["--model.name=mlp", "--model.depth=1", "--data.batch_size=32", "--train.max_steps=20",
        "--train.eval_every=0", "--run.plots=false", "--run.tensorboard=false",
        "--train.threads=1"]  # one thread: a tiny MLP gains nothing from more, and a busy machine loses
WIDTHS = (8, 16, 32)


def write_spec(tmp_path: Path, spec: dict, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def tiny_spec(tmp_path: Path, **extra) -> Path:
    return write_spec(tmp_path, {"overrides": TINY,
                                 "axes": {"width": [f"--model.width={w}" for w in WIDTHS]}, **extra})


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The runs set torch's thread count for the whole process (train.threads); restore it."""
    import torch
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def count_fits(monkeypatch) -> list[str]:
    """Names of the runs the sweep trains from scratch (layerwise.fit calls), in order."""
    calls: list[str] = []
    real = layerwise.fit

    def counting(*args, **kw):
        calls.append(Path(kw["run_dir"]).name)
        return real(*args, **kw)

    monkeypatch.setattr(layerwise, "fit", counting)
    return calls


# ------------------------------------------------------------------------------------------ the spec

@pytest.mark.parametrize("spec, error, words", [
    ({"axis": {"a": ["--train.max_steps=2"]}}, ScalingError, ["unknown key 'axis'", "Did you mean 'axes'"]),
    ({"axes": {}}, ScalingError, ["axes must be a non-empty mapping"]),
    ({"axes": {"a": []}}, ScalingError, ["axis 'a' must be a non-empty list"]),
    ({"axes": {"a": ["train.max_steps=2"]}}, ConfigError, ["'train.max_steps=2'", "--section.key=value"]),
    ({"axes": {"a": ["--trainmax_steps=2"]}}, ConfigError, ["--trainmax_steps=2"]),
    ({"axes": {"a": [3]}}, ScalingError, ["axis 'a' value 0", "override string"]),
    ({"base": "no-such-recipe.yaml", "axes": {"a": ["--train.max_steps=2"]}}, ScalingError,
     ["base recipe 'no-such-recipe.yaml' not found"]),
    ({"axes": {"loss": ["--train.max_steps=2"]}}, ScalingError, ["axis name 'loss' is a column"]),
    ({"axes": {"a-b": ["--train.max_steps=2"]}}, ScalingError, ["axis name 'a-b' must be a word"]),
    ({"axes": {"a": ["--train.max_steps=2"]}, "params": "non-embedding"}, ScalingError,
     ["params 'non-embedding'", "Did you mean 'non_embedding'"]),
    ({"axes": {"a": ["--train.max_steps=2"]}, "budget_seconds": -5}, ScalingError, ["budget_seconds", "-5"]),
])
def test_bad_specs_are_refused_with_the_reason(tmp_path, spec, error, words):
    with pytest.raises(error) as e:
        load_spec(write_spec(tmp_path, spec))
    for w in words:
        assert w in str(e.value)


def test_a_missing_spec_and_a_typo_in_any_override_fail_before_any_run(tmp_path, count_fits):
    with pytest.raises(ScalingError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")
    # the typo is in the last grid point: all configs are resolved before the first run starts
    path = write_spec(tmp_path, {"overrides": TINY, "axes": {
        "width": ["--model.width=8", "--model.width=16", "--model.widht=32"]}})
    with pytest.raises(ConfigError) as e:
        run_sweep(path, tmp_path / "out")
    assert "grid point width2" in str(e.value) and "Did you mean 'width'" in str(e.value)
    assert count_fits == [] and not (tmp_path / "out" / "runs").exists()


def test_a_warmup_longer_than_a_run_fails_at_planning(tmp_path):
    path = write_spec(tmp_path, {"overrides": ["--optim.schedule=cosine", "--optim.warmup_steps=50"],
                                 "axes": {"steps": ["--train.max_steps=100", "--train.max_steps=40"]}})
    with pytest.raises(ConfigError) as e:
        plan(load_spec(path))
    assert "grid point steps1: warmup_steps must be in [0, total_steps=40], got 50" in str(e.value)


def test_the_base_recipe_is_found_beside_the_spec(tmp_path):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "r.yaml").write_text("train:\n  max_steps: 7\n")
    (tmp_path / "sweeps").mkdir()
    spec = load_spec(write_spec(tmp_path / "sweeps", {"base": "../recipes/r.yaml", "axes": {"lr": [
        "--optim.lr=0.01"]}}))
    assert spec.base == tmp_path / "sweeps" / "../recipes/r.yaml"
    [point] = plan(spec)
    assert point.config.train.max_steps == 7 and point.config.optim.lr == 0.01


def test_grid_names_and_order_follow_the_axes(tmp_path):
    path = write_spec(tmp_path, {"overrides": ["--train.epochs=1"], "axes": {
        "size": [["--model.name=mlp", "--model.width=8"], ["--model.name=mlp", "--model.width=16"], []],
        "steps": ["--train.max_steps=2", "--train.max_steps=4"]}})
    points = plan(load_spec(path), ["--train.seed=3"])
    assert [p.name for p in points] == ["size0-steps0", "size0-steps1", "size1-steps0", "size1-steps1",
                                        "size2-steps0", "size2-steps1"]
    assert points[3].index == {"size": 1, "steps": 1}
    assert points[3].overrides == ("--train.epochs=1", "--model.name=mlp", "--model.width=16",
                                   "--train.max_steps=4", "--train.seed=3")
    assert [p.config.train.max_steps for p in points] == [2, 4] * 3
    assert [p.config.model.args.get("width") for p in points] == [8, 8, 16, 16, None, None]
    assert points[5].config.model.name == "resnet-digits"  # the built-in default: no base, no overrides
    assert {p.config.train.seed for p in points} == {3}


# ------------------------------------------------------------------------------------------ running

def test_a_tiny_sweep_writes_the_table_from_the_runs(tmp_path, count_fits):
    from layerwise.train.run import load_model

    out = tmp_path / "out"
    lines: list[str] = []
    csv_path = run_sweep(tiny_spec(tmp_path), out, echo=lines.append)
    assert csv_path == out / "results.csv" and (out / "results.jsonl").is_file()
    assert count_fits == ["width0", "width1", "width2"]
    assert sum(line.startswith("[") for line in lines) == 3 and lines[-1].startswith("[3/3] width2: loss")
    table = read_table(csv_path)
    assert set(table) == {"name", "params", "params_total", "data", "compute", "compute_flops", "loss",
                          "train_seconds", "width"}
    assert list(table["name"]) == ["width0", "width1", "width2"]
    assert list(table["width"]) == [f"--model.width={w}" for w in WIDTHS]
    jsonl = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    for i, w in enumerate(WIDTHS):
        run_dir = out / "runs" / f"width{i}"
        summary = json.loads((run_dir / "summary.json").read_text())
        model, _ = load_model(run_dir)
        n = sum(p.numel() for p in model.parameters())
        assert n == 64 * w + w + (w + 1) * 10  # 8x8 digits -> w hidden units -> 10 classes
        assert table["params"][i] == table["params_total"][i] == n  # an MLP has no embedding
        assert table["data"][i] == 20 * 32 == summary["examples_seen"]
        assert table["compute"][i] == 6 * n * 640
        assert table["compute_flops"][i] == 3 * model.flops_per_example() * 640 == 3 * 2 * (64 * w + w * 10) * 640
        assert table["loss"][i] == summary["test_loss"] and math.isfinite(summary["test_loss"])
        assert table["train_seconds"][i] == summary["train_seconds"]
        assert jsonl[i]["params"] == n and jsonl[i]["name"] == f"width{i}"


def test_an_interrupted_sweep_runs_only_the_rest_and_its_table_is_complete(tmp_path, count_fits):
    spec, out = tiny_spec(tmp_path), tmp_path / "out"
    run_sweep(spec, out, max_runs=2)
    assert count_fits == ["width0", "width1"]
    assert list(read_table(out / "results.csv")["name"]) == ["width0", "width1"]
    first = {i: (out / "runs" / f"width{i}" / "summary.json").stat().st_mtime_ns for i in (0, 1)}

    lines: list[str] = []
    run_sweep(spec, out, echo=lines.append)
    assert count_fits == ["width0", "width1", "width2"]  # only the missing run trained
    assert lines[0] == f"2 of 3 runs already done in '{out / 'runs'}'"
    assert {i: (out / "runs" / f"width{i}" / "summary.json").stat().st_mtime_ns for i in (0, 1)} == first
    assert list(read_table(out / "results.csv")["name"]) == ["width0", "width1", "width2"]
    run_sweep(spec, out)  # all done: nothing trains
    assert len(count_fits) == 3


def test_a_run_cut_off_after_a_checkpoint_resumes_exactly(tmp_path, count_fits):
    spec = write_spec(tmp_path, {"overrides": TINY + ["--run.checkpoint_every=10", "--model.width=8"],
                                 "axes": {"seed": ["--train.seed=1"]}})
    out = tmp_path / "out"
    run_sweep(spec, out)
    run_dir = out / "runs" / "seed0"
    loss = json.loads((run_dir / "summary.json").read_text())["test_loss"]
    # as if the process died between the step-10 checkpoint and the end
    (run_dir / "summary.json").unlink()
    for f in (run_dir / "checkpoints").glob("step_00000020.*"):
        f.unlink()
    run_sweep(spec, out)
    assert count_fits == ["seed0"]  # continued from step 10 with --resume, not trained again
    assert json.loads((run_dir / "summary.json").read_text())["test_loss"] == pytest.approx(loss, rel=1e-6)
    assert read_table(out / "results.csv")["loss"][0] == pytest.approx(loss, rel=1e-6)


def test_a_run_cut_off_before_any_checkpoint_is_trained_again(tmp_path, count_fits):
    spec, out = tiny_spec(tmp_path), tmp_path / "out"
    run_sweep(spec, out, max_runs=1)
    run_dir = out / "runs" / "width0"
    (run_dir / "summary.json").unlink()
    (run_dir / "leftover.txt").write_text("from the crashed run")
    run_sweep(spec, out, max_runs=1)
    assert count_fits == ["width0", "width0"]
    assert not (run_dir / "leftover.txt").exists() and (run_dir / "summary.json").is_file()


def test_a_finished_run_with_another_config_stops_the_sweep(tmp_path, count_fits):
    out = tmp_path / "out"
    run_sweep(tiny_spec(tmp_path), out, max_runs=1)
    edited = write_spec(tmp_path, {"overrides": [*TINY, "--optim.lr=0.01"],
                                   "axes": {"width": [f"--model.width={w}" for w in WIDTHS]}}, "edited.yaml")
    with pytest.raises(ScalingError) as e:
        run_sweep(edited, out)
    assert "run width0" in str(e.value) and "optim.lr: 0.003 -> 0.01" in str(e.value)
    assert count_fits == ["width0"]
    # where and how verbosely it runs is not what it learns: those overrides do not count as a change
    run_sweep(tiny_spec(tmp_path), out, max_runs=1, extra_overrides=["--train.log_every=5", "--data.workers=1"])
    assert count_fits == ["width0", "width1"]


def test_a_folder_that_is_not_a_run_is_never_deleted(tmp_path):
    keep = tmp_path / "out" / "runs" / "width0" / "notes.txt"
    keep.parent.mkdir(parents=True)
    keep.write_text("mine")
    with pytest.raises(ScalingError, match="not a layerwise run"):
        run_sweep(tiny_spec(tmp_path), tmp_path / "out")
    assert keep.read_text() == "mine"


def test_the_budget_stops_new_runs(tmp_path, count_fits):
    lines: list[str] = []
    run_sweep(tiny_spec(tmp_path, budget_seconds=1e-6), tmp_path / "out", echo=lines.append)
    assert count_fits == ["width0"]
    assert "budget of 1e-06 s used: 2 runs not started" in lines


def test_a_diverged_run_is_reported_and_the_others_finish(tmp_path):
    spec = write_spec(tmp_path, {"overrides": [*TINY, "--model.width=8", "--train.max_bad_steps=1"],
                                 "axes": {"lr": ["--optim.lr=1e30", "--optim.lr=0.003"]}})
    with pytest.raises(SweepRunError) as e:
        run_sweep(spec, tmp_path / "out")
    assert "1 run(s)" in str(e.value) and "lr0:" in str(e.value)
    assert list(read_table(tmp_path / "out" / "results.csv")["name"]) == ["lr1"]


def test_a_language_model_row_counts_non_embedding_params_and_tokens(tmp_path):
    from layerwise.train.run import load_model

    (tmp_path / "corpus.txt").write_text("to be or not to be, that is the question. " * 40)
    common = ["--model.name=gpt", "--model.n_layer=1", "--model.n_head=2", "--model.n_embd=16",
              "--data.name=text", f"--data.path={tmp_path / 'corpus.txt'}", "--data.tokenizer=char",
              "--data.block_size=16", "--data.batch_size=4", "--train.max_steps=5", "--train.eval_every=0", "--train.threads=1",
              "--run.plots=false", "--run.tensorboard=false"]
    for mode in ("non_embedding", "total"):
        spec = write_spec(tmp_path, {"overrides": common, "axes": {"s": ["--train.seed=0"]}, "params": mode},
                          f"{mode}.yaml")
        table = read_table(run_sweep(spec, tmp_path / mode))
        model, _ = load_model(tmp_path / mode / "runs" / "s0")
        n = model.num_params(non_embedding=True) if mode == "non_embedding" else model.num_params()
        assert table["params"][0] == n
        assert table["params_total"][0] == sum(p.numel() for p in model.parameters()) > model.num_params(
            non_embedding=True)
        assert table["data"][0] == 5 * 4 * 16  # tokens: steps x sequences x block_size
        assert table["compute"][0] == 6 * n * 320
        assert table["compute_flops"][0] == model.flops_per_token() * 320

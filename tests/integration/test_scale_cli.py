"""`layerwise scale` as a user meets it: a tiny sweep, `scale fit` (recovering a known law from a
synthetic table), `scale report`, the error exits, the shipped Shakespeare sweep's grid, and the
multi-device path (subprocess runs, here on CPU). The error exits and the multi-device runs are
real `python -m layerwise` processes; the other commands call the same `layerwise.cli.main` in
this process, which saves the ~5-8 s a `layerwise train` process spends importing torch."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from layerwise.cli import main
from layerwise.scaling import load_spec, plan, read_table, run_sweep, write_table

REPO = Path(__file__).resolve().parents[2]
TINY = ["--model.name=mlp", "--model.depth=1", "--data.batch_size=32", "--train.max_steps=20",
        "--train.eval_every=0", "--run.plots=false", "--run.tensorboard=false",
        "--train.threads=1"]  # one thread: a tiny MLP gains nothing from more, and a busy machine loses
WIDTHS = (4, 8, 16, 32, 64)  # five sizes: law n has 3 parameters, and --holdout 1 needs 4 runs left
TRUE = {"E": 1.5, "A": 30.0, "alpha": 0.3, "B": 50.0, "beta": 0.25}


def lw(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "layerwise", *args], check=False, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The runs set torch's thread count for the whole process (train.threads); restore it."""
    import torch
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def cli(capsys):
    """``cli(*args)`` -> (exit code, stdout, stderr) of `layerwise *args`, in this process."""
    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err
    return run


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """`layerwise scale tiny.yaml` run in the spec's folder, into the default output folder."""
    cwd = tmp_path_factory.mktemp("scale")
    (cwd / "tiny.yaml").write_text(yaml.safe_dump({
        "overrides": TINY, "axes": {"width": [f"--model.width={w}" for w in WIDTHS]}}))
    here, buf = os.getcwd(), io.StringIO()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(buf):
            assert main(["scale", "tiny.yaml"]) == 0
    finally:
        os.chdir(here)
    lines = buf.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines if line.startswith("[")] == [
        f"[{i + 1}/5] width{i}" for i in range(5)]
    assert any(line.split()[:2] == ["width4", str(64 * 64 + 64 + 65 * 10)] for line in lines)  # the table
    return cwd / "sweeps" / "out" / "tiny"


def synthetic_table(path: Path, law: str) -> None:
    """A noiseless table from TRUE: 8 sizes (law n), or 4 sizes x 3 data sizes (law nd)."""
    if law == "n":
        N, D = np.geomspace(1e4, 1e7, 8), np.full(8, 1e6)
    else:
        N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e4, 1e7, 4), np.geomspace(1e5, 1e8, 3)))
    loss = TRUE["E"] + TRUE["A"] / N ** TRUE["alpha"] + (TRUE["B"] / D ** TRUE["beta"] if law == "nd" else 0)
    write_table([{"params": n, "data": d, "compute": 6 * n * d, "loss": L} for n, d, L in zip(N, D, loss)],
                path, path.with_suffix(".jsonl"))


def test_the_sweep_writes_one_row_per_run(sweep):
    table = read_table(sweep / "results.csv")
    assert list(table["name"]) == [f"width{i}" for i in range(5)]
    assert list(table["params"]) == [64 * w + w + (w + 1) * 10 for w in WIDTHS]
    assert set(table["data"]) == {640.0} and np.all(np.isfinite(table["loss"]))


def test_fit_json_has_every_parameter_with_its_interval(sweep, cli):
    code, out, err = cli("scale", "fit", str(sweep / "results.csv"), "--law", "n", "--json", "--boot", "40",
                         "--holdout", "1")
    assert code == 0, err
    result = json.loads(out)
    assert result["law"] == "n" and result["n_points"] == 5 and result["n_boot"] == 40
    assert math.isfinite(result["objective"])
    for name in ("E", "A", "alpha"):
        assert set(result[name]) == {"value", "se", "lo", "hi"}
        assert result[name]["lo"] <= result[name]["hi"]
    assert math.isfinite(result["alpha"]["value"])
    assert "B" not in result and "compute_optimal_exponents" not in result
    [held] = result["holdout"]["points"]
    assert held["name"] == "width4" and held["observed"] == read_table(sweep / "results.csv")["loss"][4]
    assert result["holdout"]["n_fit"] == 4


@pytest.mark.parametrize("law", ["n", "nd"])
def test_fit_recovers_a_known_law(tmp_path, cli, law):
    synthetic_table(tmp_path / "t.csv", law)
    code, out, err = cli("scale", "fit", str(tmp_path / "t.csv"), "--law", law, "--json", "--boot", "20")
    assert code == 0, err
    result = json.loads(out)
    for name in ("E", "A", "alpha") + (("B", "beta") if law == "nd" else ()):
        assert result[name]["value"] == pytest.approx(TRUE[name], rel=1e-3), name
    assert abs(result["alpha"]["value"] - TRUE["alpha"]) < 1e-3
    if law == "nd":  # N_opt ∝ C^(beta / (alpha + beta))
        a = result["compute_optimal_exponents"]["a"]["value"]
        assert a == pytest.approx(TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"]), abs=1e-3)
    code, text, _ = cli("scale", "fit", str(tmp_path / "t.csv"), "--law", law, "--boot", "20")
    assert code == 0 and f"{result['alpha']['value']:.4g}" in text


def test_report_writes_a_figure_and_a_summary(sweep, tmp_path, cli):
    code, _, err = cli("scale", "report", str(sweep), "--holdout", "1", "--boot", "40", "--out", str(tmp_path / "rep"))
    assert code == 0, err
    png = (tmp_path / "rep" / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    md = (tmp_path / "rep" / "report.md").read_text()
    fit = json.loads(cli("scale", "fit", str(sweep), "--law", "n", "--json", "--boot", "40")[1])
    assert f"| alpha | {fit['alpha']['value']:.4g} |" in md
    assert "## Extrapolation check" in md and "| width4 |" in md
    assert f"`layerwise scale report {sweep} --holdout 1 --boot 40 --out {tmp_path / 'rep'}`" in md
    assert md.count("\n| width") == 5 + 1  # the results table and the held-out run


def test_errors_exit_with_the_reason(tmp_path, cli):
    # a missing or unusable table is the data's fault (exit 1); a bad spec the configuration's (exit 2)
    out = lw("scale", "fit", str(tmp_path / "missing.csv"), "--law", "n")
    assert out.returncode == 1 and "does not exist" in out.stderr and "Traceback" not in out.stderr
    (tmp_path / "bin.csv").write_bytes(bytes(range(256)) * 4)
    out = lw("scale", "fit", str(tmp_path / "bin.csv"), "--law", "n")
    assert out.returncode == 1 and str(tmp_path / "bin.csv") in out.stderr and "not UTF-8" in out.stderr
    write_table([{"params": n, "data": 1e6, "compute": 6e6 * n, "loss": 3 / n ** 0.1} for n in (1e4, 1e5)],
                tmp_path / "two.csv", tmp_path / "two.jsonl")
    out = lw("scale", "report", str(tmp_path / "two.csv"))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "law 'n' (L(N) = E + A / N^alpha) has 3 parameters, so a fit needs at least 4 runs; the table has 2" \
        in out.stderr
    code, _, err = cli("scale", "fit", str(tmp_path / "two.jsonl"), "--law", "n")
    assert code == 1 and "needs at least 4 runs; the table has 2" in err
    (tmp_path / "bad.csv").write_text("params,data,loss\n1,2,3\n")
    code, _, err = cli("scale", "report", str(tmp_path / "bad.csv"))
    assert code == 1 and "lacks the column(s) 'compute'" in err
    code, _, err = cli("scale", "report", str(tmp_path))  # a folder with no table
    assert code == 1 and "holds no results.csv" in err
    (tmp_path / "spec.yaml").write_text("axes: {width: ['--model.widht=3']}\n")
    code, _, err = cli("scale", str(tmp_path / "spec.yaml"), "--dry-run")
    assert code == 2 and "grid point width0" in err and "model.widht" in err
    (tmp_path / "typo.yaml").write_text("axes: {width: ['--model.width=3']}\nmetric: test_los\n")
    code, _, err = cli("scale", str(tmp_path / "typo.yaml"), "--dry-run")
    assert code == 2 and "metric 'test_los'" in err and "Did you mean 'test_loss'" in err


def test_the_shakespeare_sweep_is_a_valid_61x_grid_at_one_token_budget(cli, monkeypatch):
    import torch

    from layerwise.models import create_model

    monkeypatch.chdir(REPO)
    code, out, err = cli("scale", "sweeps/shakespeare-gpt.yaml", "--dry-run")
    assert code == 0, err
    assert [line.split(":")[0].strip() for line in out.splitlines()[1:7]] == [f"size{i}" for i in range(6)]
    points = plan(load_spec(REPO / "sweeps" / "shakespeare-gpt.yaml"))
    n = []
    for p in points:
        c = p.config
        assert c.data.name == "shakespeare" and c.optim.warmup_steps == 50 and c.train.eval_every == 0
        assert c.train.max_steps * c.data.batch_size * c.data.block_size == 500 * 32 * 64
        with torch.device("meta"):  # 65 characters; building checks n_head divides n_embd
            n.append(create_model("gpt", in_shape=(64,), num_classes=65, **c.model.args).num_params(non_embedding=True))
    assert n == sorted(n) and n[-1] / n[0] > 30
    lrs = [p.config.optim.lr for p in points]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] == 0.004 and lrs[-1] == 0.002


def test_parallel_device_runs_match_the_in_process_runs(sweep, tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"overrides": TINY,
                                    "axes": {"width": [f"--model.width={w}" for w in WIDTHS[:2]]}}))
    lines: list[str] = []
    there = read_table(run_sweep(spec, tmp_path / "there", devices=["cpu", "cpu"], echo=lines.append))
    here = read_table(sweep / "results.csv")  # the same two configs, trained one after another
    assert list(there["name"]) == ["width0", "width1"] and list(there["params"]) == list(here["params"][:2])
    np.testing.assert_allclose(there["loss"], here["loss"][:2], rtol=1e-5)
    assert sorted(line for line in lines if line.startswith("training")) == [
        f"training width{i} on cpu" for i in range(2)]
    log = (tmp_path / "there" / "logs" / "width0.log").read_text()
    assert "--train.device=cpu" in log and f"--run.dir={tmp_path / 'there' / 'runs' / 'width0'}" in log

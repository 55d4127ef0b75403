"""Scaling-law fits: parameter recovery, compute-optimal allocation, bootstrap coverage, the
extrapolation check, and the results table's errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from layerwise.scaling import (
    ScalingError,
    allocation_exponents,
    bootstrap,
    bootstrap_fits,
    compute_optimal,
    compute_optimal_interval,
    fit_law,
    fit_summary,
    holdout_check,
    read_table,
    write_table,
)

# Hoffmann et al. 2022's fitted values, the usual test case
TRUE = {"E": 1.7, "A": 400.0, "alpha": 0.34, "B": 410.0, "beta": 0.28}


def law_loss(law: str, N: np.ndarray, D: np.ndarray) -> np.ndarray:
    L = np.full(np.broadcast(N, D).shape, TRUE["E"])
    if "n" in law:
        L = L + TRUE["A"] / N ** TRUE["alpha"]
    if "d" in law:
        L = L + TRUE["B"] / D ** TRUE["beta"]
    return L


def synthetic(law: str, m: int = 30, sigma: float = 0.0, seed: int = 0) -> dict[str, np.ndarray]:
    """m runs at log-uniform N in [1e5, 1e8] and D in [1e6, 1e9]; loss times exp(sigma * normal)."""
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(1e5), np.log(1e8), m))
    D = np.exp(rng.uniform(np.log(1e6), np.log(1e9), m))
    L = law_loss(law, N, D) * np.exp(sigma * rng.standard_normal(m))
    return {"params": N, "data": D, "compute": 6 * N * D, "loss": L}


# ------------------------------------------------------------------------------------------ fitting

@pytest.mark.parametrize("law", ["n", "d", "nd"])
def test_noiseless_data_recover_every_parameter(law: str) -> None:
    fit = fit_law(synthetic(law), law)
    assert set(fit.params) == {"n": {"E", "A", "alpha"}, "d": {"E", "B", "beta"}, "nd": set(TRUE)}[law]
    for name, value in fit.params.items():
        assert value == pytest.approx(TRUE[name], rel=1e-3), name
    assert fit.objective < 1e-12 and fit.n_points == 30


def test_predict_is_the_law_and_asks_for_what_it_needs() -> None:
    fit = fit_law(synthetic("nd"), "nd")
    N, D = np.array([3e5, 2e9]), np.array([1e7, 5e10])  # the second far outside the fitted range
    np.testing.assert_allclose(fit.predict(N=N, D=D), law_loss("nd", N, D), rtol=1e-6)
    with pytest.raises(ScalingError, match="pass D=..."):
        fit.predict(N=1e6)


def test_noisy_fit_stays_close_and_huber_resists_an_outlier() -> None:
    table = synthetic("n", sigma=0.005, seed=3)
    clean = fit_law(table, "n").params["alpha"]
    table["loss"][np.argmax(table["params"])] *= 1.5  # one broken run at the largest size
    robust = fit_law(table, "n").params["alpha"]
    least_squares = fit_law(table, "n", delta=10.0).params["alpha"]  # Huber with delta >> residuals
    assert abs(clean - TRUE["alpha"]) < 0.01
    assert abs(robust - clean) < 1e-3  # measured: 1e-10
    assert abs(least_squares - clean) > 0.03  # measured: 0.076


def test_too_few_points_unknown_law_and_bad_values_raise() -> None:
    table = synthetic("nd", m=5)
    with pytest.raises(ScalingError, match="5 parameters, so a fit needs at least 6 runs; the table has 5"):
        fit_law(table, "nd")
    assert fit_law(table, "n").n_points == 5  # 3 parameters: 5 runs are enough
    with pytest.raises(ScalingError, match="did you mean 'nd'"):
        fit_law(table, "n_d")
    table["loss"][2] = -1.0
    with pytest.raises(ScalingError, match="column 'loss', row 3 is -1.0"):
        fit_law(table, "n")
    same = synthetic("n", m=8)
    same["params"][:] = 1e6
    with pytest.raises(ScalingError, match="same params"):
        fit_law(same, "n")


# ---------------------------------------------------------------------------------- compute-optimal

def test_compute_optimal_matches_brute_force_minimization() -> None:
    fit = fit_law(synthetic("nd"), "nd")
    p = fit.params
    for C in (1e18, 1e21, 1e24):
        N_opt, D_opt = compute_optimal(fit, C)

        def loss_at(logN: float, C: float = C) -> float:  # L(N, C / (6 N)) on the compute budget
            N = math.exp(logN)
            return p["E"] + p["A"] / N ** p["alpha"] + p["B"] / (C / (6 * N)) ** p["beta"]

        res = minimize_scalar(loss_at, bounds=(math.log(10.0), math.log(C / 60)), method="bounded",
                              options={"xatol": 1e-10})
        assert N_opt == pytest.approx(math.exp(res.x), rel=1e-3)
        assert 6 * N_opt * D_opt == pytest.approx(C, rel=1e-12)
    a, b = allocation_exponents(fit)
    assert a == pytest.approx(0.28 / 0.62, rel=1e-3) and a + b == pytest.approx(1.0)
    N1, _ = compute_optimal(fit, 1e20)
    N2, _ = compute_optimal(fit, 1e22)
    assert N2 / N1 == pytest.approx(100 ** a, rel=1e-9)  # N_opt ∝ C^a
    with pytest.raises(ScalingError, match="joint law 'nd'"):
        compute_optimal(fit_law(synthetic("n"), "n"), 1e20)


def test_compute_optimal_interval_brackets_the_estimate() -> None:
    table = synthetic("nd", sigma=0.01, seed=1)
    fit = fit_law(table, "nd")
    boots = bootstrap_fits(table, "nd", n_boot=40, seed=0, base=fit)
    iv = compute_optimal_interval(boots, 1e21)
    N_opt, D_opt = compute_optimal(fit, 1e21)
    assert set(iv) == {"N_opt", "D_opt", "a", "b"}
    assert iv["N_opt"][1] < N_opt < iv["N_opt"][2] and iv["D_opt"][1] < D_opt < iv["D_opt"][2]
    assert iv["a"][0] > 0 and iv["a"][0] == pytest.approx(iv["b"][0])  # a + b = 1 in every replicate


# -------------------------------------------------------------------------------------- bootstrap

def test_bootstrap_is_seeded_and_vanishes_on_noiseless_data() -> None:
    noisy = synthetic("n", sigma=0.01, seed=2)
    assert bootstrap(noisy, "n", n_boot=30, seed=5) == bootstrap(noisy, "n", n_boot=30, seed=5)
    assert bootstrap(noisy, "n", n_boot=30, seed=5) != bootstrap(noisy, "n", n_boot=30, seed=6)
    exact = bootstrap(synthetic("n"), "n", n_boot=30, seed=0)
    se, lo, hi = exact["alpha"]
    assert se < 1e-7 and lo == pytest.approx(0.34, rel=1e-6) and hi == pytest.approx(0.34, rel=1e-6)


def _coverage(seeds: int) -> tuple[float, float]:
    """Fraction of noisy tables whose bootstrap 95% interval of alpha holds the truth, and the
    mean bootstrap standard error over the spread of the estimates across tables."""
    covered, est, se = 0, [], []
    for s in range(seeds):
        table = synthetic("n", m=30, sigma=0.01, seed=100 + s)
        fit = fit_law(table, "n")
        b_se, lo, hi = bootstrap(table, "n", n_boot=100, seed=s, base=fit)["alpha"]
        covered += lo <= TRUE["alpha"] <= hi
        est.append(fit.params["alpha"])
        se.append(b_se)
    return covered / seeds, float(np.mean(se) / np.std(est, ddof=1))


def test_bootstrap_interval_covers_alpha_40_seeds() -> None:
    """The issue's coverage check: over 40 seeded noisy tables the bootstrap 95% interval of alpha
    covers the true value at least 85% of the time (measured: 40/40; ~15 s on 2 cores)."""
    coverage, se_ratio = _coverage(40)
    assert coverage >= 0.85
    assert 0.6 < se_ratio < 1.6  # not covering by being uselessly wide (measured: 0.93 at 15 seeds)


def test_fit_summary_is_json_ready() -> None:
    table = synthetic("nd", sigma=0.01, seed=4)
    fit = fit_law(table, "nd")
    summary = json.loads(json.dumps(fit_summary(fit, bootstrap(table, "nd", n_boot=20, seed=0, base=fit))))
    assert summary["law"] == "nd" and summary["n_points"] == 30
    assert summary["objective"] == pytest.approx(fit.objective)
    for name in TRUE:
        entry = summary[name]
        assert entry["value"] == pytest.approx(fit.params[name]) and entry["se"] > 0
        assert entry["lo"] <= entry["hi"]


# ------------------------------------------------------------------------------ extrapolation check

def test_holdout_predicts_the_largest_models_within_one_percent() -> None:
    # a sweep grid: 7 model sizes x 4 data sizes; the 4 runs of the largest size are held out,
    # so the fit has seen N up to 1e7.5 and predicts N = 1e8
    N, D = np.meshgrid(np.logspace(5, 8, 7), np.logspace(6, 9, 4), indexing="ij")
    N, D = N.ravel(), D.ravel()
    rng = np.random.default_rng(0)
    table = {"params": N, "data": D, "compute": 6 * N * D,
             "loss": law_loss("nd", N, D) * np.exp(0.003 * rng.standard_normal(N.size))}
    check = holdout_check(table, "nd", holdout="largest", k=4, n_boot=50, seed=0)
    assert check["n_fit"] == 24 and len(check["points"]) == 4
    for p in check["points"]:
        assert p["params"] == pytest.approx(1e8)
        assert abs(p["rel_error"]) < 0.01
        assert p["lo"] < p["predicted"] < p["hi"]
    assert sum(p["inside"] for p in check["points"]) >= 3
    json.dumps(check)
    with pytest.raises(ScalingError, match="use 1 <= k <= 22"):
        holdout_check(table, "nd", k=23)


# ------------------------------------------------------------------------------------ results table

def _rows() -> list[dict]:
    return [{"params": 1.5e5 * (i + 1), "data": 2e6, "compute": 6 * 1.5e5 * (i + 1) * 2e6,
             "loss": 3.0 - 0.1 * i + 1e-13, "model": f"mlp-{i}", "lr": 0.01 * (i + 1)} for i in range(5)]


def test_table_round_trips_through_csv_and_jsonl(tmp_path) -> None:
    rows = _rows()
    write_table(rows, tmp_path / "r.csv", tmp_path / "r.jsonl")
    for name in ("r.csv", "r.jsonl"):
        t = read_table(tmp_path / name)
        assert list(t)[:4] == ["params", "data", "compute", "loss"]
        np.testing.assert_array_equal(t["loss"], [r["loss"] for r in rows])  # exact floats
        np.testing.assert_array_equal(t["lr"], [r["lr"] for r in rows])
        assert t["model"].tolist() == [r["model"] for r in rows]
    assert fit_law(read_table(tmp_path / "r.csv"), "n").n_points == 5


def test_bad_tables_name_the_problem(tmp_path) -> None:
    with pytest.raises(ScalingError, match="does not exist"):
        read_table(tmp_path / "nope.csv")
    (tmp_path / "t.txt").write_text("params\n")
    with pytest.raises(ScalingError, match="reads .csv"):
        read_table(tmp_path / "t.txt")
    header = "params,data,compute,loss\n"
    cases = {
        "params,data,loss\n1,2,3\n": "lacks the column\\(s\\) 'compute'",
        header + "1,2,12,3.1\n2,2,24,abc\n": "row 2 \\(line 3\\), column 'loss': 'abc' is not a number",
        header + "1,2,12,3.1\n2,0,24,3\n": "row 2 \\(line 3\\), column 'data' is 0.0; .* positive and finite",
        header + "1,2,12,nan\n": "row 1 \\(line 2\\), column 'loss' is nan",
        header + "1,2,12,inf\n": "column 'loss' is inf",
        header + "1,2,12,-3\n": "column 'loss' is -3.0",
        header + "1,2,,3\n": "row 1 \\(line 2\\), column 'compute' is empty",
        header: "holds no rows",
    }
    for text, message in cases.items():
        (tmp_path / "t.csv").write_text(text)
        with pytest.raises(ScalingError, match=message):
            read_table(tmp_path / "t.csv")
    (tmp_path / "t.jsonl").write_text('{"params": 1, "data": 2, "compute": 12, "loss": 3}\n{"params": 2,\n')
    with pytest.raises(ScalingError, match="line 2 is not valid JSON"):
        read_table(tmp_path / "t.jsonl")
    (tmp_path / "t.jsonl").write_text('{"params": 1, "data": 2, "compute": 12, "loss": true}\n')
    with pytest.raises(ScalingError, match="column 'loss': True is not a number"):
        read_table(tmp_path / "t.jsonl")
    bad = _rows()
    bad[3]["loss"] = float("nan")
    with pytest.raises(ScalingError, match="row 4, column 'loss' is nan"):
        write_table(bad, tmp_path / "w.csv", tmp_path / "w.jsonl")
    assert not (tmp_path / "w.csv").exists()
    assert isinstance(ScalingError("x"), ValueError)

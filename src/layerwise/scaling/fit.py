"""Scaling laws: fit, bootstrap, compute-optimal allocation and an extrapolation check.

Three laws, every parameter positive (N = parameters, D = training examples/tokens, L = loss):

    law "n"   L(N)    = E + A / N^alpha
    law "d"   L(D)    = E + B / D^beta
    law "nd"  L(N, D) = E + A / N^alpha + B / D^beta        (Hoffmann et al. 2022, eq. 2)

The fit is approach 3 of Hoffmann et al. 2022 ("Training Compute-Optimal Large Language Models",
sec. 3.3 and appendix D.2): with e = log E, a = log A, b = log B, predict

    log L_hat = logsumexp(a - alpha log N,  b - beta log D,  e)

and minimize  sum_i Huber_delta(log L_hat_i - log L_i),  delta = 1e-3,  with L-BFGS-B from a grid
of starting points (alpha, beta in {0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1}, a, b in {0, 5, ..., 25}),
keeping the best. The Huber loss is quadratic below delta and linear above, so a few bad runs do not
drag the fit (it is nearly a least-absolute-deviation fit once residuals exceed 0.1%).

Speed: the full nd grid has 5^3 * 6^2 = 4500 points. Running L-BFGS-B from each (the paper's
procedure, `full_grid=True`) takes about 2 minutes for 30 runs on one busy CPU core. By default the
objective is evaluated at every grid point in one vectorized pass, and L-BFGS-B starts only from the
best (e, a, b) for each exponent pair (alpha, beta) on the grid: 25 starts for nd (~0.5 s), 5 for n
and d (~0.05 s). The exponents are what makes the problem non-convex, so one start per exponent pair
keeps the starts spread over the basins. On noisy test tables the screened starts reached the same
optimum as the full grid (laws n, d) or as 300 random grid starts (nd), to 1e-14 in the objective. The
bootstrap refits each resample from the full-data optimum only (~5 ms a refit for law n).

Uncertainty is a nonparametric bootstrap over runs (Efron & Tibshirani 1993, "An Introduction to
the Bootstrap", ch. 6 and 13): resample the table's rows with replacement, refit, and report the
standard deviation of each parameter (standard error) and its percentile interval.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits  # installed with scikit-learn

from layerwise.choices import closest
from layerwise.scaling.table import ScalingError

# parameter names of each law, in the optimizer's order (E, A, B are optimized as their logs)
LAWS: dict[str, tuple[str, ...]] = {
    "n": ("E", "A", "alpha"),
    "d": ("E", "B", "beta"),
    "nd": ("E", "A", "alpha", "B", "beta"),
}
FORMULAS: dict[str, str] = {
    "n": "L(N) = E + A / N^alpha",
    "d": "L(D) = E + B / D^beta",
    "nd": "L(N, D) = E + A / N^alpha + B / D^beta",
}
# each power-law term: (index of its log coefficient, index of its exponent, table column it scales with)
_TERMS: dict[str, tuple[tuple[int, int, str], ...]] = {
    "n": ((1, 2, "params"),),
    "d": ((1, 2, "data"),),
    "nd": ((1, 2, "params"), (3, 4, "data")),
}
HUBER_DELTA = 1e-3  # in log-loss units; Hoffmann et al. 2022, appendix D.2
# Hoffmann et al.'s initialisation grid
GRID_EXPONENT = (0.0, 0.5, 1.0, 1.5, 2.0)  # alpha, beta
GRID_E = (-1.0, -0.5, 0.0, 0.5, 1.0)  # e = log E
GRID_COEF = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)  # a = log A, b = log B
# Tight enough that noiseless data give the parameters to ~1e-12 (the objective is divided by
# delta^2, see _objective); on noisy data the fit stops well before, at the Huber kinks.
OPTIONS = {"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-10}
# Bootstrap refits start at the optimum and only need to beat the bootstrap's own spread: these
# give the same intervals to 7 digits at 60% of the time.
BOOT_OPTIONS = {"maxiter": 2000, "ftol": 1e-10, "gtol": 1e-7}
EXPONENT_MAX = 10.0  # bound on alpha, beta: no measured scaling exponent comes near it


def _check_law(law: str) -> None:
    if law not in LAWS:
        match = closest(law, LAWS)
        hint = f"; did you mean {match!r}?" if match else ""
        raise ScalingError(
            f"unknown scaling law {law!r}{hint} (valid: "
            + ", ".join(f"{k!r}: {v}" for k, v in FORMULAS.items()) + ")")


@dataclass(frozen=True, eq=False)
class Fit:
    """A fitted law: ``params`` (E, A, alpha for "n"; E, B, beta for "d"; all five for "nd"),
    the summed Huber objective at the optimum, and the number of table rows it was fitted to."""

    law: str
    params: dict[str, float]
    objective: float
    n_points: int
    theta: np.ndarray = field(repr=False)  # optimizer coordinates: (log E, log A, alpha, ...)
    delta: float = HUBER_DELTA  # the Huber threshold it was fitted with (the bootstrap reuses it)

    @property
    def formula(self) -> str:
        return FORMULAS[self.law]

    def predict(self, N: Any = None, D: Any = None) -> np.ndarray:
        """L at parameter count ``N`` and/or data ``D`` (arrays broadcast); the law decides which it needs."""
        need = {"n": ("N",), "d": ("D",), "nd": ("N", "D")}[self.law]
        given = {"N": N, "D": D}
        missing = [k for k in need if given[k] is None]
        if missing:
            raise ScalingError(f"law {self.law!r} ({self.formula}) predicts from {' and '.join(need)}; "
                               f"pass {', '.join(k + '=...' for k in missing)}.")
        p = self.params
        out = np.asarray(p["E"], dtype=float)
        if "N" in need:
            out = out + p["A"] / np.asarray(N, dtype=float) ** p["alpha"]
        if "D" in need:
            out = out + p["B"] / np.asarray(D, dtype=float) ** p["beta"]
        return out


# ---------------------------------------------------------------------------------------------- fitting

def _columns(table: Mapping[str, Any], law: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The law's log-columns {column: log x} and log L, after the checks a fit needs."""
    _check_law(law)
    need = sorted({axis for _, _, axis in _TERMS[law]}) + ["loss"]
    missing = [c for c in need if c not in table]
    if missing:
        raise ScalingError(
            f"law {law!r} ({FORMULAS[law]}) needs the table column(s) {', '.join(map(repr, missing))}; "
            f"the table has {', '.join(map(repr, table)) or 'none'}. Read it with read_table, which checks "
            f"for params, data, compute and loss.")
    cols = {}
    for c in need:
        x = np.asarray(table[c], dtype=float).ravel()
        bad = np.flatnonzero(~(np.isfinite(x) & (x > 0)))
        if bad.size:
            i = int(bad[0])
            raise ScalingError(
                f"column {c!r}, row {i + 1} is {float(x[i])!r}: a scaling law is fitted to logarithms, so "
                f"every value must be positive and finite ({bad.size} of {x.size} are not). Remove diverged "
                f"or unfinished runs from the table before fitting.")
        cols[c] = x
    m = len(cols["loss"])
    if any(len(x) != m for x in cols.values()):
        raise ScalingError(f"the table's columns have different lengths "
                           f"({', '.join(f'{c}: {len(x)}' for c, x in cols.items())}); give one value per row.")
    k = len(LAWS[law])
    if m < k + 1:
        raise ScalingError(
            f"law {law!r} ({FORMULAS[law]}) has {k} parameters, so a fit needs at least {k + 1} runs; the "
            f"table has {m}. Train more model sizes (and, for 'nd', data sizes) before fitting.")
    for _, _, axis in _TERMS[law]:
        if np.unique(cols[axis]).size < 2:
            raise ScalingError(
                f"every run in the table has the same {axis} ({cols[axis][0]:g}), so law {law!r} cannot "
                f"tell how loss changes with it; sweep at least two (better: 5 or more) values of {axis}.")
    return {c: np.log(x) for c, x in cols.items() if c != "loss"}, np.log(cols["loss"])


def _log_pred(theta: np.ndarray, logx: Mapping[str, np.ndarray], law: str) -> tuple[np.ndarray, list]:
    """log L_hat = logsumexp(e, a - alpha log N, ...) and the power-law terms (a - alpha log N, ...).

    ``theta`` is (P,) or (G, P) for G parameter vectors at once; returns (..., M) arrays. Chained
    ``np.logaddexp`` is exact and far cheaper than scipy's general logsumexp on these small
    arrays (the fit evaluates this tens of thousands of times).
    """
    th = np.asarray(theta, dtype=float)[..., None]  # (..., P, 1)
    terms = [th[..., ci, :] - th[..., ei, :] * logx[axis] for ci, ei, axis in _TERMS[law]]
    lse = th[..., 0, :]
    for t in terms:
        lse = np.logaddexp(lse, t)
    return lse, terms


def _huber(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Huber_delta(r) = r^2/2 for |r| <= delta, delta (|r| - delta/2) beyond, and its derivative
    c = clip(r, -delta, delta); both branches are c (r - c/2)."""
    c = np.minimum(np.maximum(r, -delta), delta)
    return c * (r - 0.5 * c), c


def _objective(theta: np.ndarray, logx: Mapping[str, np.ndarray], logL: np.ndarray, law: str,
               delta: float, weights: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Summed Huber loss of the log residuals and its gradient, both divided by delta^2.

    The scaling leaves the minimizer unchanged but keeps the objective O(1) per point near the
    optimum, where L-BFGS-B's stopping rule (relative to max(|f|, 1)) would otherwise stop early.
    ``weights[i]`` counts how often row i appears (a bootstrap resample). With w_j = exp(T_j - lse)
    the softmax weight of term j:  d lse/d e = w_0,  d lse/d a = w_1,  d lse/d alpha = -w_1 log N.
    """
    lse, terms = _log_pred(theta, logx, law)
    h, dh = _huber(lse - logL, delta)
    if weights is not None:
        f, dh = float(weights @ h), dh * weights
    else:
        f = float(h.sum())
    g = np.empty_like(theta)
    g[0] = dh @ np.exp(theta[0] - lse)
    for (ci, ei, axis), t in zip(_TERMS[law], terms):
        dw = dh * np.exp(t - lse)
        g[ci] = dw.sum()
        g[ei] = -(dw @ logx[axis])
    s = delta * delta
    return f / s, g / s


def _grid_starts(logx: Mapping[str, np.ndarray], logL: np.ndarray, law: str, delta: float,
                 full_grid: bool) -> np.ndarray:
    """Starting points (S, P) from Hoffmann et al.'s grid: all of it, or per exponent tuple the best."""
    n_terms = len(_TERMS[law])
    exps = list(itertools.product(GRID_EXPONENT, repeat=n_terms))
    coefs = list(itertools.product(GRID_E, *([GRID_COEF] * n_terms)))
    grid = np.empty((len(exps), len(coefs), 1 + 2 * n_terms))
    for i, ex in enumerate(exps):
        for j, co in enumerate(coefs):
            grid[i, j, 0] = co[0]
            for t, (ci, ei, _) in enumerate(_TERMS[law]):
                grid[i, j, ci], grid[i, j, ei] = co[1 + t], ex[t]
    if full_grid:
        return grid.reshape(-1, grid.shape[-1])
    lse, _ = _log_pred(grid, logx, law)  # (exps, coefs, M)
    h, _ = _huber(lse - logL, delta)
    return grid[np.arange(len(exps)), h.sum(-1).argmin(axis=1)]


def _minimize(starts: np.ndarray, logx: Mapping[str, np.ndarray], logL: np.ndarray, law: str,
              delta: float, weights: np.ndarray | None,
              options: Mapping[str, float] = OPTIONS) -> tuple[np.ndarray, float]:
    """L-BFGS-B from each start; the best optimum (theta, summed Huber objective).

    The optimizer works on centred logs: a - alpha log N = (a - alpha mu) - alpha (log N - mu) with
    mu the mean log N. The same law in better-conditioned coordinates (a and alpha are otherwise
    strongly correlated), which roughly halves the iterations.
    """
    terms = _TERMS[law]
    mu = {axis: float(logx[axis].mean()) for _, _, axis in terms}
    centred = {axis: logx[axis] - mu[axis] for _, _, axis in terms}
    shift = np.zeros((len(LAWS[law]), len(LAWS[law])))  # theta_centred = theta + theta @ shift
    for ci, ei, axis in terms:
        shift[ei, ci] = -mu[axis]
    bounds = [(None, None)] + [(None, None), (0.0, EXPONENT_MAX)] * len(terms)
    best_theta, best_f = starts[0], math.inf
    for x0 in starts:
        res = minimize(_objective, x0 + x0 @ shift, args=(centred, logL, law, delta, weights), jac=True,
                       method="L-BFGS-B", bounds=bounds, options=dict(options))
        if np.isfinite(res.fun) and res.fun < best_f:
            best_theta, best_f = res.x - res.x @ shift, float(res.fun)
    return best_theta, best_f * delta * delta


def _one_blas_thread() -> threadpool_limits:
    """One BLAS thread while fitting: L-BFGS-B's 5x5 linear algebra ran ~20x slower with OpenBLAS
    spreading it over threads on a busy machine (1.5 s vs 0.07 s for a law-"n" fit on 2 shared
    cores). Entering the limit costs ~2 ms, so it wraps whole fits and bootstraps, not each start."""
    return threadpool_limits(limits=1, user_api="blas")


def _make_fit(law: str, theta: np.ndarray, objective: float, n_points: int, delta: float) -> Fit:
    params = {}
    for i, name in enumerate(LAWS[law]):
        params[name] = float(np.exp(theta[i])) if name in ("E", "A", "B") else float(theta[i])
    return Fit(law=law, params=params, objective=objective, n_points=n_points, theta=np.array(theta),
               delta=delta)


def fit_law(table: Mapping[str, Any], law: str = "nd", *, delta: float = HUBER_DELTA,
            full_grid: bool = False, start: Fit | None = None) -> Fit:
    """Fit ``law`` ("n", "d" or "nd") to a results table ({column: array}, e.g. from `read_table`).

    Minimizes sum_i Huber_delta(log L_hat_i - log L_i) (Hoffmann et al. 2022, approach 3). Starts:
    the screened grid (one per exponent pair, see the module docstring), every grid point when
    ``full_grid``, or only ``start``'s optimum when given (a warm start). Exponents are bounded to
    [0, EXPONENT_MAX]; one at 0 means the runs show no trend with that variable. Raises
    `ScalingError` for an unknown law, too few runs (fewer than parameters + 1) or non-positive values.
    """
    logx, logL = _columns(table, law)
    starts = start.theta[None] if start is not None else _grid_starts(logx, logL, law, delta, full_grid)
    with _one_blas_thread():
        theta, f = _minimize(starts, logx, logL, law, delta, None)
    return _make_fit(law, theta, f, len(logL), delta)


# -------------------------------------------------------------------------------------------- bootstrap

def bootstrap_fits(table: Mapping[str, Any], law: str = "nd", n_boot: int = 200, seed: int = 0,
                   base: Fit | None = None) -> list[Fit]:
    """``n_boot`` refits of ``law`` to tables resampled over runs (rows drawn with replacement).

    Each resample is refitted from the full-data optimum ``base`` (fitted here when not given),
    with its Huber delta;
    a resample that leaves fewer distinct runs than the law has parameters + 1, or one value of a
    column the law scales with, is redrawn. Deterministic for a given ``seed``.
    """
    logx, logL = _columns(table, law)
    base = base if base is not None else fit_law(table, law)
    if base.law != law:
        raise ScalingError(f"the base fit is of law {base.law!r}, not {law!r}; fit the same law first.")
    rng = np.random.default_rng(seed)
    fits = []
    with _one_blas_thread():
        for _ in range(n_boot):
            fits.append(_refit_resample(rng, logx, logL, law, base))
    return fits


def _refit_resample(rng: np.random.Generator, logx: Mapping[str, np.ndarray], logL: np.ndarray, law: str,
                    base: Fit) -> Fit:
    """One bootstrap replicate: draw a resample (redrawing degenerate ones), refit from ``base``."""
    m, k = len(logL), len(LAWS[law])
    for _try in range(100):
        counts = np.bincount(rng.integers(0, m, m), minlength=m).astype(float)
        used = counts > 0
        if used.sum() >= k + 1 and all(np.unique(logx[a][used]).size >= 2 for a in logx):
            break
    else:
        raise ScalingError(f"could not draw a bootstrap resample of {m} runs with {k + 1} distinct runs "
                           f"and two values of {', '.join(logx)}; the table is too small to bootstrap.")
    # a resample is the same rows, each weighted by how often it was drawn
    theta, f = _minimize(base.theta[None], logx, logL, law, base.delta, counts, BOOT_OPTIONS)
    return _make_fit(law, theta, f, m, base.delta)


def _interval(x: np.ndarray, level: float) -> tuple[float, float, float]:
    """(standard error, lower, upper): the sample sd and the percentile interval of bootstrap values."""
    if not 0 < level < 1:
        raise ScalingError(f"interval level must lie in (0, 1), e.g. 0.95; got {level!r}.")
    x = np.asarray(x, dtype=float)
    q = 100 * (1 - level) / 2
    lo, hi = np.percentile(x, [q, 100 - q])
    return float(x.std(ddof=1)), float(lo), float(hi)


def summarize_bootstrap(fits: Sequence[Fit], level: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """{parameter: (se, lo, hi)} over bootstrap fits: sd and percentile ``level`` interval."""
    if len(fits) < 2:
        raise ScalingError(f"a bootstrap summary needs at least 2 resampled fits, got {len(fits)}; "
                           f"raise n_boot (200 or more for 95% intervals).")
    return {p: _interval(np.array([f.params[p] for f in fits]), level) for p in fits[0].params}


def bootstrap(table: Mapping[str, Any], law: str = "nd", n_boot: int = 200, seed: int = 0,
              base: Fit | None = None, level: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """Standard error and percentile ``level`` interval of every parameter of ``law``:
    {name: (se, lo, hi)} from `bootstrap_fits` (resampling over runs)."""
    return summarize_bootstrap(bootstrap_fits(table, law, n_boot, seed, base), level)


# ---------------------------------------------------------------------------------- compute-optimal

def _require_nd(fit: Fit) -> None:
    if fit.law != "nd":
        raise ScalingError(f"compute-optimal allocation needs the joint law 'nd' ({FORMULAS['nd']}); this "
                           f"fit is law {fit.law!r}. Sweep both model size and data size and fit law='nd'.")


def allocation_exponents(fit: Fit) -> tuple[float, float]:
    """(a, b) with N_opt ∝ C^a, D_opt ∝ C^b: a = beta / (alpha + beta), b = alpha / (alpha + beta)."""
    _require_nd(fit)
    al, be = fit.params["alpha"], fit.params["beta"]
    return be / (al + be), al / (al + be)


def compute_optimal(fit: Fit, C: Any) -> tuple[Any, Any]:
    """(N_opt, D_opt) minimizing L(N, D) subject to C = 6 N D (Hoffmann et al. 2022, eq. 4 and D.2):

        G = (alpha A / (beta B))^(1 / (alpha + beta))
        N_opt = G (C/6)^(beta / (alpha + beta)),   D_opt = G^-1 (C/6)^(alpha / (alpha + beta))

    ``C`` in FLOPs, a number or an array; returns floats or arrays alike.
    """
    _require_nd(fit)
    p = fit.params
    c6 = np.asarray(C, dtype=float) / 6.0
    if np.any(~np.isfinite(c6) | (c6 <= 0)):
        raise ScalingError(f"compute budget C must be positive and finite FLOPs, got {C!r}.")
    s = p["alpha"] + p["beta"]
    G = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1.0 / s)
    N, D = G * c6 ** (p["beta"] / s), c6 ** (p["alpha"] / s) / G
    return (float(N), float(D)) if N.ndim == 0 else (N, D)


def compute_optimal_interval(boot_fits: Sequence[Fit], C: float,
                             level: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """{"N_opt", "D_opt", "a", "b": (se, lo, hi)} at compute ``C`` over bootstrap fits of law "nd"."""
    if len(boot_fits) < 2:
        raise ScalingError(f"an interval needs at least 2 bootstrap fits, got {len(boot_fits)}.")
    opt = np.array([compute_optimal(f, float(C)) for f in boot_fits])
    ab = np.array([allocation_exponents(f) for f in boot_fits])
    return {"N_opt": _interval(opt[:, 0], level), "D_opt": _interval(opt[:, 1], level),
            "a": _interval(ab[:, 0], level), "b": _interval(ab[:, 1], level)}


# ------------------------------------------------------------------------------ extrapolation check

def holdout_check(table: Mapping[str, Any], law: str = "nd", holdout: str = "largest", k: int = 1,
                  n_boot: int = 200, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Fit on all but the ``k`` largest models, predict those, and say whether the prediction held.

    "Largest" orders rows by params (by data for law "d"). For each held-out run the result gives
    the predicted and observed loss, the relative error (predicted - observed) / observed, and a
    bootstrap ``level`` prediction interval: for each bootstrap fit of the kept runs, its log
    prediction plus one log residual of the full fit of the kept runs drawn at random (a resampling
    prediction interval, Davison & Hinkley 1997, "Bootstrap Methods and their Application", ch. 6),
    so the interval covers run-to-run noise as well as parameter uncertainty.
    ``inside`` says whether the observed loss lies in it. JSON-ready.
    """
    if holdout != "largest":
        raise ScalingError(f"unknown holdout {holdout!r} (valid: 'largest': hold out the k runs with "
                           f"the most parameters, or the most data for law 'd').")
    _columns(table, law)  # checks before choosing rows
    axis = "data" if law == "d" else "params"
    cols = {c: np.asarray(v) for c, v in table.items() if c in ("params", "data", "loss")}
    m = len(cols["loss"])
    n_params = len(LAWS[law])
    if not 1 <= k <= m - n_params - 1:
        raise ScalingError(
            f"holding out k={k} of {m} runs leaves {m - k} to fit law {law!r}, which needs at least "
            f"{n_params + 1}; use 1 <= k <= {m - n_params - 1} or add runs.")
    order = np.argsort(np.asarray(cols[axis], dtype=float), kind="stable")
    held, kept = order[-k:], order[:-k]
    train = {c: v[kept] for c, v in cols.items()}
    fit = fit_law(train, law)
    boots = bootstrap_fits(train, law, n_boot, seed, base=fit)
    logx, logL = _columns(train, law)
    resid = logL - _log_pred(fit.theta, logx, law)[0]
    rng = np.random.default_rng(seed + 1)
    x_N = np.asarray(cols["params"], dtype=float)[held] if "params" in cols else None
    x_D = np.asarray(cols["data"], dtype=float)[held] if "data" in cols else None
    sims = np.array([b.predict(N=x_N, D=x_D) for b in boots])  # (n_boot, k)
    sims = sims * np.exp(rng.choice(resid, size=sims.shape))
    q = 100 * (1 - level) / 2
    lo, hi = np.percentile(sims, [q, 100 - q], axis=0)
    pred = fit.predict(N=x_N, D=x_D)
    points = []
    for j, i in enumerate(held):
        obs = float(cols["loss"][i])
        points.append({
            "row": int(i), "params": float(cols["params"][i]) if "params" in cols else None,
            "data": float(cols["data"][i]) if "data" in cols else None,
            "predicted": float(pred[j]), "observed": obs, "rel_error": float((pred[j] - obs) / obs),
            "lo": float(lo[j]), "hi": float(hi[j]), "inside": bool(lo[j] <= obs <= hi[j])})
    return {"law": law, "holdout": holdout, "k": k, "level": level, "n_fit": len(kept),
            "params": fit.params, "points": points,
            "max_abs_rel_error": max(abs(p["rel_error"]) for p in points)}


def fit_summary(fit: Fit, boot: Mapping[str, tuple[float, float, float]] | None) -> dict[str, Any]:
    """JSON-ready summary: {"law", "formula", "n_points", "objective", and per parameter
    {"value", "se", "lo", "hi"}} (se/lo/hi None when ``boot`` is None)."""
    out: dict[str, Any] = {"law": fit.law, "formula": fit.formula, "n_points": fit.n_points,
                           "objective": fit.objective}
    for name, value in fit.params.items():
        se, lo, hi = boot[name] if boot is not None else (None, None, None)
        out[name] = {"value": value, "se": se, "lo": lo, "hi": hi}
    return out

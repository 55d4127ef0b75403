"""Generated PDE data (dataset ``burgers``): 1-D viscous Burgers' equation on the periodic unit
interval, the operator-learning benchmark of Li et al. (2021, "Fourier Neural Operator for
Parametric Partial Differential Equations", ICLR, section 5.1):

    u_t + (u^2 / 2)_x = nu u_xx,   x in [0, 1) periodic,   t in (0, 1]

Each example maps an initial condition u0 to the solution u(., t=1). The initial conditions are
drawn from the Gaussian random field mu = N(0, 625 (-Delta + 25 I)^-2) (Li et al.'s measure): in
the orthonormal Fourier basis sqrt(2) cos(2 pi k x), sqrt(2) sin(2 pi k x), k >= 1, the
coefficients are independent normals with variance 625 ((2 pi k)^2 + 25)^-2; the constant mode is
zero, as in Li et al.'s generator (GRF1.m, mean m = 0), so every u0 has mean zero (which Burgers'
equation conserves).

Solver: Fourier pseudo-spectral in space, exponential time differencing Runge-Kutta of order 4
in time (ETDRK4, Cox & Matthews 2002, with the contour-integral coefficients of Kassam &
Trefethen 2005, "Fourth-order time-stepping for stiff PDEs"), which integrates the stiff viscous
term exactly. The state is the first :data:`SOLVER_MODES` complex Fourier coefficients; the
nonlinear term is computed on a grid of 3 x that many points, so the quadratic product is free of
aliasing (Orszag's 3/2 rule). With nu = 0.1 a mode k decays like exp(-nu (2 pi k)^2 t): mode 128
loses a factor e in 1.5e-5 time units, so the modes the state drops hold nothing measurable at
t = 1 (the tests check the solver against the exact Cole-Hopf solution and against twice the
modes and half the step). u0 is sampled on ``data.grid`` points with all its modes up to the
grid's Nyquist frequency, u(1) is evaluated there exactly from its Fourier series, and both are
subsampled to ``data.resolution`` points (Li et al. generated at 8192 and subsampled).

Data options (:class:`layerwise.config.DataConfig`): ``data.resolution`` (256; must divide
``data.grid``, 1024), ``data.viscosity`` (0.1), ``data.num_train`` (1000), ``data.num_test``
(200), ``data.seed`` (0). The train and test initial conditions come from separate seeded streams,
so the test set does not change with ``data.num_train``, and the first n examples of a split are
the same for any larger n. The generated pairs are cached in the data root as
``burgers/burgers_nu<nu>_train<n>_test<n>_grid<grid>_seed<seed>.npz`` (float32); a missing file is
generated (about 10 s on one core for the default 1,200 pairs), a corrupt or mismatching one is
regenerated with a warning, and an unwritable data root keeps the data in memory with a warning.
"""

from __future__ import annotations

import os
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from layerwise.data.datasets import DataError, Dataset, DatasetInfo, register_dataset

__all__ = ["CACHE_VERSION", "SOLVER_DT", "SOLVER_MODES", "burgers_cache_path", "cole_hopf", "generate_burgers",
           "grf_coefficients", "grf_variance", "sample_grf", "solve_burgers"]

SOLVER_MODES = 128  # complex Fourier modes of the solver's state (wavenumbers 0 .. 127)
SOLVER_DT = 2e-3  # ETDRK4 time step (time units); halving it changes u(1) by ~1e-8 of its size (tests)
GRF_SCALE, GRF_TAU2 = 625.0, 25.0  # mu = N(0, 625 (-Delta + 25 I)^-2), Li et al. (2021)
GRF_MAX_MODE = 4096  # coefficients drawn per example (8192-point grids): any data.grid gets the same functions
CACHE_VERSION = 1  # bump when the generator or the solver changes what a cache file holds
_CHUNK = 100  # examples generated at once (bounds the memory of the GRF draw: 100 x 4096 x 2 doubles)


# ---------------------------------------------------------------------------------------- the GRF
def grf_std(k: np.ndarray) -> np.ndarray:
    """Standard deviation of the cos and sin coefficients of wavenumbers ``k`` >= 1 under
    N(0, 625 (-Delta + 25 I)^-2) on [0, 1): sqrt(625) / ((2 pi k)^2 + 25)."""
    return np.sqrt(GRF_SCALE) / ((2 * np.pi * k) ** 2 + GRF_TAU2)


def grf_variance(max_mode: int = GRF_MAX_MODE) -> float:
    """Pointwise variance of u0(x) (the same at every x): sum over k = 1 .. max_mode of
    2 * (cos and sin coefficient variance) * (sqrt 2)^2 / 2 = 2 * 625 / ((2 pi k)^2 + 25)^2."""
    k = np.arange(1, max_mode + 1)
    return float(np.sum(2 * grf_std(k) ** 2))


def grf_coefficients(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, GRF_MAX_MODE + 1) complex128 Fourier coefficients c_k of n draws of u0, normalized so
    that u0(x) = sum_k c_k exp(2 pi i k x) + conj; c_0 = 0. For the real basis sqrt(2) cos,
    sqrt(2) sin with coefficients a_k, b_k ~ N(0, grf_std(k)^2): c_k = (a_k - i b_k) / sqrt(2)."""
    k = np.arange(1, GRF_MAX_MODE + 1)
    ab = rng.standard_normal((n, GRF_MAX_MODE, 2)) * grf_std(k)[None, :, None]  # (n, K, 2)
    c = np.zeros((n, GRF_MAX_MODE + 1), np.complex128)
    c[:, 1:] = (ab[..., 0] - 1j * ab[..., 1]) / np.sqrt(2)
    return c


def _on_grid(c: np.ndarray, grid: int) -> np.ndarray:
    """Fourier coefficients (n, K) (the c_k above, k = 0 .. K-1) -> the function on ``grid``
    points x_j = j / grid, (n, grid) float64, exactly (modes at or above grid / 2 are dropped)."""
    half = grid // 2 + 1
    spec = np.zeros((c.shape[0], half), np.complex128)
    m = min(c.shape[1], half - 1)  # the Nyquist mode of an even grid stays zero
    spec[:, :m] = c[:, :m]
    return np.fft.irfft(spec * grid, n=grid, axis=-1)


def sample_grf(n: int, grid: int, rng: np.random.Generator) -> np.ndarray:
    """(n, grid) float64 draws of u0 ~ N(0, 625 (-Delta + 25 I)^-2) at x_j = j / grid."""
    return _on_grid(grf_coefficients(n, rng), grid)


# ---------------------------------------------------------------------------------------- the solver
def _etdrk4_coefficients(L: np.ndarray, dt: float, contour_points: int = 32) -> tuple[np.ndarray, ...]:
    """ETDRK4's (E, E2, Q, f1, f2, f3) for the diagonal linear operator ``L`` (K,), by the mean
    over a circle of radius 1 around each dt * L_k (Kassam & Trefethen 2005, eq. 2.5): exact
    where the formulas lose all digits to cancellation (dt L near 0)."""
    r = np.exp(1j * np.pi * (np.arange(1, contour_points + 1) - 0.5) / contour_points)  # (M,)
    LR = dt * L[:, None] + r[None, :]  # (K, M)
    e = np.exp(LR)
    Q = dt * np.real(np.mean((np.exp(LR / 2) - 1) / LR, axis=1))
    f1 = dt * np.real(np.mean((-4 - LR + e * (4 - 3 * LR + LR ** 2)) / LR ** 3, axis=1))
    f2 = dt * np.real(np.mean((2 + LR + e * (LR - 2)) / LR ** 3, axis=1))
    f3 = dt * np.real(np.mean((-4 - 3 * LR - LR ** 2 + e * (4 - LR)) / LR ** 3, axis=1))
    return np.exp(dt * L), np.exp(dt * L / 2), Q, f1, f2, f3


def solve_burgers(u0: np.ndarray, nu: float, t_end: float = 1.0, dt: float = SOLVER_DT,
                  modes: int = SOLVER_MODES, out_grid: int | None = None) -> np.ndarray:
    """u(., t_end) of u_t + (u^2/2)_x = nu u_xx on the periodic unit interval, for each row of
    ``u0`` (n, N) float (values at x_j = j / N, N even). Returns (n, out_grid) float64 at
    x_j = j / out_grid (default N), evaluated from the solution's Fourier series.

    Pseudo-spectral ETDRK4 (module docstring) on the first ``modes`` Fourier modes of u0 (those at
    or above N / 2 do not exist on the grid), the quadratic term dealiased on 3 * modes points;
    ``dt`` in time units (the last step is shortened to land on t_end). Vectorized over rows.
    Raises ValueError for nu <= 0, t_end < 0, dt <= 0, or a grid that is not even."""
    u0 = np.asarray(u0, np.float64)
    if u0.ndim != 2 or u0.shape[1] % 2 or u0.shape[1] < 4:
        raise ValueError(f"u0 must be (n, N) values on an even grid N >= 4, got shape {u0.shape}")
    if not (nu > 0 and t_end >= 0 and dt > 0):
        raise ValueError(f"solve_burgers needs nu > 0, t_end >= 0 and dt > 0; got {nu}, {t_end}, {dt}")
    N = u0.shape[1]
    K = min(modes, N // 2)  # the state: modes 0 .. K-1
    M = 3 * K  # dealiasing grid: a product of two modes < K has modes < 2K - 1 <= M - K
    v = np.fft.rfft(u0, axis=-1)[:, :K] / N  # (n, K) the c_k of u = sum c_k e^{2 pi i k x} + conj
    k = 2 * np.pi * np.arange(K)  # (K,) angular wavenumbers
    g = -0.5j * k  # (u^2 / 2)_x in Fourier: i k (u^2)^ / 2, moved to the right-hand side

    def nonlinear(c: np.ndarray) -> np.ndarray:  # (n, K) -> (n, K): -(u^2 / 2)_x, dealiased
        spec = np.zeros((c.shape[0], M // 2 + 1), np.complex128)
        spec[:, :K] = c
        u = np.fft.irfft(spec * M, n=M, axis=-1)  # (n, M) values
        return g * (np.fft.rfft(u * u, axis=-1)[:, :K] / M)

    t, coeffs = 0.0, {}
    while t < t_end - 1e-12:
        h = min(dt, t_end - t)
        if h not in coeffs:  # the full step, and at most one shorter last step
            coeffs[h] = _etdrk4_coefficients(-nu * k ** 2, h)
        E, E2, Q, f1, f2, f3 = coeffs[h]
        Nv = nonlinear(v)
        a = E2 * v + Q * Nv
        Na = nonlinear(a)
        b = E2 * v + Q * Na
        Nb = nonlinear(b)
        c = E2 * a + Q * (2 * Nb - Nv)
        Nc = nonlinear(c)
        v = E * v + Nv * f1 + 2 * (Na + Nb) * f2 + Nc * f3
        t += h
    return _on_grid(v, out_grid or N)


def cole_hopf(x: np.ndarray, t: float, nu: float, amplitudes: dict[int, float], offset: float) -> np.ndarray:
    """The exact solution u = -2 nu phi_x / phi of Burgers' equation (Cole 1951, Hopf 1950) for the
    heat-equation solution phi(x, t) = offset + sum_k b_k exp(-nu (2 pi k)^2 t) cos(2 pi k x),
    ``amplitudes`` = {k: b_k}; phi > 0 needs offset > sum |b_k|. Used to test the solver."""
    phi, phi_x = np.full_like(x, offset, dtype=np.float64), np.zeros_like(x, dtype=np.float64)
    for k, b in amplitudes.items():
        w = 2 * np.pi * k
        decay = b * np.exp(-nu * w * w * t)
        phi += decay * np.cos(w * x)
        phi_x -= decay * w * np.sin(w * x)
    return -2 * nu * phi_x / phi


# ---------------------------------------------------------------------------------------- the dataset
def generate_burgers(n: int, grid: int, nu: float, seed: int, split: int) -> tuple[np.ndarray, np.ndarray]:
    """(u0, u1), each (n, grid) float32: n initial conditions of the seeded stream (seed, split)
    (split 0 train, 1 test) and their solutions at t = 1."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, split]))
    u0 = np.empty((n, grid), np.float32)
    u1 = np.empty((n, grid), np.float32)
    for s in range(0, n, _CHUNK):  # the stream is drawn in order: example i is the same for any n > i
        c = grf_coefficients(min(_CHUNK, n - s), rng)
        x0 = _on_grid(c, grid)
        u0[s:s + len(c)] = x0
        u1[s:s + len(c)] = solve_burgers(x0, nu)
    return u0, u1


def burgers_cache_path(root: Path, nu: float, num_train: int, num_test: int, grid: int, seed: int) -> Path:
    """Where the generated pairs are cached: the parameters are in the file name."""
    return Path(root) / "burgers" / f"burgers_nu{nu:g}_train{num_train}_test{num_test}_grid{grid}_seed{seed}.npz"


def _read_cache(path: Path, params: dict[str, Any]) -> dict[str, np.ndarray] | str:
    """The cached arrays, or why they cannot be used (a corrupt file, other parameters, NaN)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as e:
        return f"it is corrupt or not an .npz archive ({type(e).__name__}: {e})"
    want = {"u0_train": (params["num_train"], params["grid"]), "u1_train": (params["num_train"], params["grid"]),
            "u0_test": (params["num_test"], params["grid"]), "u1_test": (params["num_test"], params["grid"])}
    for key, shape in want.items():
        if key not in arrays or arrays[key].shape != shape or arrays[key].dtype != np.float32:
            got = (arrays[key].shape, arrays[key].dtype) if key in arrays else "nothing"
            return f"its array '{key}' is {got}, not {shape} float32"
        if not np.isfinite(arrays[key]).all():
            return f"its array '{key}' holds NaN or Inf values"
    saved = arrays.get("params")
    expect = _params_array(params)
    if saved is None or saved.shape != expect.shape or not np.array_equal(saved, expect):
        return "it was written by another version of the generator or with other parameters"
    return arrays


def _params_array(params: dict[str, Any]) -> np.ndarray:
    return np.array([CACHE_VERSION, params["nu"], params["num_train"], params["num_test"], params["grid"],
                     params["seed"], SOLVER_MODES, SOLVER_DT, GRF_SCALE, GRF_TAU2, GRF_MAX_MODE], np.float64)


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> str | None:
    """Write atomically (a temporary file, then a rename): an interrupted write never leaves a
    half file under the cache name. Returns why it could not be written, or None."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
        return None
    except OSError as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        return f"{type(e).__name__}: {e.strerror or e}"


def _options(opts: Any) -> dict[str, Any]:
    from layerwise.config import ConfigError

    p = {"nu": float(getattr(opts, "viscosity", 0.1)), "num_train": int(getattr(opts, "num_train", 1000)),
         "num_test": int(getattr(opts, "num_test", 200)), "grid": int(getattr(opts, "grid", 1024)),
         "seed": int(getattr(opts, "seed", 0)), "resolution": int(getattr(opts, "resolution", 256))}
    if not p["nu"] > 0:
        raise ConfigError(f"data.viscosity={p['nu']}: Burgers' viscosity must be > 0 (Li et al.: 0.1).")
    if p["num_train"] < 1 or p["num_test"] < 1:
        raise ConfigError(f"data.num_train={p['num_train']} and data.num_test={p['num_test']}: each split needs at "
                          f"least one example (the benchmark: 1000 and 200).")
    if p["grid"] < 16 or p["grid"] % 2 or p["grid"] > 2 * GRF_MAX_MODE:
        raise ConfigError(f"data.grid={p['grid']}: the generation grid must be an even number of points in 16 .. "
                          f"{2 * GRF_MAX_MODE} (default 1024).")
    if p["resolution"] < 4 or p["grid"] % p["resolution"]:
        divisors = [d for d in (64, 128, 256, 512, 1024, 2048, 4096, 8192) if p["grid"] % d == 0 and d <= p["grid"]]
        raise ConfigError(f"data.resolution={p['resolution']} must divide data.grid={p['grid']} (every "
                          f"{p['grid']}/resolution-th point is kept): use one of {divisors or [p['grid']]}, or set "
                          f"data.grid to a multiple of {p['resolution']}.")
    if getattr(opts, "task", "auto") not in ("auto", "regress"):
        raise ConfigError(f"data.task={opts.task}: burgers maps u0 to u(t=1), a regression of a field. Use "
                          f"data.task=auto or regress.")
    return p


def load_burgers_arrays(root: Path, p: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The four (n, grid) float32 arrays (u0/u1 x train/test) from the cache, generating (and
    caching) them when missing or unusable; and a provenance record."""
    path = burgers_cache_path(root, p["nu"], p["num_train"], p["num_test"], p["grid"], p["seed"])
    info: dict[str, Any] = {"path": str(path)}
    arrays: dict[str, np.ndarray] | str | None = None
    if path.is_file():
        arrays = _read_cache(path, p)
        if isinstance(arrays, str):
            warnings.warn(f"burgers: the cached data '{path}' cannot be used: {arrays}. Generating it again and "
                          f"replacing the file.", stacklevel=3)
            arrays = None
        else:
            info["cached"] = True
    if arrays is None:
        t0 = time.perf_counter()
        u0_tr, u1_tr = generate_burgers(p["num_train"], p["grid"], p["nu"], p["seed"], split=0)
        u0_te, u1_te = generate_burgers(p["num_test"], p["grid"], p["nu"], p["seed"], split=1)
        arrays = {"u0_train": u0_tr, "u1_train": u1_tr, "u0_test": u0_te, "u1_test": u1_te,
                  "params": _params_array(p)}
        info |= {"cached": False, "generate_seconds": round(time.perf_counter() - t0, 2)}
        why = _write_cache(path, arrays)
        if why:
            warnings.warn(f"burgers: cannot write the generated data to '{path}' ({why}); it is kept in memory for "
                          f"this run only. Set data.root to a writable folder to cache it.", stacklevel=3)
    return arrays, info


@register_dataset("burgers")
def _burgers(root: Path, opts: Any) -> Dataset:
    """u0 -> u(t=1) pairs of viscous Burgers' equation, generated and cached (module docstring)."""
    p = _options(opts)
    arrays, where = load_burgers_arrays(root, p)
    step = p["grid"] // p["resolution"]
    x_tr = torch.from_numpy(np.ascontiguousarray(arrays["u0_train"][:, None, ::step]))  # (N, 1, R)
    y_tr = torch.from_numpy(np.ascontiguousarray(arrays["u1_train"][:, ::step]))  # (N, R)
    x_te = torch.from_numpy(np.ascontiguousarray(arrays["u0_test"][:, None, ::step]))
    y_te = torch.from_numpy(np.ascontiguousarray(arrays["u1_test"][:, ::step]))
    mean, std = float(x_tr.double().mean()), float(x_tr.double().std())
    field = {"equation": "burgers", "viscosity": p["nu"], "t": 1.0, "domain": [0.0, 1.0], "periodic": True,
             "grid": p["grid"], "resolution": p["resolution"]}
    # one input channel (u0) at `resolution` points; one output value (u at t=1) per point
    info = DatasetInfo("burgers", (1, p["resolution"]), 1, ["u"], 1.0, [mean], [std if std > 0 else 1.0],
                       task="regress", extra={"field": field})
    source = {"source": "generated: u0 ~ N(0, 625 (-Delta + 25 I)^-2) (Li et al. 2021), pseudo-spectral ETDRK4 "
                        f"({SOLVER_MODES} modes, 3/2-rule dealiasing, dt {SOLVER_DT:g}) to t=1",
              **where, "viscosity": p["nu"], "grid": p["grid"], "resolution": p["resolution"], "seed": p["seed"],
              "split": f"separate seeded streams (seed {p['seed']}, split 0 / 1)",
              "train": p["num_train"], "test": p["num_test"], "task_reason": "u0 -> u(t=1), a field"}
    return Dataset(info, x_tr, y_tr, x_te, y_te, source)


def read_field_inputs(path: str | Path) -> torch.Tensor:
    """A .npy file of initial conditions for ``predict`` -> (N, 1, R) float32: one u0 (R,) or a
    batch (N, R) / (N, 1, R), sampled at x_j = j / R on the periodic unit interval, at any
    resolution R. DataError naming the file for anything else."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"input '{path}' does not exist. Give a .npy file holding u0 at R points, (R,) or (N, R).")
    if path.suffix.lower() != ".npy":
        raise DataError(f"'{path}' is not a .npy file; this model maps initial conditions u0 to u(t=1). Save u0 "
                        f"sampled at x_j = j/R, j = 0 .. R-1, with numpy.save: (R,) for one, (N, R) for several.")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"'{path}' is not a readable .npy array ({e}). Save it with numpy.save.") from None
    if arr.dtype.kind not in "uif":
        raise DataError(f"'{path}' holds {arr.dtype} values; u0 must be numbers.")
    x = arr.astype(np.float32)
    if x.ndim == 1:
        x = x[None, None]
    elif x.ndim == 2:
        x = x[:, None]
    if x.ndim != 3 or x.shape[1] != 1 or x.shape[2] < 4:
        raise DataError(f"'{path}' has shape {arr.shape}; give u0 at R >= 4 points: (R,), (N, R) or (N, 1, R).")
    if not np.isfinite(x).all():
        raise DataError(f"'{path}' holds NaN or Inf values; clean the array first.")
    return torch.from_numpy(x)

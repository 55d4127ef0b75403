"""Generated PDE data (dataset ``burgers``): 1-D viscous Burgers' equation on the periodic unit
interval, the operator-learning benchmark of Li et al. (2021, "Fourier Neural Operator for
Parametric Partial Differential Equations", ICLR, section 5.1):

    u_t + (u^2 / 2)_x = nu u_xx,   x in [0, 1) periodic,   t in (0, 1]

Each example maps an initial condition u0 to the solution u(., t=1). The initial conditions are
drawn from the Gaussian random field N(0, sigma^2 (-Delta + tau^2 I)^-gamma): in the orthonormal
Fourier basis sqrt(2) cos(2 pi k x), sqrt(2) sin(2 pi k x), k >= 1, the coefficients are
independent normals with standard deviation sigma ((2 pi k)^2 + tau^2)^(-gamma/2); the constant
mode is zero, as in Li et al.'s generator (GRF1.m, mean m = 0), so every u0 has mean zero (which
Burgers' equation conserves). Two settings matter:

- Li et al.'s text (the defaults): nu = 0.1, N(0, 625 (-Delta + 25 I)^-2), i.e. gamma 2, tau 5,
  sigma 25. Viscosity dominates: u(1) is ~1/70 of u0 and nearly a sine.
- Li et al.'s released generator (data_generation/burgers in their repository), which made the
  data their 0.0149 was measured on: nu = 1e-3, gamma 2.5, tau 7, sigma 7^2 = 49
  (:data:`SHARP_GRF`). Shocks form and stay sharp (width ~ 4 nu / jump ~ 0.002-0.01).

Solver: Fourier pseudo-spectral in space, exponential time differencing Runge-Kutta of order 4
in time (ETDRK4, Cox & Matthews 2002, with the contour-integral coefficients of Kassam &
Trefethen 2005, "Fourth-order time-stepping for stiff PDEs"), which integrates the stiff viscous
term exactly. The state is the first ``modes`` complex Fourier coefficients; the nonlinear term
is computed on a grid of 3 x that many points, so the quadratic product is free of aliasing
(Orszag's 3/2 rule). The modes and the step follow from the viscosity and the field's amplitude
(:func:`burgers_resolution`: 128 modes and dt 2e-3 at nu = 0.1, where mode 128 loses a factor e
in 1.5e-5 time units; 512 modes and dt 1.6e-3 at Li et al.'s released setting), and every solve
checks its own resolution: when the top third of the modes holds more than :data:`TAIL_TOL` of
the energy at any check, or the state blows up, it raises :class:`UnderResolvedError` instead of
returning a smeared solution. The tests check the solver against exact Cole-Hopf solutions
(nu = 0.1 and a shock of width ~0.002 at nu = 1e-3) and against twice the modes and half the
step. The generator solves from u0's Fourier coefficients (not from its grid samples), and both
u0 and u(1) are stored as exact point values on ``data.grid`` points (modes above the grid's
Nyquist folded, not dropped), then subsampled to ``data.resolution`` points (Li et al. generated
at 8192 points and subsampled).

Data options (:class:`layerwise.config.DataConfig`): ``data.resolution`` (256; must divide
``data.grid``, 1024), ``data.viscosity`` (0.1), ``data.grf_gamma`` (2), ``data.grf_tau`` (5),
``data.grf_sigma`` (25), ``data.num_train`` (1000), ``data.num_test`` (200), ``data.seed`` (0),
``data.solver_modes`` and ``data.solver_dt`` (0: automatic). The train and test initial
conditions come from separate seeded streams, so the test set does not change with
``data.num_train``, and the first n examples of a split are the same for any larger n. The
generated pairs are cached in the data root as
``burgers/burgers_nu<nu>_grf<gamma>-<tau>-<sigma>_train<n>_test<n>_grid<grid>_seed<seed>.npz``
(float32; ``_modes<K>`` / ``_dt<dt>`` appended when set by hand); a missing file is generated
(on one core: ~10 s for the default 1,200 pairs, ~1 min at Li et al.'s released setting), a
corrupt or mismatching one is regenerated with a warning, and an unwritable data root keeps the
data in memory with a warning.
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

__all__ = ["CACHE_VERSION", "SHARP_GRF", "TAIL_TOL", "UnderResolvedError", "burgers_cache_path", "burgers_resolution",
           "burgers_setting", "cole_hopf", "generate_burgers", "grf_coefficients", "grf_variance", "sample_grf",
           "solve_burgers", "solve_burgers_spectral"]

SOLVER_MIN_MODES = 128  # the solver keeps at least wavenumbers 0 .. 127 (all nu = 0.1 needs)
SOLVER_MAX_MODES = 8192  # beyond this a setting is refused as too costly to generate here
SOLVER_MAX_DT = 2e-3  # ETDRK4 time step cap (time units); at nu = 0.1 halving it changes u(1) by ~1e-8 (tests)
CFL = 7.0  # dt = CFL / (2 pi modes amplitude), capped at SOLVER_MAX_DT: about 1/2.5 of where ETDRK4 blew up
TAIL_TOL = 1e-5  # largest energy fraction allowed in the top third of the solver's modes (resolution check)
GRF_GAMMA, GRF_TAU, GRF_SIGMA = 2.0, 5.0, 25.0  # N(0, 625 (-Delta + 25 I)^-2): Li et al. (2021)'s text
SHARP_GRF = (2.5, 7.0, 49.0)  # Li et al.'s released generator: gamma 2.5, tau 7, sigma 7^2 (with nu = 1e-3)
GRF_MAX_MODE = 4096  # coefficients drawn per example (8192-point grids): any data.grid gets the same functions
CACHE_VERSION = 2  # bump when the generator or the solver changes what a cache file holds
_CHUNK = 100  # examples generated at once (bounds the memory of the GRF draw: 100 x 4096 x 2 doubles)


class UnderResolvedError(ValueError):
    """The solver's modes cannot hold the solution: the energy in the top third of its Fourier
    modes exceeded :data:`TAIL_TOL` of the total (a shock narrower than the grid resolves), or
    the state blew up (a time step beyond ETDRK4's stability). ``tail`` is the largest fraction
    seen, ``modes`` and ``dt`` the solver's settings."""

    def __init__(self, message: str, tail: float, modes: int, dt: float):
        super().__init__(message)
        self.tail, self.modes, self.dt = tail, modes, dt


# ---------------------------------------------------------------------------------------- the GRF
def grf_std(k: np.ndarray, gamma: float = GRF_GAMMA, tau: float = GRF_TAU, sigma: float = GRF_SIGMA) -> np.ndarray:
    """Standard deviation of the cos and sin coefficients of wavenumbers ``k`` >= 1 under
    N(0, sigma^2 (-Delta + tau^2 I)^-gamma) on [0, 1) in the orthonormal basis sqrt(2) cos(2 pi k x),
    sqrt(2) sin(2 pi k x): sigma ((2 pi k)^2 + tau^2)^(-gamma / 2). The defaults are Li et al.'s
    text (sigma^2 = 625, tau^2 = 25, gamma = 2); their released generator uses gamma 2.5, tau 7,
    sigma 49 (:data:`SHARP_GRF`), with the same parametrization."""
    return sigma * ((2 * np.pi * np.asarray(k, np.float64)) ** 2 + tau ** 2) ** (-gamma / 2)


def grf_variance(max_mode: int = GRF_MAX_MODE, gamma: float = GRF_GAMMA, tau: float = GRF_TAU,
                 sigma: float = GRF_SIGMA) -> float:
    """Pointwise variance of u0(x) (the same at every x): sum over k = 1 .. max_mode of
    (cos and sin coefficient variances) * (sqrt 2)^2 / 2 each = 2 grf_std(k)^2."""
    k = np.arange(1, max_mode + 1)
    return float(np.sum(2 * grf_std(k, gamma, tau, sigma) ** 2))


def grf_coefficients(n: int, rng: np.random.Generator, gamma: float = GRF_GAMMA, tau: float = GRF_TAU,
                     sigma: float = GRF_SIGMA) -> np.ndarray:
    """(n, GRF_MAX_MODE + 1) complex128 Fourier coefficients c_k of n draws of u0, normalized so
    that u0(x) = sum_k c_k exp(2 pi i k x) + conj; c_0 = 0. For the real basis sqrt(2) cos,
    sqrt(2) sin with coefficients a_k, b_k ~ N(0, grf_std(k)^2): c_k = (a_k - i b_k) / sqrt(2).
    The same rng draws the same standard normals for any (gamma, tau, sigma)."""
    k = np.arange(1, GRF_MAX_MODE + 1)
    ab = rng.standard_normal((n, GRF_MAX_MODE, 2)) * grf_std(k, gamma, tau, sigma)[None, :, None]  # (n, K, 2)
    c = np.zeros((n, GRF_MAX_MODE + 1), np.complex128)
    c[:, 1:] = (ab[..., 0] - 1j * ab[..., 1]) / np.sqrt(2)
    return c


def _on_grid(c: np.ndarray, grid: int) -> np.ndarray:
    """Fourier coefficients (n, K) (the c_k above, k = 0 .. K-1) -> the function's values at the
    ``grid`` points x_j = j / grid, (n, grid) float64, exactly: modes at or above grid / 2 are
    folded onto the grid's wavenumbers (k and k + grid agree at every x_j), not dropped, so any
    grid holds point values of the same function. u_j = 2 Re(sum_k c'_k e^{2 pi i k j / grid})
    with c'_0 = c_0 / 2."""
    n, K = c.shape
    folded = np.zeros((n, -(-K // grid) * grid), np.complex128)
    folded[:, :K] = c
    folded[:, 0] /= 2
    folded = folded.reshape(n, -1, grid).sum(axis=1)  # (n, grid): wavenumbers mod grid
    return 2 * np.real(np.fft.ifft(folded, axis=-1)) * grid


def sample_grf(n: int, grid: int, rng: np.random.Generator, gamma: float = GRF_GAMMA, tau: float = GRF_TAU,
               sigma: float = GRF_SIGMA) -> np.ndarray:
    """(n, grid) float64 draws of u0 ~ N(0, sigma^2 (-Delta + tau^2 I)^-gamma) at x_j = j / grid."""
    return _on_grid(grf_coefficients(n, rng, gamma, tau, sigma), grid)


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


def burgers_resolution(nu: float, amplitude: float, modes: int | None = None) -> tuple[int, float]:
    """(modes, dt): the solver settings for viscosity ``nu`` and fields bounded by ``amplitude``
    (max |u|; Burgers' equation never exceeds max |u0|). A shock has width ~ 4 nu / (its jump)
    and a Fourier spectrum falling like exp(-pi^2 width k), so the modes needed grow like
    amplitude / nu: the smallest power of two >= max(128, amplitude / (4 nu)), unless ``modes``
    is given (calibrated on Li et al.'s released setting, nu = 1e-3, gamma 2.5, tau 7, sigma 49,
    amplitude 5 std = 1.36: 512 modes, where the top third holds < 3e-8 of the energy in 1,200
    draws; 256 hold 2e-5; a jump of the full 2 x amplitude needs up to 4x more, which the
    resolution check of :func:`solve_burgers_spectral` catches). The step keeps the advective
    CFL number 2 pi modes amplitude dt at :data:`CFL` (ETDRK4 treats the viscous term exactly;
    the explicit nonlinear term blew up at ~2.5x that), capped at :data:`SOLVER_MAX_DT`.
    Raises ValueError for nu <= 0 or amplitude < 0."""
    if not (nu > 0 and amplitude >= 0 and np.isfinite(amplitude)):
        raise ValueError(f"burgers_resolution needs nu > 0 and a finite amplitude >= 0; got {nu}, {amplitude}")
    if modes is None:
        modes = 1 << int(np.ceil(np.log2(max(SOLVER_MIN_MODES, amplitude / (4 * nu)))))
    dt = min(SOLVER_MAX_DT, CFL / (2 * np.pi * modes * max(amplitude, 1e-12)))
    return int(modes), float(dt)


def solve_burgers_spectral(c0: np.ndarray, nu: float, t_end: float = 1.0, *, modes: int, dt: float,
                           precision: str = "double", tail_tol: float | None = TAIL_TOL,
                           workers: int | None = None) -> np.ndarray:
    """The Fourier coefficients at t_end, (n, modes) complex128, of the solutions of
    u_t + (u^2/2)_x = nu u_xx on the periodic unit interval from the coefficients ``c0`` (n, K0)
    (u = sum_k c_k e^{2 pi i k x} + conj, as :func:`grf_coefficients`; modes >= ``modes`` are
    dropped, missing ones are zero).

    Pseudo-spectral ETDRK4 (module docstring) on wavenumbers 0 .. modes-1, the quadratic term
    dealiased on 3 * modes points; ``dt`` in time units (rounded down so that whole steps land
    on t_end). ``precision``: "double", or "mixed" (the transforms of the nonlinear term in
    single precision, the state and the step in double: 1.3x faster; at nu = 1e-3 it changes
    u(1) by 1.5e-7 of its norm where all-single changed it by 2e-5). ``workers``: threads of the
    FFTs (scipy.fft). Vectorized over rows.

    Resolution check (``tail_tol``, None to skip): every ~1/20 of the steps and at the end, the
    energy in the top third of the modes over the total of each row must stay <= tail_tol, and
    the state finite; else :class:`UnderResolvedError` (a ValueError). At nu = 1e-3 a fraction of
    2e-5 left u(1) within 3e-6 of a 4x finer solution, 1e-3 within 2e-3 (tests and RESULTS.md).
    Raises ValueError for nu <= 0, t_end < 0, dt <= 0, modes < 4, or another precision."""
    import scipy.fft

    if not (nu > 0 and t_end >= 0 and dt > 0 and modes >= 4):
        raise ValueError(f"solve_burgers needs nu > 0, t_end >= 0, dt > 0 and modes >= 4; got {nu}, {t_end}, "
                         f"{dt}, {modes}")
    if precision not in ("double", "mixed"):
        raise ValueError(f"precision must be 'double' or 'mixed', got {precision!r}")
    K, M = modes, 3 * modes  # a product of two modes < K has modes <= 2K - 2, which fold to >= K on M points
    c0 = np.asarray(c0)
    v = np.zeros((c0.shape[0], K), np.complex128)
    v[:, :min(K, c0.shape[1])] = c0[:, :K]
    k = 2 * np.pi * np.arange(K)  # (K,) angular wavenumbers
    g = -0.5j * k * M  # (u^2 / 2)_x in Fourier: i k (u^2)^ / 2, moved to the right-hand side; M: FFT scalings
    fft_type = np.complex64 if precision == "mixed" else np.complex128

    def nonlinear(c: np.ndarray) -> np.ndarray:  # (n, K) -> (n, K): -(u^2 / 2)_x, dealiased
        w = scipy.fft.irfft(c.astype(fft_type, copy=False), n=M, axis=-1, workers=workers)  # u / M on M points
        return g * scipy.fft.rfft(w * w, axis=-1, workers=workers)[:, :K]

    steps = int(np.ceil(t_end / dt - 1e-9)) if t_end > 0 else 0
    h = t_end / steps if steps else 0.0
    E, E2, Q, f1, f2, f3 = _etdrk4_coefficients(-nu * k ** 2, h) if steps else (None,) * 6
    check_every = max(1, steps // 20)
    worst = 0.0
    with np.errstate(over="ignore", invalid="ignore"):  # a blow-up is caught by the check below
        for i in range(steps):
            Nv = nonlinear(v)
            a = E2 * v + Q * Nv
            Na = nonlinear(a)
            b = E2 * v + Q * Na
            Nb = nonlinear(b)
            c = E2 * a + Q * (2 * Nb - Nv)
            Nc = nonlinear(c)
            v = E * v + Nv * f1 + 2 * (Na + Nb) * f2 + Nc * f3
            if tail_tol is None or ((i + 1) % check_every and i + 1 < steps):
                continue
            tail = _tail_fraction(v)
            if tail <= tail_tol:
                worst = max(worst, tail)
                continue
            at = f"at t = {(i + 1) * h:.3g} (viscosity {nu:g}, {K} Fourier modes, dt {h:.3g})"
            if not np.isfinite(tail):
                raise UnderResolvedError(f"the Burgers solver blew up {at}: the step is unstable for these modes and "
                                         f"amplitudes; a smaller step (or fewer modes) is stable.", np.inf, K, h)
            raise UnderResolvedError(
                f"the Burgers solver is under-resolved {at}: the top third of its modes holds {tail:.2g} of the "
                f"energy (allowed {tail_tol:g}), so a shock is narrower than the modes resolve (or the step is "
                f"unstable). More modes (and a smaller step) resolve it.", tail, K, h)
    return v


def _tail_fraction(v: np.ndarray) -> float:
    """Largest over rows of the energy in the top third of the modes over the total (NaN if not finite)."""
    e = v.real ** 2 + v.imag ** 2
    total = e.sum(axis=1)
    if not np.isfinite(total).all():
        return float("nan")
    top = e[:, (2 * e.shape[1]) // 3:].sum(axis=1)
    return float(np.max(top / np.maximum(total, 1e-300), initial=0.0))


def solve_burgers(u0: np.ndarray, nu: float, t_end: float = 1.0, dt: float | None = None, modes: int | None = None,
                  out_grid: int | None = None, precision: str = "double",
                  tail_tol: float | None = TAIL_TOL) -> np.ndarray:
    """u(., t_end) of u_t + (u^2/2)_x = nu u_xx on the periodic unit interval, for each row of
    ``u0`` (n, N) float (values at x_j = j / N, N even). Returns (n, out_grid) float64, the
    solution's point values at x_j = j / out_grid (default N).

    :func:`solve_burgers_spectral` from the grid's Fourier modes of u0 (those at or above N / 2 do
    not exist on the grid). ``modes`` and ``dt`` default to :func:`burgers_resolution` for
    max |u0| (128 modes and dt 2e-3 at nu = 0.1); when the modes are chosen here and the
    resolution check fails, the solve is repeated with twice the modes (and a step to match), up
    to :data:`SOLVER_MAX_MODES`. Raises ValueError for nu <= 0, t_end < 0, dt <= 0, or a grid
    that is not even; :class:`UnderResolvedError` when the modes do not hold the solution."""
    u0 = np.asarray(u0, np.float64)
    if u0.ndim != 2 or u0.shape[1] % 2 or u0.shape[1] < 4:
        raise ValueError(f"u0 must be (n, N) values on an even grid N >= 4, got shape {u0.shape}")
    if not nu > 0:
        raise ValueError(f"solve_burgers needs nu > 0, t_end >= 0 and dt > 0; got {nu}, {t_end}, {dt}")
    amplitude = float(np.abs(u0).max(initial=0.0))
    K, auto_dt = burgers_resolution(nu, amplitude, modes)
    N = u0.shape[1]
    c0 = np.fft.rfft(u0, axis=-1)[:, :N // 2] / N  # (n, N/2): the c_k of u0 below the grid's Nyquist
    while True:
        try:
            v = solve_burgers_spectral(c0, nu, t_end, modes=K, dt=auto_dt if dt is None else dt,
                                       precision=precision, tail_tol=tail_tol)
            return _on_grid(v, out_grid or N)
        except UnderResolvedError:
            if modes is not None or 2 * K > SOLVER_MAX_MODES:
                raise
            K, auto_dt = burgers_resolution(nu, amplitude, 2 * K)


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
def burgers_setting(nu: float, gamma: float = GRF_GAMMA, tau: float = GRF_TAU, sigma: float = GRF_SIGMA,
                    modes: int = 0, dt: float = 0.0) -> dict[str, Any]:
    """The generator's solver settings for a data setting: {"amplitude", "modes", "dt"}. The
    amplitude bound is 5 standard deviations of the GRF (sqrt of :func:`grf_variance`; the largest
    max |u0| in 1,200 draws was 4.1 of them); ``modes`` / ``dt`` > 0 override
    :func:`burgers_resolution`'s choice (the resolution check still applies). The settings depend
    on the data setting only, never on the draws, so example i is the same for any n."""
    amplitude = 5 * np.sqrt(grf_variance(GRF_MAX_MODE, gamma, tau, sigma))
    auto_modes, auto_dt = burgers_resolution(nu, amplitude, modes or None)
    return {"amplitude": float(amplitude), "modes": auto_modes, "dt": float(dt or auto_dt)}


def generate_burgers(n: int, grid: int, nu: float, seed: int, split: int, *, gamma: float = GRF_GAMMA,
                     tau: float = GRF_TAU, sigma: float = GRF_SIGMA, modes: int = 0, dt: float = 0.0,
                     precision: str = "mixed", workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(u0, u1), each (n, grid) float32 point values at x_j = j / grid: n initial conditions
    u0 ~ N(0, sigma^2 (-Delta + tau^2 I)^-gamma) of the seeded stream (seed, split) (split 0
    train, 1 test) and their solutions at t = 1, solved from u0's Fourier coefficients with the
    settings of :func:`burgers_setting` (so ``grid`` only decides where the functions are
    sampled). ``precision`` and ``workers`` as :func:`solve_burgers_spectral`, whose
    :class:`UnderResolvedError` it raises when a setting is not resolved."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, split]))
    setting = burgers_setting(nu, gamma, tau, sigma, modes, dt)
    u0 = np.empty((n, grid), np.float32)
    u1 = np.empty((n, grid), np.float32)
    for s in range(0, n, _CHUNK):  # the stream is drawn in order: example i is the same for any n > i
        c = grf_coefficients(min(_CHUNK, n - s), rng, gamma, tau, sigma)
        u0[s:s + len(c)] = _on_grid(c, grid)
        v = solve_burgers_spectral(c, nu, modes=setting["modes"], dt=setting["dt"], precision=precision,
                                   workers=workers)
        u1[s:s + len(c)] = _on_grid(v, grid)
    return u0, u1


def burgers_cache_path(root: Path, nu: float, num_train: int, num_test: int, grid: int, seed: int,
                       gamma: float = GRF_GAMMA, tau: float = GRF_TAU, sigma: float = GRF_SIGMA, modes: int = 0,
                       dt: float = 0.0) -> Path:
    """Where the generated pairs are cached: the parameters are in the file name (the solver's
    modes and step only when they override the automatic choice, which the others decide)."""
    solver = (f"_modes{modes}" if modes else "") + (f"_dt{dt:g}" if dt else "")
    return Path(root) / "burgers" / (f"burgers_nu{nu:g}_grf{gamma:g}-{tau:g}-{sigma:g}_train{num_train}_test{num_test}"
                                     f"_grid{grid}_seed{seed}{solver}.npz")


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
    setting = _setting(params)
    return np.array([CACHE_VERSION, params["nu"], params["num_train"], params["num_test"], params["grid"],
                     params["seed"], params["gamma"], params["tau"], params["sigma"], setting["modes"],
                     setting["dt"], TAIL_TOL, GRF_MAX_MODE], np.float64)


def _setting(params: dict[str, Any]) -> dict[str, Any]:
    return burgers_setting(params["nu"], params["gamma"], params["tau"], params["sigma"], params["solver_modes"],
                           params["solver_dt"])


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
         "seed": int(getattr(opts, "seed", 0)), "resolution": int(getattr(opts, "resolution", 256)),
         "gamma": float(getattr(opts, "grf_gamma", GRF_GAMMA)), "tau": float(getattr(opts, "grf_tau", GRF_TAU)),
         "sigma": float(getattr(opts, "grf_sigma", GRF_SIGMA)),
         "solver_modes": int(getattr(opts, "solver_modes", 0)), "solver_dt": float(getattr(opts, "solver_dt", 0.0))}
    if not (p["nu"] > 0 and np.isfinite(p["nu"])):
        raise ConfigError(f"data.viscosity={p['nu']}: Burgers' viscosity must be a finite number > 0 (Li et al.'s "
                          f"text: 0.1; their released generator: 0.001).")
    if p["num_train"] < 1 or p["num_test"] < 1:
        raise ConfigError(f"data.num_train={p['num_train']} and data.num_test={p['num_test']}: each split needs at "
                          f"least one example (the benchmark: 1000 and 200).")
    if p["grid"] < 16 or p["grid"] % 2 or p["grid"] > 2 * GRF_MAX_MODE:
        raise ConfigError(f"data.grid={p['grid']}: the generation grid must be an even number of points in 16 .. "
                          f"{2 * GRF_MAX_MODE} (default 1024).")
    if p["resolution"] < 4 or p["grid"] % p["resolution"]:
        divisors = [d for d in (64, 128, 256, 512, 1024, 2048, 4096, 8192) if p["grid"] % d == 0 and d <= p["grid"]]
        multiple = f", or set data.grid to a multiple of {p['resolution']}" if p["resolution"] >= 4 else ""
        raise ConfigError(f"data.resolution={p['resolution']} must be >= 4 and divide data.grid={p['grid']} (every "
                          f"{p['grid']}/resolution-th point is kept): use one of {divisors or [p['grid']]}{multiple}.")
    if not (np.isfinite(p["gamma"]) and p["gamma"] > 0.5):
        raise ConfigError(f"data.grf_gamma={p['gamma']}: the initial conditions' covariance sigma^2 (-Delta + tau^2 "
                          f"I)^-gamma needs gamma > 0.5 for a finite pointwise variance in 1-D (Li et al.'s text: 2; "
                          f"their released generator: 2.5).")
    if not (np.isfinite(p["tau"]) and p["tau"] >= 0):
        raise ConfigError(f"data.grf_tau={p['tau']}: the covariance's tau must be a finite number >= 0 (Li et "
                          f"al.'s text: 5, i.e. 25 I; their released generator: 7).")
    if not (np.isfinite(p["sigma"]) and p["sigma"] > 0):
        raise ConfigError(f"data.grf_sigma={p['sigma']}: the covariance's scale sigma must be a finite number > 0 "
                          f"(u0's standard deviation is proportional to it; Li et al.'s text: 25, i.e. 625 = 25^2; "
                          f"their released generator: 49).")
    if p["solver_modes"] and not 16 <= p["solver_modes"] <= SOLVER_MAX_MODES:
        raise ConfigError(f"data.solver_modes={p['solver_modes']}: give 0 (chosen from the viscosity and the "
                          f"field's amplitude) or a number of Fourier modes in 16 .. {SOLVER_MAX_MODES}.")
    if not (np.isfinite(p["solver_dt"]) and 0 <= p["solver_dt"] <= 0.1):
        raise ConfigError(f"data.solver_dt={p['solver_dt']}: give 0 (chosen from the modes and the field's "
                          f"amplitude) or a time step in (0, 0.1].")
    if getattr(opts, "task", "auto") not in ("auto", "regress"):
        raise ConfigError(f"data.task={opts.task}: burgers maps u0 to u(t=1), a regression of a field. Use "
                          f"data.task=auto or regress.")
    setting = _setting(p)
    if setting["modes"] > SOLVER_MAX_MODES:
        raise ConfigError(f"data.viscosity={p['nu']:g} with the GRF (gamma {p['gamma']:g}, tau {p['tau']:g}, sigma "
                          f"{p['sigma']:g}; fields up to |u| ~ {setting['amplitude']:.3g}) would need "
                          f"{setting['modes']} Fourier modes to resolve its shocks, more than this generator's "
                          f"{SOLVER_MAX_MODES}: raise data.viscosity or lower data.grf_sigma.")
    return p


def load_burgers_arrays(root: Path, p: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The four (n, grid) float32 arrays (u0/u1 x train/test) from the cache, generating (and
    caching) them when missing or unusable; and a provenance record. ConfigError (nothing
    written) when the solver cannot resolve the setting."""
    from layerwise.config import ConfigError

    setting = _setting(p)
    path = burgers_cache_path(root, p["nu"], p["num_train"], p["num_test"], p["grid"], p["seed"], p["gamma"],
                              p["tau"], p["sigma"], p["solver_modes"], p["solver_dt"])
    info: dict[str, Any] = {"path": str(path), "solver_modes": setting["modes"], "solver_dt": setting["dt"]}
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
        kw = {"gamma": p["gamma"], "tau": p["tau"], "sigma": p["sigma"], "modes": p["solver_modes"],
              "dt": p["solver_dt"], "workers": torch.get_num_threads()}
        try:
            u0_tr, u1_tr = generate_burgers(p["num_train"], p["grid"], p["nu"], p["seed"], split=0, **kw)
            u0_te, u1_te = generate_burgers(p["num_test"], p["grid"], p["nu"], p["seed"], split=1, **kw)
        except UnderResolvedError as e:
            setting = (f"burgers: data.viscosity={p['nu']:g} with the GRF (gamma {p['gamma']:g}, tau {p['tau']:g}, "
                       f"sigma {p['sigma']:g})")
            if not np.isfinite(e.tail):
                raise ConfigError(f"{setting}: the solver blew up with {e.modes} Fourier modes and step {e.dt:.3g} "
                                  f"(unstable). Set data.solver_dt={e.dt / 2:.3g} (or 0 for the automatic step). "
                                  f"Nothing was written.") from None
            raise ConfigError(
                f"{setting} is not resolved by the solver's {e.modes} Fourier modes and step {e.dt:.3g}: the top third "
                f"of the modes held {e.tail:.2g} of the energy (at most {TAIL_TOL:g} allowed), so its shocks would "
                f"be smeared. Set data.solver_modes={2 * e.modes} (and data.solver_dt={e.dt / 2:.3g}), or raise "
                f"data.viscosity / lower data.grf_sigma. Nothing was written.") from None
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
    grf = {"gamma": p["gamma"], "tau": p["tau"], "sigma": p["sigma"]}
    field = {"equation": "burgers", "viscosity": p["nu"], "t": 1.0, "domain": [0.0, 1.0], "periodic": True,
             "grid": p["grid"], "resolution": p["resolution"], "grf": grf}
    # one input channel (u0) at `resolution` points; one output value (u at t=1) per point
    info = DatasetInfo("burgers", (1, p["resolution"]), 1, ["u"], 1.0, [mean], [std if std > 0 else 1.0],
                       task="regress", extra={"field": field})
    source = {"source": f"generated: u0 ~ N(0, {p['sigma']:g}^2 (-Delta + {p['tau']:g}^2 I)^-{p['gamma']:g}) (Li et "
                        f"al. 2021's GRF), pseudo-spectral ETDRK4 ({where['solver_modes']} modes, 3/2-rule "
                        f"dealiasing, dt {where['solver_dt']:.3g}) to t=1",
              **where, "viscosity": p["nu"], "grf": grf, "grid": p["grid"], "resolution": p["resolution"], "seed": p["seed"],
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

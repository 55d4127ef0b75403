"""The burgers source: the solver against exact solutions and itself, the initial conditions'
statistics and seeding, the cache (its name, reuse, corrupt files), and the options."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from layerwise.config import ConfigError, DataConfig
from layerwise.data import load_dataset
from layerwise.data.pde import (
    SHARP_GRF,
    UnderResolvedError,
    _on_grid,
    burgers_cache_path,
    burgers_resolution,
    burgers_setting,
    cole_hopf,
    generate_burgers,
    grf_coefficients,
    grf_std,
    grf_variance,
    sample_grf,
    solve_burgers,
    solve_burgers_spectral,
)

NU = 0.1
HEAT = {1: 0.5, 2: 0.3, 3: 0.1}  # phi = 1 + sum b_k e^{-nu (2 pi k)^2 t} cos(2 pi k x): |u0| up to 1.2


@pytest.mark.parametrize("t_end", [0.1, 1.0])
def test_solver_matches_cole_hopf(t_end: float) -> None:
    x = np.arange(256) / 256
    u0 = cole_hopf(x, 0.0, NU, HEAT, 1.0)[None]
    exact = cole_hopf(x, t_end, NU, HEAT, 1.0)
    u = solve_burgers(u0, NU, t_end=t_end)[0]
    err = np.abs(u - exact).max() / np.abs(exact).max()
    assert err < 1e-8, err  # measured 1.5e-10 (t=0.1) and 5.6e-11 (t=1) at dt 1e-3; dt 2e-3 is 16x that
    # the step matters: a 20x coarser one is measurably worse, but still 4th-order close
    coarse = np.abs(solve_burgers(u0, NU, t_end=t_end, dt=2e-2)[0] - exact).max() / np.abs(exact).max()
    assert err < coarse < 1e-4


def test_solver_converges_at_half_step_and_more_modes() -> None:
    u0 = sample_grf(8, 512, np.random.default_rng(1))
    u = solve_burgers(u0, NU)
    half = solve_burgers(u0, NU, dt=1e-3)
    more = solve_burgers(u0, NU, modes=256)
    scale = np.abs(u).max()
    assert np.abs(u - half).max() / scale < 1e-7  # measured 1.3e-8: the 4th-order error of dt 2e-3
    assert np.abs(u - more).max() / scale < 1e-10  # the dropped modes hold nothing at t = 1
    # the output grid is the Fourier series evaluated elsewhere: every 2nd point of 1024 is the 512 grid
    assert np.allclose(solve_burgers(u0, NU, out_grid=1024)[:, ::2], u, atol=1e-12)
    # the mean is conserved (Burgers is a conservation law; u0's grid mean is the folded modes 512, 1024, ...: ~1e-6)
    # and the field decays under viscosity
    assert np.abs(u.mean(1) - u0.mean(1)).max() < 1e-12 and np.abs(u0.mean(1)).max() < 1e-4
    assert (np.abs(u).max(1) < np.abs(u0).max(1)).all()


def test_solver_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="nu > 0"):
        solve_burgers(np.zeros((1, 16)), 0.0)
    with pytest.raises(ValueError, match="even grid"):
        solve_burgers(np.zeros((1, 15)), NU)


def test_resolution_scales_with_viscosity_and_amplitude() -> None:
    assert burgers_setting(NU) == {"amplitude": pytest.approx(2.968, abs=1e-3), "modes": 128, "dt": 2e-3}
    sharp = burgers_setting(1e-3, *SHARP_GRF)  # Li et al.'s released generator: 5 std = 1.370
    assert sharp["modes"] == 512 and sharp["dt"] == pytest.approx(7 / (2 * np.pi * 512 * 1.3705), rel=1e-3)
    assert burgers_resolution(1e-4, 1.37) == (4096, pytest.approx(1.99e-4, rel=1e-2))  # 10x less viscous: 8x modes
    assert burgers_resolution(1e-3, sharp["amplitude"], modes=1024)[1] == pytest.approx(sharp["dt"] / 2)
    assert burgers_setting(1e-3, *SHARP_GRF, modes=300, dt=1e-3) == {"amplitude": pytest.approx(1.3705, abs=1e-3),
                                                                      "modes": 300, "dt": 1e-3}


def _sharpest(n: int = 4) -> np.ndarray:
    """The n draws with the largest range of 40 of Li et al.'s released GRF (ranges 1.3 .. 1.8)."""
    c = grf_coefficients(40, np.random.default_rng(3), *SHARP_GRF)
    u = _on_grid(c, 1024)
    return c[np.argsort(u.min(1) - u.max(1))[:n]]


def test_solver_converges_at_small_viscosity() -> None:
    # nu = 1e-3 (Li et al.'s released setting): shocks ~0.005 wide; the automatic 512 modes and dt 1.6e-3 against
    # twice the modes and half the step, and the mixed precision the generator uses
    c, s = _sharpest(), burgers_setting(1e-3, *SHARP_GRF)
    u = _on_grid(solve_burgers_spectral(c, 1e-3, modes=s["modes"], dt=s["dt"]), 1024)
    fine = _on_grid(solve_burgers_spectral(c, 1e-3, modes=2 * s["modes"], dt=s["dt"] / 2), 1024)
    mixed = _on_grid(solve_burgers_spectral(c, 1e-3, modes=s["modes"], dt=s["dt"], precision="mixed"), 1024)
    rel = lambda a: (np.linalg.norm(a - fine, axis=1) / np.linalg.norm(fine, axis=1)).max()
    assert rel(u) < 1e-7, rel(u)  # measured 2.4e-8
    assert rel(mixed) < 5e-7, rel(mixed)  # measured 9.8e-8
    assert np.abs(np.diff(fine, axis=1)).max() * 1024 > 50  # a shock: slopes of ~80 at t = 1 (u0's: < 8)
    # 128 modes cannot hold these shocks: refused, not smeared
    with pytest.raises(UnderResolvedError, match="under-resolved.*128 Fourier modes") as e:
        solve_burgers_spectral(c, 1e-3, modes=128, dt=s["dt"])
    assert e.value.tail > 1e-5 and e.value.modes == 128
    with pytest.raises(UnderResolvedError, match="blew up"):  # a step 8x the automatic one blows up
        solve_burgers_spectral(c, 1e-3, modes=512, dt=8 * s["dt"])


def test_solver_matches_cole_hopf_at_small_viscosity() -> None:
    # phi = 1.0001 + cos(2 pi x) nearly vanishes at x = 1/2: u = -2 nu phi_x / phi is a viscous shock of height
    # 0.88 and width ~0.002 at nu = 1e-3, which weakens as phi diffuses
    x, nu, heat = np.arange(1024) / 1024, 1e-3, {1: 1.0}
    u0 = cole_hopf(x, 0.0, nu, heat, 1.0001)[None]
    for t_end, bound in ((0.1, 1e-5), (1.0, 1e-5)):  # measured 2.4e-6 and 7.6e-7
        exact = cole_hopf(x, t_end, nu, heat, 1.0001)
        err = np.abs(solve_burgers(u0, nu, t_end=t_end)[0] - exact).max() / np.abs(exact).max()
        assert err < bound, (t_end, err)
    # the automatic choice for |u0| <= 0.88 (256 modes) is refused by the check and doubled; fixed, it is refused
    with pytest.raises(UnderResolvedError):
        solve_burgers(u0, nu, t_end=0.1, modes=256)


def test_grid_values_are_exact_point_values() -> None:
    c = grf_coefficients(3, np.random.default_rng(2), *SHARP_GRF)
    fine, coarse = _on_grid(c, 256), _on_grid(c, 64)  # modes above 32 fold onto the coarse grid, not dropped
    assert np.abs(fine[:, ::4] - coarse).max() < 1e-12
    x = np.arange(64) / 64
    direct = sum(2 * np.real(c[:, k, None] * np.exp(2j * np.pi * k * x)) for k in range(1, 4097))
    assert np.abs(direct - coarse).max() < 1e-12


def test_grf_statistics_and_seed() -> None:
    rng = np.random.default_rng(0)
    c = grf_coefficients(500, rng)  # (500, 4097)
    assert np.all(c[:, 0] == 0)  # no constant mode: every u0 has mean zero
    k = np.arange(1, 65)
    z = c[:, 1:65] * np.sqrt(2) / grf_std(k)  # (a - i b) / std: standard normal parts
    both = np.concatenate([z.real.ravel(), -z.imag.ravel()])  # 64,000 draws
    assert abs(both.mean()) < 0.02 and abs(both.var() - 1) < 0.03, (both.mean(), both.var())
    u = sample_grf(500, 256, np.random.default_rng(0))
    assert abs(u.var() / grf_variance() - 1) < 0.15, (u.var(), grf_variance())  # mostly modes 1-2: few draws
    assert abs(grf_variance() - 0.3523) < 1e-3  # 2 * sum_k 625 / ((2 pi k)^2 + 25)^2
    assert np.array_equal(u, sample_grf(500, 256, np.random.default_rng(0)))
    # Li et al.'s released GRF (gamma 2.5, tau 7, sigma 49): the same normals, scaled; std 0.274
    assert abs(grf_variance(4096, *SHARP_GRF) - 0.07513) < 1e-4
    sharp = grf_coefficients(500, np.random.default_rng(0), *SHARP_GRF)
    assert np.allclose(sharp[:, 1:] / grf_std(np.arange(1, 4097), *SHARP_GRF), c[:, 1:] / grf_std(np.arange(1, 4097)))


def test_generation_is_deterministic_and_prefix_stable() -> None:
    a0, a1 = generate_burgers(3, 64, NU, seed=5, split=0)
    b0, b1 = generate_burgers(5, 64, NU, seed=5, split=0)
    assert np.array_equal(a0, b0[:3]) and np.array_equal(a1, b1[:3])  # example i does not depend on n
    c0, _ = generate_burgers(3, 64, NU, seed=5, split=1)
    d0, _ = generate_burgers(3, 64, NU, seed=6, split=0)
    assert not np.allclose(a0, c0) and not np.allclose(a0, d0)
    # another grid samples the same functions (the same low modes): every 2nd point of 128 is close
    _, e1 = generate_burgers(3, 128, NU, seed=5, split=0)
    assert np.abs(e1[:, ::2] - a1).max() < 1e-6


def _opts(**kw) -> DataConfig:
    return DataConfig(name="burgers", **({"num_train": 6, "num_test": 3, "grid": 128, "resolution": 64} | kw))


def test_cache_name_reuse_and_resolutions(tmp_path) -> None:
    ds = load_dataset("burgers", tmp_path, _opts())
    path = burgers_cache_path(tmp_path, NU, 6, 3, 128, 0)
    assert path == tmp_path / "burgers" / "burgers_nu0.1_grf2-5-25_train6_test3_grid128_seed0.npz"
    assert burgers_cache_path(tmp_path, 1e-3, 6, 3, 128, 0, *SHARP_GRF, modes=1024, dt=5e-4).name == (
        "burgers_nu0.001_grf2.5-7-49_train6_test3_grid128_seed0_modes1024_dt0.0005.npz")
    assert path.is_file() and ds.source["cached"] is False and ds.source["path"] == str(path)
    assert ds.x_train.shape == (6, 1, 64) and ds.y_train.shape == (6, 64) and ds.x_test.shape == (3, 1, 64)
    assert ds.info.task == "regress" and ds.info.in_shape == (1, 64) and "field" in ds.info.extra
    again = load_dataset("burgers", tmp_path, _opts())
    assert again.source["cached"] is True and bool((again.y_test == ds.y_test).all())
    fine = load_dataset("burgers", tmp_path, _opts(resolution=128))  # the same cache file, every point
    assert fine.source["cached"] is True and bool((fine.y_test[:, ::2] == ds.y_test).all())
    assert not list(path.parent.glob("*.tmp*"))  # the write was atomic


def test_corrupt_cache_is_regenerated_with_a_warning(tmp_path) -> None:
    good = load_dataset("burgers", tmp_path, _opts())
    path = burgers_cache_path(tmp_path, NU, 6, 3, 128, 0)
    path.write_bytes(b"PK\x03\x04 not a zip at all")
    with pytest.warns(UserWarning, match="cannot be used: it is corrupt"):
        ds = load_dataset("burgers", tmp_path, _opts())
    assert ds.source["cached"] is False and bool((ds.y_train == good.y_train).all())
    np.savez(path, u0_train=np.zeros((6, 128), np.float32))  # readable, but not what it should hold
    with pytest.warns(UserWarning, match="u1_train"):
        load_dataset("burgers", tmp_path, _opts())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rewritten: the next load reads it quietly
        assert load_dataset("burgers", tmp_path, _opts()).source["cached"] is True


def test_unwritable_root_keeps_the_data_in_memory(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the data root's folder should go")
    with pytest.warns(UserWarning, match="kept in memory"):
        ds = load_dataset("burgers", blocker, _opts())
    assert ds.x_train.shape == (6, 1, 64)


@pytest.mark.parametrize(("kw", "match"), [({"resolution": 48}, "must be >= 4 and divide data.grid"),
                                            # no "set data.grid to a multiple of 0 / -256" for a nonsense value
                                            ({"resolution": 0}, r"divide data.grid=128 .*use one of \[64, 128\]\.$"),
                                            ({"resolution": -256}, r"data.resolution=-256 must be >= 4.*\[64, 128\]\.$"),
                                            ({"viscosity": 0.0}, "viscosity"),
                                            ({"num_test": 0}, "at least one"),
                                            ({"grid": 100_000}, "data.grid"),
                                            ({"task": "classify"}, "regression of a field"),
                                            ({"grf_gamma": 0.5}, "gamma > 0.5"),
                                            ({"grf_tau": -1.0}, "data.grf_tau"),
                                            ({"grf_sigma": 0.0}, "data.grf_sigma"),
                                            ({"solver_modes": 8}, "data.solver_modes"),
                                            ({"solver_dt": float("nan")}, "data.solver_dt"),
                                            ({"viscosity": 1e-5}, "more than this generator's 8192")])
def test_bad_options_are_config_errors(tmp_path, kw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_dataset("burgers", tmp_path, _opts(**kw))


def test_sharp_setting_and_an_unresolved_one(tmp_path) -> None:
    sharp = {"viscosity": 1e-3, "grf_gamma": 2.5, "grf_tau": 7.0, "grf_sigma": 49.0, "num_train": 4, "num_test": 2}
    ds = load_dataset("burgers", tmp_path, _opts(**sharp, grid=256))
    assert ds.source["solver_modes"] == 512 and ds.source["grf"] == {"gamma": 2.5, "tau": 7.0, "sigma": 49.0}
    assert "grf2.5-7-49" in ds.source["path"] and "49^2 (-Delta + 7^2 I)^-2.5" in ds.source["source"]
    assert 0.15 < float(ds.x_train.std()) < 0.45  # the GRF's std is 0.274
    with pytest.raises(ConfigError, match=r"not resolved.*128 Fourier modes.*data.solver_modes=256"):
        load_dataset("burgers", tmp_path, _opts(**sharp, grid=256, solver_modes=128, seed=1))
    assert len(list((tmp_path / "burgers").iterdir())) == 1  # nothing written for the refused setting

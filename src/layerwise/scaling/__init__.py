"""Scaling laws: sweeps that train a grid of recipes into a results table, law fits with bootstrap
uncertainty, compute-optimal allocation, an extrapolation check, and reports (see
`layerwise.scaling.sweep`, `layerwise.scaling.fit` for the laws and the method, and
`layerwise.scaling.report`)."""

from layerwise.scaling.fit import (
    FORMULAS,
    LAWS,
    Fit,
    allocation_exponents,
    bootstrap,
    bootstrap_fits,
    compute_optimal,
    compute_optimal_interval,
    fit_law,
    fit_summary,
    holdout_check,
    summarize_bootstrap,
)
from layerwise.scaling.report import (
    analyze,
    format_fit,
    format_table,
    load_results,
    write_report,
)
from layerwise.scaling.sweep import (
    GridPoint,
    SweepRunError,
    SweepSpec,
    load_spec,
    plan,
    run_sweep,
)
from layerwise.scaling.table import REQUIRED, ScalingError, read_table, write_table

__all__ = ["FORMULAS", "LAWS", "REQUIRED", "Fit", "GridPoint", "ScalingError", "SweepRunError", "SweepSpec",
           "allocation_exponents", "analyze", "bootstrap", "bootstrap_fits", "compute_optimal",
           "compute_optimal_interval", "fit_law", "fit_summary", "format_fit", "format_table",
           "holdout_check", "load_results", "load_spec", "plan", "read_table", "run_sweep",
           "summarize_bootstrap", "write_report", "write_table"]

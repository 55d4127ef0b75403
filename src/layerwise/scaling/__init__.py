"""Scaling laws: results tables, law fits with bootstrap uncertainty, compute-optimal allocation,
and an extrapolation check (see `layerwise.scaling.fit` for the laws and the method)."""

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
from layerwise.scaling.table import REQUIRED, ScalingError, read_table, write_table

__all__ = ["FORMULAS", "LAWS", "REQUIRED", "Fit", "ScalingError", "allocation_exponents", "bootstrap",
           "bootstrap_fits", "compute_optimal", "compute_optimal_interval", "fit_law", "fit_summary",
           "holdout_check", "read_table", "summarize_bootstrap", "write_table"]

"""Insight into trained runs: explanations (Captum attributions), per-layer linear probes,
adversarial attacks and training, and energy metering.

Used by the CLI and the Python API; the training loop uses only the energy meter and the
adversarial-training step. Each command starts from :func:`open_run`.
"""

from layerwise.insight.runs import LoadedRun, PixelModel, open_run

__all__ = ["LoadedRun", "PixelModel", "open_run"]

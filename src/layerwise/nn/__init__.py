"""Blocks that models are built from: activations, norms, Dense, ConvNormAct, Residual, Dropout."""

from .activations import ACTIVATIONS, get_activation, unknown_choice_error
from .layers import ConvNormAct, Dense, Dropout, Residual, conv_cost, dense_cost
from .norms import NORM_EPS, NORMS, ChannelsLastNorm, get_norm, norm_num_params

__all__ = [
    "ACTIVATIONS",
    "NORMS",
    "NORM_EPS",
    "ChannelsLastNorm",
    "ConvNormAct",
    "Dense",
    "Dropout",
    "Residual",
    "conv_cost",
    "dense_cost",
    "get_activation",
    "get_norm",
    "norm_num_params",
    "unknown_choice_error",
]

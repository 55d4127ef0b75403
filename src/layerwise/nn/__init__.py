"""Blocks that models are built from: activations, norms, Dense, ConvNormAct, Residual, Dropout,
the transformer's SelfAttention, FeedForward, RotaryEmbedding and TransformerBlock, and the
Fourier Neural Operator's SpectralConv1d."""

from .activations import ACTIVATIONS, get_activation, unknown_choice_error
from .layers import ConvNormAct, Dense, Dropout, Residual, conv_cost, dense_cost
from .norms import NORM_EPS, NORMS, ChannelsLastNorm, get_norm, norm_num_params
from .spectral import SpectralConv1d, spectral_conv_cost
from .transformer import (
    FEEDFORWARDS,
    TRANSFORMER_NORMS,
    FeedForward,
    RotaryEmbedding,
    SelfAttention,
    TransformerBlock,
    feedforward_hidden,
    make_transformer_norm,
    qkv_to_head_major,
    transformer_block_cost,
    transformer_norm_params,
)

__all__ = [
    "ACTIVATIONS",
    "FEEDFORWARDS",
    "NORMS",
    "NORM_EPS",
    "TRANSFORMER_NORMS",
    "ChannelsLastNorm",
    "ConvNormAct",
    "Dense",
    "Dropout",
    "FeedForward",
    "Residual",
    "RotaryEmbedding",
    "SelfAttention",
    "SpectralConv1d",
    "TransformerBlock",
    "conv_cost",
    "dense_cost",
    "feedforward_hidden",
    "get_activation",
    "get_norm",
    "make_transformer_norm",
    "norm_num_params",
    "qkv_to_head_major",
    "spectral_conv_cost",
    "transformer_block_cost",
    "transformer_norm_params",
    "unknown_choice_error",
]

"""Activation functions by name: the f in h_l = f(W_l h_{l-1} + b_l).

Every entry is PyTorch's own module (its fused kernels, its autograd); this file only maps the
names a config may use onto them. `unknown_choice_error` (from `layerwise.choices`) is
re-exported for the blocks and the model registry.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from layerwise.choices import unknown_choice_error

__all__ = ["ACTIVATIONS", "get_activation", "unknown_choice_error"]


# name -> zero-argument constructor. Not in-place: per-layer probes and hooks (insight/) read the
# pre-activation tensors, and in-place ReLU would overwrite them.
_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,  # max(0, x)
    # GELU (Hendrycks & Gimpel 2016): x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2))), the exact form
    "gelu": lambda: nn.GELU(approximate="none"),
    # tanh approximation used by GPT-2/BERT: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "silu": nn.SiLU,  # x * sigmoid(x) (Elfwing et al. 2018; "swish" in Ramachandran et al. 2017)
    "identity": nn.Identity,  # f(x) = x: a purely linear layer
    # (e^x - e^-x) / (e^x + e^-x): bounded, the policy/value networks of PPO (Schulman et al. 2017;
    # Andrychowicz et al. 2021, "What Matters in On-Policy RL", found it better than ReLU there)
    "tanh": nn.Tanh,
}

ACTIVATIONS: tuple[str, ...] = tuple(_ACTIVATIONS)


def get_activation(name: str) -> nn.Module:
    """Return a new activation module for `name` (one of `ACTIVATIONS`).

    Raises:
        ValueError: `name` is not a known activation; the message suggests the closest one.
    """
    try:
        ctor = _ACTIVATIONS[name]
    except (KeyError, TypeError):  # TypeError: unhashable value such as a list from YAML
        raise unknown_choice_error("activation", name, ACTIVATIONS) from None
    return ctor()

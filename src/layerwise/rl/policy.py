"""Action distributions of the actor-critic's head: categorical (discrete actions) or diagonal Gaussian.

``head`` is what ``model(obs)`` returns: logits (B, A) of a categorical policy, or the mean (B, A) of a
Gaussian whose log standard deviation is ``model.log_std`` (A,). The formulas are written out (no
``torch.distributions``: acting calls them every environment step, and the objects cost more than
the arithmetic).
"""

from __future__ import annotations

import math

import torch

_LOG_2PI = math.log(2 * math.pi)


def is_gaussian(model: torch.nn.Module) -> bool:
    """Whether ``model``'s policy is a Gaussian over continuous actions."""
    return getattr(model, "policy", "categorical") == "gaussian"


def sample(model: torch.nn.Module, head: torch.Tensor, generator: torch.Generator | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(actions, their log-probabilities (B,)): discrete (B,) long, or continuous (B, A) float, unclipped."""
    if is_gaussian(model):
        std = model.log_std.exp()
        noise = torch.randn(head.shape, generator=generator, device=head.device, dtype=head.dtype)
        actions = head + std * noise
        return actions, log_prob_entropy(model, head, actions)[0]
    logp_all = torch.log_softmax(head, -1)
    actions = torch.multinomial(logp_all.exp(), 1, generator=generator).squeeze(-1)
    return actions, logp_all.gather(-1, actions[:, None]).squeeze(-1)


def log_prob_entropy(model: torch.nn.Module, head: torch.Tensor, actions: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(log pi(a|s) (B,), entropy of pi(.|s) (B,)) for the given actions.

    Gaussian: log N(a; mu, sigma^2) summed over the A dimensions, entropy sum of 0.5 + 0.5 log(2 pi) + log sigma."""
    if is_gaussian(model):
        log_std = model.log_std.expand_as(head)
        z = (actions - head) / log_std.exp()
        logp = (-0.5 * z.pow(2) - log_std - 0.5 * _LOG_2PI).sum(-1)
        return logp, (0.5 + 0.5 * _LOG_2PI + log_std).sum(-1)
    logp_all = torch.log_softmax(head, -1)
    return logp_all.gather(-1, actions[:, None]).squeeze(-1), -(logp_all.exp() * logp_all).sum(-1)


def greedy(model: torch.nn.Module, head: torch.Tensor) -> torch.Tensor:
    """The most likely action: argmax of the logits (B,), or the Gaussian's mean (B, A)."""
    return head if is_gaussian(model) else head.argmax(-1)

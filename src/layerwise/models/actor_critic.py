"""Actor-critic MLP for policy-gradient reinforcement learning (PPO): a policy and a value function.

    obs (B, obs_dim) -> actor:  Dense x depth (B, width) -> fc          (B, num_actions)  logits
                     -> critic: Dense x depth (B, width) -> value_head  (B, 1) -> (B,)    V(s)

The two trunks share nothing (Schulman et al. 2017, "Proximal Policy Optimization Algorithms",
arXiv:1707.06347, used separate networks for the Atari-free tasks; Huang et al. 2022, "The 37
Implementation Details of PPO", detail 1). Weights are initialized orthogonally with gain sqrt(2)
in the hidden layers, 0.01 in the policy head (near-uniform first policy) and 1 in the value head,
biases 0 (detail 2 there). ``num_classes`` is the number of discrete actions, so the model has the
same face as a classifier: ``model(obs)`` gives the policy's logits, ``model.value(obs)`` the
state values, ``model.policy_and_value(obs)`` both.

With ``policy="gaussian"`` (continuous actions: ``num_classes`` is the action's dimension) the head
gives the mean of a diagonal Gaussian whose log standard deviation is a learned vector independent
of the state, initialized to 0 (Schulman et al. 2017's MuJoCo policy; the 37 details, continuous 1).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..nn import ACTIVATIONS, Dense, dense_cost, unknown_choice_error
from .base import Model
from .registry import register_model

__all__ = ["POLICIES", "ActorCritic", "actor_critic", "actor_critic_cost"]

POLICIES = ("categorical", "gaussian")


def actor_critic_cost(obs_dim: int, num_actions: int, *, depth: int, width: int,
                      gaussian: bool = False) -> tuple[int, int]:
    """(parameters, forward FLOPs per observation of policy and value together).

    Each trunk: sum over hidden layers of (d_in * width + width); heads (width + 1) * num_actions
    and (width + 1); a Gaussian policy's log std adds num_actions parameters. FLOPs = 2 *
    multiply-adds of both trunks and both heads."""
    params = flops = 0
    for _ in range(2):  # actor, critic
        d_in = obs_dim
        for _ in range(depth):
            p, f = dense_cost(d_in, width, norm="none")
            params, flops, d_in = params + p, flops + f, width
    params += (d_in + 1) * (num_actions + 1) + (num_actions if gaussian else 0)
    return params, flops + 2 * d_in * (num_actions + 1)


def _orthogonal(linear: nn.Linear, gain: float) -> None:
    nn.init.orthogonal_(linear.weight, gain)
    nn.init.zeros_(linear.bias)


class ActorCritic(Model):
    """Separate policy and value MLPs; see the module docstring and `actor_critic` for arguments."""

    def __init__(self, *, in_shape: tuple[int, ...], num_classes: int, depth: int, width: int,
                 activation: str, policy: str = "categorical") -> None:
        super().__init__()
        if len(in_shape) != 1:
            raise ValueError(f"actor-critic takes flat observations, in_shape (obs_dim,), got {tuple(in_shape)}")
        if depth < 1 or width < 1:
            raise ValueError(f"actor-critic needs depth >= 1 and width >= 1, got depth={depth}, width={width}")
        if num_classes < 1:
            raise ValueError(f"actor-critic needs num_classes (actions) >= 1, got {num_classes}")
        if activation not in ACTIVATIONS:
            raise unknown_choice_error("activation", activation, ACTIVATIONS)
        if policy not in POLICIES:
            raise unknown_choice_error("policy", policy, POLICIES)
        self.policy = policy
        self.in_shape, self.obs_dim = tuple(in_shape), in_shape[0]
        self.depth, self.width, self.num_classes, self.num_features = depth, width, num_classes, width

        def trunk() -> nn.ModuleList:
            layers = [Dense(self.obs_dim if i == 0 else width, width, act=activation) for i in range(depth)]
            for layer in layers:
                _orthogonal(layer.linear, math.sqrt(2))
            return nn.ModuleList(layers)

        self.blocks = trunk()  # the actor's (blocks/fc: the face every model shows)
        self.critic = trunk()
        self.fc = nn.Linear(width, num_classes)
        self.value_head = nn.Linear(width, 1)
        _orthogonal(self.fc, 0.01)
        _orthogonal(self.value_head, 1.0)
        if policy == "gaussian":  # log sigma per action dimension, the same in every state
            self.log_std = nn.Parameter(torch.zeros(num_classes))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        h = x  # (B, obs_dim)
        for block in self.blocks:
            h = block(h)  # (B, width)
        return h

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return feats if pre_logits else self.fc(feats)  # (B, num_actions) logits

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """V(s) of observations (B, obs_dim) -> (B,)."""
        h = x
        for block in self.critic:
            h = block(h)
        return self.value_head(h).squeeze(-1)

    def policy_and_value(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, num_actions), values (B,))."""
        return self.forward(x), self.value(x)

    def head_names(self) -> tuple[str, ...]:
        """The policy's head: `fc`, and a Gaussian policy's per-action `log_std` (sized by the
        actions as `fc` is). The value head belongs to the critic and keeps its one output."""
        return ("fc", "log_std") if self.policy == "gaussian" else ("fc",)

    def reset_classifier(self, num_classes: int) -> None:
        super().reset_classifier(num_classes)
        if num_classes:
            _orthogonal(self.fc, 0.01)
        if self.policy == "gaussian":  # one log sigma per action, as built
            self.log_std = nn.Parameter(torch.zeros(num_classes, device=self.fc.weight.device if num_classes
                                                    else self.log_std.device))

    def num_params(self) -> int:
        return actor_critic_cost(self.obs_dim, self.num_classes, depth=self.depth, width=self.width,
                                 gaussian=self.policy == "gaussian")[0]

    def flops_per_example(self) -> int:
        return actor_critic_cost(self.obs_dim, self.num_classes, depth=self.depth, width=self.width)[1]


@register_model("actor-critic")
def actor_critic(*, in_shape: tuple[int, ...], num_classes: int, depth: int = 2, width: int = 64,
                 activation: str = "tanh", policy: str = "categorical") -> ActorCritic:
    """Actor-critic MLP on flat observations (obs_dim,) with ``num_classes`` discrete actions (or,
    with a Gaussian policy, an action vector of that size).

    Args:
        depth: hidden layers of each trunk (policy and value).
        width: units per hidden layer (CleanRL's ppo.py: 64).
        activation: f, one of `ACTIVATIONS` (tanh, as in the PPO paper's MuJoCo networks).
        policy: categorical (discrete actions: the head gives logits) or gaussian (continuous
            actions: the head gives the mean, ``log_std`` the log standard deviation).
    """
    return ActorCritic(in_shape=in_shape, num_classes=num_classes, depth=depth, width=width, activation=activation,
                       policy=policy)

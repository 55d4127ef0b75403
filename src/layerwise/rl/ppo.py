"""The mathematics of PPO as pure functions: advantages, the clipped objective, diagnostics.

References
  - Schulman, Moritz, Levine, Jordan, Abbeel 2016, "High-Dimensional Continuous Control Using
    Generalized Advantage Estimation", arXiv:1506.02438 (GAE, eq. 16).
  - Schulman, Wolski, Dhariwal, Radford, Klimov 2017, "Proximal Policy Optimization Algorithms",
    arXiv:1707.06347 (the clipped surrogate L^CLIP, eq. 7; the combined objective, eq. 9).
  - Huang, Dossa, Raffin, Kanervisto, Wang 2022, "The 37 Implementation Details of Proximal Policy
    Optimization", ICLR blog track (value clipping, per-minibatch advantage normalization, the
    approximate KL (r - 1) - log r of Schulman's "Approximating KL divergence" note).
"""

from __future__ import annotations

import torch

__all__ = ["explained_variance", "gae", "ppo_loss"]


def gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor, terminated: torch.Tensor,
        dones: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimates and value targets of a rollout.

    All inputs are (T, N): T steps of N environments. ``next_values[t]`` is V of the observation that
    followed step t in the same episode: ``values[t + 1]`` inside an episode, V of the rollout's last
    observation at t = T - 1, and V of the episode's final observation where step t was *truncated* (a
    time limit: the episode could have continued, so its value is bootstrapped). ``terminated[t]``
    (the episode truly ended: no future reward) zeroes the bootstrap; ``dones[t]`` (terminated or
    truncated) stops the advantage from flowing back across the episode boundary:

        delta_t = r_t + gamma * (1 - terminated_t) * next_values_t - V_t
        A_t     = delta_t + gamma * lam * (1 - done_t) * A_{t+1}          (A_T = 0)

    Returns (advantages (T, N), returns = advantages + values (T, N)), in ``values``' dtype.
    """
    not_terminal = 1.0 - terminated.to(values.dtype)
    not_done = 1.0 - dones.to(values.dtype)
    deltas = rewards + gamma * not_terminal * next_values - values
    advantages = torch.empty_like(values)
    last = torch.zeros_like(values[0])  # (N,)
    for t in range(values.shape[0] - 1, -1, -1):
        last = deltas[t] + gamma * lam * not_done[t] * last
        advantages[t] = last
    return advantages, advantages + values


def ppo_loss(new_logprob: torch.Tensor, old_logprob: torch.Tensor, advantages: torch.Tensor,
             new_value: torch.Tensor, old_value: torch.Tensor, returns: torch.Tensor, entropy: torch.Tensor, *,
             clip_coef: float, vf_coef: float, ent_coef: float, clip_vloss: bool = True,
             norm_adv: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's loss on one minibatch of M samples (every input (M,)); returns (loss, diagnostics).

        ratio  = exp(new_logprob - old_logprob)
        L_pg   = mean(max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)))        (minimized)
        L_v    = 0.5 * mean(max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2))   if clip_vloss
                 0.5 * mean((V - R)^2)                                                 otherwise
        loss   = L_pg - ent_coef * mean(entropy) + vf_coef * L_v

    With ``norm_adv`` the advantages are first standardized over the minibatch (unbiased std + 1e-8).
    Diagnostics (detached scalars): policy_loss, value_loss, entropy, approx_kl (mean of
    (ratio - 1) - log ratio, an unbiased, non-negative estimate of KL(old || new)) and clip_fraction
    (share of samples whose |ratio - 1| > eps).
    """
    log_ratio = new_logprob - old_logprob
    ratio = log_ratio.exp()
    if norm_adv and advantages.numel() > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    pg_loss = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip_coef, 1 + clip_coef)).mean()
    if clip_vloss:
        clipped = old_value + (new_value - old_value).clamp(-clip_coef, clip_coef)
        v_loss = 0.5 * torch.max((new_value - returns) ** 2, (clipped - returns) ** 2).mean()
    else:
        v_loss = 0.5 * ((new_value - returns) ** 2).mean()
    ent = entropy.mean()
    loss = pg_loss - ent_coef * ent + vf_coef * v_loss
    with torch.no_grad():
        stats = {"policy_loss": pg_loss.detach(), "value_loss": v_loss.detach(), "entropy": ent.detach(),
                 "approx_kl": ((ratio - 1) - log_ratio).mean(),
                 "clip_fraction": ((ratio - 1).abs() > clip_coef).float().mean()}
    return loss, stats


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """1 - Var(target - predicted) / Var(target): 1 is a perfect value function, 0 no better than a
    constant, negative worse; NaN when the targets do not vary."""
    var = target.var(unbiased=False)
    if var.item() == 0:
        return float("nan")
    return float(1 - (target - predicted).var(unbiased=False) / var)

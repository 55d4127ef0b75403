"""Muon: MomentUm Orthogonalized by Newton-Schulz (Jordan et al. 2024), for hidden weight matrices.

`build_optimizer(model, "muon", ...)` in `layerwise.train.optim` pairs it with AdamW or SGD for the
parameters it does not take (`optim.muon_rest`).

References
  - Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks",
    https://kellerjordan.github.io/posts/muon/ ; reference code
    https://github.com/KellerJordan/Muon (muon.py), used by modded-nanogpt and cifar10-airbench.
  - Jordan 2024, cifar10-airbench `airbench94_muon.py`: Muon on the conv filters, each rescaled to
    a fixed norm before its step, 3 Newton-Schulz iterations (`normalize=True`, `ns_steps=3`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["Muon", "zeropower_via_newtonschulz5"]

# Quintic Newton-Schulz coefficients from the reference: chosen to maximize the slope at 0 so 5
# steps suffice, at the price of singular values landing in ~[0.5, 1.5] instead of exactly 1.
_NS_COEFFS: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)


def zeropower_via_newtonschulz5(
    G: torch.Tensor, steps: int = 5, dtype: torch.dtype = torch.bfloat16
) -> torch.Tensor:
    """Approximate orthogonalization U V^T of G = U S V^T by a quintic Newton-Schulz iteration.

    Follows KellerJordan/Muon `zeropower_via_newtonschulz5`: the iteration runs in bfloat16 by
    default (stable there, and fast on tensor cores); the result is roughly U S' V^T with
    S'_ii in ~[0.5, 1.5], which the reference found does not hurt training vs. exact U V^T.
    G: (rows, cols). Returns a tensor of the same shape in `dtype`.
    """
    if G.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {tuple(G.shape)}")
    a, b, c = _NS_COEFFS
    X = G.to(dtype)
    transpose = G.size(0) > G.size(1)
    if transpose:  # iterate on the wide orientation so X @ X.T is the smaller Gram matrix
        X = X.T
    # Frobenius norm >= spectral norm, so this puts every singular value in [0, 1], inside the
    # iteration's basin; 1e-7 guards an all-zero update.
    X = X / (X.norm() + 1e-7)
    for _ in range(steps):
        A = X @ X.T  # (r, r) with r = min(rows, cols)
        B = b * A + c * A @ A
        X = a * X + B @ X
    return X.T if transpose else X


class Muon(torch.optim.Optimizer):
    """Muon: MomentUm Orthogonalized by Newton-Schulz (Jordan et al. 2024).

    For each parameter with ndim >= 2 (conv weights (out, in, k, k) are viewed as
    (out, in*k*k)):
        buf    <- lerp(buf, g, 1 - momentum)          # EMA momentum, as the reference
        u      <- lerp(g, buf, momentum) if nesterov else buf
        O      <- NS5(u) * sqrt(max(1, rows / cols))   # tall matrices get a larger step so the
                                                       # per-element update RMS matches wide ones
        p      <- p * (1 - lr * weight_decay) - lr * O  # decoupled decay (Liu et al. 2025)
    With ``normalize=True`` each weight is first rescaled to Frobenius norm sqrt(rows) (unit
    norm per output row on average), as cifar10-airbench's airbench94_muon does: for a weight
    followed by BatchNorm the scale is free, and pinning it keeps the step's relative size, and
    so the effective learning rate, what the schedule says instead of shrinking as the norm grows.
    The EMA momentum differs from SGD's `buf = mu*buf + g` only by a constant factor, which the
    scale-invariant orthogonalization removes. Only use it for hidden weights; put embeddings,
    heads, biases and norms on AdamW (see `build_optimizer(..., "muon")`).

    `ns_dtype` is the Newton-Schulz compute dtype: bfloat16 as the reference (GPU tensor cores);
    `build_optimizer` picks float32 on CPU, where bf16 matmul is usually emulated (see there).

    Unlike the reference this never writes into p.grad (the reference's in-place lerp on the
    gradient would corrupt gradients a caller logs after step()), and a parameter with no
    gradient is skipped, as in torch.optim optimizers.

    Like torch's fused Adam/AdamW/SGD it takes ``found_inf`` and ``grad_scale`` device tensors set
    as attributes before ``step()`` (``_step_supports_amp_scaling``: torch.amp.GradScaler sets them,
    and the Trainer's sync-free step sets ``found_inf``): the gradients are divided by
    ``grad_scale``, and when ``found_inf`` is nonzero neither the weights nor the momentum buffers
    change, decided on the device without a host sync. The update is then computed out of place
    with the same kernels and selected with ``torch.where``, so a step taken this way is
    bit-identical to one taken without the flag.
    """

    _step_supports_amp_scaling = True  # reads self.found_inf / self.grad_scale in step()

    def __init__(
        self,
        params: Iterable[nn.Parameter] | Iterable[dict[str, Any]],
        lr: float = 0.02,  # per step, in units of the orthogonalized update (RMS ~ 1/sqrt(cols))
        momentum: float = 0.95,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        ns_steps: int = 5,
        ns_dtype: torch.dtype = torch.bfloat16,
        normalize: bool = False,
    ) -> None:
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if ns_steps < 1:
            raise ValueError(f"ns_steps must be >= 1, got {ns_steps}")
        defaults = dict(
            lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
            ns_steps=ns_steps, normalize=normalize,
        )
        super().__init__(params, defaults)
        # An attribute, not a group hyperparameter: it is a device/speed choice, so it must not
        # travel in state_dict() (a GPU checkpoint resumed on CPU keeps the CPU's choice).
        self.ns_dtype = ns_dtype
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim < 2:
                    raise ValueError(
                        f"Muon only takes parameters with ndim >= 2, got shape {tuple(p.shape)}; "
                        f"optimize biases/norm gains with AdamW"
                    )

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        found_inf, grad_scale = getattr(self, "found_inf", None), getattr(self, "grad_scale", None)
        keep = None if found_inf is None else found_inf == 0  # 0-d bool on the device: take the step
        for group in self.param_groups:
            lr, wd, beta = group["lr"], group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad if grad_scale is None else p.grad / grad_scale.to(p.grad.device)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                buf = state["momentum_buffer"]
                # in place when the step is surely taken; else candidates, selected on the device
                new_buf = buf.lerp_(g, 1 - beta) if keep is None else buf.lerp(g, 1 - beta)
                u = g.lerp(new_buf, beta) if group["nesterov"] else new_buf
                u_2d = u.reshape(u.size(0), -1)  # (out, in*k*k) for conv weights
                O = zeropower_via_newtonschulz5(u_2d, group["ns_steps"], self.ns_dtype)
                scale = max(1.0, u_2d.size(0) / u_2d.size(1)) ** 0.5
                new_p = p if keep is None else p.clone()
                if group.get("normalize", False):  # .get: groups saved before the option existed
                    new_p.mul_(p.size(0) ** 0.5 / new_p.norm().clamp_min(1e-12))
                if wd != 0:
                    new_p.mul_(1 - lr * wd)
                new_p.add_(O.reshape(p.shape).to(p.dtype), alpha=-lr * scale)
                if keep is not None:
                    buf.copy_(torch.where(keep, new_buf, buf))
                    p.copy_(torch.where(keep, new_p, p))
        return loss

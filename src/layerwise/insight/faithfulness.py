"""Checks that attributions say something about the model: where their mass falls, whether they
change when the model's weights are destroyed, and whether deleting the pixels they rank first
destroys the prediction first.

    mass_in_region        the share of |attribution| inside a mask (the pointing-game style
                          localisation score; chance is the mask's share of the input)
    rank_correlation      Spearman's rho between two maps per example: the model-randomisation
                          sanity check of Adebayo et al. 2018 ("Sanity Checks for Saliency Maps")
    deletion_curve / auc  the target's probability as the top-ranked pixels are set to the
                          baseline, and its area (Petsiuk et al. 2018, RISE): lower is better
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def mass_in_region(attr: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """attr (B, *S) and a boolean mask broadcastable to it -> (B,) the fraction of sum |attr| that
    lies inside the mask (0 for an all-zero map)."""
    a = attr.abs().float()
    inside = (a * mask).reshape(len(a), -1).sum(1)
    return inside / a.reshape(len(a), -1).sum(1).clamp_min(1e-12)


def _ranks(v: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share the mean rank) of each row of v (B, N) -> (B, N) float64."""
    import numpy as np
    from scipy.stats import rankdata

    return torch.from_numpy(np.asarray(rankdata(v.double().cpu().numpy(), axis=1)))


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation between a and b (B, *S) per example -> (B,) in [-1, 1]: the
    Pearson correlation of their ranks (ties averaged)."""
    ra, rb = _ranks(a.reshape(len(a), -1)), _ranks(b.reshape(len(b), -1))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return ((ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-12)).float()


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with every parameter re-initialised by its module's own
    ``reset_parameters`` (under ``seed``) and normalization statistics reset: the "full model
    randomisation" of Adebayo et al. 2018. Biases no module resets are set to 0 (their usual
    init); raises ValueError when a weight matrix keeps its trained value."""
    clone = copy.deepcopy(model)
    torch.manual_seed(seed)
    for m in clone.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
        if hasattr(m, "reset_running_stats"):
            m.reset_running_stats()
    kept = []
    for (n, p), q in zip(clone.named_parameters(), model.parameters(), strict=True):
        if p.numel() > 1 and torch.equal(p, q):
            if p.dim() > 1:
                kept.append(n)
            with torch.no_grad():
                p.zero_()  # a bias its module does not reset (e.g. convnet's bias-only BatchNorm): its init, 0
    if kept:
        raise ValueError(f"randomized_copy: {', '.join(kept[:3])} kept their trained values (no reset_parameters)")
    return clone.eval()


@torch.no_grad()
def deletion_curve(f: nn.Module, x: torch.Tensor, order: torch.Tensor, target: torch.Tensor,
                   baseline: float | torch.Tensor = 0.0, steps: int = 20) -> torch.Tensor:
    """The softmax probability of ``target`` (B,) as pixels of x (B, C, H, W) are set to the
    baseline in ``order`` (B, H*W) (pixel indices, first deleted first; all channels of a pixel
    together), at ``steps`` + 1 equally spaced fractions 0, 1/steps, ..., 1 -> (B, steps + 1)."""
    B, _, H, W = x.shape
    base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
    out = []
    for s in range(steps + 1):
        k = round(s * H * W / steps)
        keep = torch.ones(B, H * W, device=x.device)
        keep.scatter_(1, order[:, :k], 0.0)
        keep = keep.view(B, 1, H, W)
        xs = x * keep + base * (1 - keep)
        out.append(f(xs).softmax(-1).gather(1, target[:, None])[:, 0])
    return torch.stack(out, 1)


def deletion_auc(curve: torch.Tensor) -> torch.Tensor:
    """Area under deletion curves (B, K) sampled at equal steps over [0, 1] (trapezoid) -> (B,)."""
    return torch.trapezoid(curve, dx=1.0 / (curve.shape[1] - 1), dim=1)


def order_by(attr: torch.Tensor) -> torch.Tensor:
    """Pixel order (B, H*W) from attributions (B, C, H, W): largest channel-summed value first."""
    return attr.sum(1).reshape(len(attr), -1).argsort(dim=1, descending=True)


def region_task(n: int, g: torch.Generator, noise: float = 0.2, side: int = 16, region: tuple[int, int, int] = (2, 8, 6)
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A synthetic localisation task: images (n, 1, side, side) of faint uniform noise in
    [0, noise]; the label (n,) is the orientation of a bright bar (0.7 to 1) drawn inside the
    square ``region`` = (row, column, size): 0 horizontal, 1 vertical. Nothing outside the region
    decides the label, so a faithful attribution puts its mass inside ``mask`` (1, 1, side, side)."""
    r0, c0, s = region
    x = torch.rand(n, 1, side, side, generator=g) * noise
    y = torch.randint(0, 2, (n,), generator=g)
    v = 0.7 + 0.3 * torch.rand(n, generator=g)
    mid = slice(s // 2 - 1, s // 2 + 1)  # the bar: two pixels wide, across the region
    for i in range(n):
        if y[i] == 0:
            x[i, 0, r0 + mid.start:r0 + mid.stop, c0:c0 + s] = v[i]
        else:
            x[i, 0, r0:r0 + s, c0 + mid.start:c0 + mid.stop] = v[i]
    mask = torch.zeros(1, 1, side, side, dtype=torch.bool)
    mask[..., r0:r0 + s, c0:c0 + s] = True
    return x, y, mask


def train_region_model(seed: int = 0, steps: int = 150, n: int = 512) -> nn.Module:
    """A small convnet (widths 8, 16) trained on :func:`region_task` with AdamW (lr 3e-3, weight
    decay 0.05, batches of 64): about 3 s of one CPU core, test accuracy 1.0. In eval mode."""
    from layerwise.models import create_model

    g = torch.Generator().manual_seed(seed)
    x, y, _ = region_task(n, g)
    torch.manual_seed(seed)
    m = create_model("convnet", in_shape=(1, 16, 16), num_classes=2, widths=(8, 16), whiten=False, logit_scale=1.0)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=0.05)
    for _ in range(steps):
        i = torch.randint(0, n, (64,), generator=g)
        loss = nn.functional.cross_entropy(m(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()

"""Adversarial examples: FGSM and PGD attacks in pixel space, accuracy under attack, adversarial training.

The attacks (Goodfellow et al. 2015, "Explaining and Harnessing Adversarial Examples": FGSM; Madry
et al. 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks": PGD) move each input
up the gradient of the loss within a ball of radius ``eps`` around it, in the L-inf or L2 norm.
They work in *pixel space* (:mod:`layerwise.insight.runs`): images in [0, 1], so that eps means
what papers mean by it (MNIST: 0.3, CIFAR-10: 8/255), and the model's normalization sits inside
the attacked function. Every adversarial image stays in [0, 1] (the valid pixel range). Audio
features and table columns have no such natural range: the attack leaves them unbounded, so eps
there is in the data's own units (raw value / scale) and a perturbed feature may leave the range
seen in training; token ids cannot be perturbed and are refused.

PGD's step size ``alpha`` defaults to ``2.5 * eps / steps`` (the rule of Madry et al.'s robustness
library: 2.5 times the step that would just reach the ball's surface, so that a start on one side
can cross it); FGSM takes one step of ``eps``; FGSM with a random start ("fast adversarial training",
Wong et al. 2020, "Fast is better than free") one step of ``1.25 * eps`` from a uniform start.
Restarts (PGD's random starts) keep, per example, the first start that fools the model.

:class:`AdversarialTraining` is the Trainer's side (``train.adversarial=pgd|fgsm-rs``): it replaces
each training batch (already augmented and normalized) by its adversarial version, drawing its
random starts from a generator seeded by (seed, step, micro-batch), so that a resumed run repeats
them exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from layerwise.config import ConfigError

NORMS = ("linf", "l2")
METHODS = ("fgsm", "pgd")
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _ce_sum(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out.float(), y, reduction="sum")


def _per_example_norm(v: torch.Tensor) -> torch.Tensor:
    """L2 norm of each example of v (B, ...) -> (B, 1, ...) for broadcasting; never 0."""
    return v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (v.dim() - 1)))


def _project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """delta (B, ...) projected onto the eps ball of ``norm`` (L-inf: clamp; L2: rescale)."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    return delta * (eps / _per_example_norm(delta)).clamp(max=1.0)


def _random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    """A uniform draw from the eps ball around 0, shaped like x: L-inf uniform in [-eps, eps]; L2 a
    Gaussian direction scaled to radius eps * u^(1/d) (uniform in the ball's volume)."""
    if norm == "linf":
        return (torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * eps
    d = x[0].numel()
    g = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    r = torch.rand((len(x),), generator=generator, device=x.device, dtype=x.dtype) ** (1.0 / d) * eps
    return g / _per_example_norm(g) * r.view(-1, *([1] * (x.dim() - 1)))


def _clip(x: torch.Tensor, bounds: tuple[float, float] | None) -> torch.Tensor:
    return x if bounds is None else x.clamp(*bounds)


def check_attack(eps: float, norm: str, steps: int, restarts: int = 1) -> None:
    """ValueError naming the argument when an attack's settings cannot run."""
    if norm not in NORMS:
        raise ValueError(f"norm must be linf or l2, got '{norm}'.")
    if not (eps >= 0 and eps < float("inf")):
        raise ValueError(f"eps must be a finite number >= 0, got {eps}.")
    if steps < 1 or restarts < 1:
        raise ValueError(f"steps and restarts must be >= 1, got steps={steps}, restarts={restarts}.")


def pgd(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, eps: float,
        norm: str = "linf", steps: int = 40, alpha: float | None = None, random_start: bool = True,
        restarts: int = 1, bounds: tuple[float, float] | None = (0.0, 1.0), loss_fn: Loss = _ce_sum,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient descent on the loss (ascent, to raise it), Madry et al. 2018.

    model: pixel-space inputs -> outputs (e.g. :meth:`LoadedRun.pixel_model`); x: (B, ...) float
    inputs in pixel space; y: (B,) labels (whatever ``loss_fn`` takes); eps: radius of the ball in
    ``norm`` (``linf`` or ``l2``), in pixel units; alpha: step size (default ``2.5 * eps / steps``);
    random_start: begin at a uniform point of the ball (else at x); restarts: independent starts,
    each run on the examples that no earlier start made the model get wrong (the result is the
    first start that fools the model, else the last); bounds: the valid
    input range (images (0, 1)), or None for unbounded inputs; loss_fn(out, y) -> () summed loss;
    generator: the random starts' source (None: torch's global one).

    Returns x_adv (B, ...) detached, with ``||x_adv - x|| <= eps`` in ``norm`` and within bounds.
    With steps=1, alpha=eps, random_start=False this is FGSM (Goodfellow et al. 2015) for L-inf,
    the fast gradient method for L2. Raises ValueError for a bad norm, eps, steps or restarts.
    """
    check_attack(eps, norm, steps, restarts)
    x = x.detach()
    if eps == 0:
        return x.clone()
    alpha = 2.5 * eps / steps if alpha is None else alpha
    if restarts == 1:
        return _pgd_once(model, x, y, eps, norm, steps, alpha, random_start, bounds, loss_fn, generator)
    best = x.clone()
    todo = torch.arange(len(x), device=x.device)  # the examples no start has fooled yet
    for _ in range(restarts):
        adv = _pgd_once(model, x[todo], y[todo], eps, norm, steps, alpha, random_start, bounds, loss_fn, generator)
        best[todo] = adv
        with torch.no_grad():
            todo = todo[model(adv).argmax(-1) == y[todo]]
        if len(todo) == 0:
            break
    return best


def _pgd_once(model, x, y, eps, norm, steps, alpha, random_start, bounds, loss_fn, generator) -> torch.Tensor:
    """One start of :func:`pgd` (same arguments)."""
    delta = _random_start(x, eps, norm, generator) if random_start else torch.zeros_like(x)
    delta = _clip(x + delta, bounds) - x
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = loss_fn(model(x + delta), y)
        (g,) = torch.autograd.grad(loss, delta)
        step = g.sign() if norm == "linf" else g / _per_example_norm(g)
        delta = _project(delta.detach() + alpha * step, eps, norm)
        delta = _clip(x + delta, bounds) - x  # inside the valid range, still inside the ball
    return (x + delta).detach()


def fgsm(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, eps: float,
         norm: str = "linf", bounds: tuple[float, float] | None = (0.0, 1.0), loss_fn: Loss = _ce_sum) -> torch.Tensor:
    """The fast gradient sign method (Goodfellow et al. 2015): one step of size eps along the sign
    of the loss's gradient (L-inf), or along the gradient scaled to length eps (L2, the "fast
    gradient method"), then clipped to ``bounds``. Shapes, units and errors as :func:`pgd`."""
    return pgd(model, x, y, eps, norm=norm, steps=1, alpha=eps, random_start=False, restarts=1, bounds=bounds,
               loss_fn=loss_fn)


def accuracy_under_attack(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps_list: list[float],
                          method: str = "pgd", norm: str = "linf", steps: int = 40, restarts: int = 1,
                          step_factor: float = 2.5, bounds: tuple[float, float] | None = (0.0, 1.0),
                          batch_size: int = 500, seed: int = 0) -> list[dict[str, Any]]:
    """Accuracy of a classifier on adversarial versions of (x, y), one attack per eps.

    model: pixel-space classifier (B, ...) -> logits (B, K), in eval mode; x: (N, ...) pixel-space
    inputs on the model's device; y: (N,) int64 labels; eps_list: radii in pixel units; method:
    ``fgsm`` or ``pgd`` (``steps`` steps of ``step_factor * eps / steps``, a random start,
    ``restarts`` starts); seed: the random starts'. Returns one row per eps: {"eps", "accuracy"
    (fraction of the N examples still classified right), "correct", "n", "max_perturbation"
    (largest ||x_adv - x|| in the norm, a check that the ball was kept)}.
    Raises ValueError for an unknown method or norm, a negative eps, steps or restarts < 1."""
    if method not in METHODS:
        raise ValueError(f"method must be fgsm or pgd, got '{method}'.")
    rows = []
    g = torch.Generator(device=x.device).manual_seed(seed)
    for eps in eps_list:
        check_attack(eps, norm, steps, restarts)
        correct, worst = 0, 0.0
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            if method == "fgsm":
                adv = fgsm(model, xb, yb, eps, norm=norm, bounds=bounds)
            else:
                adv = pgd(model, xb, yb, eps, norm=norm, steps=steps, alpha=step_factor * eps / steps,
                          restarts=restarts, bounds=bounds, generator=g)
            with torch.no_grad():
                correct += int((model(adv).argmax(-1) == yb).sum())
            d = (adv - xb).flatten(1)
            worst = max(worst, float(d.abs().amax(1).max() if norm == "linf" else d.norm(dim=1).max()))
        rows.append({"eps": float(eps), "accuracy": correct / len(x), "correct": correct, "n": len(x),
                     "max_perturbation": worst})
    return rows


class AdversarialTraining:
    """The training batch replaced by its adversarial version (``train.adversarial``): Madry et
    al.'s PGD (``pgd``: a uniform random start, ``adversarial_steps`` steps of
    ``adversarial_alpha``, default 2.5 eps / steps) or Wong et al.'s fast FGSM (``fgsm-rs``: a
    uniform start, one step of alpha, default 1.25 eps), L-inf, in pixel space.

    The Trainer's batches are normalized ((raw / scale - mean) / std), so :meth:`perturb` maps
    them back to pixel space with the run's DatasetInfo, attacks there (images clipped to [0, 1];
    other inputs unbounded) and normalizes the result again. ``rank``: the data-parallel rank
    (its random starts differ). Raises ConfigError for data without a pixel space (token ids,
    indices, molecules)."""

    def __init__(self, train_cfg: Any, info: Any, loss_fn: Loss, device: torch.device, rank: int = 0):
        x = info.extra
        if info.task == "lm" or "text" in x or "tokenizer" in x or "molecules" in x or x.get("inputs") == "indices":
            raise ConfigError(f"train.adversarial={train_cfg.adversarial} perturbs real-valued inputs (images, audio "
                              f"features, table columns), but dataset '{info.name}' gives the model token ids or "
                              f"indices, which have no small perturbations. Set --train.adversarial=none.")
        t = train_cfg
        self.method, self.eps, self.seed, self.rank = t.adversarial, float(t.adversarial_eps), int(t.seed), rank
        self.steps = 1 if t.adversarial == "fgsm-rs" else int(t.adversarial_steps)
        default = 1.25 * self.eps if t.adversarial == "fgsm-rs" else 2.5 * self.eps / self.steps
        self.alpha = float(t.adversarial_alpha) or default
        K = info.in_shape[0]
        shape = (1, K) + (1,) * (len(info.in_shape) - 1)
        self.mean = torch.tensor(info.mean, dtype=torch.float32, device=device).view(shape)
        self.std = torch.tensor(info.std, dtype=torch.float32, device=device).view(shape)
        self.bounds = (0.0, 1.0) if len(info.in_shape) == 3 and "audio" not in x else None
        self.loss_fn = loss_fn

    def generator(self, step: int, micro: int, device: torch.device) -> torch.Generator:
        """The random starts' generator of one micro-batch: a function of (seed, step, micro, the
        data-parallel rank) alone, so that a resumed run draws the same starts (no state to save)
        and the ranks of a data-parallel run draw different ones."""
        return torch.Generator(device=device).manual_seed((self.seed * 1_000_003 + step) * 64 + micro
                                                          + self.rank * 2 ** 48)

    def perturb(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, step: int, micro: int = 0) -> torch.Tensor:
        """x (B, ...) normalized inputs, y its targets -> the adversarial x, normalized, detached.
        ``step`` and ``micro`` (the optimizer step and micro-batch index) seed the random start."""
        mean, std = self.mean.to(x.dtype), self.std.to(x.dtype)
        pixels = x.detach() * std + mean

        def f(p: torch.Tensor) -> torch.Tensor:
            return model((p - mean) / std)

        adv = pgd(f, pixels, y, self.eps, norm="linf", steps=self.steps, alpha=self.alpha, random_start=True,
                  bounds=self.bounds, loss_fn=self.loss_fn, generator=self.generator(step, micro, x.device))
        return ((adv - mean) / std).detach()

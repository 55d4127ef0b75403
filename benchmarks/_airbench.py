"""airbench94_muon's reference training loop, re-implemented as a baseline for benchmarks/gpu.py.

airbench94_muon (Keller Jordan 2024, github.com/KellerJordan/cifar10-airbench, airbench94_muon.py)
reaches 94.01% mean test accuracy on the original CIFAR-10 in 2.59 s on an A100 (its header). The
GPU machine has no internet, so its loop is written out here from a reading of that file; nothing
of layerwise is used except the decoded images (the caller passes them, so both sides train on the
same pixels). What it does, step by step:

- data: uint8 (N, 3, 32, 32) images on the device, scaled to [0, 1] and normalized with CIFAR-10's
  channel mean/std, in fp16 (the reference's dtype; fp32 on the CPU). Once: every image flipped
  left-right with probability 1/2 and reflect-padded by 2 pixels. Each epoch: a random translation
  of up to 2 pixels per image (a 32x32 crop of the padded image), all images flipped together on odd
  epochs (derandomized flips), a fresh random order, batches of 2000, the last partial batch dropped;
- network: a fixed 2x2 patch-whitening conv (24 filters: the eigenvectors of the patch covariance
  of 5000 training images scaled by 1/sqrt(eigenvalue + 5e-4), and their negatives) with a trained
  bias, GELU, three groups conv3x3 -> maxpool 2 -> BatchNorm -> GELU -> conv3x3 -> BatchNorm ->
  GELU of widths 64/256/256, a 3x3 max pool, a bias-free linear head scaled to unit std whose
  logits are divided by the width (256). Convs have no bias and start as identity (Dirac) on their
  first `in` output channels; BatchNorm has a fixed scale of 1, momentum 0.6 (airbench's
  convention: PyTorch momentum 0.4), eps 1e-12, and stays in fp32;
- optimizers: Muon on the six conv filter banks (lr 0.24 per step, momentum 0.6 Nesterov; each
  bank rescaled to Frobenius norm sqrt(out channels) before its step; the update orthogonalized by
  3 quintic Newton-Schulz iterations in bf16); Nesterov SGD (momentum 0.85, fused) on the whitening
  bias and the BatchNorm biases (lr 0.053) and the head (lr 0.67), with coupled weight decay
  2e-6 * batch / lr, i.e. 0.004 per step for every group;
- loss: cross-entropy with label smoothing 0.2, summed over the batch;
- schedule: 8 epochs (200 steps); every rate decays linearly from its peak to 0 over the run, the
  whitening bias's over its 3 training epochs, after which it gets no gradient;
- evaluation: test-time augmentation level 2, logits averaged over six views: 0.5 mirror(x) +
  0.25 mirror(x shifted one pixel up-left) + 0.25 mirror(x shifted down-right), reflect padding,
  where mirror(v) = (net(v) + net(flip(v))) / 2;
- compilation: the reference compiles the network with mode "max-autotune" (and the Newton-Schulz
  function) and runs a warm-up run on random labels first; here the mode is the caller's choice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
NS_COEFFS = (3.4445, -4.7750, 2.0315)  # quintic Newton-Schulz coefficients of the Muon reference


@dataclass
class Hyper:
    """airbench94_muon's settings (defaults); benchmarks shrink them for a smoke run."""

    batch_size: int = 2000
    epochs: int = 8
    whiten_bias_epochs: int = 3
    widths: tuple[int, int, int] = (64, 256, 256)
    bias_lr: float = 0.053  # per step, on the summed loss: whitening and BatchNorm biases
    head_lr: float = 0.67  # per step, on the summed loss
    weight_decay: float = 2e-6  # per example of the batch, divided by each group's lr (coupled)
    sgd_momentum: float = 0.85
    muon_lr: float = 0.24  # per step, in units of the orthogonalized update
    muon_momentum: float = 0.6
    ns_steps: int = 3
    label_smoothing: float = 0.2
    translate: int = 2  # pixels
    whiten_images: int = 5000
    whiten_eps: float = 5e-4
    bn_momentum: float = 0.6  # airbench's convention: running = 0.6 running + 0.4 batch
    eval_batch_size: int = 2000


# ---------------------------------------------------------------------------------------- network


def _batch_norm(c: int, hp: Hyper) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c, eps=1e-12, momentum=1 - hp.bn_momentum)
    bn.weight.requires_grad_(False)  # scale fixed at 1: only the shift learns
    return bn


class _Group(nn.Module):
    def __init__(self, c_in: int, c_out: int, hp: Hyper):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.norm1 = _batch_norm(c_out, hp)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = _batch_norm(c_out, hp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, c_in, H, W) -> (B, c_out, H/2, W/2)
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


class AirbenchNet(nn.Module):
    """The reference's CifarNet: whitening conv, three conv groups, max pool, linear head."""

    def __init__(self, hp: Hyper, dtype: torch.dtype):
        super().__init__()
        self.whiten = nn.Conv2d(3, 24, 2, bias=True)  # 2 * 3 * 2^2 filters, set by init_whiten
        self.whiten.weight.requires_grad_(False)
        w = hp.widths
        self.groups = nn.ModuleList([_Group(24, w[0], hp), _Group(w[0], w[1], hp), _Group(w[1], w[2], hp)])
        self.head = nn.Linear(w[2], 10, bias=False)
        self.to(dtype)
        for m in self.modules():  # BatchNorm computes and keeps its statistics in fp32
            if isinstance(m, nn.BatchNorm2d):
                m.float()

    @torch.no_grad()
    def reset(self) -> None:
        """Fresh weights for a new run (the compiled module is kept between runs)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
                m.reset_parameters()
            if isinstance(m, nn.Conv2d) and m is not self.whiten:
                nn.init.dirac_(m.weight[:m.weight.size(1)])  # identity on the first `in` outputs
        self.head.weight.div_(self.head.weight.std())

    @torch.no_grad()
    def init_whiten(self, x: torch.Tensor, eps: float) -> None:
        """Whitening filters from normalized images x (N, 3, H, W): eigenvectors of the (uncentered)
        second moment of all 2x2 patches over sqrt(eigenvalue + eps), then their negatives."""
        k = self.whiten.kernel_size[0]
        patches = x.float().unfold(2, k, 1).unfold(3, k, 1)  # (N, 3, H-1, W-1, k, k)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3 * k * k)  # (P, 12) in conv order
        moment = patches.T @ patches / len(patches)
        values, vectors = torch.linalg.eigh(moment)
        filters = (vectors.T / torch.sqrt(values + eps)[:, None]).reshape(-1, 3, k, k)
        self.whiten.weight.copy_(torch.cat((filters, -filters)).to(self.whiten.weight.dtype))

    def forward(self, x: torch.Tensor, whiten_bias_grad: bool = True) -> torch.Tensor:
        bias = self.whiten.bias if whiten_bias_grad else self.whiten.bias.detach()
        x = F.gelu(F.conv2d(x, self.whiten.weight, bias))  # (B, 24, 31, 31)
        for g in self.groups:
            x = g(x)  # (B, w, 15, 15) -> (B, w, 7, 7) -> (B, w, 3, 3)
        x = F.max_pool2d(x, 3).flatten(1)  # (B, w)
        return self.head(x) / x.size(-1)  # (B, 10)


# -------------------------------------------------------------------------------------- optimizer


def orthogonalize(G: torch.Tensor, steps: int) -> torch.Tensor:
    """About U V^T for G = U S V^T (2-D), by quintic Newton-Schulz iterations in bf16."""
    a, b, c = NS_COEFFS
    X = G.bfloat16()
    X = X / (X.norm() + 1e-7)  # spectral norm <= Frobenius norm = 1
    tall = X.size(0) > X.size(1)
    if tall:
        X = X.T
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if tall else X


class Muon(torch.optim.Optimizer):
    """The reference's Muon for conv filter banks: SGD-style momentum buffer (buf = m buf + g),
    Nesterov look-ahead, the weight rescaled to norm sqrt(out) and an orthogonalized step."""

    def __init__(self, params, lr: float, momentum: float, ns_steps: int, orth=orthogonalize):
        super().__init__(params, {"lr": lr, "momentum": momentum})
        self.ns_steps, self.orth = ns_steps, orth

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p.grad))
                buf.mul_(group["momentum"]).add_(p.grad)
                g = p.grad.add(buf, alpha=group["momentum"])
                p.mul_(len(p) ** 0.5 / p.norm())
                p.add_(self.orth(g.reshape(len(g), -1), self.ns_steps).view(g.shape), alpha=-group["lr"])


# ------------------------------------------------------------------------------------------- data


def _translate(padded: torch.Tensor, size: int, r: int) -> torch.Tensor:
    """A random size x size crop of each padded image (shift in [-r, r] on both axes)."""
    n = len(padded)
    dy = torch.randint(0, 2 * r + 1, (n,), device=padded.device)
    dx = torch.randint(0, 2 * r + 1, (n,), device=padded.device)
    rows = torch.empty((n, 3, size, padded.size(-1)), device=padded.device, dtype=padded.dtype)
    for s in range(2 * r + 1):  # rows first, then columns: 2 (2r + 1) masked copies
        m = dy == s
        rows[m] = padded[m, :, s:s + size, :]
    out = torch.empty((n, 3, size, size), device=padded.device, dtype=padded.dtype)
    for s in range(2 * r + 1):
        m = dx == s
        out[m] = rows[m, :, :, s:s + size]
    return out


class TrainBatches:
    """The reference's training loader: preprocessing once, then per-epoch crops, flips, order."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, hp: Hyper, dtype: torch.dtype):
        self.raw, self.labels, self.hp, self.dtype = images, labels, hp, dtype
        self.epoch, self.padded = 0, None

    def __len__(self) -> int:
        return len(self.raw) // self.hp.batch_size

    def normalized(self) -> torch.Tensor:
        return normalize(self.raw, self.dtype)

    def __iter__(self):
        r = self.hp.translate
        if self.padded is None:  # the first epoch prepares the flipped, padded copy (timed, as the reference)
            x = self.normalized()
            flip = torch.rand(len(x), device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            self.padded = F.pad(x, (r,) * 4, mode="reflect") if r else x
        x = _translate(self.padded, self.raw.size(-1), r) if r else self.padded
        if self.epoch % 2 == 1:
            x = x.flip(-1)
        x = x.contiguous(memory_format=torch.channels_last)
        self.epoch += 1
        order = torch.randperm(len(x), device=x.device)
        B = self.hp.batch_size
        for i in range(len(self)):
            idx = order[i * B:(i + 1) * B]
            yield x[idx], self.labels[idx]


def normalize(images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> normalized ``dtype`` images."""
    mean = torch.tensor(CIFAR_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD, device=images.device).view(1, 3, 1, 1)
    return ((images.float() / 255 - mean) / std).to(dtype)


# ----------------------------------------------------------------------------------------- a run


def tta_logits(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """TTA level 2: six views (flip x {none, shift up-left, shift down-right}) -> (B, 10)."""
    def mirror(v: torch.Tensor) -> torch.Tensor:
        return 0.5 * net(v) + 0.5 * net(v.flip(-1))
    H, W = x.shape[-2:]
    p = F.pad(x, (1,) * 4, mode="reflect")
    shifted = 0.5 * mirror(p[..., :H, :W]) + 0.5 * mirror(p[..., 2:, 2:])
    return 0.5 * mirror(x) + 0.5 * shifted


@torch.no_grad()
def evaluate(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype,
             batch: int) -> float:
    """TTA accuracy on uint8 test images."""
    net.eval()
    x = normalize(images, dtype).contiguous(memory_format=torch.channels_last)
    hits = sum(int((tta_logits(net, xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(batch), labels.split(batch)))
    net.train()
    return hits / len(labels)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_run(net: AirbenchNet, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
              hp: Hyper, dtype: torch.dtype, *, seed: int, orth=orthogonalize, energy=None,
              random_labels: bool = False) -> dict:
    """One airbench94_muon run on uint8 device images; returns accuracy and timings (seconds, each
    region between device synchronizations): whiten_seconds (whitening init), train_seconds (the
    training loop, the first epoch's preprocessing included, as the reference times it),
    eval_seconds (TTA evaluation), and train_joules when ``energy`` (an EnergyMeter) reads.
    ``random_labels`` is the reference's warm-up run (it only has to compile and tune)."""
    torch.manual_seed(seed)
    device = train[0].device
    labels = torch.randint(0, 10, train[1].shape, device=device) if random_labels else train[1]
    batches = TrainBatches(train[0], labels, hp, dtype)
    total_steps = hp.epochs * len(batches)
    whiten_steps = hp.whiten_bias_epochs * len(batches)
    net.reset()
    base = net._orig_mod if hasattr(net, "_orig_mod") else net  # a compiled module wraps the original
    wd = hp.weight_decay * hp.batch_size
    biases = [m.bias for m in base.modules() if isinstance(m, nn.BatchNorm2d)]
    groups = [([base.whiten.bias], hp.bias_lr), (biases, hp.bias_lr), ([base.head.weight], hp.head_lr)]
    sgd = torch.optim.SGD([{"params": ps, "lr": lr, "weight_decay": wd / lr} for ps, lr in groups],
                          momentum=hp.sgd_momentum, nesterov=True, fused=device.type == "cuda")
    filters = [p for p in base.parameters() if p.ndim == 4 and p.requires_grad]
    muon = Muon(filters, lr=hp.muon_lr, momentum=hp.muon_momentum, ns_steps=hp.ns_steps, orth=orth)
    peaks = [(g, g["lr"]) for g in sgd.param_groups + muon.param_groups]

    _sync(device)
    t0 = time.perf_counter()
    # the reference takes the first 5000 images of torchvision's (shuffled) order; the JPEG copy is
    # sorted by class, so the same share is taken evenly spaced, every class in it
    sample = torch.linspace(0, len(labels) - 1, min(hp.whiten_images, len(labels)), device=device).long()
    base.init_whiten(normalize(train[0][sample], dtype), hp.whiten_eps)
    _sync(device)
    t1 = time.perf_counter()
    e0 = energy.read() if energy else None
    step = 0
    while step < total_steps:
        for x, y in batches:
            out = net(x, step < whiten_steps)
            F.cross_entropy(out, y, label_smoothing=hp.label_smoothing, reduction="sum").backward()
            for g, peak in peaks:
                ends = whiten_steps if g is sgd.param_groups[0] else total_steps
                g["lr"] = peak * max(0.0, 1 - step / ends)
            sgd.step()
            muon.step()
            net.zero_grad(set_to_none=True)
            step += 1
            if step >= total_steps:
                break
    _sync(device)
    t2 = time.perf_counter()
    e1 = energy.read() if energy else None
    acc = evaluate(net, *test, dtype, hp.eval_batch_size)
    _sync(device)
    t3 = time.perf_counter()
    return {"tta_accuracy": acc, "train_seconds": t2 - t1, "whiten_seconds": t1 - t0, "eval_seconds": t3 - t2,
            "steps": step, "train_joules": None if e0 is None or e1 is None else e1 - e0}

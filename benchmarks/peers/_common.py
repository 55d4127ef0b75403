"""What every contestant of benchmarks/peers.py and benchmarks/recipes.py shares, on the child side.

Plain PyTorch and NumPy only (every peer's environment has both, none has layerwise): the MNIST
arrays from the data root, the two models of the side-by-side cases, the per-epoch clock with the
evaluation outside it, and the in-memory batches the DataLoader-based peers train on.

    settings = read_settings()               # the JSON the harness passes as argv[1]
    data = load_mnist(settings["data_root"])
    model = build_model("mlp", seed=0)       # the same initial weights in every contestant
    clock = EpochClock(predict_torch(model), data, target=0.97)
    clock.start(); ...train one epoch...; clock.epoch_end(); ...
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared _child helpers
from _child import Phases, emit

__all__ = ["CNN", "MLP", "EpochClock", "Phases", "build_model", "emit", "finish", "in_memory_batches",
           "init_checksum", "load_mnist", "predict_torch", "read_settings"]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # of the training pixels / 255 (the data README; layerwise's too)


def read_settings() -> dict:
    """The contestant's settings: the JSON object the harness passes as the first argument
    (case, data_root, epochs, batch_size, lr, momentum, seed, threads, target, ...)."""
    s = json.loads(sys.argv[1])
    torch.set_num_threads(int(s["threads"]))
    return s


def load_mnist(root: str | Path, normalize: bool = True) -> dict[str, torch.Tensor]:
    """MNIST from ``<root>/mnist/mnist_{train,test}.npz`` (uint8 x (N, 28, 28), y (N,)) as
    tensors in memory: x float32 (N, 1, 28, 28), standardized with the training mean and std
    when ``normalize`` (else scaled to [0, 1]); y int64 (N,). Raises FileNotFoundError naming
    the missing file and the fix."""
    out = {}
    for split in ("train", "test"):
        path = Path(root) / "mnist" / f"mnist_{split}.npz"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: pass --data-root (or set LAYERWISE_DATA) to a folder "
                                    f"holding mnist/mnist_train.npz and mnist/mnist_test.npz")
        with np.load(path) as z:
            x = torch.from_numpy(z["x"]).float().div_(255.0).unsqueeze(1)  # (N, 1, 28, 28) in [0, 1]
            if normalize:
                x = (x - MNIST_MEAN) / MNIST_STD
            out[f"x_{split}"], out[f"y_{split}"] = x, torch.from_numpy(z["y"].astype(np.int64))
    return out


class MLP(nn.Module):
    """784-512-512-10, ReLU: (B, 1, 28, 28) -> (B, 10) logits. Built after ``torch.manual_seed``
    it has the same initial weights as layerwise's ``mlp`` (depth 2, width 512): three
    nn.Linear layers created in the same order with PyTorch's default init."""

    def __init__(self, width: int = 512, num_classes: int = 10) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(784, width), nn.Linear(width, width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc1(x.flatten(1)))  # (B, 512)
        return self.fc(F.relu(self.fc2(h)))  # (B, 10)


class CNN(nn.Module):
    """The small MNIST CNN: conv3x3 16 - ReLU - maxpool 2 - conv3x3 32 - ReLU - maxpool 2 - fc 128
    - ReLU - fc 10 (LeNet's shape with 'same' padding): (B, 1, 28, 28) -> (B, 10) logits.

    The usual conv32-conv64 version costs ~3x more per step, which on 2 CPU cores makes five
    rounds of six contestants take an hour; this one keeps the convolutions the bulk of the step.
    ``forward_features`` / ``forward_head`` / ``num_features`` / ``fc`` are layerwise's model face
    (models/base.py), so the layerwise contestant can register the same class."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 7 * 7, 128)
        self.num_features = 128
        self.fc = nn.Linear(128, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (B, 16, 14, 14)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)  # (B, 32, 7, 7)
        return F.relu(self.fc1(h.flatten(1)))  # (B, 128)

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return feats if pre_logits else self.fc(feats)  # (B, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_example(self) -> int:
        """Forward FLOPs, 2 per multiply-add of the convolutions and linear layers."""
        conv = 28 * 28 * 16 * 9 * 1 + 14 * 14 * 32 * 9 * 16
        return 2 * (conv + 32 * 7 * 7 * 128 + 128 * 10)


MODELS: dict[str, type[nn.Module]] = {"mlp": MLP, "cnn": CNN}


def build_model(case: str, seed: int) -> nn.Module:
    """The model of ``case`` ("mlp" or "cnn") with PyTorch's default init after manual_seed(seed)."""
    torch.manual_seed(seed)
    return MODELS[case]()


def init_checksum(tensors: list[torch.Tensor]) -> float:
    """sum |w| over the initial weights (float64), rounded: equal in every contestant that
    starts from the same weights, whatever their layout (Keras stores kernels transposed)."""
    return round(float(sum(t.detach().double().abs().sum() for t in tensors)), 6)


def predict_torch(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """A logits function of a torch module in eval mode (restoring its mode afterwards)."""
    def predict(x: torch.Tensor) -> torch.Tensor:
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                return model(x)
        finally:
            model.train(was)
    return predict


def accuracy(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
             batch: int = 1000) -> float:
    """Top-1 accuracy of ``predict`` (x (B, 1, 28, 28) -> logits (B, 10)) over (x, y)."""
    correct = 0
    for i in range(0, len(x), batch):
        correct += int((predict(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
    return correct / len(x)


class EpochClock:
    """The one timing rule of every contestant: an epoch's wall and CPU seconds run from the
    previous epoch's end (after its evaluation), or :meth:`start`, to the call of
    :meth:`epoch_end` from the framework's own per-epoch hook; the test accuracy is measured
    there, outside the clock, by the same code for all. Between-epoch work a framework does
    (its own validation, checkpoints, logging) thus lands in the next epoch, as it should."""

    def __init__(self, predict: Callable[[torch.Tensor], torch.Tensor], data: dict[str, torch.Tensor],
                 target: float) -> None:
        self.predict, self.data, self.target = predict, data, target
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []
        self.accuracy: list[float] = []
        self.eval_seconds = self.eval_cpu_seconds = 0.0
        self._t: tuple[float, float] | None = None

    def start(self) -> None:
        self._t = (time.perf_counter(), time.process_time())

    @property
    def reached(self) -> bool:
        """Whether an epoch end so far met the target (a recipe run may stop there)."""
        return any(a >= self.target for a in self.accuracy)

    def epoch_end(self) -> None:
        now = (time.perf_counter(), time.process_time())
        self.seconds.append(now[0] - self._t[0])
        self.cpu_seconds.append(now[1] - self._t[1])
        self.accuracy.append(accuracy(self.predict, self.data["x_test"], self.data["y_test"]))
        self._t = (time.perf_counter(), time.process_time())
        self.eval_seconds += self._t[0] - now[0]
        self.eval_cpu_seconds += self._t[1] - now[1]

    def result(self) -> dict:
        """Per-epoch lists, the steady-state epoch (the mean of epochs 2..N; epoch 1 alone when
        N = 1), the time to ``target`` test accuracy (training seconds up to the first epoch
        end at or above it; None if never) and the final accuracy."""
        steady = self.seconds[1:] or self.seconds
        steady_cpu = self.cpu_seconds[1:] or self.cpu_seconds
        hit = next((i for i, a in enumerate(self.accuracy) if a >= self.target), None)
        return {"epoch_s": self.seconds, "epoch_cpu_s": self.cpu_seconds, "test_accuracy_per_epoch": self.accuracy,
                "steady_epoch_s": sum(steady) / len(steady) if steady else math.nan,
                "steady_epoch_cpu_s": sum(steady_cpu) / len(steady_cpu) if steady_cpu else math.nan,
                "target": self.target, "epochs_to_target": None if hit is None else hit + 1,
                "time_to_target_s": None if hit is None else sum(self.seconds[:hit + 1]),
                "time_to_target_cpu_s": None if hit is None else sum(self.cpu_seconds[:hit + 1]),
                "test_accuracy": self.accuracy[-1] if self.accuracy else None,
                "eval_s": self.eval_seconds}


def in_memory_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int, shuffle: bool = True):
    """A torch DataLoader of whole (x[idx], y[idx]) batches gathered from tensors in memory, one
    index tensor per batch (no per-example __getitem__ and collate): the fastest input path the
    DataLoader-based peers (Lightning, fastai) can be given, close to the plain loop's slicing.
    ``shuffle``: a new permutation each epoch from a generator seeded with ``seed``."""
    from torch.utils.data import (
        BatchSampler,
        DataLoader,
        RandomSampler,
        SequentialSampler,
        TensorDataset,
    )

    ds = TensorDataset(x, y)
    order = RandomSampler(ds, generator=torch.Generator().manual_seed(seed)) if shuffle else SequentialSampler(ds)
    return DataLoader(ds, sampler=BatchSampler(order, batch_size, drop_last=False), batch_size=None)


def finish(phases: Phases, clock: EpochClock, **extra) -> None:
    """Emit the child's result: phase times with the harness's evaluations taken out of the fit,
    the clock's per-epoch figures, torch's version and threads, and ``extra``."""
    r = phases.result()
    r["fit_s"] -= clock.eval_seconds
    r["fit_cpu_s"] -= clock.eval_cpu_seconds
    emit(r | clock.result() | {"torch": torch.__version__, "threads": torch.get_num_threads()} | extra)

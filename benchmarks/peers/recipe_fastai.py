"""benchmarks/recipes.py's fastai contestant: the MNIST convnet of the fastai book's chapter 13.

Source: Howard & Gugger, "Deep Learning for Coders with fastai and PyTorch", chapter 13
(Convolutions), section "Improving Training Stability", the last model of the section:
https://github.com/fastai/fastbook/blob/master/13_convolutions.ipynb. Written here from its
description: the full MNIST, batch 512, normalized inputs; ``simple_cnn`` = five stride-2
convolutions (1->8 5x5, 8->16, 16->32, 32->64, 64->10, 3x3), each followed by ReLU (not the
last) and BatchNorm, then Flatten; cross-entropy, fastai's default optimizer (Adam), the
accuracy metric on the test set after each epoch (the book's validation set is MNIST's
"testing" folder), ``fit_one_cycle(5, 0.1)``. Left out: the book's ActivationStats callback
(a diagnostic that records activation histograms; it does not change the training). The data
comes from the in-memory tensors (standardized with the training mean and std, as fastai's
Normalize computes from a batch) instead of PNG files, and the torchvision-free imports of
run_fastai.py. The harness measures test accuracy at each epoch end, outside the clock, and
stops at the first epoch that reaches the target."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _child import Phases

phases = Phases()
import fastai
import torch
import torch.nn.functional as F
from _common import (
    EpochClock,
    finish,
    in_memory_batches,
    load_mnist,
    predict_torch,
    read_settings,
)
from fastai.callback.core import Callback, CancelFitException
from fastai.callback.schedule import fit_one_cycle  # noqa: F401  (patches Learner.fit_one_cycle)
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.metrics import accuracy
from torch import nn

phases.mark("import")


def conv(ni: int, nf: int, ks: int = 3, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(ni, nf, stride=2, kernel_size=ks, padding=ks // 2)]
    if act:
        layers.append(nn.ReLU())
    layers.append(nn.BatchNorm2d(nf))
    return nn.Sequential(*layers)


def simple_cnn() -> nn.Sequential:
    return nn.Sequential(conv(1, 8, ks=5), conv(8, 16), conv(16, 32), conv(32, 64), conv(64, 10, act=False),
                         nn.Flatten())  # 28 -> 14 -> 7 -> 4 -> 2 -> 1


s = read_settings()
torch.manual_seed(s["seed"])
data = load_mnist(s["data_root"])
net = simple_cnn()
dls = DataLoaders(in_memory_batches(data["x_train"], data["y_train"], 512, s["seed"]),
                  in_memory_batches(data["x_test"], data["y_test"], 512, s["seed"], shuffle=False))
clock = EpochClock(predict_torch(net), data, s["target"])


class EpochHook(Callback):
    order = 100  # after the Recorder (50): fastai's own validation and log are part of the epoch

    def after_epoch(self) -> None:
        clock.epoch_end()
        if s.get("stop_at_target") and clock.reached:
            raise CancelFitException()


learn = Learner(dls, net, loss_func=F.cross_entropy, metrics=accuracy, cbs=[EpochHook()])
phases.mark("setup")
clock.start()
with learn.no_logging():
    learn.fit_one_cycle(5, 0.1)
phases.mark("fit")
finish(phases, clock, contestant="fastai", version=fastai.__version__,
       recipe="https://github.com/fastai/fastbook/blob/master/13_convolutions.ipynb")

"""Contestant "fastai": the same training through fastai's Learner.

fastai's vision module (``fastai.vision.all``) imports torchvision, and torchvision's PyPI build
does not load beside PyTorch's CPU build ("operator torchvision::nms does not exist"). Training
a model on tensors needs none of it: this uses only fastai's Learner, DataLoaders, optimizer and
callbacks (fastai.learner, fastai.data.core, fastai.optimizer, fastai.callback.core), which do not
import torchvision, with the in-memory batch DataLoader of _common.py wrapped in fastai's
DataLoaders (fastai's documented "pure PyTorch" route). The optimizer is fastai's own SGD with
momentum; ``learn.fit`` keeps the learning rate constant. fastai validates after every epoch;
the harness cancels that (CancelValidException in before_validate, fastai's documented way for a
callback to skip a phase), prints no log table and shows no progress bar, as the other peers
are set up. The per-epoch clock is read in a Callback's after_epoch. Run by benchmarks/peers.py
in .bench-venvs/fastai."""

import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _child import Phases

phases = Phases()
import fastai
import torch.nn.functional as F
from _common import (
    EpochClock,
    build_model,
    finish,
    in_memory_batches,
    init_checksum,
    load_mnist,
    predict_torch,
    read_settings,
)
from fastai.callback.core import Callback, CancelValidException
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.optimizer import SGD

phases.mark("import")


class EpochHook(Callback):
    def __init__(self, clock: EpochClock) -> None:
        self.clock = clock

    def before_validate(self) -> None:
        raise CancelValidException()

    def after_epoch(self) -> None:
        self.clock.epoch_end()


s = read_settings()
data = load_mnist(s["data_root"])
net = build_model(s["case"], s["seed"])
checksum = init_checksum(list(net.parameters()))
train = in_memory_batches(data["x_train"], data["y_train"], s["batch_size"], s["seed"])
valid = in_memory_batches(data["x_test"], data["y_test"], 1000, s["seed"], shuffle=False)
clock = EpochClock(predict_torch(net), data, s["target"])
learn = Learner(DataLoaders(train, valid), net, loss_func=F.cross_entropy, opt_func=partial(SGD, mom=s["momentum"]),
                cbs=[EpochHook(clock)])
phases.mark("setup")

clock.start()
with learn.no_logging():
    learn.fit(s["epochs"], lr=s["lr"])
phases.mark("fit")
finish(phases, clock, contestant="fastai", version=fastai.__version__, init_checksum=checksum)

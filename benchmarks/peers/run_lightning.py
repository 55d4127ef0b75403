"""Contestant "lightning": the same training through PyTorch Lightning's Trainer.

The LightningModule holds the shared model; training_step returns the cross-entropy, and
configure_optimizers the same torch SGD. The Trainer is set up lean, as a user who wants speed
sets it: no logger, no checkpointing, no progress bar or model summary, no validation loop. The
data is the in-memory batch DataLoader of _common.py. The per-epoch clock is read in a
Callback's on_train_epoch_end. Run by benchmarks/peers.py in .bench-venvs/lightning."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _child import Phases

phases = Phases()
import lightning as L
import torch
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

phases.mark("import")


class Classifier(L.LightningModule):
    def __init__(self, net: torch.nn.Module, lr: float, momentum: float) -> None:
        super().__init__()
        self.net, self.lr, self.momentum = net, lr, momentum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum)


class EpochHook(L.Callback):
    def __init__(self, clock: EpochClock) -> None:
        self.clock = clock

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.clock.epoch_end()


s = read_settings()
data = load_mnist(s["data_root"])
net = build_model(s["case"], s["seed"])
checksum = init_checksum(list(net.parameters()))
module = Classifier(net, s["lr"], s["momentum"])
loader = in_memory_batches(data["x_train"], data["y_train"], s["batch_size"], s["seed"])
clock = EpochClock(predict_torch(net), data, s["target"])
trainer = L.Trainer(max_epochs=s["epochs"], accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                    limit_val_batches=0, callbacks=[EpochHook(clock)])
phases.mark("setup")

clock.start()
trainer.fit(module, train_dataloaders=loader)
phases.mark("fit")
finish(phases, clock, contestant="lightning", version=L.__version__, init_checksum=checksum)

"""benchmarks/recipes.py's Lightning contestant: Lightning's MNIST image-classifier example.

Source: the Lightning repository's examples/fabric/image_classifier/train_fabric.py
(https://github.com/Lightning-AI/pytorch-lightning/tree/master/examples/fabric/image_classifier),
which is PyTorch's own MNIST example ported to Lightning. Written here from its description and
run by the Lightning Trainer: inputs standardized with (0.1307, 0.3081); conv 1->32 3x3, ReLU,
conv 32->64 3x3, ReLU, max-pool 2, dropout 0.25, fc 9216->128, ReLU, dropout 0.5, fc 128->10,
log-softmax, NLL loss; Adadelta lr 1.0 with StepLR gamma 0.7 each epoch; batch 64 (the example's
train loader does not shuffle); 14 epochs, seed 1; the test set evaluated after every epoch
(here as Lightning's validation loop, loss and accuracy logged). The Trainer runs without
logger, checkpoints, progress bar or model summary. (Lightning's documentation tutorial "MNIST
Hello World" trains a 2-layer MLP with Adam for 3 epochs, which stays below 99%.) The harness
measures test accuracy at each epoch end, outside the clock, and stops at the first epoch that
reaches the target."""

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
    finish,
    in_memory_batches,
    load_mnist,
    predict_torch,
    read_settings,
)
from torch import nn

phases.mark("import")


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 32, 3, 1), nn.Conv2d(32, 64, 3, 1)
        self.dropout1, self.dropout2 = nn.Dropout(0.25), nn.Dropout(0.5)
        self.fc1, self.fc2 = nn.Linear(9216, 128), nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv2(F.relu(self.conv1(x))))  # (B, 64, 24, 24)
        h = self.dropout1(F.max_pool2d(h, 2)).flatten(1)  # (B, 9216)
        h = self.dropout2(F.relu(self.fc1(h)))
        return F.log_softmax(self.fc2(h), dim=1)  # (B, 10)


class Classifier(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = Net()

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.nll_loss(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        out = self.net(x)
        self.log("test_loss", F.nll_loss(out, y))
        self.log("test_acc", (out.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        opt = torch.optim.Adadelta(self.parameters(), lr=1.0)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)]


s = read_settings()
L.seed_everything(1, verbose=False)
data = load_mnist(s["data_root"])
module = Classifier()
train = in_memory_batches(data["x_train"], data["y_train"], 64, 1, shuffle=False)
test = in_memory_batches(data["x_test"], data["y_test"], 64, 1, shuffle=False)
clock = EpochClock(predict_torch(module.net), data, s["target"])


class EpochHook(L.Callback):
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        clock.epoch_end()
        if s.get("stop_at_target") and clock.reached:
            trainer.should_stop = True


trainer = L.Trainer(max_epochs=14, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                    callbacks=[EpochHook()])
phases.mark("setup")
clock.start()
trainer.fit(module, train_dataloaders=train, val_dataloaders=test)
phases.mark("fit")
finish(phases, clock, contestant="lightning", version=L.__version__,
       recipe="https://github.com/Lightning-AI/pytorch-lightning/tree/master/examples/fabric/image_classifier")

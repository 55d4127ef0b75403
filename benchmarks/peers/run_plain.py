"""Contestant "plain": a hand-written PyTorch loop over tensors in memory (the baseline).

Each epoch draws a permutation from a seeded generator and slices the in-memory tensors into
batches; forward, cross-entropy, zero_grad, backward, SGD step: nothing else. Run by
benchmarks/peers.py with the settings JSON as the first argument."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _child import Phases

phases = Phases()
import torch
import torch.nn.functional as F
from _common import (
    EpochClock,
    build_model,
    finish,
    init_checksum,
    load_mnist,
    predict_torch,
    read_settings,
)

phases.mark("import")
s = read_settings()
data = load_mnist(s["data_root"])
model = build_model(s["case"], s["seed"])
checksum = init_checksum(list(model.parameters()))
opt = torch.optim.SGD(model.parameters(), lr=s["lr"], momentum=s["momentum"])
gen = torch.Generator().manual_seed(s["seed"])
x, y, bs = data["x_train"], data["y_train"], s["batch_size"]
clock = EpochClock(predict_torch(model), data, s["target"])
phases.mark("setup")

clock.start()
for epoch in range(s["epochs"]):
    perm = torch.randperm(len(x), generator=gen)
    for i in range(0, len(x), bs):
        idx = perm[i:i + bs]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    clock.epoch_end()
phases.mark("fit")
finish(phases, clock, contestant="plain", version=torch.__version__, init_checksum=checksum)

"""Contestant "keras": the same training through Keras 3 on the torch backend.

The model is written with Keras layers (Keras keeps its own layout: channels-last images,
(in, out) kernels) and given the shared model's initial weights, transposed to that layout, so
every contestant starts from the same point (the init checksum agrees). Trained the way the
Keras guides do: ``model.fit`` on NumPy arrays with ``shuffle=True``, sparse categorical
cross-entropy on logits, SGD with momentum, ``verbose=0``, no metrics beyond the loss. The
per-epoch clock is read in a Callback's on_epoch_end. Run by benchmarks/peers.py in
.bench-venvs/keras with KERAS_BACKEND=torch."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _child import Phases

phases = Phases()
os.environ.setdefault("KERAS_BACKEND", "torch")
import keras
import torch
from _common import (
    EpochClock,
    build_model,
    finish,
    init_checksum,
    load_mnist,
    read_settings,
)

phases.mark("import")
if keras.backend.backend() != "torch":
    raise SystemExit(f"Keras runs on the {keras.backend.backend()} backend here; set KERAS_BACKEND=torch")


def keras_model(case: str, ref: torch.nn.Module) -> keras.Model:
    """``case``'s model in Keras layers, with ``ref``'s weights (torch layout) copied in."""
    L = keras.layers
    if case == "mlp":
        model = keras.Sequential([keras.Input((28, 28, 1)), L.Flatten(), L.Dense(512, activation="relu"),
                                  L.Dense(512, activation="relu"), L.Dense(10)])
        dense = [layer for layer in model.layers if isinstance(layer, L.Dense)]
        for layer, lin in zip(dense, (ref.fc1, ref.fc2, ref.fc), strict=True):
            layer.set_weights([lin.weight.detach().T.numpy(), lin.bias.detach().numpy()])
        return model
    model = keras.Sequential([keras.Input((28, 28, 1)), L.Conv2D(16, 3, padding="same", activation="relu"),
                              L.MaxPooling2D(2), L.Conv2D(32, 3, padding="same", activation="relu"), L.MaxPooling2D(2),
                              L.Flatten(), L.Dense(128, activation="relu"), L.Dense(10)])
    conv1, conv2, fc1, fc = [layer for layer in model.layers if layer.weights]
    for layer, c in ((conv1, ref.conv1), (conv2, ref.conv2)):
        layer.set_weights([c.weight.detach().permute(2, 3, 1, 0).numpy(), c.bias.detach().numpy()])  # (kh, kw, in, out)
    # torch flattens (C, H, W), Keras (H, W, C): reorder fc1's input rows to match
    w = ref.fc1.weight.detach().reshape(128, 32, 7, 7).permute(2, 3, 1, 0).reshape(32 * 7 * 7, 128)
    fc1.set_weights([w.numpy(), ref.fc1.bias.detach().numpy()])
    fc.set_weights([ref.fc.weight.detach().T.numpy(), ref.fc.bias.detach().numpy()])
    return model


class EpochHook(keras.callbacks.Callback):
    def __init__(self, clock: EpochClock) -> None:
        super().__init__()
        self.clock = clock

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.clock.epoch_end()


s = read_settings()
keras.utils.set_random_seed(s["seed"])
data = load_mnist(s["data_root"])
x_train = data["x_train"].permute(0, 2, 3, 1).numpy()  # (N, 28, 28, 1): Keras's channels-last
y_train = data["y_train"].numpy()
model = keras_model(s["case"], build_model(s["case"], s["seed"]))
checksum = init_checksum([torch.as_tensor(w.numpy()) for w in model.weights])
model.compile(optimizer=keras.optimizers.SGD(learning_rate=s["lr"], momentum=s["momentum"]),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def predict(x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x.permute(0, 2, 3, 1), training=False)


clock = EpochClock(predict, data, s["target"])
phases.mark("setup")

clock.start()
model.fit(x_train, y_train, batch_size=s["batch_size"], epochs=s["epochs"], shuffle=True, verbose=0,
          callbacks=[EpochHook(clock)])
phases.mark("fit")
finish(phases, clock, contestant="keras", version=keras.__version__, init_checksum=checksum)

"""benchmarks/recipes.py's Keras contestant: the Keras example "Simple MNIST convnet".

Source: https://keras.io/examples/vision/mnist_convnet/ (fchollet). Written here from its
description: pixels scaled to [0, 1], images (28, 28, 1), one-hot targets; Conv2D 32 3x3 ReLU,
MaxPooling 2, Conv2D 64 3x3 ReLU, MaxPooling 2, Flatten, Dropout 0.5, Dense 10 softmax;
categorical cross-entropy, Adam (Keras's default settings), batch 128, 15 epochs,
validation_split 0.1 (it trains on the first 54,000 training images and validates on the last
6,000 each epoch), accuracy metric. Run on the torch backend with verbose=0. The harness measures
test accuracy at each epoch end, outside the clock, and stops the fit at the first epoch that
reaches the target (``stop_at_target``)."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _child import Phases

phases = Phases()
os.environ.setdefault("KERAS_BACKEND", "torch")
import keras
import torch
from _common import EpochClock, finish, load_mnist, read_settings

phases.mark("import")
s = read_settings()
keras.utils.set_random_seed(s["seed"])
data = load_mnist(s["data_root"], normalize=False)  # [0, 1], as the example
x_train = data["x_train"].permute(0, 2, 3, 1).numpy()  # (N, 28, 28, 1)
y_train = keras.utils.to_categorical(data["y_train"].numpy(), 10)
L = keras.layers
model = keras.Sequential([keras.Input((28, 28, 1)), L.Conv2D(32, (3, 3), activation="relu"), L.MaxPooling2D((2, 2)),
                          L.Conv2D(64, (3, 3), activation="relu"), L.MaxPooling2D((2, 2)), L.Flatten(),
                          L.Dropout(0.5), L.Dense(10, activation="softmax")])
model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])


def predict(x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x.permute(0, 2, 3, 1), training=False)


clock = EpochClock(predict, data, s["target"])


class EpochHook(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None) -> None:
        clock.epoch_end()
        if s.get("stop_at_target") and clock.reached:
            self.model.stop_training = True


phases.mark("setup")
clock.start()
model.fit(x_train, y_train, batch_size=128, epochs=15, validation_split=0.1, verbose=0, callbacks=[EpochHook()])
phases.mark("fit")
finish(phases, clock, contestant="keras", version=keras.__version__,
       recipe="https://keras.io/examples/vision/mnist_convnet/")

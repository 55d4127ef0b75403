"""Contestant "layerwise" (and "layerwise-defaults"): the same training through layerwise's Trainer.

Lean (``variant: lean``): the settings a user sets to match the others: no evaluation inside the
loop, no checkpoints, no plots or TensorBoard; the final evaluation and model.safetensors are
always written and are timed in the fit. Defaults (``variant: defaults``): what `layerwise train`
does unless told otherwise: an evaluation and a checkpoint at every epoch end, the progress
display, plots and TensorBoard (when installed) besides the final evaluation and the model file.

The phases are timed as for the peers: the imports (torch, layerwise, the Trainer), the set-up
(config, data, model, optimizer: ``Trainer(...)``, which is what ``layerwise.fit`` runs before its
loop) and the fit (``Trainer.fit``). layerwise has no callbacks (house style: the loop is
extended with small named methods), so the per-epoch clock is read by a subclass that wraps
``Trainer._checkpoint_due``, the method the loop asks once per step, after its own evaluation
(when one is due) and before its checkpoint, whether a checkpoint is due; at an epoch end the
harness's evaluation runs there, outside the clock. As for the peers, whose epoch-end hooks come
after their validation, a framework's own evaluation counts in its epoch.

With ``recipe`` set (benchmarks/recipes.py) the child trains that recipe file instead, only the
data root, threads and run folder overridden, and stops at the first epoch end that meets the
target accuracy (``stop_at_target``). A recipe of fractional epochs (``train.epochs: 0.8``) is
measured at its end too: the end of training closes its last, partial epoch.

The "cnn" case registers the harness's CNN (benchmarks/peers/_common.py) in layerwise's model
registry, the extension point a researcher uses for a model of their own."""

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _child import Phases

phases = Phases()

from _common import (
    CNN,
    EpochClock,
    finish,
    init_checksum,
    load_mnist,
    predict_torch,
    read_settings,
)

import layerwise
from layerwise.config import load_config
from layerwise.models import register_model
from layerwise.models.base import Model
from layerwise.train.trainer import Trainer

phases.mark("import")


class LayerwiseCNN(CNN, Model):
    """The harness's CNN with layerwise's model face (forward_features/forward_head, costs)."""


@register_model("peers-cnn")
def peers_cnn(*, in_shape: tuple[int, ...], num_classes: int) -> Model:
    return LayerwiseCNN(num_classes=num_classes)


def overrides(s: dict, run_root: str) -> list[str]:
    """The command-line settings that match the shared recipe (SGD with momentum, constant lr)."""
    model = (["--model.name=mlp", "--model.depth=2", "--model.width=512"] if s["case"] == "mlp"
             else ["--model.name=peers-cnn"])
    common = [*model, "--data.name=mnist", f"--data.root={s['data_root']}", f"--data.batch_size={s['batch_size']}",
              "--optim.name=sgd", f"--optim.lr={s['lr']}", f"--optim.momentum={s['momentum']}",
              "--optim.nesterov=false", "--optim.weight_decay=0", "--optim.schedule=constant",
              f"--train.epochs={s['epochs']}", f"--train.seed={s['seed']}", f"--train.threads={s['threads']}",
              f"--run.root={run_root}"]
    if s.get("variant", "lean") == "lean":
        common += ["--train.eval_every=0", "--run.checkpoint_every=1000000000", "--run.plots=false",
                   "--run.tensorboard=false"]
    return common


class TargetReached(Exception):
    """Raised from the epoch-end hook to end a run once the target accuracy is met."""


s = read_settings()
if not hasattr(Trainer, "_checkpoint_due"):
    raise SystemExit("layerwise's Trainer has no _checkpoint_due method any more: update "
                     "benchmarks/peers/run_layerwise.py to read the per-epoch clock where the loop now ends an epoch")
data = load_mnist(s["data_root"])  # the harness's copy of the test split, for its own evaluation
phases.mark("harness_data")  # not layerwise's set-up: layerwise reads the data again itself
clock = None


class TimedTrainer(Trainer):
    def _checkpoint_due(self, epoch_end: bool) -> bool:
        # the end of a recipe whose train.epochs is a fraction (e.g. 0.8) ends its last, partial epoch
        if epoch_end or self.step == self.total_steps:
            clock.epoch_end()
            if s.get("stop_at_target") and clock.reached:
                raise TargetReached
        return super()._checkpoint_due(epoch_end)


run_root = tempfile.mkdtemp(prefix="peers-layerwise-")
if s.get("recipe"):
    cfg = load_config(s["recipe"], [f"--data.root={s['data_root']}", f"--train.threads={s['threads']}",
                                    f"--run.root={run_root}"])
else:
    cfg = load_config(None, overrides(s, run_root))
trainer = TimedTrainer(cfg, show_progress=s.get("variant", "lean") != "lean")
checksum = init_checksum(list(trainer.model.parameters()))
clock = EpochClock(predict_torch(trainer.model), data, s["target"])
phases.mark("setup")

clock.start()
try:
    summary = trainer.fit()
except TargetReached:
    summary = {}
phases.mark("fit")
finish(phases, clock, contestant="layerwise", version=layerwise.__version__, init_checksum=checksum,
       variant=s.get("variant", "lean"), recipe=s.get("recipe"), steps=trainer.step,
       layerwise_test_accuracy=summary.get("test_accuracy"))
shutil.rmtree(run_root, ignore_errors=True)  # after the result: the run's files are not kept

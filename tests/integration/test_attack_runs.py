"""Attacks on real models (Carlini et al. 2019's evaluation checklist, on the shipped MNIST convnet and
real MNIST test images), `layerwise attack` on image and table runs, and adversarial training that
resumes bit-identically after a SIGKILL."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_resume import _assert_identical, _newest_step, kill_after_checkpoint

N = 200  # real MNIST test images (a seeded choice)


@pytest.fixture(scope="module")
def mnist_model(data_root):
    """The shipped pretrained MNIST convnet behind its normalization, and 200 test images in [0, 1]."""
    from layerwise.config import DataConfig
    from layerwise.data import load_dataset
    from layerwise.insight import open_run
    from layerwise.models.pretrained import resolve_pretrained

    run = open_run(resolve_pretrained("pretrained:mnist-convnet"), device="cpu")
    ds = load_dataset("mnist", str(data_root), DataConfig(name="mnist"))
    idx = torch.randperm(len(ds.x_test), generator=torch.Generator().manual_seed(0))[:N]
    return run.pixel_model(), ds.x_test[idx].float() / 255, ds.y_test[idx]


def test_carlini_checklist_on_the_pretrained_mnist_convnet(mnist_model):
    from layerwise.insight.attack import accuracy_under_attack

    model, x, y = mnist_model
    eps = [0.0, 0.1, 0.2, 0.3]
    f = accuracy_under_attack(model, x, y, eps, method="fgsm")
    p = accuracy_under_attack(model, x, y, eps, method="pgd", steps=10)
    acc_f, acc_p = [r["accuracy"] for r in f], [r["accuracy"] for r in p]
    assert acc_f[0] == acc_p[0] >= 0.98  # eps 0: the clean accuracy (the model reaches 99.64% on all 10k)
    for r in f + p:  # every perturbation inside its ball (the images' [0, 1] range: tests/unit/test_attack.py)
        assert r["max_perturbation"] <= r["eps"] + 1e-6
    assert all(a >= b for a, b in itertools.pairwise(acc_p)) and acc_p[-1] < acc_p[1] < acc_p[0]  # falls with eps
    assert all(pa <= fa for pa, fa in zip(acc_p, acc_f)) and sum(acc_p) < sum(acc_f) - 0.5  # PGD beats FGSM
    # a standard MNIST CNN falls below 5% under PGD at eps 0.3 (Madry et al. 2018: 0-4%), even PGD-10
    assert acc_p[-1] < 0.05
    # a large enough eps leaves nothing (L-inf 0.5 can turn any digit into mid-grey)
    assert accuracy_under_attack(model, x[:100], y[:100], [0.5], method="pgd", steps=10)[0]["accuracy"] <= 0.01


Q = ["--run.plots=false", "--run.tensorboard=false", "--train.threads=1", "--quiet"]
ADV = ["train", "--data.name=digits", "--model.name=convnet", "--model.widths=[8,16]", "--data.batch_size=64",
       "--train.epochs=2", "--train.adversarial=pgd", "--train.adversarial_eps=0.2", "--train.adversarial_steps=2",
       "--run.checkpoint_every=3", "--run.keep_checkpoints=2", "--train.eval_every=0", *Q]


def lw(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "layerwise", *map(str, args)], capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.fixture(scope="module")
def adversarial_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("adv") / "run"
    out = lw(*ADV, f"--run.dir={run}")
    assert out.returncode == 0, out.stderr[-2000:]
    return run


def test_adversarial_training_resumes_bit_identically_after_sigkill(adversarial_run, tmp_path):
    run = tmp_path / "run"
    kill_after_checkpoint([sys.executable, "-m", "layerwise", *ADV, f"--run.dir={run}"], run, 7)
    assert not (run / "summary.json").exists() and _newest_step(run / "checkpoints") < 46  # 23 steps/epoch
    out = lw("train", "--resume", run, "--quiet")
    assert out.returncode == 0, out.stderr[-2000:]
    _assert_identical(load_file(str(adversarial_run / "model.safetensors")), load_file(str(run / "model.safetensors")))


def test_attack_cli_on_an_adversarially_trained_image_run(adversarial_run, tmp_path, capsys):
    from layerwise.cli import main

    # in this process (cli.main, as `layerwise attack` calls it): no second interpreter to start
    assert main(["attack", str(adversarial_run), "--n", "100", "--steps", "5", "--eps", "0,0.1,0.3",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr()
    result = json.loads((adversarial_run / "attack" / "pgd-linf.json").read_text())
    acc = [r["accuracy"] for r in result["rows"]]
    assert result["bounds"] == [0.0, 1.0] and result["n"] == 100 and acc[0] >= 0.3 and acc[2] <= acc[0]  # chance: 0.1
    assert all(r["max_perturbation"] <= r["eps"] + 1e-6 for r in result["rows"])
    assert (adversarial_run / "attack" / "linf.png").stat().st_size > 5000 and "0.3" in out.out
    # a typo in a flag: a clear one-line error, exit 2, earlier results kept
    assert main(["attack", str(adversarial_run), "--eps", "0,0.1x"]) == 2
    err = capsys.readouterr().err
    assert "--eps takes comma-separated numbers" in err and len(err.strip().splitlines()) == 1, err
    assert (adversarial_run / "attack" / "pgd-linf.json").read_text() == json.dumps(result, indent=2) + "\n"
    assert main(["attack", str(tmp_path / "nothing")]) == 1 and "does not exist" in capsys.readouterr().err


def test_attack_on_a_table_run_is_unbounded_and_refuses_regression(tmp_path):
    import layerwise

    common = [f"--run.root={tmp_path}", "--run.plots=false", "--run.tensorboard=false", "--train.threads=1",
              "--model.name=mlp", "--model.width=16", "--train.epochs=3"]
    s = layerwise.fit(None, "--data.name=breast-cancer", *common, show_progress=False)
    r = layerwise.attack(s["run_dir"], "fgsm", "l2", [0, 0.5, 5.0], n=100, device="cpu", out=tmp_path / "a")
    acc = [row["accuracy"] for row in r["rows"]]
    assert r["bounds"] is None and acc[0] > 0.8 and acc[2] < acc[0]
    assert (tmp_path / "a" / "fgsm-l2.json").is_file() and (tmp_path / "a" / "l2.png").is_file()
    reg = layerwise.fit(None, "--data.name=diabetes", *common, show_progress=False)
    from layerwise.config import ConfigError
    with pytest.raises(ConfigError, match="regress run.*single-label classifiers"):
        layerwise.attack(reg["run_dir"], device="cpu")

"""The command line as a user meets it: the default job, its run directory, and every subcommand."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SUMMARY_KEYS = {"test_accuracy", "test_loss", "train_seconds", "params", "flops_per_example", "examples_seen"}


def lw(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "layerwise", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> Path:
    """`layerwise train` with no arguments, run in an empty directory (as a newcomer would)."""
    cwd = tmp_path_factory.mktemp("newcomer")
    out = lw("train", cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = list((cwd / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("digits-")
    assert "test_accuracy" in out.stdout  # the results table
    return runs[0]


def test_default_job_reaches_98_percent_and_writes_a_complete_run(default_run):
    summary = json.loads((default_run / "summary.json").read_text())
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["test_accuracy"] >= 0.98, summary
    assert summary["params"] > 0 and summary["flops_per_example"] > 0
    for name in ("config.yaml", "env.json", "metrics.jsonl", "model.safetensors",
                 "plots/loss.png", "plots/accuracy.png", "plots/lr.png"):
        assert (default_run / name).is_file() and (default_run / name).stat().st_size > 0, name
    env = json.loads((default_run / "env.json").read_text())
    assert env["seed"] == 0 and env["torch"] and "git_revision" in env
    cfg = yaml.safe_load((default_run / "config.yaml").read_text())
    assert cfg["model"]["name"] == "resnet-digits" and cfg["data"]["name"] == "digits"
    records = [json.loads(line) for line in (default_run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["kind"] == "test" and records[-1]["accuracy"] == summary["test_accuracy"]


def test_eval_reproduces_the_summary(default_run):
    out = lw("eval", str(default_run))
    assert out.returncode == 0, out.stderr
    acc = json.loads((default_run / "summary.json").read_text())["test_accuracy"]
    assert f"{acc:.4f}" in out.stdout


def test_predict_on_npy_and_image(default_run, tmp_path):
    from PIL import Image
    from layerwise.data import load_dataset
    ds = load_dataset("digits", "")
    np.save(tmp_path / "ten.npy", ds.x_test[:10, 0].numpy())
    out = lw("predict", str(default_run), str(tmp_path / "ten.npy"), "--top-k", "2", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert len(res) == 10 and all(len(r["top"]) == 2 for r in res)
    predicted = [int(r["top"][0]["class"]) for r in res]
    assert sum(p == t for p, t in zip(predicted, ds.y_test[:10].tolist())) >= 9
    assert all(r["top"][0]["probability"] >= r["top"][1]["probability"] for r in res)
    # a test digit drawn as a 32x32 dark-on-light picture comes back as the same class
    img = (255 - ds.x_test[0, 0].numpy() / 16 * 255).astype(np.uint8)
    Image.fromarray(img).resize((32, 32), Image.NEAREST).save(tmp_path / "digit.png")
    out = lw("predict", str(default_run), str(tmp_path / "digit.png"))
    assert out.returncode == 0 and out.stdout.startswith(f"{tmp_path / 'digit.png'}: {int(ds.y_test[0])} (")


def test_info_shows_the_summary(default_run):
    out = lw("info", str(default_run))
    assert out.returncode == 0 and "test_accuracy" in out.stdout and "finished" in out.stdout


def test_train_help_documents_every_key():
    out = lw("train", "--help")
    assert out.returncode == 0
    for key in ("model.<arg>", "data.root", "optim.weight_decay", "train.precision", "train.compile",
                "run.keep_checkpoints", "train.ema_decay", "optim.schedule"):
        assert key in out.stdout, key


@pytest.mark.parametrize("args, code, needles", [
    (["train", "--train.epocs=3"], 2, ["train.epocs", "Did you mean 'epochs'"]),
    (["train", "--train.epochs=many"], 2, ["train.epochs", "expects float"]),
    (["train", "--model.name=resnet-digit"], 2, ["resnet-digits"]),
    (["train", "no/such/recipe.yaml"], 2, ["does not exist"]),
    (["train", "--data.name=mnist", "--data.root=/nonexistent"], 1, ["mnist/mnist_train.npz", "LAYERWISE_DATA"]),
    (["train", "--train.precision=fp16", "--train.device=cpu"], 1, ["fp16", "bf16"]),
    (["eval", "/nonexistent/run"], 1, ["not a layerwise run directory"]),
    (["train", "--resume", "/nonexistent/run"], 1, ["not a layerwise run directory"]),
])
def test_bad_input_gets_a_clear_error_and_exit_code(args, code, needles, tmp_path):
    out = lw(*args, cwd=tmp_path)
    assert out.returncode == code, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr
    for n in needles:
        assert n in out.stderr, (n, out.stderr)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_new_run_never_overwrites_an_earlier_one(default_run):
    before = (default_run / "model.safetensors").read_bytes()
    out = lw("train", f"--run.dir={default_run}", "--train.max_steps=1")
    # it finished, so `--resume` would only say "already finished": the fix is a new --run.dir
    assert out.returncode == 1 and "already holds" in out.stderr and "choose a new --run.dir" in out.stderr.lower()
    assert "--resume" not in out.stderr
    assert (default_run / "model.safetensors").read_bytes() == before


def test_corrupt_model_file_is_reported(tmp_path, default_run):
    import shutil
    broken = tmp_path / "run"
    shutil.copytree(default_run, broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 3])
    out = lw("eval", str(broken))
    assert out.returncode == 1 and "not a readable safetensors file" in out.stderr


def test_data_root_defaults_to_the_environment_variable(tmp_path):
    import os
    env = dict(os.environ, LAYERWISE_DATA=str(tmp_path / "from-env"))
    out = subprocess.run([sys.executable, "-m", "layerwise", "train", "--data.name=mnist"], capture_output=True,
                         text=True, cwd=tmp_path, env=env, timeout=300)
    assert out.returncode == 1 and str(tmp_path / "from-env") in out.stderr


def test_space_separated_override_and_quiet_mode(tmp_path):
    out = lw("train", "--run.dir", str(tmp_path / "mine"), "--train.max_steps=3", "--quiet",
             "--model.name=mlp", "--run.plots", "false", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "mine" / "summary.json").is_file() and not (tmp_path / "mine" / "plots").exists()
    assert "step " not in out.stdout and "test_accuracy" in out.stdout


def test_models_lists_the_registry_and_one_models_arguments():
    out = lw("models")
    names = out.stdout.split()
    assert out.returncode == 0 and {"mlp", "resnet-digits", "resnet20", "resnet50"} <= set(names)
    out = lw("models", "resnet20")
    assert out.returncode == 0 and "model.layers = (3, 3, 3)" in out.stdout and "model.widths" in out.stdout
    out = lw("models", "resnet-digit")
    assert out.returncode == 2 and "did you mean 'resnet-digits'" in out.stderr

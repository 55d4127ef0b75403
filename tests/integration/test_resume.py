"""Nothing lost: a run killed with SIGKILL at a random step resumes to bit-identical weights."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

# Dropout, augmentation, EMA and a mid-epoch checkpoint cadence make every piece of saved state
# matter: RNG, loader position, optimizer, EMA and schedule.
ARGS = ["train", "--model.name=mlp", "--model.depth=2", "--model.width=64", "--model.dropout=0.2",
        "--data.batch_size=32", "--data.augment_translate=1", "--train.epochs=5", "--train.ema_decay=0.9",
        "--train.threads=1", "--train.eval_every=2", "--run.checkpoint_every=7", "--run.keep_checkpoints=2",
        "--run.plots=false", "--run.tensorboard=false", "--quiet"]


def _cmd(*extra: str) -> list[str]:
    return [sys.executable, "-m", "layerwise", *ARGS, *extra]


def _train(run_dir: Path) -> dict:
    subprocess.run(_cmd(f"--run.dir={run_dir}"), check=True, capture_output=True, timeout=300)
    return load_file(str(run_dir / "model.safetensors"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    return _train(tmp_path_factory.mktemp("ref") / "run")


def _assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].equal(b[k]), f"{k} differs after resume"


def _newest_step(ckpt_dir: Path) -> int:
    steps = [0]
    for p in ckpt_dir.glob("step_*.json"):
        try:  # the trainer may prune this file between the glob and the read
            steps.append(json.loads(p.read_text())["step"])
        except (OSError, ValueError):
            pass
    return max(steps)


def test_sigkill_at_random_step_then_resume_is_bit_identical(tmp_path, reference):
    run_dir = tmp_path / "run"
    total = 5 * 45  # 1437 examples / 32 per step = 45 steps per epoch
    target = random.Random(os.getpid()).randint(10, total // 2)
    proc = subprocess.Popen(_cmd(f"--run.dir={run_dir}"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while _newest_step(run_dir / "checkpoints") < target and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    assert proc.poll() is None, f"the run ended before step {target}: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _newest_step(run_dir / "checkpoints")
    assert not (run_dir / "summary.json").exists() and killed_at < total

    out = subprocess.run([sys.executable, "-m", "layerwise", "train", "--resume", str(run_dir), "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    _assert_identical(reference, load_file(str(run_dir / "model.safetensors")))
    # the metrics log has exactly one record per logged step despite the replayed part
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == total


def test_corrupt_newest_checkpoint_falls_back_to_previous(tmp_path, reference):
    run_dir = tmp_path / "run"
    subprocess.run(_cmd(f"--run.dir={run_dir}"), check=True, capture_output=True, timeout=300)
    # make the finished run look interrupted after its last checkpoint (step 224 of 225)
    (run_dir / "summary.json").unlink()
    (run_dir / "model.safetensors").unlink()
    ckpts = sorted((run_dir / "checkpoints").glob("step_*.pt"))
    assert [p.name for p in ckpts] == ["step_00000217.pt", "step_00000224.pt"]
    data = ckpts[-1].read_bytes()
    ckpts[-1].write_bytes(data[: len(data) // 2])  # truncated, as by a full disk

    out = subprocess.run([sys.executable, "-m", "layerwise", "train", "--resume", str(run_dir), "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "step_00000224.pt" in out.stderr and "checksum" in out.stderr
    _assert_identical(reference, load_file(str(run_dir / "model.safetensors")))


def test_no_valid_checkpoint_is_a_clear_error(tmp_path):
    run_dir = tmp_path / "run"
    subprocess.run(_cmd(f"--run.dir={run_dir}", "--train.max_steps=10"), check=True, capture_output=True,
                   timeout=300)
    (run_dir / "summary.json").unlink()
    for p in (run_dir / "checkpoints").glob("step_*.pt"):
        p.write_bytes(b"garbage")
    out = subprocess.run([sys.executable, "-m", "layerwise", "train", "--resume", str(run_dir)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert "no usable checkpoint" in out.stderr and "Traceback" not in out.stderr
    # the earlier results are still there
    assert (run_dir / "metrics.jsonl").stat().st_size > 0 and (run_dir / "config.yaml").is_file()

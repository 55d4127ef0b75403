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


def kill_after_checkpoint(cmd: list[str], run_dir: Path, step: int) -> None:
    """Start ``cmd`` (a training run into ``run_dir``) and SIGKILL it once a checkpoint at or after
    ``step`` is on disk; fails if the run ends first."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while _newest_step(run_dir / "checkpoints") < step and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    assert proc.poll() is None, f"the run ended before step {step}: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkill_at_random_step_then_resume_is_bit_identical(tmp_path, reference):
    run_dir = tmp_path / "run"
    total = 5 * 45  # 1437 examples / 32 per step = 45 steps per epoch
    target = random.Random(os.getpid()).randint(10, total // 2)
    kill_after_checkpoint(_cmd(f"--run.dir={run_dir}"), run_dir, target)
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


# ------------------------------------------------------------------ resuming with other settings
SMALL = ["train", "--model.name=mlp", "--model.width=32", "--data.batch_size=16", "--train.max_steps=30",
         "--train.threads=1", "--run.checkpoint_every=10", "--run.keep_checkpoints=5", "--run.plots=false",
         "--run.tensorboard=false", "--quiet"]


def _lw(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "layerwise", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture
def interrupted(tmp_path) -> tuple[Path, dict]:
    """A finished 30-step run (its weights), and a copy made to look killed after step 20."""
    ref = tmp_path / "ref"
    assert _lw(*SMALL, f"--run.dir={ref}").returncode == 0
    run = tmp_path / "run"
    assert _lw(*SMALL, f"--run.dir={run}").returncode == 0
    for f in ("summary.json", "model.safetensors"):
        (run / f).unlink()
    for f in (run / "checkpoints").glob("step_00000030.*"):
        f.unlink()
    return run, load_file(str(ref / "model.safetensors"))


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_resume_refuses_settings_that_change_the_trajectory(interrupted):
    run, _ = interrupted
    before = _snapshot(run)
    out = _lw("train", "--resume", str(run), "--data.batch_size=32", "--train.grad_accum=2", "--optim.lr=0.1")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    for needle in ("data.batch_size: 16 -> 32", "train.grad_accum: 1 -> 2", "optim.lr: 0.003 -> 0.1",
                   "cannot be resumed", "start a new run"):
        assert needle in out.stderr, (needle, out.stderr)
    assert _snapshot(run) == before  # nothing written, nothing lost


def test_resume_takes_harmless_settings_records_them_and_ends_identical(interrupted):
    run, reference = interrupted
    out = _lw("train", "--resume", str(run), "--train.log_every=7", "--run.plots=true", "--data.workers=0")
    assert out.returncode == 0, out.stderr
    _assert_identical(reference, load_file(str(run / "model.safetensors")))
    import yaml
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["train"]["log_every"] == 7 and cfg["run"]["plots"] is True and cfg["data"]["workers"] == 0
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    resumed = [r for r in records if r["kind"] == "resume"]
    assert resumed == [{"kind": "resume", "step": 20, "from": "step_00000020.pt",
                        "changed": {"data.workers": [2, 0], "run.plots": [False, True], "train.log_every": [20, 7]}}]
    assert [r["step"] for r in records if r["kind"] == "train"] == [20, 21, 28, 30]  # log_every 20, then 7
    assert (run / "plots" / "loss.png").is_file()


def test_a_hand_edited_config_is_checked_against_the_checkpoint(interrupted):
    run, _ = interrupted
    text = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(text.replace("batch_size: 16", "batch_size: 32"))
    out = _lw("train", "--resume", str(run))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "step_00000020.pt" in out.stderr and "data.batch_size: 16 -> 32" in out.stderr


def test_a_torn_metrics_line_from_a_kill_does_not_stop_resume(interrupted):
    run, reference = interrupted
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "step": 2')  # the process died while appending this record
    out = _lw("train", "--resume", str(run))
    assert out.returncode == 0, out.stderr
    assert "incomplete line" in out.stderr
    _assert_identical(reference, load_file(str(run / "model.safetensors")))
    for line in (run / "metrics.jsonl").read_text().splitlines():
        json.loads(line)


def test_the_length_may_change_on_resume_only_under_a_constant_schedule(tmp_path):
    run = tmp_path / "run"
    assert _lw(*SMALL, f"--run.dir={run}").returncode == 0  # onecycle: the length shapes every step's lr
    (run / "summary.json").unlink()
    out = _lw("train", "--resume", str(run), "--train.max_steps=40")
    assert out.returncode == 2 and "from 30 to 40 steps" in out.stderr and "optim.schedule=constant" in out.stderr
    flat = tmp_path / "flat"
    assert _lw(*SMALL, "--optim.schedule=constant", f"--run.dir={flat}").returncode == 0
    (flat / "summary.json").unlink()
    out = _lw("train", "--resume", str(flat), "--train.max_steps=40")
    assert out.returncode == 0, out.stderr
    assert json.loads((flat / "summary.json").read_text())["steps"] == 40
    resumed = [json.loads(x) for x in (flat / "metrics.jsonl").read_text().splitlines() if '"resume"' in x]
    assert resumed[0]["changed"] == {"train.max_steps": [30, 40]} and resumed[0]["step"] == 20


def test_a_run_saved_before_newer_config_keys_resumes(interrupted):
    """A checkpoint and config.yaml written by an earlier layerwise lack the keys added since
    (here the fine-tuning ones); those take their defaults, which reproduce what that version did,
    so the run resumes to the same weights instead of being refused as changed."""
    import hashlib

    import torch
    import yaml

    run, reference = interrupted
    newer = {"train": ("freeze_body_epochs", "unfreeze"), "optim": ("body_lr_scale",)}
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    for section, keys in newer.items():
        for k in keys:
            cfg[section].pop(k)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    pt = run / "checkpoints" / "step_00000020.pt"
    state = torch.load(pt, weights_only=True)
    for section, keys in newer.items():
        for k in keys:
            state["config"][section].pop(k)
    torch.save(state, pt)
    meta = json.loads(pt.with_suffix(".json").read_text())
    data = pt.read_bytes()
    meta.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    pt.with_suffix(".json").write_text(json.dumps(meta))

    out = _lw("train", "--resume", str(run))
    assert out.returncode == 0, out.stderr
    _assert_identical(reference, load_file(str(run / "model.safetensors")))
    resumed = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"resume"' in x]
    assert resumed[-1]["changed"] == {}

"""`layerwise explain` on a run trained on two processes (DDP over gloo, CPU): the saved model
explains like any other (Grad-CAM on its conv stages, IG with a small completeness gap)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("captum")


@pytest.mark.slow
def test_explain_a_run_trained_on_two_processes(tmp_path):
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    train = [sys.executable, "-m", "layerwise", "train", "--quiet", "--nproc", "2", "--train.max_steps=8",
             "--data.batch_size=32", "--train.eval_every=0", "--run.plots=false", "--run.tensorboard=false",
             "--model.name=convnet", "--model.widths=[8,16]", "--model.whiten=false", f"--run.root={tmp_path}"]
    p = subprocess.run(train, check=False, capture_output=True, text=True, timeout=300,
                       env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    run = next(d for d in tmp_path.iterdir() if (d / "model.safetensors").is_file())
    for method in ("gradcam", "ig"):
        q = subprocess.run([sys.executable, "-m", "layerwise", "explain", str(run), "--split", "test", "--n", "3",
                            "--method", method, "--device", "cpu"], check=False, capture_output=True, text=True,
                           timeout=120,
                           env=env)
        assert q.returncode == 0, q.stderr[-3000:]
        assert q.stdout.count("test[") == 3
    summary = json.loads((run / "explain" / "ig-001" / "summary.json").read_text())
    assert all(r["completeness"]["relative"] < 0.05 for r in summary["results"])
    assert len(list((run / "explain" / "gradcam-001").glob("*.png"))) == 3

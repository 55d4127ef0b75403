"""Distributed training on CPU with gloo: several real processes started by torchrun's launcher
(`layerwise train --nproc N`), compared with one process on the same global batch.

Every test trains for a few steps only; what is asserted is equality: the weights a strategy
produces must be the weights one process produces (atol 1e-5), and a checkpoint written at one
world size must continue at another to the same weights.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from layerwise.config import load_config
from layerwise.train.trainer import fit, resume

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")

TEXT = ("First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. "
        "First Citizen: You are all resolved rather to die than to famish? All: Resolved. resolved. ") * 40

COMMON = ["--train.max_steps=5", "--data.batch_size=32", "--train.eval_every=0", "--run.plots=false",
          "--run.tensorboard=false", "--optim.lr=0.01"]
MLP = ["--model.name=mlp", "--model.width=64", "--model.depth=2"]


def gpt_args(tmp_path: Path) -> list[str]:
    text = tmp_path / "text.txt"
    if not text.is_file():
        text.write_text(TEXT)
    return ["--data.name=text", f"--data.path={text}", "--data.tokenizer=char", "--data.block_size=32",
            "--model.name=gpt", "--model.n_layer=2", "--model.n_head=4", "--model.n_embd=32",
            "--model.mlp=swiglu", "--model.norm=rmsnorm", "--model.rotary=true"]


def launch(args: list[str], nproc: int, timeout: float = 120, **popen) -> subprocess.CompletedProcess:
    """`layerwise train ... --nproc N` in a fresh process, as a user runs it."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "layerwise", "train", *args, "--quiet", "--nproc", str(nproc)],
                          capture_output=True, text=True, timeout=timeout, env=env, **popen)


def single(args: list[str], run_dir: Path) -> dict:
    """The reference: one process, the same config and global batch."""
    cfg = load_config(None, [*args, f"--run.dir={run_dir}"])
    return fit(cfg, show_progress=False)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model.safetensors"))


def assert_same_weights(a: Path, b: Path, atol: float = 1e-5) -> None:
    """The same weights, and the same test figures (evaluated sharded over the ranks, padding
    masked: every test example counted once)."""
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert worst <= atol, f"weights differ by up to {worst:.3g}"
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert abs(sa["test_loss"] - sb["test_loss"]) < 1e-4
    assert abs(sa["test_accuracy"] - sb["test_accuracy"]) < 1e-9


def ok(p: subprocess.CompletedProcess) -> None:
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict[str, Path]:
    """Single-process runs of the MLP and the GPT (trained once, compared by several tests)."""
    root = tmp_path_factory.mktemp("reference")
    out = {}
    for name, args in (("mlp", MLP), ("gpt", gpt_args(root))):
        torch.set_num_threads(1)
        single([*COMMON, *args], root / name)
        out[name] = root / name
    out["text_dir"] = root
    return out


def model_args(name: str, refs: dict[str, Path]) -> list[str]:
    return MLP if name == "mlp" else gpt_args(refs["text_dir"])


@pytest.mark.parametrize("model", ["mlp", "gpt"])
def test_ddp_two_ranks_match_one_process(model, references, tmp_path):
    """2 ranks x batch 16 == 1 process x batch 32 after 5 steps (the weights, atol 1e-5)."""
    run = tmp_path / "ddp"
    ok(launch([*COMMON, *model_args(model, references), "--dist.strategy=ddp", f"--run.dir={run}"], 2))
    assert_same_weights(run, references[model])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["params_on_rank0"] == summary["params"]  # DDP keeps whole copies
    assert summary["examples_seen"] == json.loads((references[model] / "summary.json").read_text())["examples_seen"]
    assert "ddp on 2 ranks" in summary["parallel"]
    # energy: both ranks' joules, summed by an all_reduce at each logged line and at the end
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert summary["energy_method"] in ("estimated", "rapl", "nvml+estimated", "nvml+rapl")
    assert summary["energy_train_j"] > 0
    assert summary["energy_eval_j"] == [r for r in lines if r["kind"] == "test"][-1]["energy_eval_j"] > 0
    assert 0 < [r for r in lines if r["kind"] == "train"][-1]["energy_train_j"] <= summary["energy_train_j"]


def test_ddp_with_the_stream_loader_matches_one_process(references, tmp_path):
    """The DataLoader path shards by rank the same way: each rank's workers decode its share."""
    run = tmp_path / "ddp_stream"
    ok(launch([*COMMON, *MLP, "--dist.strategy=ddp", "--data.loader=stream", "--data.workers=1",
               f"--run.dir={run}"], 2))
    assert_same_weights(run, references["mlp"])


@pytest.mark.parametrize("model", ["mlp", "gpt"])
def test_fsdp_two_ranks_match_one_process(model, references, tmp_path):
    run = tmp_path / "fsdp"
    ok(launch([*COMMON, *model_args(model, references), "--dist.strategy=fsdp", f"--run.dir={run}"], 2))
    assert_same_weights(run, references[model])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["params_on_rank0"] <= summary["params"] // 2 + 64  # each rank holds about half


@pytest.mark.parametrize("sp", [True, False], ids=["sequence-parallel", "plain"])
def test_tensor_parallel_matches_one_process(sp, references, tmp_path):
    """TP splits heads and MLP columns over 2 ranks; both read the whole batch."""
    run = tmp_path / "tp"
    ok(launch([*COMMON, *gpt_args(references["text_dir"]), "--dist.strategy=tp",
               f"--dist.sequence_parallel={str(sp).lower()}", f"--run.dir={run}"], 2))
    assert_same_weights(run, references["gpt"])
    summary = json.loads((run / "summary.json").read_text())
    # the blocks' matrices are split in two; embeddings, norms and biases of row-split layers are not
    assert summary["params"] * 0.5 < summary["params_on_rank0"] < summary["params"] * 0.8


@pytest.mark.slow
def test_fsdp_tp_2d_mesh_matches_one_process(references, tmp_path):
    """4 processes on a 2 x 2 mesh: FSDP over 2 data-parallel ranks, TP over 2."""
    run = tmp_path / "fsdp_tp"
    ok(launch([*COMMON, *gpt_args(references["text_dir"]), "--dist.strategy=fsdp+tp", "--dist.tp=2",
               f"--run.dir={run}"], 4, timeout=240))
    assert_same_weights(run, references["gpt"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["params_on_rank0"] < summary["params"] * 0.4  # TP halves the blocks, FSDP halves again
    assert json.loads((run / "env.json").read_text())["parallel"] == {
        "strategy": "fsdp+tp", "world_size": 4, "dp_replicate": 1, "dp_shard": 2, "tp": 2}


def test_activation_checkpointing_changes_nothing(references, tmp_path):
    run = tmp_path / "ac"
    single([*COMMON, *gpt_args(references["text_dir"]), "--dist.activation_checkpointing=true"], run)
    assert_same_weights(run, references["gpt"], atol=1e-6)


def _continue(src: Path, dst: Path) -> None:
    """A copy of a finished run as it was at its checkpoint (what a crash leaves behind)."""
    import shutil

    shutil.copytree(src, dst)
    for name in ("summary.json", "model.safetensors"):
        (dst / name).unlink()


def test_dcp_checkpoint_reshards_two_ranks_to_one_and_back(references, tmp_path):
    """Saved by 2 FSDP ranks at step 3, resumed by 1 process (and the reverse): the final weights
    equal the uninterrupted single-process run's."""
    args = [*COMMON, *model_args("gpt", references), "--run.checkpoint_every=3"]
    two = tmp_path / "two"
    ok(launch([*args, "--dist.strategy=fsdp", f"--run.dir={two}"], 2))
    ckpts = sorted(p.name for p in (two / "checkpoints").iterdir())
    assert ckpts == ["step_00000003.dcp"], ckpts
    assert len(list((two / "checkpoints" / ckpts[0]).glob("*.distcp"))) == 2  # one shard file per rank

    # 2 -> 1: the sharded checkpoint continues in one plain process
    cont = tmp_path / "two_to_one"
    _continue(two, cont)
    summary = resume(cont, show_progress=False, overrides=["--dist.strategy=none"])
    assert summary["steps"] == 5
    assert_same_weights(cont, references["gpt"])

    # 1 -> 2: a single-process .pt checkpoint continues on 2 FSDP ranks
    one = tmp_path / "one"
    single(args, one)
    back = tmp_path / "one_to_two"
    _continue(one, back)
    assert sorted(p.name for p in (back / "checkpoints").iterdir()) == ["step_00000003.json", "step_00000003.pt"]
    ok(launch(["--resume", str(back), "--dist.strategy=fsdp"], 2))
    assert_same_weights(back, references["gpt"])


def test_muon_under_ddp_checkpoints_and_resumes_across_world_sizes(tmp_path):
    """Muon + SGD steps as two torch optimizers (a CombinedOptimizer): 2 DDP ranks match one
    process, their DCP checkpoint continues in one process, and one process's .pt checkpoint
    continues on 2 ranks, all ending at the uninterrupted run's weights."""
    torch.set_num_threads(1)
    args = [*COMMON, *MLP, "--optim.name=muon", "--optim.muon_rest=sgd", "--optim.muon_normalize=true",
            "--optim.muon_lr=0.05", "--run.checkpoint_every=3"]
    ref = tmp_path / "ref"
    single(args, ref)
    two = tmp_path / "two"
    ok(launch([*args, "--dist.strategy=ddp", f"--run.dir={two}"], 2))
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["step_00000003.dcp"]
    assert_same_weights(two, ref)
    cont = tmp_path / "two_to_one"
    _continue(two, cont)
    resume(cont, show_progress=False, overrides=["--dist.strategy=none"])
    assert_same_weights(cont, ref)
    back = tmp_path / "one_to_two"
    _continue(ref, back)
    ok(launch(["--resume", str(back), "--dist.strategy=ddp"], 2))
    assert_same_weights(back, ref)


def test_bad_mesh_fails_before_training(tmp_path):
    p = launch([*COMMON, *MLP, "--dist.strategy=tp", "--dist.tp=3", f"--run.root={tmp_path}"], 2, timeout=60)
    assert p.returncode == 2
    assert "tp 3 = 3 ranks, but the run has 2" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert not any(tmp_path.iterdir())  # nothing was written


# ---------------------------------------------------------------------------------------- faults
def _workers(launcher_pid: int) -> dict[int, int]:
    """{rank: pid} of the worker processes a launcher started (read from /proc)."""
    found = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            env = (d / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if ppid != launcher_pid:
            continue
        for item in env:
            if item.startswith(b"RANK="):
                found[int(item[5:])] = int(d.name)
    return found


def _wait_for(pred, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _start(args: list[str], nproc: int, extra: list[str] = ()) -> subprocess.Popen:
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "layerwise", "train", *args, "--quiet", "--nproc", str(nproc),
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


LONG = [*MLP, "--data.batch_size=32", "--train.eval_every=0", "--run.plots=false", "--run.tensorboard=false",
        "--run.checkpoint_every=50", "--train.log_every=50"]


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds worker processes through /proc")
def test_killed_rank_ends_the_job_and_resume_continues(tmp_path):
    run = tmp_path / "run"
    # a constant schedule, so that the resumed run may end sooner than the first launch asked
    proc = _start([*LONG, "--train.max_steps=100000", "--optim.schedule=constant", "--dist.strategy=ddp",
                   f"--run.dir={run}"], 2)
    try:
        _wait_for(lambda: list((run / "checkpoints").glob("step_*.dcp")), 90, "a first checkpoint")
        ranks = _wait_for(lambda: _workers(proc.pid) if len(_workers(proc.pid)) == 2 else None, 30, "the workers")
        os.kill(ranks[1], signal.SIGKILL)
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert time.monotonic() - t0 < 30
    assert "failed: rank 1 (local rank 1" in err and "was killed by signal SIGKILL" in err, err[-3000:]
    assert f"layerwise train --resume {run} --nproc 2" in err
    step = max(int(p.name[5:13]) for p in (run / "checkpoints").glob("step_*.dcp"))

    # relaunch from the last checkpoint (to a nearer end than the first launch asked for)
    p = launch(["--resume", str(run), f"--train.max_steps={step + 20}"], 2)
    ok(p)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == step + 20
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # no duplicated records from the lost attempt


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds worker processes through /proc")
def test_max_restarts_resumes_from_the_last_checkpoint(tmp_path):
    root = tmp_path / "runs"
    proc = _start([*LONG, "--train.max_steps=600", "--dist.strategy=ddp", f"--run.root={root}",
                   "--run.name=elastic"], 2, ["--max-restarts", "1"])
    try:
        ckpt = _wait_for(lambda: list(root.glob("elastic-*/checkpoints/step_*.dcp")), 90, "a first checkpoint")
        ranks = _wait_for(lambda: _workers(proc.pid) if len(_workers(proc.pid)) == 2 else None, 30, "the workers")
        os.kill(ranks[1], signal.SIGKILL)
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    runs = list(root.glob("elastic-*"))
    assert len(runs) == 1, runs  # the restart went on in the same run directory
    run = runs[0]
    assert json.loads((run / "summary.json").read_text())["steps"] == 600
    assert ckpt[0].parent.parent == run
    assert "resumed from" not in out  # --quiet; the restart shows in the metrics instead
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 600


def test_hung_rank_times_out_with_its_rank_named(tmp_path):
    """No agent here (as under a plain cluster launcher): rank 1 is frozen with SIGSTOP, and rank 0
    must stop within dist.timeout with an error naming rank 1, not hang."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    run = tmp_path / "run"
    for rank in (0, 1):
        env = os.environ | {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1",
                            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "PYTHONUNBUFFERED": "1"}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "layerwise", "train", *LONG, "--train.max_steps=100000", "--dist.timeout=10",
             f"--run.dir={run}", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    try:
        _wait_for(lambda: list((run / "checkpoints").glob("step_*.dcp")), 90, "a first checkpoint")
        os.kill(procs[1].pid, signal.SIGSTOP)
        t0 = time.monotonic()
        out, err = procs[0].communicate(timeout=90)
        waited = time.monotonic() - t0
    finally:
        for p in procs:
            os.kill(p.pid, signal.SIGCONT) if p.poll() is None else None
            p.kill()
    assert procs[0].returncode == 1, err[-3000:]
    assert waited < 10 + 30 + 15
    assert "dist.timeout=10" in err, err[-3000:]
    # gloo's monitored barrier names rank 1; once in a full-suite run (2 loaded cores) both checks
    # failed without naming a rank, and the error says that, with the check's own message
    assert "rank(s) 1 failed" in err or "a check of every rank failed too (" in err, err[-3000:]
    assert "Traceback" not in err


def test_ddp_regression_with_accumulation_matches_one_process(tmp_path):
    """The task's summed loss divided once per step: regression on 2 ranks x 2 micro-batches of
    8 equals one process with batches of 32, and the test RMSE is evaluated over every example once."""
    args = [*COMMON, *MLP, "--data.name=diabetes"]
    torch.set_num_threads(1)
    single(args, tmp_path / "one")
    run = tmp_path / "ddp"
    ok(launch([*args, "--train.grad_accum=2", "--dist.strategy=ddp", f"--run.dir={run}"], 2))
    wa, wb = weights(run), weights(tmp_path / "one")
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) <= 1e-5
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (run, tmp_path / "one"))
    assert sa["task"] == "regress" and abs(sa["test_rmse"] - sb["test_rmse"]) < 1e-3 * sb["test_rmse"]

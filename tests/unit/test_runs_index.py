"""The runs index (`layerwise runs`, layerwise.runs): status, damaged runs, the SQLite cache's
staleness, corruption, locks and concurrent writers, sorting and filtering, and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import layerwise
from layerwise.config import ConfigError
from layerwise.deploy import index as idx
from layerwise.deploy.index import INDEX_NAME, RunsError, refresh
from layerwise.deploy.listing import list_runs
from layerwise.deploy.status import MARKER, marker_record, marker_state, running_marker

SRC = str(Path(layerwise.__file__).resolve().parents[1])


def make_run(path: Path, status: str = "finished", acc: float = 0.9, dataset: str = "mnist", lr: float = 0.1,
             steps: int = 100, extra: dict | None = None) -> Path:
    """A fake run directory laid out as the Trainer leaves it (config.yaml, env.json, metrics.jsonl,
    checkpoints/, summary.json when finished)."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(f"model:\n  name: convnet\ndata:\n  name: {dataset}\n  task: auto\n"
                                      f"  batch_size: 64\noptim:\n  lr: {lr}\ntrain:\n  epochs: 1\n")
    (path / "env.json").write_text(json.dumps({"started": "2026-12-01T07:00:00+0000"}))
    (path / "metrics.jsonl").write_text("".join(json.dumps({"kind": "train", "step": s, "loss": 1.0}) + "\n"
                                                for s in range(10, steps + 1, 10)))
    if status in ("finished", "resumable"):
        (path / "checkpoints").mkdir()
        data = b"x" * 123
        (path / "checkpoints" / "step_00000050.pt").write_bytes(data)
        (path / "checkpoints" / "step_00000050.json").write_text(json.dumps({"step": 50, "bytes": len(data)}))
    if status == "finished":
        summary = {"test_accuracy": acc, "test_loss": 1 - acc, "headline": "test_accuracy", "task": "classify",
                   "train_seconds": 12.5, "steps": steps, "model": "convnet", "dataset": dataset,
                   "energy_train_j": 1500.0, "energy_train_kwh": 1500.0 / 3.6e6, **(extra or {})}
        (path / "summary.json").write_text(json.dumps(summary))
    return path


def by_name(rows):
    return {r["name"]: r for r in rows}


def test_statuses_from_summary_marker_and_checkpoints(tmp_path):
    make_run(tmp_path / "done")
    make_run(tmp_path / "cut", "resumable")
    make_run(tmp_path / "dead", "crashed")
    half = make_run(tmp_path / "halfckpt", "crashed")  # a .pt whose .json was never written, and a short one
    (half / "checkpoints").mkdir()
    (half / "checkpoints" / "step_00000010.pt").write_bytes(b"x" * 10)
    (half / "checkpoints" / "step_00000020.pt").write_bytes(b"x" * 10)
    (half / "checkpoints" / "step_00000020.json").write_text(json.dumps({"step": 20, "bytes": 99}))
    dcp = make_run(tmp_path / "dcp", "crashed")  # a distributed checkpoint: a folder with .metadata and trainer.json
    (dcp / "checkpoints" / "step_00000030.dcp").mkdir(parents=True)
    (dcp / "checkpoints" / "step_00000030.dcp" / ".metadata").write_bytes(b"m")
    (dcp / "checkpoints" / "step_00000030.dcp" / "trainer.json").write_text("{}")
    (dcp / "checkpoints" / "step_00000040.dcp.tmp").mkdir()  # one cut off mid-write: not complete
    live = make_run(tmp_path / "live", "resumable")
    (live / MARKER).write_text(json.dumps(marker_record("train")))  # this very process
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                           check=True)
    killed = make_run(tmp_path / "killed", "resumable")  # SIGKILLed: its marker names a pid that has exited
    (killed / MARKER).write_text(json.dumps(marker_record("train") | {"pid": int(child.stdout)}))
    reused = make_run(tmp_path / "reused", "crashed")  # our pid, but another process start time
    (reused / MARKER).write_text(json.dumps(marker_record("train") | {"proc_start": 1}))
    far = make_run(tmp_path / "far", "crashed")
    (far / MARKER).write_text(json.dumps(marker_record("rl") | {"host": "another-host.example"}))
    rows = by_name(list_runs(tmp_path))
    status = {n: r["status"] for n, r in rows.items()}
    assert status == {"done": "finished", "cut": "resumable", "dead": "crashed", "halfckpt": "crashed", "dcp": "resumable",
                      "live": "running", "killed": "resumable", "reused": "crashed", "far": "unknown"}
    assert rows["far"]["host"] == "another-host.example"
    assert rows["done"]["metric"] == 0.9 and rows["done"]["headline"] == "test_accuracy"
    assert rows["cut"]["steps"] == 100 and rows["cut"]["metric"] is None  # the last step logged
    # the status of a marked run is decided at each listing: the process ends, the row follows
    (live / MARKER).write_text(json.dumps(marker_record("train") | {"pid": int(child.stdout)}))
    os.utime(live / MARKER, ns=(1, 1))
    assert by_name(list_runs(tmp_path))["live"]["status"] == "resumable"


def test_running_marker_is_written_and_removed_even_on_error(tmp_path):
    with running_marker(tmp_path, "train"):
        m = json.loads((tmp_path / MARKER).read_text())
        assert m["pid"] == os.getpid() and marker_state(m) == "running"
    assert not (tmp_path / MARKER).exists()
    with pytest.raises(KeyError), running_marker(tmp_path, "train"):
        raise KeyError("boom")
    assert not (tmp_path / MARKER).exists()
    with running_marker(tmp_path, "train", enabled=False):  # ranks other than 0
        assert not (tmp_path / MARKER).exists()
    assert marker_state({"pid": "x"}) == "dead" and marker_state(None) == "dead"


def test_a_training_run_is_running_while_it_trains(tmp_path, monkeypatch):
    from layerwise.train.trainer import Trainer

    seen = {}
    finish = Trainer._finish

    def spy(self):
        seen["during"] = by_name(list_runs(tmp_path))  # the listing from inside the loop's end
        return finish(self)

    monkeypatch.setattr(Trainer, "_finish", spy)
    layerwise.fit(None, "--train.max_steps=2", "--train.threads=1", f"--run.dir={tmp_path / 'r'}", "--run.plots=false",
                  "--run.tensorboard=false", "--run.energy=false", show_progress=False)
    assert seen["during"]["r"]["status"] == "running" and seen["during"]["r"]["dataset"] == "digits"
    after = by_name(list_runs(tmp_path))["r"]
    assert after["status"] == "finished" and after["steps"] == 2 and not (tmp_path / "r" / MARKER).exists()


def test_configs_read_line_by_line_equal_pyyaml_and_odd_ones_fall_back(tmp_path):
    import yaml

    from layerwise.config import Config, apply_overrides
    from layerwise.rl.config import RLConfig
    from layerwise.deploy.index import _flat_sections, _read_config

    def flat(text):
        return {f"{s}.{k}": v for s, vals in yaml.safe_load(text).items() if isinstance(vals, dict) for k, v in vals.items()}

    cfg = apply_overrides(Config(), ["--data.classes=[cat, 'dog: 2']", "--run.name=it's #1", "--optim.lr=1e-5"])
    fast = {}
    for c in (cfg, RLConfig()):
        text = yaml.safe_dump(c.to_dict(), sort_keys=False)  # as save_config writes it
        fast[type(c).__name__] = _flat_sections(text)
        assert fast[type(c).__name__] == flat(text) and len(fast[type(c).__name__]) > 50
    got = fast["Config"]
    assert (got["data.classes"], got["run.name"], got["optim.lr"]) == (["cat", "dog: 2"], "it's #1", 1e-5)
    assert got["optim.betas"] == list(Config().optim.betas) and fast["RLConfig"]["env.id"] == "CartPole-v1"
    odd = {"nested": "model:\n  name: x\n  kwargs:\n    depth: 3\n", "comment": "# hand-edited\ndata:\n  name: y\n",
           "mapping": "data:\n  name: {a: 1}\n", "wrapped": "run:\n  name: 'a long\n    name'\n"}
    for kind, text in odd.items():
        assert _flat_sections(text) is None, kind
        (tmp_path / f"{kind}.yaml").write_text(text)
        assert _read_config(str(tmp_path / f"{kind}.yaml")) == flat(text), kind


def test_a_run_that_crashed_mid_write_lists_with_what_is_known(tmp_path):
    run = make_run(tmp_path / "torn", "resumable", steps=70)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "step": 80, "lo')  # cut off mid-line
    (run / "summary.json").write_text('{"test_accuracy": 0.9')  # half written (by hand: the trainer is atomic)
    bare = make_run(tmp_path / "bare", "crashed")
    (bare / "config.yaml").unlink()
    (bare / "summary.json").write_bytes(b"\x00\xff garbage")
    rows = by_name(list_runs(tmp_path))
    assert rows["torn"]["status"] == "resumable" and rows["torn"]["steps"] == 70
    assert rows["torn"]["note"] == "summary.json unreadable" and rows["torn"]["dataset"] == "mnist"
    assert rows["bare"]["status"] == "crashed" and rows["bare"]["model"] is None
    assert rows["bare"]["note"] == "summary.json unreadable; no config.yaml"


def test_the_index_rereads_only_changed_runs_and_forgets_deleted_ones(tmp_path):
    for i in range(6):
        make_run(tmp_path / f"r{i}", acc=i / 10)
    rows, stats = refresh(tmp_path)
    assert stats == {"runs": 6, "read": 6, "index": str(tmp_path / INDEX_NAME)}
    assert refresh(tmp_path)[1]["read"] == 0
    with open(tmp_path / "r2" / "metrics.jsonl", "a") as f:  # a run that goes on logging
        f.write(json.dumps({"kind": "train", "step": 110}) + "\n")
    (tmp_path / "r4" / "summary.json").write_text(json.dumps({"test_accuracy": 0.99, "headline": "test_accuracy"}))
    os.utime(tmp_path / "r4" / "summary.json", ns=(5, 5))
    shutil.rmtree(tmp_path / "r5")
    rows, stats = refresh(tmp_path)
    assert stats["read"] == 2 and sorted(rows) == ["r0", "r1", "r2", "r3", "r4"]
    assert rows["r4"][1]["summary"]["test_accuracy"] == 0.99 and rows["r2"][1]["summary"]["steps"] == 100
    with sqlite3.connect(tmp_path / INDEX_NAME) as con:
        assert sorted(n for (n,) in con.execute("SELECT name FROM runs")) == ["r0", "r1", "r2", "r3", "r4"]


def test_nested_cv_and_sweep_runs_are_listed_with_their_group(tmp_path):
    make_run(tmp_path / "mnist-cv3" / "fold0")
    make_run(tmp_path / "mnist-cv3" / "fold1", acc=0.8)
    (tmp_path / "mnist-cv3" / "cv_summary.json").write_text("{}")
    make_run(tmp_path / "sweep" / "runs" / "n1", dataset="cifar10")
    make_run(tmp_path / "deep" / "a" / "b" / "c" / "e")  # 5 folders down: deeper than max_depth 4
    make_run(tmp_path / ".hidden" / "x")
    rows = by_name(list_runs(tmp_path))
    assert sorted(rows) == ["mnist-cv3/fold0", "mnist-cv3/fold1", "sweep/runs/n1"]
    assert rows["mnist-cv3/fold1"]["group"] == "mnist-cv3" and rows["sweep/runs/n1"]["group"] == "sweep"
    assert [r["name"] for r in list_runs(tmp_path, where="group=mnist-cv3", sort="-metric")] == [
        "mnist-cv3/fold0", "mnist-cv3/fold1"]
    assert len(list_runs(tmp_path, max_depth=5)) == 4
    one = list_runs(tmp_path / "mnist-cv3" / "fold1")  # a root that is a run itself: listed, no index inside
    assert [(r["name"], r["path"]) for r in one] == [("fold1", str(tmp_path / "mnist-cv3" / "fold1"))]
    assert not (tmp_path / "mnist-cv3" / "fold1" / INDEX_NAME).exists()


def test_an_rl_run_lists_its_environment(tmp_path):
    run = tmp_path / "cartpole"
    run.mkdir()
    (run / "config.yaml").write_text("env:\n  id: CartPole-v1\nppo:\n  total_steps: 1000\nmodel:\n  name: mlp\n")
    (run / "summary.json").write_text(json.dumps({"eval_return_mean": 500.0, "headline": "eval_return_mean",
                                                  "task": "rl", "env": "CartPole-v1", "env_steps": 1000,
                                                  "model": "mlp"}))
    (r,) = list_runs(tmp_path)
    assert (r["task"], r["dataset"], r["steps"], r["metric"]) == ("rl", "CartPole-v1", 1000, 500.0)


def test_sort_and_where(tmp_path):
    make_run(tmp_path / "a", acc=0.91, lr=0.1)
    make_run(tmp_path / "b", acc=0.99, lr=0.01, extra={"params": 900})
    make_run(tmp_path / "c", acc=0.95, dataset="cifar10", lr=0.001, extra={"params": 80})
    make_run(tmp_path / "d", "crashed")
    def names(**kw):
        return [r["name"] for r in list_runs(tmp_path, **kw)]

    assert names() == ["a", "b", "c", "d"]
    assert names(sort="-test_accuracy") == ["b", "c", "a", "d"]  # missing last, descending too
    assert names(sort="test_accuracy") == ["a", "c", "b", "d"]
    assert names(sort="params") == ["c", "b", "a", "d"]  # numbers as numbers: 80 < 900
    assert names(sort=["status", "-optim.lr"]) == ["d", "a", "b", "c"]
    assert names(where="dataset=mnist", sort="-test_accuracy") == ["b", "a", "d"]
    assert names(where=["dataset=mnist", "test_accuracy>0.95"]) == ["b"]
    assert names(where="test_accuracy<=0.95") == ["a", "c"]
    assert names(where="optim.lr=1e-3") == ["c"] and names(where="optim.lr>=0.01") == ["a", "b", "d"]
    assert names(where="status!=finished") == ["d"] and names(where="dataset=cif*") == ["c"]
    assert names(where="task=classify", limit=2) == ["a", "b"]
    with pytest.raises(ConfigError, match="'test_acuracy'.*Close matches: test_accuracy"):
        list_runs(tmp_path, sort="-test_acuracy")
    with pytest.raises(ConfigError, match="optim.lrr.*optim.lr"):
        list_runs(tmp_path, where="optim.lrr>1")
    with pytest.raises(ConfigError, match="compares numbers"):
        list_runs(tmp_path, where="test_accuracy>high")
    with pytest.raises(ConfigError, match="is not KEY=VALUE"):
        list_runs(tmp_path, where="dataset")
    with pytest.raises(ConfigError, match="a string or a list of strings"):
        layerwise.runs(tmp_path, sort=3)
    with pytest.raises(ConfigError, match="whole number"):
        layerwise.runs(tmp_path, limit=-1)
    with pytest.raises(RunsError, match="does not exist"):
        list_runs(tmp_path / "nope")


def test_a_corrupt_locked_or_unwritable_index_never_stops_the_listing(tmp_path, monkeypatch):
    for i in range(3):
        make_run(tmp_path / f"r{i}")
    (tmp_path / INDEX_NAME).write_bytes(b"this is not an sqlite file" * 100)
    with pytest.warns(UserWarning, match="unreadable.*rebuilt"):
        assert len(list_runs(tmp_path)) == 3
    assert refresh(tmp_path)[1]["read"] == 0  # rebuilt, and used

    monkeypatch.setattr(idx, "LOCK_TIMEOUT_S", 0.05)
    holder = sqlite3.connect(tmp_path / INDEX_NAME, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process mid-refresh, for longer than the timeout
    with pytest.warns(UserWarning, match="cannot be used.*locked"):
        assert len(list_runs(tmp_path)) == 3
    holder.execute("ROLLBACK")
    holder.close()

    other = tmp_path / "other"
    make_run(other / "r")
    (other / INDEX_NAME).mkdir()  # a path that cannot be opened as a file: an unwritable index
    with pytest.warns(UserWarning, match="cannot be used"):
        assert [r["status"] for r in list_runs(other)] == ["finished"]


def test_a_process_killed_mid_refresh_leaves_a_consistent_index(tmp_path):
    for i in range(3):
        make_run(tmp_path / f"r{i}")
    list_runs(tmp_path)
    code = (f"import sqlite3, os; c = sqlite3.connect({str(tmp_path / INDEX_NAME)!r}, isolation_level=None); "
            f"c.execute('BEGIN IMMEDIATE'); c.execute(\"DELETE FROM runs\"); "
            f"c.execute(\"INSERT INTO runs VALUES ('ghost', 'x', '{{}}')\"); os._exit(9)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 9
    rows, stats = refresh(tmp_path)
    assert sorted(rows) == ["r0", "r1", "r2"] and stats["read"] == 0  # the transaction rolled back


LISTER = """
import os, sys
sys.path.insert(0, sys.argv[2])
from layerwise.deploy.listing import list_runs
names, n = set(), 0
open(os.path.join(sys.argv[3], "ready" + sys.argv[4]), "w").close()
while not os.path.exists(os.path.join(sys.argv[3], "stop")) or n < 5:
    rows = list_runs(sys.argv[1])
    assert all(r["status"] in ("finished", "crashed") for r in rows), rows
    names |= {r["name"] for r in rows}
    n += 1
print(n, len(names))
"""


def test_concurrent_listings_and_a_run_writing_keep_the_index_whole(tmp_path):
    root, flags = tmp_path / "runs", tmp_path / "flags"
    flags.mkdir()
    for i in range(20):
        make_run(root / f"r{i:02d}")
    procs = [subprocess.Popen([sys.executable, "-c", LISTER, str(root), SRC, str(flags), str(k)],
                              stdout=subprocess.PIPE, text=True) for k in range(2)]
    deadline = time.monotonic() + 60
    while not all((flags / f"ready{k}").exists() for k in range(2)) and time.monotonic() < deadline:
        time.sleep(0.02)
    for i in range(20, 40):  # runs appear, grow and vanish while the two listers refresh
        make_run(root / f"r{i:02d}", "crashed")
        with open(root / f"r{i - 20:02d}" / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"kind": "train", "step": 1000 + i}) + "\n")
        if i in (25, 30, 35):
            shutil.rmtree(root / f"r{i - 21:02d}")
        time.sleep(0.03)
    (flags / "stop").touch()
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        listings, seen = map(int, out.split())
        assert listings >= 5 and seen >= 20
    with sqlite3.connect(root / INDEX_NAME) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    # a lister that walked before a run was deleted may put its row back after another removed
    # it: a row of a run not on disk is never listed, and the next refresh takes it out
    rows, _ = refresh(root)
    assert len(rows) == 37 and refresh(root)[1]["read"] == 0
    with sqlite3.connect(root / INDEX_NAME) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchone() == (37,)
    assert len(list_runs(root, where="status=crashed")) == 20
    assert [r["name"] for r in list_runs(root, where="status=finished")] == [
        f"r{i:02d}" for i in range(20) if i not in (4, 9, 14)]


def _cli(*args: str) -> subprocess.CompletedProcess:
    code = ("import sys; from layerwise.cli import main; c = main(sys.argv[1:]); "
            "print('TORCH' if 'torch' in sys.modules else '', file=sys.stderr); sys.exit(c)")
    return subprocess.run([sys.executable, "-c", code, *args], check=False, capture_output=True, text=True,
                          env=os.environ | {"PYTHONPATH": SRC, "COLUMNS": "200"})


def test_cli_table_json_csv_and_errors_without_torch(tmp_path):
    make_run(tmp_path / "a", acc=0.91)
    make_run(tmp_path / "b", acc=0.99)
    make_run(tmp_path / "c", "resumable")
    out = _cli("runs", str(tmp_path), "--sort", "-test_accuracy", "--where", "optim.lr>0")
    assert out.returncode == 0 and "TORCH" not in out.stderr, out.stderr
    lines = out.stdout.splitlines()
    assert [ln.split()[1] for ln in lines if ln.startswith("│")] == ["b", "a", "c"]
    assert "accuracy 0.99" in out.stdout and "1.5 kJ" in out.stdout and "3 runs (2 finished, 1 resumable)" in out.stdout
    js = json.loads(_cli("runs", str(tmp_path), "--json", "--where", "status=finished", "--sort=optim.lr").stdout)
    assert [(r["name"], r["metric"], r["optim.lr"]) for r in js] == [("a", 0.91, 0.1), ("b", 0.99, 0.1)]
    csv_out = _cli("runs", str(tmp_path), "--csv", "--limit", "1").stdout.splitlines()
    assert csv_out[0].startswith("name,status,task,model,dataset,headline,metric,steps") and len(csv_out) == 2
    bad = _cli("runs", str(tmp_path), "--sort=-test_acc")
    assert bad.returncode == 2 and "Close matches: test_accuracy" in bad.stderr and "Traceback" not in bad.stderr
    missing = _cli("runs", str(tmp_path / "nope"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    assert _cli("runs", "--help").returncode == 0


def test_thousands_of_rows_print_as_plain_columns(tmp_path, monkeypatch, capsys):
    from argparse import Namespace

    from layerwise.deploy import listing

    make_run(tmp_path / "a", acc=0.91)
    make_run(tmp_path / "long-name-b", "crashed")
    monkeypatch.setattr(listing, "RICH_ROWS", 1)  # 2 rows count as "many"
    args = Namespace(root=str(tmp_path), sort=["-optim.lr"], where=None, limit=None, max_depth=4, no_index=False,
                     json=False, csv=False)
    assert listing.runs_command(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "status", "task", "model", "dataset", "headline", "metric", "steps", "time",
                                "energy", "kWh", "optim.lr"]
    assert lines[1].split() == ["a", "finished", "classify", "convnet", "mnist", "accuracy", "0.91", "100", "12.5",
                                "s", "1.5", "kJ", "0.000417", "0.1"]
    assert lines[2].split() == ["long-name-b", "crashed", "convnet", "mnist", "100", "0.1"]
    assert lines[1].index("finished") == lines[2].index("crashed") and lines[3] == "2 runs (1 finished, 1 crashed)"

"""Misuse of `layerwise report`, `compare` and `runs` found by trying to break them: each refused
with a one-paragraph error and a non-zero exit, no traceback, and no earlier file harmed."""

from __future__ import annotations

import json
from pathlib import Path

from layerwise.cli import main


def _fake_run(path: Path, summary: dict | None = None, records: list[dict] | None = None) -> Path:
    """A run directory of the files the pages read (no model): an unfinished run unless ``summary``."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text("data:\n  name: digits\n  task: classify\nmodel:\n  name: mlp\n"
                                      "optim:\n  lr: 0.001\n")
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary))
    if records is not None:
        (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_out_onto_a_file_that_is_not_a_page_is_refused_and_the_file_kept(tmp_path, capsys):
    run = _fake_run(tmp_path / "a", {"task": "classify", "headline": "test_accuracy", "test_accuracy": 0.5})
    other = _fake_run(tmp_path / "b")
    summary = (run / "summary.json").read_text()
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    for argv in (["report", str(run), "--out", str(run / "summary.json")],
                 ["report", str(run), "--out", str(notes)],
                 ["compare", str(run), str(other), "--out", str(notes)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "not a layerwise page" in err and "Traceback" not in err
    assert (run / "summary.json").read_text() == summary and notes.read_text() == "mine"
    # a page of ours is replaced, again and again
    page = tmp_path / "page.html"
    assert main(["report", str(run), "--out", str(page)]) == 0
    assert main(["report", str(run), "--out", str(page)]) == 0
    assert main(["compare", str(run), str(other), "--out", str(page)]) == 0
    assert "compared" in page.read_text()


def test_runs_sort_puts_nan_metrics_last_and_orders_the_rest(tmp_path):
    from layerwise.deploy.listing import list_runs

    values = [0.5, float("nan"), 0.9, 0.1, float("nan"), 0.7]
    for i, v in enumerate(values):
        _fake_run(tmp_path / f"r{i}", {"task": "classify", "headline": "test_accuracy", "test_accuracy": v})
    _fake_run(tmp_path / "unfinished")
    for sort, order in (("-test_accuracy", ["r2", "r5", "r0", "r3"]), ("test_accuracy", ["r3", "r0", "r5", "r2"])):
        names = [r["name"] for r in list_runs(tmp_path, sort=sort, use_index=False)]
        assert names == order + ["r1", "r4", "unfinished"], (sort, names)


def test_a_curve_of_one_point_is_drawn_with_a_marker(tmp_path, monkeypatch):
    """A run shorter than log_every_steps logs one training record: a line through one point is
    invisible, in the run's plots, the report's curves and the comparison alike."""
    from matplotlib.axes import Axes

    from layerwise.deploy.compare import build_compare
    from layerwise.deploy.report import build_report
    from layerwise.train.metrics import plot_metrics

    drawn = []
    plot = Axes.plot

    def spy(self, *args, **kwargs):
        lines = plot(self, *args, **kwargs)
        drawn.extend((len(line.get_xdata()), line.get_marker()) for line in lines)
        return lines

    monkeypatch.setattr(Axes, "plot", spy)
    records = [{"step": 20, "kind": "train", "loss": 2.3, "lr": 1e-3},
               {"step": 20, "kind": "test", "loss": 2.2, "accuracy": 0.3}]
    summary = {"task": "classify", "headline": "test_accuracy", "test_accuracy": 0.3}
    a = _fake_run(tmp_path / "a", summary, records)
    b = _fake_run(tmp_path / "b", summary, records)
    plot_metrics(records, tmp_path / "plots")
    build_report(a)
    build_compare([a, b])
    singles = [marker for n, marker in drawn if n == 1]
    assert singles and all(marker not in ("None", "", " ", None) for marker in singles), drawn


def test_a_killed_process_not_yet_reaped_is_not_running(tmp_path):
    """kill -9 leaves a zombie until its parent waits for it (a launcher, a notebook): its pid still
    answers kill(pid, 0), but the run is no longer running."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from layerwise.deploy.status import _boot_id, _process_start, marker_state

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        marker = {"host": __import__("socket").gethostname(), "pid": child.pid, "boot_id": _boot_id(),
                  "proc_start": _process_start(child.pid)}
        assert marker_state(marker) == "running"
        os.kill(child.pid, signal.SIGKILL)
        for _ in range(100):  # until the kernel has made it a zombie (not reaped: no wait yet)
            if Path(f"/proc/{child.pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                break
            time.sleep(0.02)
        assert marker_state(marker) == "dead"
    finally:
        child.kill()
        child.wait()


def test_an_unfinished_run_of_task_auto_is_compared_as_the_task_its_metrics_show(tmp_path):
    """data.task=auto (the default) and no summary.json yet (running, killed): the task is what the
    records log, so a running classifier's curves overlay a finished classifier's."""
    from layerwise.deploy.compare import build_compare, load_runs
    from layerwise.deploy.report import build_report

    recs = [{"step": s, "kind": k, "loss": 1.0 / s, "accuracy": 0.1 * s} for s in (1, 2) for k in ("train", "test")]
    done = _fake_run(tmp_path / "done", {"task": "classify", "headline": "test_accuracy", "test_accuracy": 0.2}, recs)
    live = _fake_run(tmp_path / "live", None, recs)
    (live / "config.yaml").write_text((live / "config.yaml").read_text().replace("task: classify", "task: auto"))
    assert [r["task"] for r in load_runs([done, live])] == ["classify", "classify"]
    page = build_compare([done, live])
    assert "different tasks" not in page
    assert "classify" in build_report(live).split("</header>")[0]


def test_runs_reached_twice_through_links_are_listed_once(tmp_path):
    from layerwise.deploy.listing import list_runs

    root = tmp_path / "root"
    _fake_run(root / "a" / "b" / "r", {"task": "classify", "headline": "test_accuracy", "test_accuracy": 0.5})
    (root / "alias").symlink_to(root / "a" / "b" / "r")  # a link to a run under the root
    (root / "a" / "up").symlink_to(root)  # a link back up: a loop
    outside = _fake_run(tmp_path / "elsewhere", {"task": "classify"})
    (root / "ext").symlink_to(outside)  # a link to a run outside the root: listed (once)
    names = [r["name"] for r in list_runs(root, max_depth=8, use_index=False)]
    assert names == ["a/b/r", "ext"], names


def test_runs_lists_the_task_of_an_unfinished_run_of_task_auto(tmp_path):
    from layerwise.deploy.listing import list_runs

    live = _fake_run(tmp_path / "live", None, [{"step": 5, "kind": "train", "loss": 1.0, "accuracy": 0.3}])
    (live / "config.yaml").write_text((live / "config.yaml").read_text().replace("task: classify", "task: auto"))
    assert [r["task"] for r in list_runs(tmp_path)] == ["classify"]


def test_damaged_confusion_csv_and_metrics_records_still_give_a_report(tmp_path, capsys):
    """A truncated or emptied confusion.csv and records with null steps or text values: the page
    is written, the damaged part replaced by a note naming the file; no traceback."""
    recs = [{"step": s, "kind": "train", "loss": 1.0 / s, "accuracy": 0.1} for s in (1, 2)]
    run = _fake_run(tmp_path / "a", {"task": "classify", "headline": "test_accuracy", "test_accuracy": 0.5}, recs)
    (run / "model.safetensors").write_bytes(b"")  # the task section is entered; the model is not needed to fail
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": null, "kind": "test", "loss": 1}\n{"step": 3, "kind": "test", "loss": "x", "accuracy": [1]}\n')
    for damaged in ("true \\ predicted,0,1\n0,5,", ""):
        (run / "confusion.csv").write_text(damaged)
        assert main(["report", str(run)]) == 0, capsys.readouterr().err
        text = (run / "report.html").read_text()
        assert "the confusion matrix not shown" in text and "confusion.csv&#x27; is damaged" in text


def test_runs_json_is_strict_json_when_a_metric_is_nan(tmp_path, capsys):
    _fake_run(tmp_path / "diverged", {"task": "classify", "headline": "test_loss", "test_loss": float("nan"),
                                      "test_accuracy": float("inf")})

    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    assert main(["runs", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert rows[0]["test_loss"] is None and rows[0]["metric"] is None and rows[0]["test_accuracy"] is None


def test_a_molecules_regression_report_has_its_residuals_with_the_runs_rmse(tmp_path):
    """Molecular graphs are not a tensor of examples: the residuals are computed on graph batches,
    over the whole (small) test split, and give the RMSE of summary.json."""
    import re

    import pytest

    pytest.importorskip("rdkit")
    from layerwise.config import load_config
    from layerwise.deploy.report import build_report
    from layerwise.train.trainer import fit

    smiles = ["CCO", "c1ccccc1O", "CC(=O)Oc1ccccc1C(=O)O", "C", "CCN(CC)CC", "c1ccc2ccccc2c1", "OCC(O)CO",
              "Clc1ccc(Cl)cc1", "CCCCCCCC", "c1ccncc1", "CC(C)O", "O=C1CCCCC1", "CCOC(=O)C", "c1ccc(cc1)C(=O)N",
              "CCCCl", "C1CCCCC1", "CC#N", "Oc1ccc(cc1)C", "CCOCC", "NC(=O)N"]
    (tmp_path / "m.csv").write_text("name,smiles,logS\n" + "".join(
        f"m{i},{s},{-0.1 * len(s) + 0.05 * i:.3f}\n" for i, s in enumerate(smiles)))
    s = fit(load_config(None, [f"--run.dir={tmp_path / 'run'}", "--run.plots=false", "--run.tensorboard=false",
                               "--run.report=false", "--train.threads=1", "--data.name=molecules",
                               f"--data.path={tmp_path / 'm.csv'}", "--data.batch_size=4", "--model.name=mpnn",
                               "--model.hidden=8", "--train.max_steps=2", "--train.eval_every=0",
                               "--data.descriptors=false", "--run.energy=false"]), show_progress=False)
    text = build_report(tmp_path / "run")
    m = re.search(r"(\d+) test examples \(logS: RMSE ([\d.e-]+)\)", text)
    assert m, re.findall(r'class="warn">[^<]*', text)
    assert float(m[2]) == pytest.approx(s["test_rmse"], rel=1e-3)


def test_the_python_api_refuses_a_single_path_or_none_clearly(tmp_path):
    import pytest

    import layerwise
    from layerwise.config import ConfigError
    from layerwise.deploy.index import RunsError
    from layerwise.train.run import RunDirError

    run = _fake_run(tmp_path / "a")
    with pytest.raises(ConfigError, match="list of run directories"):
        layerwise.compare(str(run))  # a string is not a list of one-letter runs
    with pytest.raises(ConfigError, match="list of run directories"):
        layerwise.compare(run)
    with pytest.raises(RunDirError, match="got None"):
        layerwise.report(None)
    with pytest.raises(RunsError, match="got None"):
        layerwise.runs(None)


def test_an_unfinished_runs_page_says_whether_it_runs_can_resume_or_must_train_again(tmp_path):
    import os

    from layerwise.deploy.compare import build_compare
    from layerwise.deploy.report import build_report
    from layerwise.deploy.status import marker_record

    crashed = _fake_run(tmp_path / "crashed")
    text = build_report(crashed)
    assert "cannot be resumed" in text and "--resume" not in text
    live = _fake_run(tmp_path / "live")
    (live / "running.json").write_text(json.dumps(marker_record("train")))  # this process: alive
    text = build_report(live)
    assert f"still running (pid {os.getpid()})" in text and "--resume" not in text
    page = build_compare([crashed, live])
    assert "<td>crashed</td>" in page and "<td>running</td>" in page


def test_runs_where_equal_nan_finds_the_diverged_runs(tmp_path):
    from layerwise.deploy.listing import list_runs

    for name, v in (("ok", 0.5), ("diverged", float("nan"))):
        _fake_run(tmp_path / name, {"task": "classify", "headline": "test_loss", "test_loss": v})
    assert [r["name"] for r in list_runs(tmp_path, where="test_loss=nan", use_index=False)] == ["diverged"]
    assert [r["name"] for r in list_runs(tmp_path, where="test_loss!=nan", use_index=False)] == ["ok"]


def test_compare_gives_each_of_many_runs_its_own_colour(tmp_path):
    import re

    from layerwise.deploy.compare import build_compare

    recs = [{"step": s, "kind": "train", "loss": 1.0 / s} for s in (1, 2)]
    runs = [_fake_run(tmp_path / f"r{i:02d}", {"task": "classify"}, recs) for i in range(12)]
    colours = re.findall(r'<span style="color:(#[0-9a-f]{6});', build_compare(runs))
    assert len(colours) == 12 and len(set(colours)) == 12


def test_the_report_shows_the_newest_explain_folders_by_time_not_by_name(tmp_path):
    import os

    from layerwise.deploy.report import build_report

    run = _fake_run(tmp_path / "a")
    for t, name in enumerate(["saliency-001", "saliency-002", "ig-001", "ig-002"]):  # written in this order
        (run / "explain" / name).mkdir(parents=True)
        (run / "explain" / name / "summary.json").write_text(json.dumps({"method": name.split("-")[0], "results": []}))
        os.utime(run / "explain" / name / "summary.json", (1e9 + t, 1e9 + t))
    text = build_report(run)
    shown = [n for n in ("saliency-001", "saliency-002", "ig-001", "ig-002") if f"explain/{n}:" in text]
    assert shown == ["saliency-002", "ig-001", "ig-002"], shown


def test_a_summary_with_a_headline_or_task_of_the_wrong_type_is_listed_reported_and_compared(tmp_path, capsys):
    a = _fake_run(tmp_path / "a", {"headline": 5, "task": ["x"], "steps": "abc"})
    b = _fake_run(tmp_path / "b", {"headline": ["test_x"], "task": {"k": 1}, "test_x": {"a": 1}})
    for argv in (["runs", str(tmp_path)], ["runs", str(tmp_path), "--sort=steps"], ["report", str(a)],
                 ["report", str(b)], ["compare", str(a), str(b), "--out", str(tmp_path / "c.html")]):
        assert main(argv) == 0, argv
    assert "Traceback" not in capsys.readouterr().err

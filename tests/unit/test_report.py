"""The run report (deploy/report.py) and the run comparison (deploy/compare.py): self-contained pages
whose numbers are the run's (confusion.csv, the lowest true-class probabilities, the residuals'
RMSE), escaped, written at the end of a run unless run.report=false, refused clearly for paths
that are not runs. Tiny runs on built-in or synthetic data, one per task kind, shared per module."""

from __future__ import annotations

import csv
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from layerwise.cli import main
from layerwise.config import ConfigError, load_config
from layerwise.train.run import RunDirError
from layerwise.train.trainer import fit

Q = ["--run.plots=false", "--run.tensorboard=false", "--train.threads=1"]
EVIL = ["<script>alert(1)</script>", '"><img src=x onerror=alert(2)>']


def _train(root: Path, name: str, *args: str) -> Path:
    s = fit(load_config(None, [f"--run.dir={root / name}", *Q, *args]), show_progress=False)
    return Path(s["run_dir"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """digits (images), breast-cancer (a table), diabetes (regression), two classes of sentences,
    a character language model, and a table whose class names are HTML."""
    root = tmp_path_factory.mktemp("report")
    out = {"digits": _train(root, "digits", "--model.name=mlp", "--model.width=32", "--train.max_steps=40"),
           "table": _train(root, "table", "--data.name=breast-cancer", "--model.name=mlp", "--model.width=16",
                           "--train.max_steps=20"),
           "regress": _train(root, "regress", "--data.name=diabetes", "--model.name=mlp", "--model.width=16",
                             "--train.max_steps=30")}
    rng = np.random.default_rng(0)
    (root / "mr").mkdir()
    for label, words in (("pos", ["great", "superb"]), ("neg", ["awful", "dull"])):
        lines = [" ".join(rng.choice(["the", "film", "was", "a"], 4).tolist() + [rng.choice(words)]) for _ in range(60)]
        (root / "mr" / f"reviews.{label}").write_text("\n".join(lines) + "\n")
    out["text"] = _train(root, "text", "--data.name=text-classes", f"--data.path={root / 'mr'}",
                         "--data.tokenizer=word", "--data.block_size=16", "--model.name=ngram-bag", "--train.max_steps=10",
                         "--data.batch_size=16")
    (root / "t.txt").write_text("".join(chr(97 + (i * 7 + i // 13) % 26) for i in range(1500)))
    out["lm"] = _train(root, "lm", "--data.name=text", f"--data.path={root / 't.txt'}", "--data.tokenizer=char",
                       "--data.block_size=16", "--model.name=gpt", "--model.n_layer=1", "--model.n_head=2",
                       "--model.n_embd=16", "--data.batch_size=16", "--train.max_steps=20", "--train.eval_every_steps=10")
    x = rng.normal(size=(120, 3))
    quoted = ['"' + e.replace('"', '""') + '"' for e in EVIL]  # CSV quoting: the names hold quotes
    rows = [f"{a:.3f},{b:.3f},{c:.3f},{quoted[int(a > 0)]}" for a, b, c in x]
    (root / "evil.csv").write_text("f1,f2,f3,label\n" + "\n".join(rows) + "\n")
    out["evil"] = _train(root, "evil", "--data.name=csv", f"--data.path={root / 'evil.csv'}", "--data.task=classify",
                         "--model.name=mlp", "--model.width=8", "--train.max_steps=5", f"--run.name={EVIL[0]}")
    return out


class _Refs(HTMLParser):
    """Every URL-bearing attribute and tag of a page, and its inline style text."""

    def __init__(self):
        super().__init__()
        self.urls, self.tags, self.styles = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href", "srcset", "action", "poster", "data") and v is not None:
                self.urls.append(v)
            if k == "style":
                self.styles.append(v or "")
            if k.startswith("on"):
                self.urls.append(f"handler:{k}")

    def handle_data(self, data):
        if self.tags and self.tags[-1] == "style":
            self.styles.append(data)


def assert_self_contained(text: str) -> _Refs:
    p = _Refs()
    p.feed(text)
    assert not {"script", "link", "iframe", "object", "embed", "base"} & set(p.tags)
    bad = [u for u in p.urls if not u.startswith(("data:", "#"))]
    assert not bad, bad[:3]
    assert not [s for s in p.styles if re.search(r"url\(|@import", s)]
    assert not re.search(r"&lt;(/p|table|div|h3|section|pre|img src=\"data)", text)  # no markup of ours escaped twice
    return p


def _report(run: Path, *args: str) -> str:
    assert main(["report", str(run), *args]) == 0
    return (run / "report.html").read_text(encoding="utf-8")


def test_the_end_of_run_report_is_self_contained_and_holds_the_confusion_matrix(runs):
    text = (runs["digits"] / "report.html").read_text(encoding="utf-8")  # written by the run itself
    refs = assert_self_contained(text)
    assert len(text) < 100_000 and refs.tags.count("img") == 12  # 12 thumbnails; plots off: no figure drawn
    for anchor in ("summary", "curves", "task", "energy", "config", "environment"):
        assert f'<section id="{anchor}">' in text
    assert "No curves drawn (run.plots=false)" in text
    summary = json.loads((runs["digits"] / "summary.json").read_text())
    assert f"test_accuracy = {summary['test_accuracy']:.4f}".rstrip("0") in text
    # the confusion matrix cell for cell as confusion.csv holds it
    with open(runs["digits"] / "confusion.csv") as f:
        expected = [[int(v) for v in row[1:]] for row in list(csv.reader(f))[1:]]
    table = text.split('<table class="cm">', 1)[1].split("</table>", 1)[0]
    got = [[int(c) for c in re.findall(r"<td class=\"num\"[^>]*>([\d,]+)</td>", row)][:10]  # then recall
           for row in table.split("<tr>")[2:]]
    assert got == expected and sum(map(sum, got)) == 360


def test_the_worst_examples_are_the_lowest_true_class_probabilities(runs):
    from layerwise.insight.runs import open_run

    text = (runs["digits"] / "report.html").read_text(encoding="utf-8")
    shown = [(int(a), float(b)) for a, b in re.findall(r'data-position="(\d+)" data-p-true="([^"]+)"', text)]
    run = open_run(runs["digits"], "cpu")
    x, y = run.examples("test", n=1000)
    with torch.no_grad():
        p = run.pixel_model()(x).softmax(-1)[torch.arange(len(y)), y.long()]
    order = torch.argsort(p, stable=True)[:12]
    assert [pos for pos, _ in shown] == order.tolist()  # the whole split (360) is read: position = row
    assert [q for _, q in shown] == pytest.approx(p[order].tolist(), rel=1e-5)
    assert max(q for _, q in shown) <= float(p.sort().values[12])


def test_on_demand_report_draws_curves_and_the_sections_of_each_task(runs):
    text = _report(runs["digits"])
    assert_self_contained(text)
    assert 'alt="training and test curves"' in text and "No curves drawn" not in text
    table = _report(runs["table"])  # table rows: the worst examples as feature values
    assert "mean radius = " in table and table.count('class="ex"') == 12
    words = _report(runs["text"])  # sentences: decoded text
    assert re.search(r"<q>[a-z ]*(great|superb|awful|dull)[a-z ]*</q>", words)


def test_regression_report_plots_residuals_with_the_runs_rmse(runs):
    text = _report(runs["regress"])
    summary = json.loads((runs["regress"] / "summary.json").read_text())
    m = re.search(r"(\d+) test examples \(target: RMSE ([\d.]+)\)", text)
    from layerwise.insight.runs import open_run

    assert m and int(m[1]) == len(open_run(runs["regress"], "cpu").dataset.y_test)  # the whole test split
    assert float(m[2]) == pytest.approx(summary["test_rmse"], rel=1e-3)  # the whole test split: the same RMSE
    assert 'alt="predicted against true values, and residuals"' in text


def test_language_model_report_has_a_sample_and_the_perplexity(runs):
    end = (runs["lm"] / "report.html").read_text(encoding="utf-8")
    assert '<section id="task"><h2>Language model: a sample</h2>' in end and "<pre>" in end
    records = [json.loads(line) for line in (runs["lm"] / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if r["kind"] == "test"][-1]
    assert "<th>perplexity</th>" in end and f"{last['perplexity']:.4f}".rstrip("0") in end


def test_class_names_and_config_values_are_escaped(runs):
    text = _report(runs["evil"])
    assert_self_contained(text)
    assert "<script>alert" not in text.lower() and "<img src=x" not in text
    assert "name: &lt;script&gt;alert(1)&lt;/script&gt;\n" in text  # config.yaml's run.name
    assert "&lt;script&gt;alert(1)&lt;/script&gt;</b>" in text and "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in text
    from layerwise.deploy.html import Markup, esc

    assert esc("<a href='x'>") == "&lt;a href=&#x27;x&#x27;&gt;" and Markup("<b>") + "<i>" == "<b>&lt;i&gt;"


def test_an_unfinished_run_gets_a_report_of_what_exists(runs, tmp_path):
    run = tmp_path / "cut"
    shutil.copytree(runs["digits"], run)
    for name in ("summary.json", "model.safetensors", "confusion.csv", "report.html"):
        (run / name).unlink()
    text = _report(run)
    assert_self_contained(text)
    assert "layerwise run cut (unfinished)" in text and "Unfinished run: no summary.json" in text
    assert 'alt="training and test curves"' in text and '<section id="task">' not in text


def test_run_report_false_writes_none_and_a_failing_report_only_warns(tmp_path, monkeypatch):
    run = _train(tmp_path, "off", "--model.name=mlp", "--model.width=8", "--train.max_steps=2", "--run.report=false")
    assert (run / "summary.json").is_file() and not (run / "report.html").exists()
    from layerwise.deploy import report

    def broken(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(report, "build_report", broken)
    with pytest.warns(UserWarning, match=r"its report could not be written \(RuntimeError: disk on fire\); write it "
                                         r"with `layerwise report .*on`"):
        s = fit(load_config(None, [f"--run.dir={tmp_path / 'on'}", *Q, "--model.name=mlp", "--model.width=8",
                                   "--train.max_steps=2"]), show_progress=False)
    assert (tmp_path / "on" / "model.safetensors").is_file() and s["steps"] == 2


def test_bad_run_dirs_are_refused_with_the_fix(runs, tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 1
    assert "does not exist; give a run directory" in capsys.readouterr().err
    assert main(["report", str(runs["digits"].parent)]) == 1
    assert "is a folder of runs, not a run; give one of them" in capsys.readouterr().err
    assert main(["report", str(runs["digits"] / "summary.json")]) == 1
    assert f"give its folder '{runs['digits']}'" in capsys.readouterr().err
    assert main(["report", str(runs["digits"]), "--max-examples", "0"]) == 2
    assert main(["compare", str(runs["digits"])]) == 2
    assert "needs at least two run directories, got 1" in capsys.readouterr().err
    assert main(["compare", str(runs["digits"]), str(runs["digits"])]) == 2
    assert "is the same run as" in capsys.readouterr().err
    assert main(["compare", str(runs["digits"]), str(tmp_path)]) == 1
    assert "is not a layerwise run directory (no config.yaml)" in capsys.readouterr().err
    with pytest.raises(RunDirError, match="does not exist"):
        import layerwise
        layerwise.report(tmp_path / "nope")
    with pytest.raises(ConfigError, match="at least two"):
        layerwise.compare([runs["digits"]])


def test_compare_overlays_curves_diffs_configs_and_tabulates_headlines(runs, tmp_path):
    out = tmp_path / "cmp.html"
    assert main(["compare", str(runs["digits"]), str(runs["table"]), str(runs["regress"]), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert_self_contained(text)
    from layerwise.deploy.compare import config_diff, load_runs

    loaded = load_runs([runs["digits"], runs["table"], runs["regress"]])
    diff = dict(config_diff(loaded))
    assert diff["data.name"] == ["digits", "breast-cancer", "diabetes"] and diff["train.max_steps"] == [40, 20, 30]
    assert "model.name" not in diff and "run.dir" not in diff  # the same (mlp), or always different
    assert f"Config differences ({len(diff)} keys)" in text
    for run in runs["digits"], runs["table"], runs["regress"]:
        s = json.loads((run / "summary.json").read_text())
        h = s[s["headline"]]
        assert f">{h:.4f}".rstrip("0") in text
    assert "different tasks (classify, regress)" in text and 'alt="curves of the runs overlaid"' in text


def test_rl_multilabel_and_field_runs_get_reports_of_their_kind(tmp_path):
    pytest.importorskip("gymnasium")
    from layerwise.rl.config import RLConfig
    from layerwise.rl.trainer import train_rl

    s = train_rl(load_config(None, ["--ppo.total_steps=512", *Q[:2], "--eval.episodes=2", "--eval.random_baseline=false"],
                             cls=RLConfig), tmp_path / "rl", show_progress=False)
    text = (tmp_path / "rl" / "report.html").read_text(encoding="utf-8")
    assert_self_contained(text)
    assert f"eval_return_mean = {s['eval_return_mean']:.4f}".rstrip("0").rstrip(".") in text
    assert '<section id="energy">' in text and '<section id="task">' not in text and "ppo:" in text
    assert 'alt="training and test curves"' in _report(tmp_path / "rl")  # on demand: drawn, episodic return too

    rng = np.random.default_rng(0)
    rows = [",".join(f"{v:.3f}" for v in r) + "," + "|".join(n for n, on in (("warm", r[0] > 0), ("big", r[1] > 0)) if on)
            for r in rng.normal(size=(120, 3))]
    (tmp_path / "m.csv").write_text("a,b,c,tags\n" + "\n".join(rows) + "\n")
    run = _train(tmp_path, "ml", "--data.name=csv", f"--data.path={tmp_path / 'm.csv'}", "--data.label_sep=|",
                 "--data.on_error=skip", "--model.name=mlp", "--model.width=8", "--train.max_steps=5")
    text = (run / "report.html").read_text(encoding="utf-8")
    assert "<td>test_micro_f1</td>" in text and '<section id="task">' not in text  # the generic sections

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "burgers.yaml"
    s = fit(load_config(recipe, [f"--run.dir={tmp_path / 'burgers'}", *Q, "--data.num_train=40", "--data.num_test=8",
                                 "--data.grid=256", "--data.resolution=64", "--data.batch_size=8", "--train.max_steps=3",
                                 "--train.eval_every=0"]), show_progress=False)
    text = _report(tmp_path / "burgers")
    m = re.search(r"8 test examples \(u \(all grid points\): RMSE ([\d.e-]+)\)", text)
    assert m and float(m[1]) == pytest.approx(s["test_rmse"], rel=1e-3)  # every point of the 8 fields


def test_an_audio_run_shows_its_worst_examples_as_spectrograms_low_bands_at_the_bottom(tmp_path):
    import base64
    import io
    import wave

    from PIL import Image

    for label, hz in (("high", 1500), ("low", 300)):
        (tmp_path / "tones" / label).mkdir(parents=True)
        for i in range(10):
            t = np.arange(8000 * 0.5) / 8000
            pcm = (0.5 * np.sin(2 * np.pi * hz * (1 + 0.02 * i) * t) * 32767).astype("<i2")
            with wave.open(str(tmp_path / "tones" / label / f"{i}.wav"), "wb") as w:
                w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000), w.writeframes(pcm.tobytes())
    run = _train(tmp_path, "audio", "--data.name=wav-folder", f"--data.path={tmp_path / 'tones'}",
                 "--data.val_fraction=0.2", "--model.name=mlp", "--model.width=8", "--train.max_steps=3")
    text = (run / "report.html").read_text(encoding="utf-8")
    found = re.findall(r'<div class="ex"[^>]*><img src="data:image/png;base64,([^"]+)"[^>]*>.*?true <b>(\w+)</b>', text)
    assert len(found) == 4  # the whole test split: 2 of each class
    for data, label in found:
        im = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("L"), dtype=float)
        assert im.shape == (40, 101)  # (mel bands, frames)
        peak = int(im.mean(1).argmax())  # the brightest band, counted from the top of the picture
        assert (peak > 28) if label == "low" else (peak < 28)  # 300 Hz near the bottom, 1500 Hz above it


def test_help_of_report_and_compare_does_not_import_torch():
    import subprocess
    import sys

    code = ("import contextlib, io, sys\nfrom layerwise.cli import main\nfor cmd in ('report', 'compare'):\n"
            "    with contextlib.redirect_stdout(io.StringIO()) as out:\n        try:\n            main([cmd, '--help'])\n"
            "        except SystemExit:\n            pass\n    assert 'RUN_DIR' in out.getvalue() or 'run_dir' in out.getvalue()\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

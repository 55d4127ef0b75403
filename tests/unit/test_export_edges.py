"""`layerwise export` edge cases found by trying it as a user: what the metadata must carry for a
plain onnxruntime script to give `layerwise predict`'s answers, and inputs the exporter mishandled."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from layerwise.data.datasets import DatasetInfo
from layerwise.data.tokenizers import WordTokenizer, tokenizer_from_dict
from layerwise.models import create_model
from layerwise.deploy.export import export_metadata, export_run, input_spec, run_onnx
from layerwise.train.run import save_model

REGRESS = {"name": "regress", "columns": ["y"], "mean": [12.0], "std": [0.5], "loss": "mse", "transform": "log",
           "clip": True, "range": [[15000.0], [500001.0]]}
ECFP = {"featurize": "ecfp", "smiles_column": "smiles", "descriptors": [], "descriptor_mean": [],
        "descriptor_std": [], "ecfp": [2, 16]}


def _save(run: Path, model: torch.nn.Module, info: DatasetInfo, task: dict) -> Path:
    run.mkdir(parents=True)
    save_model(run / "model.safetensors", model, {"model": model.config, "task": task, "data": info.to_dict()})
    return run


def _props(model, info, task) -> dict:
    meta = {"model": model.config, "task": task, "data": info.to_dict()}
    return {k: json.loads(v) for k, v in export_metadata(meta, info, input_spec(model, meta, info), "0" * 64).items()}


def test_a_clipped_regression_says_its_range_in_postprocessing():
    """task.clip_predictions: predict clamps to the training targets' range, so the file must say so."""
    info = DatasetInfo("csv", (3,), 1, ["y"], 1.0, [0.0] * 3, [1.0] * 3, task="regress", extra={})
    post = _props(create_model("mlp", in_shape=(3,), num_classes=1, width=4), info, REGRESS)["postprocessing"]
    assert post["low"] == [15000.0] and post["high"] == [500001.0] and "clip(" in post["formula"]
    unclipped = _props(create_model("mlp", in_shape=(3,), num_classes=1, width=4), info,
                       REGRESS | {"clip": False})["postprocessing"]
    assert "low" not in unclipped and "clip" not in unclipped["formula"]


def test_a_word_tokenizer_is_spelled_out_so_a_plain_script_gets_the_same_ids():
    tok = WordTokenizer(["the", "film", "it's", ",", "."])
    info = DatasetInfo("text-classes", (8,), 2, ["neg", "pos"], 1.0, [], [], extra={
        "tokenizer": tok.to_dict(), "text": {"max_length": 8, "pad_id": 0, "id_offset": 1, "vocab_size": 6}})
    model = create_model("text-transformer", in_shape=(8,), num_classes=2, n_layer=1, n_head=2, n_embd=8,
                         vocab_size=7)
    pre = _props(model, info, {"name": "classify"})["preprocessing"]
    rule, words = pre["tokenize"], pre["tokenizer"]["words"]
    text = "The FILM, it's Unknown."
    ids = [words.index(w) + 1 if w in words else rule["unknown_id"] for w in re.findall(rule["pattern"], text.lower())]
    assert ids == tokenizer_from_dict(pre["tokenizer"]).encode(text)
    for kind in ({"kind": "char", "chars": "ab"}, {"kind": "byte"}):
        info.extra["tokenizer"] = kind
        assert "formula" in _props(model, info, {"name": "classify"})["preprocessing"]["tokenize"]


def test_an_mlp_on_ecfp_fingerprints_exports_as_a_float_vector(tmp_path):
    """featurize=ecfp gives a plain vector: only a graph batch (featurize=graph, an mpnn) takes six arrays."""
    info = DatasetInfo("molecules", (16,), 1, ["logS"], 1.0, [0.0] * 16, [1.0] * 16, task="regress",
                       extra={"molecules": ECFP, "targets": ["logS"]})
    torch.manual_seed(0)
    model = create_model("mlp", in_shape=(16,), num_classes=1, width=4).eval()
    run = _save(tmp_path / "ecfp", model, info, REGRESS | {"columns": ["logS"], "clip": False})
    result = export_run(run)
    props = {k: json.loads(v) for k, v in result.metadata.items()}
    assert props["inputs"] == [{"name": "input", "dtype": "float32", "shape": ["batch", 16]}]
    assert props["preprocessing"]["molecules"]["ecfp"] == [2, 16]
    x = torch.randint(0, 2, (3, 16)).float()
    with torch.no_grad():
        np.testing.assert_allclose(run_onnx(result.path, (x,))[0], model(x).numpy(), rtol=1e-3, atol=1e-5)


def test_audio_features_are_spelled_out_so_numpy_alone_computes_them():
    """The file's audio block names every step of the log-mel; this follows it with numpy only."""
    from layerwise.data.audio import log_mel

    a = {"sample_rate": 8000, "clip_seconds": 0.1, "n_mels": 8, "n_fft": 256, "hop": 80, "channel": "mean"}
    info = DatasetInfo("fsdd", (1, 8, 11), 3, ["0", "1", "2"], 1.0, [-3.0], [2.0], extra={"audio": a})
    model = create_model("mlp", in_shape=(1, 8, 11), num_classes=3, width=4)
    pre = _props(model, info, {"name": "classify"})["preprocessing"]
    f, a = pre["features"], pre["audio"]
    assert {"samples", "resample", "length", "stft", "mel", "formula"} <= set(f)
    sr, nfft, hop, M = a["sample_rate"], a["n_fft"], a["hop"], a["n_mels"]
    x = np.random.default_rng(0).uniform(-1, 1, round(a["clip_seconds"] * sr))
    xp, T = np.pad(x, nfft // 2, mode="reflect"), 1 + len(x) // hop
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(nfft) / nfft)
    power = np.abs(np.fft.rfft(np.stack([xp[t * hop:t * hop + nfft] * win for t in range(T)]), axis=1)) ** 2
    edges = 700 * (10 ** (np.linspace(0, 2595 * np.log10(1 + sr / 2 / 700), M + 2) / 2595) - 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    freqs = np.linspace(0, sr / 2, nfft // 2 + 1)
    fb = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, None)
    raw = np.log(fb @ power.T + f["log_epsilon"])
    want = log_mel(torch.tensor(x, dtype=torch.float64)[None], sr, M)[0].numpy()
    np.testing.assert_allclose(raw, want, rtol=1e-6, atol=1e-6)


def test_a_gaussian_policy_says_its_actions_are_clipped_to_the_bounds():
    """layerwise's rollouts clip a continuous action to the Box (rl.envs.to_env); the file must say so."""
    from layerwise.deploy.export_metadata import _postprocessing

    model = create_model("actor-critic", in_shape=(3,), num_classes=1, width=4, policy="gaussian")
    post = _postprocessing({"task": {"name": "rl", "env_id": "Pendulum-v1", "continuous": True}}, None, model)
    assert "log_std" in post and "clipped to the environment's action bounds" in post["formula"]


def _tiny_run(root: Path) -> Path:
    info = DatasetInfo("csv", (3,), 2, ["a", "b"], 1.0, [0.0] * 3, [1.0] * 3, extra={})
    torch.manual_seed(0)
    return _save(root, create_model("mlp", in_shape=(3,), num_classes=2, width=4).eval(), info, {"name": "classify"})


def test_an_out_named_for_the_other_format_is_refused_and_a_suffixless_pt2_replaces_itself(tmp_path):
    """A pt2 archive written as x.onnx was misnamed for every reader, and the next export of the same
    weights took it for someone else's file; a suffix-less pt2's check went through torch's warning."""
    from layerwise.config import ConfigError

    run = _tiny_run(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"ends in \.onnx but --format pt2 .* name it x\.pt2"):
        export_run(run, "pt2", tmp_path / "x.onnx")
    with pytest.raises(ConfigError, match=r"ends in \.pt2 but --format onnx"):
        export_run(run, "onnx", tmp_path / "x.pt2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    out = tmp_path / "model-file"
    export_run(run, "pt2", out)
    export_run(run, "pt2", out)  # the same weights: replaced, not refused as an unrelated file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-file", "run"]


def test_two_threads_exporting_at_once_both_succeed_and_leave_stdout_alone(tmp_path):
    import sys
    import threading

    run, stdout, errors = _tiny_run(tmp_path / "run"), sys.stdout, []

    def export(out):
        try:
            export_run(run, out=tmp_path / out)
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=export, args=(f"m{i}.onnx",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and sys.stdout is stdout
    assert (tmp_path / "m0.onnx").exists() and (tmp_path / "m1.onnx").exists()


def test_a_nan_in_an_embedding_row_no_sample_reaches_is_refused(tmp_path):
    """The sample check only sees the rows its inputs hit: every weight is checked before exporting."""
    from layerwise.deploy.export import ExportError

    info = DatasetInfo("text-classes", (8,), 2, ["neg", "pos"], 1.0, [], [], extra={
        "tokenizer": {"kind": "char", "chars": "abc"}, "text": {"max_length": 8, "pad_id": 0, "id_offset": 1}})
    torch.manual_seed(0)
    model = create_model("ngram-bag", in_shape=(8,), num_classes=2, vocab_size=4, buckets=4096).eval()
    name, weight = max(((n, p) for n, p in model.named_parameters() if p.dim() == 2), key=lambda t: t[1].shape[0])
    with torch.no_grad():
        weight[-1] = float("nan")
    run = _save(tmp_path / "run", model, info, {"name": "classify"})
    with pytest.raises(ExportError, match=rf"ngram-bag model .* NaN or Inf in 1 weight tensor\(s\) \({name}\)"):
        export_run(run)
    assert sorted(p.name for p in run.iterdir()) == ["model.safetensors"]


@pytest.mark.parametrize("name,C,size", [("cifar10", 3, (40, 50)), ("cifar10", 3, (20, 10)), ("mnist", 1, (56, 56)),
                                         ("image-folder", 3, (40, 50)), ("digits", 1, (16, 16))])
def test_an_image_file_becomes_predicts_raw_pixels_by_the_metadata_alone(tmp_path, name, C, size):
    """A photo of another size (and MNIST's polarity): the file says how predict resizes and flips it."""
    from PIL import Image, ImageOps

    from layerwise.data.inputs import load_inputs

    H = W = {"digits": 8, "mnist": 28}.get(name, 32)
    scale = 16.0 if name == "digits" else 255.0  # sklearn's digits: 0..16
    info = DatasetInfo(name, (C, H, W), 3, ["a", "b", "c"], scale, [0.5] * C, [0.25] * C, extra={})
    model = create_model("mlp", in_shape=(C, H, W), num_classes=3, width=4)
    pre = _props(model, info, {"name": "classify"})["preprocessing"]
    rule = pre["image"]
    rng = np.random.default_rng(0)
    pixels = rng.integers(150, 256, (size[1], size[0], 3), dtype=np.uint8)  # light: MNIST's gets inverted
    Image.fromarray(pixels).save(tmp_path / "x.png")
    im = ImageOps.exif_transpose(Image.open(tmp_path / "x.png")).convert(rule["mode"])
    big = im.size[0] >= rule["width"] and im.size[1] >= rule["height"]
    how = Image.BOX if "BOX" in rule["resize"] and big else Image.BILINEAR
    a = np.asarray(im.resize((rule["width"], rule["height"]), how), np.float64)
    assert "raw = pixel / 255 * scale" in rule["formula"]
    raw = (a[None] if a.ndim == 2 else a.transpose(2, 0, 1)) / 255 * pre["scale"]
    if "polarity" in rule and raw.mean() > pre["scale"] / 2:
        raw = pre["scale"] - raw
    np.testing.assert_allclose(raw, load_inputs(tmp_path / "x.png", info)[0].numpy(), atol=1e-3)
    assert ("polarity" in rule) == (name in ("mnist", "digits"))


def test_a_molecule_graph_is_featurized_by_the_metadata_alone():
    """The file lists every atom and bond feature with its one-hot choices: following it gives the arrays."""
    pytest.importorskip("rdkit")
    from layerwise.data import molecules as mol

    enc = {"featurize": "graph", "smiles_column": "smiles", "descriptors": [], "descriptor_mean": [],
           "descriptor_std": [], "ecfp": [2, 2048]}
    info = DatasetInfo("molecules", (mol.ATOM_FDIM, mol.BOND_FDIM), 1, ["logS"], 1.0, [], [], task="regress",
                       extra={"molecules": enc, "targets": ["logS"]})
    model = create_model("mpnn", in_shape=(mol.ATOM_FDIM, mol.BOND_FDIM), num_classes=1, hidden=4, depth=1,
                         ffn_width=4)
    rule = _props(model, info, REGRESS | {"clip": False})["preprocessing"]["rdkit"]

    def follow(obj, specs):
        env = {n: getattr(obj, n) for n in dir(obj) if n[:1].isupper()} | {"str": str, "float": float}
        out = []
        for s in specs:
            if "one_hot" in s:
                v, cs = eval(s["one_hot"], {}, env), s["choices"]
                out += [float(v == c) for c in cs] + [float(v not in cs)]
            elif "flags" in s:
                out += [float(str(obj.GetBondType()) == c) for c in s["choices"]]
            else:
                out.append(eval(s["value"], {}, env))
        return out

    m = mol.parse_smiles("C[C@H](N)C(=O)O/C=C/c1ccccc1[N+](=O)[O-]")
    for a in m.GetAtoms():
        assert follow(a, rule["atom"]) == pytest.approx(mol.atom_features(a))
    for b in m.GetBonds():
        assert follow(b, rule["bond"]) == pytest.approx(mol.bond_features(b))


def test_ratings_side_features_are_spelled_out():
    """A neumf with side features: the file gives the age buckets' edges and the gender / genre codes."""
    ratings = {"user_ids": [7], "item_ids": [1], "columns": ["user", "item", "age", "gender", "occupation"],
               "occupations": ["artist", "doctor"]}
    info = DatasetInfo("movielens", (5,), 1, ["rating"], 1.0, [], [], task="regress",
                       extra={"inputs": "indices", "ratings": ratings})
    model = create_model("neumf", in_shape=(5,), num_classes=1, num_users=2, num_items=2, dim=4, width=4, depth=1,
                         feature_sizes=(8, 3, 3), n_user_features=3)
    pre = _props(model, info, REGRESS | {"clip": False})["preprocessing"]
    assert "gender 1 = F, 2 = M" in pre["formula"] and "genre_<name> = 1" in pre["formula"]
    for age, want in ((17, 1), (18, 2), (30, 3), (56, 7), (80, 7)):  # MovieLens 1M's groups, as read_users
        assert 1 + sum(e <= age for e in pre["age_edges"]) == want


@pytest.mark.parametrize("target", ["model.safetensors", "summary.json"])
def test_force_never_replaces_the_runs_own_files(tmp_path, target):
    from layerwise.config import ConfigError

    run = _tiny_run(tmp_path / "run")
    (run / "summary.json").write_text("{}")
    before = (run / target).read_bytes()
    with pytest.raises(ConfigError, match=rf"one of the files of the run being exported \({target}\)"):
        export_run(run, out=run / target, force=True)
    assert (run / target).read_bytes() == before


def test_a_pt2_that_cannot_be_written_is_a_clean_error_naming_the_folder(tmp_path, monkeypatch, capsys):
    """torch's .pt2 writer says 'open file failed' as a RuntimeError: it reached the user as a traceback."""
    from layerwise.cli import main

    run = _tiny_run(tmp_path / "run")

    def refuse(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:747] . open file failed with strerror: "
                           "Permission denied")

    monkeypatch.setattr(torch.export, "save", refuse)
    out = tmp_path / "ro"
    out.mkdir()
    assert main(["export", str(run), "--format", "pt2", "--out", str(out / "m.pt2")]) == 1
    err = capsys.readouterr().err
    assert f"cannot use '{out}'" in err and "Permission denied" in err and "Traceback" not in err
    assert list(out.iterdir()) == []


def test_an_out_ending_in_a_slash_is_a_folder_even_when_missing(tmp_path):
    from layerwise.config import ConfigError

    run = _tiny_run(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"names a folder .* that does not exist"):
        export_run(run, out=f"{tmp_path}/exports/")
    assert not (tmp_path / "exports").exists()
    (tmp_path / "exports").mkdir()
    assert export_run(run, out=f"{tmp_path}/exports/").path == tmp_path / "exports" / "model.onnx"


def test_a_language_models_file_says_which_end_of_a_long_context_to_keep():
    info = DatasetInfo("shakespeare", (8,), 5, [], 1.0, [], [], task="lm", extra={"tokenizer": {"kind": "byte"}})
    model = create_model("gpt", in_shape=(8,), num_classes=5, n_layer=1, n_head=2, n_embd=8, vocab_size=5)
    formula = _props(model, info, {"name": "lm"})["preprocessing"]["formula"]
    assert "last block_size" in formula and "no padding" in formula


def test_a_file_written_at_out_while_exporting_is_not_replaced(tmp_path, monkeypatch):
    """Two exports of different weights to one new path, or someone's file appearing there: the file
    at --out was judged before the (seconds long) export, so it is judged again before the rename."""
    import layerwise.deploy.export as ex
    from layerwise.config import ConfigError

    run, out = _tiny_run(tmp_path / "run"), tmp_path / "m.onnx"
    real = ex.check_export

    def meanwhile(*args, **kwargs):
        out.write_text("someone else's file")
        return real(*args, **kwargs)

    monkeypatch.setattr(ex, "check_export", meanwhile)
    with pytest.raises(ConfigError, match="written by something else while this export ran"):
        export_run(run, out=out)
    assert out.read_text() == "someone else's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "run"]


def test_a_table_rows_encoding_is_spelled_out():
    """Log columns, imputed medians (in log space), an empty and an unseen category, indicators."""
    from layerwise.data.tabular import encode_rows

    table = {"columns": ["rooms", "kind"], "numeric": ["rooms"], "medians": {"rooms": 2.0}, "indicators": ["rooms"],
             "categories": {"kind": ["<missing>", "a", "b"]}, "missing": "impute", "decimal": ".", "thousands": "",
             "log": ["rooms"], "features": ["rooms", "kind=<missing>", "kind=a", "kind=b", "rooms_missing"]}
    info = DatasetInfo("csv", (5,), 1, ["y"], 1.0, [0.0] * 5, [1.0] * 5, task="regress", extra={"table": table})
    pre = _props(create_model("mlp", in_shape=(5,), num_classes=1, width=4), info,
                 REGRESS | {"clip": False})["preprocessing"]
    t, rule = pre["table"], pre["encode"]
    empty = re.search(r"an empty cell is the category '([^']*)'", rule).group(1)
    rows = [{"rooms": "3", "kind": "a"}, {"rooms": "", "kind": ""}, {"rooms": "1", "kind": "zzz"}]

    def follow(r):
        v = r["rooms"]
        num = t["medians"]["rooms"] if v == "" else float(np.log1p(float(v)))
        kind = r["kind"] or empty
        return [num] + [float(kind == c) for c in t["categories"]["kind"]] + [float(v == "")]

    with pytest.warns(UserWarning):
        want = encode_rows(rows, info.extra)
    np.testing.assert_allclose(np.array([follow(r) for r in rows]), want, rtol=1e-6)


class _Svd(torch.nn.Module):  # traces fine; ONNX has no SVD
    def forward(self, x):
        return torch.linalg.svd(x.reshape(x.shape[0], 1, -1))[1]


class _StftRoundTrip(torch.nn.Module):  # the exporter writes a graph onnxruntime refuses to load
    def forward(self, x):
        w = torch.ones(4)
        return torch.istft(torch.stft(x.repeat(1, 3), 4, window=w, return_complex=True), 4, window=w)[:, :2]


@pytest.mark.parametrize("module,reason", [
    (_Svd, r"No ONNX function found .* has no translation for; export it with --format pt2"),
    (_StftRoundTrip, r"onnxruntime rejects the exported graph \(.*INVALID_GRAPH.*the file failed.*\): the exporter"),
])
def test_an_export_failure_gives_its_own_reason_not_a_frozen_dimension(tmp_path, monkeypatch, module, reason):
    """An operator without an ONNX translation, or a graph onnxruntime cannot load, was blamed on a
    shape the tracer froze; the hidden temporary file's path is not shown."""
    import layerwise.deploy.export as ex
    from layerwise.deploy.export import ExportError

    run = _tiny_run(tmp_path / "run")
    real = ex.input_spec
    monkeypatch.setattr(ex, "input_spec", lambda model, meta, info: real(module(), meta, info))
    with pytest.raises(ExportError, match=reason) as e:
        export_run(run)
    assert "dynamic" not in str(e.value) and ".tmp" not in str(e.value)
    assert sorted(p.name for p in run.iterdir()) == ["model.safetensors"]


def test_a_multilabel_models_file_carries_its_decision_threshold():
    """predict names the labels at or over the saved task.threshold (not always 0.5)."""
    info = DatasetInfo("csv", (3,), 2, ["x", "y"], 1.0, [0.0] * 3, [1.0] * 3, task="multilabel", extra={})
    model = create_model("mlp", in_shape=(3,), num_classes=2, width=4)
    post = _props(model, info, {"name": "multilabel", "threshold": 0.3})["postprocessing"]
    assert post["threshold"] == 0.3 and "sigmoid >= threshold" in post["formula"] and post["classes"] == ["x", "y"]

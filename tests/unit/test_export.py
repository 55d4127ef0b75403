"""`layerwise export`: every registered model family to ONNX, checked against PyTorch with
onnxruntime at batch sizes 1, 2 and 7 (one export per family: the batch dimension is dynamic),
the metadata a user outside layerwise feeds the model with, and the refusals."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from layerwise.data.datasets import DatasetInfo
from layerwise.models import create_model
from layerwise.models.registry import _MODELS, list_models
from layerwise.deploy.export import ATOL, RTOL, ExportError, export_run, input_spec, run_onnx
from layerwise.train.run import RunDirError, load_model, save_model

from conftest import require_data


def _image(C, H, W, classes=3) -> DatasetInfo:
    return DatasetInfo("image-folder", (C, H, W), classes, [f"c{i}" for i in range(classes)], 255.0,
                       [0.5] * C, [0.25] * C, extra={"image_size": [H, W]})


TOKENIZER = {"kind": "char", "chars": "abcdefghijklmnopqrs"}
TEXT = DatasetInfo("text-classes", (10,), 2, ["neg", "pos"], 1.0, [], [], extra={
    "tokenizer": TOKENIZER, "text": {"max_length": 10, "pad_id": 0, "id_offset": 1, "vocab_size": 20}})
RATINGS = DatasetInfo("movielens", (2,), 1, ["rating"], 1.0, [], [], task="regress", extra={
    "inputs": "indices", "ratings": {"user_ids": [7, 8, 9, 10], "item_ids": [1, 2, 3, 4, 5],
                                     "columns": ["user", "item"], "scale": [1, 5]}})
REGRESS = {"name": "regress", "columns": ["rating"], "mean": [3.5], "std": [1.1], "loss": "mse",
           "transform": "none", "clip": False, "range": None}

# family -> (create_model kwargs, DatasetInfo or None for an RL agent, task metadata); the tiniest valid sizes
FAMILIES = {
    "mlp": (dict(in_shape=(1, 6, 6), num_classes=3, width=8), _image(1, 6, 6), None),
    "convnet": (dict(in_shape=(3, 12, 12), num_classes=3, widths=(4, 8, 8)), _image(3, 12, 12), None),
    "resnet": (dict(in_shape=(3, 8, 8), num_classes=3, widths=(4, 8, 8)), _image(3, 8, 8), None),
    "vit": (dict(in_shape=(3, 8, 8), num_classes=3, n_layer=1, n_head=2, n_embd=8), _image(3, 8, 8), None),
    "audio-transformer": (dict(in_shape=(1, 8, 6), num_classes=3, n_layer=1, n_head=2, n_embd=8),
                          DatasetInfo("fsdd", (1, 8, 6), 3, ["0", "1", "2"], 1.0, [-3.0], [2.0],
                                      extra={"audio": {"sample_rate": 8000, "n_mels": 8, "frames": 6}}), None),
    "cnn1d": (dict(in_shape=(2, 16), num_classes=1, width=4, depth=2, proj_width=8),
              DatasetInfo("burgers", (2, 16), 1, ["u"], 1.0, [0.0, 0.5], [1.0, 0.3], task="regress",
                          extra={"field": {"resolution": 16}}),
              REGRESS | {"columns": ["u"], "field": True}),
    # rotary, as the shipped GPT: its cos/sin tables grow on demand, which froze the length before a warm-up
    "gpt": (dict(in_shape=(12,), num_classes=20, n_layer=1, n_head=2, n_embd=8, vocab_size=20, rotary=True,
                 mlp="swiglu", norm="rmsnorm"),
            DatasetInfo("shakespeare", (12,), 20, [], 1.0, [], [], task="lm", extra={"tokenizer": TOKENIZER}),
            {"name": "lm"}),
    "text-transformer": (dict(in_shape=(10,), num_classes=2, n_layer=1, n_head=2, n_embd=8, vocab_size=20), TEXT,
                         None),
    "ngram-bag": (dict(in_shape=(10,), num_classes=2, vocab_size=20, buckets=32), TEXT, None),
    "mf": (dict(in_shape=(2,), num_classes=1, num_users=5, num_items=6, dim=4), RATINGS, REGRESS),
    "neumf": (dict(in_shape=(4,), num_classes=1, num_users=5, num_items=6, dim=4, width=8, depth=1,
                   feature_sizes=(3, 4), n_user_features=1),
              DatasetInfo("movielens", (4,), 1, ["rating"], 1.0, [], [], task="regress",
                          extra={"inputs": "indices", "ratings": {"columns": ["user", "item", "age", "genre"]}}),
              REGRESS),
    "autorec": (dict(in_shape=(2,), num_classes=1, num_users=5, num_items=6, hidden=4), RATINGS, REGRESS),
    "mpnn": (dict(in_shape=(5, 3, 2), num_classes=1, hidden=8, depth=2, ffn_width=8),
             DatasetInfo("molecules", (5, 3, 2), 1, ["logS"], 1.0, [0.0, 0.0], [1.0, 1.0], task="regress",
                         extra={"molecules": {"featurize": "graph"}, "targets": ["logS"]}),
             REGRESS | {"columns": ["logS"]}),
    "actor-critic": (dict(in_shape=(4,), num_classes=2, width=8), None,
                     {"name": "rl", "env_id": "CartPole-v1", "continuous": False}),
    "fno": (dict(in_shape=(2, 16), num_classes=1, width=4, layers=1, modes=4, proj_width=8),
            DatasetInfo("burgers", (2, 16), 1, ["u"], 1.0, [0.0, 0.5], [1.0, 0.3], task="regress",
                        extra={"field": {"resolution": 16}}), REGRESS | {"columns": ["u"], "field": True}),
}
REFUSED = {"fno"}  # complex-valued spectral convolutions


def _save_run(root: Path, family: str) -> Path:
    kwargs, info, task = FAMILIES[family]
    torch.manual_seed(0)
    model = create_model(family, **kwargs).eval()
    if family == "autorec":  # its item vectors come from the training ratings
        x = torch.tensor([[1, 1], [2, 1], [3, 2], [4, 5]])
        model.init_from_data(x, torch.tensor([[4.0], [3.0], [5.0], [2.0]]))
    meta = {"model": model.config, "task": task or {"name": info.task}} | ({"data": info.to_dict()} if info else {})
    run = root / family
    run.mkdir(parents=True)
    save_model(run / "model.safetensors", model, meta)
    return run


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """One ONNX export per family that can be exported (the run directory holds model.onnx)."""
    root = tmp_path_factory.mktemp("export-runs")
    runs = {}
    for family in FAMILIES:
        run = _save_run(root, family)
        if family not in REFUSED:
            result = export_run(run)
            assert result.path == run / "model.onnx" and result.bytes == result.path.stat().st_size > 0
            assert result.max_abs_diff <= 1e-4
        runs[family] = run
    return runs


def _family_of(name: str) -> str:
    if name in FAMILIES:
        return name
    fn = _MODELS[name]
    while isinstance(fn, functools.partial):
        fn = fn.func
    return next(f for f in FAMILIES if _MODELS[f] is fn or getattr(_MODELS[f], "func", None) is fn)


def test_every_registered_family_is_covered():
    """A family added to the registry without an export case fails here (presets map to their family)."""
    assert {_family_of(name) for name in list_models()} == set(FAMILIES)


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - REFUSED))
def test_onnxruntime_matches_pytorch_at_batch_1_2_7(exported, family):
    run = exported[family]
    model, meta = load_model(run)
    info = None if family == "actor-critic" else FAMILIES[family][1]
    spec = input_spec(model, meta, info)
    import onnx

    props = {p.key: json.loads(p.value) for p in onnx.load(str(run / "model.onnx")).metadata_props}
    (described,) = props["outputs"]  # the shape the metadata promises, its named dimensions aside
    g = torch.Generator().manual_seed(1)
    for batch in (1, 2, 7):
        inputs = spec.sample(batch, g)
        with torch.no_grad():
            want = spec.module(*inputs).numpy()
        got = run_onnx(run / "model.onnx", inputs)[0]
        assert got.shape == want.shape and got.shape[0] == batch
        assert len(described["shape"]) == got.ndim
        assert all(d == n for d, n in zip(described["shape"], got.shape, strict=True) if isinstance(d, int))
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    if family in ("gpt", "text-transformer"):  # the sequence length is dynamic too
        for T in (1, 7, 10):
            x = torch.randint(1, 20, (3, T), generator=g)
            with torch.no_grad():
                np.testing.assert_allclose(run_onnx(run / "model.onnx", (x,))[0], model(x).numpy(), rtol=RTOL,
                                           atol=ATOL)


def test_metadata_describes_inputs_outputs_and_preprocessing(exported):
    import onnx

    def props(family):
        m = onnx.load(str(exported[family] / "model.onnx"))
        return {p.key: json.loads(p.value) for p in m.metadata_props}, m

    p, m = props("mlp")
    assert [i.name for i in m.graph.input] == ["input"] and [o.name for o in m.graph.output] == ["logits"]
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert p["inputs"] == [{"name": "input", "dtype": "float32", "shape": ["batch", 1, 6, 6]}]
    assert p["preprocessing"]["kind"] == "normalize"
    assert (p["preprocessing"]["scale"], p["preprocessing"]["mean"], p["preprocessing"]["std"]) == (255.0, [0.5], [0.25])
    assert p["postprocessing"]["classes"] == ["c0", "c1", "c2"] and p["model"]["width"] == 8
    assert len(p["layerwise"]["weights_sha256"]) == 64
    p, _ = props("text-transformer")
    assert p["preprocessing"]["tokenizer"] == TOKENIZER and p["preprocessing"]["max_length"] == 10
    assert p["preprocessing"]["sequence_lengths"] == [1, 10]
    assert props("ngram-bag")[0]["preprocessing"]["sequence_lengths"] == [2, 10]  # it pairs neighbours
    assert p["inputs"][0] == {"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"]}
    p, _ = props("mf")
    assert p["postprocessing"]["mean"] == [3.5] and p["postprocessing"]["std"] == [1.1]
    assert p["preprocessing"]["ratings"]["user_ids"] == [7, 8, 9, 10]
    p, _ = props("actor-critic")
    assert p["data"] is None and p["preprocessing"]["environment"] == "CartPole-v1"
    assert props("audio-transformer")[0]["preprocessing"]["audio"]["n_mels"] == 8


def test_a_model_that_cannot_export_fails_clearly_and_writes_nothing(exported):
    run = exported["fno"]
    with pytest.raises(ExportError, match=r"fno model .* cannot be exported to ONNX: .*complex"):
        export_run(run)
    assert sorted(p.name for p in run.iterdir()) == ["model.safetensors"]


def test_a_data_dependent_shape_names_the_model_and_the_reason(exported, monkeypatch):
    """The generic path: a forward whose output size depends on the values (x[x > 0])."""
    import layerwise.deploy.export as ex

    class Picky(torch.nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x  # Python control flow on a value

    real = ex.input_spec
    monkeypatch.setattr(ex, "input_spec", lambda model, meta, info: real(Picky(), meta, info))
    run = exported["mlp"]
    before = (run / "model.onnx").read_bytes()
    with pytest.raises(ExportError, match=r"the mlp model of .* cannot be exported to ONNX: .*data-dependent"):
        export_run(run, force=True)
    assert (run / "model.onnx").read_bytes() == before  # the earlier export is untouched
    assert not [p for p in run.iterdir() if ".tmp" in p.name]


def test_overwrites_only_an_export_of_the_same_weights(exported, tmp_path):
    from layerwise.config import ConfigError

    out = tmp_path / "m.onnx"
    out.write_bytes(b"someone else's file")
    with pytest.raises(ConfigError, match="not a layerwise export; it was left as it is"):
        export_run(exported["mlp"], out=out)
    assert out.read_bytes() == b"someone else's file"
    (exported["mlp"] / "model.onnx").replace(out)  # an export of other weights (the mlp's) at the resnet's --out
    with pytest.raises(ConfigError, match="an export of other weights"):
        export_run(exported["resnet"], out=out)
    export_run(exported["mlp"], out=out)  # the same weights: replaced
    with pytest.raises(ConfigError, match="unknown export format 'tflite'"):
        export_run(exported["mlp"], format="tflite")
    with pytest.raises(RunDirError, match="does not exist"):
        export_run(tmp_path / "nope")


def test_nan_weights_and_a_folder_as_out(exported, tmp_path):
    """A model whose weights hold NaN is refused (nothing sound to export); --out a folder puts the
    default name inside it."""
    import layerwise

    assert layerwise.export(exported["mlp"], out=tmp_path) == tmp_path / "model.onnx"  # the Python API
    assert (tmp_path / "model.onnx").is_file()
    model, meta = load_model(exported["mlp"])
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    bad = tmp_path / "nan-run"
    bad.mkdir()
    save_model(bad / "model.safetensors", model, meta)
    with pytest.raises(ExportError, match=r"mlp model .* has NaN or Inf in 1 weight tensor\(s\) .* weights are broken"):
        export_run(bad)
    assert sorted(p.name for p in bad.iterdir()) == ["model.safetensors"]


def test_without_the_export_extra_says_what_to_install(exported, monkeypatch):
    from layerwise.config import ConfigError

    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed: importing it raises
    with pytest.raises(ConfigError, match=r"onnxscript is not installed: pip install 'layerwise\[export\]'"):
        export_run(exported["mlp"], out=exported["mlp"] / "other.onnx")
    assert not (exported["mlp"] / "other.onnx").exists()


def test_pt2_exports_what_onnx_cannot(exported, tmp_path):
    """fno (complex FFTs) has no ONNX form, but torch.export captures it with a dynamic batch."""
    model, _ = load_model(exported["fno"])
    result = export_run(exported["fno"], format="pt2", out=tmp_path / "fno.pt2")
    assert result.format == "pt2" and result.bytes > 0
    prog = torch.export.load(str(result.path)).module()
    for batch in (1, 7):
        x = torch.randn(batch, 2, 16)
        with torch.no_grad():
            torch.testing.assert_close(prog(x), model(x), rtol=RTOL, atol=ATOL)


def _readme_snippet(path: Path, raw: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The README's example, verbatim in logic: run an exported image classifier on raw pixels."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = {k: json.loads(v) for k, v in sess.get_modelmeta().custom_metadata_map.items()}
    pre = meta["preprocessing"]  # input = (raw / scale - mean[c]) / std[c]
    shape = (1, -1) + (1,) * (raw.ndim - 2)
    x = (raw / pre["scale"] - np.reshape(pre["mean"], shape)) / np.reshape(pre["std"], shape)
    (logits,) = sess.run(None, {"input": x.astype(np.float32)})
    classes = meta["postprocessing"]["classes"]
    return [classes[i] for i in logits.argmax(1)], logits


def test_readme_example_runs_as_written_and_gives_pytorchs_predictions(exported, tmp_path, monkeypatch, capsys):
    """The README's onnxruntime block, taken from the README and run in a folder holding the
    convnet's model.onnx and raw 8-bit pixels in images.npy."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    code = readme.split("<!-- export-example -->\n```python\n", 1)[1].split("```", 1)[0]
    run = exported["convnet"]
    model, _ = load_model(run)
    raw = np.random.default_rng(0).integers(0, 256, (5, 3, 12, 12)).astype(np.float32)
    np.save(tmp_path / "images.npy", raw)
    (tmp_path / "model.onnx").write_bytes((run / "model.onnx").read_bytes())
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    with torch.no_grad():
        want = model((torch.from_numpy(raw) / 255.0 - 0.5) / 0.25).numpy()
    np.testing.assert_allclose(scope["logits"], want, rtol=RTOL, atol=ATOL)
    assert capsys.readouterr().out.strip() == str([f"c{i}" for i in want.argmax(1)])


def test_cli_exports_pretrained_mnist_and_matches_on_real_digits(tmp_path):
    """The command on the shipped model: a clean one-line output, then the file's accuracy on real
    MNIST test digits equals PyTorch's (skips without the data)."""
    out = tmp_path / "mnist.onnx"
    r = subprocess.run([sys.executable, "-m", "layerwise", "export", "pretrained:mnist-convnet", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"wrote {out} (") and len(r.stdout.strip().splitlines()) == 1
    assert "max |difference|" in r.stdout and "[torch.onnx]" not in r.stdout + r.stderr
    bad = subprocess.run([sys.executable, "-m", "layerwise", "export", str(tmp_path / "missing")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "does not exist" in bad.stderr
    root = require_data("mnist/mnist_test.npz")
    from layerwise.insight.runs import open_run

    run = open_run("pretrained:mnist-convnet", device="cpu", data_root=str(root))
    x, y = run.examples("test", 500)  # pixel space [0, 1]
    names, logits = _readme_snippet(out, (x * run.info.scale).numpy())
    with torch.no_grad():
        want = run.pixel_model()(x).argmax(1)
    assert (logits.argmax(1) == want.numpy()).all()
    assert float((torch.from_numpy(logits.argmax(1)) == y).float().mean()) >= 0.99
    assert names[:3] == [str(int(c)) for c in want[:3]]


def test_export_help_does_not_import_torch():
    from test_startup import CHECK

    out = subprocess.run([sys.executable, "-c", CHECK, json.dumps(["export", "--help"])], capture_output=True,
                         text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["code"] in (0, None) and r["printed"] > 100 and r["torch"] is False, r

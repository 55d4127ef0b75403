"""`layerwise probe` mechanics on tiny models and the built-in digits (8x8): depths, hooks, pooling,
attention weights, refusals and the files it writes."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from layerwise.cli import main
from layerwise.config import load_config, save_config
from layerwise.data import DataError, load_dataset
from layerwise.insight.attention import attention_weights
from layerwise.insight.probe import (
    bag_of_words,
    collect_features,
    fit_probe,
    pool_features,
    probe,
    probe_points,
    probe_run,
)
from layerwise.models import create_model
from layerwise.train.run import RunDirError, save_model


def _digits_run(tmp_path: Path, name: str, data: str = "digits", **args) -> Path:
    """A run directory of an untrained ``name`` model on a built-in dataset (no training: the
    mechanics, not the figures, are under test)."""
    torch.manual_seed(0)
    info = load_dataset(data, "unused").info
    model = create_model(name, in_shape=info.in_shape, num_classes=info.num_classes, **args)
    run = tmp_path / f"{name}-{data}"
    run.mkdir()
    save_model(run / "model.safetensors", model, {"model": model.config, "data": dataclasses.asdict(info),
                                                  "task": {"name": info.task}})
    save_config(load_config(None, [f"--data.name={data}"]), run / "config.yaml")
    return run


def test_probe_points_per_family():
    # depth 0 the input, then the stem where there is one, then one depth per block
    conv = create_model("convnet", in_shape=(1, 8, 8), num_classes=10, widths=(8, 16), whiten=False)
    assert [p.name for p in probe_points(conv)] == ["input", "stem", "block 0", "block 1"]
    assert probe_points(conv)[1].module is conv.stem_act
    mlp = create_model("mlp", in_shape=(1, 8, 8), num_classes=10, depth=3, width=16)
    assert [p.depth for p in probe_points(mlp)] == [0, 1, 2, 3]
    vit = create_model("vit", in_shape=(1, 8, 8), num_classes=10, patch_h=2, patch_w=2, n_layer=2, n_head=2,
                       n_embd=16)
    assert [p.name for p in probe_points(vit)] == ["input", "patch embedding", "block 0", "block 1"]
    gpt = create_model("gpt", in_shape=(16,), num_classes=11, n_layer=1, n_head=2, n_embd=16)
    with pytest.raises(RunDirError, match="language model"):
        probe_points(gpt)
    bag = create_model("ngram-bag", in_shape=(16,), num_classes=2, vocab_size=50)
    with pytest.raises(RunDirError, match="no blocks"):
        probe_points(bag)


def test_pool_features_caps_and_keeps_layout():
    h = torch.randn(3, 8, 27, 27)  # 5832 values > 2048: pooled to the largest s x s grid, 8 s^2 <= 2048
    f = pool_features(h, 2048)
    assert f.shape == (3, 8 * 16 * 16)
    assert torch.allclose(f.view(3, 8, 16, 16), F.adaptive_avg_pool2d(h, 16))
    assert pool_features(h, 10_000).shape == (3, 8 * 27 * 27)  # fits: kept whole
    assert pool_features(torch.randn(2, 4096, 2, 2), 2048).shape == (2, 4096)  # more channels than the cap: GAP
    tokens = torch.randn(2, 17, 6)  # a ViT with a class token and a 4 x 4 patch grid
    grid = pool_features(tokens, 2048, grid=(4, 4))
    assert torch.equal(grid.view(2, 6, 4, 4)[:, :, 1, 2], tokens[:, 1 + 4 + 2])  # patch (1, 2), class token dropped
    mask = torch.tensor([[True, True, False], [True, False, False]])
    text = torch.arange(18.0).view(2, 3, 3)
    assert torch.equal(pool_features(text, mask=mask), torch.stack([text[0, :2].mean(0), text[1, 0]]))
    with pytest.raises(ValueError, match="max_features"):
        pool_features(h, 0)


def test_bag_of_words_counts():
    ids = torch.tensor([[5, 5, 2, 0], [2, 9, 0, 0]])
    assert bag_of_words(ids, torch.tensor([5, 2, 7])).tolist() == [[2, 1, 0], [0, 1, 0]]


def test_collect_features_hooks_shapes_and_nan():
    torch.manual_seed(0)
    conv = create_model("convnet", in_shape=(1, 8, 8), num_classes=10, widths=(8, 16), whiten=False).eval()
    points = probe_points(conv)
    x = torch.rand(7, 1, 8, 8)
    feats = collect_features(conv, conv, x, points, 2048, batch=3)  # 3 batches: 3 + 3 + 1
    # input 64, stem 8 ch x 8 x 8 = 512, group 0: 8 x 4 x 4, group 1: 16 x 2 x 2
    assert [f.shape for f in feats] == [(7, 64), (7, 512), (7, 128), (7, 64)]
    assert np.allclose(feats[0], x.flatten(1).numpy())
    with torch.no_grad():
        expected = conv.blocks[1](conv.blocks[0](conv.stem_act(conv.stem(x)))).flatten(1)
    assert np.allclose(feats[3], expected.numpy(), atol=1e-5)
    assert not any(m._forward_hooks for m in conv.modules())  # hooks removed afterwards
    with torch.no_grad():
        conv.blocks[0].conv1.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        collect_features(conv, conv, x, points)


def test_fit_probe_separable_and_single_class():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    f = rng.normal(size=(300, 5)) + 4.0 * np.eye(3)[y] @ rng.normal(size=(3, 5))
    r = fit_probe(f[:200], y[:200], f[200:], y[200:])
    assert r["test_accuracy"] > 0.9 and r["converged"]
    noise = fit_probe(rng.normal(size=(200, 5)), y[:200], rng.normal(size=(100, 5)), y[200:])
    assert noise["test_accuracy"] < 0.55  # chance is 1/3: no signal, no accuracy
    with pytest.raises(DataError, match="one class"):
        fit_probe(f[:10], np.zeros(10, int), f[10:20], y[10:20])


def test_attention_weights_are_the_ones_sdpa_applied():
    torch.manual_seed(0)
    for name, kw, x in (("gpt", {"n_layer": 2, "n_head": 2, "n_embd": 16, "rotary": True}, torch.randint(0, 11, (2, 9))),
                        ("text-transformer", {"n_layer": 2, "n_head": 2, "n_embd": 16, "vocab_size": 30},
                         torch.tensor([[3, 4, 5, 0, 0], [7, 8, 9, 10, 11]]))):
        model = create_model(name, in_shape=(x.shape[1],), num_classes=11, **kw).eval()
        att = attention_weights(model, model, x, layer=1)  # (B, nh, T, T)
        assert att.shape == (2, 2, x.shape[1], x.shape[1])
        assert torch.allclose(att.sum(-1), torch.ones(2, 2, x.shape[1]))
        caught = {}
        attn = model.blocks[1].attn
        h1 = attn.register_forward_pre_hook(lambda m, a, k, c=caught: c.update(h=a[0]), with_kwargs=True)
        h2 = attn.register_forward_hook(lambda m, a, o, c=caught: c.update(out=o))
        with torch.no_grad():
            model(x)
        h1.remove(), h2.remove()
        h = caught["h"]
        v = attn.wqkv(h).view(2, x.shape[1], -1, 3, attn.head_dim)[..., 2, :].transpose(1, 2)  # (B, nh, T, hs)
        y = (att @ v).transpose(1, 2).reshape(2, x.shape[1], -1)
        assert torch.allclose(attn.proj(y), caught["out"], atol=1e-5)  # the module's own output
        if name == "gpt":
            assert att[0, 0].triu(1).abs().max() == 0  # causal: no attention to the future
        else:
            assert att[0, :, :, 3:].abs().max() == 0  # padding keys get none
    with pytest.raises(ValueError, match="out of range"):
        attention_weights(model, model, x, layer=2)


def test_probe_run_text_bag_of_words_on_synthetic_tokens():
    # class = whether token 7 occurs: linear in the word counts (depth 0), and visible to the encoder
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(1, 20, (400, 12), generator=g)
    x[:, 9:] = 0  # padding at the end
    y = (x == 7).any(1).long()
    model = create_model("text-transformer", in_shape=(12,), num_classes=2, n_layer=2, n_head=2, n_embd=16,
                         vocab_size=20).eval()
    info = SimpleNamespace(task="classify", name="synthetic")
    run = SimpleNamespace(model=model, info=info, path="synthetic", has_pixels=False,
                          examples=lambda split, n, seed: (x[:300], y[:300]) if split == "train" else (x[300:], y[300:]))
    r = probe_run(run, 300, 100)
    assert [d["name"] for d in r["depths"]] == ["input", "token embedding", "block 0", "block 1"]
    assert r["depth0"] == "bag of words" and r["depths"][0]["features"] == 19  # ids 1..19 occur
    assert r["depths"][0]["test_accuracy"] == 1.0  # count of token 7 > 0 is a linear rule
    assert [d["features"] for d in r["depths"][1:]] == [16, 16, 16]  # masked mean over tokens


def test_probe_command_on_digits_convnet_and_vit(tmp_path, capsys):
    run = _digits_run(tmp_path, "convnet", widths=(8, 16), whiten=False)
    assert main(["probe", str(run), "--train-n", "600", "--test-n", "300", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "block 1" in out and "wrote" in out
    result = json.loads((run / "probe" / "probe.json").read_text())
    assert [d["depth"] for d in result["depths"]] == [0, 1, 2, 3]
    assert result["train_n"] == 600 and result["test_n"] == 300
    assert result["depths"][0]["test_accuracy"] > 0.85  # raw 8x8 digits are nearly linearly separable
    assert all(0.0 <= d["test_accuracy"] <= 1.0 for d in result["depths"])
    assert math.isclose(result["chance"], 1 / 10, abs_tol=0.05)
    assert {p.name for p in (run / "probe").iterdir()} == {"probe.json", "probe.png", "filters.png"}
    vit = _digits_run(tmp_path, "vit", patch_h=2, patch_w=2, n_layer=2, n_head=2, n_embd=16)
    for flag, value in (("--head", "2"), ("--layer", "-3")):  # checked before any work: nothing written
        assert main(["probe", str(vit), flag, value, "--device", "cpu"]) == 2
        assert f"{flag} {value} is out of range" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("kept")
    assert main(["probe", str(vit), "--out", str(tmp_path / "a-file")]) == 1
    assert "is a file" in capsys.readouterr().err and (tmp_path / "a-file").read_text() == "kept"
    assert not (vit / "probe").exists()
    r = probe(vit, 300, 200, out=tmp_path / "vit-out", device="cpu", head=1)
    assert [d["features"] for d in r["depths"]] == [64, 256, 256, 256]  # 16 x (4 x 4 patches)
    assert {Path(f).name for f in r["files"]} == {"probe.json", "probe.png", "filters.png", "attention.png"}


def test_probe_refusals_are_clear_and_write_nothing(tmp_path, capsys):
    run = _digits_run(tmp_path, "mlp", depth=2, width=16)
    assert main(["probe", str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().err
    for other in ("config.yaml", "probe-notes.txt"):  # a file of the run that is not its model
        (run / "probe-notes.txt").write_text("notes")
        assert main(["probe", str(run / other)]) == 1
        assert f"'{run / other}' is not a model file" in capsys.readouterr().err
    (run / "probe-notes.txt").unlink()
    assert main(["probe", str(run), "--train-n", "0"]) == 2
    assert "train_n must be a positive integer" in capsys.readouterr().err
    assert main(["probe", "pretrained:mnist-convnett"]) == 2
    assert "did you mean pretrained:mnist-convnet" in capsys.readouterr().err
    assert main(["probe", "pretrained:mnist-convnet"]) == 1  # no data root: says how to give it
    assert "--data-root" in capsys.readouterr().err
    assert main(["probe", str(run), "--train-n", "50", "--test-n", "50", "--head", "3"]) == 0  # mlp: no attention
    assert not (run / "probe" / "attention.png").exists()
    assert not (Path.cwd() / "probe-mnist-convnet").exists()
    regression = _digits_run(tmp_path, "mlp", data="diabetes", depth=1, width=8)
    assert main(["probe", str(regression)]) == 1
    assert "is a regress run" in capsys.readouterr().err and not (regression / "probe").exists()



def test_seed_sizes_and_paths_are_checked_before_any_work(tmp_path, capsys, monkeypatch):
    """A seed scikit-learn refuses (< 0, >= 2**32) used to fail after every feature was collected,
    in scikit-learn's words; a path of another type failed deep inside open_run."""
    run = _digits_run(tmp_path, "mlp", depth=1, width=8)
    for seed in ("-1", str(2**32)):
        assert main(["probe", str(run), "--seed", seed, "--device", "cpu"]) == 2
        assert f"seed must be an integer from 0 to 2**32 - 1 (it draws the examples and seeds the probes' fits), got " \
               f"{seed}." in capsys.readouterr().err
    from layerwise.insight import runs

    monkeypatch.setattr(runs, "open_run", lambda *a, **k: pytest.fail("opened the run before checking"))
    for bad in ("0", True, 1.0):
        with pytest.raises(ValueError, match="seed must be an integer"):
            probe(run, seed=bad)
    with pytest.raises(ValueError, match="test_n must be a positive integer, got 0"):
        probe(run, test_n=0)
    with pytest.raises(TypeError, match="run_dir must be a path .* got int 123"):
        probe(123)
    with pytest.raises(TypeError, match="out must be a path .* got int 5"):
        probe(run, out=5)
    assert not (run / "probe").exists()



def test_out_holding_another_runs_probe_is_refused_and_kept(tmp_path, capsys):
    """--out pointing at another run's probe (or at files of those names) used to be overwritten."""
    a = _digits_run(tmp_path, "mlp", depth=1, width=8)
    b = _digits_run(tmp_path, "convnet", widths=(4,), whiten=False)
    out = tmp_path / "shared-out"
    first = probe(a, 60, 40, out=out, device="cpu")
    assert first["run"] == str(a.resolve())
    kept = (out / "probe.json").read_text()
    assert json.loads(kept)["run"] == str(a.resolve())
    assert probe(a / "model.safetensors", 60, 40, out=out, device="cpu")["run"] == first["run"]  # same run: replaced
    assert main(["probe", str(b), "--out", str(out), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert f"already holds probe.json, probe.png: the probe of another run ({a.resolve()})" in err
    assert (out / "probe.json").read_text() == kept and not (out / "filters.png").exists()
    other = tmp_path / "plots"
    other.mkdir()
    (other / "probe.png").write_bytes(b"someone's picture")
    with pytest.raises(RunDirError, match="files of an earlier probe or another command"):
        probe(a, 60, 40, out=other, device="cpu")
    assert (other / "probe.png").read_bytes() == b"someone's picture"
    assert probe(b, 60, 40, out=tmp_path / "b-out", device="cpu")["depths"]  # a new directory is fine



def test_missing_data_names_the_probe_flag(tmp_path, capsys):
    # the data modules said "--data.root=DIR", which `layerwise probe` refuses as an unknown argument
    run = _digits_run(tmp_path, "mlp", depth=1, width=8)
    save_config(load_config(None, ["--data.name=mnist"]), run / "config.yaml")
    assert main(["probe", str(run), "--data-root", str(tmp_path / "empty"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "mnist/mnist_train.npz" in err and "(--data-root DIR)" in err and "--data.root" not in err



def test_a_training_sample_without_some_test_classes_says_the_accuracy_is_capped(tmp_path):
    # --train-n 3 on ten classes gave 0% test accuracy against a "chance" of 100%, without a word
    from layerwise.insight.probe import format_table
    from layerwise.insight.runs import open_run

    run = open_run(_digits_run(tmp_path, "mlp", depth=1, width=8), "cpu")
    r = probe_run(run, train_n=3, test_n=50)
    _, y_tr = run.examples("train", 3, 0)
    _, y_te = run.examples("test", 50, 0)
    seen = np.isin(y_te.numpy(), y_tr.numpy())
    unseen = len(set(y_te.tolist()) - set(y_tr.tolist()))
    assert unseen > 1 and f"{unseen} of the test sample's classes are not in the training sample" in r["note"]
    assert f"at most {100 * seen.mean():.2f}%" in r["note"] and "note: " in format_table(r)
    assert all(d["test_accuracy"] <= seen.mean() for d in r["depths"])
    assert "note" not in probe_run(run, train_n=300, test_n=50)


def test_open_run_pads_sentences_of_different_lengths():
    # a text-classes split holds sentences of different lengths: examples() pads them as the loader does
    from layerwise.data import DatasetInfo
    from layerwise.data.datasets import Dataset
    from layerwise.insight.runs import LoadedRun

    info = DatasetInfo(name="t", in_shape=(6,), num_classes=2, classes=["a", "b"], scale=1.0, mean=[], std=[],
                       extra={"text": {"id_offset": 1, "pad_id": 0}})
    seqs = [torch.tensor([3, 4]), torch.tensor([5, 6, 7, 8]), torch.tensor([9])]
    ds = Dataset(info=info, x_train=seqs, y_train=torch.tensor([0, 1, 0]), x_test=seqs, y_test=torch.tensor([1, 1, 0]))
    run = LoadedRun(path=Path("t"), model=torch.nn.Identity(), meta={}, info=info, task=None, cfg=None,
                    device=torch.device("cpu"), _dataset=ds)
    x, y = run.examples("train", 3)
    assert x.tolist() == [[3, 4, 0, 0], [5, 6, 7, 8], [9, 0, 0, 0]] and y.tolist() == [0, 1, 0]


def test_every_model_family_is_probed_or_refused():
    # a new family must say where its blocks' outputs are, or why it cannot be probed
    import layerwise.models  # noqa: F401  (registers every family)
    from layerwise.insight.probe import PROBED, REFUSED
    from layerwise.models.base import Model

    def subclasses(cls):
        for c in cls.__subclasses__():
            yield c
            yield from subclasses(c)

    names = {c.__name__ for c in subclasses(Model) if c.__module__.startswith("layerwise.models")
             and not c.__name__.startswith("_")}
    assert {"ConvNet", "ResNet", "MLP", "ViT", "TextTransformer", "GPT"} <= names
    assert names <= set(PROBED) | set(REFUSED), names - set(PROBED) - set(REFUSED)

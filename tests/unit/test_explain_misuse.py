"""layerwise explain used the wrong way: arguments of the wrong type or range (Python API and CLI),
a model with NaN weights, an input whose output overflows, --out naming a file, and a large batch
of inputs that must reach the model in chunks. Each was found by trying to break the command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("captum")

from layerwise.cli import main
from layerwise.config import ConfigError
from layerwise.data import DataError, DatasetInfo
from layerwise.insight.explain import explain
from layerwise.insight.explain_checks import MAX_STEPS
from layerwise.models import create_model
from layerwise.train.run import RunDirError, save_model


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 4 x 4 one-channel convnet (2 classes) saved as a model file in its own folder."""
    torch.manual_seed(0)
    m = create_model("convnet", in_shape=(1, 4, 4), num_classes=2, widths=(4,), whiten=False)
    info = DatasetInfo("tiny", (1, 4, 4), 2, ["a", "b"], 1.0, [0.5], [0.25])
    path = tmp_path_factory.mktemp("tiny")
    save_model(path / "model.safetensors", m, {"model": m.config, "data": info.to_dict(),
                                               "task": {"name": "classify"}})
    np.save(path / "x.npy", np.random.default_rng(0).random((10, 1, 4, 4)).astype(np.float32))
    return path


def test_python_api_arguments_of_the_wrong_type_are_refused_before_any_work(tiny_run):
    x = tiny_run / "x.npy"
    # one path (str or Path) is one input, not a list of its characters
    for one in (str(x), x):
        r = explain(str(tiny_run), one, method="saliency", device="cpu")
        assert len(r) == 10 and r[0]["input"] == f"{x}[0]"
    missing = str(tiny_run / "no-such-run")  # checked before the run is opened: ConfigError, not RunDirError
    bad = [({"n": "3", "split": "test"}, r"--n takes a whole number >= 1, got '3'"),
           ({"steps": 2.5}, r"--steps takes a whole number >= 2 and <= 2048, got 2.5"),
           ({"steps": MAX_STEPS + 1}, r"<= 2048, got 2049.*20 to 300 are usual"),
           ({"steps": True}, "got True"),
           ({"internal_batch_size": 0}, "--internal-batch-size takes a whole number >= 1, got 0"),
           ({"tolerance": float("nan")}, r"--tolerance is a fraction >= 0.*got nan"),
           ({"tolerance": -0.1}, "got -0.1"),
           ({"tolerance": "0.1"}, "got '0.1'"),
           ({"target": 3.5}, r"--target is a class name or an output index \(int\), got 3.5"),
           ({"target": True}, "got True"),
           ({"method": None}, "unknown --method 'None'"),
           ({"seed": 2**80}, "--seed is a whole number that fits 64 bits"),  # before: "Overflow when unpacking"
           ({"seed": "a"}, "got 'a'")]
    for kw, message in bad:
        inputs = () if "split" in kw else [str(x)]
        with pytest.raises(ConfigError, match=message):
            explain(missing, inputs, **kw)
    with pytest.raises(ConfigError, match=r"inputs are file paths \(a list of str or Path\), got list"):
        explain(missing, [1, 2])
    with pytest.raises(RunDirError, match="does not exist"):  # None is no inputs: --split then decides
        explain(missing, None, split="test")
    import layerwise

    # before: "'Linear(in_features=2, ...)' does not exist" (the module's repr taken for a path)
    with pytest.raises(ConfigError, match="not a torch module.*attribute"):
        layerwise.explain(torch.nn.Linear(2, 2), split="test")
    with pytest.raises(ConfigError, match="not a value of type NoneType"):
        layerwise.explain(None, split="test")
    assert layerwise.explain(Path(tiny_run), x, method="saliency", device="cpu")[0]["input"] == f"{x}[0]"


def test_nan_weights_and_overflowing_outputs_are_refused(tiny_run, tmp_path, capsys):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(tiny_run / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    state = load_file(tiny_run / "model.safetensors")
    name = next(k for k, v in state.items() if v.dim() == 4)
    state[name][0, 0, 0, 0] = float("nan")
    (tmp_path / "nan").mkdir()
    save_file(state, tmp_path / "nan" / "model.safetensors", metadata=meta)
    x = str(tiny_run / "x.npy")
    # before: "predicted b (p = nan); explaining a", exit 0, NaN in summary.json and advice to raise --steps
    assert main(["explain", str(tmp_path / "nan"), x, "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert f"holds NaN or Inf weights ({name})" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "nan" / "explain").exists()
    big = np.full((1, 1, 4, 4), 3e38, np.float32)  # finite, but the first layer's sums overflow
    np.save(tmp_path / "big.npy", big)
    with pytest.raises(DataError, match=r"output for input '.*big.npy' is NaN or Inf"):
        explain(str(tiny_run), [str(tmp_path / "big.npy")], device="cpu")


def test_out_naming_a_file_is_refused_before_the_attributions(tiny_run, tmp_path, capsys, monkeypatch):
    import layerwise.insight.explain as ex

    (tmp_path / "results").write_text("keep me")
    monkeypatch.setattr(ex, "attribute", lambda *a, **k: pytest.fail("attributions computed for a bad --out"))
    for out, message in ((tmp_path / "results", "is a file"), (tmp_path / "results" / "sub", "lies under the file")):
        assert main(["explain", str(tiny_run), str(tiny_run / "x.npy"), "--out", str(out), "--device", "cpu"]) == 2
        assert message in capsys.readouterr().err
    assert (tmp_path / "results").read_text() == "keep me"


def test_many_inputs_reach_the_model_in_chunks(tiny_run, tmp_path, monkeypatch):
    from layerwise.insight import runs

    seen: list[int] = []
    opened = runs.open_run

    def spy(*a, **k):
        run = opened(*a, **k)
        run.model.register_forward_pre_hook(lambda _m, inp: seen.append(len(inp[0])))
        return run

    monkeypatch.setattr(runs, "open_run", spy)
    r = explain(str(tiny_run), [str(tiny_run / "x.npy")], method="saliency", internal_batch_size=4, device="cpu")
    assert len(r) == 10 and seen and max(seen) == 4  # the prediction pass too (it ran all 10 at once before)
    with torch.no_grad():  # chunking changes no number: the predictions are those of one batch
        m = runs.open_run(str(tiny_run), "cpu").pixel_model()
        p = m(torch.from_numpy(np.load(tiny_run / "x.npy"))).softmax(1)
    assert [x["probability"] for x in r] == pytest.approx(p.max(1).values.tolist(), abs=1e-6)


def test_multilabel_explains_its_most_probable_label_with_predicts_probability(tiny_run, tmp_path, capsys):
    torch.manual_seed(1)
    m = create_model("convnet", in_shape=(1, 4, 4), num_classes=3, widths=(4,), whiten=False)
    info = DatasetInfo("tiny", (1, 4, 4), 3, ["cat", "dog", "sun"], 1.0, [0.5], [0.25], task="multilabel")
    save_model(tmp_path / "model.safetensors", m, {"model": m.config, "data": info.to_dict(),
                                                   "task": {"name": "multilabel"}})
    x = np.load(tiny_run / "x.npy")[:3]
    np.save(tmp_path / "x3.npy", x)
    with torch.no_grad():
        p = torch.sigmoid(m.eval()((torch.from_numpy(x) - 0.5) / 0.25))  # (3, 3)
    r = explain(str(tmp_path), [str(tmp_path / "x3.npy")], device="cpu", steps=16)
    # before: the first label's raw logit ("cat = 0.009") where `layerwise predict` shows probabilities
    assert [e["target"] for e in r] == p.argmax(1).tolist()
    assert [e["probability"] for e in r] == pytest.approx(p.max(1).values.tolist(), abs=1e-6)
    assert [e["labels"] for e in r] == [[n for n, q in zip(info.classes, row) if q >= 0.5] for row in p.tolist()]
    r = explain(str(tmp_path), [str(tmp_path / "x3.npy")], device="cpu", method="saliency", target="sun")
    assert [e["probability"] for e in r] == pytest.approx(p[:, 2].tolist(), abs=1e-6)
    assert main(["explain", str(tmp_path), str(tmp_path / "x3.npy"), "--target", "dog", "--method", "saliency",
                 "--device", "cpu"]) == 0
    assert f"explaining dog (p = {p[0, 1]:.3f})" in capsys.readouterr().out


def test_a_lost_race_for_the_results_folder_takes_the_next_number(tmp_path, monkeypatch):
    from layerwise.insight.commands import fresh_dir

    (tmp_path / "ig-001").mkdir()
    (tmp_path / "ig-001" / "summary.json").write_text("{}")
    # another command claimed ig-001 between this one's listing and its mkdir (before: FileExistsError,
    # after minutes of attributions)
    monkeypatch.setattr(Path, "iterdir", lambda self: iter(()))
    assert fresh_dir(tmp_path, "ig").name == "ig-002"
    assert (tmp_path / "ig-001" / "summary.json").read_text() == "{}"


def test_a_shipped_model_without_data_root_names_what_was_given():
    from layerwise.insight.runs import open_run

    run = open_run("pretrained:mnist-convnet", "cpu")
    with pytest.raises(RunDirError, match=r"^'pretrained:mnist-convnet' is a model file without its run directory"):
        run.examples("test", 2)


def test_byte_tokens_read_as_the_text():
    from types import SimpleNamespace

    from layerwise.data.tokenizers import ByteTokenizer
    from layerwise.insight.explain import _token_strings

    text = "café 😀 ok"
    ids = [i + 1 for i in ByteTokenizer().encode(text)]  # id_offset 1: 0 is padding
    run = SimpleNamespace(info=SimpleNamespace(extra={"tokenizer": ByteTokenizer().to_dict(),
                                                      "text": {"id_offset": 1}}))
    (row,) = _token_strings(run, torch.tensor([ids + [0, 0]]))
    # before: "é" as two U+FFFD tokens and the emoji as four
    assert len(row) == len(ids) + 2 and row[-2:] == ["", ""]
    assert row[:6] == ["c", "a", "f", "é", "·", " "] and row[6:10] == ["😀", "·", "·", "·"]
    assert "".join(t for t in row if t != "·") == text


def test_the_baseline_used_is_recorded_and_mean_is_refused_for_text(tiny_run, tmp_path):
    from layerwise.data.tokenizers import build_tokenizer

    x = [str(tiny_run / "x.npy")]
    assert explain(str(tiny_run), x, device="cpu", method="occlusion")[0]["baseline"] == "zero"  # auto: an image
    assert explain(str(tiny_run), x, device="cpu", method="occlusion", baseline="mean")[0]["baseline"] == "mean"
    assert explain(str(tiny_run), x, device="cpu", method="saliency")[0]["baseline"] is None
    tok = build_tokenizer("word", "a good film . a bad film .", 20)
    info = DatasetInfo("text-classes", (6,), 2, ["neg", "pos"], 1.0, [0.0], [1.0],
                       extra={"tokenizer": tok.to_dict(), "text": {"max_length": 6, "pad_id": 0, "id_offset": 1}})
    m = create_model("ngram-bag", in_shape=(6,), num_classes=2, vocab_size=tok.vocab_size + 1, n_embd=2)
    save_model(tmp_path / "model.safetensors", m, {"model": m.config, "data": info.to_dict(),
                                                   "task": {"name": "classify"}})
    (tmp_path / "s.txt").write_text("a good film\n")
    # before: accepted, the padding baseline used, and "baseline": "mean" written to summary.json
    with pytest.raises(ConfigError, match="--baseline mean is not defined for text"):
        explain(str(tmp_path), [str(tmp_path / "s.txt")], device="cpu", baseline="mean")
    assert explain(str(tmp_path), [str(tmp_path / "s.txt")], device="cpu", steps=8)[0]["baseline"] == "padding"


def test_a_run_whose_data_moved_is_told_about_data_root(tiny_run, tmp_path):
    import shutil

    from layerwise.config import Config, save_config
    from layerwise.insight.runs import open_run

    shutil.copy(tiny_run / "model.safetensors", tmp_path / "model.safetensors")
    cfg = Config()
    cfg.data.name, cfg.data.path, cfg.data.root = "csv", "rows.csv", str(tmp_path / "moved")
    save_config(cfg, tmp_path / "config.yaml")
    # before: only "fix data.path or data.root", keys of `layerwise train`, not of this command
    with pytest.raises(DataError, match=r"reads the run's data from '.*moved'; give the folder that holds it "
                                        r"with --data-root DIR"):
        explain(str(tmp_path), split="test", n=1, device="cpu")
    cfg.data.name = "mnist"
    save_config(cfg, tmp_path / "config.yaml")
    with pytest.raises(DataError, match="--data-root DIR"):
        open_run(tmp_path, "cpu").examples("test", 1)


def test_a_checkpoint_a_folder_of_runs_and_an_unfinished_run_are_named(tiny_run, tmp_path):
    import shutil

    from layerwise.insight.runs import open_run

    run = tmp_path / "runs" / "a"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "step_00000010.pt").write_bytes(b"torch state")
    (run / "config.yaml").write_text("train: {epochs: 1}\n")
    # before: "not a readable safetensors file ... It may be truncated" and "no saved model at .../model.safetensors"
    with pytest.raises(RunDirError, match=r"is a training checkpoint.*once `layerwise train --resume .*a` has"):
        open_run(run / "checkpoints" / "step_00000010.pt", "cpu")
    with pytest.raises(RunDirError, match=r"has not finished.*layerwise train --resume"):
        open_run(run, "cpu")
    shutil.copy(tiny_run / "model.safetensors", run / "model.safetensors")
    with pytest.raises(RunDirError, match=r"training checkpoint.*give the run directory '.*a' \(it holds model"):
        explain(str(run / "checkpoints" / "step_00000010.pt"), split="test")
    with pytest.raises(RunDirError, match=r"is a folder of runs, not a run; give one of them: .*a\.$"):
        open_run(tmp_path / "runs", "cpu")


def test_numeric_class_names_are_not_confused_with_output_indices(tiny_run, tmp_path, capsys):
    torch.manual_seed(2)
    m = create_model("convnet", in_shape=(1, 4, 4), num_classes=2, widths=(4,), whiten=False)
    info = DatasetInfo("mnist", (1, 4, 4), 2, ["3", "8"], 1.0, [0.5], [0.25])  # a class subset of digits
    save_model(tmp_path / "model.safetensors", m, {"model": m.config, "data": info.to_dict(),
                                                   "task": {"name": "classify"}})
    x = [str(tiny_run / "x.npy")]
    # before: --target 1 explained class "8" (output 1) without a word
    assert main(["explain", str(tmp_path), *x, "--target", "1", "--device", "cpu"]) == 2
    assert "--target '1' is not a class of this model (3, 8); its classes are numbers" in capsys.readouterr().err
    r = explain(str(tmp_path), x, method="saliency", target="8", device="cpu")
    assert r[0]["target"] == 1 and r[0]["target_name"] == "8"
    assert explain(str(tmp_path), x, method="saliency", target=0, device="cpu")[0]["target_name"] == "3"

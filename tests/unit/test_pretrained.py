"""The shipped pretrained models: every registry entry agrees with its file, its recipe and the
package data; names resolve, and a wrong name or a changed file is a clear error."""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import tomllib
from pathlib import Path

import pytest

from layerwise.cli import main
from layerwise.config import ConfigError, load_config
from layerwise.models import pretrained as P
from layerwise.models.pretrained import (
    PREFIX,
    PRETRAINED,
    PretrainedError,
    list_pretrained,
    resolve_pretrained,
)
from layerwise.train.run import load_model

REPO = Path(__file__).resolve().parents[2]
EXPECTED = {"mnist-convnet", "cifar10-convnet", "cifar10-animals-convnet", "shakespeare-gpt"}


def test_the_registry_ships_the_models_the_issue_asks_for():
    assert set(PRETRAINED) == EXPECTED
    assert [p.name for p in list_pretrained()] == list(PRETRAINED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_entry_agrees_with_its_file_and_recipe(name):
    entry = PRETRAINED[name]
    path = resolve_pretrained(PREFIX + name)
    assert path == resolve_pretrained(name) == entry.path
    assert path.stat().st_size < P.MAX_BYTES  # under 2 MB
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256
    model, meta = load_model(path)
    config = meta["model"]
    assert config["name"] == entry.model
    assert {k: config[k] for k in entry.args} == {k: list(v) if isinstance(v, tuple) else v
                                                  for k, v in entry.args.items()}
    # the figure in the registry is the one the run measured and wrote into the file
    assert meta["metrics"][entry.metric] == pytest.approx(entry.value, abs=5e-5)
    assert meta["data"]["name"] == entry.dataset
    if meta["data"]["task"] == "classify":
        assert tuple(meta["data"]["classes"]) == entry.classes
    # the recipe builds the same model on the same data, and its header gives the command
    cfg = load_config(REPO / entry.recipe)
    assert cfg.model.name == entry.model and cfg.data.name == entry.dataset
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in entry.args.items()} == cfg.model.args
    assert entry.command in (REPO / entry.recipe).read_text()
    assert sum(p.numel() for p in model.parameters()) > 0


def test_package_data_carries_every_shipped_file():
    """pyproject's package-data patterns match each file, so a wheel or an install carries it."""
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["layerwise"]
    for entry in list_pretrained():
        assert any(fnmatch.fnmatch(f"pretrained/{entry.file}", p) for p in patterns), entry.file


def test_unknown_name_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match=r"'pretrained:mnist-convent' is not a shipped pretrained model "
                                          r"\(did you mean pretrained:mnist-convnet\?\).*pretrained:shakespeare-gpt"):
        resolve_pretrained("pretrained:mnist-convent")


def test_missing_or_changed_file_is_refused(tmp_path, monkeypatch):
    entry = PRETRAINED["mnist-convnet"]
    fake = dataclasses.replace(entry, file="nowhere.safetensors")
    monkeypatch.setitem(PRETRAINED, "mnist-convnet", fake)
    with pytest.raises(PretrainedError, match=r"pretrained:mnist-convnet is missing .*Reinstall layerwise"):
        resolve_pretrained("pretrained:mnist-convnet")
    changed = tmp_path / "mnist-convnet.safetensors"
    changed.write_bytes(entry.path.read_bytes()[:-1] + b"\0")
    monkeypatch.setattr(P.Pretrained, "path", property(lambda self: changed))
    monkeypatch.setitem(PRETRAINED, "mnist-convnet", entry)
    with pytest.raises(PretrainedError, match=r"has sha256 .*not the .* it was shipped with.*recipes/pretrain-mnist"):
        resolve_pretrained("mnist-convnet")


def test_layerwise_models_pretrained_lists_them(capsys):
    assert main(["models", "--pretrained"]) == 0
    out = capsys.readouterr().out
    for entry in list_pretrained():
        line = next(ln for ln in out.splitlines() if ln.startswith(PREFIX + entry.name + " "))
        assert entry.model in line and entry.recipe in line and f"{entry.value:.4g}" in line
        assert f"{entry.path.stat().st_size / 1e6:.2f} MB" in line
    assert "--model.init_from=pretrained:NAME" in out


def test_predict_and_generate_take_a_shipped_model_and_run_commands_say_it_has_no_run(tmp_path, capsys):
    """predict and generate read pretrained:NAME as export and serve do (they refused it as 'no saved
    model'); info and eval, which need a run directory, say that a shipped model is not one."""
    import numpy as np
    from PIL import Image

    from layerwise.cli import main
    from layerwise.models.pretrained import resolve_pretrained
    from layerwise.train.inference import generate, predict

    img = tmp_path / "stroke.png"
    a = np.zeros((28, 28), np.uint8)
    a[4:24, 12:16] = 255  # a vertical bar: a one
    Image.fromarray(a).save(img)
    by_name = predict("pretrained:mnist-convnet", [str(img)], device="cpu")
    by_path = predict(str(resolve_pretrained("mnist-convnet")), [str(img)], device="cpu")
    assert [r["top"] for r in by_name] == [r["top"] for r in by_path] and by_name[0]["top"][0]["class"] == "1"
    assert len(generate("pretrained:shakespeare-gpt", "ROMEO:", tokens=8, device="cpu")) > len("ROMEO:")
    for command in ("info", "eval"):
        assert main([command, "pretrained:mnist-convnet"]) == 1
        assert "is a shipped model file, not a run directory" in capsys.readouterr().err

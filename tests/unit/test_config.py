import dataclasses
from pathlib import Path

import pytest

from layerwise.config import Config, ConfigError, help_text, load_config, parse_override

REPO = Path(__file__).resolve().parents[2]


def test_defaults_are_the_digits_recipe():
    a, b = load_config(), load_config(REPO / "recipes" / "digits.yaml")
    assert dataclasses.replace(b, run=a.run) == a
    assert a.data.name == "digits" and a.model.name == "resnet-digits"


def test_overrides_are_typed_and_applied():
    cfg = load_config(None, ["--train.epochs=3", "--optim.lr=0.05", "--optim.betas=[0.8, 0.9]",
                             "--train.compile=true", "--model.name=mlp", "--model.width=32"])
    assert cfg.train.epochs == 3.0 and isinstance(cfg.train.epochs, float)
    assert cfg.optim.lr == 0.05 and cfg.optim.betas == [0.8, 0.9] and cfg.train.compile is True
    assert cfg.model.name == "mlp" and cfg.model.args == {"width": 32}


@pytest.mark.parametrize("arg, needle", [
    ("--train.epocs=3", "Did you mean 'epochs'"),
    ("--optim.learning_rate=1", "optim.learning_rate"),
    ("--trian.epochs=3", "Did you mean 'train'"),
    ("--model.widht=3", "Did you mean 'width'"),
])
def test_unknown_keys_name_the_closest(arg, needle):
    extra = ["--model.name=mlp"] if "model" in arg else []
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        load_config(None, extra + [arg])


@pytest.mark.parametrize("arg", ["--train.epochs=abc", "--train.compile=3", "--data.batch_size=1.5",
                                 "--model.depth=two"])
def test_wrong_types_fail(arg):
    extra = ["--model.name=mlp"] if "model" in arg else []
    with pytest.raises(ConfigError, match="expects"):
        load_config(None, extra + [arg])


def test_value_checks():
    with pytest.raises(ConfigError, match="divisible"):
        load_config(None, ["--data.batch_size=64", "--train.grad_accum=3"])
    with pytest.raises(ConfigError, match="precision"):
        load_config(None, ["--train.precision=fp8"])
    with pytest.raises(ConfigError, match="data.translate_pad must be zero or reflect, got 'mirror'"):
        load_config(None, ["--data.translate_pad=mirror"])
    with pytest.raises(ConfigError, match="data.flip_mode must be random or alternate"):
        load_config(None, ["--data.flip_mode=always"])
    with pytest.raises(ConfigError, match="optim.muon_rest must be adamw or sgd, got 'lion'"):
        load_config(None, ["--optim.muon_rest=lion"])
    with pytest.raises(ConfigError, match="optim.muon_ns_steps must be >= 1"):
        load_config(None, ["--optim.muon_ns_steps=0"])
    with pytest.raises(ConfigError, match="train.lookahead_decay must be in"):
        load_config(None, ["--train.lookahead_decay=1.0"])
    with pytest.raises(ConfigError, match="are epochs and must be >= 0"):
        load_config(None, ["--train.freeze_stem_after=-1"])


def test_missing_and_bad_recipes(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_parse_override_forms():
    assert parse_override("--a.b=1") == ("a", "b", 1)
    assert parse_override("--run.dir=x/y") == ("run", "dir", "x/y")
    with pytest.raises(ConfigError, match="--section.key=value"):
        parse_override("--epochs")


def test_help_documents_every_key():
    text = help_text()
    for section in ("data", "optim", "train", "run"):
        for f in dataclasses.fields(getattr(Config(), section)):
            assert f"{section}.{f.name}" in text


def test_every_recipe_loads_and_validates():
    recipes = sorted((REPO / "recipes").glob("*.yaml"))
    assert len(recipes) >= 8
    for path in recipes:
        cfg = load_config(path)  # unknown keys, wrong types and bad values raise ConfigError
        assert cfg.run.name == path.stem

import dataclasses
import re
from pathlib import Path

import pytest

from layerwise.config import Config, ConfigError, help_text, load_config, parse_override
from layerwise.rl.config import RLConfig, is_rl_recipe

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
        rl = is_rl_recipe(path)  # layerwise rl's recipes (cartpole, acrobot) have their own sections
        cfg = load_config(path, cls=RLConfig if rl else None)  # unknown keys, wrong types, bad values: ConfigError
        assert cfg.run.name == path.stem
    assert sum(map(is_rl_recipe, recipes)) == 2


# ------------------------------------------------------------------ values typed at every depth
def test_list_elements_are_coerced_in_recipes_and_overrides(tmp_path):
    # YAML 1.1 reads 9e-1 (no dot) as the string '9e-1'; inside a list too
    recipe = tmp_path / "r.yaml"
    recipe.write_text("optim:\n  betas: [9e-1, 0.999]\n  lr: 1e-3\ntrain:\n  max_steps: 1e3\n")
    cfg = load_config(recipe)
    assert cfg.optim.betas == [0.9, 0.999] and all(type(b) is float for b in cfg.optim.betas)
    assert cfg.optim.lr == 0.001 and cfg.train.max_steps == 1000 and type(cfg.train.max_steps) is int
    cfg = load_config(None, ["--optim.betas=[9e-1,0.999]"])
    assert cfg.optim.betas == [0.9, 0.999] and type(cfg.optim.betas[0]) is float
    cfg = load_config(None, ["--model.name=resnet", "--model.widths=[8,1.6e1]", "--model.layers=[1,1]"])
    assert cfg.model.args["widths"] == [8, 16] and all(type(w) is int for w in cfg.model.args["widths"])


@pytest.mark.parametrize("arg, needle", [
    ("--optim.betas=[a,0.999]", "'optim.betas[0]' expects float, got str 'a'"),
    ("--optim.betas=0.9", "'optim.betas' expects list of float"),
    ("--model.widths=[8,x]", "'model.widths[1]' expects a whole number (int), got 'x'"),
    ("--model.widths=[8,1.5]", "'model.widths[1]' expects a whole number (int), got 1.5"),
])
def test_list_elements_of_the_wrong_type_are_refused_by_position(arg, needle):
    extra = ["--model.name=resnet"] if "model" in arg else []
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_config(None, extra + [arg])


def test_yaml_booleans_for_text_keys():
    # on the command line the text is taken as typed, so the suggested form works
    cfg = load_config(None, ["--model.name=gpt", "--model.mlp=off", "--run.name=2024", "--run.dir=012",
                             "--data.label_sep=|", "--data.path=#notes", '--data.target="quoted"'])
    assert cfg.model.args["mlp"] == "off" and cfg.run.name == "2024" and cfg.run.dir == "012"
    # YAML would read | as a block scalar and # as a comment: a text key takes them as typed
    assert cfg.data.label_sep == "|" and cfg.data.path == "#notes" and cfg.data.target == ["quoted"]
    # in a recipe YAML already made it a boolean: refused, with the hint to quote it
    with pytest.raises(ConfigError) as e:
        from layerwise.config import Config, merge
        merge(Config(), {"train": {"eval_tta": False}}, "recipe r.yaml")
    msg = str(e.value)
    assert "train.eval_tta" in msg and "boolean" in msg and 'eval_tta: "' in msg and "--train.eval_tta=VALUE" in msg


def test_sweep_spec_numbers_are_coerced(tmp_path):
    from layerwise.scaling.sweep import load_spec

    spec = tmp_path / "s.yaml"
    spec.write_text("axes:\n  steps: ['--train.max_steps=1e1', '--optim.betas=[9e-1,0.99]']\n"
                    "budget_seconds: 1e3\n")
    s = load_spec(spec)
    assert s.budget_seconds == 1000.0
    from layerwise.scaling.sweep import plan
    points = plan(s)
    assert points[0].config.train.max_steps == 10 and points[1].config.optim.betas == [0.9, 0.99]

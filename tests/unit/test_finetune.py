"""Fine-tuning's parts: the head every family declares, loading by name, freezing, discriminative rates."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch
from safetensors.torch import save_file
from test_models import ALL_MODELS, RECSYS, _example_input, _in_shape, _text_kwargs

from layerwise.config import ConfigError, load_config
from layerwise.models import GPT, create_model, list_models
from layerwise.train.finetune import (
    BodyFreezing,
    body_groups,
    finetune_config,
    head_keys,
    load_weights,
    read_source,
    summary_fields,
)
from layerwise.train.optim import build_optimizer
from layerwise.train.run import save_model


def _model(name: str, num_classes: int, **kw):
    return create_model(name, in_shape=_in_shape(name), num_classes=num_classes, **_text_kwargs(name), **kw)


# ------------------------------------------------------------------ the head, over the registry
@pytest.mark.parametrize("name", ALL_MODELS + ["mlp-ensemble", "actor-critic-gaussian"])
def test_reset_classifier_replaces_exactly_the_declared_head(name: str) -> None:
    """For every family: reset_classifier changes the tensors under head_names() and nothing else,
    and the model then predicts the new number of classes."""
    kw = {"ensemble": 2} if name == "mlp-ensemble" else {"policy": "gaussian"} if name.endswith("gaussian") else {}
    name = {"mlp-ensemble": "mlp", "actor-critic-gaussian": "actor-critic"}.get(name, name)
    torch.manual_seed(0)
    model = _model(name, 10, **kw)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.reset_classifier(3)
    after = model.state_dict()
    head = head_keys(model)
    assert head, f"{name} declares no head tensors"
    for k, v in after.items():
        if k in head:
            assert 3 in v.shape and (k not in before or before[k].shape != v.shape), k  # rebuilt for 3 classes
        else:
            assert torch.equal(v, before[k]), f"{k} is not head but changed"
    assert set(before) - set(after) <= {k for k in before if any(k.startswith(h) for h in model.head_names())}
    model.eval()
    with torch.no_grad():
        out = model(_example_input(name, 2))
    assert out.shape[-1 if isinstance(model, GPT) or name not in ("fno", "cnn1d") else 1] == 3


def test_recommenders_have_no_classifier_to_reset() -> None:
    """mf and autorec predict one rating with no head tensors (fc is Identity); neumf's head is fc."""
    assert RECSYS <= set(list_models())
    kw = {"num_users": 5, "num_items": 7}
    assert head_keys(create_model("mf", in_shape=(2,), num_classes=1, **kw)) == set()
    assert head_keys(create_model("neumf", in_shape=(2,), num_classes=1, **kw)) == {"fc.weight", "fc.bias"}


def test_a_head_tied_to_the_embedding_is_body() -> None:
    gpt = create_model("gpt-tiny", in_shape=(16,), num_classes=50)
    assert gpt.fc.weight is gpt.wte.weight and head_keys(gpt) == set()
    gpt.reset_classifier(7)  # untied: now a head of its own
    assert head_keys(gpt) == {"fc.weight"}


# ------------------------------------------------------------------ loading
def _source(tmp_path, name="mlp", num_classes=5, classes=None, task="classify", **kw):
    torch.manual_seed(1)
    model = create_model(name, in_shape=(1, 8, 8), num_classes=num_classes, **kw)
    meta = {"model": model.config, "data": {"classes": classes or [str(i) for i in range(num_classes)],
                                            "task": task}, "task": {"name": task}, "metrics": {"test_accuracy": 0.9}}
    path = tmp_path / "src.safetensors"
    save_model(path, model, meta)
    return path, {k: v.clone() for k, v in model.state_dict().items()}


def test_body_loads_by_name_and_a_new_head_stays_as_initialized(tmp_path) -> None:
    path, src = _source(tmp_path, norm="batch")
    torch.manual_seed(2)
    model = create_model("mlp", in_shape=(1, 8, 8), num_classes=3, norm="batch")
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    record = load_weights(model, read_source(str(path)), classes=["a", "b", "c"], task="classify")
    state = model.state_dict()
    body = [k for k in state if not k.startswith("fc.")]
    assert body and all(torch.equal(state[k], src[k]) for k in body)  # BatchNorm statistics included
    assert any("running_mean" in k for k in body)
    assert torch.equal(state["fc.weight"], fresh["fc.weight"]) and state["fc.weight"].shape == (3, 256)
    assert record["head"] == "new" and record["reinitialized"] == ["fc.bias", "fc.weight"]
    assert sorted(record["loaded"]) == sorted(body)
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["source_model"] == "mlp" and record["source_metrics"] == {"test_accuracy": 0.9}
    assert record["head_reason"] == ("other outputs: fc.bias (5,) in the source, (3,) here; "
                                     "fc.weight (5, 256) in the source, (3, 256) here")
    assert summary_fields(record)["init_new_head"] == "fc.bias, fc.weight"


@pytest.mark.parametrize(("classes", "task", "kept"), [(None, "classify", True), (list("vwxyz"), "classify", False),
                                                       (None, "multilabel", False)])
def test_the_head_loads_only_when_it_means_the_same(tmp_path, classes, task, kept) -> None:
    path, src = _source(tmp_path)
    model = create_model("mlp", in_shape=(1, 8, 8), num_classes=5)
    record = load_weights(model, read_source(str(path)), classes=classes or [str(i) for i in range(5)], task=task)
    assert torch.equal(model.fc.weight, src["fc.weight"]) == kept
    assert record["head"] == ("loaded" if kept else "new")
    if not kept:
        assert ("other classes" if classes else "another task") in record["head_reason"]


def test_a_body_of_another_shape_is_refused_naming_each_tensor_and_nothing_loads(tmp_path) -> None:
    path, _ = _source(tmp_path, width=32)
    model = create_model("mlp", in_shape=(1, 8, 8), num_classes=5, width=48)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError) as e:
        load_weights(model, read_source(str(path)))
    msg = str(e.value)
    assert "4 of another shape" in msg
    assert "blocks.0.linear.weight (32, 64) in the source, (48, 64) in the model" in msg
    assert "--model.width=32" in msg  # the fix, from the source's metadata
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_missing_and_unexpected_tensors_are_named(tmp_path) -> None:
    _, src = _source(tmp_path)
    del src["blocks.1.linear.bias"]
    src["extra.weight"] = torch.zeros(2)
    save_file(src, str(tmp_path / "bare.safetensors"))  # another program's file: no layerwise metadata
    model = create_model("mlp", in_shape=(1, 8, 8), num_classes=5)
    with pytest.raises(ConfigError, match=r"1 missing from the source \(blocks\.1\.linear\.bias\), and 1 in the "
                                          r"source but not in the model \(extra\.weight\)"):
        load_weights(model, read_source(str(tmp_path / "bare.safetensors")))


def test_a_bare_file_with_wrapper_prefixes_loads(tmp_path) -> None:
    _, src = _source(tmp_path)
    save_file({f"module.{k}": v for k, v in src.items()}, str(tmp_path / "ddp.safetensors"))
    model = create_model("mlp", in_shape=(1, 8, 8), num_classes=5)
    with pytest.warns(UserWarning, match="module."):
        record = load_weights(model, read_source(str(tmp_path / "ddp.safetensors")))
    assert record["head"] == "loaded" and record["source_model"] is None  # no metadata: shapes decide
    assert all(torch.equal(model.state_dict()[k], v) for k, v in src.items())


def test_a_language_model_with_tied_weights_loads_from_its_file(tmp_path) -> None:
    torch.manual_seed(0)
    lm = create_model("gpt-tiny", in_shape=(16,), num_classes=50)
    save_model(tmp_path / "lm.safetensors", lm, {"model": lm.config})  # stores wte.weight once
    torch.manual_seed(1)
    other = create_model("gpt-tiny", in_shape=(16,), num_classes=50)
    load_weights(other, read_source(str(tmp_path / "lm.safetensors")))
    assert other.fc.weight is other.wte.weight and torch.equal(other.wte.weight, lm.wte.weight)


@pytest.mark.parametrize(("make", "match"), [
    (lambda d: (d / "w.pt").write_bytes(b"x") and d / "w.pt", "not a .safetensors file"),
    (lambda d: (d / "config.yaml").write_text("{}") and d, "has not finished"),
    (lambda d: d / "nothing.safetensors", "no saved model"),
    (lambda d: (d / "bad.safetensors").write_bytes(b"garbage") and d / "bad.safetensors", "not a readable"),
])
def test_unusable_sources_are_config_errors(tmp_path, make, match) -> None:
    with pytest.raises(ConfigError, match=match):
        read_source(str(make(tmp_path)))


# ------------------------------------------------------------------ layers, freezing, rates
@pytest.mark.parametrize(("name", "layers"), [("resnet20", 10), ("convnet", 4), ("vit", 7), ("mlp", 2)])
def test_body_groups_cover_the_body_once_bottom_to_top(name: str, layers: int) -> None:
    model = _model(name, 10)
    groups = body_groups(model)
    assert len(groups) == layers
    ids = [id(p) for params, _ in groups for p in params]
    head = {id(p) for p in model.fc.parameters()}
    assert sorted(ids) == sorted(id(p) for p in model.parameters() if id(p) not in head)
    named = {id(p): n for n, p in model.named_parameters()}
    assert named[id(groups[-1][0][-1])] in ("blocks.8.residual.fn.1.norm.bias", "blocks.2.norm2.bias", "ln_f.bias",
                                        "blocks.1.linear.bias")  # what follows the last block joins it
    norms = [m for _, ns in groups for m in ns]
    assert len(norms) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_an_ensemble_groups_its_members_by_block() -> None:
    model = create_model("mlp", in_shape=(1, 8, 8), num_classes=3, ensemble=2)
    groups = body_groups(model)
    named = {id(p): n for n, p in model.named_parameters()}
    assert [sorted(named[id(p)] for p in params) for params, _ in groups] == [
        [f"members.{m}.blocks.{i}.linear.{w}" for m in (0, 1) for w in ("bias", "weight")] for i in (0, 1)]


@pytest.mark.parametrize(("gradual", "frozen"), [(False, [3, 3, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0]),
                                                 (True, [3, 3, 3, 3, 2, 2, 1, 1, 0, 0, 0, 0])])
def test_body_freezing_by_step(gradual: bool, frozen: list[int]) -> None:
    torch.manual_seed(0)
    model = create_model("resnet-digits", in_shape=(1, 8, 8), num_classes=4)  # stem, blocks.0, blocks.1
    f = BodyFreezing(model, freeze_steps=4, steps_per_epoch=2, gradual=gradual)
    assert [f.frozen(s) for s in range(12)] == frozen
    model.train()
    f.apply(5)  # gradual: blocks.1 trains, stem and blocks.0 do not; all: everything trains
    trains = {n: p.requires_grad for n, p in model.named_parameters()}
    assert trains["fc.weight"] and trains["blocks.1.residual.fn.0.conv.weight"]
    assert trains["stem.0.conv.weight"] != gradual and trains["blocks.0.residual.fn.0.conv.weight"] != gradual
    assert model.stem[0].norm.training != gradual and model.blocks[1].residual.fn[0].norm.training
    model.train()  # what an evaluation does on its way out; the next step puts the frozen norms back
    f.apply(5)
    assert model.stem[0].norm.training != gradual


def test_discriminative_rates_per_body_layer_in_the_optimizer_groups() -> None:
    model = create_model("resnet-digits", in_shape=(1, 8, 8), num_classes=4)  # 3 body layers
    opt = build_optimizer(model, "adamw", lr=0.01, weight_decay=0.1, body_lr_scale=0.1, no_decay_lr_scale=2.0)
    lr = {g["name"]: g["base_lr"] for g in opt.param_groups}
    assert list(lr)[:2] == ["decay", "no_decay"]  # the head first: the logged lr is the head's
    assert lr["decay"] == 0.01 and lr["no_decay"] == 0.02
    for i, scale in enumerate([0.1, 0.1 ** (2 / 3), 0.1 ** (1 / 3)]):  # geometric from 0.1 up to the head's 1
        assert math.isclose(lr[f"body{i}_decay"], 0.01 * scale) and math.isclose(lr[f"body{i}_no_decay"], 0.02 * scale)
    named = {id(p): n for n, p in model.named_parameters()}
    assert {named[id(p)] for g in opt.param_groups if g["name"].startswith("body0_") for p in g["params"]} == {
        "stem.0.conv.weight", "stem.0.norm.weight", "stem.0.norm.bias"}
    everything = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(everything) == sorted(id(p) for p in model.parameters())
    muon = build_optimizer(model, "muon", lr=0.01, muon_lr=0.02, body_lr_scale=0.5)
    names = {g["name"]: g["base_lr"] for g in muon.param_groups}
    assert math.isclose(names["body0_muon"], 0.01) and math.isclose(names["body2_muon"], 0.02 * 0.5 ** (1 / 3))
    assert names["adamw_decay"] == 0.01 and math.isclose(names["adamw_body0_no_decay"], 0.005)


def test_no_split_at_scale_one() -> None:
    model = create_model("mlp", in_shape=(1, 8, 8), num_classes=4)
    assert [g["name"] for g in build_optimizer(model, "sgd", lr=0.1).param_groups] == ["decay", "no_decay"]


# ------------------------------------------------------------------ config
def test_init_from_is_a_model_key_written_only_when_set(tmp_path) -> None:
    cfg = load_config(None, ["--model.init_from=runs/a", "--model.name=mlp", "--model.width=32"])
    assert cfg.model.init_from == "runs/a" and cfg.model.args == {"width": 32}
    assert cfg.to_dict()["model"] == {"name": "mlp", "init_from": "runs/a", "width": 32}
    assert "init_from" not in load_config(None, []).to_dict()["model"]


@pytest.mark.parametrize("arg", ["--train.freeze_body_epochs=1", "--optim.body_lr_scale=0.1", "--train.unfreeze=gradual"])
def test_fine_tuning_settings_need_init_from(arg: str) -> None:
    with pytest.raises(ConfigError, match="model.init_from"):
        load_config(None, [arg])


def test_rl_refuses_init_from() -> None:
    from layerwise.rl.config import RLConfig

    with pytest.raises(ConfigError, match="layerwise rl` starts its agent from random weights"):
        load_config(None, ["--model.init_from=x.safetensors"], cls=RLConfig)


def test_finetune_config_takes_the_sources_model_unless_one_is_named(tmp_path) -> None:
    path, _ = _source(tmp_path, width=32, depth=1)
    cfg, notes = finetune_config(str(path), None, ["--data.name=digits"])
    assert (cfg.model.name, cfg.model.args, cfg.model.init_from) == ("mlp", {**cfg.model.args, "width": 32,
                                                                             "depth": 1}, str(path))
    assert notes[0] == f"model mlp (depth=1, width=32), as in {path}"
    assert "freeze_body_epochs=1 --optim.body_lr_scale=0.1" in notes[1]
    cfg, notes = finetune_config(str(path), None, ["--model.name=convnet", "--train.freeze_body_epochs=1"])
    assert cfg.model.name == "convnet" and cfg.model.args == {} and "freeze_body_epochs=1," in notes[-1]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"model": {"name": "resnet-digits"}}))
    assert finetune_config(str(path), recipe)[0].model.name == "resnet-digits"
    with pytest.raises(ConfigError, match="leave --model.init_from out"):
        finetune_config(str(path), None, ["--model.init_from=y"])


def test_init_from_reads_a_torchvision_file_through_the_hub_key_maps(tmp_path):
    """A safetensors file of torchvision's resnet18 names (the published names and shapes, from
    tests/unit/hub_keys.json) is recognized and converted: the source describes layerwise's
    resnet18 with 1000 classes and its tensors carry layerwise's names."""
    import json as _json
    from pathlib import Path as _Path

    from safetensors.torch import save_file

    from layerwise.train.finetune import read_source

    shapes = _json.loads((_Path(__file__).with_name("hub_keys.json")).read_text())["tensors"]["torchvision:resnet18"]
    g = torch.Generator().manual_seed(0)
    state = {k: (torch.randn(s, generator=g) if s else torch.tensor(3)) for k, s in shapes.items()}
    state = {k: (v.long() if k.endswith("num_batches_tracked") else v) for k, v in state.items()}
    save_file(state, str(tmp_path / "resnet18.safetensors"))
    src = read_source(tmp_path / "resnet18.safetensors")
    assert src.adapter == "hub" and src.model["name"] == "resnet18" and src.model["num_classes"] == 1000
    assert "fc.weight" in src.state and "conv1.weight" not in src.state
    assert torch.equal(src.state["fc.weight"], state["fc.weight"])

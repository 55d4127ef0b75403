"""Every registered model: analytic counts, forward/backward, registry behaviour, presets."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from layerwise.models import GPT, MLP, ResNet, create_model, list_models, model_args, register_model
from layerwise.nn import NORMS, TRANSFORMER_NORMS, Dense, Residual, SelfAttention, SpectralConv1d

# recommenders take (user, item) index rows and predict one rating: tested in test_ratings.py
RECSYS = {"mf", "neumf", "autorec"}
ALL_MODELS = [m for m in list_models() if m not in RECSYS]
# policy and value nets: forward gives the policy only, so the value trunk is checked in test_rl.py
RL = {"actor-critic"}
TEXT = {"text-transformer", "ngram-bag"}  # text classifiers: padded token ids, a vocabulary from the data
FIELD = {"fno", "cnn1d"}  # fields on a 1-D grid: (B, C, R) in, (B, num_classes, R) out


def _text_kwargs(name: str) -> dict:
    return {"vocab_size": 50} if name in TEXT else {}
CIFAR_DEPTHS = (8, 14, 20, 32, 44, 56, 110)


def _graph_batch(batch: int):
    """``batch`` copies of a molecule-sized graph (REF_ATOMS atoms in a chain closed into two rings:
    REF_EDGES directed bonds), random features: what mpnn's analytic FLOPs are counted for."""
    from layerwise.data.molecules import GraphSet
    from layerwise.models.mpnn import REF_ATOMS, REF_EDGES

    g = torch.Generator().manual_seed(0)
    bonds = [(i, i + 1) for i in range(REF_ATOMS - 1)] + [(0, 5), (6, 12)]
    assert 2 * len(bonds) == REF_EDGES
    edges = torch.tensor([p for i, j in bonds for p in ((i, j), (j, i))])
    one = GraphSet(torch.rand(REF_ATOMS, 45, generator=g), torch.rand(REF_EDGES, 13, generator=g), edges,
                   torch.tensor([0, REF_ATOMS]), torch.tensor([0, REF_EDGES]), torch.zeros(1, 0))
    many = GraphSet(one.atom_x.repeat(batch, 1), one.bond_x.repeat(batch, 1), edges.repeat(batch, 1),
                    torch.arange(batch + 1) * REF_ATOMS, torch.arange(batch + 1) * REF_EDGES, torch.zeros(batch, 0))
    return many.collate(range(batch))


def _in_shape(name: str) -> tuple[int, ...]:
    """Small inputs that keep the suite fast: ImageNet-style nets at 64x64, digits at 8x8,
    language models on 16-token contexts, the audio transformer on 16 mel bands x 20 frames."""
    if name == "mlp":
        return (1, 28, 28)
    if name in RL:  # flat observations (CartPole's 4 numbers)
        return (4,)
    if name == "resnet-digits":
        return (1, 8, 8)
    if name.startswith("gpt") or name in TEXT:
        return (16,)
    if name == "audio-transformer":
        return (1, 16, 20)
    if name == "mpnn":  # (atom features, bond features) of layerwise.data.molecules
        return (45, 13)
    if name in FIELD:  # one channel at 64 grid points
        return (1, 64)
    if model_args(name).get("stem") == "imagenet":
        return (3, 64, 64)
    return (3, 32, 32)


def _example_input(name: str, batch: int) -> torch.Tensor:
    """A batch for model `name`: token ids for language models and text classifiers, floats
    otherwise."""
    if name.startswith("gpt") or name in TEXT:
        return torch.randint(1 if name in TEXT else 0, 10, (batch, *_in_shape(name)))
    if name == "mpnn":
        return _graph_batch(batch)
    return torch.randn(batch, *_in_shape(name))


def _norm_choices(name: str) -> tuple[str | None, ...]:
    """The values of the model's `norm` argument (its own vocabulary), or (None,) if it has none."""
    default = model_args(name).get("norm")
    if default is None:
        return (None,)
    return TRANSFORMER_NORMS if default in TRANSFORMER_NORMS else NORMS


def _numel(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registered_names() -> None:
    expected = {"mlp", "resnet", "resnet-digits", "resnet18", "resnet34", "resnet50"}
    expected |= {f"resnet{d}" for d in CIFAR_DEPTHS}
    expected |= {"convnet", "convnet-half", "gpt", "gpt-tiny", "gpt-small", "vit", "vit-tiny", "audio-transformer"}
    expected |= {"vit-ti16", "vit-s16", "vit-b16"}  # timm's ViT layout (layerwise.models.hub)
    expected |= TEXT | {"mpnn"} | FIELD
    expected |= RECSYS | RL
    assert set(list_models()) == expected


# --- analytic parameter counts, every model x every norm (on the meta device: no compute) ------
@pytest.mark.parametrize(("name", "norm"), [(n, norm) for n in ALL_MODELS for norm in _norm_choices(n)])
def test_num_params_matches_modules(name: str, norm: str | None) -> None:
    kwargs = ({} if norm is None else {"norm": norm}) | _text_kwargs(name)
    with torch.device("meta"):
        model = create_model(name, in_shape=_in_shape(name), num_classes=10, **kwargs)
    assert model.num_params() == _numel(model)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("depth", [0, 1, 3])
def test_mlp_variants_num_params(depth: int, norm: str) -> None:
    with torch.device("meta"):
        model = create_model(
            "mlp", in_shape=(3, 5), num_classes=4, depth=depth, width=6, norm=norm, residual=True
        )
    assert model.num_params() == _numel(model)


def test_resnet_variants_num_params() -> None:
    with torch.device("meta"):
        for kw in (
            {"block": "bottleneck", "stem": "cifar", "layers": (1, 2), "widths": (8, 16)},
            {"stem": "imagenet", "layers": (1,), "widths": (8,)},
            {"widths": (16, 16, 16)},  # no shape change -> no projections
        ):
            model = create_model("resnet", in_shape=(3, 17, 15), num_classes=7, **kw)
            assert model.num_params() == _numel(model), kw


# --- forward, backward and FLOPs for every model ----------------------------------------------
def _counted_flops(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Run model(x), counting 2 * MACs of every Conv2d/Linear from the shapes it actually saw,
    plus attention's two (B, T, T) x d matmuls (4 B T^2 d) for every SelfAttention.

    Forward hooks are ~free; FlopCounterMode gives the same numbers (checked on a few models in
    test_flops_match_torch_flop_counter) but is ~10x slower per forward on CPU.
    """
    total = 0

    def hook(m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, SelfAttention):
            b, t, d = inputs[0].shape
            total += 4 * b * t * t * d
            return
        if isinstance(m, SpectralConv1d):  # a complex multiply-add per (in, out, mode): 4 real ones
            total += 8 * m.in_ch * m.out_ch * m.modes * out.shape[0]
            return
        # positions: H_out * W_out (or R) for a conv, the T of (B, T, F) for a Linear on sequences
        positions = out.shape[2:].numel() if isinstance(m, (nn.Conv1d, nn.Conv2d)) else out.shape[1:-1].numel()
        total += 2 * m.weight.numel() * out.shape[0] * positions

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear, SelfAttention,
                                                           SpectralConv1d))]
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        out = model(x)
    finally:
        for h in handles:
            h.remove()
    return out, total


@pytest.mark.parametrize("name", [m for m in ALL_MODELS if m not in RL])
def test_forward_backward_flops(name: str) -> None:
    torch.manual_seed(0)
    in_shape = _in_shape(name)
    model = create_model(name, in_shape=in_shape, num_classes=10, **_text_kwargs(name))
    x = _example_input(name, 2)
    out, flops = _counted_flops(model, x)
    # a language model predicts the next token at every position, a field model a value at every point
    assert out.shape == ((2, *in_shape, 10) if isinstance(model, GPT) else (2, 10, in_shape[-1]) if name in FIELD
                         else (2, 10))
    assert torch.isfinite(out).all()
    assert model.flops_per_example() > 0
    assert model.flops_per_example() == flops // 2
    out.logsumexp(-1).mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize(
    ("name", "in_shape", "kwargs"),
    [
        ("mlp", (1, 28, 28), {}),
        ("resnet20", (3, 32, 32), {}),
        (
            "resnet",
            (3, 33, 31),
            {"block": "bottleneck", "stem": "imagenet", "layers": (1, 1), "widths": (8, 16)},
        ),
    ],
)
def test_flops_match_torch_flop_counter(name: str, in_shape: tuple[int, ...], kwargs: dict) -> None:
    # PyTorch's own counter (2 FLOPs per MAC, matmul/conv only) on the meta device: no compute.
    with torch.device("meta"):
        model = create_model(name, in_shape=in_shape, num_classes=10, **kwargs)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.empty(1, *in_shape))
    assert model.flops_per_example() == counter.get_total_flops()


def test_mlp_flops_hand_formula() -> None:
    model = create_model("mlp", in_shape=(1, 28, 28), num_classes=10, depth=3, width=64)
    assert model.flops_per_example() == 2 * (784 * 64 + 2 * 64 * 64 + 64 * 10)
    assert model.num_params() == (784 * 64 + 64) + 2 * (64 * 64 + 64) + (64 * 10 + 10)


# --- well-known sizes --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "in_shape", "num_classes", "params", "flops"),
    [
        # torchvision's published counts; FLOPs: 1.814 / 3.664 / 4.089 GMACs x 2
        ("resnet18", (3, 224, 224), 1000, 11_689_512, 3_628_146_688),
        ("resnet34", (3, 224, 224), 1000, 21_797_672, 7_327_522_816),
        ("resnet50", (3, 224, 224), 1000, 25_557_032, 8_178_368_512),
        # He et al. report ~0.27M for resnet20 with zero-padding ("option A") shortcuts, i.e.
        # 269,722. We use 1x1 conv + BN projections ("option B") at the two stage transitions:
        # (16*32 + 2*32) + (32*64 + 2*64) = 576 + 2176 = 2,752 more -> 272,474.
        ("resnet20", (3, 32, 32), 10, 272_474, 81_626_368),
        ("resnet-digits", (1, 8, 8), 10, 77_290, 4_232_448),
    ],
)
def test_known_sizes(name: str, in_shape: tuple[int, ...], num_classes: int, params: int, flops: int) -> None:
    with torch.device("meta"):
        model = create_model(name, in_shape=in_shape, num_classes=num_classes)
    assert model.num_params() == params == _numel(model)
    assert model.flops_per_example() == flops


def test_resnet18_flops_about_3_6e9() -> None:
    with torch.device("meta"):
        model = create_model("resnet18", in_shape=(3, 224, 224), num_classes=1000)
    assert abs(model.flops_per_example() / 3.6e9 - 1) < 0.02  # ~1.82 GMACs


@pytest.mark.parametrize("name", [n for n in ALL_MODELS if n.startswith("resnet") and n[6:].isdigit()])
def test_resnet_depth_matches_name(name: str) -> None:
    # depth = weighted layers on the main path (convs except projection shortcuts) + the fc
    with torch.device("meta"):
        model = create_model(name, in_shape=_in_shape(name), num_classes=10)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and ".proj." not in n]
    assert len(convs) + 1 == int(name[6:])


def test_resnet_structure() -> None:
    with torch.device("meta"):  # shapes only, no compute
        _check_resnet_structure()


def _check_resnet_structure() -> None:
    m = create_model("resnet18", in_shape=(3, 64, 64), num_classes=10)
    assert isinstance(m.blocks, nn.ModuleList) and len(m.blocks) == 8
    assert m.forward_features(torch.empty(1, 3, 64, 64)).shape == (1, 512, 2, 2)
    assert isinstance(m.stem[1], nn.MaxPool2d) and m.stem[0].conv.kernel_size == (7, 7)
    c = create_model("resnet20", in_shape=(3, 32, 32), num_classes=10)
    assert c.stem[0].conv.kernel_size == (3, 3) and c.stem[0].conv.stride == (1, 1)
    assert c.forward_features(torch.empty(1, 3, 32, 32)).shape == (1, 64, 8, 8)
    # stage strides: 1 for the first stage, 2 for the first block of each later stage
    strides = [b.residual.fn[0].conv.stride[0] for b in c.blocks]
    assert strides == [1, 1, 1, 2, 1, 1, 2, 1, 1]
    b = create_model("resnet50", in_shape=(3, 64, 64), num_classes=10)
    assert b.num_features == 2048
    assert b.blocks[3].residual.fn[1].conv.stride == (2, 2)  # v1.5: stride on the 3x3
    assert b.blocks[3].residual.fn[0].conv.stride == (1, 1)
    feats = b.forward_features(torch.empty(1, 3, 64, 64))
    assert b.forward_head(feats, pre_logits=True).shape == (1, 2048)


def test_zero_init_residual() -> None:
    torch.manual_seed(0)
    m = create_model("resnet20", in_shape=(3, 32, 32), num_classes=10).eval()
    for blk in m.blocks:
        gamma = blk.residual.fn[-1].norm.weight
        assert torch.equal(gamma, torch.zeros_like(gamma))
    # gamma = 0: an identity-shortcut block starts as relu(x)
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(m.blocks[0](x), torch.relu(x))
    m = create_model("resnet20", in_shape=(3, 32, 32), num_classes=10, zero_init_residual=False)
    assert all(torch.equal(b.residual.fn[-1].norm.weight, torch.ones(16)) for b in m.blocks[:3])


def test_deep_mlp_residual_keeps_gradient() -> None:
    # The 40-layer depth experiment: plain stacks starve the first layer of gradient.
    grads = {}
    for residual in (False, True):
        torch.manual_seed(0)
        m = create_model("mlp", in_shape=(64,), num_classes=10, depth=40, width=32, residual=residual)
        assert isinstance(m.blocks[0], Dense)
        assert all(isinstance(b, Residual if residual else Dense) for b in m.blocks[1:])
        m(torch.randn(16, 64)).pow(2).mean().backward()
        grads[residual] = m.blocks[0].linear.weight.grad.norm().item()
    assert grads[True] > 1e3 * grads[False]


# --- registry ----------------------------------------------------------------------------------
def test_model_args() -> None:
    assert model_args("mlp") == {
        "depth": 2,
        "width": 256,
        "activation": "relu",
        "norm": "none",
        "dropout": 0.0,
        "residual": False,
        "ensemble": 1,  # every family's (models/ensemble.py)
    }
    assert model_args("resnet") == model_args("resnet8")
    assert model_args("resnet110")["layers"] == (18, 18, 18)
    assert model_args("resnet50")["block"] == "bottleneck"
    assert model_args("resnet-digits")["widths"] == (32, 64)


@pytest.mark.parametrize(
    ("name", "kwargs", "closest"),
    [
        ("resnet-digit", {}, "resnet-digits"),
        ("mlp", {"widht": 3}, "width"),
        ("resnet20", {"layer": (1, 1, 1)}, "layers"),
        ("resnet20", {"block": "bottle"}, "bottleneck"),
        ("resnet20", {"stem": "imagnet"}, "imagenet"),
        ("mlp", {"activation": "gelu_tan"}, "gelu_tanh"),
    ],
)
def test_create_model_rejects_unknown(name: str, kwargs: dict, closest: str) -> None:
    with pytest.raises(ValueError, match=f"did you mean '{closest}'"):
        create_model(name, in_shape=(3, 32, 32), num_classes=10, **kwargs)


def test_unknown_override_lists_valid_keys() -> None:
    with pytest.raises(ValueError) as e:
        create_model("mlp", in_shape=(4,), num_classes=2, widht=8)
    assert "'widht'" in str(e.value)
    assert all(k in str(e.value) for k in model_args("mlp"))


@pytest.mark.parametrize(
    ("name", "in_shape", "kwargs", "match"),
    [
        ("resnet20", (784,), {}, r"\(C, H, W\)"),
        ("resnet20", (3, 32, 32), {"layers": (1, 1)}, "one width per stage"),
        ("resnet20", (3, 32, 32), {"widths": (16, 0, 8)}, "positive ints"),
        ("mlp", (4,), {"depth": "3"}, "'depth' expects int"),
        ("mlp", (4,), {"residual": 1}, "'residual' expects bool"),
        ("mlp", (4,), {"dropout": 1.5}, "dropout"),
        ("mlp", (0, 4), {}, "in_shape"),
    ],
)
def test_create_model_rejects_bad_values(name: str, in_shape: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_model(name, in_shape=in_shape, num_classes=10, **kwargs)


def test_register_model_checks() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("mlp")(lambda *, in_shape, num_classes: None)
    with pytest.raises(TypeError, match="needs a default"):
        register_model("bad-model")(lambda *, in_shape, num_classes, width: None)
    assert "bad-model" not in list_models()


@pytest.mark.parametrize("name", ALL_MODELS)
def test_config_rebuilds_model(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name, in_shape=_in_shape(name), num_classes=10, **_text_kwargs(name))
        # through JSON as a saved run would store it (tuples become lists and are accepted back)
        rebuilt = create_model(**json.loads(json.dumps(model.config)))
    assert model.config["name"] == name and set(model.config) >= {"in_shape", "num_classes"}
    assert rebuilt.config == model.config
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in rebuilt.state_dict().items()}


def test_list_overrides_become_tuples() -> None:
    m = create_model("resnet", in_shape=[1, 8, 8], num_classes=3, layers=[1, 1], widths=[8, 16])
    assert isinstance(m, ResNet)
    assert m.config["layers"] == (1, 1) and m.config["widths"] == (8, 16)
    assert m.config["in_shape"] == (1, 8, 8)
    assert m(torch.randn(2, 1, 8, 8)).shape == (2, 3)


# --- transfer learning -------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "in_shape"), [("mlp", (1, 28, 28)), ("resnet20", (3, 32, 32))])
def test_reset_classifier(name: str, in_shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = create_model(name, in_shape=in_shape, num_classes=10).double()
    trunk = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    before = model.num_params()
    f = model.num_features
    model.reset_classifier(3)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in trunk.items())
    x = torch.randn(2, *in_shape, dtype=torch.float64)
    assert model(x).shape == (2, 3)
    assert model.fc.weight.dtype == torch.float64
    assert model.num_params() == _numel(model) == before - (f + 1) * 7
    assert model.config["num_classes"] == 3
    model.reset_classifier(0)  # feature extractor
    assert model(x).shape == (2, f)
    assert model.num_params() == _numel(model) == before - (f + 1) * 10
    assert isinstance(create_model(**model.config), MLP if name == "mlp" else ResNet)

"""layerwise.models.hub: torchvision and timm weights as layerwise models.

Two proofs of each key map:
- against the published names and shapes, everywhere: hub_keys.json (beside this file) lists
  every tensor of the libraries' state dicts, written from the installed torchvision and timm by
  `python tests/unit/test_hub.py --write`. Every source tensor must map to a layerwise tensor of
  the same shape and every layerwise tensor must be covered.
- equal logits, where torchvision and timm import (pip install 'layerwise[hub]'): the libraries'
  own models with random weights, converted and loaded, give the same logits within 1e-5.
  Skipped, with the reason, where they do not.
"""

from __future__ import annotations

import json
import sys
import types
import urllib.error
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from layerwise.models import create_model
from layerwise.models.hub import (
    FORMATS,
    WeightsError,
    convert_state_dict,
    create_foreign_model,
    detect_format,
    fetch_pretrained,
    is_hub_spec,
    load_foreign,
)
from layerwise.nn import qkv_to_head_major

FIXTURE = Path(__file__).with_name("hub_keys.json")
PUBLISHED = json.loads(FIXTURE.read_text())
PRESETS = {"resnet18": "resnet18", "resnet34": "resnet34", "resnet50": "resnet50", "vit_tiny_patch16_224": "vit-ti16",
           "vit_small_patch16_224": "vit-s16", "vit_base_patch16_224": "vit-b16"}
# the libraries' published parameter counts (torchvision's docs; timm's model cards)
PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
          "vit_tiny_patch16_224": 5_717_416, "vit_small_patch16_224": 22_050_664, "vit_base_patch16_224": 86_567_656}


def _meta_state(spec: str, **changes: tuple[int, ...] | None) -> dict[str, torch.Tensor]:
    """The published state dict of `spec` as meta tensors (shapes only); `changes` maps a key to a
    new shape, or None to drop it."""
    state = {k: torch.empty(shape, device="meta", dtype=torch.long if k.endswith("num_batches_tracked") else None)
             for k, shape in PUBLISHED["tensors"][spec].items()}
    for key, shape in changes.items():
        state.pop(key) if shape is None else state.__setitem__(key, torch.empty(shape, device="meta"))
    return state


# --- the key maps against the published names and shapes ------------------------------------------
_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def test_fixture_covers_every_format_and_holds_the_published_sizes() -> None:
    assert set(PUBLISHED["tensors"]) == set(FORMATS)
    for spec, shapes in PUBLISHED["tensors"].items():
        params = sum(torch.Size(s).numel() for k, s in shapes.items() if not k.endswith(_BUFFERS))
        assert params == PARAMS[spec.split(":")[1]], spec


@pytest.mark.parametrize("spec", list(FORMATS))
def test_every_published_tensor_maps_to_a_layerwise_tensor_of_its_shape(spec: str) -> None:
    source = _meta_state(spec)
    name, args, state = convert_state_dict(spec, source)
    assert name == PRESETS[spec.split(":")[1]]
    assert args == {"in_shape": (3, 224, 224), "num_classes": 1000}
    with torch.device("meta"):
        expected = create_model(name, **args).state_dict()
    assert len(state) == len(source)  # one layerwise tensor per source tensor, none shared
    assert list(state) == list(expected)  # every layerwise tensor covered, in the model's order
    assert all(state[k].shape == v.shape for k, v in expected.items())


@pytest.mark.parametrize("spec", list(FORMATS))
def test_the_format_is_recognized_from_the_tensors(spec: str) -> None:
    # timm's ResNets use torchvision's names: both convert to the same model, reported as torchvision's
    assert detect_format(_meta_state(spec)) == spec.replace("timm:resnet", "torchvision:resnet")


@pytest.mark.parametrize("arch", ["vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224"])
def test_vit_presets_are_timms_layout(arch: str) -> None:
    with torch.device("meta"):
        m = create_model(PRESETS[arch], in_shape=(3, 224, 224), num_classes=1000)
    assert m.num_params() == PARAMS[arch] and m.pool == "cls" and m.seq_len == 197
    norms = [m.ln_f] + [n for blk in m.blocks for n in (blk.norm1, blk.norm2)]
    assert {n.eps for n in norms} == {1e-6}  # timm's LayerNorm eps; PyTorch's default is 1e-5
    assert m.blocks[0].mlp.act.approximate == "none"  # exact GELU, as timm's nn.GELU


def test_named_renames() -> None:
    _, _, rn = convert_state_dict("torchvision:resnet50", _meta_state("torchvision:resnet50"))
    # layer2.0 is the 4th block (layer1 has 3); downsample = the projection shortcut
    assert "blocks.3.residual.proj.conv.weight" in rn and rn["blocks.3.residual.proj.conv.weight"].shape == (512, 256, 1, 1)
    assert rn["blocks.15.residual.fn.2.norm.running_var"].shape == (2048,)  # layer4.2.bn3
    _, _, vt = convert_state_dict("timm:vit_small_patch16_224", _meta_state("timm:vit_small_patch16_224"))
    assert vt["blocks.11.attn.wqkv.weight"].shape == (1152, 384) and vt["ln_f.bias"].shape == (384,)


def test_qkv_rows_are_laid_out_head_by_head() -> None:
    # timm's rows: (q heads 0..2 | k heads 0..2 | v heads 0..2) -> (head 0: q k v | head 1: ...)
    rows = torch.arange(3 * 3 * 2, dtype=torch.float32)  # 3 heads of size 2
    heads = qkv_to_head_major(rows, 3).view(3, 3, 2)  # (head, q/k/v, hs)
    assert heads[1, 2].tolist() == [14.0, 15.0]  # v of head 1 = row 2 * 6 + 1 * 2
    assert heads[2, 0].tolist() == [4.0, 5.0]  # q of head 2
    with pytest.raises(ValueError, match="multiple of 3 \\* n_head = 12"):
        qkv_to_head_major(torch.zeros(18, 2), 4)


def test_classes_and_image_size_come_from_the_tensors() -> None:
    _, args, state = convert_state_dict("timm:vit_tiny_patch16_224", _meta_state(
        "timm:vit_tiny_patch16_224", **{"head.weight": (10, 192), "head.bias": (10,), "pos_embed": (1, 577, 192)}))
    assert args == {"in_shape": (3, 384, 384), "num_classes": 10}  # 24 x 24 patches of 16 + [CLS]
    _, args, state = convert_state_dict("timm:vit_tiny_patch16_224", _meta_state(
        "timm:vit_tiny_patch16_224", **{"head.weight": None, "head.bias": None}))  # timm's num_classes=0
    assert args["num_classes"] == 0 and "fc.weight" not in state
    with pytest.raises(WeightsError, match=r"pos_embed \(1, 1, 192\) -> pos_embed \(1, 197, 192\)"):
        convert_state_dict("timm:vit_tiny_patch16_224", _meta_state("timm:vit_tiny_patch16_224", pos_embed=(1, 1, 192)))
    _, args, _ = convert_state_dict("torchvision:resnet18", _meta_state(
        "torchvision:resnet18", **{"fc.weight": (37, 512), "fc.bias": (37,), "conv1.weight": (64, 1, 7, 7)}))
    assert args == {"in_shape": (1, 224, 224), "num_classes": 37}


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"layer3.1.bn2.running_mean": None}, ["1 layerwise tensor(s) are not in the source",
                                               "blocks.5.residual.fn.1.norm.running_mean"]),
        ({"layer5.0.conv1.weight": (3, 3, 3, 3), "head.weight": (3, 3)}, ["2 source tensor(s) have no place",
                                                                          "layer5.0.conv1.weight", "head.weight"]),
        ({"layer2.0.conv1.weight": (128, 64, 1, 1)},
         ["1 have another shape",
          "layer2.0.conv1.weight (128, 64, 1, 1) -> blocks.2.residual.fn.0.conv.weight (128, 64, 3, 3)"]),
        ({"fc.bias": (5,)}, ["fc.bias (5,) -> fc.bias (1000,)"]),
    ],
)
def test_a_source_that_does_not_fit_names_every_tensor(changes: dict, named: list[str]) -> None:
    with pytest.raises(WeightsError) as e:
        convert_state_dict("torchvision:resnet18", _meta_state("torchvision:resnet18", **changes))
    for text in named:
        assert text in str(e.value)


def test_resnet50_weights_are_not_resnet18() -> None:
    with pytest.raises(WeightsError, match="have another shape") as e:
        convert_state_dict("torchvision:resnet18", _meta_state("torchvision:resnet50"))
    assert "have no place in it (layer1.0.conv3.weight" in str(e.value)


def test_unknown_format_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="torchvision:resnet50") as e:
        convert_state_dict("torchvision:resnet51", {})
    assert "timm:vit_base_patch16_224" in str(e.value)


# --- files and sources -------------------------------------------------------------------------------
def _random_state(spec: str, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.zeros(s, dtype=torch.long) if k.endswith("num_batches_tracked") else torch.randn(s, generator=g)
            for k, s in PUBLISHED["tensors"][spec].items()}


def test_a_safetensors_file_is_recognized_and_loaded_exactly(tmp_path: Path) -> None:
    spec = "timm:vit_tiny_patch16_224"
    source = _random_state(spec)
    save_file(source, tmp_path / "vit.safetensors")
    model = create_foreign_model(tmp_path / "vit.safetensors")
    assert model.config["name"] == "vit-ti16" and model.num_classes == 1000
    mine = model.state_dict()
    assert torch.equal(mine["patch_embed.weight"], source["patch_embed.proj.weight"])
    assert torch.equal(mine["blocks.7.mlp.w2.bias"], source["blocks.7.mlp.fc2.bias"])
    assert torch.equal(mine["blocks.3.attn.wqkv.weight"], qkv_to_head_major(source["blocks.3.attn.qkv.weight"], 3))
    assert not torch.equal(mine["blocks.3.attn.wqkv.weight"], source["blocks.3.attn.qkv.weight"])


def test_files_that_cannot_be_read_say_why(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="no weights file .*missing.safetensors"):
        load_foreign(tmp_path / "missing.safetensors")
    (tmp_path / "resnet18.pth").write_bytes(b"not read")
    with pytest.raises(WeightsError, match="is a pickle; .*only as safetensors.*resnet18.safetensors"):
        load_foreign(tmp_path / "resnet18.pth")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        load_foreign(tmp_path / "bad.safetensors")
    save_file({"encoder.weight": torch.zeros(2, 2)}, tmp_path / "other.safetensors")
    with pytest.raises(WeightsError, match="match none of the architectures .* the closest, .*encoder.weight"):
        load_foreign(tmp_path / "other.safetensors")


def test_hub_specs() -> None:
    assert is_hub_spec("torchvision:resnet18") and is_hub_spec("timm:vit_base_patch16_224")
    assert not is_hub_spec("runs/digits-1/model.safetensors") and not is_hub_spec("resnet18.safetensors")
    with pytest.raises(ValueError, match="unknown source format"):
        load_foreign("torchvision:alexnet")


def test_fetching_without_the_library_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import torchvision -> ImportError
    with pytest.raises(WeightsError, match="torchvision cannot be imported here") as e:
        fetch_pretrained("torchvision:resnet18")
    assert "get_model('resnet18', weights='DEFAULT')" in str(e.value) and "resnet18.safetensors" in str(e.value)


def test_fetching_offline_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=offline))
    with pytest.raises(WeightsError, match="could not fetch .*Temporary failure.*needs internet access") as e:
        fetch_pretrained("timm:vit_small_patch16_224")
    assert "pretrained=True" in str(e.value)


# --- equal logits against the libraries themselves ---------------------------------------------------
_TV_OPS = None  # the torch.library that declares torchvision's operators when its own build cannot


def _import_libraries():
    """(torchvision, timm), or skip with the reason.

    torchvision's PyPI wheel is built for torch's CUDA build; under the CPU build its compiled
    operators fail to load and the import stops at "operator torchvision::nms does not exist"
    (registering a fake kernel for an operator that was never declared). The models need none of
    those operators, so on exactly that failure the two schemas are declared (no kernel: calling
    nms would still fail) and the import retried; the ResNet and ViT classes are the libraries'
    own code either way.
    """
    global _TV_OPS
    try:
        import torchvision
    except ImportError as e:
        pytest.skip(f"torchvision is not installed ({e}); pip install 'layerwise[hub]' to compare logits")
    except RuntimeError as e:
        if "torchvision::nms" not in str(e):
            pytest.skip(f"torchvision does not import with this torch: {e}")
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        _TV_OPS = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            _TV_OPS.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision
    try:
        import timm
    except ImportError as e:
        pytest.skip(f"timm is not installed ({e}); pip install 'layerwise[hub]' to compare logits")
    return torchvision, timm


def _library_model(spec: str) -> torch.nn.Module:
    torchvision, timm = _import_libraries()
    lib, arch = spec.split(":")
    return (torchvision.models.get_model(arch) if lib == "torchvision" else timm.create_model(arch)).eval()


@pytest.mark.parametrize(("spec", "via_file"), [
    ("torchvision:resnet18", True), ("torchvision:resnet50", False), ("timm:resnet50", False),
    ("timm:vit_tiny_patch16_224", True), ("timm:vit_small_patch16_224", False), ("timm:vit_base_patch16_224", False),
])
def test_equal_logits_with_the_library_model(spec: str, via_file: bool, tmp_path: Path) -> None:
    torch.manual_seed(0)
    with torch.device("meta"):  # the library's own module tree, without its (slow) init ...
        theirs = _library_model(spec)
    theirs.to_empty(device="cpu")
    with torch.no_grad():  # ... filled with random values, every vector too (the libraries init norms
        for name, t in theirs.state_dict().items():  # as identity and biases as 0, which would hide a swap)
            if name.endswith("num_batches_tracked"):
                t.zero_()
            elif name.endswith("running_var"):
                t.uniform_(0.5, 1.5)
            elif name in ("cls_token", "pos_embed"):
                t.normal_(0.0, 0.02)
            elif t.dim() >= 2:  # weights: variance 1 / fan_in
                t.normal_(0.0, t[0].numel() ** -0.5)
            else:  # norm gains around 1; biases and running means around 0
                t.normal_(1.0 if name.endswith("weight") else 0.0, 0.1)
    if via_file:  # the user's path: a safetensors file, its format recognized from the tensors
        save_file(theirs.state_dict(), tmp_path / "weights.safetensors")
        ours = create_foreign_model(tmp_path / "weights.safetensors").eval()
    else:
        name, args, state = convert_state_dict(spec, theirs.state_dict())
        with torch.device("meta"):
            ours = create_model(name, **args).eval()
        ours.load_state_dict(state, strict=True, assign=True)  # every tensor from the source
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected, got = theirs(x), ours(x)
    assert got.shape == expected.shape == (1, 1000)
    assert expected.std() > 0.1  # logits that differ between classes and images
    assert (got - expected).abs().max().item() <= 1e-5 * max(1.0, expected.abs().max().item())


def test_fixture_is_what_the_installed_libraries_publish() -> None:
    _import_libraries()
    assert _published_tensors() == PUBLISHED["tensors"]


def _published_tensors() -> dict[str, dict[str, list[int]]]:
    """{format: {tensor name: shape}} of every format, from the libraries' own models."""
    out = {}
    for spec in FORMATS:
        with torch.device("meta"):  # names and shapes only
            out[spec] = {k: list(v.shape) for k, v in _library_model(spec).state_dict().items()}
    return out


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    tv, tm = _import_libraries()
    meta = {"torchvision": tv.__version__.split("+")[0], "timm": tm.__version__}
    formats = [f'  "{spec}": {{\n' + ",\n".join(f'   "{k}": {json.dumps(shape)}' for k, shape in tensors.items())
               + "\n  }" for spec, tensors in _published_tensors().items()]  # one tensor per line
    FIXTURE.write_text(f'{{"written_from": {json.dumps(meta)},\n "tensors": {{\n' + ",\n".join(formats) + "\n }\n}\n")
    print(f"wrote {FIXTURE} from {meta}")

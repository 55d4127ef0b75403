"""Other people's weights: torchvision and timm ResNets and ViTs as layerwise models.

    name, model_args, state = convert_state_dict("torchvision:resnet18", tv_model.state_dict())
    model = create_model(name, **model_args); model.load_state_dict(state)   # same logits

Each source format names one architecture of another library ("torchvision:resnet50",
"timm:vit_small_patch16_224"; `FORMATS` lists them) and the layerwise preset that computes the
same function (`resnet18/34/50`, `vit-ti16/s16/b16`). A key-mapping table renames the source's
tensors to layerwise's; the only tensor that changes is a ViT's fused qkv, whose rows timm lays
out as (all q | all k | all v) and layerwise head by head (`layerwise.nn.qkv_to_head_major`).
Input size and number of classes are read from the tensors (the classifier's rows; a ViT's
position table), so a source fine-tuned on 10 classes converts as well as the 1000-class one.

A conversion is all or nothing: a tensor the table cannot place, one of the wrong shape, or a
layerwise tensor the source lacks stops it with a `WeightsError` that names every one of them.

Sources (`load_foreign`): a safetensors file of the library's `state_dict()` (its format is
recognized from its tensor names and shapes), or "torchvision:NAME" / "timm:NAME", which fetch
the published weights through the library's own API (needs the library and internet). Pickled
files (.pt, .pth, .bin) are refused: a pickle can run code when it is loaded.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..nn import qkv_to_head_major, unknown_choice_error
from .base import Model
from .registry import create_model, model_args

__all__ = [
    "FORMATS",
    "ForeignFormat",
    "WeightsError",
    "convert_state_dict",
    "create_foreign_model",
    "detect_format",
    "fetch_pretrained",
    "is_hub_spec",
    "load_foreign",
    "load_foreign_safetensors",
]


class WeightsError(ValueError):
    """Weights from another library that cannot become a layerwise model; the message names the
    tensors or the file at fault and the fix."""


@dataclass(frozen=True)
class ForeignFormat:
    """One architecture of another library and how its state dict maps onto a layerwise preset.

    Attributes:
        model: the layerwise preset that computes the same function.
        top: source module (or bare parameter) outside the repeated blocks -> layerwise's.
        block_re: regex of a repeated block's source prefix; one group (the block's index) or two
            (1-based stage, block within the stage: torchvision's `layer2.1`).
        block: source module inside a block -> layerwise's (under `blocks.<flat index>.`).
        classifier: the source's classifier module (its rows are the number of classes).
        n_head: attention heads (ViTs): the fused qkv rows are re-laid head by head.
    """

    model: str
    top: Mapping[str, str]
    block_re: str
    block: Mapping[str, str]
    classifier: str
    n_head: int = 0


# torchvision's ResNet (torchvision/models/resnet.py), which timm's resnet18/34/50 share name for
# name: conv1/bn1 stem, layer1..4 of BasicBlock (conv1-2, bn1-2) or Bottleneck (conv1-3, bn1-3),
# downsample = Sequential(1x1 conv, BN), fc. layerwise: stem.0 = ConvNormAct, one flat `blocks`
# list, each block's residual.fn = ConvNormActs and residual.proj the projection shortcut.
RESNET_TOP = {"conv1": "stem.0.conv", "bn1": "stem.0.norm", "fc": "fc"}
RESNET_BLOCK = {
    "conv1": "residual.fn.0.conv", "bn1": "residual.fn.0.norm",
    "conv2": "residual.fn.1.conv", "bn2": "residual.fn.1.norm",
    "conv3": "residual.fn.2.conv", "bn3": "residual.fn.2.norm",
    "downsample.0": "residual.proj.conv", "downsample.1": "residual.proj.norm",
}
# timm's VisionTransformer (timm/models/vision_transformer.py) with class token, global_pool="token".
VIT_TOP = {"cls_token": "cls_token", "pos_embed": "pos_embed", "patch_embed.proj": "patch_embed",
           "norm": "ln_f", "head": "fc"}
VIT_BLOCK = {"norm1": "norm1", "attn.qkv": "attn.wqkv", "attn.proj": "attn.proj", "norm2": "norm2",
             "mlp.fc1": "mlp.w1", "mlp.fc2": "mlp.w2"}


def _resnet(preset: str) -> ForeignFormat:
    return ForeignFormat(preset, RESNET_TOP, r"layer(\d+)\.(\d+)", RESNET_BLOCK, "fc")


def _vit(preset: str, n_head: int) -> ForeignFormat:
    return ForeignFormat(preset, VIT_TOP, r"blocks\.(\d+)", VIT_BLOCK, "head", n_head)


FORMATS: dict[str, ForeignFormat] = {
    **{f"{lib}:resnet{d}": _resnet(f"resnet{d}") for lib in ("torchvision", "timm") for d in (18, 34, 50)},
    "timm:vit_tiny_patch16_224": _vit("vit-ti16", 3),
    "timm:vit_small_patch16_224": _vit("vit-s16", 6),
    "timm:vit_base_patch16_224": _vit("vit-b16", 12),
}
_SPEC = re.compile(r"^(torchvision|timm):[A-Za-z0-9_.]+$")
_PICKLES = (".pt", ".pth", ".bin", ".pkl", ".ckpt")


def _format(source_format: str) -> ForeignFormat:
    try:
        return FORMATS[source_format]
    except (KeyError, TypeError):
        raise unknown_choice_error("source format", source_format, list(FORMATS)) from None


def _infer_args(fmt: ForeignFormat, state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """in_shape and num_classes of the layerwise model, from the source's tensors: channels from
    the first conv, classes from the classifier's rows (0 without one, timm's num_classes=0), and
    for a ViT the image size from its position table (1 + (H / patch) (W / patch) rows)."""
    head = state.get(f"{fmt.classifier}.weight")
    num_classes = int(head.shape[0]) if head is not None and head.dim() == 2 else 0
    first = state.get("patch_embed.proj.weight" if fmt.n_head else "conv1.weight")
    channels = int(first.shape[1]) if first is not None and first.dim() == 4 else 3
    h = w = 224
    pos = state.get("pos_embed")
    if fmt.n_head and first is not None and first.dim() == 4 and pos is not None and pos.dim() == 3:
        patches = int(pos.shape[1]) - 1
        side = math.isqrt(max(patches, 0))
        if side and side * side == patches:  # a square grid of patches: any other size is reported as a shape
            h, w = side * int(first.shape[2]), side * int(first.shape[3])
    return {"in_shape": (channels, h, w), "num_classes": num_classes}


def _rename(fmt: ForeignFormat, key: str, block_starts: list[int], n_blocks: list[int]) -> str | None:
    """layerwise's name for source tensor `key`, or None when the table has no place for it."""
    if key in fmt.top:  # a bare parameter (cls_token, pos_embed)
        return fmt.top[key]
    module, _, leaf = key.rpartition(".")
    if module in fmt.top:
        return f"{fmt.top[module]}.{leaf}"
    m = re.match(rf"^{fmt.block_re}\.(.+)$", module)
    if m is None or m.groups()[-1] not in fmt.block:
        return None
    *where, inner = m.groups()
    stage, index = (0, int(where[0])) if len(where) == 1 else (int(where[0]) - 1, int(where[1]))
    if not (0 <= stage < len(n_blocks) and index < n_blocks[stage]):
        return None
    return f"blocks.{block_starts[stage] + index}.{fmt.block[inner]}.{leaf}"


def _convert(
    source_format: str, state: Mapping[str, torch.Tensor]
) -> tuple[str, dict[str, Any], dict[str, torch.Tensor], dict[str, list[str]]]:
    """(name, model_args, converted state, problems): problems lists the unmapped source keys,
    the mis-shaped ones and the layerwise keys nothing maps to (all empty: a complete conversion)."""
    fmt = _format(source_format)
    args = _infer_args(fmt, state)
    preset = model_args(fmt.model)
    stages = list(preset["layers"]) if "layers" in preset else [preset["n_layer"]]
    starts = [sum(stages[:i]) for i in range(len(stages))]
    with torch.device("meta"):  # shapes only: no memory, no init
        expected = {k: v.shape for k, v in create_model(fmt.model, **args).state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    unmapped, misshaped, seen = [], [], set()
    for key, tensor in state.items():
        target = _rename(fmt, key, starts, stages)
        if target is None or target not in expected:
            unmapped.append(key)
            continue
        seen.add(target)
        if tuple(tensor.shape) != tuple(expected[target]):
            misshaped.append(f"{key} {tuple(tensor.shape)} -> {target} {tuple(expected[target])}")
        else:
            if fmt.n_head and target.endswith(("attn.wqkv.weight", "attn.wqkv.bias")):
                tensor = qkv_to_head_major(tensor, fmt.n_head)  # (all q | all k | all v) -> per head
            out[target] = tensor
    missing = [k for k in expected if k not in seen]
    ordered = {k: out[k] for k in expected if k in out}
    return fmt.model, args, ordered, {"unmapped": unmapped, "misshaped": misshaped, "missing": missing}


def _listing(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... and {len(items) - limit} more" if len(items) > limit else "")


def _problem_text(problems: dict[str, list[str]]) -> str:
    parts = []
    if problems["unmapped"]:
        parts.append(f"{len(problems['unmapped'])} source tensor(s) have no place in it "
                     f"({_listing(problems['unmapped'])})")
    if problems["misshaped"]:
        parts.append(f"{len(problems['misshaped'])} have another shape (source -> layerwise: "
                     f"{_listing(problems['misshaped'], 4)})")
    if problems["missing"]:
        parts.append(f"{len(problems['missing'])} layerwise tensor(s) are not in the source "
                     f"({_listing(problems['missing'])})")
    return "; ".join(parts)


def convert_state_dict(
    source_format: str, state_dict: Mapping[str, torch.Tensor]
) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    """Rename (and for ViTs re-lay) another library's state dict into a layerwise model's.

    Args:
        source_format: a key of `FORMATS`, e.g. "torchvision:resnet18", "timm:vit_small_patch16_224".
        state_dict: the library model's `state_dict()` (tensors on any device; float32 as published).

    Returns:
        (model name, model_args, state dict): `create_model(name, **model_args)` builds the model
        (model_args holds in_shape (C, H, W) and num_classes, read from the tensors) and
        `load_state_dict(state, strict=True)` fills it; it then computes the same logits as the
        source model (tests/unit/test_hub.py checks this within 1e-5 against the real libraries).

    Raises:
        WeightsError: the tensors do not fit the format; the message lists every unmapped source
            tensor, every shape mismatch and every layerwise tensor the source lacks.
        ValueError: unknown source_format (the message lists the known ones).
    """
    name, args, state, problems = _convert(source_format, state_dict)
    if any(problems.values()):
        raise WeightsError(
            f"these weights are not {source_format} as layerwise's {name} expects it: {_problem_text(problems)}. "
            f"Pass the source format the weights were saved from (one of {', '.join(FORMATS)}), or leave it out "
            f"to let layerwise recognize the file; weights from other architectures cannot be converted.")
    return name, args, state


def detect_format(state_dict: Mapping[str, torch.Tensor], where: str = "the weights") -> str:
    """The first source format (in `FORMATS` order) whose conversion of `state_dict` is complete.

    torchvision's and timm's ResNets share their names, and convert to the same model, so a file
    of either is reported as torchvision's. Raises WeightsError when no format fits, naming the
    closest one and what differs."""
    best: tuple[int, str, str] | None = None
    for source_format in FORMATS:
        problems = _convert(source_format, state_dict)[3]
        count = sum(len(v) for v in problems.values())
        if count == 0:
            return source_format
        if best is None or count < best[0]:
            best = (count, source_format, _problem_text(problems))
    assert best is not None
    raise WeightsError(
        f"{where} match none of the architectures layerwise converts ({', '.join(FORMATS)}); the closest, "
        f"{best[1]}, differs: {best[2]}. Save the state_dict() of one of these models (layerwise's own "
        f"model.safetensors files load as they are).")


def load_foreign_safetensors(
    path: str | Path, source_format: str | None = None
) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    """Read another library's state dict from a safetensors file and convert it (see
    `convert_state_dict`); without `source_format` the format is recognized from the tensors.

    Raises:
        WeightsError: no such file, a pickle instead of safetensors, an unreadable file, or
            tensors that fit no (or not the given) format.
    """
    path = Path(path)
    if path.suffix.lower() in _PICKLES:
        raise WeightsError(
            f"'{path}' is a pickle; layerwise reads others' weights only as safetensors (loading a pickle can "
            f"run code). Convert it where you trust its origin: python -c \"import torch, safetensors.torch as st; "
            f"st.save_file(torch.load('{path}', weights_only=True), '{path.with_suffix('.safetensors')}')\"")
    if not path.is_file():
        raise WeightsError(f"no weights file '{path}': give the path of a .safetensors file holding a torchvision or "
                           f"timm model's state_dict(), or a source such as torchvision:resnet18")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"'{path}' is not a readable safetensors file ({e}); save the weights again with "
                           f"safetensors.torch.save_file(model.state_dict(), PATH)") from None
    return convert_state_dict(source_format or detect_format(state, where=f"the tensors of '{path}'"), state)


def is_hub_spec(source: str) -> bool:
    """True for "torchvision:NAME" / "timm:NAME" (weights fetched through that library), False for a path."""
    return bool(_SPEC.match(str(source)))


def _save_hint(lib: str, arch: str) -> str:
    build = (f"torchvision.models.get_model('{arch}', weights='DEFAULT')" if lib == "torchvision"
             else f"timm.create_model('{arch}', pretrained=True)")
    return (f"on a machine that has {lib} and internet, save the weights as safetensors, python -c \"import {lib}, "
            f"safetensors.torch as st; st.save_file({build}.state_dict(), '{arch}.safetensors')\", and pass "
            f"{arch}.safetensors instead")


def fetch_pretrained(spec: str) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    """Download the published weights of `spec` ("torchvision:resnet50", "timm:vit_base_patch16_224")
    through the library's own API (torchvision's `get_model_weights(NAME).DEFAULT`; timm's
    `create_model(NAME, pretrained=True)`, the Hugging Face Hub) and convert them.

    Raises:
        WeightsError: the library cannot be imported, or the download fails (no internet); the
            message says how to save the weights as a file elsewhere and pass that.
        ValueError: a spec that is not one of `FORMATS`.
    """
    _format(spec)
    lib, arch = spec.split(":", 1)
    try:
        module = importlib.import_module(lib)
    except Exception as e:  # noqa: BLE001 (ImportError, or RuntimeError: a torchvision built for another torch)
        raise WeightsError(
            f"'{spec}' fetches the weights through {lib}'s own API, but {lib} cannot be imported here "
            f"({type(e).__name__}: {e}). Install it (pip install 'layerwise[hub]'; torchvision must be the build "
            f"made for your torch: the PyPI wheel expects torch's CUDA build, and with the CPU build stops with "
            f"\"operator torchvision::nms does not exist\"), or {_save_hint(lib, arch)}.") from None
    try:
        if lib == "torchvision":
            state = module.models.get_model_weights(arch).DEFAULT.get_state_dict(progress=False)
        else:
            state = module.create_model(arch, pretrained=True).state_dict()
    except Exception as e:  # noqa: BLE001 (no internet, a proxy, a full disk: each library raises its own)
        raise WeightsError(f"{lib} could not fetch the weights of '{spec}' ({type(e).__name__}: {e}); this needs "
                           f"internet access. Otherwise {_save_hint(lib, arch)}.") from None
    return convert_state_dict(spec, state)


def load_foreign(source: str | Path) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    """(model name, model_args, state dict) from a source: "torchvision:NAME" / "timm:NAME"
    (`fetch_pretrained`) or the path of a safetensors file (`load_foreign_safetensors`)."""
    return fetch_pretrained(str(source)) if is_hub_spec(str(source)) else load_foreign_safetensors(source)


def create_foreign_model(source: str | Path) -> Model:
    """The layerwise model holding another library's weights, loaded strictly (see `load_foreign`);
    `reset_classifier(n)` then gives it a head for a new task."""
    name, args, state = load_foreign(source)
    model = create_model(name, **args)
    model.load_state_dict(state, strict=True)
    return model

"""Optimizers and parameter groups: SGD (momentum / Nesterov), AdamW and Muon.

One entry point, `build_optimizer(model, name, ...)`, builds every optimizer the Trainer uses.
Every param group it returns carries:
  - "name":     which group it is ("decay", "no_decay", "muon", and for what Muon does not take
                "adamw_decay", "adamw_no_decay" or "sgd_decay", "sgd_no_decay"),
  - "base_lr":  the group's learning rate before any schedule; `schedule.apply_lr` sets
                group["lr"] = group["base_lr"] * factor, so a schedule never compounds and a
                resumed run needs only its step counter (base_lr is saved in state_dict()).
With discriminative fine-tuning rates (`body_lr_scale` != 1) each group is split into the head's
part (the names above) and one part per layer of the body, bottom to top ("body0_decay",
"body1_decay", ..., "body0_muon", ...), each with an "lr_scale" that multiplies its base_lr: the
bottom layer's is body_lr_scale, the ones above it are spaced geometrically towards the head's 1
(Howard & Ruder 2018, ULMFiT, arXiv:1801.06146; fastai's slice(lr/10, lr)).

References
  - Sutskever, Martens, Dahl, Hinton 2013, "On the importance of initialization and momentum in
    deep learning" (momentum / Nesterov as implemented by torch.optim.SGD).
  - Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization" (AdamW), arXiv:1711.05101.
  - Muon itself (the optimizer and its Newton-Schulz iteration) lives in `layerwise.train.muon`,
    with its references.
  - Jordan 2024, cifar10-airbench `airbench94_muon.py`: Muon on the conv filters, each rescaled to
    a fixed norm before its step, 3 Newton-Schulz iterations, Nesterov SGD on the rest
    (`muon_rest="sgd"`, `muon_normalize=True`, `muon_ns_steps=3`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from layerwise.choices import unknown_choice_error
from layerwise.train.muon import (  # re-exported: part of this module's face
    Muon,
    zeropower_via_newtonschulz5,
)

__all__ = [
    "MUON_REST",
    "OPTIMIZERS",
    "CombinedOptimizer",
    "Muon",
    "build_optimizer",
    "muon_param_split",
    "param_groups",
    "split_body",
    "zeropower_via_newtonschulz5",
]

OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw", "muon")
MUON_REST: tuple[str, ...] = ("adamw", "sgd")  # what optimizes the parameters Muon does not take

# Modules whose parameters are never decayed. Norm gains/biases set the scale of a layer's
# output; pulling them towards 0 fights the normalization rather than regularizing capacity.
# Embedding rows are only touched when their token appears, so decay would shrink rare tokens
# every step while their gradient is zero (the reason nanoGPT/minGPT exclude them).
_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
    nn.LayerNorm, nn.GroupNorm, nn.RMSNorm,
)  # their parameters are also 1-D, so the ndim rule below covers custom norm layers too
_EMBEDDING_TYPES: tuple[type[nn.Module], ...] = (nn.Embedding, nn.EmbeddingBag)

# Modules whose 2-D+ weights are "hidden matrices" Muon may orthogonalize. Raw nn.Parameters
# (positional embeddings, class tokens, layer-scale gains) are left to AdamW: orthogonalizing a
# (1, N, D) positional table flattened to one row would just normalize it.
_MATRIX_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)



# ---------------------------------------------------------------------------------------------
# Parameter groups


def _no_decay_param_ids(model: nn.Module) -> set[int]:
    """ids of parameters that must not be weight-decayed (see `param_groups`)."""
    ids: set[int] = set()
    # remove_duplicate=False: a module reused in two places is still one module, but a tied
    # parameter (e.g. embedding weight reused as LM head) must be judged by *every* owner, so
    # an embedding/norm owner wins whatever the registration order.
    for _, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, _NORM_TYPES + _EMBEDDING_TYPES):
            ids.update(id(p) for p in module.parameters(recurse=False))
    for p in model.parameters():
        if p.ndim <= 1:  # biases, gains, scalars; also catches custom norm layers
            ids.add(id(p))
    # timm's convention: a model may name extra parameters to exclude (pos_embed, cls_token).
    hook = getattr(model, "no_weight_decay", None)
    if callable(hook):
        named = dict(model.named_parameters(remove_duplicate=False))  # a tied weight by any of its names
        for pname in hook():
            if pname not in named:
                raise ValueError(
                    f"{type(model).__name__}.no_weight_decay() names {pname!r}, which is not a "
                    f"parameter of the model"
                )
            ids.add(id(named[pname]))
    return ids


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split trainable parameters into a decayed and an undecayed group.

    Weight decay applies to weights only: never to biases, normalization parameters
    (BatchNorm/LayerNorm/RMSNorm/GroupNorm/InstanceNorm weight and bias), embeddings
    (nn.Embedding / nn.EmbeddingBag), any parameter with ndim <= 1, nor parameters the model names
    in an optional timm-style `model.no_weight_decay() -> Iterable[str]`.

    Parameters with requires_grad=False are skipped; a shared (tied) parameter appears once.
    Returns groups in the order [decay, no_decay], each `{"params", "weight_decay", "name"}`,
    empty groups dropped. Params keep `model.parameters()` order, so the layout is deterministic
    and a saved optimizer state_dict maps back onto the same parameters.
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    no_decay_ids = _no_decay_param_ids(model)
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():  # de-duplicates tied parameters
        if not p.requires_grad:
            continue
        (no_decay if id(p) in no_decay_ids else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]
    return [g for g in groups if g["params"]]


def split_body(groups: list[dict[str, Any]], layers: list[set[int]], scale: float) -> list[dict[str, Any]]:
    """Discriminative rates: each group split into its head part (same name) and a part per body
    layer ("body<i>_" + name, i = 0 at the bottom), whose "lr_scale" is scale ** ((L - i) / L) for
    L layers: ``scale`` at the bottom, geometrically closer to 1 upwards, as fastai's
    slice(lr * scale, lr) spaces its layer groups (the head, at 1, is the top of the progression).
    The head's groups come first (the logged lr is the first group's); empty groups are dropped,
    parameter order is kept. ``layers``: ids of each body layer's parameters, bottom to top
    (``finetune.body_groups``); a parameter in none of them is the head's."""
    n = len(layers)
    where = {pid: i for i, ids in enumerate(layers) for pid in ids}
    out = [{**g, "params": [p for p in g["params"] if id(p) not in where]} for g in groups]
    for i in range(n):
        out += [{**g, "params": [p for p in g["params"] if where.get(id(p)) == i], "name": f"body{i}_{g['name']}",
                 "lr_scale": scale ** ((n - i) / n)} for g in groups]
    return [g for g in out if g["params"]]


def muon_param_split(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(hidden matrices for Muon, everything else for AdamW), trainable params only.

    Muon gets the 2-D+ weights of nn.Linear / nn.ConvNd modules that would be weight-decayed,
    except the final classifier, detected as the *last nn.Linear in module registration order*.
    Why the head stays on AdamW: the reference says "Muon should only be used for hidden weight
    layers. The input embedding, final output layer, and any internal gains or biases should be
    optimized using a standard method such as AdamW" (KellerJordan/Muon README; modded-nanogpt
    does this). Muon's update is steepest descent under the spectral norm, the natural geometry
    for maps from hidden features to hidden features; a lookup table or a map onto logits has
    a different one (Bernstein & Newhouse 2024, "Old Optimizer, New Norm", arXiv:2409.20325).
    Everything else -- biases, norms, embeddings, raw parameters, the head -- goes to AdamW.

    Caveats of the "last Linear" rule: a model that registers its head before its body, or
    whose head is a 1x1 conv, puts the head on Muon; a model that computes logits with F.linear
    on a tied embedding moves the last block's final Linear to AdamW (safe, merely less Muon).
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    head_ids = {id(p) for p in linears[-1].parameters()} if linears else set()
    no_decay_ids = _no_decay_param_ids(model)
    matrix_ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, _MATRIX_TYPES):
            matrix_ids.add(id(module.weight))
    hidden: list[nn.Parameter] = []
    rest: list[nn.Parameter] = []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        is_hidden = (
            p.ndim >= 2
            and id(p) in matrix_ids
            and id(p) not in no_decay_ids
            and id(p) not in head_ids
        )
        (hidden if is_hidden else rest).append(p)
    return hidden, rest


# ---------------------------------------------------------------------------------------------
# Several optimizers stepping as one


class CombinedOptimizer:
    """Named optimizers that step as one (Muon for hidden matrices + AdamW for the rest).

    Exposes the part of the torch.optim.Optimizer face the Trainer uses: `step`, `zero_grad`,
    `param_groups` (the children's group dicts concatenated, live: writing group["lr"] changes
    the child), `state`, `state_dict` / `load_state_dict`. It is deliberately not an Optimizer
    subclass (two optimizers' state cannot live in one `Optimizer.state` without re-implementing
    AdamW), so torch LR schedulers, which check isinstance(Optimizer), do not accept it: use
    `layerwise.train.schedule.apply_lr`. `torch.amp.GradScaler.step/unscale_` only need
    `param_groups` and `step` and work with it. For Distributed Checkpoint pass `.optimizers`.

    Device-side skipping: when every child takes ``found_inf`` / ``grad_scale`` (torch's fused
    kernels, Muon), so does the combination (``_step_supports_amp_scaling``); the attributes set
    on it before ``step()`` are handed to every child for that step.
    """

    def __init__(self, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        if not optimizers:
            raise ValueError("CombinedOptimizer needs at least one optimizer")
        self._optimizers = dict(optimizers)

    @property
    def optimizers(self) -> tuple[torch.optim.Optimizer, ...]:
        return tuple(self._optimizers.values())

    @property
    def names(self) -> tuple[str, ...]:
        """The children's names, in the order of `optimizers` (the keys of `state_dict()`)."""
        return tuple(self._optimizers)

    def __getitem__(self, name: str) -> torch.optim.Optimizer:
        return self._optimizers[name]

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        # Rebuilt on each access: Optimizer.load_state_dict replaces its group dicts.
        return [g for opt in self._optimizers.values() for g in opt.param_groups]

    @property
    def _step_supports_amp_scaling(self) -> bool:
        return all(getattr(opt, "_step_supports_amp_scaling", False) for opt in self._optimizers.values())

    @property
    def state(self) -> dict[torch.Tensor, dict[str, Any]]:
        return {p: s for opt in self._optimizers.values() for p, s in opt.state.items()}

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:  # evaluate once, then let every child use the same gradients
            with torch.enable_grad():
                loss = closure()
        # torch.amp.GradScaler and the Trainer's sync-free step set these on the optimizer they step
        skip = {k: getattr(self, k) for k in ("found_inf", "grad_scale") if getattr(self, k, None) is not None}
        for opt in self._optimizers.values():
            for k, v in skip.items():
                setattr(opt, k, v)
            try:
                opt.step()
            finally:
                for k in skip:
                    delattr(opt, k)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self._optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {name: opt.state_dict() for name, opt in self._optimizers.items()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if set(state_dict) != set(self._optimizers):
            raise ValueError(
                f"optimizer state_dict has parts {sorted(state_dict)}, expected "
                f"{sorted(self._optimizers)}"
            )
        for name, opt in self._optimizers.items():
            opt.load_state_dict(state_dict[name])

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}={type(o).__name__}" for n, o in self._optimizers.items())
        return f"CombinedOptimizer({parts})"


# ---------------------------------------------------------------------------------------------
# Factory


def _impl_kwargs(cls: type[torch.optim.Optimizer], device_type: str, per_param: bool = False,
                 fused: bool | None = None) -> dict[str, bool]:
    """Pick the fastest torch implementation: fused kernels on CUDA and for SGD and Adam/AdamW on
    the CPU, foreach for the rest on the CPU.

    Fused (one kernel for all params) is checked against the installed torch's signature so
    older releases fall back to foreach instead of failing. Other device types keep torch's
    own default. ``fused=True`` asks for the fused kernels on any device (torch >= 2.4 has them
    for the CPU too; they can skip a step on the device, see the Trainer's sync-free step);
    ``False`` never uses them.
    """
    params = inspect.signature(cls.__init__).parameters
    if per_param:  # parameters that mix plain tensors and DTensors on different meshes (tensor parallel)
        return {"foreach": False} if "foreach" in params else {}
    if fused and "fused" in params:
        return {"fused": True}
    if device_type == "cuda" and fused is not False:
        if "fused" in params:
            return {"fused": True}
        return {"foreach": True} if "foreach" in params else {}
    if device_type == "cpu" and fused is not False and "fused" in params and issubclass(
            cls, (torch.optim.Adam, torch.optim.SGD)):
        # torch's fused CPU kernels make one pass over each tensor where foreach makes one per
        # operation over all of them (each pass evicting the last from the cache): for the
        # 670k-parameter MNIST MLP on one thread Adam/AdamW 602 against 2,103 us a step, SGD with
        # momentum 619 against 826 us after a backward's worth of other memory traffic (issue 14).
        # Their rounding order differs from foreach's (AdamW weights within ~1e-6 after 30 steps,
        # SGD within 3e-8), so CPU runs' last bits differ from those of earlier versions. A checkpoint
        # keeps the kernel it was written with: torch restores the group's fused/foreach flags.
        return {"fused": True}
    if device_type == "cpu" and "foreach" in params:
        return {"foreach": True}
    return {}


def _check_devices(groups: list[dict[str, Any]], device_type: str) -> None:
    # Fused kernels validate devices only deep inside torch; fail early with the likely cause.
    for g in groups:
        for p in g["params"]:
            if p.device.type != device_type:
                raise ValueError(
                    f"device_type={device_type!r} but a parameter lives on {p.device.type!r}: "
                    f"move the model to the device before building the optimizer"
                )


def _with_base_lr(groups: list[dict[str, Any]], lr: float, no_decay_scale: float = 1.0) -> list[dict[str, Any]]:
    for g in groups:
        group_lr = lr * no_decay_scale if g.get("name", "").endswith("no_decay") else lr
        group_lr *= g.get("lr_scale", 1.0)  # split_body's discriminative rates
        g["lr"] = float(group_lr)
        g["base_lr"] = float(group_lr)
    return groups


def build_optimizer(
    model: nn.Module,
    name: str,
    *,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    nesterov: bool = False,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    muon_lr: float = 0.02,
    muon_momentum: float = 0.95,
    muon_rest: str = "adamw",
    muon_normalize: bool = False,
    muon_ns_steps: int = 5,
    no_decay_lr_scale: float = 1.0,
    body_lr_scale: float = 1.0,
    device_type: str = "cpu",
    per_param: bool = False,
    fused: bool | None = None,
) -> torch.optim.Optimizer | CombinedOptimizer:
    """Build optimizer `name` (one of OPTIMIZERS) over `model`'s trainable parameters.

    - "sgd":   torch SGD with `momentum` (0 = plain SGD) and optional Nesterov. Weight decay is
               *coupled* (added to the gradient, so it passes through momentum), as in torch.
    - "adamw": torch AdamW (decoupled decay: p <- p * (1 - lr * wd) before the Adam step).
    - "muon":  CombinedOptimizer of Muon (lr=muon_lr, momentum=muon_momentum, Nesterov, decoupled
               decay `weight_decay`, `muon_ns_steps` Newton-Schulz steps in bf16, fp32 on CPU,
               weights rescaled first when `muon_normalize`) on hidden Linear/Conv weights, and
               `muon_rest` on everything else (see `muon_param_split`): "adamw" (lr, betas, eps;
               groups "adamw_decay", "adamw_no_decay") or "sgd" (lr, momentum, nesterov, coupled
               decay; groups "sgd_decay", "sgd_no_decay": airbench94_muon's split).
               `nesterov` and `momentum` are SGD's and are not used by "adamw".
    Weight decay only reaches weights (see `param_groups`). `no_decay_lr_scale` multiplies the
    learning rate of the no-decay groups (biases, norm parameters): airbench's `bias_scaler` (64)
    trains BatchNorm biases that much faster than the conv weights. `body_lr_scale` != 1 splits every
    group into the head's part and one per layer of the body (`split_body`; the head is
    `model.head_names()`, the layers `finetune.body_groups`): the bottom layer's learning rate is
    multiplied by body_lr_scale, the layers above by geometrically less, discriminative fine-tuning
    rates. `device_type` picks fused kernels on
    "cuda" and foreach on "cpu"; the model must already be on that device. Every group has
    "base_lr" = its initial lr, which `schedule.apply_lr` scales. lr stays a python float.
    `per_param` turns the multi-tensor kernels off (for tensor-parallel models, whose parameters
    mix plain tensors and DTensors that one kernel launch cannot take together). `fused` True
    asks for torch's fused SGD/AdamW kernels on any device (the CPU's exist since torch 2.4), False
    never uses them; None (the default) uses them on CUDA only.
    """
    if name not in OPTIMIZERS:
        raise unknown_choice_error("optimizer", name, OPTIMIZERS)
    if muon_rest not in MUON_REST:
        raise unknown_choice_error("optimizer for the parameters Muon does not take", muon_rest, MUON_REST)
    if lr < 0:
        raise ValueError(f"lr must be >= 0, got {lr}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if no_decay_lr_scale <= 0:
        raise ValueError(f"no_decay_lr_scale must be > 0, got {no_decay_lr_scale}")
    if body_lr_scale <= 0:
        raise ValueError(f"body_lr_scale must be > 0, got {body_lr_scale}")

    groups = param_groups(model, weight_decay)
    if not groups:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    layers: list[set[int]] = []
    if body_lr_scale != 1:
        if not hasattr(model, "head_names"):
            raise ValueError(f"body_lr_scale needs a model that names its head (head_names()); "
                             f"{type(model).__name__} does not")
        from layerwise.train.finetune import body_groups

        layers = [{id(p) for p in params} for params, _norms in body_groups(model)]
        groups = split_body(groups, layers, body_lr_scale)
    _check_devices(groups, device_type)

    def sgd(groups: list[dict[str, Any]]) -> torch.optim.SGD:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        return torch.optim.SGD(
            _with_base_lr(groups, lr, no_decay_lr_scale), lr=lr, momentum=momentum,
            nesterov=nesterov,
            **_impl_kwargs(torch.optim.SGD, device_type, per_param, fused),
        )

    if name == "sgd":
        return sgd(groups)

    adamw_kwargs = dict(lr=lr, betas=betas, eps=eps, **_impl_kwargs(torch.optim.AdamW, device_type, per_param, fused))
    if name == "adamw":
        return torch.optim.AdamW(_with_base_lr(groups, lr, no_decay_lr_scale), **adamw_kwargs)

    # name == "muon"
    hidden, rest = muon_param_split(model)
    if not hidden:
        raise ValueError(
            f"{type(model).__name__} has no hidden Linear/Conv weights for Muon (the last Linear "
            f"is the head and stays on AdamW); use 'adamw'"
        )
    # CPUs without AVX512-BF16/AMX emulate bf16 matmul: a 256x256 product took 38 ms in bf16
    # vs 1.1 ms in fp32 on the project's 2-core CI VM (torch 2.13, one thread), which would make
    # CPU Muon ~30x slower for a rounding-level difference (the reference's bf16 is a GPU
    # tensor-core speed choice; fp32 is, if anything, closer to the exact iteration).
    ns_dtype = torch.float32 if device_type == "cpu" else torch.bfloat16
    children: dict[str, torch.optim.Optimizer] = {
        "muon": Muon(
            _with_base_lr(split_body([{"params": hidden, "name": "muon"}], layers, body_lr_scale) if layers
                          else [{"params": hidden, "name": "muon"}], muon_lr),
            lr=muon_lr, momentum=muon_momentum, nesterov=True, weight_decay=weight_decay,
            ns_steps=muon_ns_steps, ns_dtype=ns_dtype, normalize=muon_normalize,
        )
    }
    rest_ids = {id(p) for p in rest}
    aux_groups = [
        {**g, "params": [p for p in g["params"] if id(p) in rest_ids], "name": f"{muon_rest}_{g['name']}"}
        for g in groups
    ]
    aux_groups = [g for g in aux_groups if g["params"]]
    if aux_groups and muon_rest == "sgd":
        children["sgd"] = sgd(aux_groups)
    elif aux_groups:
        children["adamw"] = torch.optim.AdamW(_with_base_lr(aux_groups, lr, no_decay_lr_scale), **adamw_kwargs)
    return CombinedOptimizer(children)

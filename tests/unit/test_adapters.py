"""The gpt -> text-transformer adapter: a language model's body as a sentence classifier's encoder."""

from __future__ import annotations

import json

import pytest
import torch

from layerwise.config import ConfigError
from layerwise.models import create_model
from layerwise.train.adapters import GPT_TO_TEXT_TRANSFORMER
from layerwise.train.finetune import load_weights, read_source
from layerwise.train.run import save_model

BYTE = {"kind": "byte"}
TRUNK = {"n_layer": 2, "n_head": 2, "n_embd": 16}


def _lm_file(tmp_path, tokenizer=BYTE, block_size=12, **kw):
    """A byte-level GPT saved as a finished run saves it (task lm, its tokenizer in the data)."""
    torch.manual_seed(0)
    args = {**TRUNK, **kw}
    lm = create_model("gpt", in_shape=(block_size,), num_classes=256, **args)
    data = {"name": "text", "in_shape": [block_size], "num_classes": 256, "classes": [], "task": "lm",
            "extra": {"tokenizer": tokenizer}}
    path = tmp_path / "lm.safetensors"
    save_model(path, lm, {"model": lm.config, "data": data, "task": {"name": "lm"}})
    return lm, path


def _classifier(max_len=8, **kw):
    torch.manual_seed(1)
    return create_model("text-transformer", in_shape=(max_len,), num_classes=2, vocab_size=257,
                        **{**TRUNK, "dropout": 0.0, **kw})


def test_lm_body_loads_into_text_transformer_with_shifted_embedding_rows(tmp_path) -> None:
    """Blocks and ln_f equal the LM's; wte row i + 1 is the LM's row i (0 pads, stays 0); wpe is the
    LM's first max_len rows; the classifier's fc is new; the record names the adapter."""
    lm, path = _lm_file(tmp_path)
    model = _classifier(max_len=8)
    fc_before = model.fc.weight.clone()
    record = load_weights(model, read_source(path), ["neg", "pos"], "classify", BYTE)
    src, got = lm.state_dict(), model.state_dict()
    body = [k for k in got if k.startswith(("blocks.", "ln_f."))]
    assert len(body) == 2 * 12 + 2  # per block: 2 norms x 2, qkv and proj x 2, 2 mlp Linears x 2; ln_f x 2
    for k in body:
        assert torch.equal(got[k], src[k]), k
    assert got["wte.weight"].shape == (257, 16)
    assert torch.equal(got["wte.weight"][1:], src["wte.weight"])
    assert torch.equal(got["wte.weight"][0], torch.zeros(16))
    assert torch.equal(got["wpe.weight"], src["wpe.weight"][:8])
    assert torch.equal(model.fc.weight, fc_before)  # the classifier's head, as initialized
    assert record["adapter"] == GPT_TO_TEXT_TRANSFORMER and record["source_model"] == "gpt"
    assert record["head"] == "new" and record["reinitialized"] == ["fc.bias", "fc.weight"]
    json.dumps(record)
    # the byte "a" (97) in the LM is id 98 in the classifier: the same vector enters the first block
    assert torch.equal(model.wte(torch.tensor([98])), lm.wte(torch.tensor([97])))


def test_bias_free_rmsnorm_rotary_lm_loads_into_the_matching_classifier(tmp_path) -> None:
    """The Shakespeare recipe's trunk (no biases, RMSNorm, RoPE, SwiGLU): no wpe on either side."""
    kw = {"bias": False, "norm": "rmsnorm", "rotary": True, "mlp": "swiglu"}
    lm, path = _lm_file(tmp_path, **kw)
    model = _classifier(max_len=20, **kw)  # RoPE: no position table, so no context limit from the source
    load_weights(model, read_source(path), ["neg", "pos"], "classify", BYTE)
    for k, v in lm.state_dict().items():
        if k.startswith(("blocks.", "ln_f.")):
            assert torch.equal(model.state_dict()[k], v), k


def test_another_tokenizer_is_a_config_error_naming_both(tmp_path) -> None:
    _, path = _lm_file(tmp_path, tokenizer={"kind": "char", "chars": "abc"})
    with pytest.raises(ConfigError, match=r"tokenizer char \(3 tokens\).*byte \(256 tokens\)"):
        load_weights(_classifier(), read_source(path), ["neg", "pos"], "classify", BYTE)


def test_a_longer_context_than_the_source_is_a_config_error(tmp_path) -> None:
    _, path = _lm_file(tmp_path, block_size=12)
    model = _classifier(max_len=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match=r"positions for 12 tokens.*--data.block_size=12"):
        load_weights(model, read_source(path), ["neg", "pos"], "classify", BYTE)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing loaded


def test_another_trunk_lists_the_tensors_and_what_to_set(tmp_path) -> None:
    """A bias-free LM into a classifier with biases: the existing error, its hint in text-transformer's terms."""
    _, path = _lm_file(tmp_path, bias=False)
    with pytest.raises(ConfigError, match=r"missing from the source \(blocks\.0\..*bias.*--model\.bias=false"):
        load_weights(_classifier(), read_source(path), ["neg", "pos"], "classify", BYTE)

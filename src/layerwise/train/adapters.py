"""Adapters: a source whose tensors name another family's layout, rewritten for the model it starts.

:func:`adapt_source` runs before :func:`layerwise.train.finetune.load_weights` compares names and
shapes; a source it does not recognise passes through unchanged, and the load rule stays the same
(the body tensor for tensor, or a ConfigError listing what differs). One adapter so far:

    gpt-to-text-transformer   a language model pretrained on unlabelled text (`gpt`, trained on
                              a `text`/`shakespeare` dataset) -> the encoder of a sentence
                              classifier (`text-transformer` on `text-classes`)

It follows the recipe of GPT-1 (Radford et al. 2018, "Improving Language Understanding by
Generative Pre-Training") and ULMFiT (Howard & Ruder 2018, arXiv:1801.06146): pretrain a language
model on unlabelled text, then fine-tune its body with a new classifier head.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from layerwise.train.finetune import Source, _config_error

__all__ = ["GPT_TO_TEXT_TRANSFORMER", "adapt_source", "gpt_to_text_transformer"]

GPT_TO_TEXT_TRANSFORMER = "gpt-to-text-transformer"
# the family arguments the two share: equal, the body's tensors have the same names and shapes
_SHARED_ARGS = ("n_layer", "n_head", "n_embd", "mlp", "norm", "rotary", "bias")


def adapt_source(src: Source, model: nn.Module, tokenizer: dict[str, Any] | None) -> Source:
    """``src`` rewritten for ``model`` when an adapter applies to the pair, else ``src`` itself.

    ``tokenizer`` is the run's data tokenizer (``DatasetInfo.extra["tokenizer"]``; None for data
    without one). Raises ConfigError as the adapter does."""
    from layerwise.models.text import TextTransformer

    if isinstance(model, TextTransformer) and src.task == "lm" and "wte.weight" in src.state:
        return gpt_to_text_transformer(src, model, tokenizer)
    return src


def _describe(tok: dict[str, Any] | None) -> str:
    """A tokenizer description for a message: its kind and vocabulary size."""
    if not tok:
        return "none recorded"
    size = {"byte": 256, "char": len(tok.get("chars", "")), "bpe": tok.get("vocab_size")}.get(tok.get("kind"))
    return f"{tok.get('kind')} ({size} tokens)" if size else str(tok.get("kind"))


def gpt_to_text_transformer(src: Source, model: nn.Module, tokenizer: dict[str, Any] | None) -> Source:
    """A `gpt` language model's weights as the body of a `text-transformer` classifier.

    What maps (the block, final-norm and embedding names are the same in both families):

      - ``blocks.*`` and ``ln_f.*`` as they are (n_layer, n_head, n_embd, mlp, norm, rotary and
        bias must agree; otherwise load_weights' ConfigError lists the tensors that differ);
      - ``wte.weight`` (V, d) -> (V + 1, d): text-classes shifts every token id by one so that 0
        pads (layerwise.data.textclass), so the classifier's row i + 1 is the LM's row i and row
        0, the padding, is zero (as TextTransformer initializes it). This needs the same
        tokenizer on both sides (byte: the 256 UTF-8 byte values, always; char and bpe are built
        from each run's own training text and rarely agree);
      - ``wpe.weight`` (block_size, d) -> its first max_len rows (the classifier's data.block_size);
      - the LM head ``fc`` (tied to wte, or its own) is dropped: the classifier's ``fc`` is new.

    Attention becomes bidirectional. The attention weights are the same tensors whether a mask is
    causal or not, so the load is exact; fine-tuning the whole body then lets every token see its
    right context, and the masked mean over the real tokens (TextTransformer's head) reads the
    sentence. GPT-1 and ULMFiT instead keep the causal model and classify from the last position;
    one encoder family for every sentence classifier (from scratch or pretrained) keeps the
    comparison in benchmarks/text_transfer.py to one difference: the starting weights.

    Returns a new Source (the original untouched) whose ``adapter`` names this mapping, so that
    init_from.json records it. Raises ConfigError naming both tokenizers when they differ, and
    naming data.block_size when max_len exceeds the source's context."""
    name = f"model.init_from='{src.given}'"
    src_tok = ((src.data or {}).get("extra") or {}).get("tokenizer")
    if not src_tok or not tokenizer or src_tok != tokenizer:
        raise _config_error(
            f"{name} is a language model with tokenizer {_describe(src_tok)}; this run's data uses "
            f"{_describe(tokenizer)}. Its token embedding maps onto the classifier's rows only through the same "
            f"tokenizer: set data.tokenizer to the source's (byte fits any text and is the same everywhere), or "
            f"pretrain the language model with this run's tokenizer.")
    state = {k: v for k, v in src.state.items() if not (k == "fc" or k.startswith("fc."))}  # the LM head
    emb = state["wte.weight"]  # (V, d)
    state["wte.weight"] = torch.cat([emb.new_zeros(1, emb.shape[1]), emb])  # (V + 1, d): row 0 pads
    wpe = state.get("wpe.weight")
    if wpe is not None and getattr(model, "wpe", None) is not None:
        max_len = int(model.max_len)
        if max_len > wpe.shape[0]:
            raise _config_error(
                f"{name} has learned positions for {wpe.shape[0]} tokens (its data.block_size); this classifier "
                f"reads up to {max_len} (data.block_size={max_len}). Set --data.block_size={wpe.shape[0]} or less "
                f"(longer examples keep their first tokens), or pretrain with a context of {max_len} or more.")
        state["wpe.weight"] = wpe[:max_len]
    spec = src.model or {}
    shared = {k: spec[k] for k in _SHARED_ARGS if k in spec}
    model_spec = {"name": "text-transformer", **shared}  # for load_weights' hint: what to set
    return dataclasses.replace(src, state=state, aliases={}, model=model_spec, adapter=GPT_TO_TEXT_TRANSFORMER)

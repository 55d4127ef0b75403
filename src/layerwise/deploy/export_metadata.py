"""What an exported model file says about itself (layerwise export): the metadata that lets someone
without layerwise feed the model and read its outputs.

:func:`export_metadata` gives the ONNX file's ``metadata_props`` (and the .pt2 archive's
``extra/layerwise.json``), every value a JSON string: the inputs and outputs with named dynamic
dimensions, the preprocessing (image pixels to the model's raw range and normalization, the
tokenizer's rules, every log-mel step for audio, a table's column encoding, the RDKit
featurization of molecules, recommenders' id tables) and the postprocessing (class names, a
regression target's standardization and clipping, a multilabel threshold, a policy's action
distribution). tests/unit/test_export_edges.py rebuilds predict's inputs from these rules alone.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from layerwise.deploy.export import InputSpec

METADATA_VERSION = 1  # the layout of the metadata below; bumped when a key changes meaning


# how layerwise.data.audio turns a recording into the log-mel features the model reads (log_mel,
# mel_filterbank, fix_length, resample): every step, so a script without layerwise computes the same
_AUDIO_FEATURES = {
    "samples": "16-bit PCM / 32768 (floats as they are), in [-1, 1]; several channels -> one as audio.channel says "
               "(mean: their average, left: the first, right: the second)",
    "resample": "to audio.sample_rate with scipy.signal.resample_poly(x, up, down, window=firwin(20 * max(up, down) "
                "+ 1, 1 / max(up, down), window=('kaiser', 5.0))), up/down the rates' ratio in lowest terms",
    "length": "the first round(clip_seconds * sample_rate) samples, zero-padded at the end when shorter",
    "stft": "periodic Hann window of n_fft samples (0.5 - 0.5 cos(2 pi n / n_fft)), hop samples apart, centred "
            "frames: the wave reflect-padded by n_fft // 2 at both ends; frames = 1 + samples // hop; power |X|^2 "
            "of the n_fft // 2 + 1 rfft bins",
    "mel": "n_mels triangular filters on the HTK mel scale (mel = 2595 log10(1 + hz / 700)), edges evenly spaced "
           "in mel from 0 Hz to sample_rate / 2, each peaking at 1 (no area normalization), over the bins at "
           "linspace(0, sample_rate / 2, n_fft // 2 + 1) Hz",
    "formula": "raw = log(mel_filters @ power + 1e-6), shaped (1, n_mels, frames)",
    "log_epsilon": 1e-6,
}


def _molecule_rule(enc: dict[str, Any] | None) -> dict[str, Any]:
    """How layerwise.data.molecules turns a SMILES string into the model's arrays (RDKit), spelled
    out: the featurization's name alone leaves the one-hot vocabularies and their order unsaid."""
    from layerwise.data import molecules as mol

    enc = enc or {}
    out: dict[str, Any] = {"parse": "rdkit.Chem.MolFromSmiles(smiles.strip()) (sanitized, implicit hydrogens)"}
    if enc.get("descriptors"):
        out["descriptors"] = ("RDKit's Crippen.MolLogP, Descriptors.MolWt, Lipinski.NumRotatableBonds, aromatic "
                              "atoms / heavy atoms, rdMolDescriptors.CalcTPSA, Lipinski.NumHDonors, "
                              "Lipinski.NumHAcceptors, Lipinski.HeavyAtomCount, rdMolDescriptors.CalcNumRings, "
                              "rdMolDescriptors.CalcFractionCSP3, rdMolDescriptors.CalcNumAromaticRings, for the "
                              "names in molecules.descriptors")
    if enc.get("featurize") == "graph":
        out |= {"one_hot": "a vector of len(choices) + 1 with a 1 at the value's position, or at the last slot "
                           "('other') for a value not among the choices",
                "atom": [{"one_hot": "GetAtomicNum()", "choices": list(mol._ELEMENTS)},
                         {"one_hot": "GetDegree()", "choices": list(mol._DEGREES)},
                         {"one_hot": "GetFormalCharge()", "choices": list(mol._CHARGES)},
                         {"one_hot": "str(GetChiralTag())", "choices": list(mol._CHIRAL)},
                         {"one_hot": "GetTotalNumHs()", "choices": list(mol._HS)},
                         {"one_hot": "str(GetHybridization())", "choices": list(mol._HYBRID)},
                         {"value": "float(GetIsAromatic())"}, {"value": "float(IsInRing())"},
                         {"value": "GetMass() / 100"}],
                "bond": [{"flags": "str(GetBondType()) == each of", "choices": list(mol._BOND_TYPES)},
                         {"value": "float(GetIsConjugated())"}, {"value": "float(IsInRing())"},
                         {"one_hot": "str(GetStereo())", "choices": list(mol._STEREO)}],
                "edges": "each bond b = (i, j) of mol.GetBonds(), in order, gives the directed edges 2b: i -> j and "
                         "2b + 1: j -> i, both with the bond's features; molecules concatenated, atom and edge "
                         "indices offset by the atoms before them"}
    else:
        out["ecfp"] = ("rdFingerprintGenerator.GetMorganGenerator(radius=ecfp[0], fpSize=ecfp[1])"
                       ".GetFingerprintAsNumPy(mol), as float")
    return out


def _tokenize_rule(tok: dict[str, Any] | None) -> dict[str, Any] | None:
    """How text becomes the tokenizer's ids, spelled out for each kind (the tokenizer's own dict
    holds only its vocabulary: the splitting, case and unknown-token rules live in layerwise's code)."""
    from layerwise.data.tokenizers import WordTokenizer

    kind = (tok or {}).get("kind")
    if kind == "word":
        return {"lowercase": True, "pattern": WordTokenizer.PATTERN.pattern, "unknown_id": 0,
                "formula": "words = re.findall(pattern, text.lower()); id = 1 + words.index(word) in tokenizer.words, "
                           "0 for a word not in it"}
    if kind == "char":
        return {"formula": "id = chars.index(character) for each character of the text (a character not in chars "
                           "has no id: remove or replace it)"}
    if kind == "byte":
        return {"formula": "ids = the UTF-8 bytes of the text (0..255)"}
    if kind == "bpe":
        return {"formula": "ids = tokenizers.Tokenizer.from_str(tokenizer.json).encode(text, "
                           "add_special_tokens=False).ids (Hugging Face tokenizers; byte-level BPE, no special tokens)"}
    return None


def _preprocessing(spec: InputSpec, info: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """How raw data becomes the model's inputs, for someone without layerwise."""
    if info is None:  # a reinforcement-learning agent: the environment's observations as they are
        return {"kind": "observation", "environment": (meta.get("task") or {}).get("env_id"),
                "formula": "the environment's observation vector, float32, unscaled"}
    x = info.extra
    if spec.kind in ("token_ids", "text_ids"):
        out = {"kind": spec.kind, "tokenizer": x.get("tokenizer"), "tokenize": _tokenize_rule(x.get("tokenizer")),
               "sequence_lengths": list(spec.lengths or ())}
        if spec.kind == "text_ids":
            t = x.get("text", {})
            out |= {"max_length": t.get("max_length"), "pad_id": t.get("pad_id", 0), "id_offset": t.get("id_offset", 1),
                    "formula": "ids = tokenizer ids + id_offset, cut to max_length, right-padded with pad_id (0)"}
        else:
            out |= {"block_size": info.in_shape[0],
                    "formula": "ids = the tokenizer's ids; a longer context keeps its last block_size (as layerwise "
                               "generate does); no padding id: the sequences of a batch have one length"}
        return out
    if spec.kind == "indices":
        from layerwise.data.ratings import AGE_BUCKETS

        return {"kind": "indices", "ratings": x.get("ratings"), "age_edges": list(AGE_BUCKETS),
                "formula": "one int64 column per name in ratings.columns: the user and item index is 1 + the id's "
                           "position in ratings.user_ids / ratings.item_ids (0 = unknown); side features, 0 = "
                           "unknown: age = 1 + the number of age_edges <= the user's age (1..7), gender 1 = F, "
                           "2 = M, occupation = 1 + its position in ratings.occupations; genre_<name> = 1 when the "
                           "movie has that genre, else 0"}
    if spec.kind == "molecular_graph":
        return {"kind": "molecular_graph", "featurization": x.get("molecules"), "rdkit": _molecule_rule(x.get("molecules")),
                "formula": "molecules concatenated: atom_x (atoms, F_a), bond_x (2 per bond, F_b), edge_index (2, E) "
                           "source/target atom of each directed bond, rev_index[e] = e ^ 1 (the same bond reversed), "
                           "graph_index (atoms,) the molecule of each atom, features (B, D) standardized descriptors"}
    out = {"kind": "normalize", "scale": info.scale, "mean": info.mean, "std": info.std, "channel_axis": 1,
           "formula": "input = (raw / scale - mean[c]) / std[c], c along channel_axis (the feature axis of a table)"}
    if "audio" in x:  # what raw is: the recording's log-mel features, computed with these settings
        out |= {"raw": "log-mel features (1, n_mels, frames) of the recording", "audio": x["audio"],
                "features": _AUDIO_FEATURES}
    elif "table" in x:
        from layerwise.data.tabular import MISSING_CATEGORY

        out |= {"raw": "the row's columns encoded as table describes", "table": x["table"],
                "encode": "features in table.features order: each numeric column its number (table.decimal / "
                          "table.thousands separators), log(1 + x) for a column in table.log, a missing cell "
                          "table.medians[column] (for a log column already in log space; only with table.missing "
                          "= impute); each text column one-hot over table.categories[column] in that order (an "
                          f"empty cell is the category {MISSING_CATEGORY!r}, a value never seen in training all "
                          "zeros); then, for each column in table.indicators, 1 if its cell was missing else 0"}
    elif "molecules" in x:  # a fingerprint vector (featurize=ecfp): bits, then the raw descriptors if any
        out |= {"raw": "the molecule's ECFP bits (0/1; radius and bits in molecules.ecfp) followed by its raw "
                       "descriptors (molecules.descriptors, in that order)", "molecules": x["molecules"],
                "rdkit": _molecule_rule(x["molecules"])}
    elif "field" in x:
        out |= {"raw": "the field's values on the grid", "field": x["field"]}
    elif len(info.in_shape) == 3:  # an image: raw pixel values in [0, scale] (8-bit: 0..255), channels first
        out |= {"raw": f"pixels in [0, {info.scale:g}], channels first (N, C, H, W)", "raw_range": [0.0, info.scale]}
        out |= {k: x[k] for k in ("image_size", "resample") if k in x}
        out["image"] = _image_rule(info)
    return out


def _image_rule(info: Any) -> dict[str, Any]:
    """How `layerwise predict` turns an image file into raw pixels (data.inputs.load_inputs and
    imagefile.decode): the file's own size, colours and polarity are not the model's."""
    from layerwise.data.inputs import LIGHT_ON_DARK

    C, H, W = (int(d) for d in info.in_shape)
    folder = info.name == "image-folder"
    rule = {"width": W, "height": H, "mode": "L" if C == 1 else "RGB",
            "resize": "Pillow's Image.resize((width, height), BILINEAR)" if folder else
            "Pillow's Image.resize((width, height), BOX) when the image is at least that large in both "
            "dimensions, BILINEAR otherwise",
            "formula": f"PIL.ImageOps.exif_transpose(image).convert(mode), resized to {W}x{H} when it is another "
                       f"size, as uint8 (H, W[, C]) moved channels first: raw = pixel / 255 * scale (a 16-bit "
                       f"file: pixel / 65535 * scale)"}
    if C == 1 and info.name in LIGHT_ON_DARK:  # predict --invert auto: dark strokes on light paper flipped
        rule["polarity"] = ("light strokes on a dark ground, as trained: an image whose mean is over half the "
                            "range (dark on light) is inverted, raw = scale - raw")
    return rule


def _postprocessing(meta: dict[str, Any], info: Any, model: torch.nn.Module) -> dict[str, Any]:
    task = dict(meta.get("task") or {})
    name = task.get("name") or (info.task if info is not None else "")
    if name in ("regress", "field") and "mean" in task:
        how = "exp(prediction * std + mean)" if task.get("transform") == "log" else "prediction * std + mean"
        out = {"task": name, "columns": task.get("columns"), "mean": task["mean"], "std": task["std"],
               "formula": f"target in units = {how}, per column"}
        if task.get("clip") and task.get("range"):  # task.clip_predictions: predict clamps to the training range
            low, high = task["range"]
            out |= {"low": low, "high": high,
                    "formula": f"target in units = clip({how}, low, high), per column (the training targets' range)"}
        return out
    if name == "lm":
        return {"task": "lm", "formula": "softmax(logits[:, -1]) is the next token's distribution"}
    if name == "rl":
        log_std = getattr(model, "log_std", None)  # a Gaussian policy's state-independent log sigma
        return {"task": "rl", "formula": "the greedy action is argmax(logits)" if log_std is None
                else "the action is action_mean (plus exp(log_std) * N(0, 1) noise when sampling), then clipped to "
                     "the environment's action bounds (action_space.low .. high), as layerwise's rollouts do"} | (
            {} if log_std is None else {"log_std": log_std.detach().cpu().tolist()})
    classes = list(info.classes) if info is not None else []
    if name == "multilabel":  # predict names the labels whose probability reaches the saved threshold
        threshold = float(task.get("threshold", 0.5))
        return {"task": name, "classes": classes, "threshold": threshold,
                "formula": "sigmoid(logits) per label; the predicted labels are those with sigmoid >= threshold"}
    return {"task": name or "classify", "classes": classes, "formula": "argmax(logits) indexes classes"}


def export_metadata(meta: dict[str, Any], info: Any, spec: InputSpec, weights_sha256: str) -> dict[str, str]:
    """The metadata written into an export, every value a JSON string: ``layerwise`` (format
    version, layerwise version, the weights' SHA-256), ``model`` (the create_model arguments),
    ``task`` (its saved state), ``data`` (the DatasetInfo: classes, in_shape, extra), ``inputs`` and
    ``outputs`` (names, dtypes, shapes with named dynamic dimensions), ``preprocessing`` and
    ``postprocessing`` (formulas and their numbers)."""
    from layerwise import __version__

    inputs = [{"name": n, "dtype": d, "shape": s} for n, d, s in zip(spec.names, spec.dtypes, spec.shapes, strict=True)]
    props = {"layerwise": {"format_version": METADATA_VERSION, "version": __version__, "weights_sha256": weights_sha256},
             "model": meta["model"], "task": meta.get("task"), "data": info.to_dict() if info is not None else None,
             "inputs": inputs, "outputs": spec.outputs, "preprocessing": _preprocessing(spec, info, meta),
             "postprocessing": _postprocessing(meta, info, spec.module)}
    return {k: json.dumps(v) for k, v in props.items()}

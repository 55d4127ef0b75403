"""Text classes: the word tokenizer, padded batches of similar lengths that resume exactly, the
layouts and their errors, and the text models' padding."""

from __future__ import annotations

import pytest
import torch

from layerwise.config import DataConfig
from layerwise.data import DataError, load_dataset
from layerwise.data.textclass import PAD, SequenceLoader, SequenceSet, pad_batch
from layerwise.data.tokenizers import WordTokenizer, tokenizer_from_dict


def test_word_tokenizer_keeps_the_most_frequent_words():
    tok = WordTokenizer.train("The film's plot, the plot! Don't.", vocab_size=4)
    assert WordTokenizer.split("The film's plot, don't!") == ["the", "film's", "plot", ",", "don't", "!"]
    assert tok.words == ["<unk>", "plot", "the", "!"]  # counts 2, 2, then ties in alphabetical order
    assert tok.encode("the plot thickens") == [2, 1, 0]
    assert tokenizer_from_dict(tok.to_dict()).encode("the plot thickens") == [2, 1, 0]
    assert tok.decode([2, 1, 0]) == "the plot <unk>"


def test_sequence_loader_batches_by_length_and_resumes_exactly():
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(1, 50, (int(n),), generator=g).tolist() for n in torch.randint(1, 30, (103,), generator=g)]
    x, y = SequenceSet(seqs), torch.arange(103) % 3
    loader = SequenceLoader(x, y, 8, shuffle=True, seed=3)
    assert len(loader) == 13
    epoch = list(loader)
    seen = sorted(i for xb, yb in epoch for i in yb.tolist())
    assert len(seen) == 103
    padded = sum(int((xb == PAD).sum()) for xb, _ in epoch)
    plain = SequenceLoader(x, y, 8, shuffle=False)
    assert padded < sum(int((xb == PAD).sum()) for xb, _ in plain)  # similar lengths pad less
    for xb, _ in epoch:  # each row: its tokens, then padding only
        lengths = (xb != PAD).sum(1)
        assert all(bool((row[:n] != PAD).all() and (row[n:] == PAD).all()) for row, n in zip(xb, lengths.tolist()))
    # resume mid-epoch 1 from a state dict: the same batches
    full = SequenceLoader(x, y, 8, shuffle=True, seed=3)
    list(full)
    second = [b for b in full]
    part = SequenceLoader(x, y, 8, shuffle=True, seed=3)
    list(part)
    it = iter(part)
    for _ in range(5):
        next(it)
    state = part.state_dict()
    resumed = SequenceLoader(x, y, 8, shuffle=True, seed=3)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == 8 and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(rest, second[5:]))
    # split over ranks: every example once per epoch (padding wraps around)
    ranks = [SequenceLoader(x, y, 8, shuffle=True, seed=3, rank=r, world_size=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 7


def test_layouts_and_their_errors(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "only.pos").write_text("good\n")
    with pytest.raises(DataError, match="holds 1 file"):
        load_dataset("text-classes", tmp_path, DataConfig(name="text-classes", path="one", tokenizer="word"))
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "a.txt").write_text("\n\n")
    (tmp_path / "blank" / "b.txt").write_text("fine\n")
    with pytest.raises(DataError, match=r"a\.txt' holds no non-empty lines"):
        load_dataset("text-classes", tmp_path, DataConfig(name="text-classes", path="blank", tokenizer="word"))
    (tmp_path / "latin").mkdir()
    (tmp_path / "latin" / "x.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (tmp_path / "latin" / "y.txt").write_text("ok\n")
    with pytest.raises(DataError, match="not valid UTF-8"):
        load_dataset("text-classes", tmp_path, DataConfig(name="text-classes", path="latin", tokenizer="word"))
    # train/ and test/ parts; a class only in test is refused by name
    for split, classes in (("train", ("a", "b")), ("test", ("a", "c"))):
        for c in classes:
            (tmp_path / "tt" / split / c).mkdir(parents=True)
            (tmp_path / "tt" / split / c / "1.txt").write_text(f"{c} text\n")
    with pytest.raises(DataError, match="has classes that train/ lacks: c"):
        load_dataset("text-classes", tmp_path, DataConfig(name="text-classes", path="tt", tokenizer="word"))
    # long examples are cut to block_size, with a warning that counts them
    (tmp_path / "long").mkdir()
    (tmp_path / "long" / "a.txt").write_text("\n".join(["w " * 40] * 5) + "\n")
    (tmp_path / "long" / "b.txt").write_text("\n".join(["v"] * 5) + "\n")
    ds = load_dataset("text-classes", tmp_path, DataConfig(name="text-classes", path="long", tokenizer="word",
                                                          block_size=16))
    assert int(ds.x_train.lengths.max()) == 16 and any("longer than data.block_size=16" in w for w in ds.warnings)


def test_text_models_ignore_padding():
    from layerwise.models import create_model

    for name, kw in (("text-transformer", {"n_layer": 1, "n_embd": 16, "dropout": 0.0}), ("ngram-bag", {})):
        torch.manual_seed(0)
        m = create_model(name, in_shape=(12,), num_classes=3, vocab_size=30, **kw).eval()
        a = pad_batch([torch.tensor([5, 6, 7])])  # (1, 3)
        b = torch.nn.functional.pad(a, (0, 9))  # the same sentence padded to 12
        assert torch.allclose(m(a), m(b), atol=1e-5), name

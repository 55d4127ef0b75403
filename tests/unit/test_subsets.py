"""data.classes and data.labels_per_class: which examples, relabelled how, the same for the same
seed; every kind of classification source; the errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import require_data
from PIL import Image

from layerwise.config import ConfigError, DataConfig, load_config
from layerwise.data import DataError, load_dataset
from layerwise.data.subsets import stratified_subset


def _digits(**kw):
    return load_dataset("digits", "unused", DataConfig(**kw))


def _rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x}


def test_classes_keep_those_examples_relabelled_in_the_given_order():
    full = _digits()
    ds = _digits(classes=[9, "3"])
    assert ds.info.num_classes == 2 and ds.info.classes == ["9", "3"]
    assert torch.bincount(ds.y_train).tolist() == [144, 146]  # the source's 9s, then its 3s
    assert torch.bincount(ds.y_test).tolist() == [36, 37]
    assert len(ds.x_train) == 290 and len(ds.x_test) == 73
    # the examples labelled 0 are exactly the source's nines, in their order; 1: its threes
    assert ds.x_train[ds.y_train == 0].equal(full.x_train[full.y_train == 9])
    assert ds.x_test[ds.y_test == 1].equal(full.x_test[full.y_test == 3])
    assert ds.info.mean == full.info.mean and ds.info.std == full.info.std  # the source's scaling
    assert ds.source["subset"] == {"classes": ["9", "3"], "source_labels": [9, 3], "train": 290, "test": 73}


def test_labels_per_class_is_stratified_seeded_and_independent_of_other_options():
    full = _digits()
    ds = _digits(labels_per_class=20)
    assert torch.bincount(ds.y_train).tolist() == [20] * 10 and len(ds.x_test) == 360  # test stays whole
    assert ds.source["subset"]["train"] == 200
    assert _digits(labels_per_class=20).x_train.equal(ds.x_train)  # same seed, same examples
    other = _digits(labels_per_class=20, subset_seed=1)
    assert not other.x_train.equal(ds.x_train)
    # every chosen example is one of the source's training examples of its class
    for c in range(10):
        assert _rows(ds.x_train[ds.y_train == c]) <= _rows(full.x_train[full.y_train == c])
    # a class's examples do not depend on which other classes are kept, nor on their order
    threes = _rows(ds.x_train[ds.y_train == 3])
    for classes, label in (([3, 9], 0), ([9, 3], 1), ([0, 1, 2, 3], 3)):
        sub = _digits(classes=classes, labels_per_class=20)
        assert _rows(sub.x_train[sub.y_train == label]) == threes
    # nor on train.seed or the batch size (they are not data-section inputs of the draw)
    cfg = load_config(None, ["--train.seed=7", "--data.batch_size=13", "--data.labels_per_class=20"])
    assert load_dataset("digits", "unused", cfg.data).x_train.equal(ds.x_train)
    # a smaller N keeps a subset of a larger N's examples: a curve over N adds examples
    small = _digits(labels_per_class=5)
    assert _rows(small.x_train) < _rows(ds.x_train) and len(small.x_train) == 50


def test_stratified_subset_draws_per_class_from_seed_and_source_label():
    y = np.repeat(np.arange(3), 10)
    idx = stratified_subset(y, 4, seed=0)
    assert np.bincount(y[idx]).tolist() == [4, 4, 4] and (np.diff(idx) > 0).all()
    # class 1 with source label 7 draws what a class labelled 7 draws: (seed, label) decides
    again = stratified_subset(np.repeat([0, 1], 10), 4, seed=0, labels=np.array([5, 1]))
    assert (again[again >= 10] - 10).tolist() == (idx[(idx >= 10) & (idx < 20)] - 10).tolist()
    expected = np.sort(np.random.default_rng([0, 1]).permutation(np.arange(10, 20))[:4])
    assert idx[(idx >= 10) & (idx < 20)].tolist() == expected.tolist()
    with pytest.raises(DataError, match="class 2 has 3"):
        stratified_subset(np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2]), 4, seed=0)


def test_too_few_examples_and_bad_class_names_are_clear_errors():
    with pytest.raises(DataError, match=r"labels_per_class=140 .* '8' 139\. Lower data.labels_per_class to at "
                                        r"most 139, or leave those classes out with data.classes"):
        _digits(labels_per_class=140)
    with pytest.raises(ConfigError, match=r"'cat', which is not a class of dataset 'digits'.*0, 1, 2"):
        _digits(classes=["cat", 1])
    with pytest.raises(ConfigError, match="names class '1' twice"):
        _digits(classes=[1, "1"])
    with pytest.raises(ConfigError, match="at least two"):
        _digits(classes=[4])
    with pytest.raises(ConfigError, match=r"holds True \(bool\).*Quote"):
        _digits(classes=[True, 1])
    with pytest.raises(ConfigError, match="names 12, which is not a class"):
        _digits(classes=[1, 12])
    with pytest.raises(ConfigError, match="data.labels_per_class must be >= 0"):
        load_config(None, ["--data.labels_per_class=-1"])
    with pytest.raises(ConfigError, match="expects list"):
        load_config(None, ["--data.classes=7"])


def test_sources_without_classes_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"data.labels_per_class: only a classification source .* 'diabetes' "
                                          r"is a regress source \(numeric targets\)"):
        load_dataset("diabetes", "unused", DataConfig(name="diabetes", labels_per_class=5))
    (tmp_path / "t.txt").write_text("to be or not to be, that is the question " * 40)
    with pytest.raises(ConfigError, match=r"data.classes: .* is a lm source .*use data.train_subset"):
        load_dataset("text", tmp_path, DataConfig(name="text", path="t.txt", block_size=8, classes=[0, 1]))


def test_image_folder_stream_source_keeps_classes_lazily(tmp_path):
    for c, value in (("a", 10), ("b", 120), ("c", 240)):
        for i in range(6):
            (tmp_path / "f" / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((4, 4), value + i, np.uint8)).save(tmp_path / "f" / c / f"{i}.png")
    opts = DataConfig(name="image-folder", path="f", val_fraction=0.5, loader="stream", classes=["c", "a"],
                      labels_per_class=2)
    ds = load_dataset("image-folder", tmp_path, opts)
    # the examples keep the source's order (class a's files first), relabelled c -> 0, a -> 1
    assert ds.info.classes == ["c", "a"] and ds.y_train.tolist() == [1, 1, 0, 0]
    assert ds.y_test.tolist() == [1] * 3 + [0] * 3
    first = [int(ds.x_train[i][0, 0, 0]) for i in range(4)]  # decoded on demand, the right files
    assert all(10 <= v < 16 for v in first[:2]) and all(240 <= v < 246 for v in first[2:])
    assert all(240 <= int(ds.x_test[i][0, 0, 0]) < 246 for i in range(3, 6))


def test_text_classes_keep_sequences(tmp_path):
    (tmp_path / "mr").mkdir()
    for name, word in (("neg", "bad"), ("pos", "good"), ("neutral", "fine")):
        (tmp_path / "mr" / f"{name}.txt").write_text("".join(f"a {word} film number {i}\n" for i in range(20)))
    opts = DataConfig(name="text-classes", path="mr", tokenizer="word", classes=["pos", "neg"], labels_per_class=5)
    ds = load_dataset("text-classes", tmp_path, opts)
    assert ds.info.classes == ["pos", "neg"] and torch.bincount(ds.y_train).tolist() == [5, 5]
    tok = ds.tokenizer
    good, bad = tok.encode("good")[0] + 1, tok.encode("bad")[0] + 1  # ids are the tokenizer's + 1
    assert all(good in ds.x_train[i].tolist() for i in range(10) if ds.y_train[i] == 0)
    assert all(bad in ds.x_train[i].tolist() for i in range(10) if ds.y_train[i] == 1)


def test_mnist_subset_on_the_real_data():
    root = require_data("mnist/mnist_train.npz", "mnist/mnist_test.npz")
    ds = load_dataset("mnist", root, DataConfig(name="mnist", classes=[5, 6, 7, 8, 9], labels_per_class=50))
    assert ds.info.classes == ["5", "6", "7", "8", "9"] and torch.bincount(ds.y_train).tolist() == [50] * 5
    assert torch.bincount(ds.y_test).tolist() == [892, 958, 1028, 974, 1009]  # MNIST's test counts of 5..9

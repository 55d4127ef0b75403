"""The csv dataset as users' files are: column types, one-hot encoding, splits, per-feature stats,
delimiters, a BOM, classes named NA, missing values under each policy, and bad values by line."""

import numpy as np
import pytest
import torch

from layerwise.config import DataConfig
from layerwise.data import DataError, load_dataset
from layerwise.data.tabular import encode_rows

COLOURS = ["red", "green", "blue"]


def _table(n=20):
    """age (numeric), colour (categorical), size (numeric), label (target, last); rows i = 0..n-1."""
    rows = []
    for i in range(n):
        rows.append([str(20 + i), COLOURS[i % 3], f"{0.5 * i:.1f}", "yes" if i % 4 == 0 else "no"])
    return rows


def _write(path, rows, header=("age", "colour", "size", "label"), sep=",", bom=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join([sep.join(header)] + [sep.join(r) for r in rows]) + "\n"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())


def _opts(path, **kw):
    return DataConfig(name="csv", path=str(path), **kw)


def test_single_file_split_encoding_and_stats(tmp_path):
    _write(tmp_path / "t.csv", _table())
    ds = load_dataset("csv", tmp_path, _opts("t.csv", val_fraction=0.25))
    assert ds.info.classes == ["no", "yes"] and ds.info.in_shape == (5,) and ds.info.task == "classify"
    enc = ds.info.extra["table"]
    assert enc["columns"] == ["age", "colour", "size"] and enc["numeric"] == ["age", "size"]
    assert enc["categories"] == {"colour": ["blue", "green", "red"]}
    assert enc["features"] == ["age", "colour=blue", "colour=green", "colour=red", "size"]
    # 15 "no" and 5 "yes": round(15 * 0.25) = 4 and round(5 * 0.25) = 1 held out
    assert (len(ds.x_train), len(ds.x_test)) == (15, 5)
    assert torch.bincount(ds.y_test).tolist() == [4, 1] and torch.bincount(ds.y_train).tolist() == [11, 4]
    x = torch.cat([ds.x_train, ds.x_test])
    assert x.dtype == torch.float32 and x.shape == (20, 5)
    x = x[x[:, 0].argsort()]  # back to file order by age
    assert x[:, 0].tolist() == list(range(20, 40)) and x[:, 4].tolist() == [0.5 * i for i in range(20)]
    onehot = x[:, 1:4]
    assert onehot.sum(1).tolist() == [1.0] * 20
    assert [["blue", "green", "red"][j] for j in onehot.argmax(1).tolist()] == [COLOURS[i % 3] for i in range(20)]
    xtr = ds.x_train.double()
    assert ds.info.mean == pytest.approx([xtr[:, 0].mean().item(), 0, 0, 0, xtr[:, 4].mean().item()])
    assert ds.info.std == pytest.approx([xtr[:, 0].std(unbiased=False).item(), 1, 1, 1,
                                         xtr[:, 4].std(unbiased=False).item()])
    assert ds.info.scale == 1.0 and "seed=0" in ds.source["split"]
    again = load_dataset("csv", tmp_path, _opts("t.csv", val_fraction=0.25))
    assert again.x_test.equal(ds.x_test)


def test_a_class_named_na_a_bom_and_a_semicolon(tmp_path):
    rows = [[str(i), f"{i * 0.1:.1f}", ["NA", "None", "null"][i % 3]] for i in range(30)]
    _write(tmp_path / "s.csv", rows, header=("a", "b", "kind"), sep=";", bom=True)
    ds = load_dataset("csv", tmp_path, _opts("s.csv"))
    assert ds.info.classes == ["NA", "None", "null"]  # text labels, not missing values
    assert ds.info.extra["table"]["columns"] == ["a", "b"]  # the BOM is not part of the first name
    assert len(ds.y_train) + len(ds.y_test) == 30
    _write(tmp_path / "t.tsv", rows, header=("a", "b", "kind"), sep="\t")
    assert load_dataset("csv", tmp_path, _opts("t.tsv")).info.classes == ["NA", "None", "null"]
    # the delimiter can be given, and a wrong one is not silently accepted
    with pytest.raises(DataError, match="only the target column"):
        load_dataset("csv", tmp_path, _opts("s.csv", delimiter=",", target=["a;b;kind"]))


def test_missing_values_under_each_policy(tmp_path):
    rows = _table(40)
    for i in (3, 13, 23, 33):
        rows[i][0] = ""  # the first: file line 5 (the header is line 1)
        rows[i + 4][1] = ""
        rows[i + 5][2] = "NA"
    _write(tmp_path / "t.csv", rows)
    with pytest.raises(DataError, match=r"t\.csv' line 5, column 'age': missing value.*data\.missing=impute.*"
                                        r"data\.on_error=skip"):
        load_dataset("csv", tmp_path, _opts("t.csv"))
    ds = load_dataset("csv", tmp_path, _opts("t.csv", missing="impute"))
    enc = ds.info.extra["table"]
    assert enc["indicators"] == ["age", "size"] and "<missing>" in enc["categories"]["colour"]
    assert enc["features"][-2:] == ["age_missing", "size_missing"]
    # medians from the training split only: recompute them from the training rows
    x_all = torch.cat([ds.x_train, ds.x_test])
    assert x_all.shape[1] == len(enc["features"]) and torch.isfinite(x_all).all()
    age_missing = ds.x_train[:, enc["features"].index("age_missing")] == 1
    assert age_missing.any()
    assert ds.x_train[age_missing, 0].tolist() == [pytest.approx(enc["medians"]["age"])] * int(age_missing.sum())
    train_ages = ds.x_train[~age_missing, 0].double()
    assert enc["medians"]["age"] == pytest.approx(float(np.median(train_ages.numpy())))
    ds = load_dataset("csv", tmp_path, _opts("t.csv", on_error="skip"))
    assert len(ds.y_train) + len(ds.y_test) == 28 and any("skipped 12 rows" in w for w in ds.warnings)


def test_impute_statistics_come_from_the_training_file_only(tmp_path):
    _write(tmp_path / "d/train.csv", [["10", "red", "1.0", "no"], ["", "red", "2.0", "yes"], ["30", "blue", "3.0", "no"]])
    _write(tmp_path / "d/test.csv", [["1000", "red", "", "yes"], ["", "blue", "5.0", "no"]])
    ds = load_dataset("csv", tmp_path, _opts("d", missing="impute"))
    enc = ds.info.extra["table"]
    assert enc["medians"] == {"age": 20.0, "size": 2.0}  # 1000 in the test file changes nothing
    assert enc["indicators"] == ["age"]  # size has no gap in the training file
    f = enc["features"]
    assert ds.x_test[1, f.index("age")].item() == 20.0 and ds.x_test[1, f.index("age_missing")].item() == 1.0
    assert ds.x_test[0, f.index("size")].item() == 2.0  # imputed without an indicator


def test_text_in_a_numeric_column_and_bad_numbers_name_the_line(tmp_path):
    rows = _table()
    rows[6][2] = "lots"
    _write(tmp_path / "t.csv", rows)
    with pytest.raises(DataError, match=r"line 8, column 'size': a text cell 'lots' in a numeric column"):
        load_dataset("csv", tmp_path, _opts("t.csv"))
    rows[6][2] = "inf"
    rows[12][2] = "1e39"
    _write(tmp_path / "t.csv", rows)
    with pytest.raises(DataError, match=r"line 8, column 'size': an infinite value"):
        load_dataset("csv", tmp_path, _opts("t.csv"))
    ds = load_dataset("csv", tmp_path, _opts("t.csv", on_error="skip"))
    assert len(ds.x_train) + len(ds.x_test) == 18 and torch.isfinite(ds.x_train).all()


def test_train_and_test_files_unseen_category_and_label_only_in_test(tmp_path):
    _write(tmp_path / "d/train.csv", _table(12))
    # columns in another order; a colour never seen in training
    _write(tmp_path / "d/test.csv", [["no", "purple", "30", "1.0"], ["yes", "red", "21", "2.0"]],
           header=("label", "colour", "age", "size"))
    ds = load_dataset("csv", tmp_path, _opts("d"))
    assert (len(ds.x_train), len(ds.x_test)) == (12, 2) and ds.source["split"] == "train.csv / test.csv"
    assert ds.x_test.tolist() == [[30, 0, 0, 0, 1.0], [21, 0, 0, 1, 2.0]]  # purple: all zeros
    assert ds.y_test.tolist() == [0, 1] and any("purple" in w for w in ds.warnings)
    with pytest.raises(DataError, match=r"label\(s\) 'purple' occur only in the test part"):
        load_dataset("csv", tmp_path, _opts("d", target=["colour"]))  # as a target, purple cannot be learned
    with pytest.raises(DataError, match=r"unknown target column 'colur'; did you mean 'colour'"):
        load_dataset("csv", tmp_path, _opts("d", target=["colur"]))
    _write(tmp_path / "d/test.csv", [["maybe", "red", "30", "1.0"]], header=("label", "colour", "age", "size"))
    with pytest.raises(DataError, match=r"label\(s\) 'maybe' occur only in the test part"):
        load_dataset("csv", tmp_path, _opts("d"))
    (tmp_path / "d/test.csv").unlink()
    with pytest.raises(DataError, match="lacks test.csv"):
        load_dataset("csv", tmp_path, _opts("d"))


def test_encode_rows_reproduces_training_features(tmp_path):
    _write(tmp_path / "t.csv", _table())
    ds = load_dataset("csv", tmp_path, _opts("t.csv"))
    with pytest.warns(UserWarning, match="'colour' has 1 value.*never seen"):
        x = encode_rows([{"age": "25", "colour": "green", "size": "2.5", "extra": "ignored"},
                         {"age": " 30 ", "colour": "mauve", "size": "5"}], ds.info.extra)
    assert x.dtype == np.float32 and x.tolist() == [[25, 0, 1, 0, 2.5], [30, 0, 0, 0, 5]]
    with pytest.raises(DataError, match="the rows to encode, row 1, column 'age': a text cell 'old'"):
        encode_rows([{"age": "old", "colour": "red", "size": "1"}], ds.info.extra)
    with pytest.raises(DataError, match=r"lack\(s\) the column\(s\) size"):
        encode_rows([{"age": "1", "colour": "red"}], ds.info.extra)


def test_task_is_decided_from_the_target_and_said(tmp_path):
    rng = np.random.default_rng(0)
    rows = [[f"{rng.normal():.3f}", f"{rng.normal() * 1000:.2f}", f"{i % 3}", "a|b" if i % 2 else "b"] for i in range(60)]
    _write(tmp_path / "t.csv", rows, header=("x", "price", "code", "tags"))
    reg = load_dataset("csv", tmp_path, _opts("t.csv", target=["price"]))
    assert reg.info.task == "regress" and "fractional" in reg.source["task_reason"]
    assert reg.y_train.dtype == torch.float32 and reg.y_train.shape[1] == 1
    cls = load_dataset("csv", tmp_path, _opts("t.csv", target=["code"]))
    assert cls.info.task == "classify" and "3 distinct integer codes" in cls.source["task_reason"]
    ml = load_dataset("csv", tmp_path, _opts("t.csv", target=["tags"], label_sep="|"))
    assert ml.info.task == "multilabel" and ml.info.classes == ["a", "b"]
    assert ml.y_train.shape[1] == 2 and set(ml.y_train.sum(1).tolist()) <= {1.0, 2.0}
    two = load_dataset("csv", tmp_path, _opts("t.csv", target=["x", "price"]))
    assert two.info.task == "regress" and two.info.classes == ["x", "price"] and two.y_train.shape[1] == 2
    forced = load_dataset("csv", tmp_path, _opts("t.csv", target=["code"], task="regress"))
    assert forced.info.task == "regress"


def test_constant_column_numeric_labels_and_malformed_files(tmp_path):
    rows = [[str(i), "7", str(c)] for i, c in enumerate([2, 10, 1, 2, 10, 1, 2, 10, 1, 2])]
    _write(tmp_path / "n.csv", rows, header=("a", "const", "y"))
    ds = load_dataset("csv", tmp_path, _opts("n.csv", val_fraction=0.3))
    assert ds.info.classes == ["1", "2", "10"]  # numeric labels sort as numbers
    assert ds.info.std[1] == 1.0 and ds.info.mean[1] == pytest.approx(7.0)
    y = torch.cat([ds.y_train, ds.y_test]).sort().values
    assert y.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    (tmp_path / "short.csv").write_text("a,b,y\n1,2,x\n3,y\n4,5,z\n")
    with pytest.raises(DataError, match="line 3 has 2 fields where the header has 3"):
        load_dataset("csv", tmp_path, _opts("short.csv"))
    (tmp_path / "long.csv").write_text('a,b,y\n1,2,x\n"3,5",4,y,9\n4,5,z\n5,6,x\n')
    with pytest.raises(DataError, match="line 3 has 4 fields"):
        load_dataset("csv", tmp_path, _opts("long.csv"))
    (tmp_path / "dup.csv").write_text("a,a,y\n1,2,x\n")
    with pytest.raises(DataError, match="repeated column names in its header: a"):
        load_dataset("csv", tmp_path, _opts("dup.csv"))
    (tmp_path / "empty.csv").write_text("a,b,y\n\n")
    with pytest.raises(DataError, match="has no data rows"):
        load_dataset("csv", tmp_path, _opts("empty.csv"))
    (tmp_path / "latin.csv").write_bytes("a,y\n1,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8 text"):
        load_dataset("csv", tmp_path, _opts("latin.csv"))


def test_builtin_tables():
    bc = load_dataset("breast-cancer", "", DataConfig(name="breast-cancer", folds=10, fold=3))
    assert bc.info.task == "classify" and bc.info.classes == ["malignant", "benign"] and bc.info.in_shape == (30,)
    assert len(bc.y_train) + len(bc.y_test) == 569 and len(bc.y_test) in (56, 57)
    folds = [load_dataset("breast-cancer", "", DataConfig(name="breast-cancer", folds=10, fold=i)).source["split"]
             for i in (0, 9)]
    assert folds[0].startswith("fold 0 of 10-fold") and "stratified" in folds[0]
    db = load_dataset("diabetes", "", DataConfig(name="diabetes"))
    assert db.info.task == "regress" and len(db.y_train) + len(db.y_test) == 442 and db.y_train.shape[1] == 1

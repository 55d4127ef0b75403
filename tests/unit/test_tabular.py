"""The csv dataset: column types, one-hot encoding, splits, per-feature stats and bad values."""

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


def _write(path, rows, header=("age", "colour", "size", "label")):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([",".join(header)] + [",".join(r) for r in rows]) + "\n")


def _opts(path, **kw):
    return DataConfig(name="csv", path=str(path), **kw)


def test_single_file_split_encoding_and_stats(tmp_path):
    _write(tmp_path / "t.csv", _table())
    ds = load_dataset("csv", tmp_path, _opts("t.csv", val_fraction=0.25))
    assert ds.info.classes == ["no", "yes"] and ds.info.in_shape == (5,)
    assert ds.info.extra == {"columns": ["age", "colour", "size"], "target": "label",
                             "categories": {"colour": ["blue", "green", "red"]},
                             "features": ["age", "colour=blue", "colour=green", "colour=red", "size"]}
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


def test_missing_non_numeric_and_nan_values_name_the_line_and_column(tmp_path):
    rows = _table()
    rows[3][0] = ""  # file line 5 (the header is line 1)
    _write(tmp_path / "t.csv", rows)
    with pytest.raises(DataError, match=r"t\.csv' line 5, column 'age': missing value '' in a numeric column.*"
                                        r"on_error=skip"):
        load_dataset("csv", tmp_path, _opts("t.csv"))
    rows[3][0] = "23"
    rows[6][2] = "nan"
    _write(tmp_path / "t.csv", rows)
    with pytest.raises(DataError, match=r"line 8, column 'size': NaN or infinite value 'nan'"):
        load_dataset("csv", tmp_path, _opts("t.csv"))
    rows[6][2] = "lots"
    _write(tmp_path / "t.csv", rows)
    with pytest.raises(DataError, match=r"line 8, column 'size': not a number 'lots'"):
        load_dataset("csv", tmp_path, _opts("t.csv"))
    rows[6][2], rows[9][0], rows[12][2] = "inf", "", "1e39"
    _write(tmp_path / "t.csv", rows)
    ds = load_dataset("csv", tmp_path, _opts("t.csv", on_error="skip"))
    assert len(ds.x_train) + len(ds.x_test) == 17
    assert ds.warnings == [f"skipped 3 rows of '{tmp_path / 't.csv'}' with missing, non-numeric or non-finite "
                           f"values (first: line 8, column 'size': NaN or infinite value 'inf' in a numeric column)"]
    assert torch.isfinite(ds.x_train).all()


def test_train_and_test_files_unseen_category_and_target_option(tmp_path):
    _write(tmp_path / "d/train.csv", _table(12))
    # columns in another order; a colour never seen in training
    _write(tmp_path / "d/test.csv", [["no", "purple", "30", "1.0"], ["yes", "red", "21", "2.0"]],
           header=("label", "colour", "age", "size"))
    ds = load_dataset("csv", tmp_path, _opts("d"))
    assert (len(ds.x_train), len(ds.x_test)) == (12, 2) and ds.source["split"] == "train.csv / test.csv"
    assert ds.x_test.tolist() == [[30, 0, 0, 0, 1.0], [21, 0, 0, 1, 2.0]]  # purple: all zeros
    assert ds.y_test.tolist() == [0, 1]
    ds = load_dataset("csv", tmp_path, _opts("d", target="colour"))
    assert ds.info.classes == ["blue", "green", "purple", "red"] and ds.info.extra["target"] == "colour"
    assert ds.info.extra["features"] == ["age", "size", "label=no", "label=yes"]
    with pytest.raises(DataError, match=r"unknown target column 'colur'; did you mean 'colour'"):
        load_dataset("csv", tmp_path, _opts("d", target="colur"))
    (tmp_path / "d/test.csv").unlink()
    with pytest.raises(DataError, match="lacks test.csv"):
        load_dataset("csv", tmp_path, _opts("d"))


def test_encode_rows_reproduces_training_features(tmp_path):
    _write(tmp_path / "t.csv", _table())
    ds = load_dataset("csv", tmp_path, _opts("t.csv"))
    x = encode_rows([{"age": "25", "colour": "green", "size": "2.5", "extra": "ignored"},
                     {"age": " 30 ", "colour": "mauve", "size": "5"}], ds.info.extra)
    assert x.dtype == np.float32 and x.tolist() == [[25, 0, 1, 0, 2.5], [30, 0, 0, 0, 5]]
    with pytest.raises(DataError, match="row 1, column 'age': not a number 'old'"):
        encode_rows([{"age": "old", "colour": "red", "size": "1"}], ds.info.extra)
    with pytest.raises(DataError, match="row 1 has no column 'size'"):
        encode_rows([{"age": "1", "colour": "red"}], ds.info.extra)


def test_constant_column_numeric_labels_and_malformed_files(tmp_path):
    rows = [[str(i), "7", str(c)] for i, c in enumerate([2, 10, 1, 2, 10, 1, 2, 10, 1, 2])]
    _write(tmp_path / "n.csv", rows, header=("a", "const", "y"))
    ds = load_dataset("csv", tmp_path, _opts("n.csv", val_fraction=0.3))
    assert ds.info.classes == ["1", "2", "10"]  # numeric labels sort as numbers
    assert ds.info.std[1] == 1.0 and ds.info.mean[1] == pytest.approx(7.0)
    y = torch.cat([ds.y_train, ds.y_test]).sort().values
    assert y.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    (tmp_path / "short.csv").write_text("a,b,y\n1,2,x\n3,y\n4,5,z\n")
    with pytest.raises(DataError, match="line 3, has 2 fields where the header has 3"):
        load_dataset("csv", tmp_path, _opts("short.csv"))
    (tmp_path / "dup.csv").write_text("a,a,y\n1,2,x\n")
    with pytest.raises(DataError, match="repeated column names in its header: a"):
        load_dataset("csv", tmp_path, _opts("dup.csv"))
    (tmp_path / "empty.csv").write_text("a,b,y\n\n")
    with pytest.raises(DataError, match="has no data rows"):
        load_dataset("csv", tmp_path, _opts("empty.csv"))
    (tmp_path / "latin.csv").write_bytes("a,y\n1,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8 text"):
        load_dataset("csv", tmp_path, _opts("latin.csv"))

"""CSV and text tables as users' files break things (found by trying): numbers written with
separators, duplicate or missing targets, a label separator that never occurs, big integer labels,
infinite targets, one class, a class of one row, empty columns and empty texts. Each case is a
clear error naming the line or column and the fix, or a right value."""

import numpy as np
import pytest
import torch

from layerwise.config import ConfigError, DataConfig
from layerwise.data import DataError, load_dataset


def _csv(path, header, rows, sep=","):
    path.write_text("\n".join([sep.join(header)] + [sep.join(map(str, r)) for r in rows]) + "\n", encoding="utf-8")
    return path


def _load(tmp_path, name="t.csv", dataset="csv", **kw):
    return load_dataset(dataset, tmp_path, DataConfig(name=dataset, path=name, **kw))


def test_numbers_written_with_separators_are_named_and_read_with_decimal_and_thousands(tmp_path):
    # European style: 1.007,50 (thousands . and decimal ,), 0,25; separated by ;
    prices = [1000 + 7 * i + 0.5 for i in range(40)]
    rows = [[f"{p:,.2f}".replace(",", " ").replace(".", ",").replace(" ", "."), f"{0.25 * i:.2f}".replace(".", ","),
             "a" if i % 2 else "b"] for i, p in enumerate(prices)]
    _csv(tmp_path / "t.csv", ["price", "ratio", "label"], rows, sep=";")
    assert rows[1][:2] == ["1.007,50", "0,25"]
    ds = _load(tmp_path, delimiter=";")
    assert any("data.decimal=, and/or data.thousands=" in w and "'price'" in w for w in ds.warnings)
    assert ds.info.extra["table"]["numeric"] == []  # read as categories, and said so
    ds = _load(tmp_path, delimiter=";", decimal=",", thousands=".")
    enc = ds.info.extra["table"]
    assert enc["numeric"] == ["price", "ratio"] and enc["features"] == ["price", "ratio"]
    x = torch.cat([ds.x_train, ds.x_test]).double()  # raw values (the loader normalizes on the device)
    assert sorted(x[:, 0].tolist()) == pytest.approx(prices)  # 1.007,50 -> 1007.5
    assert sorted(x[:, 1].tolist()) == pytest.approx([0.25 * i for i in range(40)], abs=1e-6)  # 0,25 -> 0.25


def test_target_column_faults(tmp_path):
    _csv(tmp_path / "t.csv", ["a", "y"], [[i, i % 3] for i in range(30)])
    with pytest.raises(ConfigError, match="names the column.s. y twice"):
        _load(tmp_path, target=["y", "y"])
    with pytest.raises(DataError, match=r"data.label_sep='\|' occurs in no cell of the target column 'y'"):
        _load(tmp_path, label_sep="|")
    _csv(tmp_path / "one.csv", ["a", "y"], [[i, "spam"] for i in range(30)])
    with pytest.raises(DataError, match="holds one class \\('spam'\\) in every row"):
        _load(tmp_path, "one.csv")
    _csv(tmp_path / "ids.csv", ["a", "y"], [[i, f"id{i}"] for i in range(30)])  # every row its own class
    with pytest.raises(DataError, match="30 classes in 30 rows.*data.task=regress"):
        _load(tmp_path, "ids.csv")


def test_big_integer_labels_are_distinct_as_written(tmp_path):
    # 2**60 + i: one float64 value for every i < 128, yet 40 different labels as written
    _csv(tmp_path / "t.csv", ["a", "y"], [[i, 2 ** 60 + i % 2] for i in range(40)])
    ds = _load(tmp_path, task="classify")
    assert ds.info.classes == [str(2 ** 60), str(2 ** 60 + 1)]
    y = torch.cat([ds.y_train, ds.y_test])
    assert sorted(y.tolist()) == [0] * 20 + [1] * 20


def test_an_infinite_regression_target_is_named_by_line_or_skipped(tmp_path):
    rows = [[i, 0.5 * i] for i in range(30)]
    rows[6][1] = "inf"
    _csv(tmp_path / "t.csv", ["a", "y"], rows)
    with pytest.raises(DataError, match="line 8, column 'y' \\(the target\\): 'inf' is not a finite float32"):
        _load(tmp_path, task="regress")
    rows[6][1] = "1e39"  # finite in float64, beyond float32
    _csv(tmp_path / "t.csv", ["a", "y"], rows)
    with pytest.raises(DataError, match="line 8.*'1e39' is not a finite float32"):
        _load(tmp_path, task="regress")
    ds = _load(tmp_path, task="regress", on_error="skip")
    assert any("skipped 1 rows" in w and "line 8" in w for w in ds.warnings)
    assert len(ds.y_train) + len(ds.y_test) == 29 and torch.isfinite(torch.cat([ds.y_train, ds.y_test])).all()


def test_an_empty_column_is_warned(tmp_path):
    _csv(tmp_path / "t.csv", ["a", "blank", "y"], [[i, "", i % 2] for i in range(30)])
    ds = _load(tmp_path, missing="impute")
    assert any("column 'blank' is empty in every training row" in w for w in ds.warnings)


def test_built_in_tables_refuse_csv_only_settings(tmp_path):
    with pytest.raises(ConfigError, match="data.target.*fixed target"):
        load_dataset("diabetes", tmp_path, DataConfig(name="diabetes", target=["age"]))


def test_text_table_faults(tmp_path):
    rows = [[f"sentence number {i} is {'good' if i % 2 else 'bad'}", i, "pos" if i % 2 else "neg"]
            for i in range(40)]
    _csv(tmp_path / "t.csv", ["text", "id", "label"], rows)
    # the label column is the last other column (as for csv), not the first ('id', one class per row)
    ds = _load(tmp_path, dataset="text-classes", tokenizer="word")
    assert ds.info.classes == ["neg", "pos"]
    assert ds.source["task_reason"] == "text from column 'text', labels from column 'label'"
    with pytest.raises(DataError, match="one label column; data.target names 2"):
        _load(tmp_path, dataset="text-classes", tokenizer="word", target=["id", "label"])
    rows[4][2] = ""
    rows[9][0] = ""
    _csv(tmp_path / "t.csv", ["text", "id", "label"], rows)
    with pytest.raises(DataError, match="line 6: column 'label' \\(the label\\) is empty"):
        _load(tmp_path, dataset="text-classes", tokenizer="word")
    ds = _load(tmp_path, dataset="text-classes", tokenizer="word", on_error="skip")
    assert any("skipped 2 rows" in w and "empty text or label (first: line 6)" in w for w in ds.warnings)
    assert len(ds.y_train) + len(ds.y_test) == 38


def test_an_empty_file_in_a_class_folder_is_named_or_skipped(tmp_path):
    for c in ("neg", "pos"):
        (tmp_path / "d" / c).mkdir(parents=True)
        for i in range(10):
            (tmp_path / "d" / c / f"{i}.txt").write_text(f"{c} example {i}")
    (tmp_path / "d" / "pos" / "empty.txt").write_text("  \n")
    with pytest.raises(DataError, match="text file '.*empty.txt' is empty \\(an example of class 'pos'\\)"):
        _load(tmp_path, "d", dataset="text-classes", tokenizer="char")
    ds = _load(tmp_path, "d", dataset="text-classes", tokenizer="char", on_error="skip")
    assert any("skipped the empty text file" in w and "empty.txt" in w for w in ds.warnings)
    assert len(ds.y_train) + len(ds.y_test) == 20
    assert np.bincount(torch.cat([ds.y_train, ds.y_test]).numpy()).tolist() == [10, 10]


def test_number_format_settings_are_checked_with_the_config():
    from layerwise.config import load_config

    with pytest.raises(ConfigError, match="data.thousands must be .* not the decimal mark"):
        load_config(None, ["--data.decimal=,", "--data.thousands=,"])
    with pytest.raises(ConfigError, match="data.label_sep must be one character"):
        load_config(None, ["--data.label_sep=||"])
    with pytest.raises(ConfigError, match="data.fold picks a fold of data.folds"):
        load_config(None, ["--data.fold=1"])

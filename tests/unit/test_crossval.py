"""`layerwise cv` refuses settings it would silently replace (checked before any fold trains)."""

from __future__ import annotations

import pytest

from layerwise.cli import main
from layerwise.config import ConfigError
from layerwise.train.crossval import cross_validate


def test_a_run_dir_is_refused_not_dropped(tmp_path, capsys, monkeypatch):
    # every fold's run.dir is OUT/fold<i>: --run.dir used to be ignored, the folds landing in ./runs
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"run.dir='mine' would be ignored; give the folder as --dir OUT"):
        cross_validate(None, "--run.dir=mine", folds=2)
    assert main(["cv", "--folds", "2", f"--run.dir={tmp_path / 'mine'}"]) == 2
    assert "--dir OUT" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written, no ./runs

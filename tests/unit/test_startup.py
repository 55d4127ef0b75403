"""Start-up cost (issue 14): commands that only print help, or read a table, never import torch.

Importing torch takes ~2 s on a 2-core machine, twenty times the rest of the CLI; these tests fail
as soon as an import chain pulls it in for a command that does not need it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CHECK = r"""
import contextlib, io, json, sys
from layerwise.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
    try:
        code = main(json.loads(sys.argv[1]))
    except SystemExit as e:
        code = e.code
print(json.dumps({"code": code, "torch": "torch" in sys.modules, "printed": len(out.getvalue())}))
"""


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["rl", "--help"], ["cv", "--help"],
                                  ["eval", "--help"], ["predict", "--help"], ["generate", "--help"],
                                  ["play", "--help"], ["info", "--help"], ["serve", "--help"], ["scale", "--help"],
                                  ["scale", "fit", "--help"], ["finetune", "--help"], ["attack", "--help"],
                                  ["runs", "--help"]])
def test_help_does_not_import_torch(argv):
    out = subprocess.run([sys.executable, "-c", CHECK, json.dumps(argv)], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["code"] in (0, None) and r["printed"] > 100, r
    assert r["torch"] is False, f"`layerwise {' '.join(argv)}` imported torch"


def test_reading_an_rl_config_does_not_import_torch():
    code = ("import sys; import layerwise.rl as rl; from layerwise.rl.config import RLConfig; "
            "assert rl.RLConfig is RLConfig; print('torch' in sys.modules); rl.train_rl; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]  # the trainer still loads on first use

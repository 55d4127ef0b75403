"""Cases found by trying to break the bad-input rules as a new user would: each asserts the clear
error (or the right value) that replaced a traceback, a silent change or a destroyed file."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from layerwise.config import ConfigError, load_config

QUIET = ["--run.plots=false", "--run.tensorboard=false", "--quiet"]
MLP = ["--model.name=mlp", "--model.width=16"]


def lw(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "layerwise", *args], capture_output=True, text=True, timeout=300,
                          check=False)


def _one_paragraph(out: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert out.returncode == code, (out.returncode, out.stderr[-2000:])
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr[-2000:]
    for n in needles:
        assert n in out.stderr, (n, out.stderr)


# ------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("arg, needle", [
    ("--optim.lr=inf", "optim.lr=inf: a setting must be a finite number"),
    ("--optim.weight_decay=nan", "optim.weight_decay=nan"),
    ("--optim.momentum=nan", "optim.momentum=nan"),
    ("--optim.betas=[1.5,0.9]", "optim.betas must be two numbers in [0, 1)"),
    ("--optim.weight_decay=-1", "optim.weight_decay must be >= 0"),
    ("--train.device=bogus", "train.device must be auto, cpu, cuda or cuda:N, got 'bogus'"),
    ("--train.device=mps", "got 'mps'"),
])
def test_impossible_settings_are_refused_before_anything_runs(arg, needle):
    from layerwise.train.trainer import resolve_device

    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        cfg = load_config(None, [arg])
        resolve_device(cfg.train.device)


def test_messages_name_what_yaml_did(tmp_path):
    from layerwise.config import Config, merge

    with pytest.raises(ConfigError, match=r"'run.name' expects text.*~, null or an empty value as nothing"):
        merge(Config(), {"run": {"name": None}}, "recipe r.yaml")
    with pytest.raises(ConfigError, match=r"'model.widths\[1\]' expects a whole number \(int\), got '1.55e1'"):
        load_config(None, ["--model.name=resnet", "--model.widths=[8,1.55e1,32]"])
    with pytest.raises(ConfigError, match="fits in 64 bits"):
        load_config(None, ["--model.name=resnet", "--model.widths=[8,1e30,32]"])


def test_a_model_too_large_for_memory_is_a_config_error(tmp_path):
    out = lw("train", "--model.name=mlp", "--model.width=1000000000000", "--train.max_steps=1", *QUIET,
             f"--run.dir={tmp_path / 'run'}")
    _one_paragraph(out, 2, "does not fit in memory", "model.width=1000000000000")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------- audio
def _wav_bytes(samples: np.ndarray, rate: int, float32: bool = False) -> bytes:
    data = samples.astype("<f4" if float32 else "<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 3 if float32 else 1, 1, rate, rate * (4 if float32 else 2) % 2**32,
                      4 if float32 else 2, 32 if float32 else 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_implausible_wav_headers_and_samples_are_refused_naming_the_file(tmp_path):
    from layerwise.data import DataError
    from layerwise.data.audio import read_wav, resample

    (tmp_path / "rate.wav").write_bytes(_wav_bytes(np.zeros(100), 4294967295))
    with pytest.raises(DataError, match=r"rate\.wav.*4,294,967,295 samples per second"):
        read_wav(tmp_path / "rate.wav")
    (tmp_path / "loud.wav").write_bytes(_wav_bytes(np.full(800, 1e30), 8000, float32=True))
    with pytest.raises(DataError, match=r"loud\.wav.*reach 1e\+30"):
        read_wav(tmp_path / "loud.wav")
    # an odd but real rate resamples by FFT instead of building a 20-million-tap filter
    x = np.sin(2 * np.pi * 440 * np.arange(44101) / 44101).astype(np.float32)
    y = resample(x, 44101, 8000)
    assert y.shape == (8000,) and np.abs(y).max() == pytest.approx(1.0, abs=0.02)


# ------------------------------------------------------------------------------------------- images
def _png16_gray_alpha(path: Path, w: int = 6, h: int = 6) -> Path:
    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    px = np.zeros((h, w, 2), ">u2")
    px[..., 0] = 40000
    px[..., 1] = 65535
    raw = b"".join(b"\0" + px[y].tobytes() for y in range(h))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 4, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def test_greyscale_with_alpha_and_grey_palettes_stay_one_channel(tmp_path):
    from PIL import Image

    from layerwise.config import DataConfig
    from layerwise.data import load_dataset

    for cls in ("a", "b"):
        (tmp_path / "f" / cls).mkdir(parents=True)
        for i in range(2):
            _png16_gray_alpha(tmp_path / "f" / cls / f"{i}.png")
        grey = Image.fromarray(np.full((6, 6), 90, np.uint8)).convert("P")  # a palette of greys
        grey.save(tmp_path / "f" / cls / "p.gif")
    ds = load_dataset("image-folder", tmp_path, DataConfig(name="image-folder", path="f", val_fraction=0.34))
    assert ds.info.in_shape == (1, 6, 6)
    assert any("16-bit colour or 16-bit greyscale with alpha" in w for w in ds.warnings)
    x = ds.x_train.float() / ds.info.scale
    assert x.max() <= 1.0 and abs(float(x.max()) - 40000 / 65535) < 0.005  # scaled, only the low byte lost


# -------------------------------------------------------------------------------- runs and resume
@pytest.fixture(scope="module")
def lm_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lm")
    (root / "t.txt").write_text("hello there, general kenobi\n" * 60)
    out = lw("train", "--data.name=text", f"--data.path={root / 't.txt'}", "--data.tokenizer=char",
             "--data.block_size=16", "--model.name=gpt", "--model.n_layer=1", "--model.n_head=2",
             "--model.n_embd=16", "--train.max_steps=3", *QUIET, f"--run.dir={root / 'run'}")
    assert out.returncode == 0, out.stderr[-2000:]
    return root / "run"


def test_generate_checks_temperature_and_finds_the_tokenizer(tmp_path, lm_run):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    _one_paragraph(lw("generate", str(lm_run), "--temperature", "nan"), 2, "finite number")
    run = Path(shutil.copytree(lm_run, tmp_path / "run"))
    f = run / "model.safetensors"
    with safe_open(str(f), "pt") as h:
        meta = h.metadata()
    data = json.loads(meta["data"])
    data["extra"].pop("tokenizer")
    save_file(load_file(str(f)), str(f), metadata=meta | {"data": json.dumps(data)})
    out = lw("generate", str(run), "--tokens", "5", "--temperature", "0")
    assert out.returncode == 0 and len(out.stdout.rstrip("\n")) >= 1, out.stderr  # from the run's tokenizer.json
    (run / "tokenizer.json").unlink()
    _one_paragraph(lw("generate", str(run)), 1, "holds no tokenizer")


@pytest.fixture
def cut_run(tmp_path) -> Path:
    run = tmp_path / "run"
    out = lw("train", *MLP, "--train.max_steps=10", "--run.checkpoint_every=2", "--run.keep_checkpoints=10",
             *QUIET, f"--run.dir={run}")
    assert out.returncode == 0, out.stderr[-2000:]
    for f in ("summary.json", "model.safetensors"):
        (run / f).unlink()
    for f in (run / "checkpoints").glob("step_00000008.*"):
        f.unlink()
    return run


def test_a_newer_checkpoint_is_refused_and_kept(cut_run):
    meta_path = cut_run / "checkpoints" / "step_00000006.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(meta | {"format_version": 999}))
    before = {p.name: p.read_bytes() for p in (cut_run / "checkpoints").iterdir()}
    _one_paragraph(lw("train", "--resume", str(cut_run)), 1, "checkpoint format 999", "Upgrade layerwise")
    assert {p.name: p.read_bytes() for p in (cut_run / "checkpoints").iterdir()} == before


def test_an_incomplete_config_is_named_as_such_and_edits_are_recorded(cut_run):
    text = (cut_run / "config.yaml").read_text()
    (cut_run / "config.yaml").write_text("")
    out = lw("train", "--resume", str(cut_run))
    assert out.returncode == 2 and "None ->" not in out.stderr, out.stderr
    assert "model.name: 'mlp' -> 'resnet-digits'" in out.stderr and "lacks" in out.stderr and "cut short" in out.stderr
    # a hand edit of an allowed key is taken and recorded against what the checkpoint was trained with
    (cut_run / "config.yaml").write_text(text.replace("log_every: 20", "log_every: 3"))
    out = lw("train", "--resume", str(cut_run))
    assert out.returncode == 0, out.stderr
    resume = [json.loads(x) for x in (cut_run / "metrics.jsonl").read_text().splitlines() if '"resume"' in x]
    assert resume[-1]["changed"] == {"train.log_every": [20, 3]}


def test_batch_norm_advice_always_works():
    from layerwise.models import create_model
    from layerwise.train.preflight import check_training_batches

    class Loader:
        def __init__(self, n, micro, drop=False):
            self.examples_per_rank, self.batch_size, self.drop_last = n, micro, drop

    bn = create_model("resnet-digits", in_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(ConfigError) as e:  # batch 1: drop_last cannot help
        check_training_batches(Loader(1437, 1), bn, load_config(None, ["--data.batch_size=1"]), 1)
    assert "drop_last" not in str(e.value) and "--data.batch_size=3" in str(e.value)
    with pytest.raises(ConfigError) as e:  # one example in all: nothing helps but data or another model
        check_training_batches(Loader(1, 16), bn, load_config(None, ["--data.batch_size=16"]), 1)
    assert "drop_last" not in str(e.value) and "use more training data" in str(e.value)
    assert torch.is_tensor(next(bn.parameters()))

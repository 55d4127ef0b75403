"""Broken or unusable data, met through the command line: each stops before any run directory is
written, with the exit code the CLI promises (1: the data, 2: the configuration), a message that
names the file (and line and column where there is one), and no Python traceback."""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

QUIET = ["--run.plots=false", "--run.tensorboard=false", "--quiet"]


def lw(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "layerwise", *args], check=False, capture_output=True, text=True,
                          timeout=timeout)


MLP = ("--model.name=mlp", "--model.width=16")
GPT = ("--model.name=gpt", "--model.n_layer=1", "--model.n_head=2", "--model.n_embd=16")


def train(run_dir: Path, *overrides: str, model: tuple[str, ...] = MLP) -> subprocess.CompletedProcess:
    return lw("train", *model, *overrides, "--train.max_steps=2", *QUIET, f"--run.dir={run_dir}")


def assert_refused(out: subprocess.CompletedProcess, code: int, run_dir: Path, *needles: str) -> None:
    assert out.returncode == code, (out.returncode, out.stderr[-3000:])
    assert "Traceback" not in out.stderr, out.stderr
    for n in needles:
        assert n in out.stderr, (n, out.stderr)
    assert not run_dir.exists(), "bad input must fail before the run directory is written"


# ------------------------------------------------------------------------------------------ images
@pytest.fixture
def jpeg_folder(tmp_path) -> tuple[Path, Path]:
    """Two classes of 6 noisy 32x32 RGB JPEGs; one file cut to 60% of its bytes (as by a failed copy)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, cls in enumerate(("cats", "dogs")):
        (tmp_path / "pics" / cls).mkdir(parents=True)
        for i in range(6):
            img = rng.integers(0, 120, (32, 32, 3)) + 100 * c
            Image.fromarray(img.astype(np.uint8)).save(tmp_path / "pics" / cls / f"{i}.jpg", quality=90)
    bad = tmp_path / "pics" / "dogs" / "3.jpg"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) * 6 // 10])
    return tmp_path / "pics", bad


def test_truncated_jpeg_is_refused_naming_the_file(tmp_path, jpeg_folder):
    folder, bad = jpeg_folder
    out = train(tmp_path / "run", "--data.name=image-folder", f"--data.path={folder}")
    assert_refused(out, 1, tmp_path / "run", str(bad), "data.on_error=skip")


def test_truncated_jpeg_is_skipped_with_a_warning(tmp_path, jpeg_folder):
    folder, bad = jpeg_folder
    out = train(tmp_path / "run", "--data.name=image-folder", f"--data.path={folder}", "--data.on_error=skip")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    warning = [line for line in out.stderr.splitlines() if "warning" in line and str(bad) in line]
    assert len(warning) == 1, out.stderr
    env = json.loads((tmp_path / "run" / "env.json").read_text())
    # 12 images, 1 per class held out (val_fraction 0.1), the broken one dropped
    assert env["data"]["train"] + env["data"]["test"] == 11 and env["data"]["test"] == 2
    assert any(str(bad) in s for s in env["data"]["warnings"]) and env["data"]["skipped"] == 1
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 2


# ------------------------------------------------------------------------------------------- audio
def test_wav_with_a_garbage_header_is_refused_naming_the_file(tmp_path):
    rng = np.random.default_rng(0)
    for c, cls in enumerate(("low", "high")):
        (tmp_path / "wavs" / cls).mkdir(parents=True)
        for i in range(4):
            t = np.arange(1600) / 8000
            s = 0.5 * np.sin(2 * np.pi * (300 + 900 * c) * t) + 0.01 * rng.standard_normal(1600)
            with wave.open(str(tmp_path / "wavs" / cls / f"{i}.wav"), "wb") as w:
                w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
                w.writeframes((s * 32767).astype("<i2").tobytes())
    bad = tmp_path / "wavs" / "high" / "2.wav"
    data = bytearray(bad.read_bytes())
    data[:44] = rng.integers(0, 256, 44, dtype=np.uint8).tobytes()  # the RIFF header overwritten
    bad.write_bytes(bytes(data))
    out = train(tmp_path / "run", "--data.name=wav-folder", f"--data.path={tmp_path / 'wavs'}")
    assert_refused(out, 1, tmp_path / "run", str(bad), "RIFF", "data.on_error=skip")


# -------------------------------------------------------------------------------------------- text
def test_empty_text_file_is_refused_naming_the_file(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    out = train(tmp_path / "run", "--data.name=text", f"--data.path={tmp_path / 'empty.txt'}", model=GPT)
    assert_refused(out, 1, tmp_path / "run", str(tmp_path / "empty.txt"), "is empty")


def test_flip_tta_on_text_is_a_config_error(tmp_path):
    (tmp_path / "ok.txt").write_text("to be or not to be, that is the question.\n" * 20)
    out = train(tmp_path / "run", "--data.name=text", f"--data.path={tmp_path / 'ok.txt'}",
                "--data.block_size=16", "--train.eval_tta=flip", model=GPT)
    assert_refused(out, 2, tmp_path / "run", "train.eval_tta=flip", "not images")


def test_unknown_tokenizer_is_a_config_error(tmp_path):
    (tmp_path / "ok.txt").write_text("to be or not to be\n" * 20)
    out = train(tmp_path / "run", "--data.name=text", f"--data.path={tmp_path / 'ok.txt'}",
                "--data.tokenizer=wordpiece", model=GPT)
    assert_refused(out, 2, tmp_path / "run", "data.tokenizer", "wordpiece", "byte, char, bpe or word")


# --------------------------------------------------------------------------------------------- csv
def test_nan_in_a_numeric_column_is_refused_naming_column_and_line(tmp_path):
    rows = ["height,colour,label"] + [f"{1.5 + 0.1 * i:.1f},{'red' if i % 2 else 'blue'},{i % 2}"
                                      for i in range(20)]
    rows[7] = "nan,red,0"  # line 8 of the file (the header is line 1)
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    out = train(tmp_path / "run", "--data.name=csv", f"--data.path={tmp_path / 't.csv'}")
    assert_refused(out, 1, tmp_path / "run", str(tmp_path / "t.csv"), "line 8", "column 'height'",
                   "data.on_error=skip")


# ------------------------------------------------------------------ checks before the run starts
def _rows_csv(path: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    lines = ["a,b,label"] + [f"{rng.normal():.3f},{rng.normal():.3f},{i % 2}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")


def test_a_one_example_batch_for_batch_norm_is_refused_before_the_run(tmp_path):
    # 17 training rows, batch 16: the last batch of each epoch holds one row, and BatchNorm needs two
    (tmp_path / "t").mkdir()
    _rows_csv(tmp_path / "t" / "train.csv", 17)
    _rows_csv(tmp_path / "t" / "test.csv", 6)
    data = ("--data.name=csv", f"--data.path={tmp_path / 't'}", "--data.batch_size=16")
    out = train(tmp_path / "run", *data, model=("--model.name=mlp", "--model.width=8", "--model.norm=batch"))
    assert_refused(out, 2, tmp_path / "run", "data.batch_size=16", "one example", "BatchNorm",
                   "--data.drop_last=true", "--data.batch_size=15", "--data.batch_size=17")
    # either fix works: drop the tail, or a batch size that leaves none
    for fix in ("--data.drop_last=true", "--data.batch_size=17"):
        ok = lw("train", "--model.name=mlp", "--model.width=8", "--model.norm=batch", *data, fix,
                "--train.epochs=2", *QUIET, f"--run.dir={tmp_path / fix[7:16]}")
        assert ok.returncode == 0, ok.stderr[-2000:]
    # a model without batch statistics trains on the one-example batch as it is
    ok = lw("train", *MLP, *data, "--train.epochs=2", *QUIET, f"--run.dir={tmp_path / 'plain'}")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert json.loads((tmp_path / "plain" / "summary.json").read_text())["steps"] == 4


def test_preflight_arithmetic_over_micro_batches_and_ranks():
    from layerwise.config import load_config
    from layerwise.models import create_model
    from layerwise.train.preflight import check_training_batches, micro_batch_sizes

    assert micro_batch_sizes(17, 16, False) == {16, 1} and micro_batch_sizes(17, 16, True) == {16}
    assert micro_batch_sizes(5, 16, False) == {5} and micro_batch_sizes(5, 16, True) == set()

    class Loader:  # what a loader on rank r of dp ranks reports
        def __init__(self, n, dp, micro, drop=False):
            self.examples_per_rank, self.batch_size, self.drop_last = -(-n // dp), micro, drop

    bn = create_model("resnet-digits", in_shape=(1, 8, 8), num_classes=10)
    cfg = load_config(None, ["--data.batch_size=16", "--train.grad_accum=2"])
    from layerwise.config import ConfigError
    # 33 examples on 2 ranks: 17 per rank, micro-batches of 16 / (2 * 2) = 4 -> 4 x 4 + 1
    with pytest.raises(ConfigError, match="on each of 2 data-parallel ranks gives micro-batches of 4"):
        check_training_batches(Loader(33, 2, 4), bn, cfg, 2)
    check_training_batches(Loader(36, 2, 4), bn, cfg, 2)  # 18 per rank: 4 x 4 + 2 is fine
    check_training_batches(Loader(33, 2, 4, drop=True), bn, cfg, 2)  # the single example is dropped
    mlp = create_model("mlp", in_shape=(1, 8, 8), num_classes=10)
    check_training_batches(Loader(33, 2, 4), mlp, cfg, 2)  # no batch statistics: fine
    with pytest.raises(ConfigError, match="every micro-batch holds one example"):
        check_training_batches(Loader(40, 1, 1), bn, load_config(None, ["--data.batch_size=1"]), 1)
    with pytest.raises(ConfigError, match="no batch at all"):
        check_training_batches(Loader(3, 1, 4, drop=True), mlp, cfg, 1)


# ------------------------------------------------------------------ every entry point, bad files
@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("finished")
    out = lw("train", *MLP, "--train.max_steps=3", *QUIET, f"--run.dir={root / 'run'}")
    assert out.returncode == 0, out.stderr[-2000:]
    return root / "run"


def _copy_run(src: Path, dst: Path) -> Path:
    import shutil
    shutil.copytree(src, dst)
    return dst


def _prefix_keys(run: Path, prefix: str) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    f = run / "model.safetensors"
    with safe_open(str(f), "pt") as h:
        meta = h.metadata()
    save_file({prefix + k: v for k, v in load_file(str(f)).items()}, str(f), metadata=meta)


def _png_header(path: Path, w: int, h: int) -> Path:
    import struct
    import zlib

    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))
    return path


def test_predict_refuses_an_oversized_image_like_training(tmp_path, finished):
    bomb = _png_header(tmp_path / "huge.png", 20000, 20000)
    out = lw("predict", str(finished), str(bomb))
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert str(bomb) in out.stderr and "20000x20000" in out.stderr and "--max-image-pixels" in out.stderr
    out = lw("predict", str(finished), str(bomb), "--max-image-pixels=0")  # lifted: the file is then unreadable
    assert out.returncode == 1 and "Traceback" not in out.stderr and "not a readable image" in out.stderr


def test_predict_strips_a_dataparallel_prefix_with_a_notice(tmp_path, finished):
    run = _copy_run(finished, tmp_path / "pref")
    _prefix_keys(run, "module.")
    np.save(tmp_path / "x.npy", np.zeros((8, 8), np.float32))
    want = lw("predict", str(finished), str(tmp_path / "x.npy"), "--json")
    got = lw("predict", str(run), str(tmp_path / "x.npy"), "--json")
    assert got.returncode == 0, got.stderr
    assert "wrapper prefix 'module.'" in got.stderr and str(run / "model.safetensors") in got.stderr
    assert json.loads(got.stdout) == json.loads(want.stdout)


@pytest.mark.parametrize("case", ["model-truncated", "model-foreign-tensors", "summary-torn", "config-garbage",
                                  "model-newer-format"])
def test_bad_run_files_give_one_paragraph_and_a_code(tmp_path, finished, case):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    run = _copy_run(finished, tmp_path / "run")
    np.save(tmp_path / "x.npy", np.zeros((8, 8), np.float32))
    model = run / "model.safetensors"
    if case == "model-truncated":
        model.write_bytes(model.read_bytes()[:200])
        cmds, code, needle = (["predict", str(run), str(tmp_path / "x.npy")], ["eval", str(run)]), 1, str(model)
    elif case == "model-foreign-tensors":
        with safe_open(str(model), "pt") as h:
            meta = h.metadata()
        state = load_file(str(model))
        state["fc.weight"] = state["fc.weight"][:, :3].contiguous()
        save_file(state, str(model), metadata=meta)
        cmds, code, needle = (["predict", str(run), str(tmp_path / "x.npy")], ["eval", str(run)]), 1, "of another shape"
    elif case == "model-newer-format":
        with safe_open(str(model), "pt") as h:
            meta = h.metadata()
        save_file(load_file(str(model)), str(model), metadata=meta | {"format_version": "99"})
        cmds, code, needle = (["predict", str(run), str(tmp_path / "x.npy")], ["eval", str(run)]), 1, "format 99"
    elif case == "summary-torn":
        (run / "summary.json").write_text('{"test_accuracy": 0.9')
        cmds, code, needle = (["info", str(run)],), 1, str(run / "summary.json")
    else:
        (run / "config.yaml").write_text("model: [unclosed\n")
        cmds, code, needle = (["eval", str(run)], ["info", str(run)]), 2, "config.yaml"
    for cmd in cmds:
        if case == "config-garbage" and cmd[0] == "info":
            code = 0  # info reads summary.json, which is fine
        out = lw(*cmd)
        assert out.returncode == code, (cmd, out.returncode, out.stderr[-2000:])
        assert "Traceback" not in out.stderr, out.stderr
        if code:
            assert needle in out.stderr, (cmd, out.stderr)
            assert len(out.stderr.strip().splitlines()) == 1, out.stderr  # one paragraph

"""No decoder changes the data silently: 16-bit images, EXIF orientation, stereo down-mix, line ends,
oversized image headers, and model files with wrapper prefixes or a newer format."""

from __future__ import annotations

import json
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from layerwise.config import DataConfig
from layerwise.data import DataError, DatasetInfo, load_dataset
from layerwise.data import imagefile
from layerwise.data.inputs import load_inputs


# ------------------------------------------------------------------------------------ 16-bit PNG
def _png16(path: Path, a: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(a.astype(np.uint16)).save(path)  # Pillow writes bit depth 16, colour type 0
    return path


def _png_header_only(path: Path, w: int, h: int) -> Path:
    """A PNG whose header claims w x h pixels, with almost no pixel data behind it."""
    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100))
                     + chunk(b"IEND", b""))
    return path


CONST = np.full((16, 16), 32768)
RAMP = np.tile(np.linspace(0, 65535, 64).round(), (16, 1))  # 64 wide, 0..65535 left to right


def test_a_16_bit_png_is_decoded_at_full_depth(tmp_path):
    from PIL import Image

    assert Image.open(_png16(tmp_path / "c.png", CONST)).mode in imagefile.DEEP_MODES
    c = imagefile.decode(tmp_path / "c.png", gray=True)
    assert c.dtype == np.float32 and c.shape == (1, 16, 16)
    assert c.max() == c.min() == pytest.approx(32768 / 65535)  # 0.50, not 1.0 (clipped to 255)
    r = imagefile.decode(_png16(tmp_path / "r.png", RAMP), gray=True)[0, 0]
    assert r[0] == 0.0 and r[-1] == 1.0 and np.all(np.diff(r) > 0)  # the gradient is kept
    assert (r >= 1.0).mean() < 0.02  # today 97% of the ramp saturated
    rgb = imagefile.decode(tmp_path / "c.png", gray=False)  # in a colour dataset: three equal channels
    assert rgb.shape == (3, 16, 16) and np.allclose(rgb, 32768 / 65535)


def test_an_image_folder_of_16_bit_pngs_trains_on_full_depth_values(tmp_path):
    for cls, a in (("const", CONST), ("ramp", RAMP[:, :16])):
        (tmp_path / "f" / cls).mkdir(parents=True)
        for i in range(3):
            _png16(tmp_path / "f" / cls / f"{i}.png", a)
    for loader in ("device", "stream"):
        ds = load_dataset("image-folder", tmp_path, DataConfig(name="image-folder", path="f", loader=loader,
                                                               val_fraction=0.34, workers=0))
        assert ds.info.scale == 1.0 and ds.info.extra["bit_depth"] == 16 and ds.info.in_shape == (1, 16, 16)
        x = ds.x_train[0] if loader == "device" else ds.x_train[0]
        const = [ds.x_train[i] for i in range(len(ds.y_train)) if ds.y_train[i] == 0][0]
        assert const.dtype == torch.float32 and float(const.mean()) == pytest.approx(0.5, abs=1e-4)
        assert float(x.max()) <= 1.0
    # predict reads the same file the same way
    info = ds.info
    x = load_inputs(tmp_path / "f" / "const" / "0.png", info)
    assert x.shape == (1, 1, 16, 16) and float(x.mean()) == pytest.approx(0.5, abs=1e-4)
    # a model trained on 8-bit images sees a 16-bit file at the same brightness, in its own units
    info8 = DatasetInfo("image-folder", (1, 16, 16), 2, ["a", "b"], 255.0, [0.5], [0.25])
    assert float(load_inputs(tmp_path / "f" / "const" / "0.png", info8).mean()) == pytest.approx(127.5, abs=0.05)


# --------------------------------------------------------------------------------- EXIF orientation
def _rotated_jpeg(path: Path, tag: int = 6) -> Path:
    """40 wide x 20 high as stored, white in the left quarter; Orientation 6 shows it 20x40, white on top."""
    from PIL import Image

    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :10] = 255
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = tag
    im.save(path, exif=exif.tobytes(), quality=95)
    return path


def test_exif_orientation_is_applied_before_anything_else(tmp_path):
    p = _rotated_jpeg(tmp_path / "r.jpg")
    assert imagefile.header(p)[1] == (20, 40)  # upright width x height
    a = imagefile.decode(p, gray=True)
    assert a.shape == (1, 40, 20)
    assert a[0, :8].mean() > 200 and a[0, 12:].mean() < 30  # the white band is on top, as viewers show it
    info = DatasetInfo("image-folder", (1, 40, 20), 2, ["a", "b"], 255.0, [0.5], [0.25])
    x = load_inputs(p, info)
    assert x.shape == (1, 1, 40, 20) and x[0, 0, :8].mean() > 200 and x[0, 0, 12:].mean() < 30


def test_an_image_folder_measures_sizes_upright(tmp_path):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "f" / cls).mkdir(parents=True)
        _rotated_jpeg(tmp_path / "f" / cls / "0.jpg")  # stored 40x20, shown 20x40
        Image.fromarray(np.zeros((40, 20, 3), np.uint8)).save(tmp_path / "f" / cls / "1.jpg")  # stored 20x40
        Image.fromarray(np.zeros((40, 20, 3), np.uint8)).save(tmp_path / "f" / cls / "2.jpg")
    ds = load_dataset("image-folder", tmp_path, DataConfig(name="image-folder", path="f", val_fraction=0.34))
    assert ds.info.in_shape[1:] == (40, 20)
    # a size error quotes the size the user sees
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(tmp_path / "f" / "a" / "3.jpg")
    with pytest.raises(DataError, match="is 20x40"):
        load_dataset("image-folder", tmp_path, DataConfig(name="image-folder", path="f"))


# ---------------------------------------------------------------------------- the pixel limit
def test_an_image_larger_than_the_limit_is_refused_naming_the_file(tmp_path):
    bomb = _png_header_only(tmp_path / "bomb.png", 20000, 20000)
    info = DatasetInfo("digits", (1, 8, 8), 10, [str(i) for i in range(10)], 16.0, [0.3], [0.4])
    with pytest.raises(DataError, match=r"'.*bomb\.png' is 20000x20000 = 400,000,000 pixels.*max_image_pixels"):
        load_inputs(bomb, info)
    with pytest.raises(DataError, match="max-image-pixels"):
        load_inputs(bomb, info, max_pixels=1000)
    # with the limit lifted the header is believed, and the missing pixel data is the error
    with pytest.raises(DataError, match="not a readable image"):
        load_inputs(bomb, info, max_pixels=0)
    # training names the file too, before decoding anything
    for cls in ("a", "b"):
        (tmp_path / "f" / cls).mkdir(parents=True)
        for i in range(2):
            from PIL import Image
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "f" / cls / f"{i}.png")
    (tmp_path / "f" / "a" / "big.png").write_bytes(bomb.read_bytes())
    with pytest.raises(DataError, match=r"big\.png' is 20000x20000.*data.on_error=skip"):
        load_dataset("image-folder", tmp_path, DataConfig(name="image-folder", path="f"))
    ds = load_dataset("image-folder", tmp_path, DataConfig(name="image-folder", path="f", on_error="skip"))
    assert len(ds.y_train) + len(ds.y_test) == 4 and any("big.png" in w for w in ds.warnings)


# ------------------------------------------------------------------------------- stereo down-mix
def _wav(path: Path, frames: np.ndarray, rate: int = 8000) -> Path:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(frames.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((frames * 32767).astype("<i2").tobytes())
    return path


def test_a_stereo_wav_whose_channels_cancel_warns_naming_the_file(tmp_path):
    from layerwise.data.audio import features_from_wav, read_wav

    t = np.arange(8000) / 8000
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    p = _wav(tmp_path / "phase.wav", np.stack([left, -left], 1))
    with pytest.warns(UserWarning, match=r"phase\.wav.*cancels the signal.*data.channel=left"):
        mono, _ = read_wav(p)
    assert np.abs(mono).max() < 1e-4
    for channel, sign in (("left", 1), ("right", -1)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # one channel: nothing to cancel, no warning
            x, _ = read_wav(p, channel=channel)
        np.testing.assert_allclose(x, sign * left, atol=1e-4)
    ok = _wav(tmp_path / "ok.wav", np.stack([left, 0.8 * left], 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_wav(ok)  # channels in phase: no warning
    # predict uses the rule the model was trained with
    audio = {"sample_rate": 8000, "clip_seconds": 1.0, "n_mels": 20, "n_fft": 256, "hop": 80, "channel": "left"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f_left = features_from_wav(p, audio)
    with pytest.warns(UserWarning, match="cancels"):
        f_mean = features_from_wav(p, audio | {"channel": "mean"})
    assert float(f_left.mean()) > float(f_mean.mean()) + 3  # a tone, against near-silence (mean log power)


def test_wav_folder_reports_cancelled_and_cropped_recordings(tmp_path):
    t = np.arange(8000) / 8000
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    for c, cls in enumerate(("a", "b")):
        (tmp_path / "w" / cls).mkdir(parents=True)
        for i in range(3):
            _wav(tmp_path / "w" / cls / f"{i}.wav", np.stack([tone * (1 + c), tone * (1 + c)], 1)[: 4000 + 1000 * i])
    _wav(tmp_path / "w" / "a" / "flip.wav", np.stack([tone, -tone], 1))
    _wav(tmp_path / "w" / "b" / "long.wav", np.stack([np.tile(tone, 3)] * 2, 1))  # 3 s
    ds = load_dataset("wav-folder", tmp_path, DataConfig(name="wav-folder", path="w", clip_seconds=1.0))
    assert any("flip.wav" in w and "cancels" in w for w in ds.warnings)
    crop = [w for w in ds.warnings if "longer than data.clip_seconds=1" in w]
    assert len(crop) == 1 and "1 of 8 recordings" in crop[0] and "long.wav" in crop[0] and "3.00 s" in crop[0]
    assert ds.source["cropped"] == 1 and ds.info.extra["audio"]["channel"] == "mean"


def test_float_wav_keeps_overshoot_and_refuses_nan(tmp_path):
    from layerwise.data.audio import read_wav

    def riff(vals: np.ndarray) -> bytes:
        fmt = struct.pack("<HHIIHH", 3, 1, 8000, 32000, 4, 32)
        data = vals.astype("<f4").tobytes()
        body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
        return b"RIFF" + struct.pack("<I", len(body)) + body
    x, _ = read_wav(riff(np.array([0.5, 1.5, -3.0])))
    assert x.tolist() == [0.5, 1.5, -3.0]
    with pytest.raises(DataError, match=r"nan\.wav.*NaN or infinite"):
        read_wav(riff(np.array([0.5, np.nan, 0.1])), name_for_errors="nan.wav")


# ------------------------------------------------------------------------------------ line ends
@pytest.mark.parametrize("eol", ["\r\n", "\r"])
def test_text_line_ends_are_normalized(tmp_path, eol):
    lines = ["abab", "baba"] * 200
    (tmp_path / "lf.txt").write_bytes("\n".join(lines).encode() + b"\n")
    (tmp_path / "other.txt").write_bytes(eol.join(lines).encode() + eol.encode())
    opts = dict(name="text", tokenizer="char", block_size=8)
    lf = load_dataset("text", tmp_path, DataConfig(path="lf.txt", **opts))
    other = load_dataset("text", tmp_path, DataConfig(path="other.txt", **opts))
    assert lf.info.num_classes == other.info.num_classes == 3  # a, b, \n: no \r symbol
    assert torch.equal(lf.x_train, other.x_train) and torch.equal(lf.x_test, other.x_test)
    assert other.source["files"][0]["line_ends_converted"] == len(lines)


def test_generate_without_a_prompt_from_a_cr_only_text(tmp_path):
    from layerwise import fit
    from layerwise.train.inference import generate

    (tmp_path / "mac.txt").write_bytes(b"hello there\r" * 300)  # old Mac line ends
    (tmp_path / "one.txt").write_bytes(b"no line breaks at all " * 100)
    for name in ("mac.txt", "one.txt"):
        summary = fit(None, "--data.name=text", f"--data.path={tmp_path / name}", "--data.tokenizer=char",
                      "--data.block_size=16", "--model.name=gpt", "--model.n_layer=1", "--model.n_head=2",
                      "--model.n_embd=16", "--train.max_steps=2", f"--run.root={tmp_path / 'runs'}",
                      "--run.plots=false", "--run.tensorboard=false", show_progress=False)
        out = generate(summary["run_dir"], tokens=10)
        assert len(out) == 10
        prompted = generate(summary["run_dir"], prompt="he\r\nl" if name == "mac.txt" else "no", tokens=3)
        assert prompted.startswith("he\nl" if name == "mac.txt" else "no")


# ------------------------------------------------------------------- model files and format versions
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    from layerwise import fit

    root = tmp_path_factory.mktemp("runs")
    return Path(fit(None, "--model.name=mlp", "--model.width=16", "--train.max_steps=3",
                    f"--run.root={root}", "--run.plots=false", "--run.tensorboard=false",
                    show_progress=False)["run_dir"])


def _rewrite(src: Path, dst: Path, rename=lambda k: k, meta_update: dict | None = None, drop: str = "") -> Path:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(src), "pt") as f:
        meta = dict(f.metadata())
    state = {rename(k): v for k, v in load_file(str(src)).items() if k != drop}
    save_file(state, str(dst), metadata=meta | (meta_update or {}))
    return dst


def test_wrapper_prefixes_are_stripped_with_a_notice(finished_run, tmp_path):
    from layerwise.train.run import load_model

    ref, _ = load_model(finished_run)
    for prefix in ("module.", "_orig_mod.", "module._orig_mod."):
        f = _rewrite(finished_run / "model.safetensors", tmp_path / "m.safetensors", lambda k, p=prefix: p + k)
        with pytest.warns(UserWarning, match=rf"m\.safetensors.*wrapper prefix.*{prefix.split('.')[0]}"):
            model, _ = load_model(f)
        assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), model.state_dict().values()))


def test_a_model_file_that_does_not_fit_names_the_file_and_the_tensors(finished_run, tmp_path):
    from layerwise.train.run import RunDirError, load_model

    f = _rewrite(finished_run / "model.safetensors", tmp_path / "m.safetensors",
                 lambda k: k.replace("fc.", "head."))
    with pytest.raises(RunDirError, match=r"m\.safetensors' does not fit.*missing \(first: fc\.(bias|weight).*"
                                          r"not in the model \(first: head\."):
        load_model(f)


def test_model_and_checkpoint_format_versions_are_checked(finished_run, tmp_path):
    from safetensors import safe_open

    from layerwise.train.checkpoint import CHECKPOINT_FORMAT_VERSION, CheckpointError, read_checkpoint, save_checkpoint
    from layerwise.train.run import MODEL_FORMAT_VERSION, RunDirError, load_model

    with safe_open(str(finished_run / "model.safetensors"), "pt") as f:
        assert f.metadata()["format_version"] == str(MODEL_FORMAT_VERSION)
    newer = _rewrite(finished_run / "model.safetensors", tmp_path / "new.safetensors",
                     meta_update={"format_version": str(MODEL_FORMAT_VERSION + 1), "version": "9.0"})
    with pytest.raises(RunDirError, match=r"new\.safetensors' is in model format 2, written by layerwise 9\.0.*Upgrade"):
        load_model(newer)
    path = save_checkpoint(tmp_path / "ck", 5, {"step": 5, "w": torch.ones(2)}, keep=2)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["format_version"] == CHECKPOINT_FORMAT_VERSION
    assert read_checkpoint(path)["step"] == 5
    path.with_suffix(".json").write_text(json.dumps(meta | {"format_version": CHECKPOINT_FORMAT_VERSION + 1}))
    with pytest.raises(CheckpointError, match="checkpoint format 2.*Upgrade layerwise"):
        read_checkpoint(path)

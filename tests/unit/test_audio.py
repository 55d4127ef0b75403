import re
import struct
import wave

import numpy as np
import pytest
import torch

from layerwise.config import DataConfig
from layerwise.data import DataError, load_dataset
from layerwise.data.audio import (features_from_wav, fix_length, log_mel, mel_filterbank, read_wav, resample,
                                  spec_augment)


def _write_wav(path, ints: np.ndarray, width: int, rate: int) -> None:
    """ints: (S,) or (S, C) signed integers of the given byte width (8-bit is offset to unsigned here)."""
    ints = ints.reshape(len(ints), -1)
    if width == 1:
        raw = (ints + 128).astype(np.uint8).tobytes()
    elif width == 3:
        raw = ints.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        raw = ints.astype({2: "<i2", 4: "<i4"}[width]).tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(ints.shape[1])
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)


def _riff(fmt_body: bytes, data: bytes) -> bytes:
    chunks = b"fmt " + struct.pack("<I", len(fmt_body)) + fmt_body + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def _tone(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(round(rate * seconds)) / rate)).astype(np.float32)


def _htk_centres(n_mels: int, sr: int) -> np.ndarray:
    mel = np.linspace(0, 2595 * np.log10(1 + sr / 2 / 700), n_mels + 2)
    return 700 * (10 ** (mel / 2595) - 1)  # (n_mels + 2,) edges; [1:-1] are the centres


# ---------------------------------------------------------------------------------------------- read_wav


@pytest.mark.parametrize("width", [1, 2, 3])
def test_read_wav_round_trip_mono(tmp_path, width):
    bits = 8 * width
    rng = np.random.default_rng(width)
    ints = rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), 1000)
    ints[:2] = [-(2 ** (bits - 1)), 2 ** (bits - 1) - 1]  # full scale both ways
    _write_wav(tmp_path / "a.wav", ints, width, 11025)
    x, sr = read_wav(tmp_path / "a.wav")
    assert sr == 11025 and x.dtype == np.float32 and x.shape == (1000,)
    np.testing.assert_array_equal(x, (ints / 2.0 ** (bits - 1)).astype(np.float32))
    assert x[0] == -1.0 and x[1] < 1.0
    y, _ = read_wav((tmp_path / "a.wav").read_bytes(), name_for_errors="a.wav")
    np.testing.assert_array_equal(x, y)


def test_read_wav_stereo_is_averaged(tmp_path):
    left = np.arange(-500, 500) * 30
    right = -np.arange(-500, 500) * 7 + 11
    _write_wav(tmp_path / "s.wav", np.stack([left, right], 1), 2, 8000)
    x, sr = read_wav(tmp_path / "s.wav")
    assert sr == 8000 and x.shape == (1000,)
    np.testing.assert_allclose(x, (left + right) / 2 / 32768, atol=1e-7)


def test_read_wav_float_and_extensible_headers():
    vals = np.array([0.25, -0.5, 1.5, -2.0], np.float32)  # overshoot is kept: clipping would change the signal
    fmt = struct.pack("<HHIIHH", 3, 1, 16000, 64000, 4, 32)
    x, sr = read_wav(_riff(fmt, vals.tobytes()))
    assert sr == 16000 and x.tolist() == [0.25, -0.5, 1.5, -2.0]
    # WAVE_FORMAT_EXTENSIBLE, 16-bit PCM stereo: the real format tag is in the SubFormat GUID
    guid = struct.pack("<H", 1) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, 2, 8000, 32000, 4, 16, 22, 16, 3) + guid
    x, sr = read_wav(_riff(fmt, np.array([100, 300, -200, -400], "<i2").tobytes()))
    assert sr == 8000 and np.allclose(x, [200 / 32768, -300 / 32768])


def test_truncated_wav_names_the_file(tmp_path):
    _write_wav(tmp_path / "cut.wav", np.arange(2000) - 1000, 2, 8000)
    full = (tmp_path / "cut.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(full[:-101])
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "cut.wav")) + ".*truncated"):
        read_wav(tmp_path / "cut.wav")
    (tmp_path / "cut.wav").write_bytes(full[:30])  # cut inside the fmt chunk
    with pytest.raises(DataError, match=r"cut\.wav.*fmt chunk"):
        read_wav(tmp_path / "cut.wav")


def test_garbage_and_unsupported_wavs_are_refused(tmp_path):
    (tmp_path / "junk.wav").write_bytes(b"ID3\x03 this is an mp3, honestly" * 4)
    with pytest.raises(DataError, match=r"junk\.wav.*not a RIFF/WAVE file"):
        read_wav(tmp_path / "junk.wav")
    adpcm = _riff(struct.pack("<HHIIHH", 2, 1, 8000, 4000, 256, 4), b"\x00" * 256)
    with pytest.raises(DataError, match=r"'adpcm\.wav'.*format tag 2.*16-bit PCM"):
        read_wav(adpcm, name_for_errors="adpcm.wav")
    with pytest.raises(DataError, match="no audio samples"):
        read_wav(_riff(struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16), b""))
    with pytest.raises(DataError, match=r"missing\.wav.*cannot be opened"):
        read_wav(tmp_path / "missing.wav")


# ---------------------------------------------------------------------------------------------- signal


def _peak_hz(x: np.ndarray, rate: int) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(x)))) * rate / len(x)


@pytest.mark.parametrize("new_sr", [8000, 44100])
def test_resample_keeps_frequency_and_length_ratio(new_sr):
    x = _tone(440, 16000, 1.0)
    y = resample(x, 16000, new_sr)
    assert y.dtype == np.float32 and len(y) == new_sr
    assert _peak_hz(y, new_sr) == 440.0
    mid = y[len(y) // 4: 3 * len(y) // 4]  # away from the filter's edge effects
    assert np.sqrt(np.mean(mid ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_resample_is_band_limited_and_identity_at_equal_rates():
    x = _tone(3000, 16000, 1.0)  # above the new Nyquist frequency of 2000 Hz: must not alias to 1000 Hz
    y = resample(x, 16000, 4000)
    assert np.sqrt(np.mean(y[1000:3000] ** 2)) < 0.01
    assert resample(x, 16000, 16000) is x
    with pytest.raises(DataError, match="positive"):
        resample(x, 0, 8000)


def test_fix_length_pads_at_the_end_and_crops_keeping_the_start():
    x = np.arange(1, 6, dtype=np.float32)
    assert fix_length(x, 8).tolist() == [1, 2, 3, 4, 5, 0, 0, 0]
    assert fix_length(x, 3).tolist() == [1, 2, 3]
    t = torch.arange(1.0, 7.0).view(2, 3)
    assert fix_length(t, 5).tolist() == [[1, 2, 3, 0, 0], [4, 5, 6, 0, 0]]
    assert fix_length(t, 2).tolist() == [[1, 2], [4, 5]]


def test_mel_filterbank_shape_and_peaks():
    fb = mel_filterbank(256, 40, 8000)
    assert fb.shape == (40, 129) and fb.dtype == torch.float32 and (fb >= 0).all()
    edges = _htk_centres(40, 8000)
    bin_hz = np.arange(129) * 8000 / 256
    peak_hz = bin_hz[fb.argmax(1).numpy()]
    assert np.all(np.abs(peak_hz - edges[1:-1]) <= 8000 / 256 / 2 + 1e-6)  # the bin nearest the centre
    assert np.all(np.diff(peak_hz) >= 0) and float(fb.max()) <= 1.0 and float(fb.max(1).values.min()) > 0.5
    outside = (bin_hz[None] <= edges[:-2, None]) | (bin_hz[None] >= edges[2:, None])  # (40, 129)
    assert float(fb[torch.from_numpy(outside)].abs().max()) < 1e-5  # zero outside, up to mel<->Hz rounding
    area = mel_filterbank(256, 40, 8000, area_norm=True).sum(1) * (8000 / 256)
    assert torch.allclose(area[-10:].double(), torch.ones(10, dtype=torch.float64), atol=0.03)  # unit area
    with pytest.raises(DataError, match="too many.*data.n_mels"):
        mel_filterbank(256, 128, 8000)


def test_log_mel_of_a_tone_peaks_in_its_band():
    tones = np.stack([_tone(f, 8000, 1.0) for f in (300, 1000, 2500)])  # (3, 8000)
    lm = log_mel(torch.from_numpy(tones), 8000, 40)
    assert lm.shape == (3, 40, 101)
    fb = mel_filterbank(256, 40, 8000)
    centres = _htk_centres(40, 8000)[1:-1]
    for i, f in enumerate((300, 1000, 2500)):
        band = int(lm[i].mean(1).argmax())
        assert band == int(fb[:, round(f / (8000 / 256))].argmax())
        assert abs(centres[band] - f) == np.abs(centres - f).min()
    silence = log_mel(torch.zeros(2, 4000), 8000, 40)
    assert torch.allclose(silence, torch.full_like(silence, np.log(1e-6)))
    one = log_mel(torch.from_numpy(tones[1:2]), 8000, 40)
    assert torch.allclose(one[0], lm[1], atol=1e-4)  # batching does not change a recording's features


# ---------------------------------------------------------------------------------------------- SpecAugment


def _runs(mask_row: torch.Tensor) -> int:
    """Number of contiguous True runs in a 1-D bool tensor."""
    m = mask_row.int()
    return int(m[0]) + int((m[1:] - m[:-1] == 1).sum())


def test_spec_augment_time_mask_widths_and_starts_are_uniform():
    B, F, T = 4000, 6, 20
    x = torch.ones(B, F, T)
    y = spec_augment(x, time_width=T, freq_width=0, n_masks=1, gen=torch.Generator().manual_seed(0))
    zero = y == 0  # (B, F, T)
    assert (zero.all(1) == zero.any(1)).all()  # a time mask zeroes whole frames
    cols = zero[:, 0, :]  # (B, T)
    w = cols.sum(1)
    assert int(w.max()) <= T and set(w.tolist()) == set(range(T + 1))  # w ~ U{0..T}
    assert float(w.float().mean()) == pytest.approx(T / 2, abs=0.4)
    assert all(_runs(c) <= 1 for c in cols)
    start = cols.int().argmax(1)
    w5 = w == 5
    assert set(start[w5].tolist()) == set(range(T - 5 + 1))  # starts cover [0, T - w]
    assert x.eq(1).all()  # the input is not modified


def test_spec_augment_masks_per_example_within_width_and_count():
    B, C, F, T = 300, 2, 16, 30
    x = torch.randn(B, C, F, T) + 5  # nonzero everywhere
    y = spec_augment(x, time_width=4, freq_width=3, n_masks=2, gen=torch.Generator().manual_seed(1))
    zero = y == 0
    assert (zero[:, 0] == zero[:, 1]).all()  # same masks on every channel
    rows, cols = zero[:, 0].all(2), zero[:, 0].all(1)  # (B, F) masked bands, (B, T) masked frames
    assert ((rows[:, :, None] | cols[:, None, :]) == zero[:, 0]).all()  # nothing else is zeroed
    assert int(rows.sum(1).max()) <= 2 * 3 and int(cols.sum(1).max()) <= 2 * 4
    assert max(_runs(r) for r in rows) <= 2 and max(_runs(c) for c in cols) <= 2
    assert int(rows.sum(1).max()) >= 4 and int(cols.sum(1).max()) >= 6  # the widths are reached
    kept = ~zero
    assert torch.equal(y[kept], x[kept])


def test_spec_augment_is_identity_when_off_and_deterministic_per_seed():
    x = torch.randn(8, 40, 101)
    g = torch.Generator().manual_seed(3)
    assert spec_augment(x, 0, 0, 2, g) is x and spec_augment(x, 10, 5, 0, g) is x
    a = spec_augment(x, 10, 5, 2, torch.Generator().manual_seed(7))
    b = spec_augment(x, 10, 5, 2, torch.Generator().manual_seed(7))
    c = spec_augment(x, 10, 5, 2, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    huge = spec_augment(x, 1000, 1000, 1, torch.Generator().manual_seed(0))  # widths capped at the size
    assert huge.shape == x.shape


# ---------------------------------------------------------------------------------------------- wav-folder


def _tone_folder(base, n=10, split=False) -> None:
    """Two classes of tones at mixed sample rates and bit depths: low (300 Hz) and high (1500 Hz)."""
    rates, widths = (8000, 16000, 11025), (1, 2, 3)
    for c, f in (("high", 1500), ("low", 300)):
        for i in range(n):
            sub = base / (("test" if i < 2 else "train") if split else "") / c
            sub.mkdir(parents=True, exist_ok=True)
            rate, width = rates[i % 3], widths[i % 3]
            x = _tone(f * (1 + 0.02 * i), rate, 0.5 + 0.05 * i)
            _write_wav(sub / f"{c}_{i:02d}.wav", np.round(x * (2 ** (8 * width - 1) - 1)).astype(np.int64),
                       width, rate)


def _peak_band_class(x: torch.Tensor, split_band: int) -> torch.Tensor:
    return (x[:, 0].mean(2).argmax(1) < split_band).long()  # 1 = low


def test_wav_folder_stratified_split(tmp_path):
    _tone_folder(tmp_path / "tones")
    opts = DataConfig(name="wav-folder", path="tones", val_fraction=0.2)
    ds = load_dataset("wav-folder", tmp_path, opts)
    assert ds.info.classes == ["high", "low"] and ds.info.in_shape == (1, 40, 101)
    assert (len(ds.x_train), len(ds.x_test)) == (16, 4)
    assert torch.bincount(ds.y_test).tolist() == [2, 2] and torch.bincount(ds.y_train).tolist() == [8, 8]
    assert ds.info.extra["audio"] == {"sample_rate": 8000, "clip_seconds": 1.0, "n_mels": 40, "n_fft": 256,
                                      "hop": 80, "channel": "mean"}
    # 300 Hz tones peak below mel band 12 (about 600 Hz), 1500 Hz tones above it
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert torch.equal(_peak_band_class(x, 12), y)
    std, mean = torch.std_mean(ds.x_train.double())
    assert ds.info.mean == [pytest.approx(float(mean))] and ds.info.std == [pytest.approx(float(std))]
    again = load_dataset("wav-folder", tmp_path, DataConfig(name="wav-folder", path=str(tmp_path / "tones"),
                                                            val_fraction=0.2))
    assert torch.equal(again.x_test, ds.x_test)  # fixed seed, absolute path works too


def test_wav_folder_train_test_layout_and_inference_features(tmp_path):
    _tone_folder(tmp_path / "tones", n=6, split=True)
    opts = DataConfig(name="wav-folder", path="tones", sample_rate=16000, clip_seconds=0.5, n_mels=32)
    ds = load_dataset("wav-folder", tmp_path, opts)
    assert (len(ds.x_train), len(ds.x_test)) == (8, 4) and ds.y_test.tolist() == [0, 0, 1, 1]
    assert ds.x_train.shape == (8, 1, 32, 51) and ds.info.extra["audio"]["n_fft"] == 512
    f = features_from_wav(tmp_path / "tones" / "train" / "high" / "high_02.wav", ds.info.extra)
    assert f.shape == (1, 32, 51) and torch.allclose(f, ds.x_train[0], atol=1e-4)


def test_wav_folder_corrupt_file_refuse_or_skip(tmp_path):
    _tone_folder(tmp_path / "tones")
    (tmp_path / "tones" / "low" / "low_broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
    with pytest.raises(DataError, match=r"low_broken\.wav.*on_error=skip"):
        load_dataset("wav-folder", tmp_path, DataConfig(name="wav-folder", path="tones"))
    ds = load_dataset("wav-folder", tmp_path, DataConfig(name="wav-folder", path="tones", on_error="skip",
                                                         val_fraction=0.2))
    assert len(ds.warnings) == 1 and "low_broken.wav" in ds.warnings[0]
    assert len(ds.x_train) + len(ds.x_test) == 20 and ds.source["skipped"] == 1
    assert torch.bincount(torch.cat([ds.y_train, ds.y_test])).tolist() == [10, 10]


def test_wav_folder_bad_layouts_are_explained(tmp_path):
    def load(path, **kw):
        return load_dataset("wav-folder", tmp_path, DataConfig(name="wav-folder", path=path, **kw))

    with pytest.raises(DataError, match="data.path is not set"):
        load("")
    with pytest.raises(DataError, match="does not exist"):
        load("nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"'.*empty' holds no class folders"):
        load("empty")
    _tone_folder(tmp_path / "t", n=3)
    (tmp_path / "t" / "silent_class").mkdir()
    with pytest.raises(DataError, match=r"silent_class' holds no \.wav files"):
        load("t")
    (tmp_path / "t" / "silent_class").rmdir()
    with pytest.raises(DataError, match="val_fraction"):
        load("t", val_fraction=0.0)
    (tmp_path / "half" / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no test/ folder"):
        load("half")


# ---------------------------------------------------------------------------------------------- FSDD


@pytest.fixture(scope="module")
def fsdd():
    from conftest import require_data
    root = require_data("fsdd/fsdd.npz")
    return root, load_dataset("fsdd", root, DataConfig(name="fsdd"))


def test_fsdd_official_split_and_features(fsdd):
    _, ds = fsdd
    assert ds.x_train.shape == (2700, 1, 40, 101) and ds.x_test.shape == (300, 1, 40, 101)
    assert ds.x_train.dtype == torch.float32 and ds.info.classes == [str(i) for i in range(10)]
    assert torch.bincount(ds.y_train).tolist() == [270] * 10 and torch.bincount(ds.y_test).tolist() == [30] * 10
    assert torch.isfinite(ds.x_train).all() and torch.isfinite(ds.x_test).all()
    assert float(ds.x_train.min()) >= np.log(1e-6) - 1e-4  # the silence floor of the zero padding
    std, mean = torch.std_mean(ds.x_train.double())
    assert ds.info.mean == [pytest.approx(float(mean))] and ds.info.std == [pytest.approx(float(std))]
    assert ds.info.scale == 1.0 and ds.info.extra["audio"]["hop"] == 80


def test_fsdd_inference_features_match_training(fsdd, tmp_path):
    root, ds = fsdd
    with np.load(root / "fsdd" / "fsdd.npz") as d:
        i = int(np.flatnonzero(d["index"] <= 4)[37])  # the 38th test recording
        clip = d["audio"][d["offsets"][i]:d["offsets"][i + 1]]
        label = int(d["label"][i])
    _write_wav(tmp_path / "r.wav", clip.astype(np.int64), 2, 8000)
    f = features_from_wav(tmp_path / "r.wav", ds.info.extra["audio"])
    assert int(ds.y_test[37]) == label and torch.allclose(f, ds.x_test[37], atol=1e-4)


def test_fsdd_missing_file_names_it_and_the_fix(tmp_path):
    with pytest.raises(DataError, match=r"fsdd/fsdd.npz.*LAYERWISE_DATA"):
        load_dataset("fsdd", tmp_path)

import numpy as np
import pytest
import torch

from layerwise.data import BatchLoader, DataError, load_dataset
from layerwise.data.augment import BatchTransform, random_flip, random_translate
from layerwise.data.inputs import load_inputs


def test_digits_split_is_fixed_and_stratified():
    ds = load_dataset("digits", "unused")
    assert (len(ds.x_train), len(ds.x_test)) == (1437, 360)
    assert ds.info.in_shape == (1, 8, 8) and ds.x_train.max() == 16
    assert torch.bincount(ds.y_test).tolist() == [36, 36, 35, 37, 36, 37, 36, 36, 35, 36]
    again = load_dataset("digits", "unused")
    assert again.x_test.equal(ds.x_test) and again.y_train.equal(ds.y_train)


def test_missing_dataset_file_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(DataError, match=r"mnist/mnist_train.npz.*LAYERWISE_DATA"):
        load_dataset("mnist", tmp_path)


def test_corrupt_npz_is_reported(tmp_path):
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "mnist_train.npz").write_bytes(b"PK\x03\x04 not really a zip")
    (tmp_path / "mnist" / "mnist_test.npz").write_bytes(b"")
    with pytest.raises(DataError, match="corrupt"):
        load_dataset("mnist", tmp_path)


def test_nan_data_is_rejected(tmp_path, monkeypatch):
    import layerwise.data.datasets as D
    good = D._REGISTRY["digits"]

    def poisoned(root, opts):
        ds = good(root, opts)
        ds.x_train[3, 0, 2, 2] = float("nan")
        return ds
    monkeypatch.setitem(D._REGISTRY, "digits", poisoned)
    with pytest.raises(DataError, match="NaN or Inf values in 1 examples"):
        load_dataset("digits", tmp_path)


def test_unknown_dataset_suggests_closest():
    with pytest.raises(DataError, match="did you mean .mnist."):
        load_dataset("mnsit", "x")


def test_mnist_from_real_files(data_root):
    ds = load_dataset("mnist", data_root)
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert ds.x_train.float().mean().item() / 255 == pytest.approx(0.1307, abs=1e-4)


def _loader(n=103, bs=10, translate=0, **kw):
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    y = torch.arange(n) % 10
    from layerwise.data import DatasetInfo
    info = DatasetInfo("t", (1, 4, 4), 10, [str(i) for i in range(10)], 1.0, [0.0], [1.0])
    return BatchLoader(x, y, bs, BatchTransform(info, "cpu", translate=translate), augment=True, **kw)


def test_loader_covers_each_example_once_per_epoch_and_reshuffles():
    ld = _loader(shuffle=True, seed=3)
    assert len(ld) == 11
    e0 = torch.cat([x[:, 0, 0, 0] for x, _ in ld])
    e1 = torch.cat([x[:, 0, 0, 0] for x, _ in ld])
    assert sorted(e0.tolist()) == list(range(103)) == sorted(e1.tolist())
    assert not e0.equal(e1) and ld.epoch == 2
    assert len(_loader(drop_last=True)) == 10


def test_loader_resumes_mid_epoch_exactly():
    full = _loader(shuffle=True, seed=5, translate=1)
    batches = []
    it = iter(full)
    for _ in range(11 + 6):  # one epoch and 6 batches of the next
        try:
            batches.append(next(it))
        except StopIteration:
            it = iter(full)
            batches.append(next(it))
    other = _loader(shuffle=True, seed=5, translate=1)
    other.load_state_dict({"epoch": 1, "position": 3})
    resumed = list(other)
    for (xa, ya), (xb, yb) in zip(batches[11 + 3:], resumed):
        assert xa.equal(xb) and ya.equal(yb)
    assert len(resumed) == 8


def test_random_translate_shifts_whole_images():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(64, 2, 8, 8)
    x[:, :, 3, 4] = 1.0
    out = random_translate(x, 2, g)
    assert out.shape == x.shape
    pos = out[:, 0].flatten(1).argmax(1)
    dy, dx = pos // 8 - 3, pos % 8 - 4
    assert dy.abs().max() <= 2 and dx.abs().max() <= 2
    assert len(set(zip(dy.tolist(), dx.tolist()))) > 10  # many different shifts in one batch
    assert out.sum().item() == 128 and out[:, 0].equal(out[:, 1])  # all channels move together


def test_random_flip_flips_about_half():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(8.0).view(1, 1, 1, 8).expand(1000, 1, 1, 8)
    out = random_flip(x, g)
    flipped = (out[:, 0, 0, 0] == 7).float().mean().item()
    assert 0.45 < flipped < 0.55 and ((out[:, 0, 0, 0] == 0) | (out[:, 0, 0, 0] == 7)).all()


def test_predict_inputs_from_npy_and_png(tmp_path):
    from PIL import Image
    from layerwise.data import DatasetInfo
    info = DatasetInfo("digits", (1, 8, 8), 10, [str(i) for i in range(10)], 16.0, [0.3], [0.38])
    np.save(tmp_path / "one.npy", np.full((8, 8), 4.0))
    np.save(tmp_path / "batch.npy", np.zeros((5, 8, 8), np.uint8))
    assert load_inputs(tmp_path / "one.npy", info).shape == (1, 1, 8, 8)
    assert load_inputs(tmp_path / "batch.npy", info).shape == (5, 1, 8, 8)
    np.save(tmp_path / "bad.npy", np.zeros((3, 3)))
    with pytest.raises(DataError, match=r"shape \(3, 3\)"):
        load_inputs(tmp_path / "bad.npy", info)
    img = np.full((32, 32), 255, np.uint8)  # black stroke on white paper
    img[8:24, 12:16] = 0  # exactly column 3, rows 2..5 of the 8x8 grid
    Image.fromarray(img).save(tmp_path / "one.png")
    x = load_inputs(tmp_path / "one.png", info)  # auto-inverted to light-on-dark, scaled to 0..16
    assert x.shape == (1, 1, 8, 8) and x.min().item() == 0.0
    assert x[0, 0, 3, 3].item() == pytest.approx(16.0) and x[0, 0].sum(0).argmax().item() == 3
    assert x[0, 0, 0].abs().max().item() == 0.0  # the paper stays background
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="not a readable image"):
        load_inputs(tmp_path / "broken.png", info)


def test_cifar10_decodes_to_the_published_pixels():
    import hashlib
    from conftest import require_data
    root = require_data("cifar10/cifar10_train_jpeg.npz", "cifar10/cifar10_test_jpeg.npz")
    ds = load_dataset("cifar10", root)
    assert ds.x_train.shape == (50000, 3, 32, 32) and ds.x_test.shape == (10000, 3, 32, 32)
    assert ds.info.classes[0] == "airplane" and ds.info.classes[-1] == "truck"
    # sha256 of the decoded test set as uint8 [N, 32, 32, 3], from the data folder's README
    digest = hashlib.sha256(ds.x_test.permute(0, 2, 3, 1).contiguous().numpy().tobytes()).hexdigest()
    assert digest == "5a6aa8185204d80b65d3dfb540696dadd5f10d185ded226a96665d3e0fc6259f"
    mean = (ds.x_train.float().mean((0, 2, 3)) / 255).tolist()
    assert mean == pytest.approx([0.4913, 0.4821, 0.4465], abs=3e-4)


def test_predict_inputs_from_wav_match_training_features(tmp_path):
    """A speech model's `predict` input is a .wav file prepared exactly like the training clips
    (resampled from 16 kHz to 8 kHz, padded to 1 s, 40 log-mel bands, 10 ms hop -> 101 frames)."""
    import wave

    from layerwise.data import DatasetInfo
    from layerwise.data.audio import log_mel

    audio = {"sample_rate": 8000, "clip_seconds": 1.0, "n_mels": 40, "n_fft": 256, "hop": 80}
    info = DatasetInfo("fsdd", (1, 40, 101), 10, [str(i) for i in range(10)], 1.0, [-10.0], [5.0],
                       extra={"audio": audio})
    t = np.arange(8000) / 16000.0
    pcm = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")  # 0.5 s at 16 kHz
    path = tmp_path / "a.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(pcm.tobytes())
    x = load_inputs(path, info)
    assert tuple(x.shape) == (1, 1, 40, 101)
    # the same tone generated at 8 kHz directly gives (nearly) the same features in the voiced half
    ref = torch.zeros(1, 8000)
    ref[0, :4000] = torch.from_numpy(0.3 * np.sin(2 * np.pi * 440 * np.arange(4000) / 8000.0)).float()
    want = log_mel(ref, 8000, 40, 256, 80)
    assert (x[0, 0, :, 5:45] - want[0, :, 5:45]).abs().mean() < 0.2
    with pytest.raises(DataError, match="not a .wav file"):
        load_inputs(_touch(tmp_path / "a.png"), info)


def _touch(p):
    p.write_bytes(b"x")
    return p

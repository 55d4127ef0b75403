"""image-folder, and MNIST / CIFAR-10 from their original file formats, on tiny files made here."""

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from layerwise.config import DataConfig
from layerwise.data import DataError, load_dataset
from layerwise.data.images import ImageFiles


def _save(path, arr, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, np.uint8)).save(path, fmt)


def _solid(path, rgb, h=6, w=8):
    _save(path, np.broadcast_to(np.array(rgb, np.uint8), (h, w, 3)))


def _opts(path, **kw):
    return DataConfig(name="image-folder", path=str(path), **kw)


def _noise_jpeg(path, seed=0, size=64):
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3))
    _save(path, arr, "JPEG")


def test_train_test_folders_give_classes_shapes_and_train_stats(tmp_path):
    for i in range(3):
        _solid(tmp_path / "d/train/cat" / f"{i}.png", (255, 0, 0))
    _solid(tmp_path / "d/train/dog/a.png", (0, 0, 255))
    _solid(tmp_path / "d/test/cat/t.png", (0, 255, 0))
    _solid(tmp_path / "d/test/dog/t.png", (0, 0, 255))
    (tmp_path / "d/train/cat/notes.txt").write_text("not an image: ignored")
    ds = load_dataset("image-folder", tmp_path, _opts("d"))
    assert ds.info.classes == ["cat", "dog"] and ds.info.num_classes == 2
    assert ds.x_train.dtype == torch.uint8 and ds.x_train.shape == (4, 3, 6, 8)
    assert ds.info.in_shape == (3, 6, 8) and ds.info.scale == 255.0
    assert ds.y_train.tolist() == [0, 0, 0, 1] and ds.y_test.tolist() == [0, 1]
    assert ds.x_test[0, :, 0, 0].tolist() == [0, 255, 0]
    # train only: R is 255 in 3 of 4 images, B in 1; G is constant (std 0 -> 1)
    assert ds.info.mean == pytest.approx([0.75, 0.0, 0.25])
    assert ds.info.std == pytest.approx([0.75**0.5 * 0.5, 1.0, 0.75**0.5 * 0.5], abs=1e-6)
    assert ds.warnings == [] and ds.source["layout"] == "train/ and test/ folders"


def test_val_folder_and_every_format(tmp_path):
    colour = (200, 100, 50)
    for fmt, ext in [("PNG", "png"), ("JPEG", "jpg"), ("BMP", "bmp"), ("GIF", "gif"), ("WEBP", "webp")]:
        _save(tmp_path / "d/train/a" / f"x.{ext}", np.broadcast_to(np.array(colour, np.uint8), (6, 8, 3)), fmt)
    _save(tmp_path / "d/train/b/UPPER.PNG", np.zeros((6, 8, 3)), "PNG")
    _solid(tmp_path / "d/val/a/v.png", colour)
    ds = load_dataset("image-folder", tmp_path, _opts("d"))
    assert len(ds.x_train) == 6 and ds.y_train.tolist() == [0] * 5 + [1]
    assert len(ds.x_test) == 1 and ds.source["layout"] == "train/ and val/ folders"
    centre = ds.x_train[:5, :, 3, 4].float()
    # lossless formats exactly; JPEG/WebP/GIF (lossy or 256-colour palette) within a few levels
    assert (centre - torch.tensor(colour)).abs().max() <= 8


def test_grayscale_only_gives_one_channel_and_mixed_gives_rgb(tmp_path):
    for c in ("a", "b"):
        for i in range(2):
            _save(tmp_path / f"g/{c}/{i}.png", np.full((5, 5), 40 * i + (100 if c == "b" else 0)))
    (tmp_path / "g/test").mkdir()  # a class named "test" alone does not make a split layout
    _save(tmp_path / "g/test/0.png", np.full((5, 5), 7))
    _save(tmp_path / "g/test/1.png", np.full((5, 5), 9))
    ds = load_dataset("image-folder", tmp_path, _opts("g", val_fraction=0.5))
    assert ds.x_train.shape == (3, 1, 5, 5) and ds.info.classes == ["a", "b", "test"]
    _solid(tmp_path / "g/a/rgb.png", (10, 20, 30), 5, 5)
    ds = load_dataset("image-folder", tmp_path, _opts("g", val_fraction=0.5))
    assert ds.info.in_shape == (3, 5, 5)
    grey = torch.cat([ds.x_train, ds.x_test])
    grey = grey[(grey[:, 0] == grey[:, 1]).all(-1).all(-1)]
    assert len(grey) == 6 and grey[:, 0].equal(grey[:, 2])  # grayscale replicated to R, G and B


def test_class_folders_are_split_stratified_with_a_fixed_seed(tmp_path):
    for c, n in (("a", 10), ("b", 5)):
        for i in range(n):  # pixel value identifies the file
            _save(tmp_path / f"p/{c}/{i:02d}.png", np.full((4, 4), i + (100 if c == "b" else 0)))
    ds = load_dataset("image-folder", tmp_path, _opts("p", val_fraction=0.2))
    assert (len(ds.x_train), len(ds.x_test)) == (12, 3)
    assert torch.bincount(ds.y_test).tolist() == [2, 1]  # round(10 * 0.2), round(5 * 0.2)

    def ids(x):
        return sorted(x[:, 0, 0, 0].tolist())

    assert sorted(ids(ds.x_train) + ids(ds.x_test)) == list(range(10)) + list(range(100, 105))
    again = load_dataset("image-folder", tmp_path, _opts("p", val_fraction=0.2))
    assert ids(again.x_test) == ids(ds.x_test) and again.x_train.equal(ds.x_train)
    assert "seed=0" in ds.source["layout"]


def test_sizes_must_agree_unless_image_size_resizes_with_antialiasing(tmp_path):
    img = np.zeros((16, 16), np.uint8)
    img[:, ::4] = 255  # a bright column every 4 pixels: plain bilinear sampling at 4x would miss them all
    _save(tmp_path / "s/train/a/big.png", img)
    _save(tmp_path / "s/train/a/small.png", np.zeros((8, 12)))
    _save(tmp_path / "s/test/a/t.png", np.zeros((8, 8)))
    with pytest.raises(DataError, match=r"differ in size .*16x16.*12x8.*data\.image_size=N"):
        load_dataset("image-folder", tmp_path, _opts("s"))
    ds = load_dataset("image-folder", tmp_path, _opts("s", image_size=4))
    assert ds.x_train.shape == (2, 1, 4, 4) and ds.x_test.shape == (1, 1, 4, 4)
    assert ds.x_train[0].float().mean().item() == pytest.approx(255 / 4, abs=10)  # area preserved
    assert ds.info.extra["image_size"] == 4


def test_truncated_jpeg_is_refused_naming_the_file_or_skipped(tmp_path):
    for i in range(3):
        _noise_jpeg(tmp_path / f"j/a/{i}.jpg", seed=i)
        _noise_jpeg(tmp_path / f"j/b/{i}.jpg", seed=10 + i)
    bad = tmp_path / "j/a/1.jpg"
    bad.write_bytes(bad.read_bytes()[:len(bad.read_bytes()) // 2])
    with Image.open(bad) as im:  # the header alone looks fine: only a full decode finds it
        assert im.size == (64, 64)
    with pytest.raises(DataError, match=r"j/a/1\.jpg' cannot be read .*truncated.*on_error=skip"):
        load_dataset("image-folder", tmp_path, _opts("j", val_fraction=0.34))
    ds = load_dataset("image-folder", tmp_path, _opts("j", val_fraction=0.34, on_error="skip"))
    assert len(ds.x_train) + len(ds.x_test) == 5
    assert len(ds.warnings) == 1 and "j/a/1.jpg" in ds.warnings[0]
    assert ds.source["skipped"] == 1


def test_not_an_image_and_layout_errors(tmp_path):
    _solid(tmp_path / "x/a/good.png", (1, 2, 3))
    _solid(tmp_path / "x/a/good2.png", (1, 2, 3))
    (tmp_path / "x/a/junk.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=r"junk\.png' cannot be read"):
        load_dataset("image-folder", tmp_path, _opts("x"))
    (tmp_path / "x/a/junk.png").unlink()
    (tmp_path / "x/empty").mkdir()
    with pytest.raises(DataError, match=r"class folder '.*empty' holds no images"):
        load_dataset("image-folder", tmp_path, _opts("x"))
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="has no class subfolders"):
        load_dataset("image-folder", tmp_path, _opts("none"))
    with pytest.raises(DataError, match="data.path 'nowhere' does not exist"):
        load_dataset("image-folder", tmp_path, _opts("nowhere"))
    with pytest.raises(DataError, match="data.path is not set"):
        load_dataset("image-folder", tmp_path, _opts(""))
    _solid(tmp_path / "y/train/a/0.png", (1, 2, 3))
    _solid(tmp_path / "y/test/zebra/0.png", (1, 2, 3))
    with pytest.raises(DataError, match="class folders that train/ lacks: zebra"):
        load_dataset("image-folder", tmp_path, _opts(str(tmp_path / "y")))  # absolute path works too


def test_stream_loader_decodes_on_demand_and_checks_files_up_front(tmp_path):
    for i in range(4):
        _noise_jpeg(tmp_path / f"s/a/{i}.jpg", seed=i, size=8 + 4 * i)
        _noise_jpeg(tmp_path / f"s/b/{i}.jpg", seed=10 + i, size=8)
    eager = load_dataset("image-folder", tmp_path, _opts("s", image_size=6, val_fraction=0.25))
    ds = load_dataset("image-folder", tmp_path, _opts("s", image_size=6, val_fraction=0.25, loader="stream"))
    assert isinstance(ds.x_train, ImageFiles) and len(ds.x_train) == 6 and len(ds.x_test) == 2
    assert torch.stack([ds.x_train[i] for i in range(6)]).equal(eager.x_train)
    assert ds.info.mean == pytest.approx(eager.info.mean) and ds.info.std == pytest.approx(eager.info.std)
    clone = pickle.loads(pickle.dumps(ds.x_test))  # worker processes receive a pickled copy
    assert clone[1].equal(eager.x_test[1])
    # damage after loading surfaces when the item is read, naming the file
    victim = ds.x_train.path(0)
    with open(victim, "r+b") as f:
        f.write(b"not a jpeg at all")
    with pytest.raises(DataError, match=r"image '.*\.jpg' cannot be decoded .*quick check"):
        ds.x_train[0]
    # a truncated JPEG (no end-of-image marker) is found by the up-front check
    _noise_jpeg(tmp_path / "s/a/0.jpg", seed=0, size=8)
    cut = tmp_path / "s/b/2.jpg"
    cut.write_bytes(cut.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"s/b/2\.jpg' cannot be read"):
        load_dataset("image-folder", tmp_path, _opts("s", image_size=6, loader="stream"))
    ds = load_dataset("image-folder", tmp_path, _opts("s", image_size=6, loader="stream", on_error="skip"))
    assert len(ds.x_train) + len(ds.x_test) == 7 and "s/b/2.jpg" in ds.warnings[0]


# ---------------------------------------------------------------------------------------- MNIST


def _idx(path, arr, gz=False, magic=None):
    arr = np.asarray(arr, np.uint8)
    head = magic if magic is not None else bytes([0, 0, 8, arr.ndim])
    data = head + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)


def _write_mnist(root, gz):
    rng = np.random.default_rng(0)
    x = {"train": rng.integers(0, 256, (5, 28, 28)), "t10k": rng.integers(0, 256, (3, 28, 28))}
    y = {"train": [5, 0, 4, 1, 9], "t10k": [7, 2, 1]}
    for s in ("train", "t10k"):
        ext = ".gz" if gz else ""
        _idx(root / "mnist" / f"{s}-images-idx3-ubyte{ext}", x[s], gz)
        _idx(root / "mnist" / f"{s}-labels-idx1-ubyte{ext}", y[s], gz)
    return x, y


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_from_idx_files(tmp_path, gz):
    x, y = _write_mnist(tmp_path, gz)
    ds = load_dataset("mnist", tmp_path)
    assert ds.x_train.shape == (5, 1, 28, 28) and ds.x_test.shape == (3, 1, 28, 28)
    assert ds.x_train[:, 0].numpy().tolist() == x["train"].tolist()
    assert ds.y_train.tolist() == y["train"] and ds.y_test.tolist() == y["t10k"]
    assert ds.source["files"][0] == "mnist/train-images-idx3-ubyte" + (".gz" if gz else "")
    # the npz form wins when both are there
    np.savez(tmp_path / "mnist/mnist_train.npz", x=np.zeros((2, 28, 28), np.uint8), y=np.array([1, 2], np.uint8))
    np.savez(tmp_path / "mnist/mnist_test.npz", x=np.zeros((1, 28, 28), np.uint8), y=np.array([3], np.uint8))
    assert len(load_dataset("mnist", tmp_path).x_train) == 2


def test_mnist_idx_wrong_magic_truncated_or_missing_is_named(tmp_path):
    _write_mnist(tmp_path, gz=False)
    labels = tmp_path / "mnist/t10k-labels-idx1-ubyte"
    _idx(labels, [7, 2, 1], magic=bytes([0, 0, 8, 3]))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte' is not an idx1-ubyte file.*00000803"):
        load_dataset("mnist", tmp_path)
    _idx(labels, [7, 2, 1])
    images = tmp_path / "mnist/train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte' holds 3910 data bytes .* promises 3920"):
        load_dataset("mnist", tmp_path)
    images.unlink()
    with pytest.raises(DataError, match=r"not train-images-idx3-ubyte \(or train-images-idx3-ubyte\.gz\)"):
        load_dataset("mnist", tmp_path)
    gz = tmp_path / "mnist/train-images-idx3-ubyte.gz"
    _idx(gz, np.zeros((5, 28, 28)), gz=True)
    gz.write_bytes(gz.read_bytes()[:-20])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz' cannot be read as gzip"):
        load_dataset("mnist", tmp_path)


# ------------------------------------------------------------------------------------- CIFAR-10


def _cifar_batch(path, labels, seed):
    rng = np.random.default_rng(seed)
    rec = np.zeros((len(labels), 3073), np.uint8)
    rec[:, 0] = labels
    rec[:, 1:] = rng.integers(0, 256, (len(labels), 3072))
    rec[0, 1:1025], rec[0, 1025:2049], rec[0, 2049:] = 10, 20, 30  # R, G, B planes of record 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(rec.tobytes())
    return rec


def test_cifar10_from_the_binary_version(tmp_path):
    d = tmp_path / "cifar10/cifar-10-batches-bin"
    recs = [_cifar_batch(d / f"data_batch_{i}.bin", [i, 9 - i], i) for i in range(1, 6)]
    _cifar_batch(d / "test_batch.bin", [3, 4, 5], 9)
    ds = load_dataset("cifar10", tmp_path)
    assert ds.x_train.shape == (10, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    assert ds.y_train.tolist() == [1, 8, 2, 7, 3, 6, 4, 5, 5, 4] and ds.y_test.tolist() == [3, 4, 5]
    assert ds.x_train[0, :, 5, 7].tolist() == [10, 20, 30]
    assert ds.x_train[1].flatten().numpy().tolist() == recs[0][1, 1:].tolist()  # planes, row-major
    assert ds.info.classes[0] == "airplane" and ds.info.classes[9] == "truck"
    (d / "batches.meta.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n\n")
    assert load_dataset("cifar10", tmp_path).info.classes[3] == "c3"
    (d / "test_batch.bin").write_bytes((d / "test_batch.bin").read_bytes()[:-1])
    with pytest.raises(DataError, match=r"test_batch\.bin' is 9218 bytes, not a whole number of 3073-byte"):
        load_dataset("cifar10", tmp_path)
    (d / "data_batch_3.bin").unlink()
    with pytest.raises(DataError, match="but not data_batch_3.bin"):
        load_dataset("cifar10", tmp_path)


def test_cifar10_missing_names_both_forms(tmp_path):
    with pytest.raises(DataError, match=r"cifar10_train_jpeg\.npz.*cifar-10-batches-bin.*download=true"):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(DataError, match=r"mnist_train\.npz.*idx files.*download=true"):
        load_dataset("mnist", tmp_path)


def _cifar_npz(path, images, corrupt=()):
    """A repacked CIFAR-10 JPEG npz (the layout of ../shared/data/cifar10) of (N, 32, 32, 3) images."""
    import io

    blobs = []
    for i, img in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=95)
        data = buf.getvalue()
        blobs.append(data[: len(data) // 3] if i in corrupt else data)  # truncated: not decodable
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    classes = np.array([f"c{k}" for k in range(10)])
    np.savez(path, jpeg=np.frombuffer(b"".join(blobs), np.uint8), offsets=offsets,
             y=(np.arange(len(images)) % 10).astype(np.uint8), classes=classes,
             filename=np.array([f"c{i % 10}/{i:04d}.jpg" for i in range(len(images))]))


def test_cifar10_jpeg_npz_decodes_in_order_and_names_a_broken_image(tmp_path):
    from layerwise.data import images as images_mod

    # smooth images (JPEG keeps them to within a few levels) with a per-image brightness
    base = np.linspace(0, 100, 32, dtype=np.float32)[None, :, None] + np.zeros((32, 32, 3), np.float32)
    imgs = np.stack([(base + 4 * i).astype(np.uint8) for i in range(37)])  # up to 244
    (tmp_path / "cifar10").mkdir()
    _cifar_npz(tmp_path / "cifar10" / "cifar10_train_jpeg.npz", imgs)
    _cifar_npz(tmp_path / "cifar10" / "cifar10_test_jpeg.npz", imgs[:11])
    ds = load_dataset("cifar10", tmp_path, DataConfig(name="cifar10"))
    assert ds.x_train.shape == (37, 3, 32, 32) and ds.x_test.shape == (11, 3, 32, 32)
    means = ds.x_train.float().mean(dim=(1, 2, 3))  # images come back in order (threads and all)
    assert (means.diff() > 2).all()
    assert (ds.x_train.permute(0, 2, 3, 1).int() - torch.from_numpy(imgs).int()).abs().max() <= 6
    images_mod._DECODED.clear()
    _cifar_npz(tmp_path / "cifar10" / "cifar10_train_jpeg.npz", imgs, corrupt={23})
    with pytest.raises(DataError, match=r"image 23 in 'cifar10/cifar10_train_jpeg.npz' cannot be decoded"):
        load_dataset("cifar10", tmp_path, DataConfig(name="cifar10"))

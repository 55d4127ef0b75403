import sys
import types

import pytest
import torch
import torch.nn.functional as F

from layerwise.config import ConfigError, DataConfig
from layerwise.data import DatasetInfo
from layerwise.data.augment import (
    BatchTransform,
    Normalize,
    _beta,
    cutmix,
    cutout,
    mixup,
    one_hot,
    random_translate,
)


def _info(in_shape, mean, std, scale=1.0, num_classes=10, **kw) -> DatasetInfo:
    return DatasetInfo("t", in_shape, num_classes, [str(i) for i in range(num_classes)], scale, mean, std, **kw)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------- Normalize
def test_normalize_images_per_channel_over_trailing_dims():
    info = _info((3, 5, 6), [0.1, 0.5, 0.9], [0.2, 0.25, 0.5], scale=255.0)
    x = torch.randint(0, 256, (4, 3, 5, 6), dtype=torch.uint8, generator=_gen(0))
    out = Normalize(info)(x)
    assert out.dtype == torch.float32 and out.shape == (4, 3, 5, 6)
    for c, (m, s) in enumerate(zip(info.mean, info.std)):
        expect = (x[:, c].double() / 255 - m) / s
        assert torch.allclose(out[:, c].double(), expect, atol=1e-5)


def test_normalize_tabular_per_feature_and_audio_single_channel():
    info = _info((3,), [1.0, -2.0, 10.0], [2.0, 0.5, 4.0])
    x = torch.tensor([[3.0, -2.0, 2.0], [1.0, 0.0, 18.0]])  # (N, F)
    assert Normalize(info)(x).tolist() == [[1.0, 0.0, -2.0], [0.0, 4.0, 2.0]]
    audio = _info((1, 2, 3), [0.5], [2.0], extra={"audio": {}})
    x = torch.arange(12.0).view(2, 1, 2, 3)  # (N, 1, F, T)
    assert Normalize(audio)(x).equal((x - 0.5) / 2.0)


def test_normalize_needs_one_mean_per_channel():
    with pytest.raises(ValueError, match=r"one value per channel.*i.e. 3; got 1 and 1"):
        Normalize(_info((3, 4, 4), [0.5], [0.2]))
    with pytest.raises(ValueError, match="no mean/std"):
        Normalize(_info((16,), [], [], task="lm"))


# ------------------------------------------------------------------------------------- cutout
def test_cutout_zeroes_one_clipped_square_per_image():
    B, H, W, size = 400, 10, 10, 4
    x = torch.ones(B, 2, H, W)
    out = cutout(x, size, _gen(1))
    assert out[:, 0].equal(out[:, 1])  # every channel loses the same square
    zero = out[:, 0] == 0  # (B, H, W)
    full = clipped = 0
    for b in range(B):
        rows, cols = zero[b].any(1).nonzero().flatten(), zero[b].any(0).nonzero().flatten()
        h, w = len(rows), len(cols)
        assert int(zero[b].sum()) == h * w  # one rectangle, nothing else touched
        assert rows.tolist() == list(range(rows[0], rows[0] + h)) and cols.tolist() == list(range(cols[0], cols[0] + w))
        inside = rows[0] > 0 and rows[-1] < H - 1 and cols[0] > 0 and cols[-1] < W - 1
        if inside:  # a centre far from the borders: exactly size * size pixels
            assert (h, w) == (size, size)
            full += 1
        elif h * w < size * size:  # fewer pixels only where the square meets a border
            clipped += 1
    assert full > 50 and clipped > 50  # both cases occur with uniform centres
    assert out.sum().item() == pytest.approx(B * 2 * H * W - 2 * zero.sum().item())


def test_cutout_is_determined_by_the_generator():
    x = torch.randn(16, 3, 8, 8, generator=_gen(0))
    assert cutout(x, 3, _gen(5)).equal(cutout(x, 3, _gen(5)))
    assert not cutout(x, 3, _gen(5)).equal(cutout(x, 3, _gen(6)))
    assert cutout(x, 0, _gen(5)) is x


# ------------------------------------------------------------------------------------- mixing
def test_one_hot_is_float_probabilities():
    y = one_hot(torch.tensor([2, 0]), 3)
    assert y.dtype == torch.float32 and y.tolist() == [[0, 0, 1], [1, 0, 0]]


def test_beta_draws_have_the_beta_moments():
    for alpha in (1.0, 0.2):
        lam = torch.tensor([_beta(alpha, _gen(s)) for s in range(500)])
        var = 1 / (4 * (2 * alpha + 1))  # Var Beta(a, a)
        assert lam.min() >= 0 and lam.max() <= 1
        assert lam.mean().item() == pytest.approx(0.5, abs=0.05)
        assert lam.var().item() == pytest.approx(var, rel=0.15)
    assert _beta(0.4, _gen(3)) == _beta(0.4, _gen(3))


def _constant_images(B: int = 8, H: int = 6, W: int = 6):
    """Image b is the constant b + 1 and has class b, so every pixel tells whose it is."""
    x = (torch.arange(B, dtype=torch.float32) + 1).view(B, 1, 1, 1).expand(B, 2, H, W).contiguous()
    return x, one_hot(torch.arange(B), B)


def test_mixup_mixes_inputs_and_targets_with_one_lambda():
    x, y = _constant_images()
    out, ys = mixup(x, y, 0.4, _gen(2))
    assert ys.shape == (8, 8) and torch.allclose(ys.sum(1), torch.ones(8))
    # pixel value = sum_k weight_k * (k + 1): inputs and targets mixed with the same weights
    assert torch.allclose(out[:, 0, 0, 0], ys @ (torch.arange(8.0) + 1), atol=1e-5)
    assert torch.allclose(out, out[:, :1, :1, :1].expand_as(out))
    lam = ys.diagonal()  # the own-class weight: lam for every row (1 where the partner is itself)
    moved = lam < 1
    assert moved.sum() >= 2 and torch.allclose(lam[moved], lam[moved][0].expand(int(moved.sum())))
    again = mixup(x, y, 0.4, _gen(2))
    assert again[0].equal(out) and again[1].equal(ys)
    assert not mixup(x, y, 0.4, _gen(3))[1].equal(ys)


def test_cutmix_target_weights_equal_the_pasted_pixel_shares():
    clipped = 0
    for seed in range(40):
        x, y = _constant_images(B=6, H=8, W=8)
        out, ys = cutmix(x, y, 1.0, _gen(seed))
        assert torch.allclose(ys.sum(1), torch.ones(6))
        owner = out[:, 0].round().long() - 1  # (B, H, W): whose pixel it is
        assert out[:, 0].equal(out[:, 1])
        share = F.one_hot(owner, 6).float().mean((1, 2))  # (B, K) pixel share per source image
        assert torch.allclose(share, ys, atol=1e-6), seed  # lambda is the exact (clipped) box area
        pasted = (owner != torch.arange(6).view(6, 1, 1)).any(0)  # the box, the same for the batch
        if pasted.any():
            rows, cols = pasted.any(1).nonzero().flatten(), pasted.any(0).nonzero().flatten()
            assert int(pasted.sum()) == len(rows) * len(cols)
            clipped += int(rows[0] == 0 or cols[0] == 0 or rows[-1] == 7 or cols[-1] == 7)
    assert clipped >= 5  # boxes cut by the border occurred, and their lambdas matched too
    x, y = _constant_images()
    a, b = cutmix(x, y, 1.0, _gen(9)), cutmix(x, y, 1.0, _gen(9))
    assert a[0].equal(b[0]) and a[1].equal(b[1])


def test_soft_targets_in_cross_entropy_match_the_hand_computed_loss():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    y = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.5, 0.5]])
    # row 0: log p = (2, 0, 0) - ln(e^2 + 2) = (-0.239550, -2.239550, -2.239550)
    #        loss = 0.7 * 0.239550 + 0.3 * 2.239550 = 0.839550
    # row 1: log p = (0, 1, 0) - ln(e + 2) = (-1.551445, -0.551445, -1.551445)
    #        loss = 0.5 * 0.551445 + 0.5 * 1.551445 = 1.051445
    assert F.cross_entropy(logits, y, reduction="sum").item() == pytest.approx(1.890995, abs=1e-5)
    # smoothing 0.1 with 3 classes: targets 0.9 * y + 0.1 / 3
    # row 0: 0.663333 * 0.239550 + 0.336667 * 2.239550 = 0.912883
    # row 1: 0.033333 * 1.551445 + 0.483333 * 0.551445 + 0.483333 * 1.551445 = 1.068112
    smooth = F.cross_entropy(logits, y, reduction="sum", label_smoothing=0.1).item()
    assert smooth == pytest.approx(0.912883 + 1.068112, abs=1e-5)


# ------------------------------------------------------------------------------------- the transform
def test_transform_without_generator_only_normalizes():
    info = _info((1, 4, 4), [0.5], [0.25], scale=2.0)
    tf = BatchTransform(info, "cpu", translate=2, flip=True, cutout=2, mixup=1.0, cutmix=1.0)
    x = torch.arange(32.0).view(2, 1, 4, 4)
    y = torch.tensor([3, 7])
    out, yo = tf(x, y, None)
    assert out.equal((x / 2.0 - 0.5) / 0.25) and yo is y
    assert tf.augments and not BatchTransform(info, "cpu").augments


def test_transform_mixes_into_soft_targets_choosing_mixup_or_cutmix_half_the_time():
    info = _info((1, 4, 4), [0.0], [1.0], num_classes=8)
    x = (torch.arange(8.0) + 1).view(8, 1, 1, 1).expand(8, 1, 4, 4)
    y = torch.arange(8)
    tf = BatchTransform(info, "cpu", mixup=0.5, cutmix=1.0)
    picks = []
    for s in range(200):
        out, ys = tf(x, y, _gen(s))
        assert ys.dtype == torch.float32 and ys.shape == (8, 8)
        assert torch.allclose(ys.sum(1), torch.ones(8))
        picks.append(bool((out == out.round()).all()))  # cutmix pastes whole pixels; mixup blends
    assert 0.38 < sum(picks) / len(picks) < 0.62
    def whole_pixels(tf: BatchTransform) -> list[bool]:
        return [bool((o == o.round()).all()) for o, _ in (tf(x, y, _gen(s)) for s in range(20))]
    assert all(whole_pixels(BatchTransform(info, "cpu", cutmix=1.0)))  # the detector above is right
    assert not any(whole_pixels(BatchTransform(info, "cpu", mixup=0.5)))
    out, ys = BatchTransform(info, "cpu", translate=1)(x, y, _gen(0))
    assert ys is y  # no mixing: targets stay class ids


def test_transform_from_config_reads_the_data_section():
    info = _info((3, 8, 8), [0.5] * 3, [0.2] * 3)
    opts = DataConfig(augment_translate=2, augment_flip=True, augment_cutout=3, mixup=0.2, cutmix=1.0)
    tf = BatchTransform.from_config(opts, info, "cpu")
    assert (tf.translate, tf.flip, tf.cutout, tf.mixup, tf.cutmix) == (2, True, 3, 0.2, 1.0)
    # the same draws as the functions applied in order by hand: translate, flip, cutout, mix choice
    x = torch.randint(0, 256, (5, 3, 8, 8), generator=_gen(0)).float()
    y = torch.tensor([0, 1, 2, 3, 4])
    from layerwise.data.augment import random_flip, random_translate
    g = _gen(4)
    h = random_flip(random_translate(tf.normalize(x), 2, g), g)
    h = cutout(h, 3, g)
    pick_cutmix = bool(torch.rand(1, generator=g) < 0.5)
    h, yh = (cutmix if pick_cutmix else mixup)(h, one_hot(y, 10), 1.0 if pick_cutmix else 0.2, g)
    out, ys = tf(x, y, _gen(4))
    assert out.equal(h) and ys.equal(yh)


def test_transform_refuses_options_that_do_not_fit_the_data():
    tabular = _info((4,), [0.0] * 4, [1.0] * 4)
    with pytest.raises(ConfigError, match=r"data.mixup=0.2 applies to images .*Set data.mixup to 0"):
        BatchTransform(tabular, "cpu", mixup=0.2)
    audio = _info((1, 40, 101), [0.0], [1.0], extra={"audio": {"n_mels": 40}})
    with pytest.raises(ConfigError, match=r"data.augment_flip=True applies to images"):
        BatchTransform(audio, "cpu", flip=True)
    image = _info((1, 8, 8), [0.0], [1.0])
    with pytest.raises(ConfigError, match=r"data.specaugment_time=5 applies to audio"):
        BatchTransform(image, "cpu", specaugment_time=5)
    with pytest.raises(ConfigError, match=r"data.augment_cutout must be >= 0"):
        BatchTransform(image, "cpu", cutout=-1)


def test_transform_calls_spec_augment_on_audio(monkeypatch):
    calls = []

    def stub(x, time_width, freq_width, n_masks, gen):
        calls.append((x.clone(), time_width, freq_width, n_masks, gen))
        return x * 0 + 7.0

    monkeypatch.setitem(sys.modules, "layerwise.data.audio", types.SimpleNamespace(spec_augment=stub))
    info = _info((1, 4, 5), [1.0], [2.0], extra={"audio": {"n_mels": 4}})
    tf = BatchTransform(info, "cpu", specaugment_time=3, specaugment_freq=2, specaugment_masks=1)
    x, y = torch.full((2, 1, 4, 5), 5.0), torch.tensor([1, 2])
    g = _gen(0)
    out, yo = tf(x, y, g)
    assert len(calls) == 1 and calls[0][1:] == (3, 2, 1, g)
    assert calls[0][0].equal(torch.full((2, 1, 4, 5), 2.0))  # normalized first: (5 - 1) / 2
    assert out.equal(torch.full((2, 1, 4, 5), 7.0)) and yo is y
    tf(x, y, None)  # evaluation: no masks
    BatchTransform(info, "cpu")(x, y, g)  # SpecAugment off
    assert len(calls) == 1


# ------------------------------------------------------------------------------------- translate
@pytest.mark.parametrize("pad", ["zero", "reflect"])
def test_translate_shifts_each_image_and_fills_the_border(pad):
    B, H, W, s = 300, 6, 7, 2
    x = torch.arange(H * W, dtype=torch.float32).view(1, 1, H, W).expand(B, 2, H, W) + 1  # no zeros inside
    out = random_translate(x, s, _gen(4), pad)
    ref = F.pad(x, (s, s, s, s), mode="reflect" if pad == "reflect" else "constant")
    shifts = set()
    for b in range(B):  # each output is one window of the padded image: find its shift
        hits = [(dy, dx) for dy in range(-s, s + 1) for dx in range(-s, s + 1)
                if out[b].equal(ref[b, :, s + dy:s + dy + H, s + dx:s + dx + W])]
        assert len(hits) == 1
        shifts.add(hits[0])
    assert len(shifts) == (2 * s + 1) ** 2  # every shift occurs
    border_zeros = bool((out == 0).any())
    assert border_zeros == (pad == "zero")  # reflect brings in image pixels, never zeros
    assert random_translate(x, s, _gen(4), pad).equal(out)  # determined by the generator

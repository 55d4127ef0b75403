import pytest
import torch
from torch.utils.data.distributed import DistributedSampler

from layerwise.data import BatchLoader, DataError, DatasetInfo
from layerwise.data.augment import BatchTransform
from layerwise.data.loader import EpochOrder, gather, head, materialize
from layerwise.data.stream import StreamLoader, build_loader

INFO = DatasetInfo("t", (3, 8, 8), 10, [str(i) for i in range(10)], 255.0, [0.4, 0.5, 0.6], [0.2, 0.25, 0.3])
ALL_AUG = {"translate": 2, "flip": True, "cutout": 3, "mixup": 0.4, "cutmix": 1.0}


def _images(n: int = 75, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g)


def _ids(n: int) -> tuple[torch.Tensor, torch.Tensor, BatchTransform]:
    """Example i is the constant image i (scale 1, mean 0, std 1), so a batch shows its indices."""
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    info = DatasetInfo("ids", (1, 2, 2), 10, [str(i) for i in range(10)], 1.0, [0.0], [1.0])
    return x, torch.arange(n) % 10, BatchTransform(info, "cpu")


def _epoch_ids(loader) -> list[int]:
    return [int(v) for x, _ in loader for v in x[:, 0, 0, 0]]


def _epochs(loader, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [b for _ in range(n) for b in list(loader)]


class Source:
    """An ExampleSource: decodes example i on demand (here: reads it from a tensor)."""

    def __init__(self, x: torch.Tensor):
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i].clone()


# ------------------------------------------------------------------------------------- order and shards
def test_rank_order_splits_like_distributed_sampler():
    x, y, tf = _ids(10)
    for w in (2, 3, 4):
        for r in range(w):
            mine = EpochOrder(x, y, 4, tf, rank=r, world_size=w).rank_order().tolist()
            assert mine == list(DistributedSampler(range(10), num_replicas=w, rank=r, shuffle=False))
    # shuffled: each rank strides the same seeded permutation, padded from its start
    full = EpochOrder(x, y, 4, tf, shuffle=True, seed=3).rank_order()
    assert sorted(full.tolist()) == list(range(10))
    padded = torch.cat([full, full[:2]])  # 10 examples over 4 ranks: 12 slots
    for r in range(4):
        assert EpochOrder(x, y, 4, tf, shuffle=True, seed=3, rank=r, world_size=4).rank_order().equal(padded[r::4])
    tiny = [EpochOrder(x[:3], y[:3], 1, tf, rank=r, world_size=5).rank_order().tolist() for r in range(5)]
    assert tiny == [[0], [1], [2], [0], [1]]  # fewer examples than ranks: wraps more than once


@pytest.mark.parametrize("kind", ["device", "stream"])
def test_two_ranks_cover_every_example_with_equal_lengths(kind):
    x, y, tf = _ids(103)
    opts = {"shuffle": True, "seed": 7, "world_size": 2}
    if kind == "device":
        ranks = [BatchLoader(x, y, 10, tf, rank=r, **opts) for r in range(2)]
    else:
        ranks = [StreamLoader(x, y, 10, tf, rank=r, workers=2, **opts) for r in range(2)]
    assert [len(ld) for ld in ranks] == [6, 6]  # 52 examples each, in batches of 10
    seen = [_epoch_ids(ld) for ld in ranks]
    assert [len(s) for s in seen] == [52, 52]
    first = int(EpochOrder(x, y, 10, tf, shuffle=True, seed=7).rank_order()[0])
    assert sorted(seen[0] + seen[1]) == sorted(list(range(103)) + [first])  # one padded repeat
    assert [ld.epoch for ld in ranks] == [1, 1]
    nxt = _epoch_ids(ranks[0])
    assert sorted(nxt) != sorted(seen[0])  # a new permutation, split again
    assert [len(BatchLoader(x, y, 10, tf, drop_last=True, rank=r, world_size=2)) for r in range(2)] == [5, 5]


def test_batch_loader_keeps_the_single_process_order():
    x, y, tf = _ids(37)
    ld = BatchLoader(x, y, 8, tf, shuffle=True, seed=11)
    assert len(ld) == 5 and ld.num_examples == 37 and ld.examples_per_rank == 37
    e0, e1 = _epoch_ids(ld), _epoch_ids(ld)
    assert sorted(e0) == list(range(37)) == sorted(e1) and e0 != e1
    assert e0 == EpochOrder(x, y, 8, tf, shuffle=True, seed=11).rank_order().tolist()
    assert _epoch_ids(BatchLoader(x, y, 8, tf)) == list(range(37))  # no shuffle: in order


def test_augmentation_streams_differ_by_rank_and_batch_but_not_by_run():
    tf = BatchTransform(INFO, "cpu", translate=1)
    x, y = _images(20)
    a, b = (BatchLoader(x, y, 5, tf, augment=True, rank=r, world_size=2) for r in range(2))
    seeds = {(r, i): ld.augment_generator(i).initial_seed() for r, ld in enumerate((a, b)) for i in range(2)}
    assert len(set(seeds.values())) == 4
    assert BatchLoader(x, y, 5, tf, augment=True, rank=1, world_size=2).augment_generator(1).initial_seed() \
        == seeds[(1, 1)]
    assert BatchLoader(x, y, 5, tf).augment_generator(0) is None  # augment=False: evaluation


# ------------------------------------------------------------------------------------- resume and equality
@pytest.mark.parametrize("kind", ["device", "stream"])
def test_resume_mid_epoch_sees_exactly_the_remaining_batches(kind):
    x, y = _images(75)
    tf = BatchTransform(INFO, "cpu", **ALL_AUG)

    def make():
        opts = {"shuffle": True, "seed": 5, "augment": True, "rank": 1, "world_size": 2}
        if kind == "device":
            return BatchLoader(x, y, 8, tf, **opts)
        return StreamLoader(x, y, 8, tf, workers=2, **opts)

    ref = make()
    batches = _epochs(ref, 2)  # 38 examples per rank: 5 batches per epoch
    assert len(ref) == 5 and len(batches) == 10
    other = make()
    other.load_state_dict({"epoch": 1, "position": 2})
    resumed = list(other)
    assert len(resumed) == 3 and other.state_dict() == {"epoch": 2, "position": 0}
    for (xa, ya), (xb, yb) in zip(batches[5 + 2:], resumed, strict=True):
        assert xa.equal(xb) and ya.equal(yb)
    # a loader stopped mid-epoch reports where it is, and a fresh one continues from there
    ld = make()
    it = iter(ld)
    next(it), next(it), next(it)
    state = ld.state_dict()
    assert state == {"epoch": 0, "position": 3}
    cont = make()
    cont.load_state_dict(state)
    assert [b[0].sum().item() for b in cont] == [b[0].sum().item() for b in batches[3:5]]


def test_stream_loader_yields_the_batch_loader_batches():
    x, y = _images(75)
    tf = BatchTransform(INFO, "cpu", **ALL_AUG)
    opts = {"shuffle": True, "seed": 9, "augment": True, "rank": 0, "world_size": 2}
    dev, stream = BatchLoader(x, y, 8, tf, **opts), StreamLoader(x, y, 8, tf, workers=2, **opts)
    a, b = _epochs(dev, 2), _epochs(stream, 2)
    assert len(a) == len(b) == 10
    for (xa, ya), (xb, yb) in zip(a, b):
        assert xa.equal(xb) and ya.equal(yb)
    assert ya.dtype == torch.float32 and ya.shape == (xa.shape[0], 10)  # mixed soft targets
    # resumed mid-epoch 1, the stream loader continues with the device loader's batches
    stream = StreamLoader(x, y, 8, tf, workers=2, **opts)
    stream.load_state_dict({"epoch": 1, "position": 3})
    rest = list(stream)
    assert len(rest) == 2 and all(p[0].equal(q[0]) and p[1].equal(q[1]) for p, q in zip(a[8:], rest))


def test_stream_loader_decodes_an_example_source_and_keeps_uint8():
    x, y = _images(30)
    raw_dtypes = []
    inner = BatchTransform(INFO, "cpu", translate=1, flip=True)

    class Recording:
        augments, normalize, device = inner.augments, inner.normalize, inner.device
        alternates_flips = inner.alternates_flips

        def __call__(self, xr, yr, gen, flip=None):
            raw_dtypes.append(xr.dtype)
            return inner(xr, yr, gen, flip)

    stream = StreamLoader(Source(x), y, 7, Recording(), shuffle=True, seed=1, augment=True, workers=2)
    dev = BatchLoader(materialize(Source(x)), y, 7, inner, shuffle=True, seed=1, augment=True)
    got, want = list(stream), list(dev)
    assert len(got) == len(want) == 5 and set(raw_dtypes) == {torch.uint8}
    assert all(p[0].equal(q[0]) and p[1].equal(q[1]) for p, q in zip(got, want))
    assert stream.pin_memory is False and StreamLoader(x, y, 7, inner, device="cuda").pin_memory is True


# ------------------------------------------------------------------------------------- sources and helpers
def test_materialize_gather_and_head_on_sources():
    x, _ = _images(12)
    src = Source(x)
    assert materialize(src).equal(x) and materialize(src).dtype == torch.uint8 and materialize(x) is x
    assert gather(src, [5, 0, 5]).equal(x[[5, 0, 5]])
    h = head(src, 4)
    assert len(h) == 4 and materialize(h).equal(x[:4]) and head(x, 4).equal(x[:4])
    with pytest.raises(IndexError):
        h[4]

    class Ragged(Source):
        def __getitem__(self, i):
            return self.x[i, :, :7] if i == 6 else self.x[i]
    with pytest.raises(DataError, match=r"example 6 .*\(3, 7, 8\).*while example 0 is \(3, 8, 8\)"):
        materialize(Ragged(x))
    with pytest.raises(TypeError, match="materialize"):
        BatchLoader(src, torch.zeros(12, dtype=torch.long), 4, BatchTransform(INFO))


def test_evaluation_view_is_ordered_whole_and_unaugmented():
    x, y = _images(30)
    tf = BatchTransform(INFO, "cpu", **ALL_AUG)
    for ld in (BatchLoader(x, y, 4, tf, shuffle=True, seed=2, augment=True, rank=1, world_size=2, drop_last=True),
               StreamLoader(x, y, 4, tf, shuffle=True, seed=2, augment=True, rank=1, world_size=2, workers=0)):
        ld.load_state_dict({"epoch": 3, "position": 2})
        view = ld.evaluation_view(8)
        assert type(view) is type(ld) and len(view) == 4
        batches = list(view)
        assert torch.cat([b[0] for b in batches]).equal(tf.normalize(x))
        assert torch.cat([b[1] for b in batches]).equal(y)  # class ids: nothing mixed
        assert ld.state_dict() == {"epoch": 3, "position": 2} and ld.batch_size == 4 and ld.augment


def test_build_loader_picks_the_loader_by_name():
    x, y = _images(20)
    tf = BatchTransform(INFO)
    dev = build_loader("device", Source(x), y, 8, tf, "cpu", shuffle=True)
    assert type(dev) is BatchLoader and dev.x.equal(x) and dev.shuffle
    stream = build_loader("stream", Source(x), y, 8, tf, "cpu", workers=0, augment=True)
    assert type(stream) is StreamLoader and stream.workers == 0 and stream.augment
    with pytest.raises(ValueError, match="unknown data.loader 'devise'; did you mean 'device'"):
        build_loader("devise", x, y, 8, tf, "cpu")


def test_trainer_gives_the_same_run_with_either_loader(overrides_for):
    from layerwise.config import load_config
    from layerwise.train.trainer import Trainer

    def run(kind: str) -> tuple[list[float], dict]:
        cfg = load_config(None, overrides_for(
            "--model.name=mlp", "--model.depth=1", "--model.width=32", "--data.batch_size=64",
            "--data.train_subset=512", "--data.augment_translate=1", "--data.mixup=0.3",
            "--train.max_steps=10", "--train.log_every=1", "--train.eval_every=0", "--train.threads=1",
            f"--data.loader={kind}", "--data.workers=1"))
        t = Trainer(cfg, show_progress=False)
        t.fit()
        return [r["loss"] for r in t.log.records if r["kind"] == "train"], t.evaluate("train")

    (dev_losses, dev_train), (stream_losses, stream_train) = run("device"), run("stream")
    assert len(dev_losses) == 10 and dev_losses == stream_losses
    assert dev_train == stream_train and dev_train["examples"] == 512


# ------------------------------------------------------------------------------------- alternating flips
def _flipped_per_epoch(loader, epochs: int) -> list[dict[int, bool]]:
    """For each epoch, {example id: mirrored?}, read off images whose left and right halves differ."""
    out = []
    for _ in range(epochs):
        seen = {}
        for x, _ in loader:
            for img in x:
                total = int(img[0, 0, 1] + img[0, 0, 2])  # columns 1 and 2 sum to 4*id + 1 either way
                seen[(total - 1) // 4] = bool(img[0, 0, 0] > img[0, 0, 3])
        out.append(seen)
    return out


@pytest.mark.parametrize("kind", ["device", "stream"])
def test_alternate_flips_mirror_each_image_in_every_other_epoch(kind):
    n = 101
    # example i is a ramp 2i-1 .. 2i+2 along the width: mirrored, the ramp runs the other way
    x = (2 * torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1) + torch.arange(-1.0, 3.0)).expand(n, 1, 2, 4)
    info = DatasetInfo("ramp", (1, 2, 4), 10, [str(i) for i in range(10)], 1.0, [0.0], [1.0])
    tf = BatchTransform(info, "cpu", flip=True, flip_mode="alternate")
    assert tf.alternates_flips and not BatchTransform(info, "cpu", flip=True).alternates_flips
    opts = {"shuffle": True, "seed": 3, "augment": True}
    make = ((lambda: BatchLoader(x.contiguous(), torch.arange(n) % 10, 16, tf, **opts)) if kind == "device" else
            (lambda: StreamLoader(x.contiguous(), torch.arange(n) % 10, 16, tf, workers=0, **opts)))
    e0, e1, e2, e3 = _flipped_per_epoch(make(), 4)
    assert len(e0) == n
    assert all(e1[i] != e0[i] for i in range(n)) and e2 == e0 and e3 == e1  # alternates, per image
    assert 30 < sum(e0.values()) < 71  # a random half (50 expected)
    # the same bits for another loader of the same seed, resumed in epoch 3 (no state besides epoch)
    resumed = make()
    resumed.load_state_dict({"epoch": 3, "position": 0})
    assert _flipped_per_epoch(resumed, 1)[0] == e3
    # random flips (the default) are redrawn each epoch: some image keeps its side
    rand = BatchLoader(x.contiguous(), torch.arange(n) % 10, 16, BatchTransform(info, "cpu", flip=True), **opts)
    r0, r1 = _flipped_per_epoch(rand, 2)
    assert any(r0[i] == r1[i] for i in range(n))


def test_alternate_flips_need_the_loader():
    x, y = _images(4)
    tf = BatchTransform(INFO, "cpu", flip=True, flip_mode="alternate")
    with pytest.raises(ValueError, match="flip_mode=alternate"):
        tf(x, y, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("budget", [1 << 30, 0])  # the split normalized once / per batch
@pytest.mark.parametrize("layout", ["contiguous", "size1_channel_stride"])
def test_batches_equal_the_reference_gather_bit_for_bit(monkeypatch, budget, layout):
    """Issue 14's faster device loader (normalize once, index_select) gives the batches of the plain
    recipe `transform(x[idx])` exactly: values, dtype and strides (a size-1 channel's stride picks
    oneDNN's convolution path on a CPU, so a different one would change a run's last bits)."""
    import layerwise.data.loader as loader_mod

    monkeypatch.setattr(loader_mod, "PRENORMALIZE_BYTES", budget)
    if layout == "contiguous":
        x, y = _images(75)
        info = INFO
    else:  # as sklearn's digits arrive: (N, 1, 8, 8) with strides (64, 1, 8, 1)
        g = torch.Generator().manual_seed(1)
        x = torch.randint(0, 17, (75, 8, 8, 1), dtype=torch.uint8, generator=g).permute(0, 3, 1, 2)
        y = torch.randint(0, 10, (75,), generator=g)
        info = DatasetInfo("d", (1, 8, 8), 10, [str(i) for i in range(10)], 16.0, [0.3], [0.37])
    assert x.stride() != (64, 64, 8, 1) or layout == "contiguous"
    for aug in ({}, {"translate": 2, "flip": True}):
        t = BatchTransform(info, "cpu", **aug)
        loader = BatchLoader(x, y, 16, t, shuffle=True, seed=3, augment=bool(aug))
        assert (loader._x_normalized is not None) == (budget > 0)
        for epoch in range(2):
            order = loader.rank_order()
            for i, (xb, yb) in enumerate(loader):
                idx = order[i * 16:(i + 1) * 16]
                ref_x, ref_y = t(x[idx], y[idx], loader_mod._gen(3, epoch, i, loader_mod._AUG_KEY) if aug else None)
                assert torch.equal(xb, ref_x) and torch.equal(yb, ref_y) and xb.dtype == torch.float32
                assert xb.stride() == ref_x.stride(), (epoch, i)

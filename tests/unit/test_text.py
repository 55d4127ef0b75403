import json

import pytest
import torch

import layerwise.data.text  # noqa: F401  (registers the text and shakespeare datasets)
from layerwise.config import DataConfig
from layerwise.data import DataError, load_dataset
from layerwise.data.text import TokenLoader
from layerwise.data.tokenizers import (BPETokenizer, ByteTokenizer, CharTokenizer, build_tokenizer,
                                       load_tokenizer, tokenizer_from_dict)

ODD_TEXT = "  héllo\r\n\twörld — 😀 日本語\n\n x\u00a0y  "  # multi-byte, CR/LF, tabs, runs of spaces
# a small corpus with repeated words, so BPE has merges to learn (about 6 KB)
CORPUS = "".join(f"the {w} sat on the mat; a {w} ran to the {v}.\n"
                 for w in ("cat", "dog", "bird", "fox", "horse", "mouse")
                 for v in ("barn", "house", "field", "river", "hill", "wood", "road", "gate")) * 3


def opts(**kw) -> DataConfig:
    return DataConfig(**{"name": "text", "block_size": 8, **kw})


# ---------------------------------------------------------------- tokenizers

def test_byte_tokenizer_round_trips_any_text():
    tok = ByteTokenizer()
    ids = tok.encode(ODD_TEXT)
    assert tok.vocab_size == 256 and (len(ODD_TEXT), len(ids)) == (31, 45)
    assert ids[:3] == [32, 32, 104] and ids[3:5] == [0xC3, 0xA9]  # 'é' is two bytes
    assert tok.decode(ids) == ODD_TEXT
    assert tok.decode(tok.encode("é")[:1]) == "\ufffd"  # a cut character decodes, replaced
    assert tokenizer_from_dict(json.loads(json.dumps(tok.to_dict()))).encode("é") == [0xC3, 0xA9]


def test_char_tokenizer_is_sorted_and_refuses_unknown_characters(tmp_path):
    tok = build_tokenizer("char", "hello world", 0)
    assert tok.chars == [" ", "d", "e", "h", "l", "o", "r", "w"] and tok.vocab_size == 8
    assert tok.encode("hello") == [3, 2, 4, 4, 5] and tok.decode([7, 5, 6, 4, 1]) == "world"
    with pytest.raises(ValueError, match=r"character 'z' \(U\+007A, at position 4\)"):
        tok.encode("hellz")
    tok.save(tmp_path / "tok.json")
    again = load_tokenizer(tmp_path / "tok.json")
    assert isinstance(again, CharTokenizer) and again.chars == tok.chars


def test_bpe_round_trips_exactly_and_compresses():
    tok = build_tokenizer("bpe", CORPUS, 300)
    assert isinstance(tok, BPETokenizer) and tok.vocab_size == 300
    for text in (CORPUS, ODD_TEXT, "zebra™ never seen\r\n"):  # unseen characters fall back to bytes
        assert tok.decode(tok.encode(text)) == text
    ids = tok.encode(CORPUS)
    assert max(ids) < 300 and len(ids) < 0.4 * len(CORPUS.encode("utf-8"))  # merges learned
    assert tok.encode(" the")[0] >= 256 and len(tok.encode(" the")) == 1


def test_bpe_training_is_deterministic_and_survives_a_round_trip(tmp_path):
    # CORPUS has many pairs of equal count, so this also checks that ties are broken the same way
    a, b = BPETokenizer.train(CORPUS, 300), BPETokenizer.train(CORPUS, 300)
    assert a.hf.get_vocab() == b.hf.get_vocab() and a.to_dict() == b.to_dict()
    a.save(tmp_path / "bpe.json")
    c = load_tokenizer(tmp_path / "bpe.json")
    assert c.vocab_size == 300 and c.encode(CORPUS + ODD_TEXT) == a.encode(CORPUS + ODD_TEXT)


def test_tokenizer_errors_are_clear(tmp_path):
    with pytest.raises(DataError, match="vocab_size=100 is too small.*>= 256"):
        build_tokenizer("bpe", CORPUS, 100)
    with pytest.raises(DataError, match="did you mean 'char'"):
        build_tokenizer("chars", CORPUS, 0)
    with pytest.raises(DataError, match="kind 'wordpiece'"):
        tokenizer_from_dict({"kind": "wordpiece"})
    with pytest.raises(DataError, match="bpe tokenizer is incomplete or corrupt"):
        tokenizer_from_dict({"kind": "bpe", "json": "{not json"})
    with pytest.raises(DataError, match="tok.json' does not exist"):
        load_tokenizer(tmp_path / "tok.json")


# ---------------------------------------------------------------- text datasets

@pytest.fixture
def corpus_dir(tmp_path):
    d = tmp_path / "books"
    d.mkdir()
    (d / "b.txt").write_text("second file: éé\n" * 20, encoding="utf-8")
    (d / "a.txt").write_text("first file\n" * 30, encoding="utf-8")
    (d / "notes.md").write_text("markdown " * 40, encoding="utf-8")
    (d / "sub").mkdir()
    (d / "sub" / "c.txt").write_text("nested " * 40, encoding="utf-8")
    return tmp_path


def test_text_folder_reads_txt_files_by_name_and_splits_nanogpt_style(corpus_dir):
    ds = load_dataset("text", corpus_dir, opts(path="books", tokenizer="char"))
    text = "first file\n" * 30 + "second file: éé\n" * 20  # a.txt then b.txt; no .md, no sub-folder
    n_train = int(len(text) * 0.9)
    assert (len(text), n_train) == (650, 585)
    assert (len(ds.x_train), len(ds.x_test)) == (585, 65)  # char: one token per character
    assert ds.tokenizer.decode(ds.x_train.tolist()) == text[:585]
    assert ds.tokenizer.decode(ds.x_test.tolist()) == text[585:]
    assert ds.x_train.dtype == torch.int64 and ds.y_train is None and ds.y_test is None
    info = ds.info
    assert (info.task, info.in_shape, info.num_classes) == ("lm", (8,), len(set(text)))
    assert (info.classes, info.scale, info.mean, info.std) == ([], 1.0, [], [])
    rebuilt = tokenizer_from_dict(json.loads(json.dumps(info.extra["tokenizer"])))
    assert rebuilt.encode(text) == ds.tokenizer.encode(text)
    files = ds.source["files"]
    assert [f["path"] for f in files] == ["books/a.txt", "books/b.txt"]
    assert [f["bytes"] for f in files] == [330, 360] and [f["chars"] for f in files] == [330, 320]
    assert (ds.source["train_chars"], ds.source["val_chars"]) == (585, 65) and ds.warnings == []


def test_text_from_a_file_and_from_a_glob(corpus_dir):
    one = load_dataset("text", corpus_dir, opts(path="books/b.txt"))  # byte tokenizer by default
    assert one.info.num_classes == 256
    # 288 train characters = 18 whole lines of 16 characters, 18 bytes each ('é' is two bytes)
    assert one.source["train_chars"] == int(320 * 0.9) == 288
    assert (len(one.x_train), len(one.x_test)) == (18 * 18, 2 * 18)
    absolute = load_dataset("text", "unused", opts(path=str(corpus_dir / "books" / "b.txt")))
    assert absolute.x_train.equal(one.x_train)
    glob = load_dataset("text", corpus_dir, opts(path="books/**/*.txt", val_fraction=0.25))
    assert [f["path"] for f in glob.source["files"]] == ["books/a.txt", "books/b.txt", "books/sub/c.txt"]
    assert glob.source["chars"] == 930 and glob.source["train_chars"] == int(930 * 0.75) == 697
    md = load_dataset("text", corpus_dir, opts(path="books/*.md"))
    assert bytes(md.x_train.tolist() + md.x_test.tolist()).decode() == "markdown " * 40


def test_bpe_is_trained_on_the_training_split_only(tmp_path):
    # the train part is only 'ab', the validation part only 'xy': no merge may cover x or y
    (tmp_path / "t.txt").write_text("ab " * 900 + "xy " * 100, encoding="utf-8")
    ds = load_dataset("text", tmp_path, opts(path="t.txt", tokenizer="bpe", vocab_size=300))
    # two merges (a+b, then ' '+ab) exhaust the pairs: 258 ids, fewer than the 300 asked for
    assert ds.source["train_chars"] == 2700 and ds.tokenizer.vocab_size == ds.info.num_classes == 258
    assert len(ds.x_train) == 901  # 'ab', 899 x ' ab', and the final ' '
    assert len(ds.x_test) == 300  # x, y and space stay single bytes
    assert ds.tokenizer.decode(ds.x_test.tolist()) == "xy " * 100


def test_bad_files_are_refused_or_skipped(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "1_good.txt").write_text("good text here\n" * 10, encoding="utf-8")
    (d / "2_empty.txt").write_bytes(b"")
    (d / "3_latin1.txt").write_bytes("caf\u00e9 cr\u00e8me".encode("latin-1"))
    with pytest.raises(DataError, match=r"2_empty.txt' is empty.*on_error=skip"):
        load_dataset("text", tmp_path, opts(path="d"))
    (d / "2_empty.txt").write_bytes("\ufeff".encode("utf-8"))  # only a byte-order mark: still empty
    with pytest.raises(DataError, match=r"2_empty.txt' is empty"):
        load_dataset("text", tmp_path, opts(path="d"))
    with pytest.raises(DataError, match=r"3_latin1.txt' is not valid UTF-8 \(byte 0xe9 at offset 3\).*iconv"):
        load_dataset("text", tmp_path, opts(path="d/3_latin1.txt"))
    ds = load_dataset("text", tmp_path, opts(path="d", on_error="skip"))
    assert ds.warnings == ["skipped text file 'd/2_empty.txt': it is empty",
                           "skipped text file 'd/3_latin1.txt': it is not valid UTF-8 (byte 0xe9 at offset 3)"]
    assert [f["path"] for f in ds.source["files"]] == ["d/1_good.txt"] and ds.source["skipped"] == 2
    assert len(ds.x_train) + len(ds.x_test) == 150
    (d / "1_good.txt").write_bytes(b"")
    with pytest.raises(DataError, match="all 3 text files were skipped"):
        load_dataset("text", tmp_path, opts(path="d", on_error="skip"))


def test_text_path_and_size_errors(tmp_path):
    with pytest.raises(DataError, match="needs data.path"):
        load_dataset("text", tmp_path, opts())
    with pytest.raises(DataError, match="'.*nowhere.txt' does not exist"):
        load_dataset("text", tmp_path, opts(path="nowhere.txt"))
    with pytest.raises(DataError, match="matches no files"):
        load_dataset("text", tmp_path, opts(path="*.txt"))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match="holds no \\*.txt files"):
        load_dataset("text", tmp_path, opts(path="empty_dir"))
    (tmp_path / "short.txt").write_text("x" * 100, encoding="utf-8")  # validation: 10 tokens
    with pytest.raises(DataError, match=r"validation split has 10 tokens.*block_size=16"):
        load_dataset("text", tmp_path, opts(path="short.txt", block_size=16))
    assert len(load_dataset("text", tmp_path, opts(path="short.txt", block_size=9)).x_test) == 10
    with pytest.raises(DataError, match="val_fraction=0.0"):
        load_dataset("text", tmp_path, opts(path="short.txt", val_fraction=0.0))


def test_shakespeare_missing_file_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match=r"tinyshakespeare/input.txt.*LAYERWISE_DATA.*--data.download=true"):
        load_dataset("shakespeare", tmp_path, opts(name="shakespeare"))


def test_tiny_shakespeare_matches_nanogpt_char_numbers():
    from conftest import require_data
    root = require_data("tinyshakespeare/input.txt")
    ds = load_dataset("shakespeare", root, opts(name="shakespeare", tokenizer="char", block_size=256))
    # nanoGPT data/shakespeare_char/prepare.py: vocab 65, 1,003,854 train and 111,540 val tokens
    assert ds.info.num_classes == 65 and ds.tokenizer.chars[:3] == ["\n", " ", "!"]
    assert (len(ds.x_train), len(ds.x_test)) == (1_003_854, 111_540)
    assert ds.tokenizer.decode(ds.x_train[:14].tolist()) == "First Citizen:"
    assert ds.source["files"][0]["bytes"] == 1_115_394
    assert ds.source["files"][0]["sha256"] == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    byte = load_dataset("shakespeare", root, opts(name="shakespeare"))  # ASCII: bytes are characters
    assert byte.x_train.equal(torch.tensor([ord(c) for c in ds.tokenizer.chars])[ds.x_train])


# ---------------------------------------------------------------- TokenLoader

def test_token_loader_gives_shifted_pairs_covering_every_target_once():
    T, W = 8, 13
    tokens = torch.arange(W * T + 1)  # token i has id i, so ids are positions
    ld = TokenLoader(tokens, batch_size=4, block_size=T)
    assert ld.num_examples == 13 and len(ld) == 4
    batches = list(ld)
    assert [tuple(x.shape) for x, _ in batches] == [(4, 8)] * 3 + [(1, 8)]
    for x, y in batches:
        assert x.dtype == y.dtype == torch.int64 and y.equal(x + 1) and y.view(-1).numel() == x.numel()
    targets = torch.cat([y.reshape(-1) for _, y in batches])
    assert targets.tolist() == list(range(1, W * T + 1))  # every token after the first, once, in order
    assert batches[1][0][0, 0].item() == 4 * T and (ld.epoch, ld.position) == (1, 0)
    tail = TokenLoader(torch.arange(W * T + 1 + 5), batch_size=4, block_size=T, drop_last=True)
    assert tail.num_examples == 13 and len(tail) == 3  # the 5-token tail and the short batch dropped


def test_token_loader_shuffles_windows_and_offset_per_epoch():
    T, N = 8, 200
    ld = TokenLoader(torch.arange(N), batch_size=5, block_size=T, shuffle=True, seed=1)
    assert ld.num_examples == (N - T) // T == 24 and len(ld) == 5
    epochs = []
    for _ in range(3):
        starts = torch.cat([x[:, 0] for x, _ in ld])
        offset = starts.min().item() % T
        assert (starts % T == offset).all() and len(set(starts.tolist())) == 24
        assert (starts + T + 1 <= N).all()  # every window fits
        epochs.append((offset, starts.tolist()))
    assert len({o for o, _ in epochs}) > 1 and epochs[0][1] != epochs[1][1]
    again = TokenLoader(torch.arange(N), batch_size=5, block_size=T, shuffle=True, seed=1)
    assert torch.cat([x[:, 0] for x, _ in again]).tolist() == epochs[0][1]  # seeded, reproducible
    short = TokenLoader(torch.arange(12), batch_size=2, block_size=T, shuffle=True)  # N < 2T
    assert short.num_examples == 1 and all(x[0, 0] < 12 - T for x, _ in short)


def test_token_loader_resumes_mid_epoch_exactly():
    tokens = torch.randint(0, 50, (1000,), generator=torch.Generator().manual_seed(0))
    full = TokenLoader(tokens, 6, 16, shuffle=True, seed=7)
    assert len(full) == 11
    run = [b for _ in range(2) for b in full]  # two whole epochs
    other = TokenLoader(tokens, 6, 16, shuffle=True, seed=7)
    other.load_state_dict({"epoch": 1, "position": 4})
    resumed = list(other)
    assert len(resumed) == 7 and other.state_dict() == {"epoch": 2, "position": 0}
    for (xa, ya), (xb, yb) in zip(run[11 + 4:], resumed):
        assert xa.equal(xb) and ya.equal(yb)
    it = iter(full)  # state advances per yielded batch
    next(it), next(it)
    assert full.state_dict() == {"epoch": 2, "position": 2}


def test_token_loader_ranks_split_the_windows():
    T, N = 4, 4 * 23 + 4  # shuffle: 23 windows
    ranks = [TokenLoader(torch.arange(N), 5, T, shuffle=True, seed=2, rank=r, world_size=2) for r in range(2)]
    starts = [torch.cat([x[:, 0] for x, _ in ld]).tolist() for ld in ranks]
    # 12 windows per rank (rank 1's last wraps around to the first of the order): batches of 5, 5, 2
    assert [len(ld) for ld in ranks] == [3, 3] and [len(s) for s in starts] == [12, 12]
    assert len(set(starts[0] + starts[1])) == 23 and starts[1][-1] == starts[0][0]
    single = TokenLoader(torch.arange(N), 5, T, shuffle=True, seed=2)
    order = torch.cat([x[:, 0] for x, _ in single]).tolist()  # the same permutation, interleaved
    assert starts[0] == order[0::2] and starts[1][:11] == order[1::2]
    dropped = [TokenLoader(torch.arange(N), 5, T, shuffle=True, seed=2, rank=r, world_size=2, drop_last=True)
               for r in range(2)]
    assert [len(ld) for ld in dropped] == [2, 2]  # the short batch of 2 dropped on both ranks
    assert torch.cat([x[:, 0] for x, _ in dropped[1]]).tolist() == starts[1][:10]
    view = ranks[1].evaluation_view(7)  # whole split, in order, for evaluation on any rank
    assert (view.num_examples, len(view), view.shuffle) == (23, 4, False)
    assert torch.cat([x[:, 0] for x, _ in view]).tolist() == list(range(0, 92, 4))


def test_token_loader_rejects_bad_arguments():
    with pytest.raises(ValueError, match="1-D"):
        TokenLoader(torch.zeros(4, 4, dtype=torch.long), 2, 2)
    with pytest.raises(ValueError, match="fewer than one window"):
        TokenLoader(torch.arange(8), 2, 8)
    with pytest.raises(ValueError, match="rank 2 is outside"):
        TokenLoader(torch.arange(100), 2, 8, rank=2, world_size=2)

"""The `code` source (files, packages, dedup, whole-file split), BPE on Python source, the stop
rules and syntax check of `generate`, and the GPT's KV cache and token healing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from layerwise.config import DataConfig
from layerwise.data import DataError, load_dataset
from layerwise.data.code import (
    FILE_SEPARATOR,
    join_files,
    package_files,
    parse_error,
    split_files,
)
from layerwise.data.tokenizers import BPETokenizer
from layerwise.models import create_model
from layerwise.tasks.lm import unigram_bits
from layerwise.train.inference import cut_at_stop

# whitespace that must survive tokenization: tabs, runs of spaces, blank lines, trailing spaces, CRLF-free
SOURCE = ('def f(x,  y):\n\t"""Tabs\tand  runs   of spaces."""\n\tif x:\n\t\treturn  y   \n\n\n'
          'class A:\n    def g(self):\n        return {"é": 1, \'中\': [1,\n                    2]}  # é\n\n'
          '    \n        \n\nz = f(1, 2)\\\n    + 3\n')


def _corpus(folder: Path, n: int = 12) -> dict[str, str]:
    """n distinct small modules (one marker each), a copy of the first, an empty __init__, a sub-package."""
    files = {f"pkg/mod{i:02d}.py": f"# marker {i:02d}\n" + f"def fn_{i}(a, b):\n    return a * {i} + b\n" * (i + 3)
             for i in range(n)}
    files["pkg/sub/copy.py"] = files["pkg/mod00.py"]
    files["pkg/__init__.py"] = ""
    files["pkg/sub/deep.py"] = "# marker deep\nimport os\n\n\ndef deep():\n\tpass\n" * 4
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text, encoding="utf-8")
    return files


def _opts(**kw) -> DataConfig:
    return DataConfig(**{"name": "code", "block_size": 8, "tokenizer": "byte", "val_fraction": 0.2, **kw})


def test_code_source_deduplicates_and_splits_by_whole_files(tmp_path):
    files = _corpus(tmp_path)
    ds = load_dataset("code", tmp_path, _opts(path="pkg"))
    s = ds.source
    assert (s["found"], s["duplicates_dropped"], s["empty_dropped"]) == (15, 1, 1)
    assert s["duplicates"] == [{"path": "sub/copy.py", "same_as": "mod00.py"}]
    assert s["train_files"] + s["val_files"] == 13 and s["val_files"] >= 1
    train, val = ds.tokenizer.decode(ds.x_train.tolist()), ds.tokenizer.decode(ds.x_test.tolist())
    assert train.count(FILE_SEPARATOR) == s["train_files"] and val.count(FILE_SEPARATOR) == s["val_files"]
    held = {r["path"] for r in s["files"] if r.get("split") == "validation"}
    for rel, text in files.items():
        if not text or rel == "pkg/sub/copy.py":
            continue
        name = rel.removeprefix("pkg/")
        marker = text.splitlines()[0] + "\n"
        # each file is wholly on one side, never split between them
        assert (marker in val, marker in train) == ((True, False) if name in held else (False, True)), name
        assert text + FILE_SEPARATOR in (val if name in held else train)
    # held out: ~val_fraction of the bytes (at least one file)
    val_bytes = sum(r["bytes"] for r in s["files"] if r.get("split"))
    assert 0.2 <= val_bytes / sum(r["bytes"] for r in s["files"]) < 0.45
    assert ds.info.extra["bytes_per_token"] == 1.0  # byte tokenizer, ASCII text

    # the split depends on relative paths only: the same folder elsewhere, found another way, holds out the same
    other = tmp_path / "elsewhere" / "pkg"
    shutil.copytree(tmp_path / "pkg", other)
    again = load_dataset("code", tmp_path, _opts(path=str(other.parent / "pkg" / "**" / "*.py")))
    assert {r["path"] for r in again.source["files"] if r.get("split")} == held
    assert torch.equal(again.x_test, ds.x_test)


def test_split_files_takes_the_fraction_of_bytes_in_path_hash_order():
    records = [{"path": f"f{i}.py", "bytes": 100} for i in range(20)]
    train, val = split_files(records, 0.25)
    assert len(val) == 5 and sorted(train + val) == list(range(20)) and not set(train) & set(val)
    assert split_files(records, 0.25) == (train, val)  # deterministic
    assert split_files(records[:2], 0.9)[1] and split_files(records[:2], 0.9)[0]  # one file left to train
    with pytest.raises(DataError, match="at least 2"):
        split_files(records[:1], 0.1)
    assert join_files(["a", "b\n"]) == f"a\n{FILE_SEPARATOR}b\n{FILE_SEPARATOR}"


def test_packages_are_found_by_importlib_with_portable_relative_paths(tmp_path):
    base, files = package_files("json")
    rel = sorted(f.relative_to(base).as_posix() for f in files)
    assert "json/__init__.py" in rel and "json/decoder.py" in rel and all(r.startswith("json/") for r in rel)
    base, files = package_files("email.mime")
    assert all(f.relative_to(base).as_posix().startswith("email/mime/") for f in files) and len(files) >= 5
    ds = load_dataset("code", tmp_path, _opts(packages=["json"], val_fraction=0.3))
    assert ds.source["packages"] == {"json": None}  # stdlib: no distribution version
    assert {r["path"] for r in ds.source["files"]} == set(rel)


def test_a_missing_package_or_path_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"'no_such_pkg_xyz', which is not installed.*pip install no_such_pkg_xyz"):
        load_dataset("code", tmp_path, _opts(packages=["no_such_pkg_xyz"]))
    with pytest.raises(DataError, match=r"not installed.*ModuleNotFoundError"):
        load_dataset("code", tmp_path, _opts(packages=["no_such_pkg_xyz.sub"]))
    with pytest.raises(DataError, match="needs source files: data.packages"):
        load_dataset("code", tmp_path, _opts())
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("code", tmp_path, _opts(path="nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"holds no \*\.py files"):
        load_dataset("code", tmp_path, _opts(path="empty"))


def test_a_non_utf8_file_follows_on_error(tmp_path):
    _corpus(tmp_path)
    (tmp_path / "pkg" / "latin.py").write_bytes(b"s = '\xe9t\xe9'\n")
    with pytest.raises(DataError, match=r"latin\.py' is not valid UTF-8.*on_error=skip"):
        load_dataset("code", tmp_path, _opts(path="pkg"))
    ds = load_dataset("code", tmp_path, _opts(path="pkg", on_error="skip"))
    assert ds.source["skipped"] == 1 and "latin.py" in ds.warnings[0]
    assert ds.source["train_files"] + ds.source["val_files"] == 13


def test_bpe_keeps_python_whitespace_exactly():
    tok = BPETokenizer.train(SOURCE * 20, 300)
    for text in (SOURCE, SOURCE + FILE_SEPARATOR + SOURCE, "\t\t  \t\n\n\n   x", "    " * 10 + "\n"):
        assert tok.decode(tok.encode(text)) == text
    ids = tok.encode(SOURCE)
    assert len(ids) < 0.6 * len(SOURCE.encode("utf-8"))  # 44 merges learned: measured 108 tokens for 202 bytes
    # token healing: the extensions of " " are exactly the tokens that start with a space
    space = tok.encode(" ")
    assert len(space) == 1
    ext = tok.extensions(space[0])
    assert space[0] in ext and all(tok.decode([i]).startswith(" ") for i in ext)
    assert len(ext) == sum(tok.hf.id_to_token(i).startswith("Ġ") for i in range(tok.vocab_size)) == 8  # " ", "  ", " f", "...


def test_cut_at_stop_and_top_level_rule():
    text = "def f(x):\n    return x\n\n\nclass A:\n    pass\n"
    assert cut_at_stop(text, ["\n\n\n"], start=4) == ("def f(x):\n    return x", True)
    assert cut_at_stop(text, top_level=True, start=4) == ("def f(x):\n    return x\n\n\n", True)
    assert cut_at_stop(text, ["return"], top_level=True, start=4) == ("def f(x):\n    ", True)
    assert cut_at_stop(text, ["zzz"], start=4) == (text, False)
    assert cut_at_stop("def f", ["def"], start=1) == ("def f", False)  # the prompt itself is not searched
    # a comment or decorator in column 0 also ends the body; indented lines and blank lines do not
    assert cut_at_stop("def g():\n  a\n\n  b\n@dec\n", top_level=True, start=4)[0] == "def g():\n  a\n\n  b\n"


def test_parse_error_reports_the_line_and_refuses_unknown_languages():
    assert parse_error(SOURCE) is None
    assert parse_error("def f(:\n    pass\n") == "SyntaxError: invalid syntax (line 1)"
    assert parse_error("def f():\nreturn 1\n").startswith("IndentationError: expected an indented block")
    assert parse_error("x = 1\x00\n").startswith("SyntaxError") or parse_error("x = 1\x00\n").startswith("ValueError")
    with pytest.raises(ValueError, match="'ruby' is not available"):
        parse_error("puts 1", "ruby")


def test_unigram_bits_by_hand():
    train, ev = torch.tensor([0, 0, 1]), torch.tensor([0, 2])
    # counts + 1 = [3, 2, 1] over 6: -log2(3/6) - log2(1/6)
    assert unigram_bits(train, ev, 3) == pytest.approx(1 + 2.5849625, abs=1e-6)


@pytest.mark.parametrize("rotary", [True, False])
def test_kv_cache_gives_the_same_tokens_and_logits(rotary):
    torch.manual_seed(0)
    m = create_model("gpt", in_shape=(16,), num_classes=50, n_layer=2, n_head=2, n_embd=32, rotary=rotary)
    idx = torch.randint(0, 50, (3, 5))
    cached, plain = m.generate(idx, 30, temperature=0), m.generate(idx, 30, temperature=0, use_cache=False)
    assert torch.equal(cached[:, :17], plain[:, :17])  # within the context of 16 tokens (and the 17th)
    if not rotary:  # learned positions: past the context the cache is dropped and the window recomputed
        assert torch.equal(cached, plain)
    cache = [{} for _ in m.blocks]
    first = m.forward_features(idx[:, :4], cache=cache)
    step = m.forward_features(idx[:, 4:5], cache=cache)
    full = m.forward_features(idx)
    assert torch.allclose(first, full[:, :4], atol=1e-6) and torch.allclose(step[:, 0], full[:, 4], atol=1e-5)
    assert cache[0]["k"].shape == (3, 2, 5, 16) and cache[0]["pos"] == 5
    with pytest.raises(ValueError, match="one token per call"):
        m.forward_features(idx[:, :2], cache=cache)


def test_sliding_kv_cache_keeps_rope_positions_relative():
    # one layer: a cached key depends on its own token and position only, so the sliding window
    # (keys kept at their true positions) equals recomputing the cropped window from position 0
    torch.manual_seed(0)
    m = create_model("gpt", in_shape=(16,), num_classes=50, n_layer=1, n_head=2, n_embd=32, rotary=True)
    idx = torch.randint(0, 50, (3, 5))
    assert torch.equal(m.generate(idx, 40, temperature=0), m.generate(idx, 40, temperature=0, use_cache=False))


def test_generate_stops_early_and_honours_first_allowed():
    torch.manual_seed(0)
    m = create_model("gpt", in_shape=(16,), num_classes=20, n_layer=1, n_head=2, n_embd=16)
    idx = torch.zeros(4, 2, dtype=torch.long)
    out = m.generate(idx, 10, temperature=1.0, finished=lambda x: torch.ones(len(x), dtype=torch.bool))
    assert out.shape == (4, 3)  # every row finished after one token
    allowed = torch.zeros(20, dtype=torch.bool)
    allowed[7] = True
    out = m.generate(idx, 3, temperature=1.0, first_allowed=allowed, generator=torch.Generator().manual_seed(0))
    assert out[:, 2].tolist() == [7, 7, 7, 7] and out.shape == (4, 5)

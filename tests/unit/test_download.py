"""Checksummed, resumable downloads against a local HTTP server (127.0.0.1; never the internet)."""

import gzip
import hashlib
import io
import socket
import struct
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from layerwise.config import DataConfig
from layerwise.data import DataError, load_dataset
from layerwise.data import download as D

BLOB = bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8))


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files`` (name -> bytes); logs each request's Range header in ``server.log``.
    ``server.mode``: "range" honours Range, "plain" ignores it, "cut" sends half and hangs up."""

    def do_GET(self):
        srv = self.server
        name = self.path.lstrip("/")
        srv.log.append((name, self.headers.get("Range")))
        if name not in srv.files:
            self.send_error(404, "Not Found")
            return
        body, status, extra = srv.files[name], 200, {}
        rng = self.headers.get("Range")
        if rng and srv.mode == "range":
            start = int(rng.removeprefix("bytes=").split("-")[0])
            extra["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
            body, status = body[start:], 206
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        if srv.mode == "cut":
            self.wfile.write(body[:len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERWISE_CACHE", str(tmp_path / "cache"))
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.log, srv.mode = {"blob.bin": BLOB}, [], "range"
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/"
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _md5(b):
    return hashlib.md5(b).hexdigest()


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LAYERWISE_CACHE", str(tmp_path / "c"))
    assert D.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("LAYERWISE_CACHE")
    assert D.cache_dir().parts[-2:] == (".cache", "layerwise")


def test_fetch_downloads_into_the_cache_and_verifies(server, tmp_path):
    path = D.fetch(server.url + "blob.bin", sha256=hashlib.sha256(BLOB).hexdigest(), md5=_md5(BLOB))
    assert path == tmp_path / "cache" / "blob.bin" and path.read_bytes() == BLOB
    assert not path.with_name("blob.bin.part").exists()
    assert D.fetch(server.url + "blob.bin", md5=_md5(BLOB)) == path
    assert len(server.log) == 1  # a good file already there is not downloaded again
    dest = tmp_path / "elsewhere" / "b.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"an old, damaged copy")
    assert D.fetch(server.url + "blob.bin", md5=_md5(BLOB), dest=dest).read_bytes() == BLOB


def test_bad_checksum_is_rejected_and_leaves_no_file(server, tmp_path):
    with pytest.raises(DataError, match=rf"blob\.bin: the md5 checksum did not match \(expected 0{{32}}, got "
                                        rf"{_md5(BLOB)}\)\. The download was deleted; run again"):
        D.fetch(server.url + "blob.bin", md5="0" * 32)
    assert list((tmp_path / "cache").iterdir()) == []


def test_an_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    server.mode = "cut"
    with pytest.raises(DataError, match=r"interrupted after 25000 of 50000 bytes; the partial file .* is kept"):
        D.fetch(server.url + "blob.bin", md5=_md5(BLOB))
    part = tmp_path / "cache" / "blob.bin.part"
    assert part.stat().st_size == 25_000 and not (tmp_path / "cache" / "blob.bin").exists()
    server.mode = "range"
    path = D.fetch(server.url + "blob.bin", md5=_md5(BLOB))
    assert server.log[-1] == ("blob.bin", "bytes=25000-")  # only the remaining bytes were asked for
    assert path.read_bytes() == BLOB and not part.exists()


def test_a_server_without_range_support_gives_a_full_download(server, tmp_path):
    server.mode = "plain"
    part = tmp_path / "cache" / "blob.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 1000)  # wrong bytes: appending the rest to them would fail the checksum
    path = D.fetch(server.url + "blob.bin", md5=_md5(BLOB))
    assert server.log == [("blob.bin", "bytes=1000-")] and path.read_bytes() == BLOB


def test_http_and_connection_errors_name_the_url_and_the_manual_route(server, tmp_path):
    url = server.url + "missing.bin"
    with pytest.raises(DataError, match=rf"cannot download {url}: HTTP 404 Not Found\..*by hand.*missing\.bin'"):
        D.fetch(url, dest=tmp_path / "root" / "missing.bin")
    assert not (tmp_path / "root" / "missing.bin").exists()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError, match=rf"cannot download http://127\.0\.0\.1:{port}/x \(.*refused"):
        D.fetch(f"http://127.0.0.1:{port}/x")


def _tar(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            else:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data or b""))
    return buf.getvalue()


@pytest.mark.parametrize("name,why", [("../evil.txt", "'..'"), ("ok/../../evil.txt", "'..'"),
                                      ("/tmp/evil.txt", "absolute path"), ("link", "link")])
def test_unsafe_tar_members_are_refused_before_anything_is_written(tmp_path, name, why):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_tar([("good/one.txt", b"1"), (name, None if why == "link" else b"evil")]))
    out = tmp_path / "out" / "inner"
    with pytest.raises(DataError, match=rf"holds the member '{name}' with .*{why}.*nothing was unpacked"):
        D.extract_tar(archive, out)
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()


def test_download_option_fetches_mnist_idx_and_cifar_binary(server, tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    files = {}
    for s, n in (("train", 4), ("t10k", 2)):
        for kind, arr in (("images", rng.integers(0, 256, (n, 28, 28))), ("labels", rng.integers(0, 10, n))):
            arr = np.asarray(arr, np.uint8)
            raw = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
            files[f"{s}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz"] = gzip.compress(raw)
    server.files.update(files)
    monkeypatch.setitem(D.KNOWN, "mnist", D.Known(
        tuple(D.Remote(server.url + n, md5=_md5(b), dest=f"mnist/{n}") for n, b in files.items()),
        ready=D.KNOWN["mnist"].ready))
    root = tmp_path / "root"
    ds = load_dataset("mnist", root, DataConfig(name="mnist", download=True))
    assert ds.x_train.shape == (4, 1, 28, 28) and len(ds.y_test) == 2
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(files)  # no .part left
    n_requests = len(server.log)
    load_dataset("mnist", root, DataConfig(name="mnist", download=True))
    assert len(server.log) == n_requests  # present and verified: nothing fetched

    batches = {f"cifar-10-batches-bin/{b}": bytes([i % 10]) + bytes(3072) for i, b in
               enumerate([f"data_batch_{j}.bin" for j in range(1, 6)] + ["test_batch.bin"])}
    archive = _tar(sorted(batches.items()))
    server.files["cifar-10-binary.tar.gz"] = archive
    monkeypatch.setitem(D.KNOWN, "cifar10", D.Known((D.Remote(
        server.url + "cifar-10-binary.tar.gz", md5=_md5(archive), unpack="cifar10",
        provides=D.KNOWN["cifar10"].files[0].provides),), ready=D.KNOWN["cifar10"].ready))
    ds = load_dataset("cifar10", root, DataConfig(name="cifar10", download=True))
    assert ds.y_train.tolist() == [0, 1, 2, 3, 4] and ds.y_test.tolist() == [5]
    assert (tmp_path / "cache" / "cifar-10-binary.tar.gz").read_bytes() == archive
    assert [p.name for p in (root / "cifar10").iterdir()] == ["cifar-10-batches-bin"]  # no temp folder left
    assert D.ensure_dataset("digits", root) == []


def test_known_downloads_carry_checksums():
    assert set(D.KNOWN) >= {"mnist", "cifar10", "shakespeare"}
    for known in D.KNOWN.values():
        for r in known.files:
            # every download is checked: by the file's md5, or (ml-100k.zip, published without one)
            # by the sha256 of the members it must hold
            assert r.url.startswith("https://") and (len(r.md5 or "") == 32 or
                                                     (r.verify and all(len(h) == 64 for _, h in r.verify)))
            assert bool(r.dest) != bool(r.unpack)
    assert D.KNOWN["shakespeare"].files[0].dest == "tinyshakespeare/input.txt"


# ------------------------------------------------------------------ ml-100k.zip (synthetic, local)
def _ml_zip(members: dict[str, bytes]) -> bytes:
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, body in members.items():
            zf.writestr(name, body)
    return buf.getvalue()


def _ml_known(monkeypatch, url, sha):
    files = ("movielens/ml-100k/u.data",)
    known = D.Known((D.Remote(url + "ml-100k.zip", unpack="movielens", provides=files,
                              verify=(("ml-100k/u.data", sha),)),))
    monkeypatch.setitem(D.KNOWN, "movielens", known)


def test_movielens_zip_download_verified(server, tmp_path, monkeypatch):
    data = b"1\t1\t5\t1\n"
    server.files["ml-100k.zip"] = _ml_zip({"ml-100k/u.data": data, "ml-100k/u.item": b"1|A|||x|" + b"0|" * 18 + b"0\n"})
    _ml_known(monkeypatch, server.url, hashlib.sha256(data).hexdigest())
    out = D.ensure_dataset("movielens", tmp_path / "root")
    assert (tmp_path / "root/movielens/ml-100k/u.data").read_bytes() == data
    assert out == [tmp_path / "root/movielens/ml-100k/u.data"]


def test_movielens_zip_wrong_hash_and_slip_refused(server, tmp_path, monkeypatch):
    server.files["ml-100k.zip"] = _ml_zip({"ml-100k/u.data": b"1\t1\t5\t1\n"})
    _ml_known(monkeypatch, server.url, "0" * 64)
    with pytest.raises(DataError, match="not the published file"):
        D.ensure_dataset("movielens", tmp_path / "root")
    assert not any((tmp_path / "root").rglob("u.data"))  # nothing half-written
    assert not (tmp_path / "cache" / "ml-100k.zip").exists()  # the bad archive is not kept
    server.files["ml-100k.zip"] = _ml_zip({"../evil.txt": b"x", "ml-100k/u.data": b"1\t1\t5\t1\n"})
    with pytest.raises(DataError, match=r"'\.\.' component"):
        D.ensure_dataset("movielens", tmp_path / "root")
    assert not (tmp_path / "root" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()

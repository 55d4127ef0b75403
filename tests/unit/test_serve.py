"""The prediction server (issue 19): answers equal to `layerwise predict`, dynamic batching, refusals.

Most tests drive the FastAPI app in-process (Starlette's TestClient, which runs the lifespan and so
the batcher); one starts a real `layerwise serve --workers 2` on a free port and stops it with
SIGTERM while requests are in flight.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")  # the TestClient's transport

from fastapi.testclient import TestClient
from PIL import Image

from layerwise.cli import main
from layerwise.data import DatasetInfo
from layerwise.models import create_model
from layerwise.models.pretrained import resolve_pretrained
from layerwise.deploy.batching import DynamicBatcher, ModelError, QueueFull, stack
from layerwise.deploy.server import create_app
from layerwise.train.inference import predict
from layerwise.train.run import save_model

MNIST = "pretrained:mnist-convnet"
SRC = str(Path(__file__).resolve().parents[2] / "src")


def _digits() -> np.ndarray:
    """(3, 28, 28) raw 0..255 strokes on a dark ground: a vertical bar, a cross, a box."""
    x = np.zeros((3, 28, 28), np.float32)
    x[0, 5:23, 12:16] = 255
    x[1, 12:16, 4:24] = 255
    x[1, 4:24, 12:16] = 255
    x[2, 6:22, 6:9] = x[2, 6:22, 19:22] = x[2, 6:9, 6:22] = x[2, 19:22, 6:22] = 255
    return x


def _same(got: list[dict], want: list[dict], names: list[str]) -> None:
    """Server predictions equal `predict`'s: same classes in the same order, probabilities to 1e-5
    (a batched forward may round differently from a forward of one)."""
    assert [g["input"] for g in got] == names
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert [t["class"] for t in g["top"]] == [t["class"] for t in w["top"]]
        assert [t["probability"] for t in g["top"]] == pytest.approx([t["probability"] for t in w["top"]], abs=1e-5)


@pytest.fixture(scope="module")
def client():
    torch.set_num_threads(1)
    app = create_app(MNIST, device="cpu", max_upload_mb=0.25, max_examples=8, max_wait_ms=50)
    with TestClient(app) as c:
        yield c


def test_json_arrays_and_uploads_answer_as_predict_does(tmp_path, client):
    model = str(resolve_pretrained(MNIST))
    x = _digits()
    np.save(tmp_path / "three.npy", x)
    want = predict(model, [str(tmp_path / "three.npy")], top_k=3, device="cpu")
    r = client.post("/predict", json={"inputs": x.tolist()})
    assert r.status_code == 200
    _same(r.json()["predictions"], want, ["inputs[0]", "inputs[1]", "inputs[2]"])
    assert [p["top"][0]["class"] for p in r.json()["predictions"]] == ["1", "4", "0"]
    # one example as (H, W), top_k 1
    r = client.post("/predict", json={"inputs": x[0].tolist(), "top_k": 1}).json()["predictions"]
    assert len(r) == 1 and len(r[0]["top"]) == 1 and r[0]["top"][0]["class"] == want[0]["top"][0]["class"]
    # the same array as a .npy upload, and a PNG drawn dark on light (inverted, as predict does)
    r = client.post("/predict", files={"file": ("three.npy", (tmp_path / "three.npy").read_bytes())})
    _same(r.json()["predictions"], want, ["three.npy[0]", "three.npy[1]", "three.npy[2]"])
    Image.fromarray((255 - x[2]).astype(np.uint8)).resize((56, 56)).save(tmp_path / "box.png")
    want_png = predict(model, [str(tmp_path / "box.png")], top_k=2, device="cpu")
    r = client.post("/predict", files={"file": ("box.png", (tmp_path / "box.png").read_bytes(), "image/png")},
                    data={"top_k": "2"})
    assert r.status_code == 200, r.text
    _same(r.json()["predictions"], want_png, ["box.png"])
    assert want_png[0]["top"][0]["class"] == "0"


def test_metadata_and_health(client):
    m = client.get("/metadata").json()
    assert m["task"] == "classify" and m["classes"] == [str(i) for i in range(10)]
    assert m["input"] == {"kind": "array", "shape": [1, 28, 28], "json_field": "inputs",
                          "files": m["input"]["files"]} and ".png" in m["input"]["files"]
    assert m["preprocessing"]["raw_scale"] == 255.0 and m["preprocessing"]["mean"] == [0.1307]
    assert m["settings"]["max_batch"] == 32 and m["settings"]["max_examples"] == 8
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["failed_batches"] == 0


def test_bad_requests_get_a_4xx_that_names_the_fix_and_the_server_keeps_serving(client):
    ok = _digits()[0].tolist()
    png = io.BytesIO()
    Image.new("L", (8, 8)).save(png, format="PNG")
    cases = [
        ({"content": b"{oops", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
        ({"content": b'{"inputs": [[NaN]]}', "headers": {"content-type": "application/json"}}, 422, "NaN"),
        ({"content": json.dumps({"inputs": ok}).replace("0.0", "1e999", 1).encode(),
          "headers": {"content-type": "application/json"}}, 422, "NaN or Inf"),
        ({"json": {"inputs": ok, "image": 1}}, 422, r"unknown field\(s\) 'image'.*'inputs', 'top_k'"),
        ({"json": {"texts": ["hi"]}}, 422, "'texts' is for another kind of model"),
        ({"json": {"inputs": [[1, 2], [3, 4]]}}, 422, r"shape \(2, 2\).*\(1, 28, 28\)"),
        ({"json": {"inputs": [[1, 2], [3]]}}, 422, "not a rectangular array"),
        ({"json": {"inputs": [["a"] * 28] * 28}}, 422, "numeric array"),
        ({"json": {"inputs": ok, "top_k": 0}}, 422, "top_k must be an integer >= 1"),
        ({"json": [1, 2]}, 422, "must be an object"),
        ({"json": {}}, 422, "lacks 'inputs'"),
        ({"json": {"inputs": [ok] * 9}}, 413, "9 examples.*limit of 8.*--max-examples"),
        ({"json": {"inputs": [[[0.5] * 28] * 28] * 8, "pad": "x" * 300_000}}, 413, "--max-upload-mb"),
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "application/json"),
        ({"files": {"file": ("cat.png", b"\x89PNG\r\n\x1a\nnot really")}}, 400, "'cat.png' is not a readable image"),
        ({"files": {"file": ("ok.png", png.getvalue())}, "data": {"colour": "red"}}, 422, "unknown form field"),
        ({"files": {"file": ("ok.png", png.getvalue())}, "data": {"invert": "maybe"}}, 422, "invert must be"),
        ({"files": {"top_k": (None, "2")}}, 422, "no file"),  # multipart with a field only
        ({"data": {"top_k": "2"}}, 415, "multipart/form-data"),  # a urlencoded form
    ]
    for kw, status, pattern in cases:
        r = client.post("/predict", **kw)
        assert r.status_code == status, (pattern, r.status_code, r.text)
        assert re.search(pattern, r.json()["detail"]), (pattern, r.json()["detail"])
    r = client.post("/predict", json={"inputs": ok})
    assert r.status_code == 200 and r.json()["predictions"][0]["top"][0]["class"] == "1"
    assert client.get("/health").json()["failed_batches"] == 0  # nothing bad reached the model


def test_a_failing_model_answers_500_and_the_next_batch_is_served(client):
    predictor = client.app.state.predictor
    model = predictor.run.model

    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("out of memory (simulated)")

    predictor.run.model = Broken()
    try:
        r = client.post("/predict", json={"inputs": _digits()[0].tolist()})
        assert r.status_code == 500 and "the model failed" in r.json()["detail"] and "simulated" in r.json()["detail"]
    finally:
        predictor.run.model = model
    r = client.post("/predict", json={"inputs": _digits()[0].tolist()})
    assert r.status_code == 200 and client.get("/health").json()["failed_batches"] == 1


@pytest.mark.parametrize("inline", [True, False])  # the CPU's way, and a GPU's (a worker thread)
def test_batcher_stacks_queued_requests_up_to_max_batch_and_splits_the_answers(inline):
    calls = []

    def forward(x, top_ks, sizes):
        calls.append(sizes)
        if (x < 0).any():
            raise RuntimeError("negative input")
        out, i = [], 0
        for n in sizes:
            out.append([{"sum": float(v)} for v in x[i:i + n].sum(1)])
            i += n
        return out

    async def run():
        b = DynamicBatcher(forward, max_batch=4, max_wait_s=0.0, inline=inline)
        b.start()
        sizes = [1, 1, 2, 1, 3, 1]
        reqs = [torch.full((n, 2), float(k)) for k, n in enumerate(sizes)]
        got = await asyncio.gather(*(b.submit(x, 3) for x in reqs))
        # a failing batch fails its own requests only
        bad = await asyncio.gather(b.submit(torch.full((1, 2), -1.0), 3), return_exceptions=True)
        after = await b.submit(torch.ones(2, 2), 3)
        await b.stop()
        return got, bad, after, b

    got, bad, after, b = asyncio.run(run())
    assert calls[:3] == [[1, 1, 2], [1, 3], [1]]  # queued requests share forwards, none split across two
    assert [[r["sum"] for r in g] for g in got] == [[0.0], [2.0], [4.0, 4.0], [6.0], [8.0] * 3, [10.0]]
    assert isinstance(bad[0], ModelError) and "negative input" in str(bad[0])
    assert after == [{"sum": 2.0}, {"sum": 2.0}] and (b.batches, b.failures, b.examples) == (4, 1, 11)


def test_batcher_waits_only_for_requests_on_their_way():
    def forward(x, top_ks, sizes):
        return [[{"n": n}] * n for n in sizes]

    async def run():
        b = DynamicBatcher(forward, max_batch=8, max_wait_s=0.4, inline=True)
        b.start()
        t = time.perf_counter()
        await b.submit(torch.zeros(1, 1), 1)  # alone: answered without the wait
        alone = time.perf_counter() - t

        async def late():
            with b.arriving():  # a request being decoded: the batch waits for it
                await asyncio.sleep(0.05)
                return await b.submit(torch.zeros(2, 1), 1)

        task = asyncio.create_task(late())
        await asyncio.sleep(0.01)
        first = await b.submit(torch.zeros(1, 1), 1)
        second = await task
        await b.stop()
        return alone, first, second, b.batches

    alone, first, second, batches = asyncio.run(run())
    assert alone < 0.2 and first == [{"n": 1}] and second == [{"n": 2}] * 2
    assert batches == 2  # the lone one, then the two requests together


def test_batcher_refuses_beyond_max_queue_and_after_stop():
    def forward(x, top_ks, sizes):
        return [[{"n": n}] * n for n in sizes]

    async def run():
        b = DynamicBatcher(forward, max_batch=8, max_wait_s=0.0, max_queue=1, inline=True)
        b.start()
        # both submits run before the batcher's loop wakes: the second finds the queue full
        got = await asyncio.gather(b.submit(torch.zeros(1, 1), 1), b.submit(torch.zeros(1, 1), 1),
                                   return_exceptions=True)
        await b.stop()
        late = await asyncio.gather(b.submit(torch.zeros(1, 1), 1), return_exceptions=True)
        return got, late

    got, late = asyncio.run(run())
    assert got[0] == [{"n": 1}] and isinstance(got[1], QueueFull) and "--max-queue" in str(got[1])
    assert isinstance(late[0], ModelError) and "shutting down" in str(late[0])


def test_stack_pads_token_ids_to_the_longest():
    x = stack([torch.tensor([[5, 6, 7]]), torch.tensor([[1], [2]])])
    assert x.tolist() == [[5, 6, 7], [1, 0, 0], [2, 0, 0]]


def _save(path: Path, model: torch.nn.Module, info: DatasetInfo) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    save_model(path / "model.safetensors", model, {"model": model.config, "data": info.to_dict(),
                                                   "task": {"name": "classify"}})
    return path


def test_text_model_takes_json_texts_and_text_files(tmp_path):
    from layerwise.data.tokenizers import build_tokenizer

    tok = build_tokenizer("word", "a good film . a bad film . fine acting , dull plot .", 50)
    info = DatasetInfo("text-classes", (8,), 2, ["neg", "pos"], 1.0, [0.0], [1.0],
                       extra={"tokenizer": tok.to_dict(), "text": {"max_length": 8, "pad_id": 0, "id_offset": 1}})
    torch.manual_seed(0)
    m = create_model("text-transformer", in_shape=(8,), num_classes=2, vocab_size=tok.vocab_size + 1, n_layer=1,
                     n_head=2, n_embd=16, dropout=0.0)
    run = _save(tmp_path / "text", m, info)
    (tmp_path / "s.txt").write_text("a good film\n\nfine acting , dull plot\n")
    want = predict(str(run), [str(tmp_path / "s.txt")], top_k=2, device="cpu")
    with TestClient(create_app(str(run), device="cpu", top_k=2)) as c:
        r = c.post("/predict", json={"texts": ["a good film", "fine acting , dull plot"]})
        _same(r.json()["predictions"], want, ["texts[0]", "texts[1]"])
        r = c.post("/predict", files={"f": ("s.txt", (tmp_path / "s.txt").read_bytes())})
        _same(r.json()["predictions"], want, ["s.txt:1", "s.txt:3"])
        r = c.post("/predict", json={"texts": ["ok", "  "]})
        assert r.status_code == 422 and "texts[1]' is blank" in r.json()["detail"]
        assert c.get("/metadata").json()["input"]["json_field"] == "texts"


def test_table_model_takes_json_rows_as_csv_rows(tmp_path):
    from layerwise.config import DataConfig
    from layerwise.data import load_dataset

    rows = [f"{20 + i},{['red', 'green', 'blue'][i % 3]},{0.5 * i},{'yes' if i % 4 == 0 else 'no'}" for i in range(20)]
    (tmp_path / "t.csv").write_text("age,colour,size,label\n" + "\n".join(rows) + "\n")
    info = load_dataset("csv", tmp_path, DataConfig(name="csv", path=str(tmp_path / "t.csv"))).info
    torch.manual_seed(0)
    run = _save(tmp_path / "table", create_model("mlp", in_shape=info.in_shape, num_classes=2, depth=1, width=8), info)
    (tmp_path / "new.csv").write_text("age,colour,size\n31,green,2.5\n44,blue,7\n")
    want = predict(str(run), [str(tmp_path / "new.csv")], top_k=2, device="cpu")
    with TestClient(create_app(str(run), device="cpu", top_k=2)) as c:
        r = c.post("/predict", json={"rows": [{"age": 31, "colour": "green", "size": 2.5},
                                              {"age": 44, "colour": "blue", "size": 7}]})
        _same(r.json()["predictions"], want, ["rows[0]", "rows[1]"])
        pre = c.get("/metadata").json()["preprocessing"]  # enough to write a row: the numbers, the categories
        assert pre["columns"] == ["age", "colour", "size"] and pre["numeric_columns"] == ["age", "size"]
        assert pre["categories"] == {"colour": ["blue", "green", "red"]}
        r = c.post("/predict", json={"rows": {"age": 31, "colour": "green"}})
        assert r.status_code == 422 and "size" in r.json()["detail"]
        r = c.post("/predict", json={"rows": [{"age": [1], "colour": "red", "size": 1}]})
        assert r.status_code == 422 and "rows[0]['age'] is a list" in r.json()["detail"]


def test_cli_refuses_what_it_cannot_serve(tmp_path, capsys):
    cases = [
        (["serve", str(tmp_path / "nothing"), "--device", "cpu"], 1, "does not exist"),
        (["serve", "pretrained:shakespeare-gpt", "--device", "cpu"], 1, "language model.*layerwise generate"),
        (["serve", MNIST, "--max-batch", "0", "--device", "cpu"], 2, "--max-batch must be an integer >= 1"),
        (["serve", MNIST, "--workers", "0"], 2, "--workers must be an integer >= 1"),
    ]
    with socket.socket() as held:  # a port another program listens on
        held.bind(("127.0.0.1", 0))
        held.listen()
        cases.append((["serve", MNIST, "--port", str(held.getsockname()[1]), "--device", "cpu"], 2,
                      "cannot listen on 127.0.0.1:.*choose another port with --port"))
        for argv, code, pattern in cases:
            assert main(argv) == code, argv
            assert re.search(pattern, capsys.readouterr().err), pattern
    import layerwise
    with pytest.raises(TypeError, match="max_batches"):
        layerwise.serve(MNIST, max_batches=3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_response(s: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(1 << 16)
    head, body = data.split(b"\r\n\r\n", 1)
    n = int(next(ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")))
    while len(body) < n:
        chunk = s.recv(1 << 16)
        if not chunk:
            break
        body += chunk
    return int(head.split()[1]), json.loads(body)


def test_sigterm_lets_requests_in_flight_finish_with_two_workers():
    port = _free_port()
    env = os.environ | {"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "layerwise", "serve", MNIST, "--port", str(port), "--workers", "2",
                          "--device", "cpu"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 90
        while True:
            assert p.poll() is None and time.time() < deadline, p.stdout.read().decode()[-2000:]
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                    if _read_response(s)[0] == 200:
                        break
            except OSError:
                time.sleep(0.3)
        x = (np.random.default_rng(0).random((256, 28, 28)) * 255).round()
        body = json.dumps({"inputs": x.tolist()}).encode()
        req = (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
               f"\r\n\r\n").encode() + body
        socks = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(6)]
        for s in socks:
            s.sendall(req)
        time.sleep(0.3)
        sent = time.time()
        p.send_signal(signal.SIGTERM)
        answers = [(*_read_response(s), time.time() - sent) for s in socks]
        assert [a[0] for a in answers] == [200] * 6
        assert all(len(a[1]["predictions"]) == 256 for a in answers)
        assert max(a[2] for a in answers) > 0.05  # some were still being answered after the signal
        assert p.wait(timeout=60) == 0
    finally:
        if p.poll() is None:
            p.kill()
        for s in locals().get("socks", []):
            s.close()


def test_the_workers_listening_socket_gives_connections_tcp_nodelay():
    """--workers N shares one listening socket; uvicorn's own has protocol 0, asyncio then skips
    TCP_NODELAY on the connections it accepts, and each answer waited 40 ms for the client's delayed
    ACK (44 ms median per request at concurrency 1 with two workers, 2 ms with one)."""
    import asyncio

    from layerwise.deploy.server import listening_socket

    async def accepted_nodelay(sock) -> int:
        seen: list[int] = []

        def on_connect(reader, writer):
            s = writer.get_extra_info("socket")
            seen.append(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connect, sock=sock)
        async with server:
            _, w = await asyncio.open_connection(*sock.getsockname()[:2])
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.01)
            w.close()
        return seen[0]

    with listening_socket("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP
        assert asyncio.run(accepted_nodelay(sock)) == 1
    plain = socket.socket(socket.AF_INET)  # as uvicorn's Config.bind_socket makes it: what went wrong
    plain.bind(("127.0.0.1", 0))
    assert asyncio.run(accepted_nodelay(plain)) == 0


def test_upload_refusals_name_the_real_problem(client):
    """More files than --max-examples is 413 naming the limit (not 'cannot be parsed'); a part without
    a filename gets told to send a filename; a compressed body gets told to send it uncompressed."""
    import gzip

    png = io.BytesIO()
    Image.new("L", (28, 28)).save(png, "PNG")
    r = client.post("/predict", files=[("f", (f"{i}.png", png.getvalue())) for i in range(9)])
    assert r.status_code == 413 and "--max-examples" in r.json()["detail"], r.text
    r = client.post("/predict", files={"file": (None, png.getvalue())})  # a part with no filename
    assert r.status_code == 422 and "without a filename" in r.json()["detail"], r.text
    body = gzip.compress(json.dumps({"inputs": _digits()[0].tolist()}).encode())
    r = client.post("/predict", content=body, headers={"content-type": "application/json",
                                                       "content-encoding": "gzip"})
    assert r.status_code == 415 and "Content-Encoding gzip" in r.json()["detail"], r.text
    r = client.post("/predict", content='{"inputs": [], "caf\xe9": 1}'.encode("latin-1"),
                    headers={"content-type": "application/json; charset=latin-1"})
    assert r.status_code == 400 and "not UTF-8" in r.json()["detail"], r.text
    assert client.post("/predict", json={"inputs": _digits()[0].tolist()}).status_code == 200


def test_a_body_slower_than_timeout_s_gets_408():
    """A client that stalls mid-body (slowloris) is answered 408 after --timeout-s, not held forever."""
    import httpx

    app = create_app(MNIST, device="cpu", timeout_s=0.5)

    async def stalled():
        yield b'{"inputs": '
        await asyncio.sleep(5)
        yield b"[]}"

    async def go():
        async with (app.router.lifespan_context(app),
                    httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c):
            t0 = time.perf_counter()
            r = await c.post("/predict", content=stalled(), headers={"content-type": "application/json"})
            return r, time.perf_counter() - t0

    r, took = asyncio.run(go())
    assert r.status_code == 408 and "--timeout-s" in r.json()["detail"] and took < 3, (r.text, took)


def test_a_client_that_disconnects_mid_body_is_no_server_error():
    """A client gone mid-body (ClientDisconnect) ends as a plain 4xx, not an 'Exception in ASGI application'."""
    app = create_app(MNIST, device="cpu")
    messages = [{"type": "http.request", "body": b'{"inputs": [', "more_body": True}, {"type": "http.disconnect"}]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/predict", "raw_path": b"/predict", "root_path": "", "query_string": b"",
             "headers": [(b"host", b"t"), (b"content-type", b"application/json"), (b"content-length", b"1000")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))  # raised ClientDisconnect before
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 400


def test_head_on_health_and_metadata_is_answered(client):
    """Uptime probes and load balancers often send HEAD: 200 without a body, not 405."""
    for path in ("/health", "/metadata"):
        r = client.head(path)
        assert r.status_code == 200 and r.content == b"", (path, r.status_code)
    assert client.head("/predict").status_code == 405 and client.get("/nope").status_code == 404


def test_a_channels_last_array_is_told_to_transpose_not_reshape():
    """An RGB image as numpy/PIL hold it, (H, W, C), is refused with the transpose that fixes it:
    'Reshape the array' would have led the client to scramble the pixels into a wrong answer."""
    from layerwise.data.datasets import DataError
    from layerwise.data.inputs import array_examples

    info = DatasetInfo("cifar10", (3, 32, 32), 10, [str(i) for i in range(10)], 255.0, [0.5] * 3, [0.25] * 3)
    for shape, order in (((32, 32, 3), "transpose(2, 0, 1)"), ((4, 32, 32, 3), "transpose(0, 3, 1, 2)")):
        with pytest.raises(DataError, match=re.escape(order)):
            array_examples(np.zeros(shape, np.uint8), info, "'inputs'")
    with pytest.raises(DataError, match="Reshape the array"):
        array_examples(np.zeros((31, 32, 3), np.uint8), info, "'inputs'")
    assert array_examples(np.zeros((3, 32, 32)), info, "'inputs'").shape == (1, 3, 32, 32)


def test_threads_below_one_is_refused_with_the_flag_named(capsys):
    """--threads 0 ended in torch's RuntimeError traceback (set_num_threads expects a positive integer)."""
    for value in ("0", "-2"):
        assert main(["serve", MNIST, "--threads", value, "--device", "cpu", "--port", "0"]) == 2
        assert "--threads must be an integer >= 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--threads"):
        create_app(MNIST, device="cpu", threads=0)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_port_0_prints_the_port_it_listens_on(workers):
    """--port 0 ('any free port') printed http://127.0.0.1:0, and with --workers 2 nothing said the real
    port: the server could not be reached. The start-up line now names the bound port."""
    env = os.environ | {"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "layerwise", "serve", MNIST, "--port", "0", "--workers", workers,
                          "--device", "cpu"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = p.stdout.readline()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)", line).group(1))
        assert port != 0, line
        deadline = time.time() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    status, body = _read_response(s)
                break
            except (ConnectionError, OSError):
                assert time.time() < deadline, "the server did not answer"
                time.sleep(0.2)
        assert status == 200 and body["status"] == "ok"
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=60) == 0


def test_a_worker_that_cannot_load_the_run_says_so_without_a_traceback(tmp_path, monkeypatch, capsys):
    """--workers N: uvicorn starts a dead worker again, which loads the run from disk; a run deleted
    meanwhile printed a RunDirError traceback on every restart. Now one paragraph and exit code 1."""
    from layerwise.deploy.server import ENV_SETTINGS, app_from_env

    monkeypatch.setenv(ENV_SETTINGS, json.dumps({"run": str(tmp_path / "gone"), "device": "cpu"}))
    with pytest.raises(SystemExit) as e:
        app_from_env()
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "could not load the model" in err and "does not exist" in err and "Traceback" not in err


def test_workers_load_a_private_copy_of_the_run(tmp_path, monkeypatch):
    """--workers N: a worker that uvicorn starts again after a crash loads the run from disk; with the
    run's model.safetensors overwritten meanwhile it served the new model beside the old one. The
    workers now load a copy serve() takes first, removed when the server stops."""
    import layerwise.deploy.server as srv
    from layerwise.train.run import read_weights

    run = tmp_path / "run"
    run.mkdir()
    torch.manual_seed(0)
    _save(run, create_model("mlp", in_shape=(4,), num_classes=2, width=8, depth=1),
          DatasetInfo("t", (4,), 2, ["a", "b"], 1.0, [0.0] * 4, [1.0] * 4, extra={"table": {"columns": list("wxyz")}}))
    (run / "config.yaml").write_text("run:\n  name: t\n")
    seen = {}

    def fake_supervise(*args):  # what the workers would be started with, and the copy while they run
        source = json.loads(os.environ[srv.ENV_SETTINGS])["run"]
        seen["source"] = source
        seen["files"] = sorted(p.name for p in Path(source).iterdir())
        original = {k: v.clone() for k, v in read_weights(run)[1].items()}  # not views of the file's pages
        (run / "model.safetensors").write_bytes(b"overwritten by another training run")  # the run changes
        assert all(torch.equal(original[k], v) for k, v in read_weights(source)[1].items())

    monkeypatch.setattr(srv, "_supervise", fake_supervise)
    monkeypatch.setattr(srv, "_check_port", lambda host, port: None)
    srv.serve(str(run), workers=2, device="cpu")
    assert seen["files"] == ["config.yaml", "model.safetensors"] and Path(seen["source"]).name == "run"
    assert not Path(seen["source"]).exists()  # removed with the server

"""`layerwise serve`'s dynamic batching against a per-request endpoint, under load on 127.0.0.1 (issue 19).

Two servers, started one after the other in their own processes on free ports, serve the same
model (default: the shipped MNIST convnet, pretrained:mnist-convnet):

  batched      `layerwise serve`'s app (layerwise.deploy.server.create_app): requests within
               --max-wait-ms share one forward of up to --max-batch examples.
  per-request  a minimal hand-written FastAPI endpoint (baseline_app below): a pydantic body, its
               array to a tensor through numpy, normalized, one forward per request (in FastAPI's
               thread pool, as a plain `def` endpoint runs), the top classes back as JSON written
               with json.dumps. It gets the same model from open_run, in the same memory format
               (channels_last when the batched server uses it), on the same ASGI stack (uvicorn
               with httptools), so that batching is what differs.

Each is loaded at concurrency 1, 8 and 32 by a small asyncio HTTP/1.1 client in this process
(one keep-alive connection per concurrent client, requests built once, responses parsed only for
their status and top class), which costs far less CPU per request than an HTTP library would.
Every request is one MNIST-sized example (a 28x28 JSON array of raw 0..255 values); every answer's
top class is checked against the model's own prediction for that example computed here.

Reported per server and concurrency: requests per second (wall clock), p50 and p99 latency (ms),
the server process's CPU time per request (user + system from /proc: the figure that the other
load on a shared machine disturbs least) and, for the batched server, the mean forward batch.
Ratios batched / per-request are printed at each concurrency.

Then a stress run against the batched server: good requests mixed with malformed ones (invalid
JSON, NaN, a wrong shape, an unknown field, strings, a body over --max-upload-mb, a garbage image
upload, a wrong content type). Passing: zero 5xx, every malformed request refused with a 4xx,
every good one answered with the right class.

Before the servers, the forward alone: CPU milliseconds per forward at batch 1 and 32, in the
default memory format and in channels_last (process time, one thread).

Threads are pinned (torch.set_num_threads(--threads), default 1, in each server process) so that
the comparison is not one of thread counts on a shared machine. Both servers may use every core:
the per-request endpoint through FastAPI's thread pool (torch releases the GIL inside its ops), the
batched one as `layerwise serve --workers N` (default one worker process per core on the CPU, each
batching the requests of the connections it accepted; one process on a GPU).

    PYTHONPATH=src python benchmarks/serve_load.py [--run pretrained:mnist-convnet] [--requests 600]
        [--concurrency 1,8,32] [--threads 1] [--workers N] [--max-batch 32] [--max-wait-ms 5] [--json OUT.json]
"""

# no `from __future__ import annotations`: FastAPI reads the baseline endpoint's annotation (a local class)

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

# ------------------------------------------------------------------------------------- the servers


def baseline_app(run_source: str, channels_last: bool, device: str = "cpu"):
    """The per-request endpoint: what one writes by hand around a model, one forward per request."""
    import numpy as np
    import torch
    from fastapi import FastAPI, HTTPException, Response
    from pydantic import BaseModel

    from layerwise.data.inputs import prepare_inputs
    from layerwise.insight.runs import open_run

    run = open_run(run_source, device)
    if channels_last:
        run.model.to(memory_format=torch.channels_last)

    class Body(BaseModel):
        inputs: list
        top_k: int = 3

    app = FastAPI()

    @app.post("/predict")
    def predict(body: Body) -> Response:  # a plain `def`: FastAPI runs it in its thread pool
        try:
            x = torch.from_numpy(np.asarray(body.inputs, dtype=np.float32)).reshape(-1, *run.info.in_shape)
        except (ValueError, RuntimeError, TypeError) as e:
            raise HTTPException(422, str(e)) from None
        with torch.inference_mode():
            xb = prepare_inputs(x, run.info, run.device)
            out = run.model(xb.contiguous(memory_format=torch.channels_last) if channels_last else xb)
        return Response(json.dumps({"predictions": run.task.present(out, body.top_k)}), media_type="application/json")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    return app


def _server_main(args: argparse.Namespace) -> None:
    import torch
    import uvicorn

    torch.set_num_threads(args.threads)
    if args.server == "batched" and args.workers > 1:  # `layerwise serve --workers N` itself
        from layerwise.deploy.server import serve

        return serve(args.run, "127.0.0.1", args.port, workers=args.workers, threads=args.threads, device=args.device,
                     max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, log_level="warning")
    if args.server == "batched":
        from layerwise.deploy.server import create_app

        app = create_app(args.run, device=args.device, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                         threads=args.threads)
    else:
        app = baseline_app(args.run, args.channels_last == "yes", args.device)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server in its own process (this file with --server KIND), ready when /health answers."""

    def __init__(self, kind: str, args: argparse.Namespace, channels_last: bool = False):
        self.port = free_port()
        self.workers = args.workers if kind == "batched" else 1
        cmd = [sys.executable, __file__, "--server", kind, "--port", str(self.port), "--run", args.run,
               "--threads", str(args.threads), "--device", args.device, "--max-batch", str(args.max_batch), "--max-wait-ms",
               str(args.max_wait_ms), "--channels-last", "yes" if channels_last else "no",
               "--workers", str(args.workers if kind == "batched" else 1)]
        env = os.environ | {"OMP_NUM_THREADS": str(args.threads)}
        self.proc = subprocess.Popen(cmd, env=env)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the {kind} server exited with code {self.proc.returncode}")
            try:
                status, _ = asyncio.run(_one(self.port, _request("GET", "/health")))
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"the {kind} server did not answer /health within 120 s")

    def cpu_seconds(self) -> float:
        """user + system CPU seconds so far of the server process and its worker processes
        (/proc/PID/stat of each process in the tree)."""
        total, todo = 0, [self.proc.pid]
        while todo:
            pid = todo.pop()
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo += [int(c) for c in (task / "children").read_text().split()]
            except (OSError, ValueError):  # a process that exited meanwhile
                continue
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(timeout=60)

# ------------------------------------------------------------------------------------- the client


def _request(method: str, path: str, body: bytes = b"", ctype: str = "application/json") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if method == "POST":
        head += f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next((int(ln.split(":", 1)[1]) for ln in lines if ln.lower().startswith("content-length:")), 0)
    return status, await reader.readexactly(length)


async def _one(port: int, req: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(req)
        await writer.drain()
        return await _read_response(reader)
    finally:
        writer.close()


def _top_class(body: bytes) -> list[int]:
    return [p["top"][0]["index"] for p in json.loads(body)["predictions"]]


async def load(port: int, requests: list[tuple[bytes, int | None]], concurrency: int) -> dict:
    """Send ``requests`` ((bytes, expected class or None for a malformed one)) over ``concurrency``
    keep-alive connections; returns latencies (s), statuses and the count of wrong answers."""
    queue: asyncio.Queue = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)
    lat, statuses, wrong = [], [], []

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while not queue.empty():
                req, want = queue.get_nowait()
                for attempt in (0, 1):  # a connection the server closed (after refusing a body) is reopened once
                    t = time.perf_counter()
                    try:
                        writer.write(req)
                        await writer.drain()
                        status, body = await _read_response(reader)
                        break
                    except (asyncio.IncompleteReadError, ConnectionError):
                        writer.close()
                        reader, writer = await asyncio.open_connection("127.0.0.1", port)
                        status, body = 0, b""
                lat.append(time.perf_counter() - t)
                statuses.append((status, want is not None))
                if want is not None and (status != 200 or _top_class(body) != [want]):
                    wrong.append((status, body[:200]))
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return {"seconds": time.perf_counter() - t0, "latencies": lat, "statuses": statuses, "wrong": wrong}


def _pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] if len(xs) > 1 else xs[0]

# ------------------------------------------------------------------------------------- the run


def examples(run_source: str, n: int):
    """n MNIST-sized examples (raw 0..255 uint8: the test split when LAYERWISE_TEST_DATA holds
    mnist, else seeded strokes on a dark ground) and the model's own top class for each."""
    import numpy as np
    import torch

    from layerwise.data.inputs import prepare_inputs
    from layerwise.insight.runs import open_run

    run = open_run(run_source, "cpu")
    root = os.environ.get("LAYERWISE_TEST_DATA", "")
    x = None
    if root and (Path(root) / "mnist").is_dir():
        run.data_root = root
        xp, _ = run.examples("test", n, seed=0)
        x = (xp.cpu().numpy() * run.info.scale).round().astype(np.uint8)
    if x is None:  # short bright strokes at seeded places: the model gives them varied classes
        g = np.random.default_rng(0)
        x = np.zeros((n, *run.info.in_shape), np.uint8)
        for i in range(n):
            for _ in range(3):
                r, c = g.integers(4, 20, 2)
                if g.random() < 0.5:
                    x[i, 0, r:r + 8, c:c + 3] = 255
                else:
                    x[i, 0, r:r + 3, c:c + 8] = 255
    with torch.inference_mode():
        want = run.model(prepare_inputs(torch.from_numpy(x).float(), run.info)).argmax(1).tolist()
    return x, want


def malformed(max_upload_mb: float) -> list[bytes]:
    """Requests the batched server must refuse with a 4xx (never a 5xx)."""
    boundary = "layerwiseboundary"
    bad_png = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"broken.png\"\r\n"
               f"Content-Type: image/png\r\n\r\n").encode() + b"\x89PNG\r\n\x1a\n garbage" + f"\r\n--{boundary}--\r\n".encode()
    big = b'{"inputs": [' + b"0," * int(max_upload_mb * 2 ** 20 / 2 + 10) + b"0]}"
    return [_request("POST", "/predict", b"{not json"),
            _request("POST", "/predict", b'{"inputs": [[NaN]]}'),
            _request("POST", "/predict", b'{"inputs": [[1, 2, 3]]}'),
            _request("POST", "/predict", b'{"inputs": [[1]], "image": 3}'),
            _request("POST", "/predict", json.dumps({"inputs": [["a"] * 28] * 28}).encode()),
            _request("POST", "/predict", b'{"inputs": [[1e999]]}'),
            _request("POST", "/predict", b"[1, 2, 3]"),
            _request("POST", "/predict", b'{"inputs": 3, "top_k": 0}'),
            _request("POST", "/predict", bad_png, f"multipart/form-data; boundary={boundary}"),
            _request("POST", "/predict", b"hello", "text/plain"),
            _request("POST", "/predict", big)]


def measure(server: "Server", kind: str, bodies: list, c: int, n: int) -> dict:
    """One load phase: ``n`` requests at concurrency ``c`` after a short warm-up."""
    asyncio.run(load(server.port, bodies[:max(2 * c, 20)], c))  # warm-up
    # /health answers from one process: the mean batch is known with one worker only
    h0 = _health(server) if kind == "batched" and server.workers == 1 else None
    cpu0 = server.cpu_seconds()
    r = asyncio.run(load(server.port, [bodies[i % len(bodies)] for i in range(n)], c))
    cpu = server.cpu_seconds() - cpu0
    lat = sorted(r["latencies"])
    row = {"server": kind, "concurrency": c, "rps": round(n / r["seconds"], 1),
           "p50_ms": round(1000 * _pct(lat, 50), 2), "p99_ms": round(1000 * _pct(lat, 99), 2),
           "server_cpu_ms_per_request": round(1000 * cpu / n, 3),
           "errors": sum(s != 200 for s, _ in r["statuses"]), "wrong": len(r["wrong"])}
    if h0 is not None:
        h1 = _health(server)
        row["mean_batch"] = round((h1["examples"] - h0["examples"]) / max(1, h1["batches"] - h0["batches"]), 2)
    return row


def forward_costs(run_source: str, device: str = "cpu", reps: int = 20) -> list[dict]:
    """CPU milliseconds of one forward (process time; normalization included) at batch 1 and 32,
    in the default memory format and in channels_last: what batching and NHWC save per example."""
    import torch

    from layerwise.data.inputs import prepare_inputs
    from layerwise.insight.runs import open_run

    run = open_run(run_source, device)
    rows = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        run.model.to(memory_format=fmt)
        for B in (1, 32):
            x = torch.rand(B, *run.info.in_shape, generator=torch.Generator().manual_seed(0)) * run.info.scale
            with torch.inference_mode():
                for _ in range(3):
                    run.model(prepare_inputs(x, run.info, run.device).contiguous(memory_format=fmt))
                t = time.process_time()
                for _ in range(reps):
                    run.model(prepare_inputs(x, run.info, run.device).contiguous(memory_format=fmt))
                if run.device.type == "cuda":  # the launches are asynchronous: count the device's work too
                    torch.cuda.synchronize()
                ms = 1000 * (time.process_time() - t) / reps
            rows.append({"memory_format": "channels_last" if fmt == torch.channels_last else "contiguous",
                         "batch": B, "cpu_ms_per_forward": round(ms, 3), "cpu_ms_per_example": round(ms / B, 3)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default="pretrained:mnist-convnet")
    p.add_argument("--requests", type=int, default=600, help="timed requests per server, concurrency and repeat")
    p.add_argument("--repeats", type=int, default=3,
                   help="rounds (each starts both servers in turn); the table gives each figure's median")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--threads", type=int, default=1, help="torch threads in each server")
    p.add_argument("--device", default="cpu", help="the servers' device (cpu, cuda)")
    p.add_argument("--workers", type=int, default=0,
                   help="worker processes of the batched server (layerwise serve --workers; default 0: one per CPU "
                        "core on the CPU, as the per-request endpoint's thread pool runs forwards on every core; "
                        "one on a GPU)")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--plot", help="also draw requests/s and p99 latency against concurrency into this PNG")
    p.add_argument("--server", choices=("batched", "per-request"), help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--channels-last", choices=("yes", "no"), default="no", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.workers < 1:
        args.workers = 1 if args.device.startswith("cuda") else os.cpu_count() or 1
    if args.server:
        return _server_main(args)

    import torch

    torch.set_num_threads(1)
    levels = [int(c) for c in args.concurrency.split(",")]
    x, want = examples(args.run, 256)
    bodies = [(_request("POST", "/predict", json.dumps({"inputs": x[i].tolist(), "top_k": 1}).encode()), want[i])
              for i in range(len(x))]
    result = {"run": args.run, "requests": args.requests, "repeats": args.repeats, "threads": args.threads,
              "workers": args.workers,
              "device": args.device, "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms,
              "torch": torch.__version__, "cpus": os.cpu_count(), "runs": [], "exit_codes": []}
    result["forward"] = forward_costs(args.run, args.device)
    for row in result["forward"]:
        print("forward:", json.dumps(row), flush=True)
    channels_last = None
    for rep in range(args.repeats):
        for kind in ("batched", "per-request"):
            server = Server(kind, args, channels_last=bool(channels_last))
            try:
                if kind == "batched":
                    meta = json.loads(asyncio.run(_one(server.port, _request("GET", "/metadata")))[1])
                    channels_last = meta["channels_last"]
                for c in levels:
                    row = measure(server, kind, bodies, c, args.requests) | {"repeat": rep}
                    result["runs"].append(row)
                    print(json.dumps(row), flush=True)
                if kind == "batched" and rep == 0:
                    result["stress"] = stress(server.port, bodies, 16)
                    print("stress:", json.dumps(result["stress"]), flush=True)
            finally:
                result["exit_codes"].append(server.stop())
    result["channels_last"] = channels_last
    keys = ("rps", "p50_ms", "p99_ms", "server_cpu_ms_per_request", "mean_batch")
    table = {}
    for kind in ("batched", "per-request"):
        for c in levels:
            rows = [r for r in result["runs"] if r["server"] == kind and r["concurrency"] == c]
            table[kind, c] = {k: round(statistics.median(r[k] for r in rows), 3) for k in keys if k in rows[0]}
            table[kind, c] |= {"rps_min": min(r["rps"] for r in rows), "rps_max": max(r["rps"] for r in rows),
                               "errors": sum(r["errors"] for r in rows), "wrong": sum(r["wrong"] for r in rows)}
    result["median"] = [{"server": k, "concurrency": c} | v for (k, c), v in table.items()]
    result["ratios"] = []
    print(f"median of {args.repeats} rounds, {args.requests} requests each:")
    for row in result["median"]:
        print("  " + json.dumps(row))
    for c in levels:
        b, s = table["batched", c], table["per-request", c]
        ratio = {"concurrency": c, "rps_ratio": round(b["rps"] / s["rps"], 2),
                 "p99_ratio": round(b["p99_ms"] / s["p99_ms"], 2),
                 "cpu_per_request_ratio": round(s["server_cpu_ms_per_request"] / b["server_cpu_ms_per_request"], 2)}
        result["ratios"].append(ratio)
        print(f"concurrency {c:>2}: batched / per-request throughput {ratio['rps_ratio']}x, p99 "
              f"{ratio['p99_ratio']}x; per-request / batched server CPU per request {ratio['cpu_per_request_ratio']}x")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        plot(result, args.plot)


def plot(result: dict, path: str) -> None:
    """Requests/s and p99 latency (medians over the rounds) against concurrency, both servers."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.2))
    FigureCanvasAgg(fig)
    for j, (key, label) in enumerate((("rps", "requests per second"), ("p99_ms", "p99 latency (ms)"))):
        ax = fig.add_subplot(1, 2, j + 1)
        for kind, style in (("batched", "o-"), ("per-request", "s--")):
            rows = [r for r in result["median"] if r["server"] == kind]
            ax.plot([r["concurrency"] for r in rows], [r[key] for r in rows], style,
                    label="layerwise serve (dynamic batching)" if kind == "batched" else "one forward per request")
        ax.set_xscale("log", base=2)
        ax.set_xticks([r["concurrency"] for r in result["median"] if r["server"] == "batched"])
        ax.set_xticklabels([str(r["concurrency"]) for r in result["median"] if r["server"] == "batched"])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if j == 0:
            ax.legend(fontsize=7)
    fig.suptitle(f"{result['run']} on {result['device']}, {result['threads']} torch thread(s) per server", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def _health(server: Server) -> dict:
    return json.loads(asyncio.run(_one(server.port, _request("GET", "/health")))[1])


def stress(port: int, bodies: list, concurrency: int) -> dict:
    """Good requests with the malformed ones spread among them, ``concurrency`` at a time."""
    bad = malformed(16.0)
    reqs = []
    for i, good in enumerate(bodies[:200]):
        reqs.append(good)
        if i % 4 == 0:
            reqs.append((bad[(i // 4) % len(bad)], None))
    r = asyncio.run(load(port, reqs, concurrency))
    st = r["statuses"]
    return {"good": sum(w is not None for _, w in reqs), "malformed": sum(w is None for _, w in reqs),
            "status_5xx": sum(s >= 500 for s, _ in st), "malformed_4xx": sum(400 <= s < 500 for s, g in st if not g),
            "no_answer": sum(s == 0 for s, _ in st), "good_not_200": sum(s != 200 for s, g in st if g),
            "good_wrong_answer": len(r["wrong"])}

if __name__ == "__main__":
    main()

"""`layerwise serve RUN_DIR`: a finished run's model behind HTTP, with dynamic batching.

Endpoints (FastAPI on uvicorn):

- ``POST /predict``: JSON (``{"inputs": array}``, ``{"texts": [...]}``, ``{"rows": [...]}``, see
  :mod:`layerwise.deploy.payloads`) or multipart files (images, .npy, .wav, CSV, text) ->
  ``{"predictions": [{"input": name, ...}]}``, each prediction as `layerwise predict --json`
  gives it for the same input (classify: "top" classes with probabilities; multilabel: "labels"
  and "probabilities"; regress: "values" in the target's units).
- ``GET /health``: ``{"status": "ok", ...}`` with the batcher's counters.
- ``GET /metadata``: task, classes, input shape and kind, preprocessing, batching and limits.

Requests are validated before the model sees them (4xx with a message naming the problem and the
fix); valid ones wait in one :class:`~layerwise.deploy.batching.DynamicBatcher` and share forward
passes. A model failure answers that batch 500 and the server keeps serving. On SIGTERM uvicorn
stops accepting, lets requests in flight finish, then the batcher stops (exit code 0).
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations (Request) at definition
import asyncio
import contextlib
import inspect
import json
import math
import os
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import torch

from layerwise.deploy.batching import DynamicBatcher, ModelError, QueueFull
from layerwise.deploy.payloads import (
    FORM_FIELDS,
    JSON_FIELDS,
    Examples,
    PayloadError,
    decode_files,
    decode_json,
    input_kind,
    upload_name,
)

ENV_SETTINGS = "LAYERWISE_SERVE_SETTINGS"  # JSON of create_app's arguments, for --workers > 1 (uvicorn's factory)
FILE_SUFFIXES = {"array": [".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".npy"],
                 "audio": [".wav"], "text": [".txt"], "table": [".csv", ".tsv", ".txt"]}
_THREADPOOL_BYTES = 1 << 16  # JSON bodies above this are decoded off the event loop


def _use_channels_last(model: torch.nn.Module, x: torch.Tensor) -> bool:
    """Whether the model gives the same output with channels_last weights and inputs (NHWC), which
    cut the MNIST convnet's CPU forward at batch 32 from 15.8 ms to 7.5 ms (benchmarks/RESULTS.md:
    serve). Tried on a probe batch; a model that reshapes with .view or differs is left as it is."""
    if x.dim() != 4:
        return False
    with torch.inference_mode():
        ref = model(x)
        try:
            model.to(memory_format=torch.channels_last)
            out = model(x.contiguous(memory_format=torch.channels_last))
            ok = out.shape == ref.shape and torch.allclose(out.float(), ref.float(), rtol=1e-4, atol=1e-5)
        except RuntimeError:
            ok = False
    if not ok:
        model.to(memory_format=torch.contiguous_format)
    return ok


class Predictor:
    """A run's model with its task and input preparation, as the batcher calls it.

    ``run``: a LoadedRun (see :func:`layerwise.insight.runs.open_run`). :meth:`forward` takes raw
    examples x: (B, ...) and returns, per request, the task's presented results
    (``task.present``, the format of `layerwise predict`)."""

    def __init__(self, run: Any, channels_last: bool | None = None):
        from layerwise.config import DataConfig

        self.run, self.info, self.task, self.device = run, run.info, run.task, run.device
        self.kind = input_kind(self.info)  # DataError for models the server does not answer
        self.max_image_pixels = (run.cfg.data.max_image_pixels if run.cfg is not None
                                 else DataConfig().max_image_pixels)
        self.channels_last = False
        if self.kind in ("array", "audio"):  # a warm-up forward that also chooses the memory format
            g = torch.Generator().manual_seed(0)
            probe = self._prepare(torch.rand(2, *self.info.in_shape, generator=g) * self.info.scale)
            self.channels_last = _use_channels_last(run.model, probe) if channels_last is not False else False

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        from layerwise.data.inputs import prepare_inputs

        x = prepare_inputs(x, self.info, self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def forward(self, x: torch.Tensor, top_ks: list[int], sizes: list[int]) -> list[list[dict[str, Any]]]:
        """One forward over x: (B, ...) raw examples; returns for each request (``sizes[i]`` examples,
        ``top_ks[i]`` classes shown) its list of presented results."""
        with torch.inference_mode():
            out = self.run.model(self._prepare(x))  # (B, outputs)
        if len(set(top_ks)) == 1:  # one present() for the batch, then split: fewer small ops per request
            flat, results, i = self.task.present(out, top_ks[0]), [], 0
            for n in sizes:
                results.append(flat[i:i + n])
                i += n
            return results
        results, i = [], 0
        for k, n in zip(top_ks, sizes, strict=True):
            results.append(self.task.present(out[i:i + n], k))
            i += n
        return results

    def metadata(self) -> dict[str, Any]:
        """What a client needs to send inputs and read answers (``GET /metadata``)."""
        from layerwise.data.inputs import LIGHT_ON_DARK

        info, kind = self.info, self.kind
        pre: dict[str, Any] = {"raw_scale": info.scale, "mean": info.mean, "std": info.std,
                               "normalize": "v = raw / raw_scale, then (v - mean) / std per channel (feature)"}
        if kind == "array":
            pre["image_resize"] = ("bilinear" if info.name == "image-folder" else
                                   "box filter when shrinking, bilinear when enlarging")
            pre["image_channels"] = info.in_shape[0]
            pre["invert"] = ("auto: a greyscale image brighter than 0.5 on average is inverted"
                             if info.in_shape[0] == 1 and info.name in LIGHT_ON_DARK else "no")
            pre["max_image_pixels"] = self.max_image_pixels
        elif kind == "audio":
            pre["audio"] = info.extra["audio"]
        elif kind == "text":
            pre["max_tokens"] = info.extra["text"]["max_length"]
            pre["normalize"] = "none: token ids of the run's tokenizer"
        else:  # what a client needs to write rows: which cells are numbers, which take one of a set of strings
            table = info.extra["table"]
            pre["columns"] = table["columns"]
            pre["numeric_columns"] = list(table.get("numeric", []))
            pre["categories"] = {c: list(v) for c, v in table.get("categories", {}).items()}
            pre["log_columns"] = list(table.get("log", []))
            pre["missing"] = table.get("missing")
            pre["normalize"] = ("numeric cells (log(1 + x) for log_columns) standardized with mean/std per encoded "
                                "feature; a category one-hot (an unseen one: all zeros)")
        meta = self.run.meta
        return {"model": (meta.get("model") or {}).get("name"), "source": self.run.source or str(self.run.path),
                "task": info.task, "dataset": info.name, "classes": list(info.classes),
                "outputs": getattr(self.task, "columns", None),
                "input": {"kind": kind, "shape": list(info.in_shape), "json_field": JSON_FIELDS[kind],
                          "files": FILE_SUFFIXES[kind]},
                "preprocessing": pre, "channels_last": self.channels_last}


def fastapi_modules() -> Any:
    """The ``fastapi`` module; ConfigError with the install command when the ``serve`` extra is missing."""
    try:
        import fastapi
        import uvicorn  # noqa: F401
    except ImportError as e:
        from layerwise.config import ConfigError

        raise ConfigError(f"`layerwise serve` needs FastAPI and uvicorn, and {e.name} is not installed. Install "
                          f"them with `pip install 'layerwise[serve]'`.") from None
    return fastapi


def _error(status: int, message: str, headers: dict[str, str] | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse({"detail": message}, status_code=status, headers=headers)


async def _read_body(request: Any, limit: int) -> bytes:
    """The request body, refused with PayloadError 413 as soon as it passes ``limit`` bytes (the
    Content-Length header is checked first, so a declared oversize is never read)."""
    mb = limit / 2 ** 20
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadError(413, f"the request body is {int(declared) / 2 ** 20:.1f} MB, more than the server's "
                                f"limit of {mb:g} MB (--max-upload-mb); send smaller files or fewer examples.")
    from starlette.requests import ClientDisconnect

    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadError(413, f"the request body is larger than the server's limit of {mb:g} MB "
                                        f"(--max-upload-mb); send smaller files or fewer examples.")
            chunks.append(chunk)
    except ClientDisconnect:  # the client went away mid-body: nobody to answer, and no traceback in the log
        raise PayloadError(400, f"the client disconnected after {size} bytes, before the whole request body "
                                f"arrived; send the request again.") from None
    return b"".join(chunks)


async def _form(request: Any, body: bytes, max_files: int) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
    """A multipart body already read -> (files as (shown name, bytes), text fields)."""
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException
    from starlette.formparsers import MultiPartException
    from starlette.requests import Request

    sent = False

    async def replay() -> dict[str, Any]:  # the read body, handed to Starlette's multipart parser
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=max_files, max_fields=len(FORM_FIELDS) + 8)
    except (MultiPartException, HTTPException) as e:  # Starlette wraps the parser's error in an HTTPException
        detail = getattr(e, "detail", None) or str(e) or type(e).__name__
        if str(detail).startswith("Too many files"):  # the parser's own limit, set to --max-examples
            raise PayloadError(413, f"the request holds more than {max_files} files, more than the server's limit of "
                                    f"{max_files} examples per request (--max-examples); split it into several "
                                    f"requests.") from None
        if str(detail).startswith("Too many fields"):
            raise PayloadError(422, f"the multipart body holds too many text fields; the accepted fields are "
                                    f"{', '.join(repr(k) for k in FORM_FIELDS)}, and files (parts with a filename).") from None
        raise PayloadError(400, f"the multipart body cannot be parsed ({detail}); send files as "
                                f"multipart/form-data, e.g. curl -F file=@digit.png URL/predict.") from None
    files, fields = [], {}
    try:
        for i, (key, value) in enumerate(form.multi_items()):
            if isinstance(value, UploadFile):
                files.append((upload_name(value.filename, i), await value.read()))
            else:
                fields[key] = value
    finally:
        await form.close()
    return files, fields


def check_settings(max_batch: int, max_wait_ms: float, max_examples: int, max_upload_mb: float, timeout_s: float,
                   max_queue: int, top_k: int, threads: int | None = None) -> None:
    """ValueError naming the flag for a setting out of range (see :func:`create_app`)."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"--threads must be an integer >= 1 (torch threads per worker; leave it out for the "
                         f"machine's cores divided by --workers), got {threads!r}.")
    for name, v in (("max_batch", max_batch), ("max_examples", max_examples), ("max_queue", max_queue),
                    ("top_k", top_k)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 1, got {v!r}.")
    for name, v in (("max_wait_ms", max_wait_ms), ("max_upload_mb", max_upload_mb), ("timeout_s", timeout_s)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or not (v >= 0 if name == "max_wait_ms" else v > 0):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number "
                             f"{'>= 0' if name == 'max_wait_ms' else '> 0'}, got {v!r}.")


def create_app(run: Any, *, max_batch: int = 32, max_wait_ms: float = 5.0, max_examples: int = 256,
               max_upload_mb: float = 16.0, timeout_s: float = 30.0, max_queue: int = 1024, top_k: int = 3,
               device: str = "auto", threads: int | None = None, channels_last: bool | None = None):
    """A FastAPI app that serves ``run``'s model (a run directory, a model.safetensors file,
    ``pretrained:NAME``, or a LoadedRun from :func:`layerwise.insight.runs.open_run`).

    Batching: requests arriving within ``max_wait_ms`` (milliseconds) of the first waiting one share
    a forward of at most ``max_batch`` examples. Limits: ``max_examples`` per request (413),
    ``max_upload_mb`` per request body (413), ``timeout_s`` seconds waiting for the model (503),
    ``max_queue`` requests waiting (503). ``top_k``: classes shown when a request does not say.
    ``threads``: torch's intra-op threads for this process (None: leave as is).
    ``channels_last``: None tries NHWC for image models and keeps it when the output is the same
    (the model is converted in place, also when a LoadedRun is given).

    Raises RunDirError for a path that is not a model, DataError for a model the server does not
    answer (language models, recommenders; the message names the command that does), ValueError
    for bad settings, ConfigError when FastAPI is not installed."""
    fastapi_modules()
    from fastapi import FastAPI, Request, Response

    from layerwise.insight.runs import LoadedRun, open_run

    check_settings(max_batch, max_wait_ms, max_examples, max_upload_mb, timeout_s, max_queue, top_k, threads)
    if threads is not None:
        torch.set_num_threads(threads)
    loaded = run if isinstance(run, LoadedRun) else open_run(run, device)
    predictor = Predictor(loaded, channels_last)
    batcher = DynamicBatcher(predictor.forward, max_batch, max_wait_ms / 1000, max_queue,
                             inline=loaded.device.type == "cpu")  # see layerwise.deploy.batching: the GIL
    limit = int(max_upload_mb * 2 ** 20)
    settings = {"max_batch": max_batch, "max_wait_ms": max_wait_ms, "max_examples": max_examples,
                "max_upload_mb": max_upload_mb, "timeout_s": timeout_s, "max_queue": max_queue, "top_k": top_k,
                "torch_threads": torch.get_num_threads()}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await batcher.stop()  # after uvicorn has let the requests in flight finish

    app = FastAPI(title="layerwise serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.predictor, app.state.batcher = predictor, batcher

    @app.api_route("/health", methods=["GET", "HEAD"])  # HEAD: load balancers and uptime probes
    async def health() -> dict[str, Any]:
        return {"status": "ok", "waiting": batcher.waiting, "batches": batcher.batches,
                "examples": batcher.examples, "failed_batches": batcher.failures}

    @app.api_route("/metadata", methods=["GET", "HEAD"])
    async def metadata() -> dict[str, Any]:
        return predictor.metadata() | {"settings": settings}

    async def decode(request: Request) -> Examples:
        """The request's examples (PayloadError for anything the model cannot take)."""
        from starlette.concurrency import run_in_threadpool

        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("application/json", "multipart/form-data") and not ctype.endswith("+json"):
            raise PayloadError(415, f"Content-Type {ctype or '(none)'} is not accepted; send application/json "
                                    f"({{\"{JSON_FIELDS[predictor.kind]}\": ...}}) or multipart/form-data (files).")
        encoding = request.headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            raise PayloadError(415, f"Content-Encoding {encoding} is not accepted; send the body uncompressed, without "
                                    f"a Content-Encoding header (--max-upload-mb bounds its size).")
        try:
            async with asyncio.timeout(timeout_s):
                body = await _read_body(request, limit)
        except TimeoutError:
            raise PayloadError(408, f"the request body did not arrive within {timeout_s:g} s (--timeout-s); send it "
                                    f"at once, or send less (a slow or stalled client holds a connection).") from None
        if ctype == "multipart/form-data":
            files, fields = await _form(request, body, max_files=max_examples)
            return await run_in_threadpool(decode_files, files, fields, predictor.info, predictor.max_image_pixels,
                                           max_examples, top_k)
        if len(body) > _THREADPOOL_BYTES:
            return await run_in_threadpool(decode_json, body, predictor.info, max_examples, top_k)
        return decode_json(body, predictor.info, max_examples, top_k)

    @app.post("/predict")
    async def predict(request: Request):
        try:
            with batcher.arriving():  # a batch being collected waits for this request
                ex = await decode(request)
        except PayloadError as e:
            return _error(e.status, str(e))
        try:
            async with asyncio.timeout(timeout_s):
                results = await batcher.submit(ex.x, ex.top_k)
        except TimeoutError:
            return _error(503, f"no answer from the model within {timeout_s:g} s (--timeout-s): the server is "
                               f"overloaded; retry later.", {"Retry-After": "1"})
        except QueueFull as e:
            return _error(503, str(e), {"Retry-After": "1"})
        except ModelError as e:
            return _error(500, str(e))
        # json.dumps straight away: FastAPI's jsonable_encoder walk of a returned dict would cost more
        # CPU than the forward's share of a request (benchmarks/serve_load.py)
        return Response(json.dumps({"predictions": [{"input": n, **r} for n, r in zip(ex.names, results, strict=True)]}),
                        media_type="application/json")

    return app


def app_from_env():
    """uvicorn's factory for ``--workers N``: each worker process builds its app from the settings
    that :func:`serve` put in the environment variable LAYERWISE_SERVE_SETTINGS (JSON)."""
    import sys

    settings = json.loads(os.environ[ENV_SETTINGS])
    run = settings.pop("run")
    try:
        return create_app(run, **settings)
    except (ValueError, OSError) as e:  # RunDirError, DataError, ConfigError are ValueErrors
        # a worker started again by uvicorn after one died loads the private copy serve() made (snapshot); if
        # even that is gone (a cleaned temporary folder): one paragraph instead of a traceback on every restart
        print(f"layerwise serve: a worker process ({os.getpid()}) could not load the model ({e}); the other "
              f"workers go on serving. Its copy of the run at '{run}' is gone (was the temporary folder cleaned?): "
              f"restart `layerwise serve`.", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def serve(run: str | Path, host: str = "127.0.0.1", port: int = 8000, *, workers: int = 1, threads: int | None = None,
          max_batch: int = 32, max_wait_ms: float = 5.0, max_examples: int = 256, max_upload_mb: float = 16.0,
          timeout_s: float = 30.0, max_queue: int = 1024, top_k: int = 3, device: str = "auto",
          log_level: str = "info") -> None:
    """Serve ``run`` (a run directory, model file or ``pretrained:NAME``) on http://host:port until
    SIGTERM or Ctrl-C (blocking). ``workers`` processes each hold the model and batch on their own;
    ``threads`` torch threads each (default: the machine's cores divided by ``workers``, at least 1,
    so that the workers do not oversubscribe the cores). Other arguments: see :func:`create_app`.
    Errors in the run or settings are raised before the port is bound (RunDirError, DataError,
    ValueError; ConfigError for an address or port that cannot be listened on)."""
    fastapi_modules()
    import uvicorn

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--workers must be an integer >= 1, got {workers!r}.")
    check_settings(max_batch, max_wait_ms, max_examples, max_upload_mb, timeout_s, max_queue, top_k, threads)
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // workers)
    kw = {"max_batch": max_batch, "max_wait_ms": max_wait_ms, "max_examples": max_examples,
          "max_upload_mb": max_upload_mb, "timeout_s": timeout_s, "max_queue": max_queue, "top_k": top_k,
          "device": device, "threads": threads}
    _check_port(host, port)
    common = {"host": host, "port": port, "log_level": log_level, "timeout_graceful_shutdown": int(timeout_s) + 5}
    if workers == 1:
        app = create_app(run, **kw)
        info = app.state.predictor.info
        with listening_socket(host, port) as sock:  # bound here: --port 0's real port is known for the line below
            print(f"layerwise serve: {run} ({info.task}, {info.name}, {app.state.predictor.kind} inputs "
                  f"{tuple(info.in_shape)}) on {_url(host, sock)}: POST /predict, GET /metadata, GET /health; batches "
                  f"of up to {max_batch} examples, {max_wait_ms:g} ms wait, {threads} torch thread(s)", flush=True)
            with stop_signals():
                uvicorn.Server(uvicorn.Config(app, **common)).run(sockets=[sock])
        return
    from layerwise.insight.runs import open_run

    with snapshot(run) as frozen:
        input_kind(open_run(frozen, "cpu").info)  # the run's errors before any worker starts
        os.environ[ENV_SETTINGS] = json.dumps({"run": frozen} | kw)
        _supervise(run, host, port, workers, common, max_batch, threads)


@contextlib.contextmanager
def snapshot(run: str | Path) -> Iterator[str]:
    """``with snapshot(run) as source:`` a private copy of the run's model.safetensors and
    config.yaml (or of a model file) in a temporary folder, removed on exit, for the worker
    processes to load. A worker that uvicorn restarts (after a crash) then loads the model the
    others hold, even if the run's files were deleted or overwritten meanwhile (it would have
    loaded the new model beside the old, or failed in a loop). A shipped model
    (``pretrained:NAME``, checked by its sha256) is used as it is."""
    import shutil
    import tempfile

    from layerwise.models.pretrained import PREFIX

    if str(run).startswith(PREFIX):
        yield str(run)
        return
    src = Path(run)
    with tempfile.TemporaryDirectory(prefix="layerwise-serve-") as tmp:
        dst = Path(tmp) / (src.name or "run")
        if src.is_dir():
            dst.mkdir()
            for name in ("model.safetensors", "config.yaml"):
                if (src / name).is_file():
                    shutil.copy2(src / name, dst / name)
        elif src.is_file():
            shutil.copy2(src, dst)
        else:
            dst = src  # not there: open_run names the problem
        yield str(dst)


def _supervise(run: Any, host: str, port: int, workers: int, common: dict[str, Any], max_batch: int,
               threads: int) -> None:
    """uvicorn's supervisor of ``workers`` processes on one listening socket (see :func:`serve`)."""
    import uvicorn

    with stop_signals(), warnings.catch_warnings():
        # uvicorn's supervisor leaves its listening socket to the garbage collector at exit
        warnings.simplefilter("ignore", ResourceWarning)
        from uvicorn.supervisors import Multiprocess

        config = uvicorn.Config("layerwise.deploy.server:app_from_env", factory=True, workers=workers, **common)
        with listening_socket(host, port) as sock:
            print(f"layerwise serve: {run} on {_url(host, sock)} with {workers} worker processes, batches of up to "
                  f"{max_batch} examples each, {threads} torch thread(s) each", flush=True)
            if "target" in inspect.signature(Multiprocess).parameters:  # uvicorn before 0.30 took the server's run
                Multiprocess(config, target=uvicorn.Server(config).run, sockets=[sock]).run()
            else:
                Multiprocess(config, sockets=[sock]).run()


def _url(host: str, sock: Any) -> str:
    """http://HOST:PORT of a bound socket: the real port when --port 0 asked for any free one."""
    port = sock.getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def listening_socket(host: str, port: int):
    """The workers' shared listening socket, made as asyncio makes its own: with the protocol number
    IPPROTO_TCP. uvicorn's (``socket.socket(family)``) has protocol 0, the sockets it accepts inherit
    it, and asyncio then skips TCP_NODELAY on them (it checks ``proto == IPPROTO_TCP``): each answer's
    last segment waited for the client's delayed ACK, 40 ms per request with --workers 2 (measured:
    44 ms median at concurrency 1, against 2 ms with one worker)."""
    import socket

    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                      proto=socket.IPPROTO_TCP)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(addr)
    sock.set_inheritable(True)
    return sock


def _check_port(host: str, port: int) -> None:
    """ConfigError naming the fix when ``host:port`` cannot be bound (in use, not an address of this
    machine, a privileged port), before the model is loaded; uvicorn would only log and exit."""
    import socket

    from layerwise.config import ConfigError

    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"--port must be an integer from 0 to 65535 (0: any free port), got {port!r}.")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            s.bind(infos[0][4])
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another port with --port "
                          f"(or stop the program that holds it), or an address of this machine with --host "
                          f"(127.0.0.1: this machine only, 0.0.0.0: every interface).") from None


@contextlib.contextmanager
def stop_signals():
    """SIGTERM and SIGINT as the normal way to stop a server: exit code 0 after uvicorn's graceful
    shutdown. uvicorn handles them while it runs (stop accepting, let requests in flight finish),
    then restores the handlers it found and raises the signal again; without handlers of our own
    that second delivery would kill the process (143) or raise KeyboardInterrupt."""
    import signal

    received: list[int] = []
    old = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for s, h in old.items():
            signal.signal(s, h)

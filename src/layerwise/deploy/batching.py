"""Dynamic batching: requests that arrive close together share one forward pass.

One :class:`DynamicBatcher` per model. Requests wait in an asyncio queue; the batcher takes the
first, then keeps collecting until the batch holds ``max_batch`` examples or ``max_wait_s`` has
passed since the first arrived, runs one forward (in a worker thread, or inline: see below) and
hands each request its slice of the output. This is the scheme of NVIDIA Triton's dynamic
batcher (``max_queue_delay_microseconds``) and of TorchServe's ``batch_size`` / ``max_batch_delay``.

While a forward runs, the next requests queue up, so under load batches fill without any wait.
The wait is therefore spent only when it can gather company: while other requests are being
received or decoded (the server counts them with :meth:`DynamicBatcher.arriving`). A lone client
(concurrency 1) gets its answer without the wait; benchmarks/serve_load.py measures both.

On the CPU the forward runs *inline*, on the event loop's own thread. In a worker thread it must
take the GIL back after every torch op while the loop thread parses requests, and a waiting
thread may be kept out for Python's switch interval (5 ms) each time: measured on the MNIST
convnet at concurrency 32, the worker thread gave p99 275 ms and 521 requests/s, inline 132 ms
and 950 requests/s (benchmarks/RESULTS.md, serve). Inline, requests that arrive during a forward
wait in the socket buffers. On a GPU the forward thread mostly waits for the device with the GIL
released, so there it keeps its own thread and the loop goes on decoding.

A failing forward fails only the requests of that batch (each gets a :class:`ModelError`); the
batcher keeps serving the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch


class ModelError(RuntimeError):
    """The model failed on a batch (not the input's fault: the input was validated before)."""


class QueueFull(RuntimeError):
    """More requests are waiting than the batcher's ``max_queue``; the client should retry later."""


@dataclass
class _Pending:
    x: torch.Tensor  # (n, ...) one request's examples
    top_k: int
    future: asyncio.Future
    arrived: float = field(default_factory=time.perf_counter)


def stack(xs: list[torch.Tensor]) -> torch.Tensor:
    """Requests' example tensors -> one batch along dim 0. Token ids (int64, (n_i, T_i)) are right-padded
    with 0 (the padding id, masked by text models) to the longest T; real-valued inputs share one shape."""
    if len(xs) == 1:
        return xs[0]
    if xs[0].dtype == torch.int64 and xs[0].dim() == 2:
        T = max(x.shape[1] for x in xs)
        return torch.cat([torch.nn.functional.pad(x, (0, T - x.shape[1])) for x in xs])
    return torch.cat(xs)


class DynamicBatcher:
    """Collects requests into batches of at most ``max_batch`` examples and runs ``forward`` once per batch.

    ``forward(x, top_ks, sizes)`` gets the stacked examples x: (B, ...), each request's top_k and
    its number of examples (summing to B), in order, and returns one list of per-example results
    per request; it runs in a single worker
    thread (one forward at a time: the model's own threads use the cores). ``max_wait_s``: how long
    the first request of a batch waits for company (seconds; 0 = take only what is already
    queued). ``max_queue``: requests allowed to wait; beyond it :meth:`submit` raises QueueFull.
    ``inline``: run the forward on the event loop's thread (the CPU's better choice, see above).
    A request larger than ``max_batch`` runs as a batch of its own."""

    def __init__(self, forward: Callable[[torch.Tensor, list[int], list[int]], list[list[dict[str, Any]]]],
                 max_batch: int = 32, max_wait_s: float = 0.005, max_queue: int = 1024, inline: bool = False):
        if max_batch < 1 or max_wait_s < 0 or max_queue < 1:
            raise ValueError(f"max_batch and max_queue must be >= 1 and max_wait_s >= 0; got {max_batch}, "
                             f"{max_queue}, {max_wait_s}.")
        self.forward, self.max_batch, self.max_wait_s, self.max_queue = forward, max_batch, max_wait_s, max_queue
        self.inline = inline
        self.polls = 3  # event-loop turns given to requests already received before a batch is closed
        self._queue: asyncio.Queue[_Pending] | None = None
        self._held: _Pending | None = None  # a request that did not fit the last batch: first of the next
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="layerwise-forward")
        self.incoming = 0  # requests being received or decoded, not yet submitted (see arriving())
        self.batches = 0  # forwards run
        self.examples = 0  # examples answered
        self.failures = 0  # forwards that raised

    def start(self) -> None:
        """Start the collecting loop on the running event loop."""
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="layerwise-batcher")

    async def stop(self) -> None:
        """Stop collecting (requests still queued get a ModelError) and release the worker thread."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        queue, self._queue = self._queue, None  # submit() refuses from now on
        pending = ([self._held] if self._held is not None else []) + \
            ([queue.get_nowait() for _ in range(queue.qsize())] if queue is not None else [])
        self._held = None
        for p in pending:
            if not p.future.done():
                p.future.set_exception(ModelError("the server is shutting down; send the request again."))
        self._pool.shutdown(wait=True)

    @property
    def waiting(self) -> int:
        """Requests queued, not yet in a forward."""
        return (self._queue.qsize() if self._queue is not None else 0) + (self._held is not None)

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Mark a request as on its way (being read and decoded) for the duration of the block, so
        that a batch being collected waits for it (up to ``max_wait_s``)."""
        self.incoming += 1
        try:
            yield
        finally:
            self.incoming -= 1

    async def submit(self, x: torch.Tensor, top_k: int) -> list[dict[str, Any]]:
        """Queue one request's examples x: (n, ...) and wait for their n results. Raises QueueFull when
        ``max_queue`` requests wait already, ModelError when the forward of its batch failed."""
        if self._queue is None:
            raise ModelError("the batcher is not running; the server is starting or shutting down.")
        if self.waiting >= self.max_queue:
            raise QueueFull(f"{self.waiting} requests are waiting for the model (the server's --max-queue); "
                            f"retry shortly.")
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(x, top_k, fut))
        return await fut

    async def _next(self, timeout: float | None) -> _Pending | None:
        if self._held is not None:
            p, self._held = self._held, None
            return p
        assert self._queue is not None
        if timeout is None:
            return await self._queue.get()
        for _ in range(self.polls):  # let the loop read requests already in the socket buffers
            if not self._queue.empty() or self.incoming:
                break
            await asyncio.sleep(0)
        if not self._queue.empty():
            return self._queue.get_nowait()
        if timeout <= 0 or not self.incoming:  # nobody else on the way: waiting would only add latency
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._next(None)
            batch, n = [first], len(first.x)
            deadline = loop.time() + self.max_wait_s
            while n < self.max_batch:
                p = await self._next(deadline - loop.time())
                if p is None:
                    break
                if n + len(p.x) > self.max_batch:
                    self._held = p
                    break
                batch.append(p)
                n += len(p.x)
            batch = [p for p in batch if not p.future.done()]  # a client that gave up (timeout) is skipped
            if not batch:
                continue
            try:
                if self.inline:
                    results = self._run(batch)
                else:
                    results = await loop.run_in_executor(self._pool, self._run, batch)
            except Exception as e:  # noqa: BLE001  the model's failure, whatever it is: answer this batch, keep serving
                self.failures += 1
                detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(ModelError(f"the model failed on a batch of {n} examples "
                                                          f"({type(e).__name__}: {detail})."))
                continue
            self.batches += 1
            self.examples += sum(len(p.x) for p in batch)
            for p, r in zip(batch, results, strict=True):
                if not p.future.done():
                    p.future.set_result(r)

    def _run(self, batch: list[_Pending]) -> list[list[dict[str, Any]]]:
        """In the worker thread: one forward over the batch, results split back per request."""
        x = stack([p.x for p in batch])
        out = self.forward(x, [p.top_k for p in batch], [len(p.x) for p in batch])
        if len(out) != len(batch):
            raise ModelError(f"forward returned {len(out)} results for {len(batch)} requests")
        return out

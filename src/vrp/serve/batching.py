"""Concurrent requests gathered into batched generate calls.

One model thread answers one batch at a time (the monitor's hooks live on the model during a
call, so two calls must never overlap). Requests wait in a bounded queue; the batcher takes
the first, then whatever else arrives within ``max_wait_ms``, up to ``max_batch_size``, and
answers them with one ``Monitor.ask_many`` call (left padding). Greedy answers and their token
ids are the ones each request gets alone; p_correct can move by float32 batch effects on the
residual (docs/serve.md).

A batch whose call raises (say a CUDA out-of-memory error on a large batch) is answered again
one request at a time: a request that fails alone gets a 5xx, the others their answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from vrp.serve.metrics import Metrics
from vrp.serve.protocol import RequestError

log = logging.getLogger("vrp.serve")

AnswerFn = Callable[[list[Any], list[str]], list[Any]]  # (images, questions) -> one Answer each, in order


@dataclass
class _Pending:
    image: Any
    question: str
    future: asyncio.Future = field(repr=False)


class Batcher:
    """Gathers requests into batches and answers each batch in the model thread.

    Args:
        answer: (images, questions) -> answers, one per question in order (``Monitor.ask_many``).
        max_batch_size: most requests per call.
        max_wait_ms: longest the first request of a batch waits for others.
        max_queue: most requests waiting; a request beyond it is refused (503, ``overloaded``).
        metrics: where batch sizes, durations, retries and the queue depth are recorded.
    """

    def __init__(self, answer: AnswerFn, max_batch_size: int, max_wait_ms: float, max_queue: int, metrics: Metrics):
        self._answer = answer
        self._max_batch = max_batch_size
        self._max_wait = max_wait_ms / 1000
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=max_queue)
        self._metrics = metrics
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vrp-model")
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._busy = False
        self._gathered: list[_Pending] = []  # the batch being filled, not yet sent to the model
        self.draining = False
        metrics.queue_depth.set_function(self.waiting)

    def waiting(self) -> int:
        """Requests waiting for the model: queued, or gathered into a batch that is still filling."""
        return self._queue.qsize() + len(self._gathered)

    def start(self) -> None:
        """Start gathering (inside the running event loop)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="vrp-batcher")

    async def submit(self, image: Any, question: str) -> Any:
        """Queue one request and wait for its answer.

        Raises:
            RequestError: 503 when the queue is full or the server is shutting down; 500 when the
                model failed on this request alone.
        """
        if self.draining:
            raise RequestError(503, "shutting_down", "the server is shutting down; retry on another replica")
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Pending(image, question, future))
        except asyncio.QueueFull:
            raise RequestError(
                503, "overloaded", f"the server's queue is full ({self._queue.maxsize} requests waiting); retry later"
            ) from None
        return await future

    def drain(self) -> None:
        """Stop accepting requests and stop waiting for batches to fill (on SIGTERM): what is queued is answered."""
        self.draining = True
        self._wake.set()

    async def stop(self) -> None:
        """Answer everything still queued, then stop the model thread."""
        self.drain()
        while self._task is not None and not self._task.done() and (self._busy or not self._queue.empty()):
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            self._busy = True
            try:
                self._gathered = batch
                await self._fill(batch)
                self._gathered = []
                await self._process(batch)
            except Exception:  # never let one batch end the loop
                log.exception("the batcher failed on a batch")
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(RequestError(500, "internal_error", "the server failed on this batch"))
            finally:
                self._busy, self._gathered = False, []

    async def _fill(self, batch: list[_Pending]) -> None:
        """Add requests to ``batch`` until it is full or the first has waited ``max_wait_ms``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._max_wait
        while len(batch) < self._max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0 or self.draining:
                return
            getter = asyncio.ensure_future(self._queue.get())
            waker = asyncio.ensure_future(self._wake.wait())
            await asyncio.wait({getter, waker}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            waker.cancel()
            if getter.done() or not getter.cancel():  # got one (cancel() fails once it holds an item)
                batch.append(getter.result())
            else:
                await asyncio.gather(getter, return_exceptions=True)
                if not self.draining:
                    return

    async def _process(self, batch: list[_Pending]) -> None:
        live = [p for p in batch if not p.future.done()]  # a client that hung up is not answered
        if not live:
            return
        loop = asyncio.get_running_loop()
        self._metrics.batch_size.observe(len(live))
        t = time.perf_counter()
        try:
            answers = await loop.run_in_executor(self._executor, self._call, [p.image for p in live],
                                                 [p.question for p in live])  # fmt: skip
        except Exception as e:
            if len(live) == 1:
                self._fail(live[0], e)
                return
            log.warning("a batch of %d failed (%s: %s); answering its requests one at a time",
                        len(live), type(e).__name__, e)  # fmt: skip
            self._metrics.retries.inc()
            for p in live:
                try:
                    (answer,) = await loop.run_in_executor(self._executor, self._call, [p.image], [p.question])
                except Exception as e1:
                    self._fail(p, e1)
                else:
                    _settle(p.future, answer)
            return
        finally:
            self._metrics.batch_duration.observe(time.perf_counter() - t)
        for p, answer in zip(live, answers, strict=True):
            _settle(p.future, answer)

    def _call(self, images: list[Any], questions: list[str]) -> list[Any]:
        answers = self._answer(images, questions)
        if len(answers) != len(questions):
            raise RuntimeError(f"the model answered {len(answers)} of {len(questions)} questions")
        return answers

    def _fail(self, p: _Pending, e: Exception) -> None:
        oom = type(e).__name__ == "OutOfMemoryError"  # torch.OutOfMemoryError (CUDA), without importing torch
        log.error("the model failed on a request: %s: %s", type(e).__name__, e, exc_info=e)
        if oom:
            _free_cuda_cache()
        code = "out_of_memory" if oom else "model_error"
        _settle(p.future, RequestError(500, code, f"the model failed on this request: {type(e).__name__}: {e}"))


def _settle(future: asyncio.Future, result: Any) -> None:
    if future.done():  # the client hung up meanwhile
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def _free_cuda_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # freeing memory is best effort
        log.debug("could not empty the CUDA cache", exc_info=True)

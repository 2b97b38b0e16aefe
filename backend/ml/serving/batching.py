"""Concurrent requests share forward passes: a queue per model, drained in micro-batches.

Requests that arrive while a forward pass runs are joined into the next one (up to
``max_batch`` inputs), so batches grow with the load and a lone request never waits;
``max_wait_ms`` > 0 also holds a batch open that long for others to join. One worker per model
runs the joined inputs in a thread (the event loop keeps accepting requests meanwhile) and hands
each request back its own results. One worker per model also means one forward pass at a time,
so the model's CPU threads are never oversubscribed by parallel calls.

>>> batcher = MicroBatcher(classifier.predict_with_confidence, max_batch=64)  # doctest: +SKIP
>>> await batcher.submit(["One sentence.", {"id": "a-1", "text": "An article."}])  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

# One submit call: its items and the future its caller awaits the results on.
_Request = tuple[list[Any], "asyncio.Future[list[dict]]"]


class MicroBatcher:
    """Joins inputs of concurrent ``submit`` calls into one call of ``predict``."""

    def __init__(self, predict: Callable[[list], list[dict]], max_batch: int = 64,
                 max_wait_ms: float = 0.0):
        self.predict = predict
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.batches_run = 0  # forward calls made; /health shows it
        self.items_run = 0
        self._queue: asyncio.Queue[_Request] | None = None
        self._worker: asyncio.Task | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._work(self._queue))

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass

    async def submit(self, items: list[Any]) -> list[dict]:
        """Results for ``items``, in order, computed together with whatever else is waiting."""
        if not items:
            return []
        if self._queue is None:
            raise RuntimeError("MicroBatcher.submit before start()")
        future: asyncio.Future[list[dict]] = asyncio.get_running_loop().create_future()
        await self._queue.put((items, future))
        return await future

    async def _work(self, queue: asyncio.Queue[_Request]) -> None:
        while True:
            waiting = [await queue.get()]
            count = len(waiting[0][0])
            deadline = time.monotonic() + self.max_wait
            while count < self.max_batch:
                if not queue.empty():  # arrived while the last batch ran: no waiting
                    waiting.append(queue.get_nowait())
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        waiting.append(await asyncio.wait_for(queue.get(), remaining))
                    except TimeoutError:
                        break
                count += len(waiting[-1][0])
            await self._run(waiting)

    async def _run(self, waiting: list[_Request]) -> None:
        joined = [item for items, _ in waiting for item in items]
        try:
            results = await asyncio.to_thread(self.predict, joined)
        except Exception as error:  # every waiting request gets the error, the worker lives on
            for _, future in waiting:
                if not future.done():
                    future.set_exception(error)
            return
        self.batches_run += 1
        self.items_run += len(joined)
        start = 0
        for items, future in waiting:
            if not future.done():  # a client that went away cancelled its future
                future.set_result(results[start:start + len(items)])
            start += len(items)

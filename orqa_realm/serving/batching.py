"""Batching concurrent requests: each request waits in a bounded queue; one worker takes what
has arrived (up to `max_batch_size`, waiting at most `max_wait_seconds` for more once it has
one) and answers it with a single call on a worker thread, so that the devices see batches and
the event loop keeps accepting requests while they compute.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class QueueFull(Exception):
  """More requests wait than the queue holds: the client should retry later."""


@dataclasses.dataclass
class _Pending(Generic[Item, Result]):
  item: Item
  future: asyncio.Future


class RequestBatcher(Generic[Item, Result]):
  """Answers items submitted concurrently with batched calls of `process(items) -> results`
  (one result per item, in order), run on a worker thread."""

  def __init__(self, process: Callable[[Sequence[Item]], Sequence[Result]], *,
               max_batch_size: int, max_wait_seconds: float, max_queue: int):
    if max_batch_size < 1 or max_queue < 1:
      raise ValueError("max_batch_size and max_queue must be positive")
    self.process = process
    self.max_batch_size, self.max_wait_seconds = max_batch_size, max_wait_seconds
    self.max_queue = max_queue
    self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=max_queue)
    self._worker: asyncio.Task | None = None
    self.batch_sizes: list[int] = []  # of every call, for tests and the load benchmark

  async def stop(self) -> None:
    if self._worker is not None:
      self._worker.cancel()
      try:
        await self._worker
      except asyncio.CancelledError:
        pass

  async def submit(self, item: Item) -> Result:
    """The result of `item`, once its batch is done; QueueFull when too many wait."""
    # Started by the first request, on the server's event loop (again if it ever died).
    if self._worker is None or self._worker.done():
      self._worker = asyncio.get_running_loop().create_task(self._work())
    pending = _Pending(item, asyncio.get_running_loop().create_future())
    try:
      self._queue.put_nowait(pending)
    except asyncio.QueueFull as e:
      raise QueueFull(f"{self._queue.maxsize} requests are waiting") from e
    return await pending.future

  async def _next_batch(self) -> list[_Pending]:
    batch = [await self._queue.get()]
    deadline = asyncio.get_running_loop().time() + self.max_wait_seconds
    while len(batch) < self.max_batch_size:
      try:
        batch.append(self._queue.get_nowait())
        continue
      except asyncio.QueueEmpty:
        pass
      remaining = deadline - asyncio.get_running_loop().time()
      if remaining <= 0:
        break
      try:
        batch.append(await asyncio.wait_for(self._queue.get(), remaining))
      except asyncio.TimeoutError:
        break
    return batch

  async def _work(self) -> None:
    while True:
      batch = await self._next_batch()
      live = [pending for pending in batch if not pending.future.cancelled()]
      if not live:
        continue
      self.batch_sizes.append(len(live))
      try:
        results = await asyncio.to_thread(self.process, [pending.item for pending in live])
        if len(results) != len(live):
          raise RuntimeError(f"{len(results)} results for a batch of {len(live)}")
      except Exception as e:  # pylint: disable=broad-exception-caught
        # The batch's requests fail with it; the worker serves the next batch.
        for pending in live:
          if not pending.future.done():
            pending.future.set_exception(e)
        continue
      for pending, result in zip(live, results):
        if not pending.future.done():
          pending.future.set_result(result)


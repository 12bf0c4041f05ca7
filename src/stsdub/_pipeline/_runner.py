"""Calling one stage instance: threads or await, a limiter, batching across streams, retries."""

from __future__ import annotations

import inspect
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio
import attrs

from ..errors import ErrorCode, StageError

if TYPE_CHECKING:
    from ._job import Job

__all__ = ["StageRunner", "guarded", "wrap_exception"]

log = logging.getLogger("stsdub")

Req = TypeVar("Req")
Res = TypeVar("Res")

DEFAULT_MAX_BATCH = 16


def wrap_exception(exc: BaseException, stage: str) -> StageError:
    """A StageError for anything a stage raised; foreign exceptions become INTERNAL_ERROR."""
    if isinstance(exc, StageError):
        return exc.with_stage(stage)
    err = StageError(ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}", stage)
    err.__cause__ = exc
    return err


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - async callable objects
    )


@attrs.define(eq=False)
class _Waiter(Generic[Req, Res]):
    request: Req
    deadline: float
    done: anyio.Event = attrs.field(factory=anyio.Event)
    result: Res | None = None
    error: StageError | None = None
    abandoned: bool = False


class StageRunner(Generic[Req, Res]):
    """Runs one method of one stage instance.

    Sync methods run in worker threads and async ones are awaited, both under a limiter of
    ``concurrency`` calls. A thread whose caller gave up (timeout, cancel) is abandoned, not
    waited for: it frees its limiter slot so a hung model call cannot block later fragments.
    When the stage has ``<method>_batch``, requests that wait at the same time are handed
    over in one call (see :meth:`run_batches`).
    """

    def __init__(self, stage: object, method: str, name: str) -> None:
        self.stage = stage
        self.name = name
        self._fn: Callable[[Req], Any] = getattr(stage, method)
        self._fn_async = _is_async(self._fn)
        concurrency = getattr(stage, "concurrency", 1)
        if not isinstance(concurrency, int) or concurrency < 1:
            concurrency = 1
        self.concurrency = concurrency
        self._limiter = anyio.CapacityLimiter(concurrency)
        batch_fn = getattr(stage, f"{method}_batch", None)
        self._batch_fn: Callable[[list[Req]], Any] | None = batch_fn if callable(batch_fn) else None
        self._batch_async = self._batch_fn is not None and _is_async(self._batch_fn)
        max_batch = getattr(stage, "max_batch_size", DEFAULT_MAX_BATCH)
        self.max_batch = max_batch if isinstance(max_batch, int) and max_batch > 0 else DEFAULT_MAX_BATCH
        self._queue: deque[_Waiter[Req, Res]] = deque()
        self._queued = anyio.Event()
        self.calls = 0
        self.batch_calls = 0
        #: Calls waiting for or inside the stage now (a stream's interim captions run only
        #: when a slot is free, so they never queue ahead of a fragment).
        self.active = 0

    @property
    def reads_context(self) -> bool:
        """Whether the stage declares ``supports_context`` (a translator that reads the text
        and translations before the one it translates)."""
        return getattr(self.stage, "supports_context", False) is True

    @property
    def batches(self) -> bool:
        return self._batch_fn is not None

    async def _invoke(self, fn: Callable[[Any], Any], arg: Any, is_async: bool) -> Any:
        if is_async:
            async with self._limiter:
                return await fn(arg)
        return await anyio.to_thread.run_sync(fn, arg, limiter=self._limiter, abandon_on_cancel=True)

    async def call(self, request: Req, deadline: float = math.inf) -> Res:
        """One request through the stage; raises StageError (the caller handles timeouts)."""
        self.active += 1
        try:
            return await self._call(request, deadline)
        finally:
            self.active -= 1

    async def _call(self, request: Req, deadline: float) -> Res:
        if self._batch_fn is None:
            self.calls += 1
            try:
                return await self._invoke(self._fn, request, self._fn_async)  # type: ignore[no-any-return]
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as exc:
                raise wrap_exception(exc, self.name) from exc
        waiter: _Waiter[Req, Res] = _Waiter(request, deadline)
        self._queue.append(waiter)
        self._queued.set()
        try:
            await waiter.done.wait()
        except BaseException:
            waiter.abandoned = True
            raise
        if waiter.error is not None:
            raise waiter.error
        return waiter.result  # type: ignore[return-value]

    async def run_batches(self) -> None:
        """Serve queued requests in batches, forever; one task per unit of ``concurrency``."""
        while True:
            while not self._queue:
                await self._queued.wait()
                self._queued = anyio.Event()
            batch: list[_Waiter[Req, Res]] = []
            while self._queue and len(batch) < self.max_batch:
                waiter = self._queue.popleft()
                if not waiter.abandoned:
                    batch.append(waiter)
            if batch:
                await self._run_batch(batch)

    async def _run_batch(self, batch: Sequence[_Waiter[Req, Res]]) -> None:
        assert self._batch_fn is not None
        self.batch_calls += 1
        self.calls += len(batch)
        error: StageError | None = None
        results: Sequence[Res] = ()
        # Nobody waits past the latest deadline of the batch, so a hung call is abandoned then.
        with anyio.CancelScope(deadline=max(w.deadline for w in batch)) as scope:
            try:
                results = list(
                    await self._invoke(self._batch_fn, [w.request for w in batch], self._batch_async)
                )
            except Exception as exc:
                error = wrap_exception(exc, self.name)
        if scope.cancelled_caught:
            error = StageError(ErrorCode.TIMEOUT, "batch call exceeded every fragment's budget", self.name)
        elif error is None and len(results) != len(batch):
            error = StageError(
                ErrorCode.INTERNAL_ERROR,
                f"{self.name} batch method returned {len(results)} results for {len(batch)} requests",
                self.name,
            )
        for i, waiter in enumerate(batch):
            item: Any = error if error is not None else results[i]
            # A batch method may answer one item with an exception and the others normally.
            if isinstance(item, BaseException):
                waiter.error = wrap_exception(item, self.name)
            else:
                waiter.result = item
            waiter.done.set()


async def guarded(job: Job, step: Awaitable[None]) -> None:
    """Run one step of a stream's job; a bug in it fails this fragment, not the stream."""
    try:
        await step
    except Exception as exc:
        log.exception("stsdub pipeline error on fragment %s", job.fragment.fragment_id)
        job.result = None
        job.error = wrap_exception(exc, "pipeline")

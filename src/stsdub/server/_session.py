"""One client connection and the streams it opened: ordered sends, queued fragments, answers.

A :class:`Connection` writes every event to its client in the order the service decided
them. A :class:`Session` is one stream of a connection: it queues the fragments the client
sent, hands them to the library stream one at a time (the *feeder*), and turns each result
into ``fragment:processed`` (the *pump*); :class:`Pressure` is the stream's backpressure
level, counted as the reference service counts it.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import attrs
import numpy as np
import socketio

from .._core._captions import Caption
from .._core._values import Action, AudioAsset, AudioBuffer, DubResult, Fragment, Severity, Status
from .._dubber import Dubber
from .._pipeline._backpressure import BackpressureLevels
from .._pipeline._stream import Stream
from ..errors import ErrorCode, StageError, StsdubError
from ._protocol import (
    AudioFormat,
    StreamInit,
    caption_payload,
    error_payload,
    processed_payload,
)

if TYPE_CHECKING:
    from ._app import DubbingService

__all__ = ["ACTIONS", "Connection", "Pressure", "Session", "refused_result"]

log = logging.getLogger("stsdub.server")


ACTIONS = {Severity.LOW: Action.NONE, Severity.MEDIUM: Action.SLOW_DOWN, Severity.HIGH: Action.PAUSE}


class Pressure:
    """A stream's backpressure level, from fragments received and not yet answered."""

    def __init__(self, max_inflight: int, levels: BackpressureLevels, critical: int) -> None:
        self.max_inflight = max_inflight
        self.low, self.medium, self.high = levels.resolve(max_inflight)
        self.critical = critical
        self.severity = Severity.LOW

    def update(self, outstanding: int, *, overflow: bool = False) -> Severity | None:
        """The new level when it changed, else None (LOW comes back only at ``low``)."""
        if overflow or outstanding >= self.high:
            severity = Severity.HIGH
        elif outstanding >= self.medium:
            severity = Severity.MEDIUM
        elif outstanding <= self.low:
            severity = Severity.LOW
        else:
            return None
        if severity is self.severity:
            return None
        self.severity = severity
        return severity


class Connection:
    """One Socket.IO client: its outgoing events, in order, and the streams it opened."""

    def __init__(self, sio: socketio.AsyncServer, sid: str) -> None:
        self.sio = sio
        self.sid = sid
        self.streams: set[str] = set()
        self._outbox: deque[tuple[str, Any]] = deque()
        self._wakeup = anyio.Event()
        self._scope: anyio.CancelScope | None = None

    def send(self, event: str, payload: Any) -> None:
        """Queue an event; the writer sends events in the order they were queued."""
        self._outbox.append((event, payload))
        self._wakeup.set()

    async def run_writer(self) -> None:
        with anyio.CancelScope() as self._scope:
            while True:
                while not self._outbox:
                    await self._wakeup.wait()
                    self._wakeup = anyio.Event()
                event, payload = self._outbox.popleft()
                await self.sio.emit(event, payload, to=self.sid)

    def close(self) -> None:
        self._outbox.clear()
        if self._scope is not None:
            self._scope.cancel()


@attrs.define(eq=False)
class Entry:
    """A queued fragment on its way to the pipeline and back."""

    fragment: Fragment
    received_at: float
    refused: StsdubError | None = None


class Session:
    """One stream of one connection."""

    def __init__(
        self,
        service: DubbingService,
        connection: Connection,
        init: StreamInit,
        overrides: Mapping[str, Any],
        pressure: Pressure,
    ) -> None:
        self.service = service
        self.connection = connection
        self.init = init
        self.stream_id = init.stream_id
        self.session_id = uuid.uuid4().hex
        self.overrides = dict(overrides)
        self.pressure = pressure
        self.state = "initializing"
        self.last_seq: int | None = None
        self.outstanding = 0
        self.counts = {"success": 0, "partial": 0, "failed": 0, "rejected": 0}
        self.total_processing_ms = 0.0
        self._inbox_in, self._inbox_out = anyio.create_memory_object_stream[Entry](pressure.critical)
        self._order_in, self._order_out = anyio.create_memory_object_stream[Entry](pressure.critical)
        self._scope: anyio.CancelScope | None = None
        #: The library stream, once running (``audio:partial`` goes straight to it).
        self.stream: Stream | None = None

    @property
    def audio(self) -> AudioFormat:
        return self.init.audio

    # -- called from event handlers (no await: decisions happen in arrival order) ------------

    def accept(self, fragment: Fragment, received_at: float) -> Severity | None:
        self._inbox_in.send_nowait(Entry(fragment, received_at))
        self.last_seq = fragment.sequence_number
        self.outstanding += 1
        self.service.metrics.in_flight.inc()
        return self.pressure.update(self.outstanding)

    def end(self) -> None:
        self.state = "ending"
        self._inbox_in.close()

    def cancel(self) -> None:
        self.state = "closed"
        self._inbox_in.close()
        if self._scope is not None:
            self._scope.cancel()

    # -- the session task --------------------------------------------------------------------

    async def run(
        self, dubber: Dubber, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        started = False
        completed = False
        try:
            with anyio.CancelScope() as self._scope:
                async with dubber.open_stream(self.stream_id, **self.overrides) as stream:
                    if self.state == "initializing":
                        self.state = "active"
                    started = True
                    self.stream = stream
                    task_status.started()
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._feed, stream)
                        if self.overrides.get("captions"):
                            # Captions go out as they come; results still in fragment order.
                            send, receive = anyio.create_memory_object_stream[DubResult](math.inf)
                            tg.start_soon(self._captions, stream, send)
                            await self._pump(aiter(receive))
                        else:
                            await self._pump(aiter(stream))
                    completed = True
            if completed:
                self._complete()
        except Exception as exc:
            if not started:
                raise  # stream:init answers it
            log.exception("stream session failed", extra={"stream_id": self.stream_id})
            self.connection.send(
                "error",
                error_payload(
                    StageError(
                        ErrorCode.INTERNAL_ERROR, f"stream failed: {type(exc).__name__}: {exc}", "session"
                    ),
                    stream_id=self.stream_id,
                ),
            )
        finally:
            self._inbox_out.close()
            self._order_out.close()
            self.service.metrics.in_flight.dec(self.outstanding)
            self.outstanding = 0
            self.service._drop(self)

    async def _feed(self, stream: Stream) -> None:
        async with self._inbox_out, self._order_in:
            async for entry in self._inbox_out:
                try:
                    await stream.send(entry.fragment)
                except StsdubError as exc:
                    # The library refused what the service accepted (e.g. a Dubber with a
                    # shorter max_fragment_seconds): still one answer, in its place.
                    entry.refused = exc
                await self._order_in.send(entry)
            await stream.end()

    async def _captions(self, stream: Stream, results: anyio.abc.ObjectSendStream[DubResult]) -> None:
        async with results:
            async for event in stream.events():
                if isinstance(event, Caption):
                    self.connection.send("caption", caption_payload(event))
                else:
                    await results.send(event)

    async def _pump(self, results: AsyncIterator[DubResult]) -> None:
        async with self._order_out:
            async for entry in self._order_out:
                if entry.refused is None:
                    result = await anext(results)
                else:
                    result = refused_result(entry.fragment, entry.refused)
                self._answer(entry, result)

    def _answer(self, entry: Entry, result: DubResult) -> None:
        service = self.service
        elapsed = time.perf_counter() - entry.received_at
        payload = processed_payload(result, channels=self.audio.channels, processing_time_ms=1000 * elapsed)
        self.outstanding -= 1
        service.metrics.in_flight.dec()
        self.counts[result.status.value] += 1
        self.total_processing_ms += 1000 * elapsed
        self.connection.send("fragment:processed", payload)
        changed = self.pressure.update(self.outstanding)
        if changed is not None:
            service._backpressure(self, changed)
        service.metrics.observe_result(result, elapsed)
        extra = {
            "event": "fragment:processed",
            "stream_id": result.stream_id,
            "fragment_id": result.fragment_id,
            "sequence_number": result.sequence_number,
            "status": result.status.value,
            "processing_time_ms": payload["processing_time_ms"],
            "stage_timings": payload["stage_timings"],
            "error": payload["error"],
            "warnings": payload["warnings"] or None,
        }
        if result.status is Status.FAILED:
            log.warning("fragment failed", extra=extra)
        else:
            log.info("fragment processed", extra=extra)
        if service.artifacts is not None:
            service.artifacts.submit(result, payload)

    def _complete(self) -> None:
        answered = sum(self.counts[k] for k in ("success", "partial", "failed"))
        payload = {
            "stream_id": self.stream_id,
            "session_id": self.session_id,
            "total_fragments": answered,
            "success_count": self.counts["success"],
            "partial_count": self.counts["partial"],
            "failed_count": self.counts["failed"],
            "rejected_count": self.counts["rejected"],
            "avg_processing_time_ms": round(self.total_processing_ms / answered) if answered else 0,
        }
        self.connection.send("stream:complete", payload)
        log.info("stream complete", extra={"event": "stream:complete", "stream_id": self.stream_id})


def refused_result(fragment: Fragment, exc: StsdubError) -> DubResult:
    """A FAILED result with silence for a fragment the library refused at ``send``."""
    error = StageError(ErrorCode.INVALID_AUDIO_FORMAT, str(exc), "ingest")
    silence = AudioBuffer(np.zeros(fragment.audio.size, dtype=np.float32), fragment.sample_rate)
    audio = AudioAsset(
        f"audio-{fragment.fragment_id}-{fragment.sequence_number}",
        (f"fragment:{fragment.fragment_id}",),
        silence,
        "silence",
    )
    return DubResult(
        sequence_number=fragment.sequence_number,
        fragment_id=fragment.fragment_id,
        stream_id=fragment.stream_id or "",
        status=Status.FAILED,
        audio=audio,
        error=error,
        timestamp_ms=fragment.timestamp_ms,
        metadata=fragment.metadata,
    )

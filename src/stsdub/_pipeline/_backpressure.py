"""Backpressure levels of a stream, and delivery of their changes to the host."""

from __future__ import annotations

import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Union

import anyio
import attrs

from .._core._values import Action, BackpressureEvent, Severity
from ..errors import ConfigurationError

__all__ = ["BackpressureCallback", "BackpressureLevels", "LevelTracker"]

log = logging.getLogger("stsdub")

BackpressureCallback = Callable[[BackpressureEvent], Union[Awaitable[None], None]]

_ACTIONS = {Severity.LOW: Action.NONE, Severity.MEDIUM: Action.SLOW_DOWN, Severity.HIGH: Action.PAUSE}


@attrs.frozen
class BackpressureLevels:
    """When a stream's backpressure level changes, counted in fragments sent and unanswered.

    Defaults follow the reference service for a stream with ``max_inflight = N``: MEDIUM
    (slow down) once more than N are waiting or in the pipeline, HIGH (pause) beyond 2N, and
    back to LOW only below N, so the level does not flap at the boundary.

    Args:
        low: At or below this, the level returns to LOW. Default ``N - 1``.
        medium: At or above this, MEDIUM. Default ``N + 1``.
        high: At or above this, HIGH. Default ``2N + 1``.
    """

    low: int | None = None
    medium: int | None = None
    high: int | None = None

    def resolve(self, max_inflight: int) -> tuple[int, int, int]:
        low = max_inflight - 1 if self.low is None else self.low
        medium = max_inflight + 1 if self.medium is None else self.medium
        high = 2 * max_inflight + 1 if self.high is None else self.high
        if not 0 <= low < medium <= high:
            raise ConfigurationError(
                f"backpressure levels need 0 <= low < medium <= high, got {low}, {medium}, {high}"
            )
        return low, medium, high


class LevelTracker:
    """Turns a stream's demand into level changes and hands them to the callback in order."""

    # Events wait here only while the host's callback is slow; past this many, the oldest
    # are dropped (the latest level is always delivered).
    MAX_PENDING_EVENTS = 64

    def __init__(
        self,
        stream_id: str,
        max_inflight: int,
        levels: BackpressureLevels,
        callback: BackpressureCallback | None,
    ) -> None:
        self.stream_id = stream_id
        self.max_inflight = max_inflight
        self._low, self._medium, self._high = levels.resolve(max_inflight)
        self._callback = callback
        self.severity = Severity.LOW
        self._pending: deque[BackpressureEvent] = deque(maxlen=self.MAX_PENDING_EVENTS)
        self._wakeup = anyio.Event()

    def update(self, demand: int, *, overflow: bool = False) -> None:
        """Record the current demand; ``overflow`` forces HIGH (a fragment was turned away)."""
        if overflow or demand >= self._high:
            severity = Severity.HIGH
        elif demand >= self._medium:
            severity = Severity.MEDIUM
        elif demand <= self._low:
            severity = Severity.LOW
        else:
            return
        if severity is self.severity:
            return
        self.severity = severity
        if self._callback is None:
            return
        self._pending.append(
            BackpressureEvent(self.stream_id, severity, _ACTIONS[severity], demand, self.max_inflight)
        )
        self._wakeup.set()

    async def deliver_forever(self) -> None:
        """Call the host's callback for each change, in order (a task of the stream)."""
        if self._callback is None:
            return
        while True:
            while not self._pending:
                await self._wakeup.wait()
                self._wakeup = anyio.Event()
            await self._deliver(self._pending.popleft())

    async def flush(self) -> None:
        """Deliver what is left (at the end of a stream)."""
        while self._pending:
            await self._deliver(self._pending.popleft())

    async def _deliver(self, event: BackpressureEvent) -> None:
        assert self._callback is not None
        try:
            outcome = self._callback(event)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:
            # The host's callback must not break the stream it observes.
            log.exception("on_backpressure callback failed for stream %s", self.stream_id)

"""What the fakes of the whole-recording kinds (separator, diarizer) share: latency, failures
by sequence number, sync or async, and records of the requests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import anyio

from ..errors import ErrorCode, StageError

Req = TypeVar("Req")
Out = TypeVar("Out")


class WholeRecordingFake(Generic[Req, Out]):
    """Calls :meth:`answer`, after ``latency`` seconds, unless ``fail`` names the request.

    Subclasses set ``kind``, ``stage`` (the stage name failures carry) and ``method`` (the
    name of the stage method, bound here to the sync or async form), and define
    :meth:`answer`.
    """

    kind = ""
    stage = ""
    method = ""
    concurrency = 1

    def __init__(
        self,
        *,
        latency: float = 0.0,
        fail: Mapping[int, ErrorCode | str] | None = None,
        mode: str = "sync",
        device: str = "cpu",
        record: bool = True,
    ) -> None:
        if mode not in ("sync", "async"):
            raise ValueError(f"mode must be 'sync' or 'async', got {mode!r}")
        self.latency = latency
        self.fail = dict(fail or {})
        self.mode = mode
        self.device = device
        self.record = record
        self.requests: list[Req] = []
        self.calls = 0
        self.closed = False
        self._lock = threading.Lock()
        bound: Callable[[Req], Any] = self._call_async if mode == "async" else self._call_sync
        setattr(self, self.method, bound)

    def answer(self, request: Req) -> Out:
        """The stage's answer, without latency, failures or records."""
        raise NotImplementedError

    def _enter(self, request: Req) -> ErrorCode | None:
        with self._lock:
            self.calls += 1
            if self.record:
                self.requests.append(request)
        code = self.fail.get(request.sequence_number)  # type: ignore[attr-defined]
        return None if code is None else ErrorCode(code)

    def _outcome(self, request: Req, code: ErrorCode | None) -> Out:
        if code is not None:
            seq = request.sequence_number  # type: ignore[attr-defined]
            raise StageError(code, f"fake {self.kind} failure for {seq}", self.stage)
        return self.answer(request)

    def _call_sync(self, request: Req) -> Out:
        code = self._enter(request)
        time.sleep(self.latency)
        return self._outcome(request, code)

    async def _call_async(self, request: Req) -> Out:
        code = self._enter(request)
        await anyio.sleep(self.latency)
        return self._outcome(request, code)

    def close(self) -> None:
        self.closed = True

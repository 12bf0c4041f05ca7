"""Fake stages: no models, configurable latency, failures and hangs."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import anyio
import numpy as np

from .._core._values import (
    ASRRequest,
    AudioBuffer,
    SynthesisRequest,
    Transcript,
    Translation,
    TranslationRequest,
)
from ..errors import ErrorCode, StageError

__all__ = ["FakeASR", "FakeSynthesizer", "FakeTranslator"]

Req = TypeVar("Req", ASRRequest, TranslationRequest, SynthesisRequest)

Latency = float | Callable[[Any], float]
Failures = Mapping[int, ErrorCode | str] | Callable[[Any], ErrorCode | str | None] | None


class _FakeStage(Generic[Req]):
    """Shared behaviour: latency, failures by code, hangs, call records.

    By default a fake keeps every request it receives, in order, in ``requests`` (and the
    size of every batch call in ``batches``), so that tests can inspect them. That memory
    grows with every fragment: for long runs (soak tests, benchmarks) pass ``record=False``,
    and only the counters ``calls``, ``active`` and ``max_active`` are kept up to date.

    Args:
        latency: Seconds each call takes, or a function of the request giving them.
        fail: ``{sequence_number: ErrorCode}`` or a function of the request returning an
            ErrorCode (or None). Failing requests raise ``StageError`` with that code.
        fail_times: How many times each failing sequence number fails before it succeeds
            (to exercise retries). ``None``: always.
        hang: Sequence numbers whose calls sleep ``hang_seconds`` (a stuck model).
        hang_seconds: How long a hang lasts; a sync fake blocks its thread that long.
        mode: ``"sync"`` (the pipeline runs it in a thread) or ``"async"``.
        batch: Also offer the ``*_batch`` method, so the pipeline batches across streams.
        concurrency: Exposed as the ``concurrency`` attribute the pipeline honours.
        device: Exposed as the ``device`` attribute, as a factory-built stage has it.
        record: Keep each request in ``requests`` and each batch size in ``batches``.
            ``False``: both stay empty, nothing per request is kept (``fail_times`` still
            remembers how often each failing sequence number failed).

    Attributes:
        requests: Every request received, in arrival order (empty with ``record=False``).
        batches: The number of requests in each batch call (empty with ``record=False``).
        calls: How many requests were received, batched or not; counted either way.
        active: Requests being worked on now.
        max_active: The most requests worked on at once so far.
        closed: Whether ``close()`` was called.
    """

    kind = ""

    def __init__(
        self,
        *,
        latency: Latency = 0.0,
        fail: Failures = None,
        fail_times: int | None = None,
        hang: Iterable[int] = (),
        hang_seconds: float = 3600.0,
        mode: str = "sync",
        batch: bool = False,
        concurrency: int = 1,
        device: str = "cpu",
        record: bool = True,
    ) -> None:
        if mode not in ("sync", "async"):
            raise ValueError(f"mode must be 'sync' or 'async', got {mode!r}")
        self.latency = latency
        self.fail = fail
        self.fail_times = fail_times
        self.hang = frozenset(hang)
        self.hang_seconds = hang_seconds
        self.mode = mode
        self.device = device
        self.concurrency = concurrency
        self.record = record
        self.requests: list[Req] = []
        self.batches: list[int] = []
        self.calls = 0
        self.active = 0
        self.max_active = 0
        self.closed = False
        self._failures_seen: dict[int, int] = {}
        self._lock = threading.Lock()
        method = {"asr": "transcribe", "translator": "translate", "synthesizer": "synthesize"}[self.kind]
        single = self._call_async if mode == "async" else self._call_sync
        setattr(self, method, single)
        if batch:
            setattr(self, f"{method}_batch", self._batch_async if mode == "async" else self._batch_sync)

    # What each fake produces; subclasses override.
    def _produce(self, request: Req) -> Any:
        raise NotImplementedError

    def _enter(self, request: Req) -> tuple[float, ErrorCode | None, bool]:
        with self._lock:
            self.calls += 1
            if self.record:
                self.requests.append(request)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            seq = request.sequence_number
            code = self._failure_for(request)
            if code is not None and self.fail_times is not None:
                seen = self._failures_seen.get(seq, 0)
                self._failures_seen[seq] = seen + 1
                if seen >= self.fail_times:
                    code = None
        latency = self.latency(request) if callable(self.latency) else self.latency
        return float(latency), code, seq in self.hang

    def _record_batch(self, size: int) -> None:
        if self.record:
            with self._lock:
                self.batches.append(size)

    def _failure_for(self, request: Req) -> ErrorCode | None:
        if self.fail is None:
            return None
        code = self.fail(request) if callable(self.fail) else self.fail.get(request.sequence_number)
        return None if code is None else ErrorCode(code)

    def _leave(self) -> None:
        with self._lock:
            self.active -= 1

    def _outcome(self, request: Req, code: ErrorCode | None) -> Any:
        if code is not None:
            raise StageError(code, f"fake {self.kind} failure for fragment {request.sequence_number}")
        return self._produce(request)

    def _call_sync(self, request: Req) -> Any:
        latency, code, hangs = self._enter(request)
        try:
            time.sleep(self.hang_seconds if hangs else latency)
            return self._outcome(request, code)
        finally:
            self._leave()

    async def _call_async(self, request: Req) -> Any:
        latency, code, hangs = self._enter(request)
        try:
            await anyio.sleep(self.hang_seconds if hangs else latency)
            return self._outcome(request, code)
        finally:
            self._leave()

    def _batch_sync(self, requests: list[Req]) -> list[Any]:
        self._record_batch(len(requests))
        entered = [self._enter(r) for r in requests]
        try:
            hangs = any(h for _, _, h in entered)
            time.sleep(self.hang_seconds if hangs else max(lat for lat, _, _ in entered))
            return [_try(self._outcome, r, code) for r, (_, code, _) in zip(requests, entered, strict=True)]
        finally:
            for _ in requests:
                self._leave()

    async def _batch_async(self, requests: list[Req]) -> list[Any]:
        self._record_batch(len(requests))
        entered = [self._enter(r) for r in requests]
        try:
            hangs = any(h for _, _, h in entered)
            await anyio.sleep(self.hang_seconds if hangs else max(lat for lat, _, _ in entered))
            return [_try(self._outcome, r, code) for r, (_, code, _) in zip(requests, entered, strict=True)]
        finally:
            for _ in requests:
                self._leave()

    def close(self) -> None:
        self.closed = True


def _try(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except StageError as exc:
        return exc


class FakeASR(_FakeStage[ASRRequest]):
    """Hears ``"speech <sequence_number>"`` in any fragment louder than ``silence_rms``.

    Quieter fragments give an empty transcript (no speech). ``text`` replaces the words: a
    string, or a function of the request.
    """

    kind = "asr"

    def __init__(
        self,
        *,
        text: str | Callable[[ASRRequest], str] | None = None,
        language: str = "en",
        silence_rms: float = 1e-3,
        **kwargs: Any,
    ) -> None:
        self.text = text
        self.language = language
        self.silence_rms = silence_rms
        super().__init__(**kwargs)

    def _produce(self, request: ASRRequest) -> Transcript:
        samples = request.audio.samples
        rms = math.sqrt(float(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
        if rms < self.silence_rms:
            return Transcript("", request.language or self.language)
        if self.text is None:
            text = f"speech {request.sequence_number}"
        else:
            text = self.text(request) if callable(self.text) else self.text
        return Transcript(text, request.language or self.language)


class FakeTranslator(_FakeStage[TranslationRequest]):
    """Translates ``text`` into ``"[<target>] <text>"``.

    With ``length_budget=True`` it declares ``supports_length_budget`` and answers a request
    that carries a :class:`~stsdub.LengthBudget` with that text cut, at a word, to the
    budget's ``max_chars``. With ``context=True`` it declares ``supports_context``, so it is
    sent :attr:`~stsdub.TranslationRequest.context` (kept in ``requests``, not translated).
    """

    kind = "translator"

    def __init__(
        self,
        *,
        supported: Iterable[str] | None = None,
        length_budget: bool = False,
        context: bool = False,
        **kwargs: Any,
    ) -> None:
        self.supported = None if supported is None else frozenset(supported)
        if length_budget:
            self.supports_length_budget = True
        if context:
            self.supports_context = True
        super().__init__(**kwargs)

    def _produce(self, request: TranslationRequest) -> Translation:
        if self.supported is not None and request.target_language not in self.supported:
            raise StageError(
                ErrorCode.UNSUPPORTED_LANGUAGE, f"fake translator cannot reach {request.target_language}"
            )
        text = f"[{request.target_language}] {request.text}"
        if request.budget is not None and len(text) > request.budget.max_chars:
            cut = text[: request.budget.max_chars + 1]
            text = cut.rsplit(" ", 1)[0] if " " in cut else cut[: request.budget.max_chars]
        return Translation(text)


class FakeSynthesizer(_FakeStage[SynthesisRequest]):
    """Speaks a quiet tone as long as ``target_duration * duration_ratio`` seconds.

    Without a target it speaks ``seconds_per_char`` per character. ``voice_pools`` =
    ``(lower, higher)`` voice names is what it offers distinct speakers
    (``speaker_voices``); by default none, so every speaker keeps the stream's voice.
    """

    kind = "synthesizer"

    def __init__(
        self,
        *,
        sample_rate: int = 16_000,
        duration_ratio: float = 1.0,
        seconds_per_char: float = 0.06,
        voice_pools: tuple[Sequence[str], Sequence[str]] = ((), ()),
        **kwargs: Any,
    ) -> None:
        self.voice_pools = (tuple(voice_pools[0]), tuple(voice_pools[1]))
        self.sample_rate = sample_rate
        self.duration_ratio = duration_ratio
        self.seconds_per_char = seconds_per_char
        super().__init__(**kwargs)

    def speaker_voices(self, language: str, voice: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The ``voice_pools`` it was built with, whatever the language."""
        return self.voice_pools

    def _produce(self, request: SynthesisRequest) -> AudioBuffer:
        if request.target_duration is not None:
            seconds = request.target_duration * self.duration_ratio
        else:
            seconds = len(request.text) * self.seconds_per_char
        n = max(1, round(seconds * self.sample_rate))
        t = np.arange(n, dtype=np.float32) / self.sample_rate
        return AudioBuffer((0.2 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32), self.sample_rate)

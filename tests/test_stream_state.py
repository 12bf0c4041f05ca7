"""A stateful test of one stream under random send / end / cancel / close sequences."""

from __future__ import annotations

import anyio
import anyio.from_thread
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import stsdub
from stsdub.testing import FakeASR, FakeSynthesizer, FakeTranslator

from .strategies import tone

MAX_INFLIGHT = 2


class StreamMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.portal_cm = anyio.from_thread.start_blocking_portal()
        self.portal = self.portal_cm.__enter__()
        dubber = stsdub.Dubber(
            FakeASR(latency=lambda r: 0.002 * (r.sequence_number % 3), mode="async"),
            FakeTranslator(fail={4: "RATE_LIMIT_EXCEEDED", 7: "QUOTA_EXCEEDED"}, fail_times=1),
            FakeSynthesizer(mode="async"),
            target_language="de",
            max_inflight=MAX_INFLIGHT,
            retry_backoff=0.001,
        )
        self.dubber_cm = self.portal.wrap_async_context_manager(dubber)
        self.dubber_cm.__enter__()
        self.stream_cm = self.portal.wrap_async_context_manager(dubber.open_stream("s"))
        self.stream = self.stream_cm.__enter__()
        self.results: list[stsdub.DubResult] = []
        self.consumer_done = self.portal.start_task_soon(self._consume)
        self.last_seq = -1
        self.accepted: list[int] = []
        self.ended = False
        self.closed = False

    async def _consume(self) -> None:
        async for result in self.stream:
            self.results.append(result)

    def _send(self, seq: int, seconds: float = 0.02) -> None:
        fragment = stsdub.Fragment(seq, tone(seconds), 16_000)
        self.portal.call(self.stream.send, fragment)

    @rule(step=st.integers(1, 3))
    def send_next(self, step: int) -> None:
        seq = self.last_seq + step
        if self.ended:
            with pytest.raises(stsdub.StreamClosedError):
                self._send(seq)
            return
        self._send(seq)
        self.last_seq = seq
        self.accepted.append(seq)

    @precondition(lambda self: self.last_seq >= 0 and not self.ended)
    @rule(back=st.integers(0, 2))
    def send_stale(self, back: int) -> None:
        with pytest.raises(stsdub.SequenceError):
            self._send(max(self.last_seq - back, 0))

    @precondition(lambda self: not self.ended)
    @rule()
    def send_oversize(self) -> None:
        with pytest.raises(stsdub.InvalidAudioError):
            self._send(self.last_seq + 1, seconds=31.0)

    @precondition(lambda self: not self.ended)
    @rule()
    def send_cancelled(self) -> None:
        seq = self.last_seq + 1
        before = self.stream.accepted

        async def send_with_deadline() -> None:
            with anyio.move_on_after(0):
                await self.stream.send(stsdub.Fragment(seq, tone(0.02), 16_000))

        self.portal.call(send_with_deadline)
        self.last_seq = seq  # spent either way
        if self.stream.accepted > before:
            self.accepted.append(seq)

    @rule()
    def end(self) -> None:
        self.portal.call(self.stream.end)
        self.ended = True

    @precondition(lambda self: not self.closed)
    @rule()
    def close(self) -> None:
        self.portal.call(self.stream.aclose)
        self.ended = self.closed = True

    @invariant()
    def results_are_an_ordered_prefix(self) -> None:
        got = [r.sequence_number for r in list(self.results)]
        assert got == self.accepted[: len(got)]
        assert self.stream.in_flight <= MAX_INFLIGHT

    def teardown(self) -> None:
        try:
            if not self.closed:
                self.portal.call(self.stream.end)
                self.consumer_done.result(timeout=30)
                # Exactly one result per accepted fragment.
                assert [r.sequence_number for r in self.results] == self.accepted
                for result in self.results:
                    expected_ok = result.sequence_number != 7
                    assert result.ok is expected_ok, result
            self.stream_cm.__exit__(None, None, None)
            self.dubber_cm.__exit__(None, None, None)
        finally:
            self.portal_cm.__exit__(None, None, None)


TestStream = StreamMachine.TestCase
TestStream.settings = settings(max_examples=30, stateful_step_count=25, deadline=None)

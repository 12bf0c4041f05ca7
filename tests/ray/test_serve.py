"""Stages on a real local Ray Serve: dubbing through ``ray:`` names, and a replica killed."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import anyio
import pytest

import stsdub
from stsdub import Status
from stsdub.ray import RemoteASR

from ..strategies import fragments

pytest.importorskip("ray")

pytestmark = [pytest.mark.distributed, pytest.mark.anyio]

STREAMS = ("a", "b", "c")


def interleaved(count: int, seconds: float = 0.1) -> list[stsdub.Fragment]:
    per_stream = [fragments(count, seconds=seconds, stream_id=s) for s in STREAMS]
    return [f for group in zip(*per_stream, strict=True) for f in group]


def make_dubber(apps: dict[str, str], **kwargs: Any) -> stsdub.Dubber:
    return stsdub.Dubber(
        asr=f"ray:{apps['asr']}",
        translator=f"ray:{apps['translator']}",
        synthesizer=f"ray:{apps['synthesizer']}",
        asr_options={"timeout": 2.0},
        source_language="en",
        target_language="es",
        fragment_timeout=8.0,
        **kwargs,
    )


def check_streams(results: list[stsdub.DubResult], count: int) -> None:
    for stream_id in STREAMS:
        mine = [r for r in results if r.stream_id == stream_id]
        assert [r.sequence_number for r in mine] == list(range(count)), stream_id
        for r in mine:
            assert r.status is Status.SUCCESS, (r, r.warnings)
            assert r.transcript is not None and r.transcript.text == f"speech {r.sequence_number}"
            assert r.translation is not None and r.translation.text == f"[es] speech {r.sequence_number}"


async def test_a_dubber_dubs_streams_through_ray_serve(stage_apps: dict[str, str]) -> None:
    async with make_dubber(stage_apps) as d:
        assert isinstance(d.stages["asr"], RemoteASR)
        # Asked at start, through Serve and @serve.batch: the fake behind it keeps to budgets.
        assert getattr(d.stages["translator"], "supports_length_budget", False) is True
        assert getattr(d.stages["synthesizer"], "supports_speed", False) is False
        results = [r async for r in d.dub(interleaved(4))]
    check_streams(results, 4)
    assert all(r.audio.duration == pytest.approx(0.1) for r in results)


class Recording:
    """Wraps a transport; records (stream, seq, started, ended, outcome) of every call."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[str, int, float, float, str]] = []

    async def call(self, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        request = payload["request"]
        started = time.monotonic()
        outcome = "ok"
        try:
            answer: dict[str, Any] = await self.inner.call(payload, timeout)
            if "error" in answer:
                outcome = answer["error"]["code"]
            return answer
        except stsdub.StageError as err:
            outcome = err.code.value
            raise
        except BaseException as exc:
            outcome = type(exc).__name__
            raise
        finally:
            self.calls.append(
                (request["stream_id"], request["sequence_number"], started, time.monotonic(), outcome)
            )


async def busy_replica(app_name: str, deadline: float) -> int:
    """The PID of a replica of ``app_name`` that is answering a request now."""
    import ray.util

    from stsdub.ray._replica import active_calls

    while time.monotonic() < deadline:
        for entry in ray.util.list_named_actors(all_namespaces=True):
            if not entry["name"].startswith(f"SERVE_REPLICA::{app_name}#"):
                continue
            actor = ray.get_actor(entry["name"], namespace=entry["namespace"])
            # Runs in the replica's process: its PID and how many requests it is answering.
            pid, active = await actor.__ray_call__.remote(lambda _replica: (os.getpid(), active_calls()))
            if active:
                return int(pid)
        await anyio.sleep(0.02)
    raise AssertionError(f"no replica of {app_name} got busy")


async def test_a_killed_replica_fails_over_and_every_fragment_is_answered_once(
    stage_apps: dict[str, str],
) -> None:
    count = 8
    results: list[stsdub.DubResult] = []
    async with make_dubber(stage_apps) as d:
        asr = d.stages["asr"]
        assert isinstance(asr, RemoteASR)
        recording = Recording(asr.transport)
        asr.transport = recording

        async def consume() -> None:
            results.extend([r async for r in d.dub(interleaved(count))])

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            pid = await busy_replica(stage_apps["asr"], time.monotonic() + 20)
            killed_at = time.monotonic()
            os.kill(pid, signal.SIGKILL)
    check_streams(results, count)

    # Calls in flight on the killed replica failed (retryably) and were answered on a retry.
    after = [c for c in recording.calls if c[3] >= killed_at]
    failed = {(s, q) for s, q, start, _, outcome in after if outcome != "ok" and start <= killed_at}
    next_success = min(end for *_, end, outcome in after if outcome == "ok") - killed_at
    failover = max(
        (min(end for s, q, _, end, o in after if (s, q) == key and o == "ok") - killed_at for key in failed),
        default=0.0,
    )
    outcomes = sorted({o for *_, o in after if o != "ok"})
    print(
        f"\nfailover: next success {next_success * 1000:.0f} ms after the kill; in-flight fragments"
        f" {sorted(failed)} answered {failover * 1000:.0f} ms after it; failed calls: {outcomes}"
    )
    assert failed, "the killed replica had no call in flight"
    assert set(outcomes) <= {"TEMPORARY_UNAVAILABLE", "TIMEOUT"}
    assert next_success < 5.0
    assert failover < 5.0

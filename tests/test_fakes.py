"""The fake stages of stsdub.testing: what they keep of the requests they get."""

from __future__ import annotations

import gc
import weakref

import anyio
import pytest

import stsdub
from stsdub.testing import FakeASR, FakeSynthesizer, FakeTranslator

from .strategies import fragments, tone

pytestmark = pytest.mark.anyio

MODES = [
    pytest.param("sync", False, id="sync"),
    pytest.param("async", False, id="async"),
    pytest.param("sync", True, id="sync-batch"),
    pytest.param("async", True, id="async-batch"),
]


def fakes(**kwargs) -> tuple[FakeASR, FakeTranslator, FakeSynthesizer]:
    return FakeASR(**kwargs), FakeTranslator(**kwargs), FakeSynthesizer(**kwargs)


async def dub_streams(stages, streams: int = 3, per_stream: int = 4) -> list[stsdub.DubResult]:
    results: list[stsdub.DubResult] = []

    async def one(stream_id: str) -> None:
        async for result in dubber.dub(fragments(per_stream, stream_id=stream_id)):
            results.append(result)

    async with stsdub.Dubber(*stages, target_language="de") as dubber, anyio.create_task_group() as tg:
        for i in range(streams):
            tg.start_soon(one, f"s{i}")
    return results


@pytest.mark.parametrize(("mode", "batch"), MODES)
async def test_fakes_record_every_request_by_default(mode: str, batch: bool) -> None:
    stages = fakes(mode=mode, batch=batch)
    results = await dub_streams(stages)
    assert len(results) == 12 and all(r.ok for r in results)
    for stage in stages:
        assert stage.record is True
        assert len(stage.requests) == stage.calls == 12
        assert {(r.stream_id, r.sequence_number) for r in stage.requests} == {
            (f"s{i}", n) for i in range(3) for n in range(4)
        }
        assert sum(stage.batches) == (12 if batch else 0)


@pytest.mark.parametrize(("mode", "batch"), MODES)
async def test_fakes_with_record_false_keep_nothing_per_request(mode: str, batch: bool) -> None:
    stages = fakes(mode=mode, batch=batch, record=False)
    results = await dub_streams(stages)
    # They still do their work, and still count it.
    assert len(results) == 12 and all(r.ok for r in results)
    assert [r.translation.text for r in results if r.stream_id == "s0"] == [
        f"[de] speech {n}" for n in range(4)
    ]
    for stage in stages:
        assert stage.requests == [] and stage.batches == []
        assert stage.calls == 12
        assert stage.max_active >= 1 and stage.active == 0


@pytest.mark.parametrize("record", [True, False])
async def test_a_request_outlives_the_call_only_when_recorded(record: bool) -> None:
    # Stronger than looking at the lists: nothing else in the fake may hold the request.
    asr = FakeASR(record=record, mode="async")
    request = stsdub.ASRRequest(
        audio=stsdub.AudioBuffer(tone(0.05), 16_000), stream_id="s", sequence_number=0, fragment_id="f"
    )
    transcript = await asr.transcribe(request)
    assert transcript.text == "speech 0"
    ref = weakref.ref(request)
    del request
    gc.collect()
    assert (ref() is not None) is record
    assert asr.calls == 1


async def test_retries_still_work_without_records() -> None:
    # fail_times counts failures per sequence number, which record=False must not lose.
    asr = FakeASR(record=False, fail={1: stsdub.ErrorCode.TEMPORARY_UNAVAILABLE}, fail_times=1)
    async with stsdub.Dubber(asr, FakeTranslator(), FakeSynthesizer(), target_language="de") as dubber:
        results = [r async for r in dubber.dub(fragments(3))]
    assert [r.ok for r in results] == [True, True, True]
    assert any("retry 1" in w for w in results[1].warnings)
    assert asr.calls == 4 and asr.requests == []

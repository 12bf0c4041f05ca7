"""The Dubber and its streams, with fake stages."""

from __future__ import annotations

import asyncio
import threading

import anyio
import anyio.lowlevel
import numpy as np
import pytest

import stsdub
from stsdub.testing import FakeASR, FakeSynthesizer, FakeTranslator

from .strategies import fragments, tone

pytestmark = pytest.mark.anyio


def make_dubber(asr=None, translator=None, synthesizer=None, **kwargs) -> stsdub.Dubber:
    kwargs.setdefault("target_language", "de")
    return stsdub.Dubber(
        asr or FakeASR(), translator or FakeTranslator(), synthesizer or FakeSynthesizer(), **kwargs
    )


async def collect(dubber: stsdub.Dubber, frags, **overrides) -> list[stsdub.DubResult]:
    return [r async for r in dubber.dub(frags, **overrides)]


# -- results, lineage, statuses ---------------------------------------------------------------


async def test_success_carries_lineage_and_timings() -> None:
    async with make_dubber() as dubber:
        (result,) = await collect(dubber, fragments(1))
    assert result.status is stsdub.Status.SUCCESS and result.ok
    assert result.transcript.text == "speech 0"
    assert result.translation.text == "[de] speech 0"
    fragment_asset = f"fragment:{result.fragment_id}"
    assert result.transcript.parent_asset_ids == (fragment_asset,)
    assert result.translation.parent_asset_ids == (result.transcript.asset_id,)
    assert result.audio.parent_asset_ids == (result.translation.asset_id,)
    assert len({a.asset_id for a in result.assets}) == 3
    assert result.audio.kind == "dubbed"
    assert result.duration_variance == pytest.approx(0.0, abs=0.01)
    assert set(result.timings) >= {"asr", "translation", "synthesis", "duration", "total"}
    assert all(v >= 0 for v in result.timings.values())


async def test_empty_speech_gives_silence_without_translation_or_synthesis() -> None:
    translator, synthesizer = FakeTranslator(), FakeSynthesizer()
    async with make_dubber(translator=translator, synthesizer=synthesizer) as dubber:
        results = await collect(dubber, fragments(3, silent=frozenset({1})))
    silent = results[1]
    assert silent.status is stsdub.Status.SUCCESS
    assert silent.audio.kind == "silence"
    assert not np.any(silent.audio.samples)
    assert silent.audio.samples.size == fragments(1)[0].audio.size
    assert silent.translation is None and silent.transcript.text == ""
    assert [r.sequence_number for r in translator.requests] == [0, 2]
    assert [r.sequence_number for r in synthesizer.requests] == [0, 2]


async def test_same_language_skips_the_translator() -> None:
    translator = FakeTranslator()
    async with make_dubber(translator=translator, source_language="en", target_language="en") as dubber:
        (result,) = await collect(dubber, fragments(1))
    assert translator.requests == []
    assert result.translation.text == "speech 0"
    assert result.translation.translated is False
    assert result.status is stsdub.Status.SUCCESS


async def test_no_translator_is_allowed_for_revoicing_only() -> None:
    async with stsdub.Dubber(
        FakeASR(), None, FakeSynthesizer(), source_language="en", target_language="en"
    ) as d:
        (result,) = await collect(d, fragments(1))
        assert result.ok
        with pytest.raises(stsdub.ConfigurationError, match="needs a translator"):
            await collect(d, fragments(1), target_language="de")


@pytest.mark.parametrize("fallback", ["silence", "original"])
async def test_failed_fragment_gets_fallback_audio(fallback: str) -> None:
    asr = FakeASR(fail={1: stsdub.ErrorCode.INVALID_AUDIO_FORMAT})
    frags = fragments(3)
    async with make_dubber(asr=asr, fallback=fallback) as dubber:
        results = await collect(dubber, frags)
    failed = results[1]
    assert failed.status is stsdub.Status.FAILED and not failed.ok
    assert failed.error.code is stsdub.ErrorCode.INVALID_AUDIO_FORMAT
    assert failed.error.stage == "asr" and failed.error.retryable is False
    assert failed.audio.kind == fallback
    assert failed.audio.parent_asset_ids == (f"fragment:{failed.fragment_id}",)
    expected = frags[1].audio if fallback == "original" else np.zeros_like(frags[1].audio)
    np.testing.assert_allclose(failed.audio.samples, expected, atol=1e-6)
    assert [r.status for r in (results[0], results[2])] == [stsdub.Status.SUCCESS] * 2


async def test_foreign_exception_is_wrapped_as_internal_error() -> None:
    class Broken:
        def translate(self, request):
            raise KeyError("boom")

    async with make_dubber(translator=Broken()) as dubber:
        (result,) = await collect(dubber, fragments(1))
    assert result.error.code is stsdub.ErrorCode.INTERNAL_ERROR
    assert result.error.stage == "translation"
    assert "KeyError" in result.error.message
    assert isinstance(result.error.__cause__, KeyError)


async def test_wrong_return_type_fails_the_fragment_not_the_stream() -> None:
    class Wrong:
        def transcribe(self, request):
            return "not a Transcript"

    async with make_dubber(asr=Wrong()) as dubber:
        results = await collect(dubber, fragments(2))
    assert [r.error.code for r in results] == [stsdub.ErrorCode.INTERNAL_ERROR] * 2
    assert "expected Transcript" in results[0].error.message


async def test_output_sample_rate_is_honoured() -> None:
    async with make_dubber(output_sample_rate=24_000) as dubber:
        (result,) = await collect(dubber, fragments(1, seconds=0.5))
    assert result.audio.sample_rate == 24_000
    assert result.audio.samples.size == 12_000


# -- retries and timeouts ---------------------------------------------------------------------


async def test_retryable_error_is_retried_within_budget() -> None:
    translator = FakeTranslator(fail={0: stsdub.ErrorCode.RATE_LIMIT_EXCEEDED}, fail_times=2)
    async with make_dubber(translator=translator, retries=2, retry_backoff=0.01) as dubber:
        (result,) = await collect(dubber, fragments(1))
    assert result.status is stsdub.Status.SUCCESS
    assert len(translator.requests) == 3
    assert sum("retry" in w for w in result.warnings) == 2


async def test_permanent_error_is_not_retried() -> None:
    translator = FakeTranslator(fail={0: stsdub.ErrorCode.QUOTA_EXCEEDED})
    async with make_dubber(translator=translator, retries=3) as dubber:
        (result,) = await collect(dubber, fragments(1))
    assert result.error.code is stsdub.ErrorCode.QUOTA_EXCEEDED and not result.error.retryable
    assert len(translator.requests) == 1


async def test_retries_stop_when_the_budget_would_be_exceeded() -> None:
    translator = FakeTranslator(fail={0: stsdub.ErrorCode.TEMPORARY_UNAVAILABLE})
    async with make_dubber(
        translator=translator, retries=50, retry_backoff=0.05, fragment_timeout=0.5
    ) as dubber:
        (result,) = await collect(dubber, fragments(1))
    assert result.status is stsdub.Status.FAILED
    assert result.error.code is stsdub.ErrorCode.TEMPORARY_UNAVAILABLE
    # Backoff doubles from 50 ms, so only a few attempts fit into 0.5 s.
    assert 2 <= len(translator.requests) <= 5


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_hung_stage_times_out_and_later_fragments_still_arrive(mode: str) -> None:
    asr = FakeASR(hang={1}, hang_seconds=20.0, mode=mode)
    started = anyio.current_time()
    dubber = make_dubber(asr=asr, fragment_timeout=0.5, fallback="original")
    async with dubber:
        results = await collect(dubber, fragments(4))
        elapsed = anyio.current_time() - started
    closed_after = anyio.current_time() - started
    assert [r.sequence_number for r in results] == [0, 1, 2, 3]
    hung = results[1]
    assert hung.status is stsdub.Status.FAILED
    assert hung.error.code is stsdub.ErrorCode.TIMEOUT and hung.error.retryable
    assert hung.error.stage == "asr"
    assert hung.audio.kind == "original"
    assert all(r.status is stsdub.Status.SUCCESS for r in (results[0], results[2], results[3]))
    # Bounded by the budget, not by the 20 s hang; closing does not wait for the hung thread.
    assert elapsed < 10 and closed_after < 10


# -- backpressure -----------------------------------------------------------------------------


async def test_send_waits_at_max_inflight() -> None:
    asr = FakeASR(hang={0, 1, 2, 3}, hang_seconds=1.0, mode="async")
    async with make_dubber(asr=asr, max_inflight=2, fragment_timeout=5) as dubber:
        async with dubber.open_stream("s") as stream:
            frags = fragments(3)
            await stream.send(frags[0])
            await stream.send(frags[1])
            assert stream.in_flight == 2
            with anyio.move_on_after(0.2) as scope:
                await stream.send(frags[2])
            assert scope.cancelled_caught  # the third send waited
            assert stream.accepted == 2
            # A cancelled send spends its sequence number but accepts nothing.
            with pytest.raises(stsdub.SequenceError):
                await stream.send(frags[2])


async def test_backpressure_levels_and_async_callback() -> None:
    events: list[stsdub.BackpressureEvent] = []

    async def on_backpressure(event: stsdub.BackpressureEvent) -> None:
        await anyio.lowlevel.checkpoint()
        events.append(event)

    asr = FakeASR(latency=0.05, mode="async")
    async with make_dubber(asr=asr, max_inflight=2, on_backpressure=on_backpressure) as dubber:
        async with dubber.open_stream("s") as stream:
            frags = fragments(12)
            async with anyio.create_task_group() as tg:
                # Many concurrent senders flood the stream: levels rise to HIGH.
                for fragment in frags:
                    tg.start_soon(stream.send, fragment)
                    await anyio.lowlevel.checkpoint()
            await stream.end()
            results = [r async for r in stream]
    assert len(results) == 12
    severities = [e.severity for e in events]
    assert severities[:2] == [stsdub.Severity.MEDIUM, stsdub.Severity.HIGH]
    assert severities[-1] is stsdub.Severity.LOW
    assert {e.action for e in events} == {stsdub.Action.SLOW_DOWN, stsdub.Action.PAUSE, stsdub.Action.NONE}
    high = events[1]
    assert high.in_flight >= 5 and high.max_inflight == 2 and high.stream_id == "s"


async def test_reject_policy_answers_overflow_at_once_in_order() -> None:
    events: list[stsdub.BackpressureEvent] = []
    asr = FakeASR(latency=0.3, mode="async")
    async with (
        make_dubber(asr=asr, max_inflight=2, overflow="reject", on_backpressure=events.append) as dubber,
        dubber.open_stream("s") as stream,
    ):
        with anyio.fail_after(0.2):  # no send waits
            for fragment in fragments(5):
                await stream.send(fragment)
        await stream.end()
        results = [r async for r in stream]
    assert [r.sequence_number for r in results] == [0, 1, 2, 3, 4]
    assert [r.status for r in results[:2]] == [stsdub.Status.SUCCESS] * 2
    for rejected in results[2:]:
        assert rejected.error.code is stsdub.ErrorCode.BACKPRESSURE_REJECTED
        assert not rejected.error.retryable
        assert rejected.audio.samples.size == fragments(1)[0].audio.size
    assert len(asr.requests) == 2
    assert events[0].severity is stsdub.Severity.HIGH and events[0].action is stsdub.Action.PAUSE


async def test_callback_errors_do_not_break_the_stream(caplog: pytest.LogCaptureFixture) -> None:
    def bad_callback(event: stsdub.BackpressureEvent) -> None:
        raise RuntimeError("host bug")

    async with make_dubber(max_inflight=1, overflow="reject", on_backpressure=bad_callback) as dubber:
        results = [r async for r in dubber.dub(fragments(3))]
    assert len(results) == 3
    assert "on_backpressure callback failed" in caplog.text


# -- context, overrides, sharing --------------------------------------------------------------


async def test_context_from_previous_fragments_reaches_every_stage() -> None:
    asr, translator, synthesizer = FakeASR(), FakeTranslator(), FakeSynthesizer()
    async with make_dubber(asr, translator, synthesizer) as dubber:
        await collect(dubber, fragments(3))
    assert [r.previous_transcript for r in asr.requests] == [None, "speech 0", "speech 1"]
    assert [r.previous_text for r in translator.requests] == [None, "speech 0", "speech 1"]
    assert [r.previous_translation for r in translator.requests] == [None, "[de] speech 0", "[de] speech 1"]
    assert [r.previous_text for r in synthesizer.requests] == [None, "[de] speech 0", "[de] speech 1"]
    assert [r.target_duration for r in synthesizer.requests] == pytest.approx([0.05] * 3)


async def test_streams_have_their_own_languages_voices_and_context() -> None:
    translator, synthesizer = FakeTranslator(), FakeSynthesizer()
    async with make_dubber(translator=translator, synthesizer=synthesizer, voice="narrator") as dubber:
        async with (
            dubber.open_stream("a", target_language="es", voice="alice") as a,
            dubber.open_stream("b") as b,
        ):
            for stream in (a, b):
                for fragment in fragments(2):
                    await stream.send(fragment)
                await stream.end()
            results_a = [r async for r in a]
            results_b = [r async for r in b]
    assert [r.translation.text for r in results_a] == ["[es] speech 0", "[es] speech 1"]
    assert [r.translation.text for r in results_b] == ["[de] speech 0", "[de] speech 1"]
    voices = {(r.stream_id, r.voice, r.language) for r in synthesizer.requests}
    assert voices == {("a", "alice", "es"), ("b", "narrator", "de")}
    by_stream = {r.stream_id: [] for r in translator.requests}
    for r in translator.requests:
        by_stream[r.stream_id].append(r.previous_text)
    assert by_stream == {"a": [None, "speech 0"], "b": [None, "speech 0"]}


async def test_dub_routes_fragments_by_stream_id_and_keeps_input_order() -> None:
    asr = FakeASR(latency=lambda r: 0.03 if r.stream_id == "slow" else 0.0, mode="async")
    frags = []
    for i in range(4):
        frags += [f for f in fragments(4, stream_id="slow")[i : i + 1]]
        frags += [f for f in fragments(4, stream_id="fast")[i : i + 1]]
    async with make_dubber(asr=asr) as dubber:
        results = await collect(dubber, frags)
    assert [(r.stream_id, r.sequence_number) for r in results] == [
        (f.stream_id, f.sequence_number) for f in frags
    ]


async def test_one_set_of_stage_instances_is_shared_by_all_streams() -> None:
    built: list[FakeASR] = []

    def factory(device: str, **options: object) -> FakeASR:
        stage = FakeASR(device=device, **options)
        built.append(stage)
        return stage

    registry = stsdub.StageRegistry(
        [stsdub.StageSpec(kind="asr", name="counting", factory=factory, package="tests")]
    )
    dubber = stsdub.Dubber(
        "counting",
        FakeTranslator(),
        FakeSynthesizer(),
        target_language="de",
        asr_options={"latency": 0.001},
        registry=registry,
        device="cpu",
    )
    async with dubber, anyio.create_task_group() as tg:
        for name in ("a", "b", "c"):
            tg.start_soon(collect, dubber, fragments(3, stream_id=name))
    assert len(built) == 1
    assert built[0].device == "cpu" and built[0].latency == 0.001
    assert {r.stream_id for r in built[0].requests} == {"a", "b", "c"}
    assert built[0].closed  # stages the Dubber built are closed with it


async def test_batch_methods_batch_across_streams() -> None:
    asr = FakeASR(batch=True, latency=0.02)
    translator = FakeTranslator(batch=True, latency=0.02, mode="async")
    async with make_dubber(asr=asr, translator=translator) as dubber, anyio.create_task_group() as tg:
        for i in range(6):
            tg.start_soon(collect, dubber, fragments(4, stream_id=f"s{i}"))
    assert sum(asr.batches) == 24 and len(asr.batches) < 24 and max(asr.batches) > 1
    assert sum(translator.batches) == 24 and len(translator.batches) < 24


async def test_a_failing_item_in_a_batch_fails_only_its_fragment() -> None:
    asr = FakeASR(batch=True, fail={2: stsdub.ErrorCode.INVALID_AUDIO_FORMAT})
    async with make_dubber(asr=asr) as dubber:
        results = await collect(dubber, fragments(4))
    assert [r.ok for r in results] == [True, True, False, True]


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("audio", "rate", "match"),
    [
        (np.array([0.0, np.nan], dtype=np.float32), 16_000, "NaN or infinity"),
        (np.array([0.0, np.inf], dtype=np.float32), 16_000, "NaN or infinity"),
        (np.zeros(10, dtype=np.float64), 16_000, "must be float32"),
        (np.zeros(10, dtype=np.int16), 16_000, "must be float32"),
        (np.zeros((10, 2), dtype=np.float32), 16_000, "1-D mono"),
        (np.zeros(0, dtype=np.float32), 16_000, "empty"),
        (np.zeros(10, dtype=np.float32), 0, "between 1 and"),
        (np.zeros(10, dtype=np.float32), -8000, "between 1 and"),
        (np.zeros(10, dtype=np.float32), 16_000.0, "must be an int"),
        (np.full(10, 1.5, dtype=np.float32), 16_000, r"\[-1, 1\]"),
        ([0.0, 0.1], 16_000, "numpy.ndarray"),
    ],
)
def test_invalid_audio_is_refused_with_a_clear_error(audio: object, rate: object, match: str) -> None:
    with pytest.raises(stsdub.InvalidAudioError, match=match) as info:
        stsdub.Fragment(0, audio, rate)  # type: ignore[arg-type]
    assert isinstance(info.value, stsdub.StsdubError) and isinstance(info.value, ValueError)


async def test_bad_sends_are_refused_and_the_stream_keeps_working() -> None:
    async with make_dubber(max_fragment_seconds=1.0) as dubber, dubber.open_stream("s") as stream:
        good = fragments(4)
        await stream.send(good[0])
        await stream.send(good[1])
        with pytest.raises(stsdub.SequenceError, match="duplicate"):
            await stream.send(stsdub.Fragment(1, tone(0.05), 16_000))
        with pytest.raises(stsdub.SequenceError, match="decreasing"):
            await stream.send(good[0])
        with pytest.raises(stsdub.InvalidAudioError, match="max_fragment_seconds"):
            await stream.send(stsdub.Fragment(5, tone(2.0), 16_000))
        with pytest.raises(stsdub.SequenceError, match="belongs to stream"):
            await stream.send(stsdub.Fragment(6, tone(0.05), 16_000, stream_id="other"))
        with pytest.raises(stsdub.InvalidAudioError, match=r"takes a stsdub\.Fragment"):
            await stream.send("audio")  # type: ignore[arg-type]
        await stream.send(good[2])
        await stream.send(good[3])
        await stream.end()
        with pytest.raises(stsdub.StreamClosedError):
            await stream.send(stsdub.Fragment(9, tone(0.05), 16_000))
        results = [r async for r in stream]
    assert [r.sequence_number for r in results] == [0, 1, 2, 3]
    assert all(r.ok for r in results)


async def test_bad_item_in_dub_input_is_raised_after_earlier_results() -> None:
    def source():
        yield from fragments(2)
        yield stsdub.Fragment(1, tone(0.05), 16_000)  # duplicate sequence number

    got = []
    async with make_dubber() as dubber:
        with pytest.raises(stsdub.SequenceError):
            async for result in dubber.dub(source()):
                got.append(result.sequence_number)
    assert got == [0, 1]


def test_invalid_configuration_is_refused_at_construction() -> None:
    for kwargs, match in [
        ({"max_inflight": 0}, "max_inflight"),
        ({"fragment_timeout": -1}, "fragment_timeout"),
        ({"fallback": "beep"}, "fallback"),
        ({"overflow": "drop"}, "overflow"),
        ({"device": "tpu"}, "device"),
        ({"backpressure_levels": stsdub.BackpressureLevels(low=5, medium=2)}, "backpressure levels"),
        ({"duration": None, "retries": -1}, "retries"),
    ]:
        with pytest.raises(stsdub.ConfigurationError, match=match):
            make_dubber(**kwargs)


async def test_unknown_stream_override_and_missing_target_language() -> None:
    async with stsdub.Dubber(FakeASR(), FakeTranslator(), FakeSynthesizer()) as dubber:
        with pytest.raises(stsdub.ConfigurationError, match="target_language"):
            await collect(dubber, fragments(1))
        with pytest.raises(stsdub.ConfigurationError, match="unknown stream options"):
            async with dubber.open_stream("x", target_language="de", speed=2):
                pass


async def test_using_a_closed_dubber_is_an_error() -> None:
    dubber = make_dubber()
    with pytest.raises(stsdub.StsdubError, match="not open"):
        dubber.dub(fragments(1))
    async with dubber, dubber.open_stream("s"):
        with pytest.raises(stsdub.ConfigurationError, match="already open"):
            async with dubber.open_stream("s"):
                pass


# -- cleanup ----------------------------------------------------------------------------------


async def test_leaving_early_leaves_no_task_or_running_stage_call() -> None:
    asr = FakeASR(latency=0.05)
    synthesizer = FakeSynthesizer(latency=0.05, mode="async")
    baseline = asyncio.all_tasks()
    async with make_dubber(asr=asr, synthesizer=synthesizer, max_inflight=3) as dubber:
        async for result in dubber.dub(fragments(20)):
            assert result.sequence_number == 0
            break
        async with dubber.open_stream("s") as stream:
            for fragment in fragments(3):
                await stream.send(fragment)
        with anyio.move_on_after(0.05):
            await collect(dubber, fragments(10))
    assert asyncio.all_tasks() == baseline
    await anyio.sleep(0.2)  # abandoned worker threads finish their 50 ms sleeps
    assert asr.active == 0 and synthesizer.active == 0
    assert asr.closed is False  # user-supplied stages are the user's to close


async def test_cancelling_the_consumer_stops_the_pipeline() -> None:
    asr = FakeASR(latency=0.02)
    async with make_dubber(asr=asr) as dubber:
        with anyio.move_on_after(0.1):
            async with dubber.dub(fragments(100)) as results:
                async for _ in results:
                    pass
        calls = len(asr.requests)
        await anyio.sleep(0.3)
        assert len(asr.requests) <= calls + 1  # nothing keeps feeding the stages
    assert len(asr.requests) < 100


async def test_stage_load_failures_surface_at_async_with() -> None:
    def broken(device: str, **options: object) -> object:
        raise FileNotFoundError("model.bin")

    registry = stsdub.StageRegistry([stsdub.StageSpec(kind="asr", name="broken", factory=broken)])
    dubber = stsdub.Dubber(
        "broken", FakeTranslator(), FakeSynthesizer(), target_language="de", registry=registry
    )
    with pytest.raises(stsdub.StageLoadError, match=r"asr 'broken' failed to load: FileNotFoundError"):
        async with dubber:
            pass


# -- synchronous use and other event loops ----------------------------------------------------


def test_dub_sync_in_a_script() -> None:
    results = make_dubber().dub_sync(fragments(3))
    assert [r.sequence_number for r in results] == [0, 1, 2]


def test_dub_sync_where_an_event_loop_already_runs() -> None:
    # As in Jupyter: synchronous code called from inside a running event loop.
    async def notebook_cell() -> list[stsdub.DubResult]:
        return make_dubber().dub_sync(fragments(2))

    results = asyncio.run(notebook_cell())
    assert [r.translation.text for r in results] == ["[de] speech 0", "[de] speech 1"]


def test_with_block_loads_once_and_reuses_models() -> None:
    built = []

    def factory(device: str, **options: object) -> FakeSynthesizer:
        built.append(threading.get_ident())
        return FakeSynthesizer()

    registry = stsdub.StageRegistry([stsdub.StageSpec(kind="synthesizer", name="once", factory=factory)])
    with stsdub.Dubber(
        FakeASR(), FakeTranslator(), "once", target_language="de", registry=registry
    ) as dubber:
        first = dubber.dub_sync(fragments(2))
        second = dubber.dub_sync(fragments(2), target_language="fr")
    assert len(built) == 1
    assert second[1].translation.text == "[fr] speech 1" and first[0].ok


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_runs_under_trio() -> None:
    async with make_dubber(asr=FakeASR(mode="async"), synthesizer=FakeSynthesizer(latency=0.001)) as dubber:
        results = await collect(dubber, fragments(5))
    assert [r.sequence_number for r in results] == list(range(5))
    assert all(r.ok for r in results)


def test_results_render_in_notebooks() -> None:
    (result,) = make_dubber().dub_sync(fragments(1))
    html = result._repr_html_()
    assert "speech 0" in html and "[de] speech 0" in html
    assert "<audio controls" in html and "base64," in html
    assert "SUCCESS" in repr(result)


async def test_speech_running_over_is_played_in_the_next_silent_fragment() -> None:
    # 1.6x too long: beyond max_stretch (1.3x), so the end runs into the next fragment.
    synthesizer = FakeSynthesizer(duration_ratio=1.6)
    frags = fragments(3, seconds=0.5, silent=frozenset({1}))
    async with make_dubber(synthesizer=synthesizer) as dubber:
        results = await collect(dubber, frags)
    over, silent = results[0], results[1]
    assert any("carried into the next fragment" in w for w in over.warnings)
    assert silent.status is stsdub.Status.SUCCESS and silent.audio.kind == "dubbed"
    assert any("ran over its end" in w for w in silent.warnings)
    spoken = np.flatnonzero(np.abs(silent.audio.samples) > 1e-3)
    assert spoken.size and spoken[0] == 0  # the carried speech starts the fragment
    assert spoken[-1] < silent.audio.samples.size // 2  # then silence: bounded by max_carry
    assert all(r.audio.samples.size == f.audio.size for r, f in zip(results, frags, strict=True))


async def test_dubbed_speech_aims_at_where_the_source_spoke() -> None:
    class PlacingASR:
        """Hears speech from 1.0 s to 2.0 s of each 4-s fragment."""

        def transcribe(self, request: stsdub.ASRRequest) -> stsdub.Transcript:
            return stsdub.Transcript("hello there", "en", (stsdub.Segment(1.0, 2.0, "hello there"),))

    synthesizer = FakeSynthesizer()  # speaks exactly target_duration
    async with make_dubber(asr=PlacingASR(), synthesizer=synthesizer) as dubber:
        (result,) = await collect(dubber, fragments(1, seconds=4.0))
    assert synthesizer.requests[0].target_duration == pytest.approx(1.0)
    assert result.status is stsdub.Status.SUCCESS
    assert result.duration_variance == pytest.approx(0.0, abs=0.02)
    spoken = np.flatnonzero(np.abs(result.audio.samples) > 1e-3) / 16_000
    assert spoken[0] == pytest.approx(1.0, abs=0.02) and spoken[-1] == pytest.approx(2.0, abs=0.02)
    assert result.audio.samples.size == 64_000


async def test_speech_shorter_than_the_source_is_not_padded_into_a_mismatch() -> None:
    class PlacingASR:
        def transcribe(self, request: stsdub.ASRRequest) -> stsdub.Transcript:
            return stsdub.Transcript("hi", "en", (stsdub.Segment(0.5, 2.5, "hi"),))

    # Without the source's speech span, 2 s of speech in a 4-s fragment would be 50 % off.
    async with make_dubber(asr=PlacingASR(), synthesizer=FakeSynthesizer(duration_ratio=1.05)) as dubber:
        (result,) = await collect(dubber, fragments(1, seconds=4.0))
    assert result.status is stsdub.Status.SUCCESS
    assert result.duration_variance < 0.1

"""Properties of the pipeline over random fragment counts, latencies, failures and hangs."""

from __future__ import annotations

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stsdub
from stsdub.testing import FakeASR, FakeSynthesizer, FakeTranslator

from .strategies import fragments, stage_plan

TIMEOUT = 0.5
HANG = 0.8


@st.composite
def scenario(draw: st.DrawFn) -> dict[str, object]:
    streams = draw(st.integers(1, 3))
    counts = draw(st.lists(st.integers(0, 12), min_size=streams, max_size=streams))
    longest = max(counts) or 1
    return {
        "counts": counts,
        "max_inflight": draw(st.integers(1, 4)),
        "plans": {kind: draw(stage_plan(longest)) for kind in ("asr", "translator", "synthesizer")},
        "silent": draw(st.frozensets(st.integers(0, longest - 1), max_size=2)),
        "mode": draw(st.sampled_from(["sync", "async"])),
        "batch": draw(st.booleans()),
        # "speech N" never ends a sentence: with a wait, fragments are held and joined.
        "sentence_wait": draw(st.sampled_from([0.0, 0.05, 0.3])),
    }


def _planned_codes(plans: dict[str, dict[str, object]], seq: int) -> set[stsdub.ErrorCode]:
    codes = {stsdub.ErrorCode(p["fail"][seq]) for p in plans.values() if seq in p["fail"]}  # type: ignore[operator,index]
    if any(seq in p["hang"] for p in plans.values()):  # type: ignore[operator]
        codes.add(stsdub.ErrorCode.TIMEOUT)
    return codes


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario())
def test_exactly_one_result_per_fragment_in_order(sc: dict) -> None:
    plans = sc["plans"]
    max_inflight = sc["max_inflight"]
    seen_in_flight: list[tuple[str, int]] = []
    streams: dict[str, stsdub.Stream] = {}

    def observe(request: object) -> float:
        stream_id = request.stream_id  # type: ignore[attr-defined]
        seen_in_flight.append((stream_id, streams[stream_id].in_flight))
        return plans["asr"]["latency"](request)  # type: ignore[operator]

    asr = FakeASR(mode=sc["mode"], batch=sc["batch"], **{**plans["asr"], "latency": observe})
    translator = FakeTranslator(mode=sc["mode"], batch=sc["batch"], **plans["translator"])
    synthesizer = FakeSynthesizer(mode=sc["mode"], **plans["synthesizer"])
    sent: dict[str, list[stsdub.Fragment]] = {}
    received: dict[str, list[stsdub.DubResult]] = {}

    async def run_stream(dubber: stsdub.Dubber, name: str, count: int) -> None:
        frags = fragments(count, silent=sc["silent"])
        sent[name] = frags
        received[name] = []
        async with dubber.open_stream(name, sentence_wait=sc["sentence_wait"]) as stream:
            streams[name] = stream

            async def produce() -> None:
                for fragment in frags:
                    await stream.send(fragment)
                await stream.end()

            async with anyio.create_task_group() as tg:
                tg.start_soon(produce)
                async for result in stream:
                    received[name].append(result)

    async def main() -> None:
        async with stsdub.Dubber(
            asr,
            translator,
            synthesizer,
            target_language="de",
            max_inflight=max_inflight,
            fragment_timeout=TIMEOUT,
            retries=1,
            retry_backoff=0.001,
        ) as dubber:
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for i, count in enumerate(sc["counts"]):
                        tg.start_soon(run_stream, dubber, f"s{i}", count)

    for kind in plans:
        plans[kind]["hang_seconds"] = HANG
    anyio.run(main)

    any_hang = any(p["hang"] for p in plans.values())
    for name, frags in sent.items():
        results = received[name]
        # Exactly one result per fragment, in order: none lost, duplicated or reordered.
        assert [r.fragment_id for r in results] == [f.fragment_id for f in frags]
        assert [r.sequence_number for r in results] == list(range(len(frags)))
        for fragment, result in zip(frags, results, strict=True):
            assert result.stream_id == name
            assert result.audio.samples.size == fragment.audio.size
            assert (result.status is stsdub.Status.FAILED) == (result.error is not None)
            planned = _planned_codes(plans, fragment.sequence_number)
            silent = fragment.sequence_number in sc["silent"]
            if result.status is stsdub.Status.FAILED:
                assert result.audio.kind == "silence"
                assert result.error.code in planned | {stsdub.ErrorCode.TIMEOUT}
            elif silent:
                assert result.audio.kind == "silence"
                assert result.translation is None
            elif sc["sentence_wait"]:  # a share of a sentence's translation, or its own
                assert result.translation.text.strip()
                assert result.translation.source_text == f"speech {fragment.sequence_number}"
            else:
                assert result.translation.text == f"[de] speech {fragment.sequence_number}"
            # A hang holds a shared stage until its budget runs out, so fragments of any
            # stream queued behind it may time out too; without hangs, only planned failures fail.
            if not planned and not silent and not any_hang:
                assert result.status is stsdub.Status.SUCCESS, result
    # Never more than max_inflight fragments of a stream inside the pipeline.
    assert all(n <= max_inflight for _, n in seen_in_flight)
    for stream in streams.values():
        assert stream.max_seen_in_pipeline <= max_inflight
    # The empty-speech shortcut: silent fragments never reach the translator.
    assert all(r.sequence_number not in sc["silent"] for r in translator.requests)

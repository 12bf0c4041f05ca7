"""Pipeline overhead: fragments per second through stsdub with zero-latency fake stages,
and how busy the pipeline keeps its busiest stage.

1. *Overhead*: what the library itself costs per fragment (admission, three stage hops,
   duration fitting, in-order emission), so it can be compared with real model latencies.
   Runs 1 and 32 concurrent streams, with async fakes (pure event-loop cost) and sync fakes
   (each stage call goes through a worker thread, as real models do).
2. *Busy*: 1 and 5 streams of 60 fragments of 1 s, stages that take 0-20 ms (ASR, a thread),
   0-10 ms (translation, awaited) and 0-20 ms (synthesis, a thread), drawn from a seeded
   generator, speech of exactly the fragment's length. The busiest stage's work divided by
   the wall time is how busy the pipeline kept it (100 %: it never waited for work).

    python benchmarks/bench_pipeline.py [--fragments 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import zlib
from collections.abc import Callable
from typing import Any

import anyio
import common
import numpy as np

import stsdub
from stsdub.testing import FakeASR, FakeSynthesizer, FakeTranslator


def make_fragments(stream: str, count: int, samples: int = 160) -> list[stsdub.Fragment]:
    audio = (0.3 * np.sin(np.arange(samples, dtype=np.float32))).astype(np.float32)
    return [stsdub.Fragment(i, audio, 16_000, stream_id=stream) for i in range(count)]


async def run_once(streams: int, total: int, mode: str) -> float:
    per_stream = total // streams
    dubber = stsdub.Dubber(
        FakeASR(mode=mode),
        FakeTranslator(mode=mode),
        FakeSynthesizer(mode=mode),
        target_language="de",
        max_inflight=3,
    )
    async with dubber:
        frags = [make_fragments(f"s{i}", per_stream) for i in range(streams)]
        started = time.perf_counter()

        async def one(stream_frags: list[stsdub.Fragment]) -> None:
            count = 0
            async for _ in dubber.dub(stream_frags):
                count += 1
            assert count == len(stream_frags)

        async with anyio.create_task_group() as tg:
            for f in frags:
                tg.start_soon(one, f)
        elapsed = time.perf_counter() - started
    return streams * per_stream / elapsed


def _uniform(low: float, high: float, salt: int) -> Callable[[Any], float]:
    """Seconds a fake stage takes for a request: uniform in [low, high), the same every run."""

    def latency(request: Any) -> float:
        seed = zlib.crc32(f"{salt}/{request.stream_id}/{request.sequence_number}".encode())
        return random.Random(seed).uniform(low, high)

    return latency


async def run_busy(streams: int, per_stream: int) -> dict[str, float]:
    """Wall time against the stages' work: how busy the pipeline keeps the busiest stage."""
    latencies = {
        "asr": _uniform(0, 0.02, 1),
        "translation": _uniform(0, 0.01, 2),
        "synthesis": _uniform(0, 0.02, 3),
    }
    dubber = stsdub.Dubber(
        FakeASR(latency=latencies["asr"], record=False),
        FakeTranslator(latency=latencies["translation"], mode="async", record=False),
        FakeSynthesizer(latency=latencies["synthesis"], record=False),
        target_language="de",
        max_inflight=3,
    )
    audio = (0.3 * np.sin(np.arange(16_000, dtype=np.float32) / 5)).astype(np.float32)
    async with dubber:
        started = time.perf_counter()

        async def one(stream: str) -> None:
            fragments = [stsdub.Fragment(i, audio, 16_000, stream_id=stream) for i in range(per_stream)]
            count = 0
            async for result in dubber.dub(fragments):
                assert result.ok, result
                count += 1
            assert count == per_stream

        async with anyio.create_task_group() as tg:
            for k in range(streams):
                tg.start_soon(one, f"s{k}")
        wall = time.perf_counter() - started
    requests = [
        stsdub.ASRRequest(audio=stsdub.AudioBuffer(audio, 16_000), stream_id=f"s{k}", sequence_number=i)
        for k in range(streams)
        for i in range(per_stream)
    ]
    work = {stage: sum(map(latency, requests)) for stage, latency in latencies.items()}
    busiest = max(work.values())
    return {"wall": wall, "serial": sum(work.values()), "busiest": busiest, "busy": busiest / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fragments", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"# {common.machine()}")
    print(
        f"| stages | streams | fragments/s (median of {args.repeat}) | µs per fragment | µs per stage call |"
    )
    print("|---|---:|---:|---:|---:|")
    for mode in ("async", "sync"):
        for streams in (1, 32):
            rates = [anyio.run(run_once, streams, args.fragments, mode) for _ in range(args.repeat)]
            rate = statistics.median(rates)
            print(f"| {mode} fakes | {streams} | {rate:,.0f} | {1e6 / rate:,.0f} | {1e6 / rate / 3:,.0f} |")
    print()
    print(
        f"| streams | wall s (median of {args.repeat}) | one after another s |"
        " busiest stage's work s | busiest stage busy |"
    )
    print("|---:|---:|---:|---:|---:|")
    for streams in (1, 5):
        runs = [anyio.run(run_busy, streams, 60) for _ in range(args.repeat)]
        wall = statistics.median(r["wall"] for r in runs)
        first = runs[0]
        print(
            f"| {streams} | {wall:.2f} | {first['serial']:.2f} | {first['busiest']:.2f} |"
            f" {statistics.median(r['busy'] for r in runs):.0%} |"
        )


if __name__ == "__main__":
    main()

"""Pipeline overhead: fragments per second through stsdub with zero-latency fake stages.

Measures what the library itself costs per fragment (admission, three stage hops, duration
fitting, in-order emission), so it can be compared with real model latencies. Runs 1 and 32
concurrent streams, with async fakes (pure event-loop cost) and sync fakes (each stage call
goes through a worker thread, as real models do).

    python benchmarks/bench_pipeline.py [--fragments 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import anyio
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fragments", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"| stages | streams | fragments/s (median of {args.repeat}) | µs per fragment |")
    print("|---|---:|---:|---:|")
    for mode in ("async", "sync"):
        for streams in (1, 32):
            rates = [anyio.run(run_once, streams, args.fragments, mode) for _ in range(args.repeat)]
            rate = statistics.median(rates)
            print(f"| {mode} fakes | {streams} | {rate:,.0f} | {1e6 / rate:,.0f} |")


if __name__ == "__main__":
    main()

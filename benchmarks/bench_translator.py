"""DeepL requests per fragment, and translation latency, with 1 and 16 streams.

Runs the registered ``deepl`` translator (the real ``deepl`` client) inside a Dubber against
the DeepL-compatible loopback server of the test suite, which answers every
``/v2/translate`` after ``--latency`` seconds (DeepL's typical ~150 ms). ASR and synthesis
are fakes with no latency, so only translation is measured. Prints one row per setting:

* ``pattern``: ``burst`` — every fragment of every stream is there at once (a backlog, the
  worst case); ``live`` — each stream sends one fragment every ``--interval`` seconds, the
  streams starting at random offsets;
* ``context``: whether the previous source text goes along as DeepL's ``context``
  (fragments with different context cannot share a request);
* ``req/frag``: ``/v2/translate`` requests per fragment (1.00 = no batching);
* ``texts/req``: mean texts per request; ``p50`` / ``p95``: the translation step per
  fragment in ms (queueing included).

    python benchmarks/bench_translator.py
    python benchmarks/bench_translator.py --latency 0.15 --fragments 10 --concurrency 2
"""

from __future__ import annotations

import argparse
import random
import time

import anyio
import common
import numpy as np
from tests.stages.deepl_server import DeepLServer, deepl_server

import stsdub
from stsdub.testing import FakeASR, FakeSynthesizer

RATE = 16_000


def _fragment(seq: int) -> stsdub.Fragment:
    t = np.arange(RATE // 4, dtype=np.float32) / RATE
    return stsdub.Fragment(seq, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), RATE)


async def run(
    server: DeepLServer,
    streams: int,
    fragments: int,
    *,
    context: bool,
    live: bool,
    interval: float,
    concurrency: int,
) -> dict[str, float]:
    server.requests.clear()
    dubber = stsdub.Dubber(
        asr=FakeASR(text=lambda r: f"{r.stream_id} says sentence number {r.sequence_number}."),
        translator="deepl",
        translator_options={
            "server_url": server.url,
            "auth_key": server.auth_key,
            "context": context,
            "concurrency": concurrency,
        },
        synthesizer=FakeSynthesizer(),
        source_language="en",
        target_language="de",
        device="cpu",
        max_inflight=fragments if not live else 3,
        fragment_timeout=60.0,
    )
    timings: list[float] = []
    rng = random.Random(7)
    started = time.perf_counter()
    async with dubber:

        async def stream(name: str) -> None:
            async with dubber.open_stream(name) as s:

                async def feed() -> None:
                    if live:
                        await anyio.sleep(rng.uniform(0, interval))
                    for seq in range(fragments):
                        await s.send(_fragment(seq))
                        if live:
                            await anyio.sleep(interval)
                    await s.end()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(feed)
                    async for result in s:
                        if result.status is not stsdub.Status.SUCCESS:
                            raise RuntimeError(f"fragment failed: {result}")
                        timings.append(result.timings["translation"])

        async with anyio.create_task_group() as tg:
            for i in range(streams):
                tg.start_soon(stream, f"stream-{i}")
    elapsed = time.perf_counter() - started
    sent = server.translate_requests()
    total = streams * fragments
    return {
        "req/frag": len(sent) / total,
        "texts/req": total / len(sent),
        "p50": float(np.percentile(timings, 50)),
        "p95": float(np.percentile(timings, 95)),
        "wall": elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--latency", type=float, default=0.15, help="seconds per /v2/translate answer")
    parser.add_argument("--fragments", type=int, default=12, help="fragments per stream")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between fragments (live)")
    parser.add_argument("--concurrency", type=int, default=2, help="DeepL requests in flight at once")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()

    print(
        f"# deepl translator vs loopback DeepL server, {args.latency * 1000:.0f} ms per request,"
        f" concurrency {args.concurrency}, {args.fragments} fragments/stream"
    )
    print(f"# {common.machine()}")
    print("| streams | pattern | context | req/frag | texts/req | p50 ms | p95 ms | wall s |")
    print("|---:|---|---|---:|---:|---:|---:|---:|")
    with deepl_server(latency=args.latency) as server:
        for streams in args.streams:
            for live in (False, True):
                for context in (True, False):
                    row = anyio.run(
                        lambda s=streams, lv=live, c=context: run(
                            server,
                            s,
                            args.fragments,
                            context=c,
                            live=lv,
                            interval=args.interval,
                            concurrency=args.concurrency,
                        )
                    )
                    print(
                        f"| {streams} | {'live' if live else 'burst'} | {'on' if context else 'off'}"
                        f" | {row['req/frag']:.2f} | {row['texts/req']:.1f} | {row['p50']:.0f}"
                        f" | {row['p95']:.0f} | {row['wall']:.1f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()

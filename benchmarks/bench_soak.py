"""Soak: does memory stay flat over 10,000+ fragments through hundreds of short-lived streams?

Fake stages that keep nothing per request (``record=False``) and return at once, so all the
memory that moves is the library's. The streams are split over ``--dubbers`` Dubbers, opened
and closed one after the other, each running ``--concurrency`` streams at a time. Each stream
is one of:

* a named stream, ``dubber.open_stream(...)``: one task sends its fragments then ``end()``,
  another iterates the results;
* a ``dubber.dub(...)`` call over the stream's fragments.

Every ``--abandon-every``-th pair of streams (one of each kind) is left half-way: the
reader stops and the block is left with work in flight, since cancelled and abandoned work
is where references tend to stay behind.

Resident memory (RSS, read from ``/proc/self/status``; elsewhere only the peak is available)
is sampled every ``--sample-every`` fragments sent. *Warm-up* is the first ``--warmup`` of
the fragments (thread pools, caches, allocator arenas fill up there); the figure that counts
is the growth from the end of warm-up to the end of the run (both after ``gc.collect()``),
against ``--target-mib``. The exit status is 1 when the target is missed, a fragment
FAILED (stages that cannot fail leave only the library to blame), or a stream that was read
to its end lost results.

    python benchmarks/bench_soak.py                    # 12,000 fragments, 480 streams, ~10 s
    python benchmarks/bench_soak.py --smoke            # a few hundred fragments, for tests
    python benchmarks/bench_soak.py --fragments 50000 --streams 2000 --tracemalloc 15
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import common
import numpy as np

import stsdub
from stsdub.testing import FakeASR, FakeSynthesizer, FakeTranslator

Fakes = tuple[FakeASR, FakeTranslator, FakeSynthesizer]

MIB = 1024 * 1024
SAMPLE_RATE = 16_000

# Full size unless told otherwise; --smoke swaps in the second column.
DEFAULTS: dict[str, tuple[Any, Any]] = {
    "fragments": (12_000, 300),
    "streams": (480, 24),
    "dubbers": (4, 2),
    "concurrency": (8, 4),
    "fragment_seconds": (0.5, 0.1),
    "sample_every": (250, 30),
}


# -- memory -----------------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    """A ``Vm*`` line of /proc/self/status in KiB, or None off Linux."""
    try:
        with open("/proc/self/status", encoding="utf-8", errors="replace") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss() -> int:
    """The process's resident-set high-water mark, in bytes."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    import resource  # not on Windows; there this benchmark does not run

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS counts bytes, others KiB


def rss() -> int:
    """Resident memory now, in bytes (the peak where the current figure is not available)."""
    kib = _status_kib("VmRSS")
    return kib * 1024 if kib is not None else peak_rss()


class Meter:
    """Counts fragments sent and samples RSS every ``every`` of them."""

    def __init__(self, every: int, warmup_at: int, trace: bool) -> None:
        self.every = every
        self.warmup_at = warmup_at
        self.trace = trace
        self.sent = 0
        self.samples: list[tuple[int, int]] = [(0, rss())]
        self.warm_rss: int | None = None
        self.warm_snapshot: tracemalloc.Snapshot | None = None

    def sent_one(self) -> None:
        self.sent += 1
        if self.sent == self.warmup_at:
            # Collected so that garbage a later collection would free is not counted as growth.
            gc.collect()
            self.warm_rss = rss()
            if self.trace:
                self.warm_snapshot = tracemalloc.take_snapshot()
        if self.sent % self.every == 0:
            self.samples.append((self.sent, rss()))


# -- the workload -----------------------------------------------------------------------------


def fragments_for(stream_id: str, count: int, audio: np.ndarray) -> list[stsdub.Fragment]:
    return [stsdub.Fragment(i, audio, SAMPLE_RATE, stream_id=stream_id) for i in range(count)]


class Tally:
    """What came back, to tell a soak that leaks from one that quietly drops work."""

    def __init__(self) -> None:
        self.results = 0
        self.failed = 0
        self.short_streams: list[str] = []
        self.abandoned = 0
        self.named = 0
        self.dub_calls = 0

    def result(self, result: stsdub.DubResult) -> None:
        self.results += 1
        if result.status is stsdub.Status.FAILED:
            self.failed += 1


async def run_named(
    dubber: stsdub.Dubber,
    stream_id: str,
    frags: list[stsdub.Fragment],
    abandon: bool,
    meter: Meter,
    tally: Tally,
) -> None:
    tally.named += 1
    read = 0
    async with dubber.open_stream(stream_id) as stream, anyio.create_task_group() as tg:

        async def send_all() -> None:
            for fragment in frags:
                await stream.send(fragment)
                meter.sent_one()
            await stream.end()

        tg.start_soon(send_all)
        async for result in stream:
            tally.result(result)
            read += 1
            if abandon and read >= len(frags) // 2:
                break
        # Leaving with work in flight: the sender is cancelled, the stream closed under it.
        tg.cancel_scope.cancel()
    if abandon:
        tally.abandoned += 1
    elif read != len(frags):
        tally.short_streams.append(f"{stream_id}: {read}/{len(frags)}")


async def run_dub(
    dubber: stsdub.Dubber,
    stream_id: str,
    frags: list[stsdub.Fragment],
    abandon: bool,
    meter: Meter,
    tally: Tally,
) -> None:
    tally.dub_calls += 1

    def counted() -> Iterator[stsdub.Fragment]:
        for fragment in frags:
            meter.sent_one()
            yield fragment

    read = 0
    async with dubber.dub(counted()) as results:
        async for result in results:
            tally.result(result)
            read += 1
            if abandon and read >= len(frags) // 2:
                break
    if abandon:
        tally.abandoned += 1
    elif read != len(frags):
        tally.short_streams.append(f"{stream_id}: {read}/{len(frags)}")


async def soak(args: argparse.Namespace, meter: Meter, tally: Tally, stages: Fakes) -> None:
    samples = max(1, round(args.fragment_seconds * SAMPLE_RATE))
    # Loud enough that the fake ASR hears speech, so every fragment goes through all stages.
    audio = (0.3 * np.sin(2 * np.pi * 220.0 * np.arange(samples) / SAMPLE_RATE)).astype(np.float32)
    per_stream, extra = divmod(args.fragments, args.streams)
    sizes = [per_stream + (i < extra) for i in range(args.streams)]
    bounds = [round(d * args.streams / args.dubbers) for d in range(args.dubbers + 1)]
    for d in range(args.dubbers):
        async with stsdub.Dubber(*stages, target_language="de", max_inflight=args.max_inflight) as dubber:
            todo = iter(range(bounds[d], bounds[d + 1]))

            async def worker(dubber: stsdub.Dubber, todo: Iterator[int]) -> None:
                # Workers share one iterator of stream numbers: each takes the next when free.
                for i in todo:
                    stream_id = f"soak-{i}"
                    # Fragments are made when the stream starts, so they die with it.
                    frags = fragments_for(stream_id, sizes[i], audio)
                    # Streams come in pairs, one of each kind, so both kinds get abandoned.
                    pair = i // 2
                    abandon = args.abandon_every > 0 and pair % args.abandon_every == args.abandon_every - 1
                    run = run_named if i % 2 == 0 else run_dub
                    await run(dubber, stream_id, frags, abandon, meter, tally)

            async with anyio.create_task_group() as tg:
                for _ in range(args.concurrency):
                    tg.start_soon(worker, dubber, todo)


# -- report -----------------------------------------------------------------------------------


def mib(n: float) -> str:
    return f"{n / MIB:,.1f} MiB"


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.tracemalloc:
        # A few frames tell where; each more slows every allocation further.
        tracemalloc.start(4)
    stages: Fakes = (
        FakeASR(mode=args.mode, record=args.record),
        FakeTranslator(mode=args.mode, record=args.record),
        FakeSynthesizer(mode=args.mode, record=args.record),
    )
    warmup_at = max(1, round(args.fragments * args.warmup))
    meter = Meter(args.sample_every, warmup_at, bool(args.tracemalloc))
    tally = Tally()
    gc.collect()
    start_rss = rss()
    started = time.perf_counter()
    anyio.run(soak, args, meter, tally, stages)
    wall = time.perf_counter() - started
    gc.collect()
    end_rss = rss()
    meter.samples.append((meter.sent, end_rss))
    warm_rss = meter.warm_rss if meter.warm_rss is not None else start_rss
    top: list[str] = []
    if args.tracemalloc and meter.warm_snapshot is not None:
        end_snapshot = tracemalloc.take_snapshot()
        diff = end_snapshot.compare_to(meter.warm_snapshot, "traceback")
        net = sum(stat.size_diff for stat in diff)
        top.append(f"net {net / 1024:+,.1f} KiB since warm-up; the largest growths:")
        grown = sorted((stat for stat in diff if stat.size_diff > 0), key=lambda stat: -stat.size_diff)
        for stat in grown[: args.tracemalloc]:
            # Most recent call first: "a <- b" reads "a, called from b".
            frames = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(stat.traceback))
            top.append(f"{stat.size_diff / 1024:+,.1f} KiB, {stat.count_diff:+,} blocks: {frames}")
        tracemalloc.stop()
    growth = end_rss - warm_rss
    # A leak is a trend: the slope over the samples after warm-up shows one that is too slow
    # to reach the target in this many fragments.
    after = [(n, b) for n, b in meter.samples if n >= warmup_at]
    slope = 0.0
    if len(after) >= 3:
        sent, resident = zip(*after, strict=True)
        slope = float(np.polyfit(sent, resident, 1)[0]) * 1000
    return {
        "fragments": meter.sent,
        "planned_fragments": args.fragments,
        "streams": args.streams,
        "named_streams": tally.named,
        "dub_calls": tally.dub_calls,
        "abandoned_streams": tally.abandoned,
        "dubbers": args.dubbers,
        "concurrency": args.concurrency,
        "fragment_seconds": args.fragment_seconds,
        "mode": args.mode,
        "results": tally.results,
        "failed": tally.failed,
        "short_streams": tally.short_streams,
        "asr_calls": stages[0].calls,
        "kept_requests": sum(len(stage.requests) + len(stage.batches) for stage in stages),
        "wall_s": wall,
        "fragments_per_s": meter.sent / wall if wall > 0 else 0.0,
        "rss_start": start_rss,
        "warmup_fragments": warmup_at,
        "rss_warm": warm_rss,
        "rss_end": end_rss,
        "rss_growth": growth,
        "rss_slope_per_1000": slope,
        "rss_peak": max(peak_rss(), *(r for _, r in meter.samples)),
        "rss_samples": meter.samples,
        "target_mib": args.target_mib,
        "passed": growth < args.target_mib * MIB and not tally.short_streams and not tally.failed,
        "tracemalloc_top": top,
    }


def report(r: dict[str, Any]) -> str:
    lines = [
        f"# {common.machine()}",
        f"# {r['fragments']:,} fragments of {r['fragment_seconds']:g} s sent (of {r['planned_fragments']:,}"
        " planned: the streams left half-way send the rest of theirs no more),"
        f" {r['streams']:,} streams"
        f" ({r['named_streams']} open_stream, {r['dub_calls']} dub(); {r['abandoned_streams']} left"
        f" half-way), {r['dubbers']} Dubbers in turn, {r['concurrency']} streams at a time,"
        f" {r['mode']} fakes",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| RSS at start (imports done) | {mib(r['rss_start'])} |",
        f"| RSS after warm-up ({r['warmup_fragments']:,} fragments) | {mib(r['rss_warm'])} |",
        f"| RSS at the end | {mib(r['rss_end'])} |",
        f"| growth after warm-up | {r['rss_growth'] / MIB:+,.1f} MiB |",
        f"| trend after warm-up, per 1,000 fragments | {r['rss_slope_per_1000'] / 1024:+,.1f} KiB |",
        f"| peak RSS | {mib(r['rss_peak'])} |",
        f"| results (failed) | {r['results']:,} ({r['failed']:,}) |",
        f"| fragments/s | {r['fragments_per_s']:,.0f} |",
        f"| wall time | {r['wall_s']:,.1f} s |",
        "",
        "RSS (MiB) by fragments sent: " + ", ".join(f"{n:,}: {b / MIB:.1f}" for n, b in r["rss_samples"]),
    ]
    if r["tracemalloc_top"]:
        lines += [
            "",
            "Python allocations since warm-up (tracemalloc; its own memory is in the RSS figures,"
            " so take those from a run without it):",
            *r["tracemalloc_top"],
        ]
    if r["short_streams"]:
        lines += ["", f"streams that lost results: {', '.join(r['short_streams'][:10])}"]
    verdict = "PASS" if r["passed"] else "FAIL"
    lines += [
        "",
        f"{verdict}: growth after warm-up {r['rss_growth'] / MIB:+.1f} MiB, target < {r['target_mib']:g} MiB",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--fragments", type=int, help="fragments planned in all (default 12,000; --smoke: 300)")
    add("--streams", type=int, help="short-lived streams in all, half named, half dub() (480; 24)")
    add("--dubbers", type=int, help="Dubbers opened and closed in turn (4; 2)")
    add("--concurrency", type=int, help="streams running at once in a Dubber (8; 4)")
    add("--fragment-seconds", type=float, help="length of each fragment (0.5; 0.1)")
    add("--sample-every", type=int, help="sample RSS every this many fragments (250; 30)")
    add("--max-inflight", type=int, default=3)
    add("--abandon-every", type=int, default=10, help="leave every N-th stream half-way (0: never)")
    add("--mode", choices=("sync", "async"), default="sync", help="fake stages in threads, or awaited")
    add("--warmup", type=float, default=0.1, help="share of the fragments counted as warm-up")
    add("--target-mib", type=float, default=20.0, help="most RSS growth after warm-up that passes")
    add(
        "--tracemalloc",
        type=int,
        default=0,
        metavar="N",
        help="print the N largest allocation growths (slow)",
    )
    add(
        "--record",
        action="store_true",
        help="let the fakes keep every request: a leak on purpose, to see that this benchmark catches one",
    )
    add("--smoke", action="store_true", help="a small run, for the test suite")
    add("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    for name, (full, smoke) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, smoke if args.smoke else full)
    if not 1 <= args.dubbers <= args.streams <= args.fragments:
        parser.error("need 1 <= --dubbers <= --streams <= --fragments")
    if not 0 < args.warmup < 1:
        parser.error("--warmup is a share: 0 < warmup < 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = run(args)
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""What a Ray Serve hop costs a stage call, and what a second replica buys.

1. Hop cost: one ASR call with a 6-s 16 kHz fragment, one at a time, p50 / p95 of
   - the fake stage called in-process (the baseline),
   - the same through the wire format in-process (``LocalTransport``: encoding only),
   - the same through Ray Serve (``RemoteASR`` → a replica on this machine).
2. Throughput: a fake ASR that takes a fixed 50 ms per call (one call at a time per replica,
   as a model on a GPU), many calls in flight from the host, with 1 and with 2 replicas.

It starts a local Ray cluster of its own (token authentication on, a token of this run's)
unless ``--address`` names one.

    python benchmarks/bench_ray.py [--calls 200] [--latency 0.05] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import time
from typing import Any

import anyio
import common
import numpy as np

import stsdub
from stsdub.ray import LocalTransport, RemoteASR
from stsdub.testing import FakeASR

RATE = 16_000
APP = "stsdub-bench-asr"


def request(seq: int) -> stsdub.ASRRequest:
    t = np.arange(6 * RATE, dtype=np.float32) / RATE
    audio = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return stsdub.ASRRequest(audio=stsdub.AudioBuffer(audio, RATE), sequence_number=seq)


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = sorted(1000 * s for s in samples)
    q = statistics.quantiles(ms, n=20)
    return {"p50_ms": statistics.median(ms), "p95_ms": q[18], "n": len(ms)}


async def sequential(call: Any, calls: int) -> list[float]:
    req = request(0)
    for _ in range(5):  # warm-up: connections, routers, lazy imports
        await call(req)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        await call(req)
        times.append(time.perf_counter() - started)
    return times


async def throughput(remote: RemoteASR, calls: int, in_flight: int) -> float:
    reqs = [request(i) for i in range(calls)]
    limiter = anyio.Semaphore(in_flight)
    for r in reqs[:4]:
        await remote.transcribe(r)

    async def one(r: stsdub.ASRRequest) -> None:
        async with limiter:
            await remote.transcribe(r)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for r in reqs:
            tg.start_soon(one, r)
    return calls / (time.perf_counter() - started)


def deploy(replicas: int, latency: float) -> None:
    import ray.serve

    from stsdub.ray import stage_app

    app = stage_app(
        "asr",
        "fake",
        options={"latency": latency, "record": False},
        num_replicas=replicas,
        num_cpus=0.1,
        max_ongoing_requests=8,
        max_queued_requests=256,
    )
    ray.serve.run(app, name=APP, route_prefix=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per measurement")
    parser.add_argument("--latency", type=float, default=0.05, help="the fake ASR's seconds per call")
    parser.add_argument("--in-flight", type=int, default=16, help="concurrent calls in the throughput run")
    parser.add_argument("--address", default=None, help="an existing Ray cluster (default: start one)")
    parser.add_argument("--json", default=None, help="write the figures here too")
    args = parser.parse_args()

    import ray.serve

    if args.address is None:
        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=args.address, log_to_driver=False)
    ray.serve.start(proxy_location="Disabled")
    out: dict[str, Any] = {"machine": common.machine()}
    try:
        fake = FakeASR(record=False)

        async def direct(req: stsdub.ASRRequest) -> Any:
            return await anyio.to_thread.run_sync(fake.transcribe, req)

        local = RemoteASR(transport=LocalTransport("asr", FakeASR(record=False)))
        deploy(1, 0.0)
        remote = RemoteASR(APP, timeout=10.0)
        hop = {
            "in-process (thread)": percentiles(anyio.run(sequential, direct, args.calls)),
            "wire format, in-process": percentiles(anyio.run(sequential, local.transcribe, args.calls)),
            "Ray Serve, 1 replica": percentiles(anyio.run(sequential, remote.transcribe, args.calls)),
        }
        out["hop"] = hop
        rates = {}
        for replicas in (1, 2):
            deploy(replicas, args.latency)
            remote = RemoteASR(APP, timeout=30.0, concurrency=args.in_flight)
            rates[replicas] = anyio.run(throughput, remote, args.calls, args.in_flight)
        out["throughput_per_s"] = rates
        out["latency_s"] = args.latency
    finally:
        ray.serve.shutdown()
        ray.shutdown()

    print(f"\nHop cost, one 6-s 16 kHz ASR call at a time ({out['machine']}):\n")
    print("| path | p50 ms | p95 ms |\n|---|---:|---:|")
    for name, row in hop.items():
        print(f"| {name} | {row['p50_ms']:.2f} | {row['p95_ms']:.2f} |")
    print(f"\nThroughput, fake ASR of {args.latency * 1000:.0f} ms per call, {args.in_flight} in flight:\n")
    print("| replicas | calls/s | ideal |\n|---:|---:|---:|")
    for replicas, rate in rates.items():
        print(f"| {replicas} | {rate:.1f} | {replicas / args.latency:.1f} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()

"""Load test of the Socket.IO service on loopback: many streams at once, fake stages.

The service runs in its own process (uvicorn, fake stages with realistic latencies that
sleep without using the CPU, as a GPU host would); the clients run here. Two runs:

- ``paced``: every stream sends one fragment per fragment-length of audio (real time, as a
  live worker does). The *service overhead* of a fragment is the time the client waits for
  its result minus the time the library's pipeline spent on it (``stage_timings.pipeline_ms``):
  transport both ways, base64, validation, queueing in the service, event-loop contention.
- ``flood``: every stream sends as fast as the service lets it, keeping at most ``--window``
  fragments unanswered (a well-behaved worker under backpressure). Reports throughput.

Both check that every fragment is answered exactly once and in order.

    python benchmarks/bench_server.py                 # 20 streams x 50 fragments
    python benchmarks/bench_server.py --streams 5 --fragments 10 --json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import socket
import statistics
import sys
import time
import urllib.request
from typing import Any

import numpy as np

RATE = 16_000


def _serve(port: int, options: dict[str, Any]) -> None:
    """The service process."""
    import logging

    import uvicorn

    import stsdub
    from stsdub.server import ServerSettings, create_app
    from stsdub.testing import FakeASR, FakeSynthesizer, FakeTranslator

    logging.basicConfig(level=logging.WARNING)
    # Async fakes with room for every stream at once: latency without CPU, like a GPU server.
    dubber = stsdub.Dubber(
        asr=FakeASR(latency=options["asr_latency"], mode="async", concurrency=256),
        translator=FakeTranslator(latency=options["mt_latency"], mode="async", concurrency=256),
        synthesizer=FakeSynthesizer(latency=options["tts_latency"], mode="async", concurrency=256),
        device="cpu",
    )
    settings = ServerSettings(
        host="127.0.0.1",
        port=port,
        target_language="es",
        max_concurrent_streams=options["streams"],
        max_inflight=3,
        log_level="WARNING",
    )
    app = create_app(settings, dubber=dubber)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", ws_ping_interval=None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _audio(seconds: float) -> str:
    t = np.arange(round(seconds * RATE), dtype=np.float32) / RATE
    ints = np.round(0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2")
    return base64.b64encode(ints.tobytes()).decode("ascii")


class _StreamClient:
    def __init__(self, url: str, stream_id: str, fragments: int, audio: str, seconds: float) -> None:
        import socketio

        self.url = url
        self.stream_id = stream_id
        self.fragments = fragments
        self.audio = audio
        self.seconds = seconds
        self.sio = socketio.AsyncClient(reconnection=False)
        self.sent: dict[int, float] = {}
        self.received: list[int] = []
        self.rtt_ms: list[float] = []
        self.pipeline_ms: list[float] = []
        self.rejected = 0
        self.ready = asyncio.Event()
        self.done = asyncio.Event()
        self.progress = asyncio.Event()
        self.sio.on("stream:ready", self._on_ready)
        self.sio.on("fragment:processed", self._on_processed)
        self.sio.on("fragment:ack", self._on_ack)

    async def _on_ready(self, data: dict[str, Any]) -> None:
        self.ready.set()

    async def _on_ack(self, data: dict[str, Any]) -> None:
        if data["status"] != "queued":
            self.rejected += 1

    async def _on_processed(self, data: dict[str, Any]) -> None:
        now = time.perf_counter()
        seq = data["sequence_number"]
        self.received.append(seq)
        self.rtt_ms.append(1000 * (now - self.sent[seq]))
        self.pipeline_ms.append(data["stage_timings"]["pipeline_ms"])
        self.progress.set()
        if len(self.received) == self.fragments:
            self.done.set()

    def _payload(self, seq: int) -> dict[str, Any]:
        return {
            "fragment_id": f"{self.stream_id}-{seq}",
            "stream_id": self.stream_id,
            "sequence_number": seq,
            "timestamp": int(1000 * seq * self.seconds),
            "audio": {
                "format": "pcm_s16le",
                "sample_rate_hz": RATE,
                "channels": 1,
                "data_base64": self.audio,
            },
        }

    async def open(self) -> None:
        await self.sio.connect(self.url, transports=["websocket"], wait_timeout=30)
        await self.sio.emit(
            "stream:init",
            {
                "stream_id": self.stream_id,
                "config": {"target_language": "es", "audio_format": {"sample_rate_hz": RATE, "channels": 1}},
            },
        )
        await asyncio.wait_for(self.ready.wait(), 30)

    async def run_paced(self, start: float) -> None:
        for seq in range(self.fragments):
            await asyncio.sleep(max(0.0, start + seq * self.seconds - time.perf_counter()))
            self.sent[seq] = time.perf_counter()
            await self.sio.emit("fragment:data", self._payload(seq))
        await asyncio.wait_for(self.done.wait(), 120)

    async def run_flood(self, window: int) -> None:
        for seq in range(self.fragments):
            while seq - len(self.received) >= window:
                self.progress.clear()
                await self.progress.wait()
            self.sent[seq] = time.perf_counter()
            await self.sio.emit("fragment:data", self._payload(seq))
        await asyncio.wait_for(self.done.wait(), 300)

    async def close(self) -> None:
        await self.sio.disconnect()


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def _run(mode: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    audio = _audio(args.fragment_seconds)
    clients = [
        _StreamClient(url, f"{mode}-{i:02d}", args.fragments, audio, args.fragment_seconds)
        for i in range(args.streams)
    ]
    await asyncio.gather(*(c.open() for c in clients))
    started = time.perf_counter()
    if mode == "paced":
        # Streams start spread over one fragment-length, as independent workers would.
        spread = args.fragment_seconds / args.streams
        await asyncio.gather(*(c.run_paced(started + i * spread) for i, c in enumerate(clients)))
    else:
        await asyncio.gather(*(c.run_flood(args.window) for c in clients))
    elapsed = time.perf_counter() - started
    await asyncio.gather(*(c.close() for c in clients))
    expected = list(range(args.fragments))
    lost = sum(args.fragments - len(set(c.received)) for c in clients)
    out_of_order = sum(c.received != expected for c in clients)
    rtt = [v for c in clients for v in c.rtt_ms]
    pipeline = [v for c in clients for v in c.pipeline_ms]
    added = [r - p for c in clients for r, p in zip(c.rtt_ms, c.pipeline_ms, strict=True)]
    total = args.streams * args.fragments
    return {
        "mode": mode,
        "fragments": total,
        "answered": len(rtt),
        "lost": lost,
        "streams_out_of_order": out_of_order,
        "rejected": sum(c.rejected for c in clients),
        "seconds": round(elapsed, 2),
        "fragments_per_second": round(total / elapsed, 1),
        "rtt_ms": {"p50": round(_pct(rtt, 50), 1), "p95": round(_pct(rtt, 95), 1), "max": round(max(rtt), 1)},
        "pipeline_ms": {"p50": round(_pct(pipeline, 50), 1), "p95": round(_pct(pipeline, 95), 1)},
        "service_added_ms": {
            "p50": round(_pct(added, 50), 1),
            "p95": round(_pct(added, 95), 1),
            "mean": round(statistics.fmean(added), 1),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--fragments", type=int, default=50)
    parser.add_argument("--fragment-seconds", type=float, default=0.5)
    parser.add_argument("--asr-latency", type=float, default=0.20, help="seconds per ASR call")
    parser.add_argument("--mt-latency", type=float, default=0.08, help="seconds per translation call")
    parser.add_argument("--tts-latency", type=float, default=0.15, help="seconds per synthesis call")
    parser.add_argument("--window", type=int, default=6, help="flood: unanswered fragments per stream")
    parser.add_argument("--mode", choices=("paced", "flood", "both"), default="both")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()

    port = _free_port()
    options = {
        "asr_latency": args.asr_latency,
        "mt_latency": args.mt_latency,
        "tts_latency": args.tts_latency,
        "streams": args.streams,
    }
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(port, options), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        modes = ("paced", "flood") if args.mode == "both" else (args.mode,)
        reports = [asyncio.run(_run(mode, url, args)) for mode in modes]
    finally:
        server.terminate()
        server.join(10)
    setup = {
        "streams": args.streams,
        "fragments_per_stream": args.fragments,
        "fragment_seconds": args.fragment_seconds,
        "stage_latency_s": {"asr": args.asr_latency, "translation": args.mt_latency, "tts": args.tts_latency},
    }
    if args.json:
        print(json.dumps({"setup": setup, "runs": reports}, indent=2))
    else:
        print(f"setup: {json.dumps(setup)}")
        for r in reports:
            print(
                f"{r['mode']:>6}: {r['answered']}/{r['fragments']} answered, lost {r['lost']},"
                f" streams out of order {r['streams_out_of_order']}, rejected {r['rejected']},"
                f" {r['fragments_per_second']} fragments/s in {r['seconds']} s"
            )
            print(
                f"        round trip p50 {r['rtt_ms']['p50']} ms / p95 {r['rtt_ms']['p95']} ms;"
                f" pipeline p50 {r['pipeline_ms']['p50']} ms / p95 {r['pipeline_ms']['p95']} ms;"
                f" service added p50 {r['service_added_ms']['p50']} ms"
                f" / p95 {r['service_added_ms']['p95']} ms"
            )
    ok = all(
        r["lost"] == 0 and r["streams_out_of_order"] == 0 and r["answered"] == r["fragments"] for r in reports
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

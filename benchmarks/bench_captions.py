"""Live captions: how soon interims and finals come, and what interims cost the dub.

Real meeting speech (the AMI excerpts, ``common.REAL_DATA / "ami"``) is played as live
sources: each stream gets one excerpt, 100 ms of audio every 100 ms (``Stream.send_audio``),
cut into utterances by silero-vad's streaming endpointer (400 ms of silence ends one) and sent
as fragments. The offline stages dub it (faster-whisper with its default model, Apertium into
Spanish, eSpeak NG), with 1 and with 4 streams at once, each with ``captions="interim"`` and
with no captions, one Dubber (models loaded once) for every run.

Figures: interim latency (last audio of the pass reaching the stream → the interim event),
final latency (the fragment sent → its final caption), translation latency, dub latency (the
fragment sent → its result) and its ratio with captions vs without; passes, interims shown
and dropped.

    python benchmarks/bench_captions.py --json out/bench_captions.json
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
from pathlib import Path
from typing import Any

import anyio
import common
import numpy as np
import soundfile

import stsdub

# The same endpointer as the example a user runs.
sys.path.insert(0, str(common.ROOT / "examples"))
from live_captions import utterances

RATE = common.RATE
CHUNK = 1600


async def live(
    dubber: stsdub.Dubber, name: str, audio: np.ndarray, captions: str | None, out: dict[str, list[float]]
) -> stsdub.CaptionStatus | None:
    spans = utterances(audio)
    sent: dict[int, float] = {}
    options: dict[str, Any] = {"captions": captions, "caption_interval": 0.3} if captions else {}
    async with dubber.open_stream(name, **options) as stream:

        async def speak() -> None:
            seq, started = 0, anyio.current_time()
            for at in range(0, audio.size, CHUNK):
                await anyio.sleep(max(0.0, at / RATE - (anyio.current_time() - started)))
                if captions and seq < len(spans) and spans[seq][0] <= at + CHUNK and at < spans[seq][1]:
                    stream.send_audio(audio[at : at + CHUNK], RATE)
                if seq < len(spans) and at + CHUNK >= spans[seq][1]:
                    start, end = spans[seq]
                    await stream.send(stsdub.Fragment(seq, audio[start:end], RATE))
                    sent[seq] = anyio.current_time()
                    seq += 1
            await stream.end()

        async with anyio.create_task_group() as tg:
            tg.start_soon(speak)
            events = stream.events() if captions else aiter(stream)
            async for event in events:
                now = anyio.current_time()
                if isinstance(event, stsdub.DubResult):
                    out["dub"].append(now - sent[event.sequence_number])
                elif event.kind == "interim":
                    out["interim"].append(event.latency_ms / 1000)
                elif event.fragment_id is not None:
                    out[event.kind].append(now - sent[event.sequence_number])
        return stream.caption_status


def summary(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "mean_ms": None}
    return {
        "n": len(values),
        "p50_ms": round(1000 * common.percentile(values, 50)),
        "p95_ms": round(1000 * common.percentile(values, 95)),
        "mean_ms": round(1000 * statistics.fmean(values)),
    }


async def run(streams: int, seconds: float) -> dict[str, Any]:
    sources = []
    for _, path in common.ami_excerpts():
        audio, rate = soundfile.read(path, dtype="float32")
        assert rate == RATE
        sources.append(np.clip(audio[: round(seconds * RATE)], -1, 1).astype(np.float32))
    assert sources, "the AMI excerpts are needed (common.REAL_DATA)"
    dubber = stsdub.Dubber(
        "faster-whisper",
        "apertium",
        "espeak",
        source_language=None,
        target_language="es",
        fragment_timeout=60,
    )
    figures: dict[str, Any] = {}
    async with dubber:
        for captions in ("interim", None, "interim"):  # the first run warms up
            out: dict[str, list[float]] = {"interim": [], "final": [], "translation": [], "dub": []}
            statuses: list[stsdub.CaptionStatus | None] = []

            async def one(
                k: int, captions: str | None, out: dict[str, list[float]], statuses: list[Any]
            ) -> None:
                statuses.append(await live(dubber, f"s{k}", sources[k % len(sources)], captions, out))

            async with anyio.create_task_group() as tg:
                for k in range(streams):
                    tg.start_soon(one, k, captions, out, statuses)
            row: dict[str, Any] = {kind: summary(values) for kind, values in out.items()}
            if captions:
                row["passes"] = sum(s.interim_passes for s in statuses if s)
                row["interims"] = sum(s.interims for s in statuses if s)
                row["dropped"] = sum(s.interims_dropped for s in statuses if s)
            figures[str(captions)] = row
    with_captions, without = figures["interim"], figures["None"]
    if with_captions["dub"]["mean_ms"] and without["dub"]["mean_ms"]:
        figures["dub_slowdown"] = round(with_captions["dub"]["mean_ms"] / without["dub"]["mean_ms"], 3)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", default="1,4")
    parser.add_argument("--seconds", type=float, default=30.0, help="of each excerpt")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    figures: dict[str, Any] = {"machine": common.machine(), "date": datetime.date.today().isoformat()}
    for streams in (int(n) for n in args.streams.split(",")):
        figures[f"{streams}_streams"] = result = anyio.run(run, streams, args.seconds)
        for captions in ("interim", "None"):
            row = result[captions]
            line = "  ".join(
                f"{kind} p50 {row[kind]['p50_ms']} p95 {row[kind]['p95_ms']} ms (n={row[kind]['n']})"
                for kind in ("interim", "final", "translation", "dub")
                if row[kind]["n"]
            )
            extra = (
                f"  passes {row['passes']} shown {row['interims']} dropped {row['dropped']}"
                if "passes" in row
                else ""
            )
            print(f"{streams} stream(s), captions={captions}: {line}{extra}")
        print(f"{streams} stream(s): dub latency with interims / without = {result.get('dub_slowdown')}")
    print(common.machine())
    common.write_json(None if args.json is None else Path(args.json), figures)


if __name__ == "__main__":
    main()

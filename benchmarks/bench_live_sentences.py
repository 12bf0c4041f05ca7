"""Whole sentences in a live stream: what ``sentence_wait`` buys in BLEU, and what it costs in latency.

The recordings of ``bench_sentences`` (the generated talks spoken one breath group at a time,
and the AMI excerpts with references) are cut into pieces as a file dub cuts them, and the
pieces are sent to one live stream in real time: each at the moment its audio has ended, with
``timestamp_ms`` saying when it began. For each ``sentence_wait`` the stream is scored:

- BLEU / chrF (sacrebleu) of the dub's text against the Spanish references;
- translator calls, and how many fragments were given a share of a sentence spanning several;
- latency: from the end of a fragment's audio to its result, p50 / p95 / max (seconds).

The stages are the offline defaults: faster-whisper tiny.en, Apertium eng-spa, eSpeak NG.

    python benchmarks/bench_live_sentences.py [--workload generated|real|all]
        [--waits 0,1.5,3,5] [--json out.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import bench_sentences as offline
import common
import numpy as np
import soundfile

import stsdub
from stsdub import Fragment
from stsdub._builtin.apertium import ApertiumTranslator
from stsdub._recordings._files import dub_file


def pieces(dubber: stsdub.Dubber, items: Sequence[offline.Item]) -> list[list[tuple[float, float]]]:
    """Where a file dub cuts each recording (seconds), found by dubbing it once."""
    spans = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, audio, _, _ in items:
            path = Path(tmp) / f"{name}.wav"
            soundfile.write(str(path), audio, common.RATE)
            spans.append(list(dub_file(dubber, path, None, subtitles=(), units="fragments").spans))
    return spans


async def live(
    dubber: stsdub.Dubber, audio: np.ndarray, spans: Sequence[tuple[float, float]], wait: float, name: str
) -> tuple[list[stsdub.DubResult], list[float], int]:
    """The pieces through one stream in real time: results, latencies, fragments joined."""
    fragments = [
        Fragment(
            n,
            audio[round(a * common.RATE) : round(b * common.RATE)],
            common.RATE,
            timestamp_ms=round(1000 * a),
        )
        for n, (a, b) in enumerate(spans)
    ]
    results: list[stsdub.DubResult] = []
    latencies: list[float] = []
    async with dubber.open_stream(f"{name}-{wait:g}", sentence_wait=wait) as stream:
        began = anyio.current_time()

        async def feed() -> None:
            for fragment, (_, end) in zip(fragments, spans, strict=True):
                await anyio.sleep_until(began + end)  # its audio has just ended
                await stream.send(fragment)
            await stream.end()

        async with anyio.create_task_group() as tg:
            tg.start_soon(feed)
            async for result in stream:
                results.append(result)
                latencies.append(anyio.current_time() - began - spans[result.sequence_number][1])
        joined = stream._translation.joined
    return results, latencies, joined


def run(
    workload: str,
    items: list[offline.Item],
    dubber: stsdub.Dubber,
    counted: offline.CountedTranslator,
    waits: Sequence[float],
) -> dict[str, Any]:
    cuts = pieces(dubber, items)
    references = [item[3] for item in items]
    rows = []
    for wait in waits:
        hyps: list[str] = []
        latencies: list[float] = []
        calls = joined = failed = 0
        for (name, audio, _, _), spans in zip(items, cuts, strict=True):
            before = len(counted.calls)
            portal = dubber._portal
            assert portal is not None
            results, lat, j = portal.call(live, dubber, audio, spans, wait, name)
            calls += len(counted.calls) - before
            joined += j
            failed += sum(not r.ok for r in results)
            latencies += lat
            hyps.append(" ".join(r.translation.text for r in results if r.translation))
        row = {
            "sentence_wait": wait,
            **offline.scores(hyps, references),
            "translator_calls": calls,
            "fragments": sum(len(s) for s in cuts),
            "joined": joined,
            "failed": failed,
            "latency_p50": round(float(np.percentile(latencies, 50)), 2),
            "latency_p95": round(float(np.percentile(latencies, 95)), 2),
            "latency_max": round(max(latencies), 2),
        }
        rows.append(row)
        print(
            f"| {workload} | {wait:g} | {row['bleu']} / {row['chrf']} | {calls} | {joined}/{row['fragments']}"
            f" | {row['latency_p50']} / {row['latency_p95']} / {row['latency_max']} |",
            flush=True,
        )
    return {
        "workload": workload,
        "seconds": round(sum(i[1].size for i in items) / common.RATE, 1),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=("generated", "real", "all"), default="all")
    parser.add_argument(
        "--waits", default="0,1.5,3,5", help="sentence_wait values (seconds), comma-separated"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    waits = [float(x) for x in args.waits.split(",")]
    counted = offline.CountedTranslator(ApertiumTranslator(device="cpu"))
    dubber = offline.offline_dubber(counted)
    print(f"bench_live_sentences on {common.machine()}, {time.strftime('%Y-%m-%d')}")
    print(
        "| workload | sentence_wait (s) | BLEU / chrF | translator calls | fragments joined"
        " | latency p50 / p95 / max (s) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    reports = []
    with dubber:
        if args.workload in ("generated", "all"):
            reports.append(run("generated", offline.talks(), dubber, counted, waits))
        if args.workload in ("real", "all"):
            items = offline.meetings()
            if items:
                reports.append(run("AMI", items, dubber, counted, waits))
            else:
                print(f"real: no AMI excerpts under {common.REAL_DATA}; skipped")
    counted.inner.close()
    common.write_json(
        args.json, {"machine": common.machine(), "date": time.strftime("%Y-%m-%d"), "reports": reports}
    )


if __name__ == "__main__":
    main()

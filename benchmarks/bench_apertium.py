"""Apertium English → Spanish per sentence: the stage's persistent pipelines against
``apertium eng-spa`` started per sentence.

50 English sentences, translated both ways, interleaved sentence by sentence so both see the
same load:

- persistent: the ``apertium`` stage (``ApertiumTranslator.translate``), its ``eng-spa``
  pipeline started and warmed up once, each sentence fed through it in null-flush mode;
- process per sentence: ``apertium -u eng-spa`` run once per sentence, the sentence on stdin
  (what a translator without a kept process would do).

Reported: milliseconds per sentence (median, mean, p95), interleaved and, for the stage,
also back to back (the pipeline's programs stay hot between sentences); the stage's
start-up (the first request of a cold pipeline, and ``warmup()`` of ``--parallel``
pipelines); and its aggregate throughput with ``--parallel`` requests at once (one pipeline
each). The two ways must agree on every sentence; the count of those that differ is printed.

    python benchmarks/bench_apertium.py [--repeat 3] [--parallel 2]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import common

from stsdub import TranslationRequest
from stsdub._builtin.apertium import ApertiumTranslator

#: 50 sentences of 4-14 words, the length of what one fragment of speech holds.
SENTENCES = (
    "Hello, how are you?",
    "The weather is nice today.",
    "Please open the window.",
    "We will meet at the station tomorrow morning.",
    "The game starts at seven o'clock.",
    "She bought three apples and a loaf of bread.",
    "Thank you very much for your help.",
    "The train was late again this evening.",
    "My brother lives in a small house near the river.",
    "Turn left at the next corner.",
    "The children are playing in the garden.",
    "I would like a cup of coffee.",
    "The meeting has been moved to Friday.",
    "Where is the nearest hospital?",
    "Can you tell me how much this costs?",
    "I have been waiting for an hour.",
    "The museum is closed on Mondays.",
    "We need to buy milk, eggs and cheese.",
    "He forgot his keys at the office.",
    "The film was too long but the music was beautiful.",
    "It is going to rain tonight.",
    "My sister works as a teacher in a small school.",
    "They travelled to the mountains last summer.",
    "Do you know where the bus stop is?",
    "The restaurant opens at eight in the evening.",
    "I cannot find my phone anywhere.",
    "Our team won the match yesterday.",
    "The book is on the table in the kitchen.",
    "Please speak more slowly.",
    "The doctor will see you in ten minutes.",
    "We are planning a trip to the coast next month.",
    "The price of petrol has gone up again.",
    "She sings in a choir every Sunday.",
    "The new bridge will be finished next year.",
    "Could you help me carry these boxes?",
    "The city is very busy at this time of day.",
    "I like to read before I go to sleep.",
    "The children must be home before dark.",
    "He has lived in this town all his life.",
    "The shop on the corner sells fresh bread.",
    "We should leave early to avoid the traffic.",
    "The report will be published next week.",
    "My grandmother grows tomatoes in her garden.",
    "The concert was cancelled because of the storm.",
    "Please turn off the lights when you leave.",
    "The water in the lake is very cold.",
    "They are building a new school near the park.",
    "I will call you when I arrive.",
    "The dog is sleeping under the table.",
    "Thank you for coming to the meeting today.",
)


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def process_translate(program: str, text: str) -> str:
    """One sentence through a fresh ``apertium -u eng-spa`` (the text on stdin)."""
    done = subprocess.run(
        [program, "-u", "eng-spa"], input=text, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"apertium failed: {done.stderr.strip()}")
    return " ".join(done.stdout.split())


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="times each sentence is translated each way")
    parser.add_argument("--parallel", type=int, default=2, help="requests at once for the throughput row")
    args = parser.parse_args()
    program = shutil.which("apertium")
    if program is None:
        raise SystemExit("Apertium is not installed: apt-get install apertium apertium-eng-spa")
    version = subprocess.run([program, "-V"], capture_output=True, text=True, check=True).stdout.strip()
    print(f"# {common.machine()}; {version}")

    cold = ApertiumTranslator(concurrency=1)
    first = timed(
        lambda: cold.translate(TranslationRequest(text="Hello.", source_language="en", target_language="es"))
    )
    cold.close()
    stage = ApertiumTranslator(concurrency=args.parallel, preload=["en-es"])
    warm = timed(stage.warmup)
    print(
        f"stage start-up: first request of a cold pipeline {first * 1000:.0f} ms;"
        f" warmup() of {args.parallel} pipelines {warm * 1000:.0f} ms"
    )
    requests = [TranslationRequest(text=t, source_language="en", target_language="es") for t in SENTENCES]
    # Both ways once, untimed: the data in the page cache, and the same translation from each.
    differ = [
        (r.text, a, b)
        for r in requests
        if (a := stage.translate(r).text) != (b := process_translate(program, r.text))
    ]
    print(f"{len(requests)} sentences: {len(requests) - len(differ)} translated the same both ways")
    for text, a, b in differ:
        print(f"  differ: {text!r}: stage {a!r}, apertium {b!r}")

    persistent: list[float] = []
    per_process: list[float] = []
    for _ in range(args.repeat):
        for request in requests:
            persistent.append(timed(lambda r=request: stage.translate(r)))
            per_process.append(timed(lambda r=request: process_translate(program, r.text)))
    print(f"{len(requests)} sentences × {args.repeat}, one at a time:")
    print("| way | ms per sentence (median) | mean | p95 |")
    print("|---|---:|---:|---:|")
    for name, times in (
        ("persistent pipeline (the stage)", persistent),
        ("`apertium -u eng-spa` per sentence", per_process),
    ):
        print(
            f"| {name} | {statistics.median(times) * 1000:.1f} | {statistics.mean(times) * 1000:.1f} |"
            f" {p95(times) * 1000:.1f} |"
        )
    ratio = statistics.median(per_process) / statistics.median(persistent)
    print(f"process per sentence / persistent: {ratio:.0f}× (medians)")

    # Interleaved, the pipeline's dozen programs sleep through each `apertium` start and are
    # woken cold; a stream's fragments come back to back more often than not.
    back_to_back = [timed(lambda r=r: stage.translate(r)) for _ in range(args.repeat) for r in requests]
    print(
        f"| persistent pipeline, back to back | {statistics.median(back_to_back) * 1000:.1f} |"
        f" {statistics.mean(back_to_back) * 1000:.1f} | {p95(back_to_back) * 1000:.1f} |"
    )

    with ThreadPoolExecutor(args.parallel) as pool:
        wall = timed(lambda: list(pool.map(stage.translate, requests * args.repeat)))
    print(
        f"| stage, {args.parallel} requests at once (aggregate) |"
        f" {wall / (len(requests) * args.repeat) * 1000:.1f} | | |"
    )
    stage.close()


if __name__ == "__main__":
    main()

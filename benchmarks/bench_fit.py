"""Fitting translations that run long: how often and how much dubbed speech is sped up.

English sentences (``bench_apertium.SENTENCES``) are spoken by eSpeak NG in English; each
recording is one fragment, the time the dub must fit. The dub is English → Spanish with the
real stages, eSpeak NG speaking Spanish, rubberband stretching:

- ``apertium / before``: Apertium, the fragment is the English speech only, nothing
  borrowed (``max_borrow=0``) — stsdub's behaviour before length budgets and borrowing;
- ``apertium / after``: the same with a 0.4-s pause after each sentence, taken along as the
  fragment's tail (as file dubbing does) — speech borrows from it before it is sped up
  (Apertium cannot shorten);
- ``llm / before`` and ``llm / after``: the ``llm`` stage against the loopback
  OpenAI-compatible server of the tests. Its first answer is Apertium's translation (a long
  version); asked with a length budget, it answers that translation with words dropped from
  the end until it fits ``max_chars`` (a stand-in for a model's rewrite: it measures the
  pipeline's mechanics and the speech time saved, not a model's translation quality).
  ``before`` turns shortening off (``comfortable_speed=99``) and borrowing off;
  ``shortening only`` has no pause to borrow from.

Reported per configuration: fragments whose overall tempo (speaking rate × stretch) is
above ×1.15, the mean tempo, the mean tempo of the sped-up ones, the share shortened, the
seconds borrowed, and for the LLM the chat requests per fragment.

    python benchmarks/bench_fit.py [--count 50]
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from typing import Any

import anyio
import common
import numpy as np
from bench_apertium import SENTENCES
from tests.stages.openai_server import openai_server

import stsdub
from stsdub import DurationPolicy, TranslationRequest
from stsdub._builtin.apertium import ApertiumTranslator
from stsdub._builtin.espeak import ESpeakSynthesizer
from stsdub._pipeline._duration import trim_silence
from stsdub._pipeline._job import TAIL_KEY

RATE = 16_000
PAUSE = 0.4
RUSHED = 1.15


class KnownASR:
    """Hears the sentence each fragment was made from (the benchmark is about the fit)."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts

    def transcribe(self, request: stsdub.ASRRequest) -> stsdub.Transcript:
        return stsdub.Transcript(self.texts[request.sequence_number], "en")


def english_fragments(texts: list[str], pause: float) -> list[stsdub.Fragment]:
    voice = ESpeakSynthesizer()
    out = []
    for i, text in enumerate(texts):
        speech = voice.synthesize(stsdub.SynthesisRequest(text=text, language="en")).resampled(RATE)
        core = trim_silence(speech.samples)
        audio = np.concatenate([core, np.zeros(round(pause * RATE), np.float32)])
        metadata = {TAIL_KEY: pause} if pause else {}
        out.append(stsdub.Fragment(i, audio, RATE, metadata=metadata))
    return out


def shorten_to(text: str, max_chars: int) -> str:
    words = text.split()
    while len(words) > 1 and len(" ".join(words)) > max_chars:
        words.pop()
    return " ".join(words).rstrip(",;:") + ("." if not words[-1].endswith((".", "?", "!")) else "")


async def run(
    translator: Any, texts: list[str], pause: float, policy: DurationPolicy
) -> list[stsdub.DubResult]:
    dubber = stsdub.Dubber(
        KnownASR(texts),
        translator,
        ESpeakSynthesizer(),
        source_language="en",
        target_language="es",
        duration=policy,
        fragment_timeout=30.0,
    )
    async with dubber:
        return [r async for r in dubber.dub(english_fragments(texts, pause))]


def figures(results: list[stsdub.DubResult]) -> dict[str, float]:
    fits = [r.fit for r in results if r.fit is not None]
    tempos = [f.sped_up for f in fits]
    fast = [t for t in tempos if t > 1.0]
    return {
        "n": len(fits),
        "rushed": sum(t > RUSHED for t in tempos) / len(fits),
        "mean": statistics.fmean(tempos),
        "mean_fast": statistics.fmean(fast) if fast else 1.0,
        "shortened": sum(f.shortened for f in fits) / len(fits),
        "borrowed": sum(f.borrowed for f in fits),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50)
    args = parser.parse_args()
    texts = list(SENTENCES[: args.count])
    apertium = ApertiumTranslator()
    spanish = {
        t: apertium.translate(TranslationRequest(text=t, source_language="en", target_language="es")).text
        for t in texts
    }
    growth = statistics.fmean(len(spanish[t]) / len(t) for t in texts)
    before = DurationPolicy(max_borrow=0.0, comfortable_speed=99.0)
    after = DurationPolicy()
    rows: list[tuple[str, dict[str, float], float | None]] = []
    started = time.perf_counter()
    rows.append(("apertium / before", figures(anyio.run(run, apertium, texts, 0.0, before)), None))
    rows.append(("apertium / after", figures(anyio.run(run, apertium, texts, PAUSE, after)), None))
    apertium.close()

    def answer(body: dict[str, Any]) -> str:
        user = body["messages"][-1]["content"]
        line = user.strip().splitlines()[-1]
        budget = re.search(r"at most (\d+) characters", user)
        long = spanish.get(line, line)
        return shorten_to(long, int(budget.group(1))) if budget else long

    from stsdub._builtin.llm import LLMTranslator

    shorten_only = DurationPolicy(max_borrow=0.0)
    configurations = (
        ("llm / before", 0.0, before),
        ("llm / shortening only", 0.0, shorten_only),
        ("llm / after", PAUSE, after),
    )
    for name, pause, policy in configurations:
        with openai_server() as server:
            server.answer(*([answer] * (4 * len(texts))))
            llm = LLMTranslator(model="test-model", base_url=server.url, api_key=server.api_key)
            results = anyio.run(run, llm, texts, pause, policy)
            llm.close()
            rows.append((name, figures(results), len(server.chat_requests()) / len(texts) - 1))
    elapsed = time.perf_counter() - started

    print(
        f"{len(texts)} English sentences → Spanish (Apertium's translations {growth - 1:+.0%} characters),"
        f" eSpeak NG voices, pause {PAUSE} s; {common.machine()},"
        f" {elapsed:.0f} s"
    )
    print(
        "| configuration | tempo > ×1.15 | mean tempo | mean of sped-up | shortened | borrowed | extra req |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, f, extra in rows:
        print(
            f"| {name} | {f['rushed']:.0%} | ×{f['mean']:.3f} | ×{f['mean_fast']:.3f}"
            f" | {f['shortened']:.0%} | {f['borrowed']:.1f} | {'' if extra is None else f'{extra:.2f}'} |"
        )


if __name__ == "__main__":
    main()

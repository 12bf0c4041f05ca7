"""Whole sentences against fragments: what the dub says, scored against human translations.

A file is cut where its speakers pause, and pauses are where people breathe, not where their
sentences end. This benchmark dubs the same recordings with the same stages (faster-whisper,
Apertium eng-spa, eSpeak NG) two ways and scores the text of each dub against careful Spanish
references (``benchmarks/data/sentences``, with a note on how they were made):

- ``fragments``: ``dub_file(units="fragments")``, every fragment translated alone;
- ``sentences``: ``dub_file(units="sentences")`` (the default), every sentence once, then its
  translation split back over its fragments (the dub's text is those translations, word for
  word, so it equals its own transcript translated sentence by sentence by construction);
- ``true words``: the words really said, sentence by sentence, through the same translator:
  what a perfect ASR would give, for scale.

Workloads: ``generated``: three short talks spoken by eSpeak NG one breath group at a time,
with the pauses a speaker takes (``talks.json``); ``real``: five 30-s excerpts of AMI meeting
speech (``ami.json``, the audio from :data:`common.REAL_DATA`).

Reported per workload and way: BLEU and chrF (sacrebleu, one segment per recording), the
translator's calls (against the sentences said), and how the speech was fitted: the share of
fragments whose dubbed speech ends within 2 % of its time, the worst variance, and how much
faster than its natural pace the voice speaks (median and 90th percentile). Also: the sentence
dub's text for other ``edge_pause`` values (where a full stop at a piece's end is believed),
and the other placement the issue names: one synthesis per sentence, from its first word over
its whole time span (pauses included), against the translation split back at the pauses.
And ASR-BLEU: the dub's speech heard back by the multilingual Whisper base (language ``es``;
the dubbed fragments in order, 0.3 s apart, in windows of at most 25 s), scored against the
same references, and its ratio to the text's BLEU (is the voice intelligible where fitting
changed its pace?); beside it, the sentence dub's translations spoken at the voice's own pace,
nothing fitted, heard back the same way: what voice and ear lose without any speed-up.

    python benchmarks/bench_sentences.py [--workload generated|real|all] [--asr-model NAME]
        [--json out.json] [--no-asr-bleu] [--policy max_speed=1.5 ...]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common
import numpy as np
import soundfile

import stsdub
from stsdub import Fragment, Transcript, TranslationRequest
from stsdub._builtin.apertium import ApertiumTranslator
from stsdub._media import ANALYSIS_RATE
from stsdub._pipeline._job import TAIL_KEY
from stsdub._pipeline._sentences import sentences, tokens_of
from stsdub._recordings._files import dub_file

DATA = Path(__file__).resolve().parent / "data" / "sentences"
_SPLIT = re.compile(r"(?<=[.!?])\s+")


class CountedTranslator:
    """The translator the Dubber uses, keeping every request and its translation."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str]] = []
        for flag in ("supports_context", "supports_length_budget"):
            if getattr(inner, flag, False) is True:
                setattr(self, flag, True)

    def translate(self, request: TranslationRequest) -> stsdub.Translation:
        out = self.inner.translate(request)
        self.calls.append((request.text, out.text))
        return out  # type: ignore[no-any-return]

    def warmup(self) -> None:
        self.inner.warmup()


Item = tuple[str, np.ndarray, str, str]  # name, 16-kHz speech, English said, Spanish reference


def talks() -> list[Item]:
    """The generated talks, each spoken one breath group at a time with its pauses."""
    out = []
    for talk in json.loads((DATA / "talks.json").read_text(encoding="utf-8"))["talks"]:
        parts = [np.zeros(int(0.5 * common.RATE), np.float32)]
        for text, pause in talk["groups"]:
            parts += [common.espeak(text), np.zeros(int(pause * common.RATE), np.float32)]
        said = " ".join(text for text, _ in talk["groups"])
        out.append((talk["name"], np.concatenate(parts), said, talk["reference_es"]))
    return out


def meetings() -> list[Item]:
    """The AMI excerpts that have references: (name, speech, reference)."""
    known = json.loads((DATA / "ami.json").read_text(encoding="utf-8"))["excerpts"]
    out = []
    for name, path in common.ami_excerpts():
        if name in known:
            audio, rate = soundfile.read(str(path), dtype="float32")
            if rate != common.RATE:
                raise SystemExit(f"{path}: expected {common.RATE} Hz, got {rate}")
            out.append((name, audio, known[name]["en"], known[name]["es"]))
    return out


def fit_figures(results: Sequence[stsdub.DubResult]) -> dict[str, Any]:
    fits = [r.fit for r in results if r.fit is not None and r.fit.aim > 0]
    variances = [abs(r.duration_variance) for r in results if r.duration_variance is not None]
    tempo = [f.natural / f.seconds for f in fits if f.seconds > 0]
    return {
        "fragments": len(results),
        "failed": sum(not r.ok for r in results),
        "within_2pc": round(sum(v <= 0.02 for v in variances) / len(variances), 3) if variances else None,
        "worst_variance": round(max(variances), 3) if variances else None,
        "faster_median": round(statistics.median(tempo), 3) if tempo else None,
        "faster_p90": round(float(np.percentile(tempo, 90)), 3) if tempo else None,
    }


def scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    import sacrebleu

    bleu = sacrebleu.corpus_bleu(hypotheses, [references])
    chrf = sacrebleu.corpus_chrf(hypotheses, [references])
    return {"bleu": round(bleu.score, 1), "chrf": round(chrf.score, 1)}


async def placed_at_start(
    dubber: stsdub.Dubber,
    audio16k: np.ndarray,
    results: Sequence[stsdub.DubResult],
    spans: Sequence[tuple[float, float]],
    said: dict[str, str],
) -> list[stsdub.DubResult]:
    """The sentences of a dub each spoken once, from its first word over its whole span."""
    tokens = []
    for n, (r, (start, end)) in enumerate(zip(results, spans, strict=True)):
        if r.transcript is not None and r.transcript.text.strip():
            tokens += tokens_of(n, r.transcript.transcript, start, end - start)
    units = [u for u in sentences(tokens) if u.text in said]
    duration = audio16k.size / ANALYSIS_RATE
    borrow = dubber._duration.policy.max_borrow
    fragments = []
    for k, unit in enumerate(units):
        following = units[k + 1].start if k + 1 < len(units) else duration
        tail = max(0.0, min(following - unit.end, borrow))
        a = round(unit.start * ANALYSIS_RATE)
        b = round((unit.end + tail) * ANALYSIS_RATE)
        fragments.append(
            Fragment(
                k,
                audio16k[a:b],
                ANALYSIS_RATE,
                stream_id="start",
                metadata={TAIL_KEY: tail} if tail else {},
                transcript=Transcript(unit.text, "en"),
                translation=said[unit.text],
            )
        )
    async with dubber.dub(fragments, output_sample_rate=ANALYSIS_RATE) as stream:
        return [r async for r in stream]


def translate_alone(counted: CountedTranslator, text: str) -> str:
    request = TranslationRequest(text=text, source_language="en", target_language="es")
    return str(counted.inner.translate(request).text)


#: Where a full stop at a piece's end is believed (``sentences(edge_pause=...)``): 0 believes
#: every one (Whisper ends every piece with one), inf none.
EDGE_PAUSES = (0.0, 0.3, 0.45, 0.6, 0.8, 1.0, float("inf"))


def sweep(
    counted: CountedTranslator, results: Sequence[stsdub.DubResult], spans: Sequence[tuple[float, float]]
) -> dict[str, str]:
    """The sentence dub's text for other ``edge_pause`` values (each unit translated alone,
    as the dub does with a translator that reads no context): the same transcript re-cut."""
    tokens = []
    for n, (r, (start, end)) in enumerate(zip(results, spans, strict=True)):
        if r.transcript is not None and r.transcript.text.strip():
            tokens += tokens_of(n, r.transcript.transcript, start, end - start)
    return {
        f"{x:g}": " ".join(translate_alone(counted, u.text) for u in sentences(tokens, edge_pause=x))
        for x in EDGE_PAUSES
    }


def _heard(ear: Any, clips: Sequence[np.ndarray], rate: int) -> str:
    """What the multilingual Whisper base hears (language ``es``) in ``clips`` played one after
    another with 0.3 s between them, heard in windows of at most 25 s cut between clips."""
    gap = np.zeros(int(0.3 * rate), np.float32)
    windows: list[list[np.ndarray]] = [[]]
    for clip in clips:
        if windows[-1] and sum(c.size for c in windows[-1]) + clip.size > 25 * rate:
            windows.append([])
        windows[-1] += [clip, gap]
    import ctranslate2

    heard = []
    for window in windows:
        if window:
            # Where its first decode fails Whisper samples: the same seed for every window takes
            # the sampling's own chance out (threads' rounding can still change a decode).
            ctranslate2.set_random_seed(0)
            audio = stsdub.AudioBuffer(np.concatenate(window), rate)
            heard.append(ear.transcribe(stsdub.ASRRequest(audio=audio, language="es")).text.strip())
    return " ".join(t for t in heard if t)


def back_transcribe(ear: Any, results: Sequence[stsdub.DubResult]) -> str:
    """The dub heard back (ASR-BLEU): its fragments' speech as the listener hears it, in order."""
    clips = [r.audio.audio.samples for r in results if r.audio.kind == "dubbed"]
    rate = next((r.audio.audio.sample_rate for r in results if r.audio.kind == "dubbed"), common.RATE)
    return _heard(ear, clips, rate)


def heard_unfitted(ear: Any, voice: Any, texts: Sequence[str]) -> str:
    """The same translations spoken by the voice at its own pace, nothing fitted, heard back:
    what the voice and the ear lose without any speed-up (the ceiling of ASR-BLEU here)."""
    clips, rate = [], common.RATE
    for text in texts:
        if text.strip():
            speech = voice.synthesize(stsdub.SynthesisRequest(text=text, language="es"))
            clips.append(speech.samples)
            rate = speech.sample_rate
    return _heard(ear, clips, rate)


def run(
    workload: str, items: list[Item], dubber: stsdub.Dubber, counted: CountedTranslator, ear: Any = None
) -> dict[str, Any]:
    ways = ("fragments", "sentences", "true words")
    hyps: dict[str, list[str]] = {way: [] for way in ways}
    heard_back: dict[str, list[str]] = {"fragments": [], "sentences": [], "unfitted": []}
    calls: dict[str, list[tuple[str, str]]] = {"fragments": [], "sentences": []}
    fits: dict[str, list[stsdub.DubResult]] = {"fragments": [], "sentences": [], "start": []}
    swept: dict[str, list[str]] = {f"{x:g}": [] for x in EDGE_PAUSES}
    texts: dict[str, dict[str, str]] = {}
    seconds = 0.0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name, audio, said, _ in items:
            path = Path(tmp) / f"{name}.wav"
            soundfile.write(str(path), audio, common.RATE)
            seconds += audio.size / common.RATE
            # What the translator makes of the words really said, sentence by sentence.
            hyps["true words"].append(" ".join(translate_alone(counted, x) for x in _SPLIT.split(said) if x))
            for units in ("fragments", "sentences"):
                before = len(counted.calls)
                dubbed = dub_file(dubber, path, None, subtitles=(), units=units)
                made = counted.calls[before:]
                calls[units] += made
                hyps[units].append(" ".join(r.translation.text for r in dubbed.results if r.translation))
                fits[units] += dubbed.results
                if ear is not None:
                    heard_back[units].append(back_transcribe(ear, dubbed.results))
                    if units == "sentences":
                        voice = dubber.stages["synthesizer"]
                        heard_back["unfitted"].append(heard_unfitted(ear, voice, [t for _, t in made]))
            heard = " ".join(r.transcript.text for r in dubbed.results if r.transcript)
            texts[name] = {"transcript": heard, **{way: hyps[way][-1] for way in ways}}
            for x, text in sweep(counted, dubbed.results, dubbed.spans).items():
                swept[x].append(text)
            portal = dubber._portal
            assert portal is not None
            fits["start"] += portal.call(
                placed_at_start, dubber, audio, dubbed.results, dubbed.spans, dict(made)
            )
    references = [item[3] for item in items]
    report: dict[str, Any] = {
        "workload": workload,
        "recordings": len(items),
        "seconds": round(seconds, 1),
        "wall_s": round(time.perf_counter() - started, 1),
        "sentences_said": sum(len([x for x in _SPLIT.split(item[2]) if x]) for item in items),
        "texts": texts,
    }
    for way, found in hyps.items():
        row: dict[str, Any] = scores(found, references)
        if way in calls:
            row["translator_calls"] = len(calls[way])
            row["fit"] = fit_figures(fits[way])
        if heard_back.get(way):
            row["asr"] = scores(heard_back[way], references)
            row["asr_bleu_ratio"] = round(row["asr"]["bleu"] / row["bleu"], 3) if row["bleu"] else None
        report[way] = row
    if heard_back["unfitted"]:
        unfitted = scores(heard_back["unfitted"], references)
        report["sentences"]["asr_unfitted"] = unfitted
        report["sentences"]["asr_unfitted_ratio"] = (
            round(unfitted["bleu"] / report["sentences"]["bleu"], 3) if report["sentences"]["bleu"] else None
        )
    report["edge_pause"] = {x: scores(found, references) for x, found in swept.items()}
    report["placement"] = {
        "split at the pauses": fit_figures(fits["sentences"]),
        "one per sentence from its start": fit_figures(fits["start"]),
    }
    return report


def show(report: dict[str, Any]) -> None:
    print(
        f"\n{report['workload']}: {report['recordings']} recordings, {report['seconds']} s of speech,"
        f" {report['sentences_said']} sentences said"
    )
    print("| way | BLEU | chrF | translator calls | within 2 % | faster (median / p90) |")
    print("|---|---|---|---|---|---|")
    for way in ("fragments", "sentences", "true words"):
        row = report[way]
        fit = row.get("fit", {})
        calls = f"{row.get('translator_calls', '-')}"
        fitted = (
            f"{fit.get('within_2pc', '-')} | {fit.get('faster_median', '-')} / {fit.get('faster_p90', '-')}"
        )
        print(f"| {way} | {row['bleu']} | {row['chrf']} | {calls} | {fitted} |")
        if "asr" in row:
            print(
                f"|   heard back (base) | {row['asr']['bleu']} | {row['asr']['chrf']}"
                f" | ASR-BLEU / BLEU {row['asr_bleu_ratio']} | | |"
            )
        if "asr_unfitted" in row:
            print(
                f"|   its text unfitted, heard back | {row['asr_unfitted']['bleu']}"
                f" | {row['asr_unfitted']['chrf']} | ASR-BLEU / BLEU {row['asr_unfitted_ratio']} | | |"
            )
    print("| edge_pause (s) | " + " | ".join(report["edge_pause"]) + " |")
    print("|---" * (1 + len(report["edge_pause"])) + "|")
    print(
        "| BLEU / chrF | "
        + " | ".join(f"{v['bleu']} / {v['chrf']}" for v in report["edge_pause"].values())
        + " |"
    )
    print("| placement | fragments | within 2 % | worst variance | faster (median / p90) |")
    print("|---|---|---|---|---|")
    for name, fit in report["placement"].items():
        figures = (
            f"{fit['within_2pc']} | {fit['worst_variance']} | {fit['faster_median']} / {fit['faster_p90']}"
        )
        print(f"| {name} | {fit['fragments']} | {figures} |")


def offline_dubber(
    counted: CountedTranslator,
    asr_options: dict[str, Any] | None = None,
    duration: stsdub.DurationPolicy | None = None,
) -> stsdub.Dubber:
    """The stages both sentence benchmarks dub with: faster-whisper, ``counted``, eSpeak NG, en → es."""
    return stsdub.Dubber(
        duration=duration,
        asr="faster-whisper",
        translator=counted,
        synthesizer="espeak",
        source_language="en",
        target_language="es",
        device="cpu",
        asr_options=asr_options or {},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=("generated", "real", "all"), default="all")
    parser.add_argument("--asr-model", default=None, help="Whisper model (default: the ASR's own)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--no-asr-bleu", action="store_true", help="skip hearing the dubs back with Whisper base"
    )
    parser.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a DurationPolicy setting other than its default, e.g. max_speed=1.5 (repeatable)",
    )
    args = parser.parse_args()
    ear = None
    if not args.no_asr_bleu:
        from stsdub._builtin.faster_whisper import FasterWhisperASR

        ear = FasterWhisperASR(device="cpu", model="base")
    counted = CountedTranslator(ApertiumTranslator(device="cpu"))
    settings = dict(item.split("=", 1) for item in args.policy)
    policy = stsdub.DurationPolicy(**{key: float(value) for key, value in settings.items()})
    dubber = offline_dubber(counted, {"model": args.asr_model} if args.asr_model else {}, policy)
    reports = []
    model = args.asr_model or "(default)"
    print(f"bench_sentences on {common.machine()}, {time.strftime('%Y-%m-%d')}")
    print(f"faster-whisper {model}, apertium eng-spa, espeak; {policy}")
    with dubber:
        if args.workload in ("generated", "all"):
            reports.append(run("generated talks (eSpeak NG)", talks(), dubber, counted, ear))
            show(reports[-1])
        if args.workload in ("real", "all"):
            items = meetings()
            if not items:
                print(f"\nreal: no AMI excerpts under {common.REAL_DATA}; skipped")
            else:
                reports.append(run("real meeting speech (AMI)", items, dubber, counted, ear))
                show(reports[-1])
    counted.inner.close()
    common.write_json(
        args.json, {"machine": common.machine(), "date": time.strftime("%Y-%m-%d"), "reports": reports}
    )


if __name__ == "__main__":
    main()

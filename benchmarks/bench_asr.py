"""Real-time factor of the faster-whisper ASR stage, sequential and batched.

Makes real English speech with the packaged Piper voice, cuts it into fragments of equal
length, and transcribes them through the registered ``faster-whisper`` stage (by default the
bundled Whisper tiny.en, int8). Prints one table row per mode:

* ``sequential``: one ``transcribe`` call after another;
* ``batched``: ``transcribe_batch`` with ``--batch`` fragments per call;
* ``threads``: ``--workers`` threads calling ``transcribe`` at once (``num_workers`` = workers).

RTF = processing time / audio duration (lower is faster; below 1 keeps up with live audio).

    python benchmarks/bench_asr.py                       # tiny.en int8, 2 threads, 6-s fragments
    python benchmarks/bench_asr.py --fragments 16 --batch 8 --device cuda
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

import common
import numpy as np
from tests.speech import SENTENCES, speak, wer

import stsdub
from stsdub import ASRRequest, AudioBuffer


def make_fragments(count: int, seconds: float) -> tuple[list[AudioBuffer], list[str]]:
    """``count`` fragments of ``seconds`` each, filled with whole spoken sentences."""
    fragments, references = [], []
    sentence = 0
    for _ in range(count):
        parts: list[np.ndarray] = []
        words: list[str] = []
        rate = 0
        length = 0
        while True:
            text = SENTENCES[sentence % len(SENTENCES)]
            audio, rate = speak(text)
            pause = np.zeros(int(0.3 * rate), dtype=np.float32)
            if length + audio.size + pause.size > seconds * rate and parts:
                break
            parts += [audio, pause]
            words.append(text)
            length += audio.size + pause.size
            sentence += 1
        samples = np.zeros(int(seconds * rate), dtype=np.float32)
        joined = np.concatenate(parts)[: samples.size]
        samples[: joined.size] = joined
        fragments.append(AudioBuffer(samples, rate))
        references.append(" ".join(words))
    return fragments, references


def timed(fn: object, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--model", default=None, help="model directory or size name (default: bundled tiny.en)")
    add("--device", default="cpu", help="cpu | cuda | auto (default: cpu)")
    add("--compute-type", default=None, help="default: int8 on CPU, float16 on CUDA")
    add("--cpu-threads", type=int, default=2, help="CTranslate2 threads per call (default: 2)")
    add("--fragments", type=int, default=8, help="number of fragments (default: 8)")
    add("--seconds", type=float, default=6.0, help="fragment length in s (default: 6)")
    add("--batch", type=int, default=8, help="fragments per transcribe_batch call (default: 8)")
    add("--workers", type=int, default=2, help="threads for the 'threads' mode; 0 skips it")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=2, help="runs per mode; the best is reported")
    args = parser.parse_args(argv)

    fragments, references = make_fragments(args.fragments, args.seconds)
    requests = [
        ASRRequest(audio=f, language="en", sequence_number=i, stream_id=f"s{i % 4}")
        for i, f in enumerate(fragments)
    ]
    audio_s = sum(f.duration for f in fragments)
    factory = stsdub.StageRegistry.from_plugin_manager().get("asr", "faster-whisper").load_factory()

    def build(workers: int = 1) -> object:
        options: dict[str, object] = {
            "cpu_threads": args.cpu_threads,
            "num_workers": workers,
            "beam_size": args.beam_size,
            "max_batch_size": args.batch,
        }
        if args.model:
            options["model"] = args.model
        if args.compute_type:
            options["compute_type"] = args.compute_type
        asr = factory(device=args.device, **options)
        asr.warmup()
        return asr

    asr = build()
    rows = []

    t, res = timed(lambda: [asr.transcribe(r) for r in requests], args.repeat)
    rows.append(("sequential", 1, t, res))

    def batched() -> list[object]:
        out: list[object] = []
        for i in range(0, len(requests), args.batch):
            out += asr.transcribe_batch(requests[i : i + args.batch])
        return out

    t, res = timed(batched, args.repeat)
    rows.append(("batched", args.batch, t, res))
    asr.close()

    if args.workers > 0:
        threaded_asr = build(args.workers)
        with ThreadPoolExecutor(args.workers) as pool:
            t, res = timed(lambda: list(pool.map(threaded_asr.transcribe, requests)), args.repeat)
        rows.append((f"threads ({args.workers} workers)", args.workers, t, res))
        threaded_asr.close()

    print(
        f"faster-whisper {getattr(asr, 'compute_type', '?')} on {asr.device},"  # type: ignore[attr-defined]
        f" cpu_threads={args.cpu_threads}, beam={args.beam_size};"
        f" {common.machine()},"
        f" {os.cpu_count()} cores; {len(fragments)} fragments x {args.seconds:g} s = {audio_s:.0f} s audio"
    )
    print(f"{'mode':<22} {'per call':>8} {'total s':>8} {'ms/frag':>8} {'RTF':>6} {'WER':>6}")
    for mode, per_call, seconds, results in rows:
        texts = [r.text for r in results]  # type: ignore[attr-defined]
        print(
            f"{mode:<22} {per_call:>8} {seconds:>8.2f} {1000 * seconds / len(fragments):>8.0f}"
            f" {seconds / audio_s:>6.3f} {wer(references, texts):>6.1%}"
        )
    base = rows[0][2]
    print("speed-up vs sequential: " + ", ".join(f"{m} {base / s:.2f}x" for m, _, s, _ in rows[1:]))
    same = all(
        [r.text for r in rows[0][3]] == [r.text for r in other[3]]  # type: ignore[attr-defined]
        for other in rows[1:]
    )
    print(f"same texts in every mode: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

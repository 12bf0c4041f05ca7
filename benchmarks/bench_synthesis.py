"""Piper synthesis speed and the cost of duration matching per 6-second fragment.

Piper: load and warm-up time, then the real-time factor (seconds of compute per second of
speech) over the test sentences, one call at a time and with the stage's ``concurrency``
threads at once (aggregate throughput).

Duration matching, for a 6 s fragment whose speech is 10 % too long (so rubberband runs):
the whole ``DurationMatcher.fit``, then its parts: the rubberband round trip through
pyrubberband (temporary WAV files + the subprocess), a bare start of the rubberband program
(what any subprocess costs), and resampling to 48 kHz; and ``fit`` when nothing needs
stretching (padding only).

    python benchmarks/bench_synthesis.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import common
from tests.speech import SENTENCES

from stsdub import AudioBuffer, SynthesisRequest
from stsdub._builtin.piper import PiperSynthesizer
from stsdub._core import _audio
from stsdub._pipeline._duration import DurationMatcher, find_rubberband, time_stretch, trim_silence

LONG_TEXT = (
    "We will meet at the station tomorrow morning, and then we will take the train to the city"
    " together. The meeting has been moved to Friday, so please tell your brother."
)


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_piper(repeat: int) -> PiperSynthesizer:
    started = time.perf_counter()
    piper = PiperSynthesizer(device="cpu")
    load = time.perf_counter() - started
    warm = timed(piper.warmup, 1)
    print(f"piper load {load:.2f} s, warm-up {warm * 1000:.0f} ms, concurrency {piper.concurrency}")
    requests = [SynthesisRequest(text=t, language="en") for t in SENTENCES]

    compute = speech = 0.0
    for _ in range(repeat):
        for request in requests:
            started = time.perf_counter()
            audio = piper.synthesize(request)
            compute += time.perf_counter() - started
            speech += audio.duration
    per_sentence = speech / repeat / len(requests)
    print(
        f"| piper, one call at a time | RTF {compute / speech:.3f} | {per_sentence:.2f} s"
        f" of speech per sentence, {1000 * compute / repeat / len(requests):.0f} ms |"
    )

    with ThreadPoolExecutor(piper.concurrency) as pool:
        started = time.perf_counter()
        audios = list(pool.map(piper.synthesize, requests * repeat))
        wall = time.perf_counter() - started
    total = sum(a.duration for a in audios)
    print(f"| piper, {piper.concurrency} calls at once | aggregate RTF {wall / total:.3f} | |")
    return piper


def bench_duration(piper: PiperSynthesizer, repeat: int) -> None:
    # Speech of about 6.6 s (Piper asked for the speed that gives it) for a fragment 10 % shorter.
    speed = 1.0
    for _ in range(3):  # the length scale is not quite proportional: aim in a few steps
        audio = piper.synthesize(SynthesisRequest(text=LONG_TEXT, language="en", speed=speed))
        speed *= trim_silence(audio.samples).size / audio.sample_rate / 6.6
    speech = trim_silence(audio.samples)
    rate = audio.sample_rate
    seconds = speech.size / rate / 1.1
    buffer = AudioBuffer(speech, rate)
    matcher = DurationMatcher()
    path, version = find_rubberband()
    print(
        f"rubberband {'.'.join(map(str, version))}; speech {speech.size / rate:.2f} s at {rate} Hz"
        f" for a {seconds:.2f} s fragment"
    )
    fitted = matcher.fit(buffer, round(seconds * 48_000), 48_000)
    assert fitted.tempo > 1.05 and fitted.status.value == "success", fitted
    fit_48k = timed(lambda: matcher.fit(buffer, round(seconds * 48_000), 48_000), repeat)
    fit_same = timed(lambda: matcher.fit(buffer, round(seconds * rate), rate), repeat)
    stretch = timed(lambda: time_stretch(speech, rate, 1.1), repeat)
    spawn = timed(lambda: subprocess.run([path, "--version"], capture_output=True, check=True), repeat)
    resample = timed(lambda: _audio.resample(speech, rate, 48_000), repeat)
    fits = AudioBuffer(speech[: round(seconds * rate) - rate // 10], rate)
    pad_only = timed(lambda: matcher.fit(fits, round(seconds * 48_000), 48_000), repeat)
    print("| step, 6 s fragment | ms (median) |")
    print("|---|---:|")
    print(f"| fit: trim + rubberband ×1.1 + resample to 48 kHz + pad | {fit_48k * 1000:.0f} |")
    print(f"| fit at the voice's rate ({rate} Hz) | {fit_same * 1000:.0f} |")
    print(f"| of which the rubberband round trip (WAV files + subprocess) | {stretch * 1000:.0f} |")
    print(f"| of which starting any rubberband process (`--version`) | {spawn * 1000:.1f} |")
    print(f"| resample {rate} → 48 000 Hz (soxr HQ) | {resample * 1000:.1f} |")
    print(f"| fit when the speech already fits (no rubberband) | {pad_only * 1000:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"# {common.machine()}")
    piper = bench_piper(args.repeat)
    bench_duration(piper, args.repeat)
    piper.close()


if __name__ == "__main__":
    main()

"""Soundtrack: how well ducking keeps the music and drops the original voice; what separation costs.

    python benchmarks/bench_soundtrack.py [--seconds 30] [--full-seconds 15] [--threads N] [--json OUT]
        [--fragment-seconds 6] [--skip-separation]

The clip is made here, so every part of it is known: sentences spoken by Piper (the en_US voice
the test suite uses) at known times over synthesized music (chords of sine partials with soft
note edges and a bass line), and a "dub" (other sentences, same voice) starting a little later
in each line.

Ducking (``stsdub._media._duck.mix_ducked``, default settings), measured on the parts of the
mix, which is linear in the original:

* music between lines: its level in the output against the music alone, in dB, both in the
  middle of each gap and over each whole gap (ramps included);
* original voice under dubbed speech: how far below its own level it is heard, in dB;
* clicks: the largest gain change from one sample to the next, in dB, against the design bound.

Live ducking: the same clip as a stream of 6-s fragments with ``background="duck"``, each
fragment ducked as it comes and joined to the one before (``bench_live_ducking``), with the
same figures.

Separation (``DemucsSeparator``, CPU unless CUDA is there):

* the tiny random-weight HT-Demucs of the test suite: SDR of its background against the known
  music (meaningless with random weights, printed with the figure for doing nothing, i.e. the
  mix itself as the background) and its speed;
* HT-Demucs at its default (htdemucs) sizes with random weights: speed in seconds per minute of
  audio, which is what the real model costs, since speed does not depend on the weights;
* with ``--model NAME_OR_PATH`` a real model (e.g. ``htdemucs`` cached on this machine): its
  SDR, which is the meaningful quality figure.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

LINES = [
    "Good evening, and welcome to the final of the season.",
    "The players are on the pitch and the crowd is ready.",
    "It has been a long road for both teams to get here.",
    "Stay with us for the kick off in a few minutes.",
]
DUB = [
    "Buenas noches y bienvenidos a la final de la temporada.",
    "Los jugadores ya están en el campo.",
    "Ha sido un camino largo para los dos equipos.",
    "Quédense con nosotros para el saque inicial.",
]


def _db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def _sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    noise = reference.astype(np.float64) - estimate
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / (np.sum(noise**2) + 1e-20)))


def music(seconds: float, rate: int) -> np.ndarray:
    """Chords (root, third, fifth, octave) changing every two seconds over a bass line."""
    t = np.arange(round(seconds * rate)) / rate
    out = np.zeros_like(t)
    roots = [220.0, 174.61, 261.63, 196.0]
    for i in range(int(np.ceil(seconds / 2))):
        root = roots[i % len(roots)]
        part = (t >= 2 * i) & (t < 2 * i + 2)
        local = t[part] - 2 * i
        envelope = np.minimum(1.0, local / 0.05) * np.minimum(1.0, (2 - local) / 0.05)
        for ratio, amp in ((1.0, 0.05), (1.26, 0.04), (1.5, 0.04), (2.0, 0.03), (0.5, 0.06)):
            out[part] += amp * envelope * np.sin(2 * np.pi * root * ratio * t[part])
    return out.astype(np.float32)


def place(clips: list[np.ndarray], starts: list[float], seconds: float, rate: int) -> tuple[np.ndarray, list]:
    track = np.zeros(round(seconds * rate), np.float32)
    spans = []
    for clip, start in zip(clips, starts, strict=True):
        a = round(start * rate)
        b = min(track.size, a + clip.size)
        track[a:b] += clip[: b - a]
        spans.append((a / rate, b / rate))
    return track, spans


def spoken_lines(seconds: float) -> tuple[int, np.ndarray, list, list[float]]:
    """The clip's voice: LINES spoken by Piper, one every ``seconds / 4`` from 1 s on.

    Returns the rate, the voice track, each line's (start, end) and the start times.
    """
    from tests.speech import speak

    spoken = [speak(text) for text in LINES]
    rate = spoken[0][1]
    starts = [1.0 + i * seconds / len(LINES) for i in range(len(LINES))]
    voice, lines = place([0.9 * s for s, _ in spoken], starts, seconds, rate)
    return rate, voice, lines, starts


def bench_ducking(seconds: float) -> dict[str, Any]:
    from tests.speech import speak

    from stsdub._core import _audio
    from stsdub._media._duck import (
        DEFAULT_ATTACK,
        DEFAULT_DEPTH_DB,
        DEFAULT_RELEASE,
        duck_gain,
        max_gain_step_db,
        mix_ducked,
        speech_spans,
        steepest_step_db,
    )

    rate, voice, lines, starts = spoken_lines(seconds)
    dubs = [0.9 * speak(text)[0] for text in DUB]
    dub, _ = place(dubs, [s + 0.3 for s in starts], seconds, rate)
    bed = music(seconds, rate)
    original = np.clip(bed + voice, -1, 1)

    started = time.perf_counter()
    out = mix_ducked(dub, original, rate, speech=lines)
    elapsed = time.perf_counter() - started
    heard_voice = out - mix_ducked(dub, bed, rate, speech=lines)
    heard_music = mix_ducked(dub, bed, rate, speech=lines) - dub

    def at(s: float) -> int:
        return round(s * rate)

    dub_spans = speech_spans(dub, rate)
    spans = lines + dub_spans
    # Where the dub speaks: the original voice as heard there, against the voice itself.
    drops = []
    for a, b in dub_spans:
        segment = slice(at(a), at(b))
        if _db(voice[segment]) > -60:
            drops.append(_db(voice[segment]) - _db(heard_voice[segment]))
    edges = sorted(spans)
    gaps, covered = [], 0.0
    for a, b in edges:
        if a - covered > 1.0:
            gaps.append((covered, a))
        covered = max(covered, b)
    if seconds - covered > 1.0:
        gaps.append((covered, seconds))

    def middle(x: np.ndarray, a: float, b: float) -> np.ndarray:
        return x[at(a + DEFAULT_RELEASE) : at(b - DEFAULT_ATTACK)]

    inner = [abs(_db(middle(heard_music, a, b)) - _db(middle(bed, a, b))) for a, b in gaps]
    whole = [abs(_db(heard_music[at(a) : at(b)]) - _db(bed[at(a) : at(b)])) for a, b in gaps]
    gain = duck_gain(out.size, rate, spans)
    # A click shows as a sample-to-sample jump larger than the music itself has.
    jump_out = float(np.max(np.abs(np.diff(heard_music))))
    jump_in = float(np.max(np.abs(np.diff(bed))))
    _audio.check_samples(out)
    return {
        "rate": rate,
        "seconds": seconds,
        "lines": len(lines),
        "gaps": len(gaps),
        "depth_db": DEFAULT_DEPTH_DB,
        "music_gap_middle_max_deviation_db": max(inner),
        "music_gap_whole_max_deviation_db": max(whole),
        "original_voice_drop_under_dub_min_db": min(drops),
        "original_voice_drop_under_dub_median_db": float(np.median(drops)),
        "max_gain_step_db_per_sample": max_gain_step_db(gain),
        "design_bound_db_per_sample": steepest_step_db(DEFAULT_DEPTH_DB, DEFAULT_ATTACK, rate),
        "max_sample_jump_ducked_music": jump_out,
        "max_sample_jump_music": jump_in,
        "seconds_per_minute": elapsed * 60 / seconds,
    }


def bench_live_ducking(seconds: float, fragment_seconds: float) -> dict[str, Any]:
    """The same clip as a live stream: ``open_stream(background="duck")``, fragment by fragment.

    The ASR reports the known speech spans of each fragment and the synthesizer is the fake's
    quiet tone, so what is measured is the stream's mixing: each fragment ducked on its own,
    its gain joined to the previous fragment's. The stream runs twice, over the music with
    the voice and over the music alone; the mix is linear in the original, so their
    difference is the original voice as heard and the second minus the dub is the music.
    """
    import anyio

    import stsdub
    from stsdub._media._duck import (
        DEFAULT_ATTACK,
        DEFAULT_DEPTH_DB,
        DEFAULT_RELEASE,
        speech_spans,
        steepest_step_db,
    )
    from stsdub.testing import FakeSynthesizer

    rate, voice, lines, _starts = spoken_lines(seconds)
    bed = music(seconds, rate)
    size = round(fragment_seconds * rate)

    class KnownSpeech:
        """Hears a line wherever the clip has one (times within the fragment)."""

        def transcribe(self, request: stsdub.ASRRequest) -> stsdub.Transcript:
            offset = request.sequence_number * fragment_seconds
            inside = [
                (max(a - offset, 0.0), min(b - offset, fragment_seconds))
                for a, b in lines
                if b > offset and a < offset + fragment_seconds
            ]
            if not inside:
                return stsdub.Transcript("", "en")
            segments = tuple(stsdub.Segment(a, b, "line") for a, b in inside)
            return stsdub.Transcript("line", "en", segments=segments)

    async def stream(original: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        dubber = stsdub.Dubber(
            asr=KnownSpeech(),
            translator=None,
            synthesizer=FakeSynthesizer(sample_rate=rate),
            source_language="en",
            target_language="en",
        )
        chunks = [original[i : i + size] for i in range(0, original.size, size)]
        async with dubber:
            started = time.perf_counter()
            results = [
                r
                async for r in dubber.dub(
                    (stsdub.Fragment(i, c, rate) for i, c in enumerate(chunks)), background="duck"
                )
            ]
            elapsed = time.perf_counter() - started
        mixed = np.concatenate([r.mixed.samples for r in results])  # type: ignore[union-attr]
        dub = np.concatenate([r.audio.samples for r in results])
        return mixed, dub, elapsed

    full, dub, elapsed = anyio.run(stream, np.clip(bed + voice, -1, 1))
    only_music, _, _ = anyio.run(stream, bed)
    heard_voice, heard_music = full - only_music, only_music - dub

    def at(t: float) -> int:
        return round(t * rate)

    # Under the dubbed speech (the fake speaks where each line was): the voice's drop.
    drops = [_db(voice[at(a) : at(b)]) - _db(heard_voice[at(a) : at(b)]) for a, b in lines]
    # Between lines: where neither the original nor the dub speaks (a fragment's dub covers
    # its source speech from the first segment to the last, gaps inside it included).
    gaps, covered = [], 0.0
    for a, b in sorted(lines + speech_spans(dub, rate)):
        if a - covered > 1.0:
            gaps.append((covered, a))
        covered = max(covered, b)
    if seconds - covered > 1.0:
        gaps.append((covered, seconds))
    inner = [
        abs(
            _db(heard_music[at(a + DEFAULT_RELEASE) : at(b - DEFAULT_ATTACK)])
            - _db(bed[at(a + DEFAULT_RELEASE) : at(b - DEFAULT_ATTACK)])
        )
        for a, b in gaps
    ]
    boundaries = [k * fragment_seconds for k in range(1, int(seconds // fragment_seconds) + 1)]
    crossing = sum(1 for t in boundaries for a, b in lines if a < t < b)
    return {
        "fragment_seconds": fragment_seconds,
        "fragments": int(np.ceil(seconds / fragment_seconds)),
        "lines_across_a_boundary": crossing,
        "gaps": len(gaps),
        "music_gap_middle_max_deviation_db": max(inner),
        "original_voice_drop_under_dub_min_db": min(drops),
        "original_voice_drop_under_dub_median_db": float(np.median(drops)),
        "max_sample_jump_ducked_music": float(np.max(np.abs(np.diff(heard_music)))),
        "max_sample_jump_music": float(np.max(np.abs(np.diff(bed)))),
        "design_bound_db_per_sample": steepest_step_db(DEFAULT_DEPTH_DB, DEFAULT_ATTACK, rate),
        "stream_seconds_per_minute": elapsed * 60 / seconds,
    }


def _separate_timed(stage: Any, samples: np.ndarray, rate: int) -> tuple[Any, float]:
    from stsdub import AudioBuffer, SeparationRequest

    started = time.perf_counter()
    result = stage.separate(SeparationRequest(audio=AudioBuffer(samples, rate)))
    return result, time.perf_counter() - started


def bench_separation(seconds: float, full_seconds: float, model: str | None, device: str) -> dict[str, Any]:
    from tests.speech import speak
    from tests.stages.tiny_demucs import build_tiny_htdemucs, save_checkpoint

    from stsdub._builtin.demucs import DemucsSeparator

    spoken = [speak(text) for text in LINES]
    rate = spoken[0][1]
    starts = [1.0 + i * seconds / len(LINES) for i in range(len(LINES))]
    voice, _ = place([0.9 * s for s, _ in spoken], starts, seconds, rate)
    bed = music(seconds, rate)
    mix = np.clip(bed + voice, -1, 1).astype(np.float32)
    report: dict[str, Any] = {"device": device, "rate": rate, "seconds": seconds}
    report["sdr_background_if_nothing_separated_db"] = _sdr(bed, mix)

    with tempfile.TemporaryDirectory() as tmp:
        tiny = save_checkpoint(build_tiny_htdemucs(), Path(tmp))
        stage = DemucsSeparator(model=str(tiny), device=device, shifts=0)
        result, elapsed = _separate_timed(stage, mix, rate)
        report["tiny_random_sdr_background_db"] = _sdr(bed, result.background.samples)
        report["tiny_random_seconds_per_minute"] = elapsed * 60 / seconds

        import torch
        from demucs.htdemucs import HTDemucs
        from tests.stages.tiny_demucs import SOURCES

        torch.manual_seed(0)
        full = HTDemucs(sources=SOURCES).eval()  # the default sizes are htdemucs's
        report["full_size_parameters_millions"] = sum(p.numel() for p in full.parameters()) / 1e6
        path = save_checkpoint(full, Path(tmp) / "full")
        stage = DemucsSeparator(model=str(path), device=device, shifts=0)
        clip = mix[: round(full_seconds * rate)]
        _, elapsed = _separate_timed(stage, clip, rate)
        report["full_size_seconds"] = full_seconds
        report["full_size_seconds_per_minute"] = elapsed * 60 / full_seconds
        del stage, full

    if model is not None:
        stage = DemucsSeparator(model=model, device=device, local_files_only=True)
        result, elapsed = _separate_timed(stage, mix, rate)
        report["model"] = model
        report["model_sdr_background_db"] = _sdr(bed, result.background.samples)
        report["model_sdr_voice_db"] = _sdr(voice, result.voice.samples)
        report["model_seconds_per_minute"] = elapsed * 60 / seconds
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the clip")
    parser.add_argument("--full-seconds", type=float, default=15.0, help="audio timed on the full-size model")
    parser.add_argument("--fragment-seconds", type=float, default=6.0, help="fragments of the live stream")
    parser.add_argument("--model", help="a real Demucs model (name cached here, or a path) to measure SDR")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--skip-separation", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    figures: dict[str, Any] = {"ducking": bench_ducking(args.seconds)}
    figures["live_ducking"] = bench_live_ducking(args.seconds, args.fragment_seconds)
    for part in ("ducking", "live_ducking"):
        print(f"{part.replace('_', ' ')}:")
        for key, value in figures[part].items():
            print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
    if not args.skip_separation:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        figures["separation"] = bench_separation(args.seconds, args.full_seconds, args.model, device)
        figures["separation"]["threads"] = torch.get_num_threads()
        print("separation (random weights: the SDR figures of the tiny model mean nothing):")
        for key, value in figures["separation"].items():
            print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

"""Who speaks, and does each speaker keep a voice: the ``resemblyzer`` diarizer on two speakers.

A recording the benchmark makes: eSpeak NG's English voice as a male (``en+m3``) and a female
(``en+f4``) speaker taking turns, six lines per conversation, with pauses (one of them only
0.1 s, so a pause-based segmentation puts two speakers in one piece). Repeated with other
lines and pauses (``--conversations``). Measured:

- diarization error rate (DER): the share of true speech time labelled wrong or not at all
  after the best mapping of found labels to true ones (false alarms in the silent pauses are
  not counted), with the number of speakers estimated and with ``num_speakers=2`` given;
- speakers found (estimated);
- seconds of diarization per minute of audio (CPU, the encoder on ``--device``);
- a file dub (``dub_file``: FakeASR, FakeTranslator, the ``espeak`` synthesizer into
  Spanish): the share of fragments whose dubbed voice is their true speaker's voice (the voice
  most of that speaker's fragments got, distinct between the two), and whether the male
  speaker got a male variant;
- live: fragments (one per line) through a stream whose Dubber has the diarizer: the share
  labelled with their true speaker (after the best mapping).

    python benchmarks/bench_diarize.py [--conversations 3] [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

import common  # noqa: E402  (first: puts the checkout on sys.path)
from tests.media.media import write_recording  # noqa: E402
from tests.speakers import LINES, conversation, diarization_error_rate  # noqa: E402

from stsdub import AudioBuffer, DiarizationRequest, Dubber, Fragment  # noqa: E402
from stsdub._builtin.resemblyzer import ResemblyzerDiarizer  # noqa: E402
from stsdub._recordings._files import dub_file  # noqa: E402
from stsdub.testing import FakeASR, FakeTranslator  # noqa: E402

MORE_LINES = (
    "The train leaves at seven, so we should be at the station by half past six.",
    "That is early, but I will set two alarms to be sure.",
    "Bring a warm coat, the mountains are cold even in June.",
    "I packed a coat, a scarf and my old walking boots.",
    "Perfect, then we are ready for anything the weather brings.",
    "Let us hope for sunshine and a clear view from the top.",
)


def _conversations(count: int) -> list[tuple[np.ndarray, int, list[tuple[float, float, str]]]]:
    sets = [
        (LINES, [0.8, 0.8, 0.1, 0.8, 0.8, 0.5]),
        (MORE_LINES, [0.5, 1.0, 0.6, 0.1, 0.7, 0.5]),
        (LINES[::-1], [0.4, 0.4, 0.4, 0.4, 0.4, 0.5]),
    ]
    return [conversation(lines, pauses) for lines, pauses in (sets * count)[:count]]


def _share_right(labels: list[str | None], truth: list[str]) -> float:
    """Share of items whose label maps to the true one, after the best one-to-one mapping."""
    found = sorted({x for x in labels if x is not None})
    best = 0
    import itertools

    for chosen in itertools.permutations(sorted(set(truth)) + [None] * len(found), len(found)):
        mapping = dict(zip(found, chosen, strict=True))
        best = max(best, sum(1 for x, t in zip(labels, truth, strict=True) if x and mapping[x] == t))
    return best / len(truth)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--conversations", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    t = time.perf_counter()
    diarizer = ResemblyzerDiarizer(device=args.device)
    load = time.perf_counter() - t
    talks = _conversations(args.conversations)
    diarizer.diarize(DiarizationRequest(audio=AudioBuffer(talks[0][0][:16_000], talks[0][1])))  # warm-up

    ders, ders_2, found, seconds, audio_seconds = [], [], [], 0.0, 0.0
    for samples, rate, truth in talks:
        audio = AudioBuffer(samples, rate)
        t = time.perf_counter()
        result = diarizer.diarize(DiarizationRequest(audio=audio))
        seconds += time.perf_counter() - t
        audio_seconds += audio.duration
        ders.append(diarization_error_rate(truth, result.turns))
        found.append(len(result.speakers))
        given = diarizer.diarize(DiarizationRequest(audio=audio, num_speakers=2))
        ders_2.append(diarization_error_rate(truth, given.turns))

    # A file dub: a voice per speaker.
    voice_share, male_ok, fragments = [], [], 0
    with (
        tempfile.TemporaryDirectory() as tmp,
        Dubber(
            FakeASR(),
            FakeTranslator(),
            "espeak",
            source_language="en",
            target_language="es",
            diarizer=diarizer,
            device="cpu",
        ) as dubber,
    ):
        for n, (samples, rate, truth) in enumerate(talks):
            path = write_recording(Path(tmp) / f"talk{n}.wav", samples, rate)
            dubbed = dub_file(dubber, path, None, subtitles=())
            true_of = []
            for start, end in dubbed.spans:
                overlap = collections.Counter()
                for a, b, label in truth:
                    overlap[label] += max(0.0, min(b, end) - max(a, start))
                true_of.append(overlap.most_common(1)[0][0])
            voice_of = {
                spk: collections.Counter(
                    r.voice for r, t in zip(dubbed.results, true_of, strict=True) if t == spk
                ).most_common(1)[0][0]
                for spk in set(true_of)
            }
            distinct = len(set(voice_of.values())) == len(voice_of)
            right = sum(1 for r, t in zip(dubbed.results, true_of, strict=True) if r.voice == voice_of[t])
            voice_share.append(right / len(dubbed.results) if distinct else 0.0)
            male_ok.append("+m" in str(voice_of.get("S1")) and "+f" in str(voice_of.get("S2")))
            fragments += len(dubbed.results)

        # Live: one fragment per line, labelled by the stream.
        live = []
        for samples, rate, truth in talks:
            frags = [
                Fragment(k, samples[round(a * rate) : round(b * rate)], rate)
                for k, (a, b, _) in enumerate(truth)
            ]
            results = dubber.dub_sync(frags)
            live.append(_share_right([r.speaker for r in results], [lab for _, _, lab in truth]))

    report = {
        "machine": common.machine(),
        "device": args.device,
        "conversations": len(talks),
        "audio_seconds": round(audio_seconds, 1),
        "load_seconds": round(load, 2),
        "der_estimated": [round(x, 4) for x in ders],
        "der_two_given": [round(x, 4) for x in ders_2],
        "speakers_found": found,
        "seconds_per_minute": round(60 * seconds / audio_seconds, 2),
        "file_fragments": fragments,
        "file_voice_share": [round(x, 3) for x in voice_share],
        "file_male_female_cast": male_ok,
        "live_label_share": [round(x, 3) for x in live],
    }
    print(json.dumps(report, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

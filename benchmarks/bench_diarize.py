"""Who speaks, and does each speaker keep a voice: a diarizer on real meetings and on generated talks.

Real speech: the ten 30-s AMI meeting excerpts of the shared real-recording set (English, 1-4
speakers, up to ~40 % overlapped speech), scored against their reference RTTM with
``pyannote.metrics`` (pooled and per file; overlap scored; collar 0 and 0.25 s, the collar the
total width around each reference boundary as pyannote counts it), with the speakers found
against the reference count.

Generated: eSpeak NG's English voice as a male (``en+m3``) and a female (``en+f4``) speaker
taking turns, six lines per conversation, with pauses (one of them only 0.1 s, so a pause-based
segmentation puts two speakers in one piece), repeated with other lines and pauses
(``--conversations``). Measured:

- diarization error rate (DER): the share of true speech time labelled wrong or not at all
  after the best mapping of found labels to true ones (false alarms in the silent pauses are
  not counted), with the number of speakers estimated and with ``num_speakers=2`` given;
- speakers found (estimated);
- seconds of diarization per minute of audio (CPU, the encoder on ``--device``) and load time;
- a file dub (``dub_file``: FakeASR, FakeTranslator, the ``espeak`` synthesizer into
  Spanish): the share of fragments whose dubbed voice is their true speaker's voice (the voice
  most of that speaker's fragments got, distinct between the two), and whether the male
  speaker got a male variant;
- live: fragments (one per line) through a stream whose Dubber has the diarizer: the share
  labelled with their true speaker (after the best mapping).

    python benchmarks/bench_diarize.py [--diarizer campplus|resemblyzer] [-O key=value ...]
                                       [--conversations 3] [--device cpu] [--json out.json]

Targets (issue #25): pooled AMI DER <= 20 % at collar 0.25, generated two-speaker DER <= 10 %,
the speaker count within one of the reference on >= 8 of 10 excerpts, <= 0.1 x real time.
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
from tests.speakers import (  # noqa: E402
    LINES,
    conversation,
    diarization_error_rate,
    pooled_der,
    read_rttm,
    read_uem,
)

from stsdub import AudioBuffer, DiarizationRequest, Dubber, Fragment  # noqa: E402
from stsdub._media import read_audio  # noqa: E402
from stsdub._plugins._options import parse_stage_option  # noqa: E402
from stsdub._plugins._registry import StageRegistry  # noqa: E402
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


def ami(diarizer: object) -> dict[str, object]:
    """The AMI excerpts: pooled and per-file DER at collar 0 and 0.25, speakers found, speed."""
    folder = common.REAL_DATA / "ami"
    references, uem = read_rttm(folder / "reference.rttm"), read_uem(folder / "reference.uem")
    hypotheses, found, seconds, audio_seconds = {}, {}, 0.0, 0.0
    for uri, path in common.ami_excerpts():
        source = read_audio(path)
        audio = AudioBuffer(source.samples, source.sample_rate)
        t = time.perf_counter()
        result = diarizer.diarize(DiarizationRequest(audio=audio))  # type: ignore[attr-defined]
        seconds += time.perf_counter() - t
        audio_seconds += audio.duration
        hypotheses[uri] = list(result.turns)
        found[uri] = len(result.speakers)
    der0, files0 = pooled_der(references, hypotheses, uem, collar=0.0)
    der25, files25 = pooled_der(references, hypotheses, uem, collar=0.25)
    true_count = {uri: len({who for _, _, who in turns}) for uri, turns in references.items()}
    return {
        "files": len(hypotheses),
        "pooled_der_collar_0": round(der0, 4),
        "pooled_der_collar_0.25": round(der25, 4),
        "per_file": {
            uri: {
                "der_0": round(files0[uri], 4),
                "der_0.25": round(files25[uri], 4),
                "speakers": true_count[uri],
                "found": found[uri],
            }
            for uri in sorted(hypotheses)
        },
        "count_within_one": sum(abs(found[u] - true_count[u]) <= 1 for u in hypotheses),
        "count_exact": sum(found[u] == true_count[u] for u in hypotheses),
        "real_time_factor": round(seconds / audio_seconds, 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--diarizer", default="campplus", help="a diarizer by name (campplus, resemblyzer)")
    parser.add_argument("-O", dest="options", action="append", default=[], help="diarizer option key=value")
    parser.add_argument("--conversations", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-ami", action="store_true", help="skip the real meeting excerpts")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    options = dict(parse_stage_option(f"diarizer.{o}")[1:] for o in args.options)

    t = time.perf_counter()
    spec = StageRegistry.from_plugin_manager().get("diarizer", args.diarizer)
    diarizer = spec.load_factory()(device=args.device, **options)
    load = time.perf_counter() - t
    talks = _conversations(args.conversations)
    diarizer.diarize(DiarizationRequest(audio=AudioBuffer(talks[0][0][:16_000], talks[0][1])))  # warm-up
    real = ami(diarizer) if common.ami_excerpts() and not args.no_ami else None

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
        "diarizer": repr(diarizer),
        "device": args.device,
        "ami": real,
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

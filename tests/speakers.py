"""A two-speaker recording the tests and benchmarks make: two eSpeak NG voices taking turns."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stsdub import SynthesisRequest
from stsdub._core._audio import resample

#: The two speakers: eSpeak NG's English voice as a male (``+m3``) and a female (``+f4``).
VOICES = ("en+m3", "en+f4")
LINES = (
    "Good morning, how was your trip to the coast last week?",
    "It was lovely, the weather stayed warm and sunny all week long.",
    "Did you see the old lighthouse near the harbour?",
    "Yes, we climbed it on the second day and the view was wonderful.",
    "I always wanted to go there myself, maybe next summer.",
    "You should, it is really worth the journey.",
)


def conversation(
    lines: Sequence[str] = LINES,
    pauses: Sequence[float] | float = 0.6,
    rate: int = 16_000,
    lead: float = 0.5,
    voices: Sequence[str] = VOICES,
) -> tuple[np.ndarray, int, list[tuple[float, float, str]]]:
    """Lines spoken by the voices in turn (the two of :data:`VOICES` unless ``voices`` names
    others): (samples, rate, true turns as S1, S2…).

    A pause after a line (``pauses``, one per line or one for all) may be short enough that
    the next speaker starts inside the same speech piece of a pause-based segmentation.
    """
    from stsdub._builtin.espeak import ESpeakSynthesizer

    if isinstance(pauses, (int, float)):
        pauses = [float(pauses)] * len(lines)
    tts = ESpeakSynthesizer()
    parts = [np.zeros(round(lead * rate), np.float32)]
    turns: list[tuple[float, float, str]] = []
    pos = parts[0].size
    for n, (line, pause) in enumerate(zip(lines, pauses, strict=True)):
        spoken = tts.synthesize(SynthesisRequest(text=line, language="en", voice=voices[n % len(voices)]))
        audio = resample(spoken.samples, spoken.sample_rate, rate)
        # eSpeak leaves silence around its speech: cut to the voice (and 50 ms), so that the
        # pauses are the ones asked for.
        loud = np.flatnonzero(np.abs(audio) > 0.02)
        margin = round(0.05 * rate)
        audio = audio[max(0, loud[0] - margin) : loud[-1] + 1 + margin]
        loud = np.flatnonzero(np.abs(audio) > 0.02)
        turns.append(((pos + loud[0]) / rate, (pos + loud[-1] + 1) / rate, f"S{n % len(voices) + 1}"))
        parts += [audio, np.zeros(round(pause * rate), np.float32)]
        pos += audio.size + parts[-1].size
    tts.close()
    return np.concatenate(parts).astype(np.float32), rate, turns


def diarization_error_rate(
    truth: Sequence[tuple[float, float, str]],
    found: Sequence[tuple[float, float, str]],
    step: float = 0.01,
) -> float:
    """The share of the true speech time labelled wrong or not at all, after the best mapping
    of found labels to true ones (each found label to one true label); false alarms outside
    true speech are not counted (the recording's pauses are silence)."""
    end = max(t[1] for t in truth)
    times = np.arange(0.0, end, step) + step / 2

    def labels(turns: Sequence[tuple[float, float, str]]) -> list[str | None]:
        out: list[str | None] = []
        for t in times:
            out.append(next((lab for a, b, lab in turns if a <= t < b), None))
        return out

    ref, hyp = labels(truth), labels(found)
    speech = [i for i, r in enumerate(ref) if r is not None]
    true_names = sorted({r for r in ref if r is not None})
    found_names = sorted({h for h in hyp if h is not None})
    import itertools

    best = 0
    # Few speakers: every assignment of found labels to true ones can be tried.
    for chosen in itertools.product([*true_names, None], repeat=len(found_names)):
        mapping = dict(zip(found_names, chosen, strict=True))
        right = sum(1 for i in speech if hyp[i] is not None and mapping[hyp[i]] == ref[i])
        best = max(best, right)
    return 1.0 - best / len(speech)


# -- real meetings: the AMI excerpts and the field's diarization error rate --------------------

Turns = list[tuple[float, float, str]]


def read_rttm(path: Path) -> dict[str, Turns]:
    """``{file id: [(start, end, speaker), ...]}`` from an RTTM file."""
    found: dict[str, Turns] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        field = line.split()
        if field and field[0] == "SPEAKER":
            start, length = float(field[3]), float(field[4])
            found.setdefault(field[1], []).append((start, start + length, field[7]))
    return found


def read_uem(path: Path) -> dict[str, tuple[float, float]]:
    """``{file id: (start, end)}``: the scored region of each file."""
    found: dict[str, tuple[float, float]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        field = line.split()
        if field:
            found[field[0]] = (float(field[2]), float(field[3]))
    return found


def pooled_der(
    references: dict[str, Turns],
    hypotheses: dict[str, Turns],
    uem: dict[str, tuple[float, float]],
    collar: float,
) -> tuple[float, dict[str, float]]:
    """Pooled and per-file DER as ``pyannote.metrics`` computes it: overlapped speech scored,
    ``collar`` seconds in all (half each side of a reference boundary) left out."""
    from pyannote.core import Annotation, Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    def annotation(turns: Turns, uri: str) -> Annotation:
        out = Annotation(uri=uri)
        for n, (a, b, who) in enumerate(turns):
            out[Segment(a, b), n] = who
        return out

    metric = DiarizationErrorRate(collar=collar, skip_overlap=False)
    per_file = {}
    for uri, truth in sorted(references.items()):
        scored = Timeline([Segment(*uem[uri])], uri=uri)
        per_file[uri] = float(
            metric(annotation(truth, uri), annotation(hypotheses.get(uri, []), uri), uem=scored)
        )
    return float(abs(metric)), per_file


# -- checks every diarizer with ``embed`` passes ----------------------------------------------


def assert_embeddings_tell_speakers_apart(
    diarizer: Any, talk: tuple[np.ndarray, int, list[tuple[float, float, str]]], size: int
) -> None:
    """Each line's embedding (``size`` values, length 1) is more like the same speaker's other
    lines than ``match_threshold``, and less like the other speaker's."""
    from stsdub import AudioBuffer

    samples, rate, truth = talk
    lines = [AudioBuffer(samples[round(a * rate) : round(b * rate)], rate) for a, b, _ in truth]
    e = np.stack([diarizer.embed(line) for line in lines])
    assert e.shape == (len(lines), size) and np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-4)
    sim = e @ e.T
    n = len(lines)
    same = [sim[i, j] for i in range(n) for j in range(i + 1, n) if i % 2 == j % 2]
    other = [sim[i, j] for i in range(n) for j in range(i + 1, n) if i % 2 != j % 2]
    assert min(same) > diarizer.match_threshold > max(other)


def live_labels(diarizer: Any, fragments: Sequence[Any]) -> list[tuple[str | None, str | None]]:
    """(speaker, voice) of each fragment dubbed live by a Dubber with ``diarizer`` (a fake ASR
    and a fake synthesizer whose lower voice is ``low`` and higher ``high``)."""
    import stsdub
    from stsdub.testing import FakeASR, FakeSynthesizer

    dubber = stsdub.Dubber(
        FakeASR(),
        None,
        FakeSynthesizer(voice_pools=(("low",), ("high",))),
        source_language="en",
        target_language="en",
        diarizer=diarizer,
        device="cpu",
    )
    return [(r.speaker, r.voice) for r in dubber.dub_sync(list(fragments))]

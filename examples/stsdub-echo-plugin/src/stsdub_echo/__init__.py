"""An example stsdub plugin: two stages registered through the ``stsdub`` entry point."""

from __future__ import annotations

import numpy as np

import stsdub
from stsdub.stages import ASRRequest, Transcript, Translation, TranslationRequest


class ReverseTranslator:
    """Reverses the word order and tags the target language; async, as a remote API would be."""

    # Pure Python and stateless: the pipeline may call it from several streams at once.
    concurrency = 8

    def __init__(self, device: str = "cpu", *, tag: bool = True) -> None:
        self.tag = tag

    async def translate(self, request: TranslationRequest) -> Translation:
        if not request.text.strip():
            raise stsdub.StageError(stsdub.ErrorCode.INVALID_TEXT, "nothing to translate")
        words = " ".join(reversed(request.text.split()))
        return Translation(f"[{request.target_language}] {words}" if self.tag else words)


class PitchASR:
    """Says the dominant pitch of the fragment, e.g. "tone two hundred twenty"."""

    def __init__(self, device: str = "cpu", *, min_level: float = 0.01) -> None:
        self.min_level = min_level

    def transcribe(self, request: ASRRequest) -> Transcript:
        samples = request.audio.samples
        if samples.size == 0 or float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) < self.min_level:
            return Transcript("", "en")
        spectrum = np.abs(np.fft.rfft(samples))
        hz = int(round(np.argmax(spectrum) * request.audio.sample_rate / samples.size, -1))
        return Transcript(f"tone {hz} hertz", "en")


@stsdub.hookimpl
def stsdub_register_stages() -> list[stsdub.StageSpec]:
    return [
        stsdub.StageSpec(
            kind="translator",
            name="echo-reverse",
            factory=ReverseTranslator,
            description="example: reverses the word order (no model)",
        ),
        stsdub.StageSpec(
            kind="asr",
            name="pitch",
            factory=PitchASR,
            description="example: names the dominant pitch of the fragment",
        ),
    ]

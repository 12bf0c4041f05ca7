"""Whisper decoding one 30-s window at a time: batched encoder pass, detection, alignment.

Speech of up to 30 s is one Whisper window. :class:`WindowDecoding` encodes such windows once
(many fragments in one batch), detects the language on that same encoder output when it is not
given, decodes them in one CTranslate2 ``generate`` call and aligns the words on the same
output again; a fragment the batch cannot answer as faster-whisper's own loop would is left to
the stage's ``_decode_one``. :class:`~stsdub._builtin.faster_whisper.FasterWhisperASR` is the
one class that mixes it in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from .._core._values import ASRRequest, Transcript
from ..errors import StageError
from ._whisper_text import _Raw

if TYPE_CHECKING:
    from .._core._audio import FloatArray

__all__ = ["WindowDecoding"]

_RATE = 16_000
# faster-whisper's defaults for attaching punctuation to words.
_PREPEND_PUNCTUATIONS = "\"'“¿([{-"
_APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"


@attrs.define(eq=False)
class _Loaded:
    """One loaded Whisper model and where it came from."""

    source: str
    model: Any  # faster_whisper.WhisperModel

    @property
    def multilingual(self) -> bool:
        return bool(self.model.model.is_multilingual)

    def supports(self, language: str) -> bool:
        return language in self.model.supported_languages


@attrs.define(eq=False)
class _Job:
    """One request on its way through the model: the prepared audio and the decode settings."""

    request: ASRRequest
    duration: float
    #: Speech only (VAD removed the pauses), 16 kHz.
    speech: FloatArray
    #: VAD chunks (sample indices into the 16 kHz fragment) to map times back; None = no VAD.
    chunks: list[dict[str, int]] | None
    entry: _Loaded
    language: str | None
    prompt: str | None
    #: Cap on the tokens of a decoding window; a loop hits it instead of running to 448.
    max_new_tokens: int | None
    #: Mean log-probability of the decoded tokens, once decoded (how sure the model was).
    avg_logprob: float | None = None
    #: Whether the kept decode was sampled by Whisper's temperature fallback: the greedy or
    #: beam decode failed its thresholds, and a sample's log-probability says little.
    sampled: bool = False
    #: Probability of the language detected on the window's own encoder output, if it was.
    detected: float | None = None


class WindowDecoding:
    """The one-window decoding of the faster-whisper stage (a mixin of its class)."""

    beam_size: int
    temperature: tuple[float, ...]
    compression_ratio_threshold: float
    log_prob_threshold: float
    no_speech_threshold: float
    word_timestamps: bool

    def _tokenizer(self, entry: _Loaded, language: str | None) -> Any:
        raise NotImplementedError

    def _decode_one(self, job: _Job) -> Transcript:
        raise NotImplementedError

    def _collect(self, job: _Job, segments: list[Any]) -> list[_Raw]:
        raise NotImplementedError

    def _finish(
        self, job: _Job, raw: list[_Raw], language: str | None, probability: float | None
    ) -> Transcript:
        raise NotImplementedError

    def _detects_in_window(self, job: _Job) -> bool:
        """Whether the language of ``job`` is detected on the window it is decoded in."""
        return (
            job.entry.multilingual
            and not job.request.interim
            and job.speech.size <= 30 * _RATE
            and self.temperature[0] == 0.0
        )

    def _window_features(self, job: _Job) -> tuple[Any, int]:
        """The job's log-Mel window, as WhisperModel.generate_segments makes it, and its frames."""
        from faster_whisper.audio import pad_or_trim

        fe = job.entry.model.feature_extractor
        feats = fe(job.speech)
        size = min(fe.nb_max_frames, feats.shape[-1] - 1)
        return pad_or_trim(feats[:, :size]), size

    def _detect(self, job: _Job) -> tuple[Any, str]:
        """Encode the job's window and detect its language there (``job.detected`` is set)."""
        model = job.entry.model
        features, _ = self._window_features(job)
        encoded = model.encode(features[np.newaxis])
        token, probability = model.model.detect_language(encoded)[0][0]
        job.detected = float(probability)
        return encoded, str(token)[2:-2]

    def _decode_batch(
        self, jobs: list[_Job], language: str, encoded: Any = None
    ) -> list[Transcript | StageError]:
        """One encoder pass (``encoded``, when done already) and one generate call for jobs of
        one model and one language."""
        from faster_whisper.transcribe import Segment as FWSegment
        from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens

        entry = jobs[0].entry
        model = entry.model
        tokenizer = self._tokenizer(entry, language)
        fe = model.feature_extractor
        windows = [self._window_features(job) for job in jobs]
        sizes = [size for _, size in windows]
        encoder_output = encoded if encoded is not None else model.encode(np.stack([f for f, _ in windows]))
        prompts = []
        for job in jobs:
            previous = tokenizer.encode(" " + job.prompt.strip()) if job.prompt else []
            prompts.append(model.get_prompt(tokenizer, previous, without_timestamps=False))
        limits = [
            len(p) + (job.max_new_tokens or model.max_length) for p, job in zip(prompts, jobs, strict=True)
        ]
        results = model.model.generate(
            encoder_output,
            prompts,
            beam_size=self.beam_size,
            patience=1,
            length_penalty=1,
            # One limit for the batch; an item that goes past its own is redone on its own.
            max_length=min(model.max_length, max(limits)),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
            max_initial_timestamp_index=round(1.0 / model.time_precision),
        )

        decoded: list[list[dict[str, Any]] | None] = []  # None: answer on its own
        for job, result, size, prompt, limit in zip(jobs, results, sizes, prompts, limits, strict=True):
            tokens = result.sequences_ids[0]
            avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
            job.avg_logprob = avg_logprob
            ratio = get_compression_ratio(tokenizer.decode(tokens).strip())
            silent = (
                result.no_speech_prob > self.no_speech_threshold and avg_logprob < self.log_prob_threshold
            )
            needs_fallback = (
                len(self.temperature) > 1
                and (ratio > self.compression_ratio_threshold or avg_logprob < self.log_prob_threshold)
            ) or len(prompt) + len(tokens) > limit
            if silent:
                decoded.append([])
                continue
            if needs_fallback:
                decoded.append(None)
                continue
            segs, seek, single_ending = model._split_segments_by_timestamps(
                tokenizer=tokenizer,
                tokens=tokens,
                time_offset=0.0,
                segment_size=size,
                segment_duration=size * fe.time_per_frame,
                seek=0,
            )
            # A last segment without its closing timestamp makes a single call decode the rest
            # in another window; leave such a fragment to a single call.
            decoded.append(segs if single_ending or seek >= size else None)

        if self.word_timestamps:
            # Alignment is batched too; every item of the encoder batch needs tokens, so items
            # answered otherwise get a placeholder whose timings are thrown away.
            filler = [{"seek": 0, "start": 0.0, "end": 0.0, "tokens": []}]
            aligned = [segs if segs else [dict(filler[0])] for segs in decoded]
            model.add_word_timestamps(
                aligned,
                tokenizer,
                encoder_output,
                sizes,
                _PREPEND_PUNCTUATIONS,
                _APPEND_PUNCTUATIONS,
                0.0,
            )

        out: list[Transcript | StageError] = []
        for job, segs in zip(jobs, decoded, strict=True):
            if segs is None:
                try:
                    if job.detected is None:
                        out.append(self._decode_one(job))
                    else:  # in the language detected, which it keeps
                        again = self._decode_one(attrs.evolve(job, language=language))
                        out.append(attrs.evolve(again, language_probability=job.detected))
                except StageError as exc:
                    out.append(exc)
                continue
            fw_segments = []
            for n, seg in enumerate(segs):
                text = tokenizer.decode(seg["tokens"])
                if seg["start"] == seg["end"] or not text.strip():
                    continue
                fw_segments.append(
                    FWSegment(
                        id=n,
                        seek=0,
                        start=seg["start"],
                        end=seg["end"],
                        text=text,
                        tokens=seg["tokens"],
                        avg_logprob=0.0,
                        compression_ratio=0.0,
                        no_speech_prob=0.0,
                        temperature=0.0,
                        words=self._fw_words(seg) if self.word_timestamps else None,
                    )
                )
            # Detected on this window, or an English-only model's "en", for sure; None: given.
            probability = (
                job.detected if job.detected is not None else (1.0 if job.language is None else None)
            )
            try:
                out.append(self._finish(job, self._collect(job, fw_segments), language, probability))
            except StageError as exc:
                out.append(exc)
        return out

    @staticmethod
    def _fw_words(seg: dict[str, Any]) -> list[Any]:
        from faster_whisper.transcribe import Word as FWWord

        return [FWWord(**w) for w in seg.get("words", [])]

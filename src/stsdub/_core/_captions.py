"""Live captions: what a stream heard (interim, final) and its translation, before the dub."""

from __future__ import annotations

import attrs

from ._values import Word

__all__ = ["CAPTION_KINDS", "Caption", "CaptionStatus"]

#: The kinds of caption, in the order a fragment's captions arrive.
CAPTION_KINDS = ("interim", "final", "translation")


@attrs.frozen(kw_only=True)
class Caption:
    """One caption event of a stream opened with ``captions="final"`` or ``"interim"``.

    A stream yields them with its :class:`~stsdub.DubResult` values, in order: a fragment's
    interims (while its audio is still arriving), its final (as soon as its ASR is done), its
    translation (as soon as it is translated), then its ``DubResult``. No interim of a
    sequence number follows that number's final, and nothing is yielded twice.

    Times are seconds on the stream's event-loop clock (``anyio.current_time()``).
    """

    #: ``"interim"``, ``"final"`` or ``"translation"``.
    kind: str
    stream_id: str
    #: The fragment the caption belongs to (for an interim: the one its audio will become).
    sequence_number: int
    #: The fragment's id; ``None`` on an interim whose host gave none, and on the final of an
    #: utterance the stream ended before it was sent.
    fragment_id: str | None
    #: Source text (interim, final) or the translation (translation).
    text: str
    #: Leading characters of ``text`` that later interims of this fragment keep unchanged
    #: (decided by LocalAgreement-2); ``len(text)`` on a final or translation.
    stable_chars: int = 0
    #: Language of the source text (the ASR's, for a final).
    language: str | None = None
    #: Words with times from the start of the fragment (final, when the ASR gives them).
    words: tuple[Word, ...] = ()
    #: Language of a translation caption.
    target_language: str | None = None
    #: The source text a translation caption translates.
    source_text: str | None = None
    #: Seconds of the fragment's audio the caption covers.
    audio_seconds: float = 0.0
    #: When the last audio the caption covers reached the stream.
    heard_at: float = 0.0
    #: When the caption was put out.
    emitted_at: float = 0.0
    #: Interims of this fragment not shown before this caption: skipped under load or
    #: replaced, unread, by a newer one.
    dropped: int = 0
    #: Why the caption is unusual (no transcript, the stream ended mid-utterance), if it is.
    note: str | None = None

    @property
    def latency_ms(self) -> float:
        """From the audio reaching the stream to the caption (milliseconds)."""
        return 1000.0 * (self.emitted_at - self.heard_at)

    @property
    def stable_text(self) -> str:
        """The part of ``text`` that will not change."""
        return self.text[: self.stable_chars]


@attrs.frozen(kw_only=True)
class CaptionStatus:
    """How a stream's captions are doing (see :attr:`stsdub.Stream.caption_status`)."""

    #: ``None``, ``"final"`` or ``"interim"``: what the stream was asked for.
    captions: str | None
    #: Fast ASR passes run over growing audio.
    interim_passes: int = 0
    #: Interim captions put out.
    interims: int = 0
    #: Interims not shown: passes skipped under load, and unread interims replaced by newer.
    interims_dropped: int = 0
    #: Whether interims are paused now (backpressure, or the ASR busy with finals).
    interims_paused: bool = False
    #: Final and translation captions put out (never dropped).
    finals: int = 0
    translations: int = 0
    #: What the stream cannot caption, said once (e.g. no translator: source text only).
    notes: tuple[str, ...] = ()

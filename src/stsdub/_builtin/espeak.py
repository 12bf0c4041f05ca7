"""The ``espeak`` synthesizer: eSpeak NG's formant voices, through its library libespeak-ng.

eSpeak NG speaks over a hundred languages from a few megabytes of rules, on a CPU, in a few
milliseconds per sentence, with nothing to download. It sounds robotic next to Piper or XTTS;
it is the voice that is there for nearly any language.

Library, not program. ``benchmarks/bench_espeak.py`` times both ways in one run, interleaved
sentence by sentence, on 20 Spanish sentences of 4.7-6.0 s of speech each (a 6-s fragment's
worth); ranges over three runs on two shared cores (load average 5-10), eSpeak NG 1.51:

=====================================================  =================  ============
way                                                     ms / fragment      RTF
=====================================================  =================  ============
libespeak-ng through ctypes (kept)                      11-13              0.002-0.003
``espeak-ng --stdout --stdin -v es -s 175`` per call    47-57              0.010-0.014
=====================================================  =================  ============

The program costs 34-46 ms more per fragment, nearly all of it its start (it loads the
phoneme tables and the language's dictionary every time: 19-39 ms for one word, against
0.7 ms through the library). That is over the 20 ms that makes a binding worth it, so the
stage keeps the library. The library is one global state per process (one voice, one set
of parameters, one output callback) and is not thread-safe: it is loaded and initialised
once per process, every synthesis holds one process-wide lock from choosing the voice to
the last sample and sets every parameter it uses, and the stage declares
``concurrency = 1``. The program is still run, once per process, to list the installed
voices (``--voices``).

Piper's phonemizer carries its own copy of eSpeak NG linked into ``piper.espeakbridge``;
the library is opened with ``RTLD_LOCAL`` so the two copies keep separate states.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import difflib
import functools
import logging
import math
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from .._core._audio import pcm16_to_float
from .._core._languages import base_language
from .._core._values import AudioBuffer, SynthesisRequest
from ..errors import ConfigurationError, ErrorCode, StageError, StageLoadError

if TYPE_CHECKING:
    from .._core._audio import FloatArray

__all__ = [
    "DEFAULT_RATE",
    "MAX_RATE",
    "MIN_RATE",
    "ESpeakSynthesizer",
    "ESpeakVoice",
    "available_languages",
    "supports_language",
]

logger = logging.getLogger("stsdub.synthesis.espeak")

_PROGRAM = "espeak-ng"
_INSTALL_HINT = "apt-get install espeak-ng (Debian, Ubuntu) or brew install espeak-ng (macOS)"
_WARMUP_TEXT = "Hello, this is a test."
# The language spoken when a request names none and no default voice is configured: eSpeak's own.
_FALLBACK_LANGUAGE = "en"

#: Words per minute at speed 1.0: eSpeak's own default.
DEFAULT_RATE = 175
#: The speaking rates eSpeak documents (``espeakRATE_MINIMUM`` / ``espeakRATE_MAXIMUM``);
#: rates asked beyond them are clamped.
MIN_RATE, MAX_RATE = 80, 450

# libespeak-ng's constants (speak_lib.h and espeak_ng.h), stable since eSpeak NG 1.49.
_ENS_OK = 0
_ENOUTPUT_MODE_SYNCHRONOUS = 0x0001
_POS_CHARACTER = 1
_CHARS_UTF8 = 0x1
# The end-of-text pause the espeak-ng program adds too (unless -z): speech ends as eSpeak ends it.
_ENDPAUSE = 0x1000
# espeak_PARAMETER values; eSpeak NG 1.51 refuses punctuation and capitals in synchronous mode.
_RATE, _VOLUME, _PITCH, _RANGE, _WORDGAP = 1, 2, 3, 4, 7
# Milliseconds of audio per callback: also how often a synthesis checks its deadline.
_BUFFER_MS = 100

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
# Control characters would end the C string early (NUL) or confuse eSpeak's clause splitter.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def _tag(language: str) -> str:
    """``"pt_BR"`` / ``"PT-br"`` → ``"pt-br"``, as ``espeak-ng --voices`` writes tags."""
    return language.strip().replace("_", "-").lower()


def _prefixes(language: str) -> Iterator[str]:
    """``"es-MX-x-foo"`` → ``"es-mx-x-foo"``, ``"es-mx-x"``, ``"es-mx"``, ``"es"``."""
    parts = _tag(language).split("-")
    for end in range(len(parts), 0, -1):
        if parts[end - 1]:
            yield "-".join(parts[:end])


# -- the installed voices ---------------------------------------------------------------------


@attrs.frozen
class ESpeakVoice:
    """An installed eSpeak NG voice, as ``espeak-ng --voices`` lists it."""

    #: The voice file (``"roa/es-419"``): what the stage selects it by.
    identifier: str
    #: Its language, lower-case (``"es-419"``).
    language: str
    #: Its name (``"Spanish (Latin America)"``).
    name: str
    #: ``"M"``, ``"F"`` or ``"-"``.
    gender: str
    #: Every tag it answers to with eSpeak's priority (lower is preferred): its own language,
    #: then its other languages (``es-419`` also answers ``es-mx`` and ``es``).
    tags: tuple[tuple[str, int], ...]

    def speaks(self, language: str) -> bool:
        """Whether it speaks ``language`` (regions aside: ``es-419`` speaks ``es-ES``)."""
        base = base_language(language)
        return any(base_language(tag) == base for tag, _priority in self.tags)


# "Pty Language Age/Gender VoiceName File Other Languages"; the file may hold a space
# ("!v/Mr serious"), the other languages are "(tag priority)" groups.
_LINE = re.compile(r"^\s*(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(.*?)\s*$")
_OTHER = re.compile(r"\(([^()\s]+)\s+(\d+)\)")


def _parse_listing(listing: str) -> Iterator[tuple[int, str, str, str, str, list[tuple[str, int]]]]:
    """(priority, language, gender, name, file, other languages) of each line of a listing."""
    for line in listing.splitlines()[1:]:
        found = _LINE.match(line)
        if not found:
            continue
        priority, language, age_gender, name, rest = found.groups()
        others = [(_tag(tag), int(p)) for tag, p in _OTHER.findall(rest)]
        file = _OTHER.sub("", rest).strip()
        yield int(priority), language, age_gender.rpartition("/")[2], name.replace("_", " "), file, others


@attrs.frozen
class _Catalogue:
    """The voices and variants one espeak-ng installation lists."""

    voices: tuple[ESpeakVoice, ...]
    #: Variant files (``"f3"``, ``"klatt"``, ``"Mr serious"``) by their lower-cased file name
    #: and display name (``"female3"``).
    variants: Mapping[str, str]
    #: Every language tag some voice answers to.
    tags: frozenset[str] = attrs.field(init=False)

    @tags.default
    def _tags(self) -> frozenset[str]:
        return frozenset(tag for voice in self.voices for tag, _priority in voice.tags)

    def for_language(self, language: str, *, exact: bool = False) -> ESpeakVoice | None:
        """The voice eSpeak prefers for ``language``, else (unless ``exact``) for a shorter form of it."""
        for tag in [_tag(language)] if exact else _prefixes(language):
            ranked = [
                (priority, index)
                for index, voice in enumerate(self.voices)
                for voice_tag, priority in voice.tags
                if voice_tag == tag
            ]
            if ranked:
                return self.voices[min(ranked)[1]]
        return None

    def find(self, name: str) -> ESpeakVoice | None:
        """A voice by file (``roa/es``), language (``es-419``), file name, name or other language.

        Strict where a language is lenient: ``es-41`` is no voice, though it would be spoken
        in ``es`` as a language.
        """
        key = name.strip().lower()
        tag = _tag(name)
        human = key.replace("_", " ")
        matchers: tuple[Callable[[ESpeakVoice], bool], ...] = (
            lambda v: v.identifier.lower() == key,
            lambda v: v.language == tag,
            lambda v: v.identifier.rpartition("/")[2].lower() == key,
            lambda v: v.name.lower() == human,
        )
        for match in matchers:
            found = next((voice for voice in self.voices if match(voice)), None)
            if found is not None:
                return found
        return self.for_language(name, exact=True)

    def variant(self, name: str) -> str | None:
        return self.variants.get(name.strip().lower().replace("_", " "))

    def close_languages(self, language: str) -> list[str]:
        """Tags (and names, with their tag) that look like ``language``."""
        names = {voice.name.lower(): f"{voice.language} ({voice.name})" for voice in self.voices}
        pool = {tag: tag for tag in self.tags} | names
        words = dict.fromkeys([_tag(language), base_language(language), language.strip().lower()])
        found: dict[str, None] = {}
        for word in words:
            for match in difflib.get_close_matches(word, pool, n=5, cutoff=0.6):
                found[pool[match]] = None
        return list(found)[:6]

    def close_variants(self, name: str) -> list[str]:
        matches = difflib.get_close_matches(
            name.strip().lower().replace("_", " "), self.variants, n=4, cutoff=0.5
        )
        return list(dict.fromkeys(self.variants[m] for m in matches))


def _list(program: str, what: str) -> str:
    try:
        done = subprocess.run(
            [program, what],
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise StageLoadError(f"{program} {what} does not run ({exc}): {_INSTALL_HINT}") from exc
    if done.returncode != 0:
        raise StageLoadError(f"{program} {what} failed (exit {done.returncode}): {done.stderr.strip()}")
    return done.stdout


@functools.lru_cache(maxsize=4)
def _load_catalogue(program: str) -> _Catalogue | StageLoadError:
    # The failure is cached too: available_languages() is called where defaults are chosen
    # and must not start the program again each time.
    try:
        voice_lines = list(_parse_listing(_list(program, "--voices")))
        variant_lines = list(_parse_listing(_list(program, "--voices=variant")))
    except StageLoadError as exc:
        return exc
    voices = tuple(
        ESpeakVoice(file, _tag(language), name, gender, ((_tag(language), priority), *others))
        for priority, language, gender, name, file, others in voice_lines
        if language != "variant"
    )
    if not voices:
        return StageLoadError(f"{program} --voices lists no voices: reinstall espeak-ng-data")
    variants: dict[str, str] = {}
    for _priority, _language, _gender, name, file, _others in variant_lines:
        stem = file.partition("!v/")[2] or file
        variants.setdefault(stem.lower().replace("_", " "), stem)
        variants.setdefault(name.lower().replace("_", " "), stem)
    return _Catalogue(voices, variants)


def _catalogue(program: str) -> _Catalogue:
    found = _load_catalogue(program)
    if isinstance(found, StageLoadError):
        raise found
    return found


def _find_program() -> str:
    program = shutil.which(_PROGRAM)
    if program is None:
        raise StageLoadError(f"the espeak synthesizer needs eSpeak NG, which is not on PATH: {_INSTALL_HINT}")
    return program


def available_languages() -> frozenset[str]:
    """The language tags the installed eSpeak NG has a voice for, lower-case.

    Tags as eSpeak writes them: ``es``, ``es-419``, ``es-mx``, ``pt``, ``pt-br``, ``en``,
    ``en-us``, ``zh``... Empty when espeak-ng is not installed (or does not run). eSpeak is
    asked once per process; later calls cost a dictionary lookup. Regions without a voice of
    their own are spoken by the language's voice (``es-AR`` by ``es``), so use
    :func:`supports_language` to ask about a tag.
    """
    program = shutil.which(_PROGRAM)
    if program is None:
        return frozenset()
    found = _load_catalogue(program)
    return frozenset() if isinstance(found, StageLoadError) else found.tags


def supports_language(language: str) -> bool:
    """Whether the ``espeak`` stage, as installed here, speaks ``language`` (``pt-BR``, ``es-AR``...)."""
    program = shutil.which(_PROGRAM)
    if program is None or not language.strip():
        return False
    found = _load_catalogue(program)
    return not isinstance(found, StageLoadError) and found.for_language(language) is not None


# -- the library --------------------------------------------------------------------------------


def _library_candidates(program: str) -> list[str]:
    """Where libespeak-ng may be: by soname, beside the program's prefix (Homebrew), by search."""
    prefix = Path(program).resolve().parent.parent / "lib"
    names = ["libespeak-ng.so.1", "libespeak-ng.1.dylib", "libespeak-ng.dylib"]
    candidates = [names[0], *(str(prefix / name) for name in names)]
    found = ctypes.util.find_library("espeak-ng")
    if found:
        candidates.append(found)
    return list(dict.fromkeys(candidates))


class _Library:
    """libespeak-ng, loaded and initialised once per process (see :func:`_library`).

    The library keeps one voice, one set of parameters and one output callback for the whole
    process, and is not thread-safe: every synthesis holds ``lock`` from setting the voice to
    the last sample, and sets every parameter it depends on.
    """

    def __init__(self, path: str) -> None:
        # RTLD_LOCAL: its symbols stay out of the global namespace, so another copy of eSpeak
        # in the process (piper's) keeps its own state, and this one keeps its own.
        lib = ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL)
        status = ctypes.c_uint
        lib.espeak_ng_InitializePath.argtypes = [ctypes.c_char_p]
        lib.espeak_ng_InitializePath.restype = None
        lib.espeak_ng_Initialize.argtypes = [ctypes.c_void_p]
        lib.espeak_ng_Initialize.restype = status
        lib.espeak_ng_InitializeOutput.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p]
        lib.espeak_ng_InitializeOutput.restype = status
        lib.espeak_ng_GetSampleRate.argtypes = []
        lib.espeak_ng_GetSampleRate.restype = ctypes.c_int
        lib.espeak_ng_GetStatusCodeMessage.argtypes = [status, ctypes.c_char_p, ctypes.c_size_t]
        lib.espeak_ng_GetStatusCodeMessage.restype = None
        lib.espeak_ng_ClearErrorContext.argtypes = [ctypes.c_void_p]
        lib.espeak_ng_ClearErrorContext.restype = None
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_ng_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_ng_SetVoiceByName.restype = status
        lib.espeak_ng_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetParameter.restype = status
        lib.espeak_ng_Synthesize.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_ng_Synthesize.restype = status
        self._lib = lib
        self.path = path

        # The espeak_ng_* calls report a status (espeak_Initialize reports a sample rate even
        # when the data failed to load) and never exit() the process.
        lib.espeak_ng_InitializePath(None)
        context = ctypes.c_void_p()
        code = lib.espeak_ng_Initialize(ctypes.byref(context))
        if context.value:
            lib.espeak_ng_ClearErrorContext(ctypes.byref(context))
        if code != _ENS_OK:
            raise StageLoadError(f"eSpeak NG ({path}) cannot start: {self.message(code)}; {_INSTALL_HINT}")
        code = lib.espeak_ng_InitializeOutput(_ENOUTPUT_MODE_SYNCHRONOUS, _BUFFER_MS, None)
        if code != _ENS_OK:
            raise StageLoadError(f"eSpeak NG ({path}) cannot start its output: {self.message(code)}")
        self.sample_rate = int(lib.espeak_ng_GetSampleRate())
        # Kept referenced for the life of the process: the library holds the pointer.
        self._callback = _SynthCallback(self._on_audio)
        lib.espeak_SetSynthCallback(self._callback)
        self.lock = threading.Lock()
        self._chunks: list[bytes] = []
        self._deadline = math.inf
        self._aborted = False
        if hasattr(os, "register_at_fork"):
            # A child forked while another thread synthesized would inherit a held lock.
            os.register_at_fork(after_in_child=self._reset_lock)

    def _reset_lock(self) -> None:
        self.lock = threading.Lock()

    def message(self, code: int) -> str:
        buffer = ctypes.create_string_buffer(512)
        self._lib.espeak_ng_GetStatusCodeMessage(code, buffer, len(buffer))
        return buffer.value.decode("utf-8", "replace") or f"status 0x{code:x}"

    def _on_audio(self, wav: Any, samples: int, _events: Any) -> int:
        # Called by espeak_ng_Synthesize, on the synthesizing thread, under the lock. It must
        # never raise (ctypes would only print the exception): it copies and checks the time.
        if samples > 0 and wav:
            self._chunks.append(ctypes.string_at(wav, 2 * samples))
        if time.monotonic() > self._deadline:
            self._aborted = True
            return 1  # eSpeak stops synthesizing
        return 0

    def speak(self, voice: str, text: str, parameters: Mapping[int, int], timeout: float) -> bytes:
        """PCM16 samples of ``text`` spoken by ``voice`` (``"roa/es+f3"``).

        Raises:
            StageError: ``SYNTHESIS_FAILED`` with eSpeak's message, ``TIMEOUT``.
        """
        data = text.encode("utf-8", "replace") + b"\0"
        with self.lock:
            code = self._lib.espeak_ng_SetVoiceByName(voice.encode("utf-8"))
            if code != _ENS_OK:
                raise StageError(
                    ErrorCode.SYNTHESIS_FAILED, f"eSpeak NG voice {voice!r}: {self.message(code)}"
                )
            for parameter, value in parameters.items():
                code = self._lib.espeak_ng_SetParameter(parameter, value, 0)
                if code != _ENS_OK:
                    raise StageError(
                        ErrorCode.SYNTHESIS_FAILED,
                        f"eSpeak NG refused parameter {parameter}={value}: {self.message(code)}",
                    )
            self._chunks, self._aborted = [], False
            self._deadline = time.monotonic() + timeout
            try:
                code = self._lib.espeak_ng_Synthesize(
                    data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None
                )
            finally:
                chunks, self._chunks = self._chunks, []
                aborted, self._deadline = self._aborted, math.inf
        if aborted:
            raise StageError(ErrorCode.TIMEOUT, f"eSpeak NG took more than {timeout:g} s for {text[:80]!r}")
        if code != _ENS_OK:
            raise StageError(
                ErrorCode.SYNTHESIS_FAILED, f"eSpeak NG failed on {text[:80]!r}: {self.message(code)}"
            )
        return b"".join(chunks)


_LIBRARY: _Library | None = None
_LIBRARY_LOCK = threading.Lock()


def _library(program: str) -> _Library:
    """The process's one libespeak-ng, loaded on first use."""
    global _LIBRARY
    with _LIBRARY_LOCK:
        if _LIBRARY is None:
            problems = []
            for candidate in _library_candidates(program):
                try:
                    _LIBRARY = _Library(candidate)
                except OSError as exc:  # not there
                    problems.append(str(exc))
                    continue
                except AttributeError as exc:  # eSpeak (not NG) or NG before 1.49: no espeak_ng_*
                    problems.append(f"{candidate} is too old: {exc}")
                    continue
                logger.debug("loaded %s (%d Hz)", candidate, _LIBRARY.sample_rate)
                break
            else:
                raise StageLoadError(
                    f"eSpeak NG's library libespeak-ng cannot be loaded ({'; '.join(problems)}):"
                    " apt-get install libespeak-ng1 (it comes with espeak-ng)"
                )
        return _LIBRARY


# -- the stage ----------------------------------------------------------------------------------


#: eSpeak NG's male and female variants, most distinct from each other first.
_LOWER_VARIANTS = ("m3", "m1", "m7", "m2", "m4", "m5", "m6")
_HIGHER_VARIANTS = ("f4", "f2", "f1", "f3", "f5")


def _int_option(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigurationError(f"espeak {name} must be an int from {low} to {high}, got {value!r}")
    return value


class ESpeakSynthesizer:
    """Speech synthesis with eSpeak NG, in any language it has a voice for.

    A voice is written as eSpeak writes it: a voice (its language, ``es``, ``es-419``,
    ``pt-br``; its file, ``roa/es``; or its name, ``Spanish (Spain)``), optionally followed by
    ``+`` and a variant (``es+f3``, ``en-us+m3``, ``de+klatt``; ``espeak-ng --voices=variant``
    lists them). ``+f3`` alone puts the variant on the language's voice. A language tag with no
    voice of its own is spoken by a shorter form of it (``es-AR`` by ``es``).

    Args:
        device: Ignored: eSpeak runs on the CPU (accepted because every factory gets it).
        default_voice: The voice used when a request names none and it speaks the request's
            language (default: the language's voice, as eSpeak ranks them).
        variant: The variant put on every voice that names none (default: none, eSpeak's
            male voice).
        voices: Voice per language when a request names none: ``{"en": "en-us",
            "es": "es-419+f3"}``; a key covers its regions (``"en"`` covers ``en-AU``).
        rate: Words per minute at speed 1.0, 80 to 450 (eSpeak's ``-s``).
        pitch: eSpeak's pitch adjustment, 0 to 99 (``-p``).
        amplitude: eSpeak's loudness, 1 to 200 (``-a``; above 100 speech may clip).
        timeout: Seconds after which a synthesis is stopped (``TIMEOUT``); the library is
            shared, so this bounds how long one fragment holds it.

    Raises:
        StageLoadError: espeak-ng, or its library, is missing or does not start.
        ConfigurationError: A voice, variant or number in the options is not valid.
    """

    #: The pipeline may ask for another speaking rate with ``SynthesisRequest.speed``.
    supports_speed = True
    #: One synthesis at a time: libespeak-ng is one global state per process.
    concurrency = 1

    def __init__(
        self,
        *,
        device: str = "cpu",
        default_voice: str | None = None,
        variant: str | None = None,
        voices: Mapping[str, str] | None = None,
        rate: int = DEFAULT_RATE,
        pitch: int = 50,
        amplitude: int = 100,
        timeout: float = 30.0,
    ) -> None:
        self.device = device
        self.rate = _int_option("rate", rate, MIN_RATE, MAX_RATE)
        self.pitch = _int_option("pitch", pitch, 0, 99)
        self.amplitude = _int_option("amplitude", amplitude, 1, 200)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
            raise ConfigurationError(f"espeak timeout must be seconds > 0, got {timeout!r}")
        self.timeout = float(timeout)
        program = _find_program()
        self._catalogue = _catalogue(program)
        self._library = _library(program)
        #: The installed voices.
        self.voices: tuple[ESpeakVoice, ...] = self._catalogue.voices
        #: The installed variants, by file name (``f3``, ``klatt``).
        self.variants: tuple[str, ...] = tuple(sorted(set(self._catalogue.variants.values()), key=str.lower))
        self._clamp_logged: set[int] = set()
        self._closed = False

        # Options are checked now, so that a misspelt voice fails at start-up, not per fragment.
        def checked(spec: str, option: str) -> tuple[ESpeakVoice | None, str | None]:
            try:
                return self._parse(spec)
            except ValueError as exc:
                raise ConfigurationError(f"espeak {option}: {exc}") from exc

        self._variant: str | None = None
        if variant is not None:
            found = self._catalogue.variant(variant.lstrip("+")) if isinstance(variant, str) else None
            if found is None:
                raise ConfigurationError(f"espeak variant: {self._unknown_variant(variant.lstrip('+'))}")
            self._variant = found
        self._default = checked(default_voice, "default_voice") if default_voice is not None else None
        self._by_language: dict[str, tuple[ESpeakVoice, str | None]] = {}
        for language, spec in (voices or {}).items():
            voice, voice_variant = checked(spec, f"voices[{language!r}]")
            voice = voice or self._catalogue.for_language(language)
            if voice is None or not voice.speaks(language):
                raise ConfigurationError(f"espeak voices[{language!r}]: {spec!r} does not speak {language!r}")
            self._by_language[_tag(language)] = (voice, voice_variant)
        self.default_voice = default_voice

    # -- voices ---------------------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        """eSpeak NG's output rate (22 050 Hz)."""
        return self._library.sample_rate

    @property
    def languages(self) -> frozenset[str]:
        """The language tags the installed voices speak (see :func:`available_languages`)."""
        return self._catalogue.tags

    def speaker_voices(self, language: str, voice: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Variants of the stream's voice (or the language's) for distinct speakers.

        eSpeak's ``m`` variants are male voices and its ``f`` variants female ones: the lower
        pool is ``+m3``, ``+m1``, ``+m7``… and the higher ``+f4``, ``+f2``, ``+f1``… of the
        same voice (those installed), so every speaker speaks the language's voice, each with
        a timbre and pitch of their own.
        """
        base = (voice or "").partition("+")[0].strip() or (self.default_voice or "").partition("+")[0]
        base = base.strip() or language

        def pool(names: tuple[str, ...]) -> tuple[str, ...]:
            found = (self._catalogue.variant(name) for name in names)
            return tuple(f"{base}+{variant}" for variant in dict.fromkeys(found) if variant is not None)

        return pool(_LOWER_VARIANTS), pool(_HIGHER_VARIANTS)

    def _unknown_variant(self, name: str) -> str:
        close = self._catalogue.close_variants(name)
        hint = (
            f"close matches: {', '.join(close)}"
            if close
            else f"variants include {', '.join(self.variants[:12])}"
        )
        return f"unknown eSpeak NG variant {name!r}; {hint} (espeak-ng --voices=variant lists them)"

    def _parse(self, spec: str) -> tuple[ESpeakVoice | None, str | None]:
        """``"es+f3"`` → (the es voice, ``"f3"``); ``"+f3"`` → (None, ``"f3"``).

        Raises:
            ValueError: An unknown voice or variant, with close matches.
        """
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError(f"a voice must be a non-empty string, got {spec!r}")
        name, plus, variant_name = spec.strip().partition("+")
        variant: str | None = None
        if plus:
            variant = self._catalogue.variant(variant_name)
            if variant is None:
                raise ValueError(self._unknown_variant(variant_name))
        if not name.strip():
            return None, variant
        voice = self._catalogue.find(name)
        if voice is None:
            close = self._catalogue.close_languages(name)
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise ValueError(
                f"unknown eSpeak NG voice {name.strip()!r}{hint} (espeak-ng --voices lists them)"
            )
        return voice, variant

    def _language_voice(self, language: str) -> ESpeakVoice:
        voice = self._catalogue.for_language(language or _FALLBACK_LANGUAGE)
        if voice is None:
            close = self._catalogue.close_languages(language)
            hint = f"close matches: {', '.join(close)}" if close else "none is close"
            raise StageError(
                ErrorCode.UNSUPPORTED_LANGUAGE,
                f"eSpeak NG has no voice for {language!r} ({hint}; {len(self._catalogue.tags)}"
                " language tags are installed, espeak-ng --voices lists them)",
            )
        return voice

    def voice_for(self, voice: str | None, language: str) -> tuple[ESpeakVoice, str | None]:
        """The voice and variant that speak a request.

        Raises:
            StageError: ``SYNTHESIS_FAILED`` for an unknown voice or variant,
                ``UNSUPPORTED_LANGUAGE`` for a language no voice speaks, or a named voice
                that does not speak ``language``.
        """
        if self._closed:
            raise StageError(ErrorCode.SYNTHESIS_FAILED, "the espeak synthesizer is closed")
        language = language.strip() if isinstance(language, str) else ""
        if voice is not None and voice.strip():
            try:
                chosen, variant = self._parse(voice)
            except ValueError as exc:
                raise StageError(ErrorCode.SYNTHESIS_FAILED, str(exc)) from exc
            if chosen is None:
                chosen = self._language_voice(language)
            elif language and not chosen.speaks(language):
                raise StageError(
                    ErrorCode.UNSUPPORTED_LANGUAGE,
                    f"eSpeak NG voice {voice!r} ({chosen.name}) speaks {chosen.language}, not {language!r}",
                )
            return chosen, variant or self._variant
        for tag in _prefixes(language):
            if tag in self._by_language:
                chosen, variant = self._by_language[tag]
                return chosen, variant or self._variant
        if self._default is not None:
            default, variant = self._default
            if default is not None and (not language or default.speaks(language)):
                return default, variant or self._variant
            if default is None:  # default_voice="+f3": a variant for every language
                return self._language_voice(language), variant or self._variant
        return self._language_voice(language), self._variant

    # -- the stage ------------------------------------------------------------------------------

    def _words_per_minute(self, speed: float) -> int:
        wanted = round(min(self.rate * speed, 1e9))  # a huge factor must not overflow round()
        rate = min(max(wanted, MIN_RATE), MAX_RATE)
        if rate != wanted and rate not in self._clamp_logged:
            self._clamp_logged.add(rate)  # once per bound: the pipeline may ask every fragment
            logger.warning(
                "speed %.3g asks eSpeak NG for %d words per minute; clamped to %d (its range is %d-%d)",
                speed,
                wanted,
                rate,
                MIN_RATE,
                MAX_RATE,
            )
        return rate

    def _speak(self, voice: ESpeakVoice, variant: str | None, text: str, speed: float) -> FloatArray:
        parameters = {
            _RATE: self._words_per_minute(speed),
            _VOLUME: self.amplitude,
            _PITCH: self.pitch,
            # Not options, but state of the library that anyone else using it may have changed.
            _RANGE: 50,
            _WORDGAP: 0,
        }
        name = f"{voice.identifier}+{variant}" if variant else voice.identifier
        pcm = self._library.speak(name, text, parameters, self.timeout)
        samples = pcm16_to_float(pcm) if pcm else np.zeros(0, np.float32)
        if not samples.size or not np.any(samples):
            raise StageError(ErrorCode.INVALID_TEXT, f"nothing to pronounce in {text[:80]!r}")
        return samples

    def warmup(self) -> None:
        """Speak a sentence with the default and the configured voices (loads their dictionaries)."""
        voices = [self.voice_for(None, ""), *self._by_language.values()]
        for voice, variant in dict.fromkeys(voices):
            self._speak(voice, variant, _WARMUP_TEXT, 1.0)

    def close(self) -> None:
        """Stop taking requests (the library stays loaded: it is the process's)."""
        self._closed = True

    def synthesize(self, request: SynthesisRequest) -> AudioBuffer:
        """Speak ``request.text`` at ``request.speed`` with the voice for ``request.voice``.

        Speech comes as eSpeak ends it, with its own short pause at the end; nothing is
        trimmed (duration matching trims silence itself).

        Raises:
            StageError: ``INVALID_TEXT`` for empty text or text with nothing to pronounce,
                ``UNSUPPORTED_LANGUAGE``, ``SYNTHESIS_FAILED`` or ``TIMEOUT``.
        """
        text = _CONTROL.sub(" ", request.text).strip() if isinstance(request.text, str) else ""
        if not text:
            raise StageError(ErrorCode.INVALID_TEXT, "nothing to synthesize: the text is empty")
        speed = request.speed
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not 0 < speed < math.inf:
            raise StageError(ErrorCode.SYNTHESIS_FAILED, f"speed must be a positive factor, got {speed!r}")
        voice, variant = self.voice_for(request.voice, request.language)
        return AudioBuffer(self._speak(voice, variant, text, float(speed)), self.sample_rate)

    def __repr__(self) -> str:
        default = self.default_voice or "per language"
        return f"<ESpeakSynthesizer {len(self.voices)} voices, default={default!r}, {self.rate} wpm>"

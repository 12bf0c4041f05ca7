"""``stsdub serve`` (here through ``python -m stsdub.server``): flags, environment, exit codes."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
import socketio

from stsdub.server._cli import _export_env_file, add_serve_command, settings_from_args

from .conftest import fragment, http_get, init_payload


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="stsdub")
    add_serve_command(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", *argv])


def test_flags_win_over_environment_which_wins_over_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("STS_PORT=7000\nMAX_INFLIGHT=5\nSTSDUB_TARGET_LANGUAGE=fr\n")
    token_file = tmp_path / "token"
    token_file.write_text("file-secret\n")
    args = _parse(
        "--env-file",
        str(env_file),
        "--port",
        "9100",
        "--auth-token-file",
        str(token_file),
        "-O",
        "asr.model=medium",
        "-O",
        "synthesizer.speaker=2",
        "--translator",
        "none",
        "--cors-origin",
        "https://a.example",
    )
    settings = settings_from_args(args, {"MAX_INFLIGHT": "4", "STSDUB_ASR_OPTIONS": '{"beam_size": 2}'})
    assert settings.port == 9100  # flag over file
    assert settings.max_inflight == 4  # environment over file
    assert settings.target_language == "fr"  # file alone
    assert settings.auth_token == "file-secret"
    assert settings.asr_options == {"beam_size": 2, "model": "medium"}
    assert settings.synthesizer_options == {"speaker": 2}
    assert settings.translator is None and settings.cors_origins == ("https://a.example",)


@pytest.mark.parametrize(
    ("flags", "environ", "expected"),
    [
        ((), {}, "auto"),  # not set: the shared rule decides
        ((), {"STSDUB_TRANSLATOR": "none"}, None),
        (("--translator", "auto"), {"STSDUB_TRANSLATOR": "none"}, "auto"),
        (("--translator", "none"), {"STSDUB_TRANSLATOR": "deepl"}, None),
        (("--translator", "fake"), {}, "fake"),
    ],
)
def test_translator_flag_and_variable(
    flags: tuple[str, ...], environ: dict[str, str], expected: str | None
) -> None:
    assert settings_from_args(_parse(*flags), environ).translator == expected


def test_separator_and_diarizer_flags_and_variables() -> None:
    plain = settings_from_args(_parse(), {})
    assert plain.separator is None and plain.diarizer is None  # none unless asked for
    environ = {
        "STSDUB_SEPARATOR": "demucs",
        "STSDUB_DIARIZER": "resemblyzer",
        "STSDUB_DIARIZER_OPTIONS": '{"a": 1}',
    }
    settings = settings_from_args(_parse("-O", "separator.model=htdemucs_ft"), environ)
    assert (settings.separator, settings.diarizer) == ("demucs", "resemblyzer")
    assert settings.separator_options == {"model": "htdemucs_ft"} and settings.diarizer_options == {"a": 1}
    off = settings_from_args(_parse("--separator", "none", "--diarizer", "none"), environ)
    assert off.separator is None and off.diarizer is None


def test_env_file_variables_for_the_stages_reach_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DEEPL_AUTH_KEY=file-key\nSTSDUB_TRANSLATOR=\nSTS_PORT=7000\nEMPTY=\n")
    for name in ("DEEPL_AUTH_KEY", "STS_PORT", "EMPTY"):
        monkeypatch.setenv(name, "x")  # recorded, so that the test leaves the environment as it was
        monkeypatch.delenv(name)
    _export_env_file(env_file)
    # The DeepL stage reads its key from the environment; the settings' own variables and
    # empty values stay out of it.
    assert os.environ.get("DEEPL_AUTH_KEY") == "file-key"
    assert "STS_PORT" not in os.environ and "EMPTY" not in os.environ
    assert settings_from_args(_parse("--env-file", str(env_file))).chosen_translator() == "deepl"
    # The environment wins over the file.
    monkeypatch.setenv("DEEPL_AUTH_KEY", "env-key")
    _export_env_file(env_file)
    assert os.environ["DEEPL_AUTH_KEY"] == "env-key"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Variables of the machine running the tests that would change which translator loads.
_TRANSLATOR_VARIABLES = (
    "DEEPL_AUTH_KEY",
    "STSDUB_TRANSLATOR",
    "TRANSLATION_PROVIDER",
    "STSDUB_TRANSLATOR_OPTIONS",
)


def _start(*flags: str, env: dict[str, str], stderr: int = subprocess.STDOUT) -> subprocess.Popen[str]:
    root = Path(__file__).resolve().parents[2]
    inherited = {k: v for k, v in os.environ.items() if k not in _TRANSLATOR_VARIABLES}
    return subprocess.Popen(
        [sys.executable, "-m", "stsdub.server", *flags],
        env={**inherited, "PYTHONPATH": str(root / "src"), **env},
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


async def _wait_ready(url: str, proc: subprocess.Popen[str]) -> None:
    with anyio.fail_after(60):
        while True:
            assert proc.poll() is None, "the service exited"
            try:
                status, _ = await http_get(url, "/ready")
                if status == 200:
                    return
            except OSError:
                pass
            await anyio.sleep(0.1)


@pytest.mark.anyio
async def test_serve_runs_a_working_service_and_stops_cleanly_on_sigint() -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start(
        "--port",
        str(port),
        "--asr",
        "fake",
        "--translator",
        "fake",
        "--synthesizer",
        "fake",
        "--to",
        "de",
        env={"STSDUB_AUTH_TOKEN": "cli-token", "STSDUB_DEVICE": "cpu"},
    )
    try:
        await _wait_ready(url, proc)
        client = socketio.AsyncClient(reconnection=False)
        results: list[dict[str, object]] = []
        done = anyio.Event()

        @client.on("fragment:processed")
        async def on_processed(data: dict[str, object]) -> None:
            results.append(data)
            done.set()

        await client.connect(url, auth={"token": "cli-token"}, transports=["websocket"], wait_timeout=10)
        payload = init_payload("cli")
        del payload["config"]["target_language"]  # the server's --to applies
        await client.emit("stream:init", payload)
        await anyio.sleep(0.2)
        await client.emit("fragment:data", fragment("cli", 0))
        with anyio.fail_after(20):
            await done.wait()
        await client.disconnect()
        assert results[0]["translated_text"] == "[de] speech 0"
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    processed = [line for line in lines if line["message"] == "fragment processed"]
    assert processed and processed[0]["stream_id"] == "cli" and processed[0]["sequence_number"] == 0


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        (("--asr", "no-such-asr"), "no-such-asr"),
        (("--asr", "fake", "-O", "synthesizer.no_such_option=1"), "no_such_option"),
    ],
)
def test_serve_exits_1_with_the_reason_on_stderr_when_a_model_fails_to_load(
    flags: tuple[str, ...], reason: str
) -> None:
    proc = _start(
        "--port",
        str(_free_port()),
        "--translator",
        "fake",
        "--synthesizer",
        "fake",
        *flags,
        env={},
        stderr=subprocess.PIPE,
    )
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("stsdub serve: error: the models failed to load: ") and reason in last
    # Connections wait for the models, so no client was ever let in to be dropped.
    assert "client connected" not in stderr


def test_serve_exits_2_at_once_for_deepl_without_a_key() -> None:
    proc = _start(
        "--port",
        str(_free_port()),
        "--asr",
        "fake",
        "--translator",
        "deepl",
        "--synthesizer",
        "fake",
        env={},
        stderr=subprocess.PIPE,
    )
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2, stderr
    assert stderr.startswith("stsdub serve: error: the deepl translator needs a DeepL API key")
    assert "DEEPL_AUTH_KEY" in stderr and "loading models" not in stderr  # before any model loads


@pytest.mark.anyio
async def test_serve_on_a_fresh_machine_revoices_and_refuses_translation_clearly(tmp_path: Path) -> None:
    """No translator named, no DeepL key, no Apertium pair: the service starts without one."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # Apertium's data directory without a pair, as on a machine without Debian's packages.
    env = {"STSDUB_DEVICE": "cpu", "APERTIUM_DATADIR": str(tmp_path)}
    proc = _start("--port", str(port), "--asr", "fake", "--synthesizer", "fake", env=env)
    try:
        await _wait_ready(url, proc)
        client = socketio.AsyncClient(reconnection=False)
        answers: list[tuple[str, dict[str, object]]] = []
        changed = anyio.Event()

        @client.on("*")
        async def on_any(event: str, data: dict[str, object]) -> None:
            nonlocal changed
            answers.append((event, data))
            changed.set()

        async def next_answer(event: str) -> dict[str, object]:
            nonlocal changed
            with anyio.fail_after(20):
                while not any(e == event for e, _ in answers):
                    changed = anyio.Event()
                    await changed.wait()
            index = next(i for i, (e, _) in enumerate(answers) if e == event)
            return answers.pop(index)[1]

        await client.connect(url, transports=["websocket"], wait_timeout=10)
        # The flat form the reference's clients send.
        flat = {"audio_format": "pcm_s16le", "sample_rate_hz": 16000, "channels": 1}
        config = {"source_language": "en", "target_language": "en", **flat}
        await client.emit("stream:init", {"stream_id": "same", "config": config})
        assert (await next_answer("stream:ready"))["stream_id"] == "same"
        await client.emit("fragment:data", fragment("same", 0))
        result = await next_answer("fragment:processed")
        assert result["status"] == "success" and result["transcript"] == "speech 0"
        await client.emit("stream:init", {"stream_id": "mt", "config": {**config, "target_language": "es"}})
        error = await next_answer("error")
        assert error["code"] == "TRANSLATOR_UNAVAILABLE" and error["retryable"] is False
        message = str(error["message"])
        assert "STSDUB_TRANSLATOR" in message and "DEEPL_AUTH_KEY" in message and "ctranslate2" in message
        assert client.connected  # the refusal closed nothing
        await client.disconnect()
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert "no translator" in output  # the operator is told at start-up


def test_serve_exits_2_on_bad_settings() -> None:
    proc = _start("--port", str(_free_port()), env={"MAX_INFLIGHT": "lots"})
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "MAX_INFLIGHT must be an integer" in output

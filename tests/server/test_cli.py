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

from stsdub.server._cli import add_serve_command, settings_from_args

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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(*flags: str, env: dict[str, str]) -> subprocess.Popen[str]:
    root = Path(__file__).resolve().parents[2]
    return subprocess.Popen(
        [sys.executable, "-m", "stsdub.server", *flags],
        env={**os.environ, "PYTHONPATH": str(root / "src"), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


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
        with anyio.fail_after(60):
            while True:
                try:
                    status, _ = await http_get(url, "/ready")
                    if status == 200:
                        break
                except OSError:
                    pass
                await anyio.sleep(0.1)
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


def test_serve_exits_1_when_the_models_fail_to_load() -> None:
    proc = _start(
        "--port",
        str(_free_port()),
        "--asr",
        "no-such-asr",
        "--translator",
        "fake",
        "--synthesizer",
        "fake",
        env={},
    )
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, output
    assert "no-such-asr" in output


def test_serve_exits_2_on_bad_settings() -> None:
    proc = _start("--port", str(_free_port()), env={"MAX_INFLIGHT": "lots"})
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "MAX_INFLIGHT must be an integer" in output

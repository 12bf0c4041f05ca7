"""``stsdub serve``: run the dubbing service with uvicorn.

Settings come from, in rising priority: an env file (``--env-file``), the environment, and
the flags. The env file's other variables (``DEEPL_AUTH_KEY``…), which the stages read
themselves, are added to the environment unless it has them. This module imports nothing
heavy until the command runs, so the ``stsdub`` command stays quick and works without the
``server`` extra.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import attrs

from .._plugins._options import add_stage_option_argument
from ..errors import StsdubError
from ._settings import ENV_VARIABLES, ServerSettings, parse_optional_stage, parse_translator, read_env_file

__all__ = ["add_serve_command", "run_serve", "settings_from_args"]


def add_serve_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``serve`` to an ``argparse`` sub-parser collection; returns its parser."""
    serve = subparsers.add_parser(
        "serve",
        help="run the Socket.IO dubbing service (needs stsdub[server])",
        description="Run the Socket.IO dubbing service. Every flag has an environment variable;"
        " see .env.example and docs/service.md.",
    )
    net = serve.add_argument_group("network")
    net.add_argument(
        "--host", default=None, help="address to listen on (STSDUB_HOST / STS_HOST; default 127.0.0.1)"
    )
    net.add_argument("--port", type=int, default=None, help="port (STSDUB_PORT / STS_PORT; default 8000)")
    net.add_argument(
        "--env-file", type=Path, default=None, help="read KEY=VALUE settings from this file first"
    )
    net.add_argument(
        "--auth-token-file",
        type=Path,
        default=None,
        help="file holding the shared secret clients must send (or set STSDUB_AUTH_TOKEN)",
    )
    net.add_argument(
        "--cors-origin",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="browser origin allowed to connect (repeatable; '*' for any; default: none)",
    )
    net.add_argument(
        "--max-streams", type=int, default=None, help="concurrent streams (MAX_CONCURRENT_STREAMS)"
    )
    net.add_argument("--max-payload-bytes", type=int, default=None, help="largest base64 audio accepted")
    pipe = serve.add_argument_group("pipeline")
    pipe.add_argument("--asr", default=None, help="ASR stage name (STSDUB_ASR; default faster-whisper)")
    pipe.add_argument(
        "--translator",
        default=None,
        help="translator name, 'none', or 'auto' (STSDUB_TRANSLATOR; default auto: deepl when"
        " DEEPL_AUTH_KEY is set, else none, which serves same-language streams only)",
    )
    pipe.add_argument(
        "--synthesizer", default=None, help="synthesizer name (STSDUB_SYNTHESIZER; default piper)"
    )
    pipe.add_argument(
        "--separator",
        default=None,
        help="separator for streams asking for background 'separate', or 'none' (STSDUB_SEPARATOR;"
        " default none)",
    )
    pipe.add_argument(
        "--diarizer",
        default=None,
        help="diarizer: a voice per speaker in each stream, or 'none' (STSDUB_DIARIZER; default none)",
    )
    pipe.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (STSDUB_DEVICE)")
    pipe.add_argument("--from", dest="source", default=None, help="default source language (default: detect)")
    pipe.add_argument("--to", dest="target", default=None, help="default target language of streams")
    pipe.add_argument("--voice", default=None, help="default voice")
    pipe.add_argument("--max-inflight", type=int, default=None, help="fragments per stream in the pipeline")
    pipe.add_argument("--fragment-timeout", type=float, default=None, help="seconds per fragment")
    add_stage_option_argument(pipe, "asr.model=medium")
    obs = serve.add_argument_group("observability")
    obs.add_argument("--log-level", default=None, help="DEBUG | INFO | WARNING | ERROR (LOG_LEVEL)")
    obs.add_argument("--log-format", choices=("json", "text"), default=None)
    obs.add_argument(
        "--artifacts", type=Path, default=None, metavar="DIR", help="write debug artifacts to DIR"
    )
    return serve  # type: ignore[no-any-return]


def settings_from_args(args: argparse.Namespace, environ: dict[str, str] | None = None) -> ServerSettings:
    """The settings of a parsed ``serve`` command line (env file < environment < flags)."""
    env: dict[str, str] = {}
    if args.env_file is not None:
        env.update(read_env_file(args.env_file))
    env.update(os.environ if environ is None else environ)
    settings = ServerSettings.from_env(env)
    changes: dict[str, Any] = {}
    direct = {
        "host": args.host,
        "port": args.port,
        "max_concurrent_streams": args.max_streams,
        "max_payload_bytes": args.max_payload_bytes,
        "asr": args.asr,
        "synthesizer": args.synthesizer,
        "device": args.device,
        "source_language": args.source,
        "target_language": args.target,
        "voice": args.voice,
        "max_inflight": args.max_inflight,
        "fragment_timeout": args.fragment_timeout,
        "log_level": args.log_level,
        "log_format": args.log_format,
    }
    changes.update({k: v for k, v in direct.items() if v is not None})
    if args.translator is not None:
        changes["translator"] = parse_translator(args.translator)
    for kind in ("separator", "diarizer"):
        if getattr(args, kind) is not None:
            changes[kind] = parse_optional_stage(getattr(args, kind))
    if args.cors_origin:
        changes["cors_origins"] = tuple(args.cors_origin)
    if args.artifacts is not None:
        changes["artifacts_enabled"] = True
        changes["artifacts_path"] = args.artifacts
    if args.auth_token_file is not None:
        try:
            token = args.auth_token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise StsdubError(f"cannot read {args.auth_token_file}: {exc}") from exc
        if not token:
            raise StsdubError(f"{args.auth_token_file} is empty")
        changes["auth_token"] = token
    kinds = ("asr", "translator", "synthesizer", "separator", "diarizer")
    options = {k: dict(getattr(settings, f"{k}_options")) for k in kinds}
    for kind, name, value in args.option:
        if kind not in options:
            raise StsdubError(f"-O {kind}.{name}: the service has no {kind} stage")
        options[kind][name] = value
    if args.option:
        changes.update({f"{k}_options": v for k, v in options.items()})
    try:
        return attrs.evolve(settings, **changes)
    except (TypeError, ValueError) as exc:
        raise StsdubError(f"invalid service settings: {exc}") from exc


def run_serve(args: argparse.Namespace) -> int:
    """Run the service until interrupted. Returns the exit status.

    0 after a clean shutdown (Ctrl-C / SIGTERM); 1 when the models failed to load (the reason
    on stderr; no client was accepted, since connections wait for the models) or the address
    could not be bound; 2 for bad settings (a translator that cannot load as configured
    included) or a missing ``server`` extra.
    """
    try:
        settings = settings_from_args(args)
        if args.env_file is not None:
            _export_env_file(args.env_file)
    except StsdubError as exc:
        print(f"stsdub serve: error: {exc}", file=sys.stderr)
        return 2
    try:
        import uvicorn

        from ._app import create_app
    except ImportError as exc:
        print(
            f"stsdub serve: error: the service needs the server extra: pip install 'stsdub[server]' ({exc})",
            file=sys.stderr,
        )
        return 2
    from ._logging import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    failures: list[BaseException] = []
    server: uvicorn.Server | None = None

    def on_fatal(exc: BaseException) -> None:
        failures.append(exc)
        if server is not None:
            server.should_exit = True

    try:
        app = create_app(settings, on_fatal=on_fatal)
    except StsdubError as exc:
        print(f"stsdub serve: error: {exc}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        # Socket.IO pings on its own; uvicorn's WebSocket pings would only duplicate them.
        ws_ping_interval=None,
    )
    server = uvicorn.Server(config)
    # uvicorn handles SIGINT/SIGTERM with a graceful shutdown and then raises the signal
    # again for the handlers it found; these make that a normal exit with status 0.
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, _after_shutdown) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failures:
        failure = failures[0]
        print(
            f"stsdub serve: error: the models failed to load: {type(failure).__name__}: {failure}",
            file=sys.stderr,
        )
        return 1
    if not server.started:
        return 1
    return 0


def _export_env_file(path: Path) -> None:
    """Put the env file's variables that the settings do not read into the environment.

    The stages read some variables themselves (the DeepL stage reads ``DEEPL_AUTH_KEY``),
    so those must reach ``os.environ``; the environment keeps priority over the file.
    """
    for key, value in read_env_file(path).items():
        if key not in ENV_VARIABLES and value and key not in os.environ:
            os.environ[key] = value


def _after_shutdown(signum: int, frame: object) -> None:
    """Handler uvicorn re-raises a stop signal into, once it has shut down gracefully."""

"""The ``stsdub`` command: ``stsdub plugins`` and ``stsdub dub``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from ._defaults import (
    AUTO,
    DEEPL_KEY_ENV,
    check_translator,
    configuration_needed,
    default_synthesizer,
    default_translator,
    translator_setup_hint,
)
from ._languages import same_language
from ._model import Status
from ._models_cli import add_models_parser, run_models
from ._options import add_stage_option_argument
from ._plugins import StageRegistry, get_plugin_manager
from .errors import ConfigurationError, StsdubError
from .server._cli import add_serve_command, run_serve


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stsdub", description="Dub speech into another language.")
    parser.add_argument("--version", action="version", version=f"stsdub {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    plugins = sub.add_parser("plugins", help="list every registered stage (kind, name, package)")
    plugins.add_argument("--json", action="store_true", help="print JSON instead of a table")

    _add_dub_parser(sub)
    add_serve_command(sub)
    add_models_parser(sub)
    return parser


def _cmd_plugins(args: argparse.Namespace) -> int:
    registry = StageRegistry.from_plugin_manager(get_plugin_manager())
    rows = [
        {
            "kind": s.kind,
            "name": s.name,
            "package": s.package,
            "available": s.available,
            "install": None if s.available else s.install_hint,
            # Installed, yet not usable until configured (a key, a model, a language pair).
            "needs": configuration_needed(s.kind, s.name) if s.available and s.package == "stsdub" else None,
            "description": s.description,
        }
        for s in registry
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("kind", "name", "package", "status", "description")
    for row in rows:
        if not row["available"]:
            status = f"not installed: {row['install']}"
        elif row["needs"]:
            status = f"installed; needs {row['needs']}"
        else:
            status = "ready"
        table.add_row(row["kind"], row["name"], row["package"] or "?", status, row["description"])
    Console().print(table)
    return 0


_PHASES = {
    "decode": "reading the input",
    "segment": "finding speech",
    "load": "loading models",
    "dub": "dubbing",
    "write": "writing",
}


def _add_dub_parser(sub: Any) -> None:
    dub = sub.add_parser(
        "dub",
        help="dub an audio or video file",
        description=(
            "Dub an audio or video file. The output is as long as the input; a video output keeps"
            " the input's picture untouched. Subtitles are written next to the output."
        ),
    )
    dub.add_argument("input", type=Path, help="audio or video file to dub (anything FFmpeg reads)")
    dub.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="dubbed file: .wav or .flac for audio; .mp4, .mkv, .mov or .webm keeps the input's picture",
    )
    dub.add_argument(
        "--from",
        dest="source",
        default=None,
        help="language of the speech (default: detect); the same as --to re-voices without translating",
    )
    dub.add_argument("--to", dest="target", required=True, help="language to dub into")
    stages = dub.add_argument_group("stages (see `stsdub plugins`)")
    stages.add_argument("--asr", default="faster-whisper", help="speech recognizer (default: faster-whisper)")
    stages.add_argument(
        "--translator",
        default=None,
        help=f"translator (default: deepl when {DEEPL_KEY_ENV} is set, else apertium when a pair is"
        " installed; none when re-voicing)",
    )
    stages.add_argument(
        "--synthesizer",
        default=None,
        help="speech synthesizer (default: piper for English or a configured voice, else espeak"
        " when it speaks the language)",
    )
    stages.add_argument("--voice", default=None, help="voice of the synthesizer")
    stages.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    add_stage_option_argument(stages)
    seg = dub.add_argument_group("segmentation")
    seg.add_argument(
        "--segment",
        choices=("speech", "fixed"),
        default="speech",
        help="speech: cut at pauses, never inside a word (default); fixed: equal windows",
    )
    seg.add_argument(
        "--fragment-seconds", type=float, default=6.0, help="length of fixed windows (default: 6)"
    )
    seg.add_argument(
        "--max-fragment-seconds", type=float, default=12.0, help="longest speech fragment (default: 12)"
    )
    seg.add_argument(
        "--min-pause",
        type=float,
        default=0.3,
        help="shortest pause that ends a fragment, seconds (default: 0.3)",
    )
    out = dub.add_argument_group("output")
    out.add_argument(
        "--original",
        choices=("none", "track", "mix"),
        default="none",
        help="keep the original audio: as a second track (video outputs) or mixed under the dub",
    )
    out.add_argument(
        "--original-level",
        type=float,
        default=0.25,
        help="gain of the original under the dub, 0-1 (default: 0.25)",
    )
    out.add_argument(
        "--audio-codec", choices=("aac", "opus"), default=None, help="audio codec of a video output"
    )
    out.add_argument(
        "--sample-rate", type=int, default=None, help="rate of the dubbed audio (default: the input's)"
    )
    out.add_argument(
        "--subtitles",
        default="srt,vtt",
        help="subtitle formats, comma-separated, or 'none' (default: srt,vtt)",
    )
    run = dub.add_argument_group("run")
    run.add_argument(
        "--fallback",
        choices=("silence", "original"),
        default="silence",
        help="audio of a fragment that fails (default: silence)",
    )
    run.add_argument(
        "--fragment-timeout", type=float, default=60.0, help="seconds one fragment may take (default: 60)"
    )
    run.add_argument(
        "--max-inflight", type=int, default=3, help="fragments in the pipeline at once (default: 3)"
    )
    run.add_argument("--allow-failures", action="store_true", help="exit 0 even when fragments failed")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def _choose_translator(args: argparse.Namespace, options: dict[str, Any]) -> str | None:
    """The translator to load, or a ConfigurationError that says what to set — before any model loads."""
    if same_language(args.source, args.target):
        return None  # re-voicing: the translator would never be called
    # The same words as the service's --translator: not set or "auto" applies the shared rule.
    translator: str | None
    if args.translator is None or args.translator.lower() == AUTO:
        translator = default_translator(options, source=args.source, target=args.target)
    elif args.translator.lower() == "none":
        translator = None
    else:
        translator = str(args.translator)
    if translator is None:
        need = f"dubbing {args.source or 'detected speech'} into {args.target} needs a translator"
        hint = "; to re-voice in the same language give the same --from and --to" if args.source else ""
        raise ConfigurationError(f"{need}, and none is set up. {translator_setup_hint()}{hint}")
    check_translator(translator, options)
    return translator


def _subtitle_formats(text: str) -> tuple[str, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    formats = tuple(f.strip().lower() for f in text.split(",") if f.strip())
    unknown = sorted(set(formats) - {"srt", "vtt"})
    if unknown:
        raise ConfigurationError(f"--subtitles: unknown formats {unknown}; use srt, vtt or none")
    return formats


def _cmd_dub(args: argparse.Namespace) -> int:
    import functools

    import anyio
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from ._dubber import Dubber
    from ._files import FileProgress, adub_file
    from ._media import Segmentation

    options: dict[str, dict[str, Any]] = {"asr": {}, "translator": {}, "synthesizer": {}}
    for kind, name, value in args.option:
        options[kind][name] = value
    translator = _choose_translator(args, options["translator"])
    synthesizer = args.synthesizer
    if synthesizer is None or synthesizer.lower() == AUTO:
        synthesizer = default_synthesizer(args.target, options["synthesizer"])
    # Unknown or uninstalled stages are reported now, not after the first model has loaded.
    registry = StageRegistry.from_plugin_manager(get_plugin_manager())
    for kind, name in (("asr", args.asr), ("translator", translator), ("synthesizer", synthesizer)):
        if name is not None:
            registry.get(kind, name)
    segmentation = Segmentation(
        mode=args.segment,
        window_seconds=args.fragment_seconds,
        max_seconds=args.max_fragment_seconds,
        min_pause_seconds=args.min_pause,
    )
    subtitles = _subtitle_formats(args.subtitles)
    dubber = Dubber(
        asr=args.asr,
        translator=translator,
        synthesizer=synthesizer,
        source_language=args.source,
        target_language=args.target,
        voice=args.voice,
        device=args.device,
        asr_options=options["asr"],
        translator_options=options["translator"] if translator is not None else None,
        synthesizer_options=options["synthesizer"],
        fallback=args.fallback,
        fragment_timeout=args.fragment_timeout,
        max_inflight=args.max_inflight,
        # Room for the longest fragment the segmentation can make, padding included.
        max_fragment_seconds=max(30.0, args.fragment_seconds + 1, args.max_fragment_seconds + 1),
        registry=registry,
    )
    err = Console(stderr=True)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=args.quiet,
    )
    task = progress.add_task(_PHASES["decode"], total=None)

    def on_progress(event: FileProgress) -> None:
        if event.phase == "dub":
            progress.update(task, description=_PHASES["dub"], total=event.total, completed=event.done)
        else:
            progress.update(task, description=_PHASES.get(event.phase, event.phase))

    run = functools.partial(
        adub_file,
        dubber,
        args.input,
        args.output,
        segmentation=segmentation,
        subtitles=subtitles,
        original=None if args.original == "none" else args.original,
        original_level=args.original_level,
        sample_rate=args.sample_rate,
        audio_codec=args.audio_codec,
        on_progress=on_progress,
    )
    with progress:
        dubbed = anyio.run(run)
    counts = dubbed.counts
    t = dubbed.timings
    langs = f"{dubbed.source_language or '?'} → {dubbed.target_language}"
    print(
        f"dubbed {dubbed.input.name} ({dubbed.duration:.1f} s, {langs}): {len(dubbed.results)} fragments —"
        f" {counts[Status.SUCCESS]} success, {counts[Status.PARTIAL]} partial, {counts[Status.FAILED]} failed"
    )
    print(
        f"time: loading {t.get('load', 0):.1f} s, dubbing {t.get('dub', 0):.1f} s"
        f" (real-time factor {dubbed.real_time_factor:.2f}), total {t.get('total', 0):.1f} s"
    )
    print(f"wrote {dubbed.output}")
    for path in dubbed.subtitles:
        print(f"      {path}")
    for (start, _end), r in zip(dubbed.spans, dubbed.results, strict=True):
        if r.error is not None:
            print(f"  fragment {r.sequence_number} at {start:.1f} s: {r.error}", file=sys.stderr)
        elif r.warnings:
            print(
                f"  fragment {r.sequence_number} at {start:.1f} s: {'; '.join(r.warnings)}", file=sys.stderr
            )
    if counts[Status.FAILED] and not args.allow_failures:
        print(
            f"stsdub: {counts[Status.FAILED]} fragment(s) failed (kept as {args.fallback});"
            " pass --allow-failures to exit 0 anyway",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "plugins":
            return _cmd_plugins(args)
        if args.command == "models":
            return run_models(args)
        if args.command == "serve":
            return run_serve(args)
        return _cmd_dub(args)
    except StsdubError as exc:
        print(f"stsdub: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

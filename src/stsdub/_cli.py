"""The ``stsdub`` command: ``stsdub plugins`` and ``stsdub dub``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from ._core._languages import same_language
from ._core._values import Status
from ._models._cli import add_models_parser, run_models
from ._plugins._defaults import (
    AUTO,
    DEEPL_KEY_ENV,
    check_translator,
    configuration_needed,
    default_synthesizer,
    default_translator,
    translator_setup_hint,
)
from ._plugins._options import add_stage_option_argument
from ._plugins._registry import StageRegistry, get_plugin_manager
from ._recordings._report import RUSHED_TEMPO, fit_summary, write_timing_report
from .errors import ConfigurationError, ProjectError, StsdubError
from .ray._cli import add_ray_parser, run_ray
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
    add_ray_parser(sub)
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


def _voice_map(text: str) -> dict[str, str]:
    """``S1=anna,S2=ben`` → ``{"S1": "anna", "S2": "ben"}``."""
    voices: dict[str, str] = {}
    for item in text.split(","):
        speaker, eq, voice = item.partition("=")
        if not eq or not speaker.strip() or not voice.strip():
            raise argparse.ArgumentTypeError(f"expected SPEAKER=VOICE[,SPEAKER=VOICE...], got {text!r}")
        voices[speaker.strip()] = voice.strip()
    return voices


_PHASES = {
    "decode": "reading the input",
    "segment": "finding speech",
    "separate": "separating voice and background",
    "diarize": "telling speakers apart",
    "load": "loading models",
    "dub": "dubbing",
    "write": "writing",
    "transcribe": "transcribing",
    "translate": "translating",
}
#: Files a folder or glob given to ``stsdub dub`` contributes to a batch.
_MEDIA_SUFFIXES = frozenset(
    {".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".wma", ".aiff", ".aif"}
    | {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".wmv", ".flv"}
)


def _add_dub_parser(sub: Any) -> None:
    dub = sub.add_parser(
        "dub",
        help="dub an audio or video file",
        description=(
            "Dub an audio or video file. The output is as long as the input; a video output keeps"
            " the input's picture untouched. Subtitles are written next to the output."
        ),
    )
    dub.add_argument(
        "input",
        type=Path,
        nargs="*",
        help="audio or video file to dub (anything FFmpeg reads); several files, a folder or a"
        " quoted glob dub them all into the folder -o, with the models loaded once",
    )
    dub.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="dubbed file: .wav or .flac for audio; .mp4, .mkv, .mov or .webm keeps the input's picture;"
        " a folder for many inputs; optional with --resume",
    )
    dub.add_argument(
        "--from",
        dest="source",
        default=None,
        help="language of the speech (default: detect); the same as --to re-voices without translating",
    )
    dub.add_argument(
        "--to", dest="target", default=None, help="language to dub into (required, but with --resume)"
    )
    review = dub.add_argument_group("review and resume (see docs/projects.md)")
    review.add_argument(
        "--stop-after",
        choices=("transcribe", "translate"),
        default=None,
        help="save the project (<output stem>.stsdub/ beside the output) with transcript.srt /"
        " translation.srt after this phase and stop, for review",
    )
    review.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="PROJECT",
        help="continue a project folder (or its project.json) with its edits; only what changed is"
        " synthesized again",
    )
    review.add_argument(
        "--project", action="store_true", help="keep a project beside the output in a full run too"
    )
    review.add_argument(
        "--transcript-srt",
        type=Path,
        default=None,
        metavar="FILE",
        help="use these cues as the segments and their transcript (no speech recognition)",
    )
    review.add_argument(
        "--translation-srt",
        type=Path,
        default=None,
        metavar="FILE",
        help="use this translation (no translator); cues are matched to the segments by time",
    )
    stages = dub.add_argument_group("stages (see `stsdub plugins`)")
    stages.add_argument("--asr", default=None, help="speech recognizer (default: faster-whisper)")
    stages.add_argument(
        "--asr-model",
        default=None,
        metavar="NAME",
        help="its model: base (multilingual, the default when installed) or tiny.en (English only),"
        " both offline; a directory, or another size on a connected machine (= -O asr.model=NAME)",
    )
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
    stages.add_argument(
        "--diarizer",
        default=None,
        help="tell speakers apart (campplus; resemblyzer): fragments are cut at speaker changes and each"
        " speaker gets a voice of their own (see --voices; -O diarizer.num_speakers=N)",
    )
    stages.add_argument(
        "--voices",
        default=None,
        metavar="S1=VOICE,S2=VOICE",
        type=_voice_map,
        help="the voice of each speaker label; other speakers get distinct voices matched to"
        " their pitch (needs --diarizer)",
    )
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
    seg.add_argument(
        "--units",
        choices=("sentences", "fragments"),
        default="sentences",
        help="translate whole sentences, each once, with the ones before as context, and split"
        " them back over the fragments (default); fragments: each fragment alone",
    )
    out = dub.add_argument_group("output")
    out.add_argument(
        "--background",
        choices=("auto", "separate", "duck", "none"),
        default="auto",
        help="keep music and effects under the dub: the separator's background track, or the"
        " original ducked wherever anyone speaks (default auto: separate when --separator is"
        " given, else duck; none with --original mix)",
    )
    out.add_argument(
        "--separator",
        default=None,
        help="voice / background separator for --background separate (default there: demucs)",
    )
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
    run.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="REPORT.json",
        help="write how each segment was fitted to its time (speed, stretch, shortened, borrowed)",
    )


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
    from ._media import Segmentation
    from ._recordings._files import FileProgress, adub_file

    options: dict[str, dict[str, Any]] = {
        "asr": {},
        "translator": {},
        "synthesizer": {},
        "separator": {},
        "diarizer": {},
    }
    if args.resume is not None:
        _from_project(args, options)
    for kind, name, value in args.option:
        options[kind][name] = value
    if args.asr_model is not None:
        options["asr"]["model"] = args.asr_model
    if args.target is None:
        raise ConfigurationError("--to LANG is required (it may be left out with --resume)")
    args.asr = args.asr or "faster-whisper"
    pairs, batch = _inputs(args)
    translator = _choose_translator(args, options["translator"])
    synthesizer = args.synthesizer
    if synthesizer is None or synthesizer.lower() == AUTO:
        synthesizer = default_synthesizer(args.target, options["synthesizer"])
    # Unknown or uninstalled stages are reported now, not after the first model has loaded.
    registry = StageRegistry.from_plugin_manager(get_plugin_manager())
    separator = args.separator
    if separator is None and args.background == "separate":
        separator = "demucs"
    chosen = [("asr", args.asr), ("translator", translator), ("synthesizer", synthesizer)]
    if args.voices and args.diarizer is None:
        raise ConfigurationError("--voices maps speakers, and needs --diarizer to tell them apart")
    for kind, name in [*chosen, ("separator", separator), ("diarizer", args.diarizer)]:
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
        separator=separator,
        separator_options=options["separator"] if separator is not None else None,
        diarizer=args.diarizer,
        diarizer_options=options["diarizer"] if args.diarizer is not None else None,
        voices=args.voices,
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

    current = [""]  # the file being dubbed, in a batch

    def on_progress(event: FileProgress) -> None:
        description = current[0] + _PHASES.get(event.phase, event.phase)
        if event.phase in ("dub", "transcribe", "translate"):
            progress.update(task, description=description, total=event.total, completed=event.done)
        else:
            progress.update(task, description=description)

    file_options: dict[str, Any] = {
        "segmentation": segmentation,
        "subtitles": subtitles,
        "original": None if args.original == "none" else args.original,
        "original_level": args.original_level,
        "background": None if args.background == "auto" else args.background,
        "sample_rate": args.sample_rate,
        "audio_codec": args.audio_codec,
        "on_progress": on_progress,
        "project": True if args.project else None,
        "stop_after": args.stop_after,
        "resume": args.resume,
        "transcript_srt": args.transcript_srt,
        "translation_srt": args.translation_srt,
        "units": args.units,
    }
    if batch:
        if args.report is not None:
            raise ConfigurationError("--report describes one input; dub the files one at a time for reports")
        with progress:
            return _run_batch(args, dubber, pairs, file_options, current)
    run = functools.partial(adub_file, dubber, *pairs[0], **file_options)
    with progress:
        dubbed = anyio.run(run)
    if dubbed.project is not None and dubbed.output is None:
        return _print_stopped(dubbed)
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
    fit = fit_summary(dubbed.results)
    if fit["dubbed"]:
        print(
            f"fit: {fit['shortened']} shortened, {fit['borrowed']} borrowed time"
            f" ({fit['borrowed_seconds']:.1f} s), {fit['rushed']} rushed (tempo > {RUSHED_TEMPO:g}×),"
            f" mean tempo {fit['mean_tempo']:.2f}×"
        )
    print(f"wrote {dubbed.output}")
    for path in dubbed.subtitles:
        print(f"      {path}")
    if dubbed.project is not None:
        print(f"      {dubbed.project.path}")
    if args.report is not None:
        print(f"      {write_timing_report(args.report, dubbed)}")
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


def _from_project(args: argparse.Namespace, options: dict[str, dict[str, Any]]) -> None:
    """Fill in what --resume leaves out from the project: languages, stages, their options."""
    from ._recordings._project import DubProject

    project = DubProject.load(args.resume)
    if args.target is not None and not same_language(args.target, project.target_language):
        raise ProjectError(
            f"{project.path} dubs into {project.target_language}; it cannot be resumed --to {args.target}"
        )
    args.target = project.target_language
    args.source = args.source or project.source_language
    registry = StageRegistry.from_plugin_manager(get_plugin_manager())
    known = {(spec.kind, spec.name) for spec in registry}
    for kind in ("asr", "translator", "synthesizer"):
        name = project.options.get(kind)
        # A stage given as an object from Python has no name to load it by: the rule applies.
        if getattr(args, kind) is None and isinstance(name, str) and (kind, name) in known:
            setattr(args, kind, name)
            options[kind].update(project.options.get(f"{kind}_options") or {})
    if args.voice is None and isinstance(project.options.get("voice"), str):
        args.voice = project.options["voice"]
    if args.output is None and project.output_path is None:
        raise ConfigurationError(f"{project.path} names no output file: give one with -o")


def _inputs(args: argparse.Namespace) -> tuple[list[tuple[Path | None, Path | None]], bool]:
    """(input, output) pairs, and whether it is a batch (several files, folders or globs)."""
    import glob

    from ._media._output import AUDIO_SUFFIXES, VIDEO_SUFFIXES

    given: list[Path] = list(args.input)
    if not given:
        if args.resume is None:
            raise ConfigurationError("give an input file (or a folder, or a glob), or --resume PROJECT")
        return [(None, args.output)], False
    single = (
        len(given) == 1 and not given[0].is_dir() and (given[0].exists() or not glob.has_magic(str(given[0])))
    )
    if single:
        if args.output is None and args.resume is None:
            raise ConfigurationError("give the dubbed file with -o OUTPUT")
        return [(given[0], args.output)], False
    if args.resume is not None or args.transcript_srt is not None or args.translation_srt is not None:
        raise ConfigurationError(
            "--resume, --transcript-srt and --translation-srt take one input file, not many"
        )
    files: list[Path] = []
    for item in given:
        if item.is_dir():
            files += sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in _MEDIA_SUFFIXES)
        elif item.exists():
            files.append(item)
        else:
            files += sorted(Path(p) for p in glob.glob(str(item)) if Path(p).is_file())
    if not files:
        raise ConfigurationError(f"no media files in {' '.join(map(str, given))}")
    if args.output is None:
        raise ConfigurationError("give the folder for the dubbed files with -o OUTDIR")
    if args.output.exists() and not args.output.is_dir():
        raise ConfigurationError(
            f"-o {args.output}: many inputs are dubbed into a folder, and this is a file"
        )
    pairs: list[tuple[Path | None, Path | None]] = []
    seen: dict[Path, Path] = {}
    for file in dict.fromkeys(files):
        # Keep the container where the output can be one; anything else becomes WAV.
        suffix = file.suffix.lower()
        out = args.output / (file.stem + (suffix if suffix in {*AUDIO_SUFFIXES, *VIDEO_SUFFIXES} else ".wav"))
        if out in seen:
            raise ConfigurationError(f"{seen[out]} and {file} would both be dubbed into {out}")
        seen[out] = file
        pairs.append((file, out))
    return pairs, True


def _run_batch(
    args: argparse.Namespace,
    dubber: Any,
    pairs: list[tuple[Path | None, Path | None]],
    file_options: dict[str, Any],
    current: list[str],
) -> int:
    """Dub many files with the models loaded once; one line per file and a summary."""
    import anyio

    from ._recordings._files import DubbedFile, adub_file

    outcomes: list[tuple[Path | None, DubbedFile | StsdubError]] = []

    async def run() -> None:
        async with dubber:
            for n, (source, output) in enumerate(pairs, 1):
                current[0] = f"[{n}/{len(pairs)}] {source.name if source else ''}: "
                try:
                    outcomes.append((source, await adub_file(dubber, source, output, **file_options)))
                except StsdubError as exc:  # this file; the others still get their turn
                    outcomes.append((source, exc))

    anyio.run(run)
    failed_files = failed_fragments = 0
    for source, outcome in outcomes:
        if isinstance(outcome, StsdubError):
            failed_files += 1
            print(f"failed  {source}: {outcome}", file=sys.stderr)
            continue
        counts = outcome.counts
        failed_fragments += counts[Status.FAILED]
        if outcome.output is None and outcome.project is not None:
            print(f"stopped {source} after {args.stop_after}: review {outcome.project.folder}")
            continue
        print(
            f"dubbed  {source} → {outcome.output} ({outcome.duration:.1f} s):"
            f" {len(outcome.results)} fragments — {counts[Status.SUCCESS]} success,"
            f" {counts[Status.PARTIAL]} partial, {counts[Status.FAILED]} failed"
        )
    done = len(outcomes) - failed_files
    print(
        f"{len(outcomes)} files: {done} done, {failed_files} failed;"
        f" {failed_fragments} fragment(s) failed in the files done"
    )
    if failed_files:
        return 1
    if failed_fragments and not args.allow_failures:
        print("stsdub: fragments failed; pass --allow-failures to exit 0 anyway", file=sys.stderr)
        return 1
    return 0


def _print_stopped(dubbed: Any) -> int:
    project = dubbed.project
    texts = sum(1 for s in project.segments if s.transcript)
    print(
        f"stopped after {project.phase}: {dubbed.input.name} ({dubbed.duration:.1f} s,"
        f" {project.source_language or '?'} → {project.target_language}), {len(project.segments)} segments,"
        f" {texts} with speech"
    )
    print(f"project {project.path}")
    for path in dubbed.subtitles:
        print(f"review  {path}")
    print(f"then:   stsdub dub --resume {project.folder}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "plugins":
            return _cmd_plugins(args)
        if args.command == "models":
            return run_models(args)
        if args.command == "ray":
            return run_ray(args)
        if args.command == "serve":
            return run_serve(args)
        return _cmd_dub(args)
    except StsdubError as exc:
        print(f"stsdub: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The ``stsdub`` command: ``stsdub plugins`` and ``stsdub dub``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from ._model import Fragment, Status
from ._plugins import StageRegistry, get_plugin_manager
from .errors import StsdubError


def _parse_option(text: str) -> tuple[str, str, Any]:
    """``asr.model=small`` → ("asr", "model", "small"); values are JSON when they parse."""
    key, sep, raw = text.partition("=")
    kind, dot, name = key.partition(".")
    if not sep or not dot or kind not in ("asr", "translator", "synthesizer") or not name:
        raise argparse.ArgumentTypeError(f"expected KIND.NAME=VALUE with KIND asr|translator|synthesizer, got {text!r}")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return kind, name, value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stsdub", description="Dub speech into another language.")
    parser.add_argument("--version", action="version", version=f"stsdub {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    plugins = sub.add_parser("plugins", help="list every registered stage (kind, name, package)")
    plugins.add_argument("--json", action="store_true", help="print JSON instead of a table")

    dub = sub.add_parser("dub", help="dub an audio file")
    dub.add_argument("input", type=Path, help="audio file to dub (WAV, FLAC, OGG…)")
    dub.add_argument("-o", "--output", type=Path, required=True, help="where to write the dubbed audio")
    dub.add_argument("--from", dest="source", default=None, help="source language (default: detect)")
    dub.add_argument("--to", dest="target", required=True, help="target language")
    dub.add_argument("--asr", default="faster-whisper")
    dub.add_argument("--translator", default="deepl")
    dub.add_argument("--synthesizer", default="piper")
    dub.add_argument("--voice", default=None)
    dub.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    dub.add_argument("--fragment-seconds", type=float, default=6.0, help="length of fixed windows")
    dub.add_argument(
        "--option", "-O", action="append", type=_parse_option, default=[], metavar="KIND.NAME=VALUE",
        help="stage option, e.g. -O asr.model=small (repeatable)",
    )
    dub.add_argument("--allow-failures", action="store_true", help="exit 0 even when fragments failed")
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
        status = "ready" if row["available"] else f"needs: {row['install']}"
        table.add_row(row["kind"], row["name"], row["package"] or "?", status, row["description"])
    Console().print(table)
    return 0


def _windows(samples: Any, rate: int, seconds: float) -> Iterator[Fragment]:
    step = max(1, round(seconds * rate))
    for i, start in enumerate(range(0, samples.size, step)):
        yield Fragment(i, samples[start : start + step], rate, stream_id="default")


def _cmd_dub(args: argparse.Namespace) -> int:
    import numpy as np
    import soundfile
    from rich.progress import Progress

    from ._dubber import Dubber

    options: dict[str, dict[str, Any]] = {"asr": {}, "translator": {}, "synthesizer": {}}
    for kind, name, value in args.option:
        options[kind][name] = value
    try:
        data, rate = soundfile.read(str(args.input), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
        raise StsdubError(f"cannot read {args.input}: {exc}") from exc
    samples = np.ascontiguousarray(data.mean(axis=1, dtype=np.float32))
    if samples.size == 0:
        raise StsdubError(f"{args.input} holds no audio")
    fragments = list(_windows(np.clip(samples, -1.0, 1.0), int(rate), args.fragment_seconds))
    same = args.source is not None and args.source.split("-")[0] == args.target.split("-")[0]
    dubber = Dubber(
        asr=args.asr,
        translator=None if same else args.translator,
        synthesizer=args.synthesizer,
        source_language=args.source,
        target_language=args.target,
        voice=args.voice,
        device=args.device,
        asr_options=options["asr"],
        translator_options=options["translator"] if not same else None,
        synthesizer_options=options["synthesizer"],
    )
    started = time.perf_counter()
    results = []
    with dubber, Progress(transient=True) as progress:
        task = progress.add_task("dubbing", total=len(fragments))
        for result in dubber.dub_sync(fragments):
            results.append(result)
            progress.advance(task)
    elapsed = time.perf_counter() - started
    out = np.concatenate([r.audio.samples for r in results])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(args.output), out, results[0].audio.sample_rate)
    counts = {s: sum(r.status is s for r in results) for s in Status}
    duration = samples.size / rate
    print(
        f"{len(results)} fragments: {counts[Status.SUCCESS]} success, {counts[Status.PARTIAL]} partial,"
        f" {counts[Status.FAILED]} failed; {duration:.1f} s of audio in {elapsed:.1f} s"
        f" (real-time factor {elapsed / duration:.2f}); wrote {args.output}"
    )
    for r in results:
        if r.error is not None:
            print(f"  fragment {r.sequence_number}: {r.error}", file=sys.stderr)
    return 1 if counts[Status.FAILED] and not args.allow_failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "plugins":
            return _cmd_plugins(args)
        return _cmd_dub(args)
    except StsdubError as exc:
        print(f"stsdub: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

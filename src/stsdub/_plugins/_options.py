"""Stage options given on a command line as ``KIND.NAME=VALUE``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .._core._spec import STAGE_KINDS

__all__ = ["add_stage_option_argument", "parse_stage_option"]


def parse_stage_option(text: str) -> tuple[str, str, Any]:
    """``asr.model=small`` → ``("asr", "model", "small")``; values are JSON when they parse."""
    key, sep, raw = text.partition("=")
    kind, dot, name = key.partition(".")
    if not sep or not dot or kind not in STAGE_KINDS or not name:
        raise argparse.ArgumentTypeError(
            f"expected KIND.NAME=VALUE with KIND {'|'.join(STAGE_KINDS)}, got {text!r}"
        )
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return kind, name, value


def add_stage_option_argument(group: Any, example: str = "asr.model=small") -> None:
    """``--option/-O KIND.NAME=VALUE`` (repeatable) on an argparse parser or group."""
    group.add_argument(
        "--option",
        "-O",
        action="append",
        type=parse_stage_option,
        default=[],
        metavar="KIND.NAME=VALUE",
        help=f"stage option, e.g. -O {example} (repeatable; values are JSON when they parse)",
    )

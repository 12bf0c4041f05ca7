"""``stsdub ray deploy``: deploy a stage as a Ray Serve application.

Nothing here imports Ray until the command runs, so the ``stsdub`` command stays quick and
works without the ``ray`` extra.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .._core._spec import STAGE_KINDS
from ..errors import ConfigurationError, StsdubError

__all__ = ["add_ray_parser", "parse_option", "run_ray"]


def parse_option(text: str) -> tuple[str, Any]:
    """``model=small`` → ``("model", "small")``; values are JSON when they parse."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


def _autoscaling(text: str) -> dict[str, int]:
    low, sep, high = text.partition(":")
    try:
        bounds = int(low), int(high)
    except ValueError:
        bounds = (-1, -1)
    if not sep or not 0 <= bounds[0] <= bounds[1] or bounds[1] < 1:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX replicas, e.g. 1:4, got {text!r}")
    return {"min_replicas": bounds[0], "max_replicas": bounds[1]}


def add_ray_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``ray`` (with ``deploy``) to an ``argparse`` sub-parser collection.

    Returns:
        The ``ray`` parser; :func:`run_ray` runs the command its arguments were parsed for.
    """
    ray = subparsers.add_parser(
        "ray",
        help="deploy stages as Ray Serve applications shared by many hosts (needs stsdub[ray])",
        description="Stages as a shared pool on Ray Serve; see docs/scale-out.md.",
    )
    sub = ray.add_subparsers(dest="ray_command", required=True, metavar="{deploy}")
    deploy = sub.add_parser(
        "deploy",
        help="deploy a registered stage as a Serve application and wait until it is ready",
        description=(
            "Deploy the stage KIND NAME (as `stsdub plugins` lists them; it must be installed where"
            " the replicas run) as the Serve application --app-name. Hosts use it by name:"
            " Dubber(asr='ray:APP'). The application keeps running after this command exits."
        ),
    )
    deploy.add_argument("kind", choices=STAGE_KINDS, help="the stage kind")
    deploy.add_argument("name", help="the registered stage, e.g. faster-whisper")
    deploy.add_argument("--app-name", default=None, help="the application's name (default stsdub-KIND)")
    deploy.add_argument(
        "--address", default="auto", help="the Ray cluster (ray.init address; default auto: this node's)"
    )
    deploy.add_argument(
        "--option",
        "-O",
        action="append",
        type=parse_option,
        default=[],
        metavar="KEY=VALUE",
        help="stage option, e.g. -O model=small (repeatable; values are JSON when they parse)",
    )
    scale = deploy.add_mutually_exclusive_group()
    scale.add_argument("--num-replicas", type=int, default=None, help="fixed number of replicas (default 1)")
    scale.add_argument(
        "--autoscale",
        type=_autoscaling,
        default=None,
        metavar="MIN:MAX",
        help="autoscale between MIN and MAX",
    )
    deploy.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per replica (fractions share one)")
    deploy.add_argument("--num-cpus", type=float, default=None, help="CPUs per replica (Serve's default: 1)")
    deploy.add_argument("--device", default="auto", help="the replicas' device: auto, cpu, cuda, cuda:N")
    deploy.add_argument("--max-batch-size", type=int, default=8, help="largest batch for *_batch methods")
    deploy.add_argument(
        "--batch-wait-s", type=float, default=0.01, help="seconds a replica waits to fill one"
    )
    deploy.add_argument(
        "--max-ongoing-requests", type=int, default=None, help="requests per replica at once (default 8)"
    )
    deploy.add_argument(
        "--max-queued-requests", type=int, default=64, help="requests a caller may queue before refusals"
    )
    deploy.set_defaults(func=_cmd_deploy)
    return ray  # type: ignore[no-any-return]


def run_ray(args: argparse.Namespace) -> int:
    """Run the ``ray`` command ``args`` were parsed for; returns the exit status.

    0 when the application is ready; 1 when the deployment failed (the reason on stderr);
    2 for a bad argument or a missing Ray.
    """
    status: int = args.func(args)
    return status


def _cmd_deploy(args: argparse.Namespace) -> int:
    options = dict(args.option)
    app_name = args.app_name or f"stsdub-{args.kind}"
    try:
        from . import _serve

        _serve.deploy(
            args.kind,
            args.name,
            app_name=app_name,
            address=args.address,
            options=options,
            device=args.device,
            num_replicas=args.num_replicas,
            autoscaling=args.autoscale,
            num_gpus=args.num_gpus,
            num_cpus=args.num_cpus,
            max_batch_size=args.max_batch_size,
            batch_wait_s=args.batch_wait_s,
            max_ongoing_requests=args.max_ongoing_requests,
            max_queued_requests=args.max_queued_requests,
        )
    except StsdubError as exc:
        print(f"stsdub ray deploy: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigurationError) else 1
    print(f"{app_name}: {args.kind} {args.name!r} is ready; use it as {args.kind}='ray:{app_name}'")
    return 0

"""``python -m stsdub.server``: the same as ``stsdub serve``."""

from __future__ import annotations

import argparse
import sys

from ._cli import add_serve_command, run_serve


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m stsdub.server")
    add_serve_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", *sys.argv[1:]])
    return run_serve(args)


if __name__ == "__main__":
    sys.exit(main())

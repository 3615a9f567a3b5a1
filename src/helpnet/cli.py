"""The ``helpnet`` command: one subcommand per pipeline stage.

Each stage module defines ``register(subparsers)``, which adds its subcommands and sets
``func`` on them. Every subcommand takes explicit input and output paths, so the workflow rules
and a user at the shell call the same thing.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Modules that register subcommands, in the order of the pipeline.
STAGE_MODULES = (
    "helpnet.data.download",
    "helpnet.data.demo",
    "helpnet.data.align",
    "helpnet.edges.cli",
    "helpnet.data.splits",
    "helpnet.training.cli",
    "helpnet.evaluation.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="helpnet", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in STAGE_MODULES:
        module = importlib.import_module(name)
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        result = args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        # Input errors carry the file, the value and the fix in their message.
        logging.getLogger("helpnet").error("%s", error)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())

"""The ``helpnet`` command: one subcommand per pipeline stage.

Each stage module defines ``register(subparsers)``, which adds its subcommands and sets
``func`` on them. Every subcommand takes explicit input and output paths, so the workflow rules
and a user at the shell call the same thing.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import sys

# Modules that register subcommands, in the order of the pipeline, with the subcommands each
# defines. A call imports only the module of its subcommand, so `helpnet fetch` does not pay
# for importing torch; `helpnet --help` imports them all.
STAGE_MODULES = {
    "helpnet.data.download": ("fetch",),
    "helpnet.data.demo": ("demo",),
    "helpnet.data.align": ("align",),
    "helpnet.edges.cli": ("edges", "edges-qc"),
    "helpnet.data.splits": ("split",),
    "helpnet.training.cli": ("preprocess", "train", "predict"),
    "helpnet.evaluation.cli": ("evaluate", "summarize", "compare", "plot"),
}


def _modules_for(argv: list[str]) -> list[str]:
    """Return the stage modules needed to parse ``argv``: the subcommand's, or all of them."""
    command = next((word for word in argv if not word.startswith("-")), None)
    for module, commands in STAGE_MODULES.items():
        if command in commands:
            return [module]
    return list(STAGE_MODULES)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """Build the ``helpnet`` parser; with ``argv``, register only the subcommand it names."""
    parser = argparse.ArgumentParser(prog="helpnet", description="HELPNet workflow stages, one subcommand each.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _modules_for(argv) if argv is not None else STAGE_MODULES:
        module = importlib.import_module(name)
        module.register(subparsers)
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("helpnet")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
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

"""The README's promises about the command line: every stage in the table with its required options."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from helpnet.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def stage_table_rows() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Stages and the `helpnet` command", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `")]


def leaf_parsers() -> dict[str, argparse.ArgumentParser]:
    """Map 'predict', 'plot boxplots', ... to their parsers."""
    def children(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}

    leaves = {}
    for name, parser in children(build_parser()).items():
        nested = children(parser)
        if nested:
            leaves.update({f"{name} {kind}": sub for kind, sub in nested.items()})
        else:
            leaves[name] = parser
    return leaves


LEAVES = leaf_parsers()


@pytest.mark.parametrize("command", sorted(LEAVES))
def test_stage_table_lists_required_options(command):
    rows = [row for row in stage_table_rows() if f"`helpnet {command} " in row]
    assert rows, f"helpnet {command} is missing from the README's stage table"
    required = [
        action.option_strings[-1]
        for action in LEAVES[command]._actions
        if action.required and action.option_strings
    ]
    usage = rows[0].split(f"`helpnet {command} ", 1)[1].split("`", 1)[0]
    for option in required:
        assert f"{option} " in usage + " ", f"helpnet {command}: required {option} missing from the README table"


def test_readme_keeps_its_main_sections():
    headings = {line.strip() for line in README.read_text(encoding="utf-8").splitlines() if line.startswith("#")}
    for heading in ("## Quick start", "## Configuration", "## Datasets", "### Your own data",
                    "## Rerunning one fold", "## GPU workstations and SLURM clusters", "## Tests and benchmarks"):
        assert heading in headings, heading

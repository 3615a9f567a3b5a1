"""The `helpnet` command: subcommand registry, lazy imports and --version."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest

from helpnet.cli import STAGE_MODULES, main


def test_stage_modules_list_the_subcommands_they_register():
    for name, commands in STAGE_MODULES.items():
        parser = argparse.ArgumentParser()
        subparsers = parser.add_subparsers()
        importlib.import_module(name).register(subparsers)
        assert tuple(subparsers.choices) == commands, name


def test_fetch_does_not_import_torch():
    # A download job should not pay for importing torch; --help of a subcommand parses only it.
    code = (
        "import sys\n"
        "from helpnet.cli import main\n"
        "try:\n"
        "    main(['fetch', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_version_and_unknown_command(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith("helpnet ")
    with pytest.raises(SystemExit) as stop:
        main(["no-such-stage"])
    assert stop.value.code == 2
    assert "invalid choice: 'no-such-stage'" in capsys.readouterr().err

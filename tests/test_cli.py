"""The `unitune` command line: dispatch, help, and one-line errors instead of tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from evaluators.cli import COMMANDS, main
from evaluators.errors import UserError


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_every_mapped_module_plugs_in():
    import importlib

    for target in COMMANDS.values():
        for module_name in [target] if isinstance(target, str) else target.values():
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError:
                continue  # reported as "not built yet" by the CLI
            assert callable(module.add_arguments) and callable(module.run), module_name
            assert module.__doc__ and module.__doc__.strip(), f"{module_name} needs a docstring (help text)"


def test_user_error_is_one_line_exit_2(monkeypatch, caplog):
    import evaluators.cli as cli

    def boom(args):
        raise UserError("`--thing` expected a file, got 'nope'")

    monkeypatch.setattr(cli, "_not_built", lambda name: boom(None))
    monkeypatch.setitem(cli.COMMANDS, "fake", "no_such_module_for_test")
    assert cli.main(["fake"]) == 2
    assert "`--thing` expected a file" in caplog.text


def test_console_script_runs():
    result = subprocess.run(
        [sys.executable, "-m", "evaluators.cli", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "tiny-model" in result.stdout

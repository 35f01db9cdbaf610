"""The code's shape: short functions, and the CLI's shared options declared once."""

from __future__ import annotations

import ast

from helpers import ROOT

MAX_FUNCTION_LINES = 60


def _functions(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_no_function_in_rotnet_is_over_60_lines():
    long = [f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in sorted((ROOT / "rotnet").rglob("*.py")) for node in _functions(path)
            if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, long


def test_the_shared_cli_options_are_declared_once():
    """Only rotnet/cli_options.py spells the options every training command shares; the
    other command modules (cli.py, cli_pipeline.py) take them from there."""
    shared = {"--data-root", "--epochs", "--device", "--set", "--track/--no-track"}
    commands = [path for path in (ROOT / "rotnet").glob("cli*.py") if path.name != "cli_options.py"]
    assert len(commands) >= 2
    literals = [node.value for path in commands for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    assert not shared & set(literals), shared & set(literals)

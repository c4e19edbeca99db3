"""Every option of every ``parley`` command says what it does in ``--help``."""

from __future__ import annotations

import argparse

import pytest

from loadgen import bot
from loadgen.load import cli as load_run
from parley import cli

PARSERS = {
    "parley": cli.build_main_parser,
    "parley serve": cli.build_serve_parser,
    "parley bot": bot.build_parser,
    "parley load": load_run.build_parser,
}


def _undocumented(parser: argparse.ArgumentParser) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if not (choice.help or "").strip():
                    missing.append(f"command {choice.dest}")
            continue
        if action.help == argparse.SUPPRESS:
            continue
        if not (action.help or "").strip():
            missing.append("/".join(action.option_strings) or action.dest)
    return missing


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_option_has_help(name: str) -> None:
    assert _undocumented(PARSERS[name]()) == [], f"{name}: options without help text"


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_help_renders_without_format_escapes(name: str) -> None:
    text = PARSERS[name]().format_help()
    assert "%%" not in text, text
    assert "%(" not in text, text


def test_the_main_help_lists_each_command_with_a_line() -> None:
    text = cli.build_main_parser().format_help()
    for command, summary in cli.COMMANDS.items():
        line = next((ln for ln in text.splitlines() if ln.strip().startswith(command)), "")
        assert summary in line, (command, text)

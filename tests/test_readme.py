"""The README and --help stay true: the config reference and every command's documentation."""

from __future__ import annotations

import argparse
import re

import pytest
from conftest import REPO

from appliance.cli import build_parser
from appliance.config import reference_markdown
from appliance.panel.indicator import vocabulary_markdown

README = (REPO / "README.md").read_text()


def test_the_readme_config_reference_is_the_one_generated_from_the_dataclasses():
    block = re.search(r"<!-- config-reference:[^\n]*-->\n(.*?)<!-- end config-reference -->", README, re.S)
    assert block, "README.md lost its config-reference markers"
    assert block.group(1) == reference_markdown(), "run `appliance config reference` and paste it into README.md"


def test_the_readme_led_table_is_the_one_the_code_plays():
    block = re.search(r"<!-- led-vocabulary:[^\n]*-->\n(.*?)<!-- end led-vocabulary -->", README, re.S)
    assert block, "README.md lost its led-vocabulary markers"
    assert block.group(1) == vocabulary_markdown()


def _commands(parser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, prefix + (name,))
    if prefix and not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
        yield prefix, parser


COMMANDS = list(_commands(build_parser()))


def test_there_are_commands_to_check():
    assert {" ".join(name) for name, _ in COMMANDS} >= {"run", "demo", "config check", "config show",
                                                        "models list", "models fetch", "models verify",
                                                        "classify", "captures", "bench"}


@pytest.mark.parametrize("name, parser", COMMANDS, ids=[" ".join(n) for n, _ in COMMANDS])
def test_every_command_has_help_with_an_example_and_is_in_the_readme(name, parser):
    assert parser.description and "Example:" in parser.description
    assert f"appliance {' '.join(name)}" in parser.description
    assert f"appliance {' '.join(name)}" in README

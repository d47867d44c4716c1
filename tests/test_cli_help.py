"""Every CLI command documents itself: --help lists its fields and shows an example invocation."""

from __future__ import annotations

import argparse
import json
import re
import shlex

import pytest

from chalicelib import operator
from tooling import cli

# The commands that are not operator actions, and the arguments each --help must name.
OTHER_COMMANDS: dict[str, list[str]] = {
    "set-password": ["USER", "--password"],
    "signing-keys": [],
    "init-secrets": [],
    "rotate-signing-key": [],
    "verify-license": ["FILE", "--public-key", "--hostids"],
    "provision": ["FILE|-"],
    "provisioning-show": ["ORDER_ID", "LINE_ITEM", "--source", "--shop"],
    "invoke": ["NAME", "FILE|-"],
}


def commands() -> list[str]:
    subcommands = next(action for action in cli.build_parser()._actions
                       if isinstance(action, argparse._SubParsersAction))
    return list(subcommands.choices)


def help_of(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as caught:
        cli.main([command, "--help"])
    assert caught.value.code in (0, None)
    captured = capsys.readouterr()
    assert captured.err == ""
    return captured.out


def test_every_command_is_an_operator_action_or_listed_here() -> None:
    assert sorted(commands()) == sorted([*operator.ACTIONS.names, *OTHER_COMMANDS])


@pytest.mark.parametrize("command", commands())
def test_every_command_has_help_with_an_example_and_its_fields(command: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of(command, capsys)
    assert "example" in text.lower()
    if command in OTHER_COMMANDS:
        names = OTHER_COMMANDS[command]
        assert re.search(rf"^  {re.escape(cli.PROG)} (--stage \S+ )?{command}( |$)", text, re.MULTILINE), text
    else:
        action = operator.ACTIONS[command]
        names = [name for field in action.fields for name in (field.option or field.metavar, field.name)]
        assert cli.example_command(action) in text
        assert json.dumps(action.example, ensure_ascii=False) in text  # the same as an operator event
    for name in names:
        assert name in text, f"{command} --help does not name {name}"


@pytest.mark.parametrize("name", operator.ACTIONS.names)
def test_each_actions_example_command_parses_into_that_action(name: str) -> None:
    action = operator.ACTIONS[name]
    argv = shlex.split(cli.example_command(action))[3:]  # after "python -m tooling.cli"
    args = cli.build_parser().parse_args(argv)
    assert args.run.func is cli.run_action and args.run.args == (action,)
    for field in action.fields:
        value = getattr(args, field.name)
        if field.secret:
            assert value is None  # asked for, never shown on a command line
        elif field.cli_example is not None:
            assert value == field.cli_example
        else:
            assert value == field.example


def test_the_cli_help_names_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["--help"])
    assert caught.value.code == 0
    text = capsys.readouterr().out
    for command in commands():
        assert command in text

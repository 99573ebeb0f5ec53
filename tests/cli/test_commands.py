"""Every ``tailor`` command takes ``--home`` (issue #10, README truth pass), except the commands
that work on files alone and never touch a workspace, which are named here."""

from __future__ import annotations

import typer

from cli.app import app

#: Commands that read and write only the files they are given.
FILE_ONLY = frozenset({"fit-predict"})


def _commands(command, path=()):
    subcommands = getattr(command, "commands", None)
    if subcommands:
        for name, sub in subcommands.items():
            yield from _commands(sub, (*path, name))
    else:
        yield " ".join(path), command


def test_every_workspace_command_takes_home() -> None:
    commands = dict(_commands(typer.main.get_command(app)))
    assert len(commands) >= 25, sorted(commands)
    without = {
        name
        for name, command in commands.items()
        if "--home" not in {opt for param in command.params for opt in getattr(param, "opts", [])}
    }
    assert without == FILE_ONLY, sorted(without)

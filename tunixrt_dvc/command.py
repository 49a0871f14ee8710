"""The click classes every `tunixrt` command is made of, and the options they share.

The library raises plain exceptions (`tunixrt_dvc.errors`); these classes are the one place that
turns them into click errors: a message on stderr and the error's exit status. The command table
(`tunixrt_dvc.cli`) imports the commands; the commands import this, never the table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from tunixrt_dvc.errors import TunixrtError
from tunixrt_dvc.params import PARAMS_FILE


class _LibraryError(click.ClickException):
    def __init__(self, error: TunixrtError):
        super().__init__(str(error))
        self.exit_code = error.exit_code


class _ReportsLibraryErrors:
    """Mixin for click commands: library errors become click errors with their exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)  # type: ignore[misc]
        except TunixrtError as e:
            raise _LibraryError(e) from None


class Command(_ReportsLibraryErrors, click.Command):
    """A `tunixrt` command (`@click.command(cls=Command)`)."""


class Group(_ReportsLibraryErrors, click.Group):
    """A `tunixrt` group of commands; its subcommands are `Command`s."""

    command_class = Command


def params_option(help: str = "Parameters file.") -> Callable:
    """The `--params FILE` option every stage takes (into the `params_file` argument)."""
    return click.option(
        "--params",
        "params_file",
        default=PARAMS_FILE,
        show_default=True,
        type=click.Path(dir_okay=False),
        help=help,
    )

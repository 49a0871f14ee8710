"""`tunixrt`: every DVC stage as a command, plus trace-store tools and the benchmark.

The library raises plain exceptions (`tunixrt_dvc.errors`); this is the one place that turns them
into click errors: a message on stderr and the error's exit status.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import click

from tunixrt_dvc.errors import TunixrtError
from tunixrt_dvc.params import PARAMS_FILE

# Commands are imported on use, so `tunixrt export --help` does not pay for importing JAX.
COMMANDS = {
    "corpus": "stages.corpus:main",
    "export": "stages.export:main",
    "format": "stages.format:main",
    "train": "stages.train:main",
    "grpo": "stages.grpo:main",
    "eval": "stages.eval:main",
    "report": "stages.report:main",
    "traces": "tunixrt_dvc.traces.cli:traces",
    "sweep": "tunixrt_dvc.sweep.cli:sweep",
    "model": "tunixrt_dvc.model.cli:model",
    "plan": "tunixrt_dvc.model.cli:plan_command",
    "bench": "tunixrt_dvc.bench.cli:main",
}


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


class LazyGroup(Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup)
@click.version_option(package_name="tunixrt-dvc")
def main() -> None:
    """Reproducible Gemma SFT on reasoning traces with Tunix, driven by DVC."""


if __name__ == "__main__":
    main()

"""`tunixrt`: the command table. Every DVC stage is a command, plus the trace-store tools, the
sweep statistics, the memory plan, model export and the benchmark.

Commands are imported on use (so `tunixrt export --help` does not pay for importing JAX); they are
built from `tunixrt_dvc.command` and never import this table back.
"""

from __future__ import annotations

import importlib

import click

from tunixrt_dvc.command import Group

COMMANDS = {
    "corpus": "stages.corpus:main",
    "weights": "stages.weights:main",
    "export": "stages.export:main",
    "format": "stages.format:main",
    "train": "stages.train:main",
    "grpo": "stages.grpo:main",
    "eval": "stages.eval:main",
    "report": "stages.report:main",
    "traces": "tunixrt_dvc.traces.cli:traces",
    "sweep": "tunixrt_dvc.sweep.cli:sweep",
    "model": "tunixrt_dvc.model.cli:model",
    "plan": "tunixrt_dvc.sft.cli:plan_command",
    "bench": "tunixrt_dvc.bench.cli:main",
}


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

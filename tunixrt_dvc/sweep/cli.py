"""`tunixrt sweep`: results across seeds, from the DVC experiments of this repository.

dvc exp run --queue -S 'seed=range(0,5)' && dvc queue start   # wait: dvc queue status
tunixrt sweep summary                     # per config: every seed, mean, sd, min, 95% CI
tunixrt sweep compare format.recipe=answer_only format.recipe=reasoning_tags
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import click

from tunixrt_dvc.command import Group
from tunixrt_dvc.errors import InvalidInput, Problem
from tunixrt_dvc.io import write_json
from tunixrt_dvc.sweep.configs import HEADLINE, SEED, Config, group_by_config, parse_selector
from tunixrt_dvc.sweep.configs import select as select_runs
from tunixrt_dvc.sweep.runs import Run, read_exp_show, read_runs, runs_from_exp_show
from tunixrt_dvc.sweep.stats import compare


@click.group(cls=Group)
def sweep() -> None:
    """Summarize and compare runs across seeds (DVC experiments and commits)."""


def _exp_show_option(f):
    return click.option(
        "--exp-show",
        "exp_show",
        multiple=True,
        type=click.Path(dir_okay=False),
        help="Read runs from this saved `dvc exp show --json` output, or from a `tunixrt sweep "
        "summary --json` file (results/seed_sweep.json), instead of this repository's `dvc exp "
        "show`; repeat to put several together (other clones, other machines).",
    )(f)


def _metric_option(f):
    return click.option(
        "--metric",
        "metrics",
        multiple=True,
        help="A metric key (`after.accuracy`, or `FILE:KEY`); repeat for more "
        f"[default: {', '.join(HEADLINE)}].",
    )(f)


def _runs(sources: tuple[str, ...]) -> list[Run]:
    runs = [r for s in sources for r in read_runs(s)]
    if not sources:
        runs = runs_from_exp_show(read_exp_show())
    if not runs:
        what = ", ".join(sources) or "this repository's `dvc exp show`"
        raise InvalidInput([Problem(what, None, "<runs>", "no finished run with metrics")])
    return runs


def _fmt(x: float) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def _table(config: Config, metrics: Sequence[str]) -> list[str]:
    cols = [m for m in metrics if config.values(m)]
    lines = [
        f"## {config.label} ({len(config.runs)} runs)",
        "",
        "| seed | run | " + " | ".join(cols) + " |",
        "|---|---|" + "---:|" * len(cols),
    ]
    for run in config.runs:
        cells = [_fmt(run.metric(m)) for m in cols]
        lines.append(f"| {run.params.get(SEED)} | {run.name} | " + " | ".join(cells) + " |")
    for stat in ("mean", "sd", "min", "ci_low", "ci_high"):
        cells = [_fmt(getattr(config.summary(m), stat)) for m in cols]
        label = {"ci_low": "95% CI low", "ci_high": "95% CI high"}.get(stat, stat)
        lines.append(f"| **{label}** | | " + " | ".join(cells) + " |")
    lines += ["", f"Made on: {'; '.join(_origins(config))}"]
    return lines + [""]


def _origins(config: Config) -> list[str]:
    """Each device and commit the config's runs come from, with their seeds."""
    seeds: dict[tuple[str, str], list[str]] = {}
    for r in config.runs:
        where = (r.device or "an unrecorded device", (r.commit or "an unrecorded commit")[:7])
        seeds.setdefault(where, []).append(str(r.params.get(SEED)))
    return [f"{d} at {c} (seeds {', '.join(s)})" for (d, c), s in seeds.items()]


def _run_json(run: Run, metrics: Sequence[str]) -> dict:
    return (
        {"name": run.name, "seed": run.params.get(SEED)}
        | {m: run.metric(m) for m in metrics}
        | {"commit": run.commit, "device": run.device, "params": run.params}
    )


@sweep.command("summary")
@_exp_show_option
@_metric_option
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write JSON here.")
def summary_command(
    exp_show: tuple[str, ...], metrics: tuple[str, ...], json_out: str | None
) -> None:
    """Every config (params but the seed): each seed's metrics, mean, sd, min and 95% CI."""
    metrics = metrics or HEADLINE
    configs = group_by_config(_runs(exp_show))
    lines = []
    for config in configs:
        lines += _table(config, metrics)
    click.echo("\n".join(lines).rstrip())
    if json_out:
        write_json(
            json_out,
            {
                "configs": [
                    {
                        "config": c.label,
                        "runs": [_run_json(r, metrics) for r in c.runs],
                        "devices": sorted({r.device or "" for r in c.runs} - {""}),
                        "commits": sorted({r.commit or "" for r in c.runs} - {""}),
                        "summary": {
                            m: s.as_dict() for m in metrics if (s := c.summary(m)) is not None
                        },
                    }
                    for c in configs
                ]
            },
        )


@sweep.command("compare")
@click.argument("a")
@click.argument("b")
@_exp_show_option
@_metric_option
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write JSON here.")
def compare_command(
    a: str, b: str, exp_show: tuple[str, ...], metrics: tuple[str, ...], json_out: str | None
) -> None:
    """Is B better than A beyond seed noise? A and B select runs by params, as
    KEY=VALUE[,KEY=VALUE...] (for example `format.recipe=answer_only`), or by the commit their
    code comes from (`commit=1e998f8`; `dvc exp show -A --json` lists every commit's
    experiments); each needs 2+ seeds.

    Reports the difference of the means with Welch's 95% interval, Welch's t-test and an exact
    permutation test; "significant" needs both below 0.05.
    """
    metrics = metrics or ("after.accuracy",)
    runs = _runs(exp_show)
    sides = {}
    for name, text in (("A", a), ("B", b)):
        chosen = select_runs(runs, parse_selector(text))
        if len(chosen) < 2:
            msg = f"selects {len(chosen)} finished run(s); a comparison needs 2 or more seeds"
            raise InvalidInput([Problem(name, None, text, msg)])
        sides[name] = chosen
    out = {}
    for m in metrics:
        va = [v for r in sides["A"] if (v := r.metric(m)) is not None]
        vb = [v for r in sides["B"] if (v := r.metric(m)) is not None]
        c = compare(va, vb)
        out[m] = {"a": va, "b": vb, **c.as_dict()}
        click.echo(
            f"{m}: A {c.mean_a:.4f} (n={len(va)}), B {c.mean_b:.4f} (n={len(vb)}); "
            f"B - A = {c.diff:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}]; "
            f"Welch p = {c.p_welch:.3g}, permutation p = {c.p_permutation:.3g}: {c.verdict()}"
        )
    if json_out:
        write_json(json_out, {"a": a, "b": b, "metrics": out})

"""The delta report as markdown: headline, categories, difficulties, examples side by side."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from tunixrt_dvc.report.origin import sweep_origin
from tunixrt_dvc.report.ranking import changes
from tunixrt_dvc.report.run import RUN_FIELDS, UNKNOWN, run_info
from tunixrt_dvc.task.scoring import ScoredItem

NO_ANSWER = "[no answer]"
EMPTY_GENERATION = "[empty generation]"
HEADLINE = [
    ("accuracy", "accuracy"),
    ("format_compliance", "format compliance"),
    ("step_accuracy", "equation steps correct"),
    ("answer_follows_rate", "answer follows from the steps"),
    ("mean_equation_steps", "equation steps per item"),
    ("mean_gen_tokens", "generated tokens per item"),
]
_DIFFICULTY_ORDER = {"easy": 0, "medium": 1, "hard": 2}


def _cell(text: str) -> str:
    """Text for one markdown table cell: HTML-escaped, pipes escaped, newlines as <br>."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("\r\n", "\n").replace("\n", "<br>") or " "


def _num(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, int | float) and not isinstance(x, bool) else UNKNOWN


def _signed(x: Any) -> str:
    return f"{x:+.4f}" if isinstance(x, int | float) and not isinstance(x, bool) else UNKNOWN


def _table(rows: list[tuple[str, Any, Any, Any]], first: str) -> list[str]:
    out = [f"| {first} | before | after | delta |", "|---|---:|---:|---:|"]
    out += [f"| {_cell(name)} | {_num(b)} | {_num(a)} | {_signed(d)} |" for name, b, a, d in rows]
    return out


def _group_rows(metrics: Mapping[str, Any], key: str, order: Mapping[str, int]) -> list:
    names = set(metrics["before"][key]) | set(metrics["after"][key])
    ordered = sorted(names, key=lambda n: (order.get(n, len(order)), n))
    return [
        (
            n,
            metrics["before"][key].get(n),
            metrics["after"][key].get(n),
            metrics["delta"][key].get(n),
        )
        for n in ordered
    ]


def rl_rows(metrics: Mapping[str, Any]) -> list[tuple[str, Any, Any, Any]]:
    """(label, after SFT, after RL, delta) for the headline and each category, when the metrics
    have an RL section (grpo.steps > 0); else none."""
    if "rl" not in metrics:
        return []
    a, r, d = metrics["after"], metrics["rl"], metrics["delta_rl"]
    rows = [(label, a.get(k), r.get(k), d.get(k)) for k, label in HEADLINE]
    key = "accuracy_by_category"
    rows += [
        (f"accuracy: {n}", a[key].get(n), r[key].get(n), d[key].get(n))
        for n in sorted(set(a[key]) | set(r[key]))
    ]
    return rows


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _side_by_side(k: int, b: ScoredItem, a: ScoredItem) -> list[str]:
    return [
        f"### {k}. `{b.id}` ({b.category}, {b.difficulty})",
        "",
        f"Prompt: {_cell(b.prompt)}",
        "",
        f"Expected answer: `{b.expected_answer}`",
        "",
        "| | before | after |",
        "|---|---|---|",
        f"| generation | {_cell(b.generation or EMPTY_GENERATION)} "
        f"| {_cell(a.generation or EMPTY_GENERATION)} |",
        f"| answer | {_cell(b.answer or NO_ANSWER)} | {_cell(a.answer or NO_ANSWER)} |",
        f"| correct | {_yes(b.correct)} | {_yes(a.correct)} |",
        f"| equation steps correct | {b.steps_correct}/{b.steps_total} "
        f"| {a.steps_correct}/{a.steps_total} |",
        f"| answer follows | {_yes(b.answer_follows)} | {_yes(a.answer_follows)} |",
        f"| well formed | {_yes(b.well_formed)} | {_yes(a.well_formed)} |",
        f"| generated tokens | {b.gen_tokens} | {a.gen_tokens} |",
        "",
    ]


def _seeds(sweep: Mapping[str, Any], manifest: Mapping[str, Any]) -> list[str]:
    lines = ["## Across seeds", ""]
    for config in sweep.get("configs", []):
        origin = sweep_origin(config, manifest)
        lines += [f"### {_cell(str(config.get('config')))}", "", " ".join(origin.sentences()), ""]
        lines += ["| metric | n | mean | sd | min | 95% CI |", "|---|---:|---:|---:|---:|---|"]
        for metric, s in config.get("summary", {}).items():
            ci = f"[{_num(s.get('ci_low'))}, {_num(s.get('ci_high'))}]"
            lines.append(
                f"| {_cell(metric)} | {s.get('n')} | {_num(s.get('mean'))} | {_num(s.get('sd'))} "
                f"| {_num(s.get('min'))} | {ci} |"
            )
        lines.append("")
    return lines


def render_report(
    *,
    pairs: Sequence[tuple[ScoredItem, ScoredItem]],
    metrics: Mapping[str, Any],
    manifest: Mapping[str, Any],
    n_examples: int,
    inputs: Mapping[str, str],
    sweep: Mapping[str, Any] | None = None,
) -> str:
    """The whole delta_report.md. `inputs` maps a label to `path (sha256 ...)` text; `sweep` is
    a `tunixrt sweep summary --json` file's content, shown with where it was made."""
    info = run_info(manifest)
    ups, downs = changes(pairs)
    fixed = sum(1 for b, a in pairs if a.correct and not b.correct)
    broken = sum(1 for b, a in pairs if b.correct and not a.correct)
    m_b, m_a, m_d = metrics["before"], metrics["after"], metrics["delta"]
    lines = [
        "# Eval delta report: before vs after fine-tuning",
        "",
        f"{len(pairs)} eval items; model preset `{info['preset']}`, recipe `{info['recipe']}`"
        + (f", commit `{info['git_sha']}`" if info["git_sha"] != UNKNOWN else "")
        + ". Before = base weights, after = the tuned checkpoint; "
        "greedy decoding. Definitions: docs/eval-loop.md.",
        "",
        "## Headline",
        "",
        *_table([(label, m_b.get(k), m_a.get(k), m_d.get(k)) for k, label in HEADLINE], "metric"),
        "",
        f"{fixed} item(s) went from wrong to correct, {broken} from correct to wrong.",
        "",
    ]
    if rows := rl_rows(metrics):
        table = _table(rows, "metric")
        table[0] = "| metric | after SFT | after RL | delta |"
        lines += ["## After RL (GRPO)", "", *table, ""]
    if sweep:
        lines += _seeds(sweep, manifest)
    lines += [
        "## Accuracy by category",
        "",
        *_table(_group_rows(metrics, "accuracy_by_category", {}), "category"),
        "",
        "## Accuracy by difficulty",
        "",
        *_table(_group_rows(metrics, "accuracy_by_difficulty", _DIFFICULTY_ORDER), "difficulty"),
        "",
        f"## Largest improvements ({min(n_examples, len(ups))} of {len(ups)} improved items)",
        "",
        "Ranked by the change in (correct, answer follows, share of equation steps correct, "
        "well formed), in that order.",
        "",
    ]
    for k, (b, a) in enumerate(ups[:n_examples], start=1):
        lines += _side_by_side(k, b, a)
    if not ups:
        lines += ["No item improved.", ""]
    lines += [
        f"## Regressions ({min(n_examples, len(downs))} of {len(downs)} items that got worse)",
        "",
    ]
    for k, (b, a) in enumerate(downs[:n_examples], start=1):
        lines += _side_by_side(k, b, a)
    if not downs:
        lines += ["No item got worse.", ""]
    lines += ["## Run", "", "| field | value |", "|---|---|"]
    # The pipeline's manifest (train/fingerprint.json) has no git sha: this file is a DVC output
    # and must not change with the commit; the commit is the one holding it and its dvc.lock.
    lines += [
        f"| {label} | `{_cell(str(info[key]))}` |"
        for key, label in RUN_FIELDS
        if not (key == "git_sha" and info[key] == UNKNOWN)
    ]
    packages = manifest.get("packages")
    lines += ["", "Packages: "]
    if isinstance(packages, Mapping) and packages:
        lines[-1] += ", ".join(
            f"{_cell(str(k))} {_cell(str(v))}" for k, v in sorted(packages.items())
        )
    else:
        lines[-1] += UNKNOWN
    lines += ["", "### Params", ""]
    params = manifest.get("params")
    if isinstance(params, Mapping):
        lines += [
            "```json",
            json.dumps(params, indent=2, sort_keys=True, ensure_ascii=False),
            "```",
        ]
    else:
        lines.append(UNKNOWN)
    lines += ["", "## Inputs", ""]
    lines += [f"- {label}: {text}" for label, text in inputs.items()]
    return "\n".join(lines) + "\n"

"""The report as one self-contained HTML page: tables, inline SVG charts, the work marked up.

Nothing is loaded from anywhere: no scripts, fonts, styles or images outside the file, so the page
renders the same with no network. Every chart is a `<figure data-chart=NAME data-points=N>`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from tunixrt_dvc.report.charts import Chart
from tunixrt_dvc.report.markdown import EMPTY_GENERATION, HEADLINE, NO_ANSWER, rl_rows
from tunixrt_dvc.report.origin import sweep_origin
from tunixrt_dvc.report.ranking import changes
from tunixrt_dvc.report.run import RUN_FIELDS, UNKNOWN, run_info
from tunixrt_dvc.task.arithmetic import check_equation
from tunixrt_dvc.task.scoring import ScoredItem

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #1a202c;
       padding: 0 1rem; line-height: 1.4; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #e2e8f0; }
table { border-collapse: collapse; margin: 0.6rem 0; }
th, td { border: 1px solid #e2e8f0; padding: 0.25rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.up { color: #2f855a; } .down { color: #c53030; }
figure { display: inline-block; margin: 0.5rem 1rem 0.5rem 0; vertical-align: top; }
figcaption { font-size: 0.9rem; color: #4a5568; }
.pair { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 1rem;
        margin-bottom: 1.6rem; }
.side { border: 1px solid #e2e8f0; border-radius: 6px; padding: 0.6rem; overflow-wrap: anywhere; }
.side h4 { margin: 0 0 0.4rem 0; }
ol.work { font-family: ui-monospace, monospace; font-size: 0.9rem; padding-left: 2rem; }
li.right::marker { content: "\\2713  "; color: #2f855a; }
li.wrong::marker { content: "\\2717  "; color: #c53030; }
li.right { color: #22543d; } li.wrong { color: #9b2c2c; font-weight: 600; }
pre { background: #f7fafc; padding: 0.6rem; overflow-x: auto; font-size: 0.85rem; }
.meta { color: #4a5568; font-size: 0.9rem; }
.origin { font-size: 0.9rem; }
.origin.mismatch { border-left: 4px solid #c05621; padding-left: 0.6rem; }
"""


def _num(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, int | float) and not isinstance(x, bool) else UNKNOWN


def _signed(x: Any) -> str:
    if not isinstance(x, int | float) or isinstance(x, bool):
        return UNKNOWN
    cls = "up" if x > 0 else "down" if x < 0 else ""
    return f'<span class="{cls}">{x:+.4f}</span>'


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], *, table_id: str = "") -> str:
    attr = f' id="{table_id}"' if table_id else ""
    out = [f"<table{attr}><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead>"]
    out += ["<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows]
    return "\n".join(out) + "\n</table>"


def _figure(chart: Chart) -> str:
    return (
        f'<figure data-chart="{escape(chart.name)}" data-points="{chart.points}">'
        f"{chart.svg}<figcaption>{escape(chart.title)}</figcaption></figure>"
    )


def _work(item: ScoredItem, label: str) -> str:
    steps = []
    for step in item.steps:
        ok = check_equation(step)
        cls = "" if ok is None else ' class="right"' if ok else ' class="wrong"'
        steps.append(f"<li{cls}>{escape(step)}</li>")
    work = f'<ol class="work">{"".join(steps)}</ol>' if steps else "<p><em>no steps</em></p>"
    verdict = "correct" if item.correct else "wrong"
    answer = item.answer or NO_ANSWER
    answer = answer if len(answer) <= 40 else answer[:40] + "\u2026"
    return (
        f'<div class="side"><h4>{label}: answer <code>{escape(answer)}</code> '
        f'(<span class="{"up" if item.correct else "down"}">{verdict}</span>)</h4>{work}'
        f"<details><summary>generation ({item.gen_tokens} tokens)</summary>"
        f"<pre>{escape(item.generation or EMPTY_GENERATION)}</pre></details></div>"
    )


def _pairs(title: str, pairs: Sequence[tuple[ScoredItem, ScoredItem]], total: int) -> str:
    out = [f"<h3>{escape(title)} ({len(pairs)} of {total})</h3>"]
    if not pairs:
        out.append("<p>None.</p>")
    for b, a in pairs:
        out.append(
            f'<div class="item" data-item="{escape(b.id)}"><p><strong>{escape(b.id)}</strong> '
            f"({escape(b.category)}, {escape(b.difficulty)}): {escape(b.prompt)}<br>"
            f"expected answer <code>{escape(b.expected_answer)}</code></p>"
            f'<div class="pair">{_work(b, "before")}{_work(a, "after")}</div></div>'
        )
    return "\n".join(out)


def _seeds(sweep: Mapping[str, Any], manifest: Mapping[str, Any]) -> str:
    out = [
        "<p>Each config run with several seeds (the seed changes the corpus, tokenizer, init and "
        "batch order): mean and sample standard deviation, the worst seed, and the 95% "
        "interval of the mean (Student's t).</p>"
    ]
    for config in sweep.get("configs", []):
        rows = []
        for metric, s in config.get("summary", {}).items():
            rows.append(
                [
                    escape(metric),
                    str(s["n"]),
                    f"{s['mean']:.4f} &plusmn; {s['sd']:.4f}",
                    _num(s["min"]),
                    f"[{_num(s['ci_low'])}, {_num(s['ci_high'])}]",
                ]
            )
        seeds = ", ".join(str(r.get("seed")) for r in config.get("runs", []))
        out.append(f"<h3>{escape(str(config.get('config')))} (seeds {escape(seeds)})</h3>")
        origin = sweep_origin(config, manifest)
        mismatch = origin.same_device is not True or bool(origin.differing)
        cls = "origin mismatch" if mismatch else "origin"
        out.append(f'<p class="{cls}">{escape(" ".join(origin.sentences()))}</p>')
        out.append(_table(["metric", "n", "mean &plusmn; sd", "min", "95% CI"], rows))
    return "\n".join(out)


def render_html(
    *,
    pairs: Sequence[tuple[ScoredItem, ScoredItem]],
    metrics: Mapping[str, Any],
    manifest: Mapping[str, Any],
    charts: Sequence[Chart],
    n_examples: int,
    sweep: Mapping[str, Any] | None = None,
) -> str:
    """The whole page (see the module docstring)."""
    info = run_info(manifest)
    ups, downs = changes(pairs)
    m_b, m_a, m_d = metrics["before"], metrics["after"], metrics["delta"]
    headline = [
        [escape(label), _num(m_b.get(k)), _num(m_a.get(k)), _signed(m_d.get(k))]
        for k, label in HEADLINE
    ]
    by_chart = {c.name: c for c in charts}
    training = [by_chart[n] for n in ("loss", "lr", "grad_norm") if n in by_chart]
    accuracy = [by_chart[n] for n in ("by_category", "by_difficulty") if n in by_chart]
    run_rows = [
        [escape(label), f"<code>{escape(str(info[key]))}</code>"]
        for key, label in RUN_FIELDS
        if not (key == "git_sha" and info[key] == UNKNOWN)
    ]
    params = json.dumps(manifest.get("params", {}), indent=2, sort_keys=True, ensure_ascii=False)
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Eval report: before vs after fine-tuning</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Eval report: before vs after fine-tuning</h1>",
        f'<p class="meta">{len(pairs)} eval items; model preset <code>{escape(info["preset"])}'
        f"</code>, recipe <code>{escape(info['recipe'])}</code>. Before = the base weights, "
        "after = the tuned model; greedy decoding.</p>",
        '<section id="headline"><h2>Headline</h2>',
        _table(["metric", "before", "after", "delta"], headline, table_id="headline-table"),
        "</section>",
    ]
    if rows := rl_rows(metrics):
        cells = [[escape(n), _num(a), _num(r), _signed(d)] for n, a, r, d in rows]
        parts += [
            '<section id="rl"><h2>After RL (GRPO)</h2>',
            _table(["metric", "after SFT", "after RL", "delta"], cells, table_id="rl-table"),
            "</section>",
        ]
    if sweep:
        parts += ['<section id="seeds"><h2>Across seeds</h2>', _seeds(sweep, manifest)]
        parts.append("</section>")
    parts += [
        '<section id="training"><h2>Training</h2>',
        *[_figure(c) for c in training],
        "</section>",
        '<section id="accuracy"><h2>Accuracy by category and difficulty</h2>',
        *[_figure(c) for c in accuracy],
        "</section>",
        '<section id="examples"><h2>Examples</h2>',
        "<p>Steps marked &#x2713; are equations that hold, &#x2717; equations that do not; "
        "other steps are unmarked. Ranked by the change in (correct, answer follows from the "
        "steps, share of equation steps correct, well formed).</p>",
        _pairs("Largest improvements", ups[:n_examples], len(ups)),
        _pairs("Regressions", downs[:n_examples], len(downs)),
        "</section>",
        '<section id="run"><h2>Run</h2>',
        _table(["field", "value"], run_rows),
        f"<h3>Params</h3><pre>{escape(params)}</pre>",
        "</section></body></html>",
    ]
    return "\n".join(parts) + "\n"

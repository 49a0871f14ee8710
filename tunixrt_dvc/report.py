"""The delta report (markdown) and the eval generations as tunix-rt traces."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tunixrt_dvc.errors import InvalidInput, Problem
from tunixrt_dvc.schemas import ReasoningTrace, StoredTrace, TraceStep, dumps
from tunixrt_dvc.scoring import ScoredItem, check_equation, eval_metrics, read_scored

UNKNOWN = "unknown"
TRACE_VERSION = "1.0"  # tunix-rt's trace_version for its ReasoningTrace payloads
NO_ANSWER = "[no answer]"
EMPTY_GENERATION = "[empty generation]"
# Fixed namespace so that trace ids are the same on every machine (uuid5 of the content).
TRACE_NAMESPACE = uuid.UUID("6f1d7c9e-2b4a-5e8f-9c3d-7a1b0e4f2d68")
# Synthetic, reproducible creation times: the epoch plus the record's index in seconds, so the
# store's (created_at, id) order is the report's order; a wall-clock time would break byte-identity.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_STEP_CHARS = 20_000  # TraceStep.content limit

_HEADLINE = [
    ("accuracy", "accuracy"),
    ("format_compliance", "format compliance"),
    ("step_accuracy", "equation steps correct"),
    ("answer_follows_rate", "answer follows from the steps"),
    ("mean_equation_steps", "equation steps per item"),
    ("mean_gen_tokens", "generated tokens per item"),
]
_RUN_FIELDS = [
    ("git_sha", "git commit"),
    ("seed", "seed"),
    ("data_sha256", "training data sha256"),
    ("tokenizer_sha256", "tokenizer sha256"),
    ("checkpoint_sha256", "checkpoint sha256"),
    ("device", "device"),
]
_DIFFICULTY_ORDER = {"easy": 0, "medium": 1, "hard": 2}


# --- inputs --------------------------------------------------------------------------------


def load_json(path: str | Path, *, what: str) -> dict[str, Any]:
    """A JSON object from a file, or InvalidInput naming the file and line."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput([Problem(str(path), None, "<file>", f"{what} not found")]) from None
    except UnicodeDecodeError as e:
        raise InvalidInput(
            [Problem(str(path), None, "<file>", f"invalid UTF-8: {e.reason}")]
        ) from None
    except json.JSONDecodeError as e:
        raise InvalidInput([Problem(str(path), e.lineno, "<json>", e.msg)]) from None
    if not isinstance(data, dict):
        raise InvalidInput([Problem(str(path), 1, "<root>", f"{what} must be a JSON object")])
    return data


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return None
        d = d[k]
    return d


def run_info(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The run's identity from train/run_manifest.json; missing keys become "unknown".

    Only these fields are read: the manifest also holds what differs between identical runs
    (`finished_at`, `timings`, `host`), which must not reach the report.
    """
    info: dict[str, Any] = {}
    for key, _ in _RUN_FIELDS:
        value = manifest.get(key)
        if value is None and key == "checkpoint_sha256":
            value = manifest.get("model_sha256")
        info[key] = UNKNOWN if value is None else value
    for key, path in (("preset", ("model", "preset")), ("recipe", ("format", "recipe"))):
        value = _get(manifest.get("params"), *path)
        info[key] = UNKNOWN if value is None else value
    return info


def check_metrics(
    metrics: Mapping[str, Any], recomputed: Mapping[str, Any], *, file: str
) -> list[Problem]:
    """Every number the metrics file shares with the recomputed metrics must be equal.

    A mismatch means the metrics file is stale (from another eval run than the per-item files).
    Keys only the file has (timings, for example) are not checked.
    """
    problems: list[Problem] = []

    def walk(got: Any, want: Any, loc: str) -> None:
        if isinstance(want, Mapping):
            if not isinstance(got, Mapping):
                problems.append(Problem(file, None, loc, "must be an object"))
                return
            for k in want:
                if k in got:
                    walk(got[k], want[k], f"{loc}.{k}" if loc else k)
        elif not isinstance(got, int | float) or isinstance(got, bool) or got != want:
            problems.append(
                Problem(file, None, loc, f"is {got!r} but the per-item files give {want!r}")
            )

    for side in ("before", "after", "delta"):
        if side not in metrics:
            problems.append(Problem(file, None, side, "missing"))
        else:
            walk(metrics[side], recomputed[side], side)
    return problems


def pair_items(
    before: Sequence[ScoredItem], after: Sequence[ScoredItem], *, before_file: str, after_file: str
) -> list[tuple[ScoredItem, ScoredItem]]:
    """Before/after pairs in the before file's order; both files must score the same items."""
    by_id = {s.id: s for s in after}
    missing = [s.id for s in before if s.id not in by_id]
    extra = sorted(set(by_id) - {s.id for s in before})
    problems = []
    if missing:
        problems.append(Problem(after_file, None, "id", f"missing items {missing[:10]}"))
    if extra:
        problems.append(
            Problem(after_file, None, "id", f"items not in {before_file}: {extra[:10]}")
        )
    if problems:
        raise InvalidInput(problems)
    return [(b, by_id[b.id]) for b in before]


# --- ranking -------------------------------------------------------------------------------


def _quality(s: ScoredItem) -> tuple[float, ...]:
    """What an item is worth, most important first: the answer, then the work, then the format."""
    step_share = s.steps_correct / s.steps_total if s.steps_total else 0.0
    return (float(s.correct), float(s.answer_follows), step_share, float(s.well_formed))


def changes(
    pairs: Sequence[tuple[ScoredItem, ScoredItem]],
) -> tuple[list[tuple[ScoredItem, ScoredItem]], list[tuple[ScoredItem, ScoredItem]]]:
    """(improvements, regressions), largest change first, ties by id.

    Items are compared lexicographically on (correct, answer_follows, share of equation steps
    correct, well_formed).
    """
    ups, downs = [], []
    for b, a in pairs:
        diff = tuple(x - y for x, y in zip(_quality(a), _quality(b), strict=True))
        if _quality(a) > _quality(b):
            ups.append((diff, b.id, (b, a)))
        elif _quality(a) < _quality(b):
            downs.append((diff, b.id, (b, a)))
    ups.sort(key=lambda t: (tuple(-x for x in t[0]), t[1]))
    downs.sort(key=lambda t: (t[0], t[1]))
    return [p for *_, p in ups], [p for *_, p in downs]


# --- markdown ------------------------------------------------------------------------------


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


def render_report(
    *,
    pairs: Sequence[tuple[ScoredItem, ScoredItem]],
    metrics: Mapping[str, Any],
    manifest: Mapping[str, Any],
    n_examples: int,
    inputs: Mapping[str, str],
) -> str:
    """The whole delta_report.md. `inputs` maps a label to `path (sha256 ...)` text."""
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
        *_table([(label, m_b.get(k), m_a.get(k), m_d.get(k)) for k, label in _HEADLINE], "metric"),
        "",
        f"{fixed} item(s) went from wrong to correct, {broken} from correct to wrong.",
        "",
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
        for key, label in _RUN_FIELDS
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


# --- eval traces ---------------------------------------------------------------------------


def _trace_for(item: ScoredItem, *, stage: str, info: Mapping[str, Any]) -> ReasoningTrace:
    """A tunix-rt trace of one generation.

    Parsed steps become steps (type `equation` when check_equation can check them, else `text`).
    A generation with no parsable steps keeps its raw text as a single step of type `generation`
    (`[empty generation]` if empty), and a missing answer is written as `[no answer]`; the scores
    in `meta` say what was parsed, so such traces stay valid and visibly failed.
    """
    steps = [s for s in item.steps if s.strip()]
    if steps:
        trace_steps = [
            TraceStep(
                i=k,
                type="text" if check_equation(s) is None else "equation",
                content=s[:_MAX_STEP_CHARS],
            )
            for k, s in enumerate(steps)
        ]
    else:
        raw = item.generation if item.generation.strip() else EMPTY_GENERATION
        trace_steps = [TraceStep(i=0, type="generation", content=raw[:_MAX_STEP_CHARS])]
    answer = item.answer if item.answer and item.answer.strip() else NO_ANSWER
    return ReasoningTrace(
        trace_version=TRACE_VERSION,
        prompt=item.prompt,
        final_answer=answer,
        steps=trace_steps,
        meta={
            "source": "tunixrt-dvc/eval",
            "tags": ["eval", stage],
            "eval": {
                "item_id": item.id,
                "category": item.category,
                "difficulty": item.difficulty,
                "expected_answer": item.expected_answer,
            },
            "model": {
                "stage": stage,
                "weights": "base" if stage == "before" else "tuned",
                "preset": info["preset"],
                "recipe": info["recipe"],
            },
            "run": {k: info[k] for k, _ in _RUN_FIELDS},
            "scores": {
                "correct": item.correct,
                "well_formed": item.well_formed,
                "steps_total": item.steps_total,
                "steps_correct": item.steps_correct,
                "answer_follows": item.answer_follows,
                "gen_tokens": item.gen_tokens,
            },
            "generation": item.generation,
        },
    )


def eval_traces(
    before: Sequence[ScoredItem], after: Sequence[ScoredItem], *, manifest: Mapping[str, Any]
) -> list[StoredTrace]:
    """Before then after, in file order, with content-derived ids and synthetic created_at.

    The id is a uuid5 of the stage, the item id, the run's commit and data hash and the trace
    itself: rerunning gives the same ids (so `traces import` skips them), a changed generation a
    new one.
    """
    info = run_info(manifest)
    out = []
    for stage, items in (("before", before), ("after", after)):
        for item in items:
            trace = _trace_for(item, stage=stage, info=info)
            digest = hashlib.sha256(dumps(trace).encode()).hexdigest()
            key = "\n".join(
                [stage, item.id, str(info["git_sha"]), str(info["data_sha256"]), digest]
            )
            out.append(
                StoredTrace(
                    id=str(uuid.uuid5(TRACE_NAMESPACE, key)),
                    created_at=EPOCH + timedelta(seconds=len(out)),
                    trace=trace,
                )
            )
    return out


# --- the stage -----------------------------------------------------------------------------


def atomic_write(path: Path, text: str) -> None:
    """Write via a temp file in the same directory and rename: readers never see partial output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _display(path: Path) -> str:
    """A path for the report: relative to the working directory, never absolute."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.name


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class ReportOutputs:
    report: Path
    traces: Path
    n_items: int
    n_traces: int


def write_report(
    *,
    before_path: str | Path,
    after_path: str | Path,
    metrics_path: str | Path,
    manifest_path: str | Path,
    out_dir: str | Path,
    n_examples: int,
) -> ReportOutputs:
    """Validate every input, then write delta_report.md and eval_traces.jsonl under out_dir."""
    before_path, after_path = Path(before_path), Path(after_path)
    metrics_path, manifest_path, out_dir = Path(metrics_path), Path(manifest_path), Path(out_dir)
    before, after = read_scored(before_path), read_scored(after_path)
    pairs = pair_items(before, after, before_file=str(before_path), after_file=str(after_path))
    recomputed = eval_metrics(before, after)
    problems = check_metrics(
        load_json(metrics_path, what="metrics file"), recomputed, file=str(metrics_path)
    )
    if problems:
        raise InvalidInput(problems)
    manifest = load_json(manifest_path, what="run manifest")
    inputs = {
        label: f"`{_display(p)}` (sha256 `{_sha256(p)}`)"
        for label, p in (("before", before_path), ("after", after_path), ("metrics", metrics_path))
    }
    # Not its hash: the manifest records the run's time and timings, which differ between
    # otherwise identical runs; the fields the report uses are shown under "Run".
    inputs["run manifest"] = f"`{_display(manifest_path)}`"
    report = render_report(
        pairs=pairs, metrics=recomputed, manifest=manifest, n_examples=n_examples, inputs=inputs
    )
    traces = eval_traces(before, after, manifest=manifest)
    report_file, traces_file = out_dir / "delta_report.md", out_dir / "eval_traces.jsonl"
    atomic_write(traces_file, "".join(dumps(t) + "\n" for t in traces))
    atomic_write(report_file, report)
    return ReportOutputs(report_file, traces_file, len(pairs), len(traces))

"""What the report knows of the run: its identity from the run manifest, and checked inputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tunixrt_dvc.errors import InvalidInput, Problem
from tunixrt_dvc.task.scoring import ScoredItem

UNKNOWN = "unknown"
RUN_FIELDS = [
    ("git_sha", "git commit"),
    ("seed", "seed"),
    ("data_sha256", "training data sha256"),
    ("tokenizer_sha256", "tokenizer sha256"),
    ("checkpoint_sha256", "checkpoint sha256"),
    ("device", "device"),
]


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
    for key, _ in RUN_FIELDS:
        value = manifest.get(key)
        if value is None and key == "checkpoint_sha256":
            value = manifest.get("model_sha256")
        info[key] = UNKNOWN if value is None else value
    for key, path in (("preset", ("model", "preset")), ("recipe", ("format", "recipe"))):
        value = manifest.get(key) or _get(manifest.get("params"), *path)
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

    sides = ("before", "after", "delta") + (("rl", "delta_rl") if "rl" in recomputed else ())
    for side in sides:
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

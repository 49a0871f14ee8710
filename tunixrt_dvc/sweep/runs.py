"""The runs a DVC repository holds (commits and experiments), from `dvc exp show --json`."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunixrt_dvc.errors import InvalidInput, Problem, ResourceError
from tunixrt_dvc.params import PARAMS_FILE


@dataclass(frozen=True)
class Run:
    """One finished pipeline run: its params and metrics, flattened to dotted keys."""

    name: str  # the experiment's name, or the branch or short sha of a commit
    rev: str
    params: dict[str, Any]  # "seed", "train.steps", ...
    metrics: dict[str, float]  # "metrics/eval.json:after.accuracy", ...
    commit: str | None = None  # the commit it ran on (an experiment's baseline)
    device: str | None = None  # the machine, as the train stage's fingerprint names it

    def metric(self, key: str) -> float | None:
        """A metric by its full key or by the key within its file (if only one file has it)."""
        if key in self.metrics:
            return self.metrics[key]
        # A summary file's runs have the keys within their files already (no `FILE:`).
        found = [v for k, v in self.metrics.items() if k.split(":", 1)[-1] == key]
        return found[0] if len(found) == 1 else None


def flatten(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested mappings as (dotted key, leaf value) pairs, as DVC names params and metrics."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            yield from flatten(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, data


# The train stage's fingerprint (a git-tracked DVC output): its `device` names the CPU model and
# the instruction sets that pick XLA's kernels, or the accelerator.
FINGERPRINT = "train/fingerprint.json"


def fingerprint_at(rev: str) -> dict[str, Any] | None:
    """The train stage's fingerprint in commit or experiment `rev` of the repository in the
    working directory (None where it has none)."""
    proc = subprocess.run(
        ["git", "show", f"{rev}:{FINGERPRINT}"], capture_output=True, text=True, check=False
    )
    if proc.returncode:
        return None
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


Fingerprints = Callable[[str], Mapping[str, Any] | None]


def _run(row: Mapping[str, Any], name: str, commit: str | None = None) -> Run | None:
    data = row.get("data") or {}
    if row.get("error") or not data.get("metrics"):
        return None
    # The default pipeline's params only: another pipeline's (gemma/params.yaml) has the same
    # keys and would overwrite them.
    params = dict(flatten(((data.get("params") or {}).get(PARAMS_FILE) or {}).get("data") or {}))
    metrics = {}
    for path, file in data["metrics"].items():
        for key, value in flatten(file.get("data") or {}):
            if isinstance(value, int | float) and not isinstance(value, bool):
                metrics[f"{path}:{key}"] = float(value)
    return Run(name=name, rev=row["rev"], params=params, metrics=metrics, commit=commit)


def runs_from_exp_show(
    rows: list[dict[str, Any]], *, commits: bool = True, fingerprints: Fingerprints | None = None
) -> list[Run]:
    """Finished runs in `dvc exp show --json` output: the commits shown (unless `commits` is
    false) and every successful experiment. Queued, running and failed ones are left out, and
    so are repeats of a run with the same commit and params (an experiment that reran its
    commit's params); the same params on another commit are another run (other code).
    Each run's device comes from `fingerprints(rev)` (default: `fingerprint_at`, from git)."""
    fingerprints = fingerprints or fingerprint_at
    out: list[Run] = []
    seen: set[str] = set()

    def add(run: Run | None) -> None:
        key = json.dumps([run.commit, run.params], sort_keys=True, default=str) if run else ""
        if run is not None and key not in seen:
            seen.add(key)
            device = (fingerprints(run.rev) or {}).get("device")
            out.append(dataclasses.replace(run, device=device))

    for row in rows:
        if row.get("rev") == "workspace":
            continue
        for group in row.get("experiments") or []:
            state = (group.get("executor") or {}).get("state", "success")
            if state == "success" and group.get("revs"):
                exp = group["revs"][0]
                name = exp.get("name") or group.get("name") or exp["rev"][:7]
                add(_run(exp, name, commit=row["rev"]))
        if commits:
            add(_run(row, row.get("name") or row["rev"][:7], commit=row["rev"]))
    return out


# The fields of a run in a summary file that are not metrics (`tunixrt sweep summary --json`).
_RUN_FIELDS = ("name", "seed", "commit", "device", "params")


def runs_from_summary(data: Mapping[str, Any]) -> list[Run]:
    """The runs a `tunixrt sweep summary --json` file records (results/seed_sweep.json): each
    with its metrics, params, commit and device as they were when it was written."""
    out = []
    for config in data.get("configs") or []:
        for r in config.get("runs") or []:
            metrics = {
                k: float(v)
                for k, v in r.items()
                if k not in _RUN_FIELDS and isinstance(v, int | float) and not isinstance(v, bool)
            }
            commit = r.get("commit")
            out.append(
                Run(
                    name=r["name"],
                    rev=commit or r["name"],
                    params=dict(r.get("params") or {"seed": r.get("seed")}),
                    metrics=metrics,
                    commit=commit,
                    device=r.get("device"),
                )
            )
    return out


def _read_json(source: str | Path) -> Any:
    try:
        return json.loads(Path(source).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise InvalidInput([Problem(str(source), None, "<json>", str(e))]) from None


def _exp_show_rows(data: Any, source: str | Path | None) -> list[dict[str, Any]]:
    if not isinstance(data, list):
        raise InvalidInput([Problem(str(source), 1, "<root>", "not `dvc exp show --json` output")])
    return data


def read_runs(source: str | Path) -> list[Run]:
    """The runs in a saved `dvc exp show --json` output or a `tunixrt sweep summary --json`."""
    data = _read_json(source)
    if isinstance(data, dict) and "configs" in data:
        return runs_from_summary(data)
    return runs_from_exp_show(_exp_show_rows(data, source))


def read_exp_show(source: str | Path | None = None) -> list[dict[str, Any]]:
    """`dvc exp show --json` of the repository in the working directory, or a saved copy."""
    if source is not None:
        return _exp_show_rows(_read_json(source), source)
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "exp", "show", "--json"],
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        raise ResourceError(f"dvc exp show --json failed: {proc.stderr.strip()[-2000:]}")
    return _exp_show_rows(json.loads(proc.stdout), source)

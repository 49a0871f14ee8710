"""Per-step metrics: a JSONL log that survives a kill, forwarded to DVCLive as training goes.

The log is the record: a resumed run replays its rows up to the step it resumes from, so DVCLive's
files (metrics and plots, which `dvc exp show` reads while a run goes on) come out byte for byte
as an uninterrupted run writes them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dvclive import Live


class StepLog:
    """Rows of named kinds (`{"step": n, ...}`), each kind sent to DVCLive under its own names.

    `metrics` maps a kind to {DVCLive metric name: row key}. `path` None keeps the log in memory
    (a process other than the first of a job, which writes nothing).
    """

    def __init__(
        self,
        path: Path | None,
        *,
        resumed_from: int,
        live: Live | None,
        metrics: Mapping[str, Mapping[str, str]],
    ):
        self.path, self.live, self.metrics = path, live, metrics
        rows = []
        if path is not None and path.exists() and resumed_from:
            logged = map(json.loads, path.read_text().splitlines())
            rows = [r for r in logged if r["step"] <= resumed_from]
        self._rows: list[dict[str, Any]] = rows
        if path is not None:
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        replayed: set[tuple[str, int]] = set()
        for r in list(rows):  # in the order they were logged, as DVCLive first saw them
            if (r["kind"], r["step"]) not in replayed:
                replayed.add((r["kind"], r["step"]))
                self.forward(r)
        self._file = None if path is None else open(path, "a", buffering=1)  # noqa: SIM115

    def forward(self, row: dict[str, Any]) -> None:
        """Send a row to DVCLive (a loop may filter what it sends)."""
        self.to_live(row["step"], row, self.metrics[row["kind"]])

    def to_live(self, step: int, row: Mapping[str, Any], names: Mapping[str, str]) -> None:
        if self.live is None:
            return
        self.live.step = step
        for name, key in names.items():
            if key in row:
                self.live.log_metric(name, row[key])
        self.live.make_summary()

    def append(self, kind: str, row: Mapping[str, Any]) -> dict[str, Any]:
        """Record a row without sending it; returns it as logged (with its kind)."""
        logged = {"kind": kind, **row}
        self._rows.append(logged)
        if self._file is not None:
            self._file.write(json.dumps(logged) + "\n")
        return logged

    def log(self, kind: str, row: Mapping[str, Any]) -> None:
        self.forward(self.append(kind, row))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def rows(self, kind: str) -> list[dict[str, Any]]:
        """The last row per step (a resumed run logs the replayed steps again, identically)."""
        by_step: dict[int, dict] = {}
        for r in self._rows:
            if r["kind"] == kind:
                by_step[r["step"]] = {k: v for k, v in r.items() if k != "kind"}
        return [by_step[s] for s in sorted(by_step)]

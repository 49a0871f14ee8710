"""Export: traces from a source -> validated TrainingExample JSONL with no eval problem in it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

from tqdm import tqdm

from tunixrt_dvc.errors import InvalidInput, Problem
from tunixrt_dvc.io import atomic_open
from tunixrt_dvc.traces.schemas import MAX_TRACE_BYTES, StoredTrace, dumps, trace_to_example
from tunixrt_dvc.traces.source import Rejected, parse_timestamp
from tunixrt_dvc.traces.urls import open_source

MAX_LISTED = 1000  # bad records whose problems the error lists; the rest are only counted


class Reserved(Protocol):
    """What must not be trained on (the eval sets' problems: `task.reservations`)."""

    def conflict(self, prompt: str, steps: Iterable[str]) -> str | None:
        """Why a trace with this prompt and these steps must be dropped, or None."""


@dataclass(frozen=True)
class ExportReport:
    read: int  # records read from the source, valid or not
    written: int
    dropped_contaminated: int  # valid, but its prompt or one of its computations is an eval set's
    rejected: int  # invalid (written to the rejects file with --on-invalid skip)

    def summary(self) -> str:
        return (
            f"read {self.read}, written {self.written}, dropped (eval set)"
            f" {self.dropped_contaminated}, rejected {self.rejected}"
        )


def rejects_path(out: Path) -> Path:
    """`data/examples.jsonl` -> `data/examples.rejects.jsonl`."""
    stem = out.name.removesuffix(".jsonl")
    return out.with_name(f"{stem}.rejects.jsonl")


def parse_since(since: str | datetime | None) -> datetime | None:
    if since is None or isinstance(since, datetime):
        return since
    try:
        return parse_timestamp(since)
    except ValueError:
        msg = f"not an ISO-8601 date and time (e.g. 2025-01-31T12:00:00Z): {since!r}"
        raise InvalidInput([Problem("--since", None, "since", msg)]) from None


def reject_line(item: Rejected) -> str:
    """One line of the rejects file: where, why, and the record as read."""
    where = ""
    if item:
        where = item[0].file if item[0].line is None else f"{item[0].file}:{item[0].line}"
    return json.dumps(
        {
            "where": where,
            "problems": [{"field": p.field, "message": p.message} for p in item],
            "record": item.raw,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def export(
    source: str,
    out: str | Path,
    *,
    limit: int | None = None,
    since: str | datetime | None = None,
    on_invalid: Literal["fail", "skip"] = "fail",
    reserved: Reserved,
    max_trace_bytes: int = MAX_TRACE_BYTES,
) -> ExportReport:
    """Write the source's traces as TrainingExample JSONL to `out`, in (created_at, id) order.

    Traces that `reserved` has a conflict with (they repeat an eval prompt or work out one of its
    problems' computations: `task.reservations`) are dropped. Invalid records (a trace whose
    canonical serialization is over `max_trace_bytes`, for one) fail the export (InvalidInput
    listing each, no output written) or, with `on_invalid="skip"`, go to `rejects_path(out)` with
    their reasons. Byte-identical on rerun.
    """
    if on_invalid not in ("fail", "skip"):
        raise ValueError(f"on_invalid must be 'fail' or 'skip', not {on_invalid!r}")
    out = Path(out)
    src = open_source(
        source, since=parse_since(since), limit=limit, max_trace_bytes=max_trace_bytes
    )
    skip = on_invalid == "skip"
    read = written = dropped = rejected = listed = 0
    problems: list[Problem] = []
    # Both files appear only when the block succeeds: the rejects, then the examples.
    with ExitStack() as files, src:
        tmp = files.enter_context(atomic_open(out))
        tmp_rejects = files.enter_context(atomic_open(rejects_path(out))) if skip else None
        write = tmp.write
        for item in tqdm(src, desc="export", unit=" traces", disable=None, mininterval=0.5):
            read += 1
            if isinstance(item, StoredTrace):
                if problems:
                    continue  # failing: only look for more problems
                steps = (step.content for step in item.trace.steps)
                if reserved.conflict(item.trace.prompt, steps) is not None:
                    dropped += 1
                    continue
                write(dumps(trace_to_example(item, source=src.kind)) + "\n")
                written += 1
                continue
            rejected += 1
            if tmp_rejects is not None:
                tmp_rejects.write(reject_line(item) + "\n")
            elif listed < MAX_LISTED:
                problems.extend(item)
                listed += 1
        if rejected > listed and not skip:
            more = f"and {rejected - listed} more invalid records"
            problems.append(Problem(src.name, None, "<source>", more))
        if problems:
            raise InvalidInput(problems)
        if written == 0:
            msg = f"no traces to write ({rejected} rejected, {dropped} reserved by an eval set)"
            raise InvalidInput([Problem(src.name, None, "<source>", msg)])
        if not skip:
            rejects_path(out).unlink(missing_ok=True)  # a stale one would describe another run
    return ExportReport(read, written, dropped, rejected)

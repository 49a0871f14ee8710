"""A trace store: somewhere traces can be imported into (tunix-rt's `traces` table)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from datetime import UTC
from itertools import islice
from typing import Any, NamedTuple

from tunixrt_dvc.errors import InvalidInput, Problem
from tunixrt_dvc.traces.schemas import MAX_TRACE_BYTES, StoredTrace, dumps

_BATCH = 1000


class ImportResult(NamedTuple):
    inserted: int
    skipped: int  # ids already in the store (or repeated in the input: the first one is kept)


def rows_of(traces: Iterable[StoredTrace], *, name: str) -> Iterator[tuple[str, str, str, str]]:
    """(id, created_at text, trace_version, payload) per trace, refusing over-limit payloads."""
    for t in traces:
        payload = dumps(t.trace)
        if len(payload) > MAX_TRACE_BYTES // 4 and len(payload.encode()) > MAX_TRACE_BYTES:
            msg = f"serialized trace is over the limit of {MAX_TRACE_BYTES} bytes"
            raise InvalidInput([Problem(name, None, f"{t.id}.payload", msg)])
        at = t.created_at.astimezone(UTC).isoformat(timespec="microseconds")
        yield t.id, at, t.trace.trace_version, payload


def batches(rows: Iterator[Any]) -> Iterator[list[Any]]:
    while batch := list(islice(rows, _BATCH)):
        yield batch


class TraceStore(ABC):
    """A store of traces; `urls.open_store(url)` opens one."""

    name: str

    @abstractmethod
    def create_schema(self) -> None:
        """Create the table and its (created_at, id) index if they are not there."""
        ...

    @abstractmethod
    def import_traces(self, traces: Iterable[StoredTrace]) -> ImportResult:
        """Insert in one transaction (all or nothing), skipping ids already in the store."""
        ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

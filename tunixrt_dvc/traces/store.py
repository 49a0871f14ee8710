"""A trace store: somewhere traces can be imported into (tunix-rt's `traces` table)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from itertools import islice
from typing import Any, NamedTuple

from tunixrt_dvc.errors import InvalidInput, Problem
from tunixrt_dvc.traces.schemas import MAX_TRACE_BYTES, StoredTrace, dumps

_BATCH = 1000


class ImportResult(NamedTuple):
    inserted: int
    skipped: int  # ids already in the store (or repeated in the input: the first one is kept)


def rows_of(
    traces: Iterable[StoredTrace], *, name: str
) -> Iterator[tuple[str, datetime, str, str]]:
    """(id, created_at in UTC, trace_version, payload) per trace, refusing over-limit payloads.

    Each store writes the id and the time in the form tunix-rt's ORM writes them there."""
    for t in traces:
        payload = dumps(t.trace)
        if len(payload) > MAX_TRACE_BYTES // 4 and (n := len(payload.encode())) > MAX_TRACE_BYTES:
            msg = f"serialized trace is {n} bytes, over the limit of {MAX_TRACE_BYTES}"
            raise InvalidInput([Problem(name, None, f"{t.id}.payload", msg)])
        yield t.id, t.created_at.astimezone(UTC), t.trace.trace_version, payload


def batches(rows: Iterator[Any]) -> Iterator[list[Any]]:
    while batch := list(islice(rows, _BATCH)):
        yield batch


class TraceStore(ABC):
    """A store of traces; `urls.open_store(url)` opens one."""

    name: str
    kind: str  # "sqlite", "postgresql"

    @abstractmethod
    def create_schema(self) -> None:
        """Create the table if it is not there; a table that is there is left as it is."""
        ...

    @abstractmethod
    def import_traces(
        self, traces: Iterable[StoredTrace], *, create_schema: bool = False
    ) -> ImportResult:
        """Insert in one transaction (all or nothing), skipping ids already in the store.

        Without `create_schema`, a store without the table is an error (a PostgreSQL database
        gets it from tunix-rt's migrations); with it, the table is created in the same
        transaction."""
        ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Trace sources: JSONL files, SQLite and PostgreSQL stores, UNGAR episodes, behind one interface.

`open_source(url)` returns a `Source`. Iterating it yields, in (created_at, id) order, one item
per record: a `StoredTrace`, or a `Rejected` (the `Problem`s of a bad record, with its raw text).
Nothing is held per record, so memory does not grow with the number of traces: the stores sort in
the database, a JSONL file is sorted through an on-disk index (see `JsonlSource`).
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from pydantic import ValidationError

from tunixrt_dvc.errors import InvalidInput, Problem, problems_from_validation
from tunixrt_dvc.traces.schemas import (
    MAX_TRACE_BYTES,
    ReasoningTrace,
    SourceKind,
    StoredTrace,
    canonical_id,
    dumps,
    trace_bytes,
)

TABLE = "traces"
COLUMNS = ("id", "created_at", "trace_version", "payload")
# Defaults for JSONL records without `id` / `created_at` (documented in docs/dataset-format.md).
DEFAULT_CREATED_AT = datetime(1970, 1, 1, tzinfo=UTC)
ID_NAMESPACE = uuid.UUID("0b6c8e5e-4f43-5d1a-9a63-5be1a3c2f0d7")
_US = timedelta(microseconds=1)


class Rejected(list[Problem]):
    """The problems of one bad record; `raw` is the record as read (None when there is none)."""

    def __init__(self, problems: list[Problem], *, raw: str | None):
        super().__init__(problems)
        self.raw = raw


def parse_timestamp(value: str) -> datetime:
    """ISO-8601 text -> aware UTC datetime (no offset means UTC). Raises ValueError."""
    t = datetime.fromisoformat(value)
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _ts_key(t: datetime) -> int:
    """Microseconds since the Unix epoch: an exact, integer sort key for an aware datetime."""
    return (t - DEFAULT_CREATED_AT) // _US


def default_trace_id(trace: ReasoningTrace) -> str:
    """The id of a record that has none: a UUID (v5) of its canonical serialization."""
    return str(uuid.uuid5(ID_NAMESPACE, dumps(trace)))


def size_problem(
    trace: ReasoningTrace, raw_len: int, *, ident: str | None, limit: int = MAX_TRACE_BYTES
) -> str | None:
    """Why the serialized trace is too big, or None. `raw_len`: bytes of the JSON it was read from;
    `ident`: the trace's id, named in the message (None: it has none, and gets its default);
    `limit`: the most bytes allowed.

    Re-serializing costs as much as parsing, so it is skipped when the input is small enough: the
    canonical form can only be longer than the input through numbers (`1e15` is written
    `1000000000000000.0`, 4.5x) and an absent `meta` (`,"meta":null`), hence the bound 5x + 16.
    """
    if raw_len * 5 + 16 <= limit:
        return None
    try:
        n = trace_bytes(trace)
    except ValueError as e:
        return f"cannot be serialized: {e}"
    if n > limit:
        shown = default_trace_id(trace) if ident is None else canonical_id(ident)
        return f"serialized trace is {n} bytes, over the limit of {limit} (trace id {shown!r})"
    return None


def _text(raw: bytes) -> str:
    """Raw bytes as text for a rejects file (invalid UTF-8 shown as escapes)."""
    return raw.decode("utf-8", errors="backslashreplace")


class Source(ABC):
    """Records of one source in (created_at, id) order; see the module docstring."""

    kind: ClassVar[SourceKind]

    def __init__(
        self,
        name: str,
        *,
        since: datetime | None,
        limit: int | None,
        max_trace_bytes: int = MAX_TRACE_BYTES,
    ):
        self.name = name
        self.since = since
        self.limit = limit
        self.max_trace_bytes = max_trace_bytes  # a longer serialized trace is rejected
        self._active: Iterator[Any] | None = None
        # Ids held by more than one record: set by _records before it yields its first record.
        self._dups: set[str] = set()

    @abstractmethod
    def _records(self) -> Iterator[tuple[datetime | None, str, int | None, StoredTrace | Rejected]]:
        """(created_at or None, file, line, item) in order; `since` may already be applied."""
        ...

    def __iter__(self) -> Iterator[StoredTrace | Rejected]:
        gen = self._records()
        self._active = gen
        try:
            yield from self._checked(gen)
        finally:
            gen.close()
            self._active = None

    def _checked(self, gen: Iterator[Any]) -> Iterator[StoredTrace | Rejected]:
        """Apply since/limit, reject repeated ids (the first in order is kept), check the order."""
        first_at: dict[str, str] = {}
        n = 0
        last: tuple[datetime, str] | None = None
        for ts, file, line, item in gen:
            if self.limit is not None and n >= self.limit:
                break
            if self.since is not None and ts is not None and ts < self.since:
                continue
            if isinstance(item, StoredTrace):
                key = (item.created_at, item.id)
                if last is not None and key < last:
                    raise RuntimeError(f"{self.name}: records out of order at {file}:{line}")
                last = key
                if item.id in self._dups:
                    where = file if line is None else f"{file}:{line}"
                    if item.id in first_at:
                        msg = f"duplicate id {item.id!r} (first: {first_at[item.id]})"
                        item = Rejected([Problem(file, line, "id", msg)], raw=dumps(item))
                    else:
                        first_at[item.id] = where
            n += 1
            yield item
        if n == 0:
            after = f" created at or after {self.since.isoformat()}" if self.since else ""
            raise InvalidInput([Problem(self.name, None, "<source>", f"no traces{after}")])

    def close(self) -> None:
        if self._active is not None:
            self._active.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- a database row ---------------------------------------------------------------------------


def row_item(
    file: str,
    ident: str,
    created: datetime | None,
    version: str | None,
    payload: str | None,
    payload_len: int,
    problems: list[Problem],
    *,
    max_trace_bytes: int = MAX_TRACE_BYTES,
) -> StoredTrace | Rejected:
    """Validate one database row whose id, time and text have been decoded (`problems` so far)."""
    trace = None
    if payload is None:
        problems.append(Problem(file, None, "payload", "is NULL"))
    else:
        try:
            trace = ReasoningTrace.model_validate_json(payload)
        except ValidationError as e:
            problems.extend(problems_from_validation(e, file=file, line=None, prefix="payload."))
    if trace is not None:
        if version != trace.trace_version:
            msg = f"column is {version!r} but the payload's is {trace.trace_version!r}"
            problems.append(Problem(file, None, "trace_version", msg))
        msg = size_problem(trace, payload_len, ident=ident, limit=max_trace_bytes)
        if msg is not None:
            problems.append(Problem(file, None, "payload", msg))
    if problems or trace is None or created is None:
        return Rejected(problems, raw=payload)
    try:
        return StoredTrace(id=ident, created_at=created, trace=trace)
    except ValidationError as e:
        return Rejected(problems_from_validation(e, file=file, line=None), raw=payload)

"""A JSONL file of traces as a source."""

from __future__ import annotations

import os
import re
import sqlite3
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import from_json
from tqdm import tqdm

from tunixrt_dvc.errors import InvalidInput, Problem, problems_from_validation
from tunixrt_dvc.traces.schemas import MAX_TRACE_BYTES, ReasoningTrace, StoredTrace, canonical_id
from tunixrt_dvc.traces.source import (
    DEFAULT_CREATED_AT,
    Rejected,
    Source,
    _text,
    _ts_key,
    default_trace_id,
    parse_timestamp,
    size_problem,
)


class JsonlSource(Source):
    """A JSONL file: one trace per line, flat (the ReasoningTrace fields plus optional `id` and
    `created_at`) or nested (`{"id", "created_at", "trace"}`, as `schemas.dumps(StoredTrace)`).

    Two passes keep memory flat whatever the order of the file: the first reads only each line's
    key into a temporary SQLite index (on disk), which sorts it; the second parses and validates
    the lines in that order, reading each at its offset.
    """

    kind = "jsonl"

    def __init__(
        self,
        path: Path,
        *,
        since: datetime | None,
        limit: int | None,
        max_trace_bytes: int = MAX_TRACE_BYTES,
    ):
        super().__init__(str(path), since=since, limit=limit, max_trace_bytes=max_trace_bytes)
        self.path = path

    def parse_line(self, raw: bytes, line: int) -> StoredTrace | Rejected:
        """Validate one line (without its line end)."""
        if (m := _KEY_PREFIX.match(raw)) is not None:
            fast = self._parse_fast(raw, m, line)
            if fast is not None:
                return fast
        return self._parse(raw, line)

    def _parse_fast(
        self, raw: bytes, m: re.Match[bytes], line: int
    ) -> StoredTrace | Rejected | None:
        """A line that starts with its id and created_at (as written by dumps): the rest is the
        trace, validated directly. None when anything is off: `_parse` then explains it."""
        rest = raw[m.end() :]
        if rest.startswith(b'"trace":'):
            body = rest[8:].rstrip()
            if not body.endswith(b"}"):
                return None
            body = body[:-1]
        else:
            body = b"{" + rest
        try:
            trace = ReasoningTrace.model_validate_json(body)
            ident, created = m[1].decode(), m[2].decode()
        except (ValidationError, UnicodeDecodeError):
            return None
        return self._finish(raw, line, ident, created, trace)

    def _parse(self, raw: bytes, line: int) -> StoredTrace | Rejected:
        file = self.name
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            msg = f"invalid UTF-8 (byte {e.start + 1} of the line)"
            return Rejected([Problem(file, line, "<encoding>", msg)], raw=_text(raw))
        try:
            if b'"trace"' in raw:  # may be the nested form: decide on the parsed object
                data = from_json(text)
                if isinstance(data, dict) and "trace" in data:
                    rec = _NestedLine.model_validate(data)
                    ident, created, trace = rec.id, rec.created_at, rec.trace
                else:
                    flat = _FlatLine.model_validate(data)
                    ident, created, trace = flat.id, flat.created_at, _trace_of(flat)
            else:
                flat = _FlatLine.model_validate_json(text)
                ident, created, trace = flat.id, flat.created_at, _trace_of(flat)
        except ValidationError as e:
            return Rejected(problems_from_validation(e, file=file, line=line), raw=text)
        except ValueError as e:  # from_json
            return Rejected([Problem(file, line, "<json>", str(e))], raw=text)
        return self._finish(raw, line, ident, created, trace)

    def _finish(
        self, raw: bytes, line: int, ident: str | None, created: str | None, trace: ReasoningTrace
    ) -> StoredTrace | Rejected:
        file = self.name
        problems = []
        if created is None:
            at = DEFAULT_CREATED_AT
        else:
            try:
                at = parse_timestamp(created)
            except ValueError:
                msg = f"not an ISO-8601 date and time: {created!r}"
                problems.append(Problem(file, line, "created_at", msg))
        msg = size_problem(trace, len(raw), ident=ident or None, limit=self.max_trace_bytes)
        if msg is not None:
            problems.append(Problem(file, line, "<record>", msg))
        if problems:
            return Rejected(problems, raw=_text(raw))
        return StoredTrace(id=ident or default_trace_id(trace), created_at=at, trace=trace)

    def _key(self, raw: bytes, line: int) -> tuple[int | None, str | None]:
        """The sort key of a line, cheaply; (None, None) if the line is bad."""
        # Ids in their canonical form, as the parsed StoredTrace will have them.
        if (m := _KEY_PREFIX.match(raw)) is not None:
            try:
                return _ts_key(parse_timestamp(m[2].decode())), canonical_id(m[1].decode())
            except ValueError:
                pass
        try:
            data = from_json(raw)
            nested = isinstance(data, dict) and "trace" in data
            ident, created = data.get("id"), data.get("created_at")
            if isinstance(ident, str) and ident and (isinstance(created, str) or not nested):
                at = DEFAULT_CREATED_AT if created is None else parse_timestamp(created)
                return _ts_key(at), canonical_id(ident)
        except (ValueError, AttributeError, TypeError):
            pass
        # No id (its default is the payload's hash), or something is wrong: the full parse decides.
        item = self.parse_line(raw, line)
        if isinstance(item, StoredTrace):
            return _ts_key(item.created_at), item.id
        return None, None

    def _records(self) -> Iterator[tuple[datetime | None, str, int | None, StoredTrace | Rejected]]:
        try:
            f = self.path.open("rb", buffering=1 << 20)
        except OSError as e:
            raise InvalidInput([Problem(self.name, None, "<file>", e.strerror or str(e))]) from None
        with f, tempfile.TemporaryDirectory(prefix="tunixrt-index-") as tmp:
            index = sqlite3.connect(Path(tmp) / "index.sqlite", isolation_level=None)
            try:
                yield from self._ordered(f, index)
            finally:
                index.close()

    def _ordered(
        self, f: Any, index: sqlite3.Connection
    ) -> Iterator[tuple[datetime | None, str, int | None, StoredTrace | Rejected]]:
        # The index is scratch space: no journal, no fsync; its cache bounds the memory.
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-8192"):
            index.execute(f"PRAGMA {pragma}")
        index.execute(
            "CREATE TABLE idx (ts INTEGER, id TEXT, line INTEGER, off INTEGER, len INTEGER)"
        )
        batch: list[tuple[int | None, str | None, int, int, int]] = []
        off = 0
        index.execute("BEGIN")  # one transaction: a commit per row would cost 5x
        size = os.fstat(f.fileno()).st_size
        with tqdm(total=size, desc="index", unit="B", unit_scale=True, disable=None) as bar:
            for line, raw in enumerate(f, start=1):
                start, off = off, off + len(raw)
                raw = raw.rstrip(b"\r\n")
                if not raw.strip():
                    continue  # blank lines (a trailing newline, for one) are not records
                ts, ident = self._key(raw, line)
                batch.append((ts, ident, line, start, len(raw)))
                if len(batch) >= 10_000:
                    index.executemany("INSERT INTO idx VALUES (?,?,?,?,?)", batch)
                    batch.clear()
                    bar.update(off - bar.n)
            index.executemany("INSERT INTO idx VALUES (?,?,?,?,?)", batch)
            bar.update(off - bar.n)
        index.execute("COMMIT")
        self._dups = {
            r[0]
            for r in index.execute(
                "SELECT id FROM idx WHERE id IS NOT NULL GROUP BY id HAVING count(*) > 1"
            )
        }
        since = None if self.since is None else _ts_key(self.since)
        fd = f.fileno()
        rows = index.execute(
            "SELECT ts, id, line, off, len FROM idx WHERE ts IS NULL OR ts >= ?1 OR ?1 IS NULL"
            " ORDER BY ts NULLS LAST, id, line LIMIT coalesce(?2, -1)",
            (since, self.limit),
        )
        for ts, ident, line, start, length in rows:
            # pread: exactly the line, one system call (a buffered seek+read copies 8 KiB or more)
            item = self.parse_line(raw := os.pread(fd, length, start), line)
            if isinstance(item, StoredTrace) and (_ts_key(item.created_at), item.id) != (ts, ident):
                # The first pass read the key from the start of the line: the line repeats it.
                msg = "repeated key: `id` or `created_at` appears twice"
                item = Rejected([Problem(self.name, line, "<json>", msg)], raw=_text(raw))
            if isinstance(item, StoredTrace):
                yield item.created_at, self.name, line, item
            else:
                yield None, self.name, line, item


_Id = Annotated[str, Field(min_length=1, max_length=256)]  # as StoredTrace.id
# `{"id":"...","created_at":"...",` as dumps() writes it: JSON strings without escapes.
_KEY_PREFIX = re.compile(
    rb'\{"id":"([^"\\\x00-\x1f]{1,256})","created_at":"([^"\\\x00-\x1f]{1,64})",'
)


class _FlatLine(ReasoningTrace):
    id: _Id | None = None
    created_at: str | None = None  # parsed by parse_timestamp, in both forms


class _NestedLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: _Id
    created_at: str
    trace: ReasoningTrace


def _trace_of(flat: _FlatLine) -> ReasoningTrace:
    # Already validated as a _FlatLine (a ReasoningTrace plus two fields): no second validation.
    return ReasoningTrace.model_construct(
        trace_version=flat.trace_version,
        prompt=flat.prompt,
        final_answer=flat.final_answer,
        steps=flat.steps,
        meta=flat.meta,
    )

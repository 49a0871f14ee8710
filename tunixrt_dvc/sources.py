"""Trace sources: JSONL files, SQLite and PostgreSQL stores, UNGAR episodes, behind one interface.

`open_source(url)` returns a `Source`. Iterating it yields, in (created_at, id) order, one item
per record: a `StoredTrace`, or a `Rejected` (the `Problem`s of a bad record, with its raw text).
Nothing is held per record, so memory does not grow with the number of traces: the stores sort in
the database, a JSONL file is sorted through an on-disk index (see `JsonlSource`).
"""

from __future__ import annotations

import os
import re
import sqlite3
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar
from urllib.parse import quote, urlsplit, urlunsplit

import click
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import from_json
from tqdm import tqdm

from tunixrt_dvc.errors import InvalidInput, Problem
from tunixrt_dvc.schemas import (
    MAX_TRACE_BYTES,
    ReasoningTrace,
    SourceKind,
    StoredTrace,
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


def size_problem(trace: ReasoningTrace, raw_len: int) -> str | None:
    """Why the serialized trace is too big, or None. `raw_len`: bytes of the JSON it was read from.

    Re-serializing costs as much as parsing, so it is skipped when the input is small enough: the
    canonical form can only be longer than the input through numbers (`1e15` is written
    `1000000000000000.0`, 4.5x) and an absent `meta` (`,"meta":null`), hence the bound 5x + 16.
    """
    if raw_len * 5 + 16 <= MAX_TRACE_BYTES:
        return None
    try:
        n = trace_bytes(trace)
    except ValueError as e:
        return f"cannot be serialized: {e}"
    if n > MAX_TRACE_BYTES:
        return f"serialized trace is {n} bytes, over the limit of {MAX_TRACE_BYTES}"
    return None


def validation_problems(
    err: ValidationError, *, file: str, line: int | None, prefix: str = ""
) -> list[Problem]:
    out = []
    for e in err.errors():
        if e["type"] == "json_invalid":
            out.append(Problem(file, line, "<json>", e["msg"].removeprefix("Invalid JSON: ")))
            continue
        loc = ".".join(str(p) for p in e["loc"])
        field = f"{prefix}{loc}" if loc else (prefix.rstrip(".") or "<record>")
        out.append(Problem(file, line, field, e["msg"]))
    return out


def _text(raw: bytes) -> str:
    """Raw bytes as text for a rejects file (invalid UTF-8 shown as escapes)."""
    return raw.decode("utf-8", errors="backslashreplace")


class Source(ABC):
    """Records of one source in (created_at, id) order; see the module docstring."""

    kind: ClassVar[SourceKind]

    def __init__(self, name: str, *, since: datetime | None, limit: int | None):
        self.name = name
        self.since = since
        self.limit = limit
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


# --- JSONL -------------------------------------------------------------------------------------


class JsonlSource(Source):
    """A JSONL file: one trace per line, flat (the ReasoningTrace fields plus optional `id` and
    `created_at`) or nested (`{"id", "created_at", "trace"}`, as `schemas.dumps(StoredTrace)`).

    Two passes keep memory flat whatever the order of the file: the first reads only each line's
    key into a temporary SQLite index (on disk), which sorts it; the second parses and validates
    the lines in that order, reading each at its offset.
    """

    kind = "jsonl"

    def __init__(self, path: Path, *, since: datetime | None, limit: int | None):
        super().__init__(str(path), since=since, limit=limit)
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
            return Rejected(validation_problems(e, file=file, line=line), raw=text)
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
        if (msg := size_problem(trace, len(raw))) is not None:
            problems.append(Problem(file, line, "<record>", msg))
        if problems:
            return Rejected(problems, raw=_text(raw))
        return StoredTrace(id=ident or default_trace_id(trace), created_at=at, trace=trace)

    def _key(self, raw: bytes, line: int) -> tuple[int | None, str | None]:
        """The sort key of a line, cheaply; (None, None) if the line is bad."""
        if (m := _KEY_PREFIX.match(raw)) is not None:
            try:
                return _ts_key(parse_timestamp(m[2].decode())), m[1].decode()
            except ValueError:
                pass
        try:
            data = from_json(raw)
            nested = isinstance(data, dict) and "trace" in data
            ident, created = data.get("id"), data.get("created_at")
            if isinstance(ident, str) and ident and (isinstance(created, str) or not nested):
                at = DEFAULT_CREATED_AT if created is None else parse_timestamp(created)
                return _ts_key(at), ident
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


# --- databases ---------------------------------------------------------------------------------


def _row_item(
    file: str,
    ident: str,
    created: datetime | None,
    version: str | None,
    payload: str | None,
    payload_len: int,
    problems: list[Problem],
) -> StoredTrace | Rejected:
    """Validate one database row whose id, time and text have been decoded (`problems` so far)."""
    trace = None
    if payload is None:
        problems.append(Problem(file, None, "payload", "is NULL"))
    else:
        try:
            trace = ReasoningTrace.model_validate_json(payload)
        except ValidationError as e:
            problems.extend(validation_problems(e, file=file, line=None, prefix="payload."))
    if trace is not None:
        if version != trace.trace_version:
            msg = f"column is {version!r} but the payload's is {trace.trace_version!r}"
            problems.append(Problem(file, None, "trace_version", msg))
        if (msg := size_problem(trace, payload_len)) is not None:
            problems.append(Problem(file, None, "payload", msg))
    if problems or trace is None or created is None:
        return Rejected(problems, raw=payload)
    try:
        return StoredTrace(id=ident, created_at=created, trace=trace)
    except ValidationError as e:
        return Rejected(validation_problems(e, file=file, line=None), raw=payload)


class SqliteSource(Source):
    """A SQLite file with tunix-rt's `traces` table; `created_at` is ISO-8601 text.

    The database sorts by the text of created_at, which is time order only when every value has
    the same format and offset (as the ones `TraceStore` writes). A first, cheap pass over the
    (created_at, id) index checks that; if not, rows are sorted by their parsed time instead.
    """

    kind = "sqlite"

    def __init__(self, path: Path, *, since: datetime | None, limit: int | None):
        super().__init__(f"sqlite:{path}", since=since, limit=limit)
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise InvalidInput([Problem(self.name, None, "<file>", "not found")])
        conn = sqlite3.connect(f"file:{quote(str(self.path))}?mode=ro", uri=True)
        conn.text_factory = bytes  # decode ourselves: invalid UTF-8 is a problem of one row
        conn.create_function("ts_key", 1, _sqlite_ts_key, deterministic=True)
        try:
            cols = {r[1].decode() for r in conn.execute(f"PRAGMA table_info({TABLE})")}
        except sqlite3.DatabaseError as e:
            conn.close()
            raise InvalidInput([Problem(self.name, None, "<file>", str(e))]) from None
        if missing := [c for c in COLUMNS if c not in cols]:
            conn.close()
            msg = f"needs table {TABLE!r} with columns {', '.join(COLUMNS)} (missing: {missing})"
            raise InvalidInput([Problem(self.name, None, TABLE, msg)])
        return conn

    def _duplicate_ids(self, conn: sqlite3.Connection) -> set[str]:
        for idx in conn.execute(f"PRAGMA index_list({TABLE})").fetchall():
            if idx[2]:  # unique
                cols = [r[2] for r in conn.execute(f"PRAGMA index_info({idx[1].decode()!r})")]
                if cols == [b"id"]:
                    return set()
        sql = f"SELECT id FROM {TABLE} GROUP BY id HAVING count(*) > 1"
        return {r[0].decode("utf-8", "replace") for r in conn.execute(sql) if r[0] is not None}

    def _text_order_is_time_order(self, conn: sqlite3.Connection) -> bool:
        last = None
        sql = f"SELECT ts_key(created_at), id, typeof(id) FROM {TABLE} ORDER BY created_at, id"
        for ts, ident, kind in conn.execute(sql):
            if ts is None or kind != b"text":
                return False
            key = (ts, ident)
            if last is not None and key < last:
                return False
            last = key
        return True

    def _records(self) -> Iterator[tuple[datetime | None, str, int | None, StoredTrace | Rejected]]:
        conn = self._connect()
        try:
            self._dups = self._duplicate_ids(conn)
            if self._text_order_is_time_order(conn):
                order = "created_at, id"  # the index's order
            else:
                order = "ts_key(created_at) NULLS LAST, id COLLATE BINARY"
            sql = (
                f"SELECT id, typeof(id), created_at, trace_version, payload FROM {TABLE}"
                f" ORDER BY {order}"
            )
            for row in conn.execute(sql):
                if (rec := self._row(*row)) is not None:
                    yield rec
        finally:
            conn.close()

    def _row(
        self, raw_id: Any, id_type: bytes, raw_at: Any, raw_version: Any, raw_payload: Any
    ) -> tuple[datetime | None, str, int | None, StoredTrace | Rejected] | None:
        """One row as (created_at, file, line, item); None if it is before `since`."""
        problems: list[Problem] = []
        ident = _decode(raw_id)
        file = f"{self.name}#id={ident if ident is not None else _text(bytes(raw_id or b''))}"
        if id_type != b"text" or not ident:
            msg = f"must be non-empty UTF-8 text (is {id_type.decode()})"
            problems.append(Problem(file, None, "id", msg))
        created = None
        at_text = _decode(raw_at)
        try:
            created = parse_timestamp(at_text) if at_text is not None else None
        except ValueError:
            pass
        if created is None:
            msg = f"not an ISO-8601 date and time: {_show(raw_at)}"
            problems.append(Problem(file, None, "created_at", msg))
        elif self.since is not None and created < self.since:
            return None  # out of range: not worth parsing
        version = _decode(raw_version)
        payload = _decode(raw_payload)
        if raw_payload is not None and payload is None:
            problems.append(Problem(file, None, "payload", "invalid UTF-8"))
            return created, file, None, Rejected(problems, raw=_text(bytes(raw_payload)))
        plen = len(raw_payload) if isinstance(raw_payload, bytes) else 0
        item = _row_item(file, ident or "", created, version, payload, plen, problems)
        return created, file, None, item


def _decode(value: Any) -> str | None:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None if value is None else str(value)


def _show(value: Any) -> str:
    return repr(_text(value)) if isinstance(value, bytes) else repr(value)


def _sqlite_ts_key(value: Any) -> int | None:
    text = _decode(value)
    try:
        return _ts_key(parse_timestamp(text)) if text is not None else None
    except ValueError:
        return None


class PostgresSource(Source):
    """A PostgreSQL database with tunix-rt's `traces` table, read through a server-side cursor."""

    kind = "postgresql"

    def __init__(self, url: str, *, since: datetime | None, limit: int | None):
        super().__init__(redact(url), since=since, limit=limit)
        self.url = url

    @staticmethod
    def _duplicate_ids(conn: Any) -> set[str]:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT 1 FROM pg_index i JOIN pg_attribute a"
                " ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
                " WHERE i.indrelid = %s::regclass AND i.indisunique AND i.indnatts = 1"
                " AND a.attname = 'id'",
                (TABLE,),
            )
            if cur.fetchone():
                return set()
            cur.execute(f"SELECT id::text FROM {TABLE} GROUP BY id HAVING count(*) > 1")
            return {r[0] for r in cur}

    def _records(self) -> Iterator[tuple[datetime | None, str, int | None, StoredTrace | Rejected]]:
        conn = connect_postgres(self.url, name=self.name)
        try:
            id_type = _check_pg_table(conn, self.name)
            self._dups = self._duplicate_ids(conn)
            # uuid sorts as its bytes, which is the order of its text; text ids need "C" collation
            # to sort by code point as everywhere else.
            id_order = "id" if id_type == "uuid" else 'id COLLATE "C"'
            where = "WHERE created_at >= %(since)s OR created_at IS NULL" if self.since else ""
            sql = (
                f"SELECT id::text, created_at, trace_version, payload::text FROM {TABLE} {where}"
                f" ORDER BY created_at, {id_order} LIMIT %(limit)s"
            )
            with conn.cursor(name="tunixrt_traces") as cur:
                cur.itersize = 2000
                cur.execute(sql, {"since": self.since, "limit": self.limit})
                for ident, created, version, payload in cur:
                    file = f"{self.name}#id={ident}"
                    problems = []
                    if created is None:
                        problems.append(Problem(file, None, "created_at", "is NULL"))
                    else:
                        created = created.astimezone(UTC)
                    plen = len(payload.encode()) if payload is not None else 0
                    item = _row_item(file, ident, created, version, payload, plen, problems)
                    yield created, file, None, item
        finally:
            conn.close()


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def connect_postgres(url: str, *, name: str) -> Any:
    import psycopg  # imported on use: only PostgreSQL sources and stores need it

    try:
        return psycopg.connect(url)
    except psycopg.Error as e:
        raise click.ClickException(f"{name}: cannot connect: {e}") from None


def _check_pg_table(conn: Any, name: str) -> str:
    """The data type of the id column; raises InvalidInput if the table is not there."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s",
            (TABLE,),
        )
        cols = dict(cur.fetchall())
    if missing := [c for c in COLUMNS if c not in cols]:
        msg = f"needs table {TABLE!r} with columns {', '.join(COLUMNS)} (missing: {missing})"
        raise InvalidInput([Problem(name, None, TABLE, msg)])
    return cols["id"]


# --- UNGAR -------------------------------------------------------------------------------------


class UngarSource(Source):
    """UNGAR High Card Duel episodes played on the fly (see tunixrt_dvc.ungar)."""

    kind = "ungar"

    def __init__(self, url: str, *, since: datetime | None, limit: int | None):
        from tunixrt_dvc import ungar

        super().__init__(url, since=since, limit=limit)
        self.episodes, self.seed = ungar.parse_url(url)
        self._api = ungar.load()  # fails here, with exit status 2, when ungar is not installed

    def _records(self) -> Iterator[tuple[datetime | None, str, int | None, StoredTrace | Rejected]]:
        from tunixrt_dvc import ungar

        for k, stored in enumerate(ungar.traces(self._api, episodes=self.episodes, seed=self.seed)):
            yield stored.created_at, self.name, k + 1, stored


# --- choosing a source -------------------------------------------------------------------------


def open_source(url: str, *, since: datetime | None = None, limit: int | None = None) -> Source:
    """The source a URL names: `PATH.jsonl` or `jsonl:PATH`; `sqlite:PATH` or `PATH.sqlite`/`.db`;
    `postgresql://...`; `ungar:high_card_duel?episodes=N&seed=S`.

    `since` keeps records created at or after it (naive means UTC); `limit` stops after that many
    records (valid or not). Opening checks what is cheap to check; reading reports the rest.
    """
    if limit is not None and limit < 1:
        raise InvalidInput([Problem("--limit", None, "limit", f"must be >= 1, got {limit}")])
    if since is not None:
        since = since.replace(tzinfo=UTC) if since.tzinfo is None else since.astimezone(UTC)
    kw: dict[str, Any] = {"since": since, "limit": limit}
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresSource(url, **kw)
    if url.startswith("ungar:"):
        return UngarSource(url, **kw)
    if url.startswith("sqlite:"):
        return SqliteSource(Path(url.removeprefix("sqlite:")), **kw)
    if url.startswith("jsonl:"):
        return JsonlSource(Path(url.removeprefix("jsonl:")), **kw)
    suffix = Path(url).suffix.lower()
    if suffix == ".jsonl":
        return JsonlSource(Path(url), **kw)
    if suffix in (".sqlite", ".sqlite3", ".db"):
        return SqliteSource(Path(url), **kw)
    msg = (
        "unknown kind of source: use PATH.jsonl, jsonl:PATH, sqlite:PATH, PATH.sqlite, PATH.db,"
        " postgresql://... or ungar:high_card_duel?episodes=N&seed=S"
    )
    raise InvalidInput([Problem(url, None, "<source>", msg)])

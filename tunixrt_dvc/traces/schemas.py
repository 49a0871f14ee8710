"""The data contract: reasoning traces in (tunix-rt's format) and training examples out."""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_TRACE_BYTES = 1024 * 1024  # the default of `export.max_trace_bytes`

SourceKind = Literal["jsonl", "sqlite", "postgresql", "ungar", "builtin"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TraceStep(_Strict):
    """One numbered step of the work."""

    i: Annotated[int, Field(ge=0, strict=True)]
    type: Annotated[str, Field(min_length=1, max_length=64)]
    content: Annotated[str, Field(min_length=1, max_length=20_000)]


class ReasoningTrace(_Strict):
    """A trace as tunix-rt stores it (`payload` of its `traces` table)."""

    trace_version: Annotated[str, Field(min_length=1, max_length=64)]  # tunix-rt: String(64)
    prompt: Annotated[str, Field(min_length=1, max_length=50_000)]
    final_answer: Annotated[str, Field(min_length=1, max_length=50_000)]
    steps: Annotated[list[TraceStep], Field(min_length=1, max_length=1_000)]
    meta: dict[str, Any] | None = None

    @field_validator("steps")
    @classmethod
    def _unique_step_numbers(cls, steps: list[TraceStep]) -> list[TraceStep]:
        seen: set[int] = set()
        for s in steps:
            if s.i in seen:
                raise ValueError(f"duplicate step number i={s.i}")
            seen.add(s.i)
        return steps

    @field_validator("meta")
    @classmethod
    def _json_numbers_only(cls, meta: dict[str, Any] | None) -> dict[str, Any] | None:
        # The JSON parser accepts NaN and 1e400; they have no JSON serialization.
        stack: list[Any] = [meta]
        while stack:
            v = stack.pop()
            t = type(v)
            if t is str or t is int or t is bool or v is None:  # the common case, first
                continue
            if t is float:
                if not math.isfinite(v):
                    raise ValueError(f"{v} is not a JSON number")
            elif isinstance(v, dict):
                stack.extend(v.values())
            elif isinstance(v, list | tuple):
                stack.extend(v)
        return meta


# A UUID id as SQLAlchemy's Uuid stores it in SQLite (32 hex digits) or as PostgreSQL's uuid
# prints it (8-4-4-4-12), in either case; and the canonical form, PostgreSQL's.
_UUID_TEXT = re.compile(
    r"[0-9A-Fa-f]{32}|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
).fullmatch
_CANONICAL_UUID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
).fullmatch


def is_uuid(ident: str) -> bool:
    """Whether `ident` is a UUID in one of the spellings `canonical_id` reads."""
    return (len(ident) == 36 or len(ident) == 32) and _UUID_TEXT(ident) is not None


def canonical_id(ident: str) -> str:
    """One text per trace identity: a UUID id (32 hex digits, as tunix-rt's SQLite stores it, or
    8-4-4-4-12, either case) becomes its dashed lowercase form (PostgreSQL's `uuid::text`); any
    other id is kept as it is."""
    n = len(ident)
    if n != 36 and n != 32:
        return ident
    if n == 36 and _CANONICAL_UUID(ident) is not None:
        return ident  # the common case
    if _UUID_TEXT(ident) is None:
        return ident
    h = ident.replace("-", "").lower()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class StoredTrace(_Strict):
    """A trace with the identity and time the store gave it."""

    id: Annotated[str, Field(min_length=1, max_length=256)]
    created_at: datetime
    trace: ReasoningTrace

    @field_validator("id")
    @classmethod
    def _canonical(cls, ident: str) -> str:
        # One representation per identity, as for times: a UUID read from tunix-rt's SQLite
        # (32 hex digits) and from PostgreSQL (dashed) is the same trace, with the same bytes.
        return canonical_id(ident)

    @field_validator("created_at")
    @classmethod
    def _utc(cls, t: datetime) -> datetime:
        # One representation per instant, so every source writes the same bytes (naive = UTC).
        return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


class Response(_Strict):
    """The structured work of an example, not yet rendered by a recipe."""

    steps: list[str]
    final_answer: str


class ExampleMetadata(_Strict):
    source_trace_id: str
    created_at: str
    tags: list[str] = []
    source: SourceKind


class TrainingExample(_Strict):
    """One SFT example; `id` is derived from the source trace, so reruns give the same id."""

    id: str
    prompt: str
    response: Response
    metadata: ExampleMetadata


def dumps(model: BaseModel) -> str:
    """Stable serialization: field order, UTF-8, no whitespace; one JSONL line without `\\n`."""
    if type(model) in _TEXT_ONLY:
        # Same bytes as below for strings (every code point is checked in test_schemas), 3x
        # faster; floats would differ (1e-07 vs 1e-7), and these models have none.
        return model.model_dump_json()
    return json.dumps(
        model.model_dump(mode="json"), ensure_ascii=False, separators=(",", ":"), allow_nan=False
    )


_TEXT_ONLY = (TrainingExample, Response, ExampleMetadata)


def trace_bytes(trace: ReasoningTrace) -> int:
    return len(dumps(trace).encode("utf-8"))


def example_id(trace_id: str) -> str:
    """Deterministic example id: a hash of the source trace's id in its canonical form
    (`canonical_id`), so it is the same in every store and spelling."""
    return _id_hash(canonical_id(trace_id))


def _id_hash(canonical: str) -> str:
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def trace_to_example(stored: StoredTrace, *, source: SourceKind) -> TrainingExample:
    """The response keeps the steps in their numbered order."""
    t = stored.trace
    tags = (t.meta or {}).get("tags") or []
    return TrainingExample(
        id=_id_hash(stored.id),  # a StoredTrace's id is canonical (its validator)
        prompt=t.prompt,
        response=Response(
            steps=[s.content for s in sorted(t.steps, key=lambda s: s.i)],
            final_answer=t.final_answer,
        ),
        metadata=ExampleMetadata(
            source_trace_id=stored.id,
            created_at=stored.created_at.isoformat(),  # UTC, `+00:00`, whatever the store wrote
            tags=[str(x) for x in tags] if isinstance(tags, list) else [str(tags)],
            source=source,
        ),
    )

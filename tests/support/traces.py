"""Small valid traces for tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from tunixrt_dvc.traces.schemas import ReasoningTrace, StoredTrace, TraceStep


def make_trace(k: int, *, prompt: str | None = None, **meta: object) -> ReasoningTrace:
    """A small valid trace whose content depends on k."""
    return ReasoningTrace(
        trace_version="1.0",
        prompt=prompt or f"What is {k} + 7? Show your work.",
        final_answer=str(k + 7),
        steps=[
            TraceStep(i=0, type="column", content=f"{k % 10} + 7 = {k % 10 + 7}"),
            TraceStep(i=1, type="result", content=f"{k} + 7 = {k + 7}"),
        ],
        meta={"tags": ["add"], **meta},
    )


def make_stored(k: int, **kw: object) -> StoredTrace:
    """make_trace(k) with a UUID and a time k seconds after 2025-01-01 UTC."""
    return StoredTrace(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"test:{k}")),
        created_at=datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=k),
        trace=make_trace(k, **kw),
    )

"""The data contract: every limit, round trips, stable bytes."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from tunixrt_dvc.traces.schemas import (
    MAX_TRACE_BYTES,
    ExampleMetadata,
    ReasoningTrace,
    Response,
    StoredTrace,
    TraceStep,
    TrainingExample,
    canonical_id,
    dumps,
    example_id,
    is_uuid,
    trace_bytes,
    trace_to_example,
)


def trace(**kw) -> dict:
    base = {
        "trace_version": "1.0",
        "prompt": "What is 12 + 9?",
        "final_answer": "21",
        "steps": [
            {"i": 0, "type": "column", "content": "2 + 9 = 11"},
            {"i": 1, "type": "result", "content": "12 + 9 = 21"},
        ],
        "meta": {"tags": ["add"]},
    }
    return {**base, **kw}


def step(**kw) -> dict:
    return {"i": 0, "type": "t", "content": "c", **kw}


def fails(data: dict, field: str, model=ReasoningTrace) -> None:
    with pytest.raises(ValidationError) as e:
        model.model_validate(data)
    assert field in {".".join(map(str, err["loc"])) for err in e.value.errors()}


@pytest.mark.parametrize(
    ("field", "low", "high"),
    [("trace_version", 1, 64), ("prompt", 1, 50_000), ("final_answer", 1, 50_000)],
)
def test_string_limits(field, low, high):
    ReasoningTrace.model_validate(trace(**{field: "x" * low}))
    ReasoningTrace.model_validate(trace(**{field: "x" * high}))
    fails(trace(**{field: "x" * (low - 1)}), field)
    fails(trace(**{field: "x" * (high + 1)}), field)
    fails(trace(**{field: 5}), field)
    fails({k: v for k, v in trace().items() if k != field}, field)


def test_step_limits():
    ReasoningTrace.model_validate(trace(steps=[step(i=k) for k in range(1000)]))
    fails(trace(steps=[step(i=k) for k in range(1001)]), "steps")
    fails(trace(steps=[]), "steps")
    fails(trace(steps=[step(i=1), step(i=1)]), "steps")  # step numbers are unique
    ReasoningTrace.model_validate(trace(steps=[step(type="x" * 64, content="y" * 20_000)]))
    fails(trace(steps=[step(type="")]), "steps.0.type")
    fails(trace(steps=[step(type="x" * 65)]), "steps.0.type")
    fails(trace(steps=[step(content="")]), "steps.0.content")
    fails(trace(steps=[step(content="y" * 20_001)]), "steps.0.content")
    fails(trace(steps=[step(i=-1)]), "steps.0.i")
    for not_int in ("1", 1.0, True):  # strict: no coercion
        fails(trace(steps=[step(i=not_int)]), "steps.0.i")
    fails(trace(steps=[step(extra=1)]), "steps.0.extra")


def test_meta_is_an_object_of_json_values():
    ReasoningTrace.model_validate(trace(meta=None))
    ReasoningTrace.model_validate(trace(meta={"a": [1, 2.5, {"b": None}]}))
    fails(trace(meta=[1]), "meta")
    for bad in (float("nan"), float("inf"), [{"x": -float("inf")}]):
        fails(trace(meta={"x": bad}), "meta")
    fails(trace(unknown=1), "unknown")


def test_stored_trace_id_and_time():
    t = ReasoningTrace.model_validate(trace())
    StoredTrace(id="x" * 256, created_at=datetime(2025, 1, 1), trace=t)
    fails({"id": "", "created_at": "2025-01-01T00:00:00Z", "trace": trace()}, "id", StoredTrace)
    fails(
        {"id": "x" * 257, "created_at": "2025-01-01T00:00:00Z", "trace": trace()}, "id", StoredTrace
    )
    # one representation per instant: UTC (naive times are taken as UTC)
    plus2 = timezone(timedelta(hours=2))
    a = StoredTrace(id="a", created_at=datetime(2025, 1, 1, 2, tzinfo=plus2), trace=t)
    b = StoredTrace(id="a", created_at=datetime(2025, 1, 1, 0), trace=t)
    assert a == b and a.created_at.tzinfo == UTC and dumps(a) == dumps(b)


def test_a_uuid_id_has_one_canonical_form_and_one_example_id():
    u = uuid.UUID("1f0e4a2b-9c3d-4e5f-8a6b-7c8d9e0f1a2b")
    # dashed (PostgreSQL, JSONL), 32 hex digits (tunix-rt's SQLite), either case
    forms = [str(u), u.hex, u.hex.upper(), str(u).upper()]
    t = ReasoningTrace.model_validate(trace())
    at = datetime(2025, 1, 1, tzinfo=UTC)
    assert {canonical_id(f) for f in forms} == {str(u)}
    assert {StoredTrace(id=f, created_at=at, trace=t).id for f in forms} == {str(u)}
    assert all(is_uuid(f) for f in forms)
    sha = hashlib.sha256(str(u).encode()).hexdigest()[:16]
    assert {example_id(f) for f in forms} == {sha}
    e = trace_to_example(StoredTrace(id=u.hex, created_at=at, trace=t), source="sqlite")
    assert e.id == sha and e.metadata.source_trace_id == str(u)
    # anything else is an id of its own, kept as it is
    others = ["abc", "1f0e", "g" * 32, str(u)[:-1] + "g", " " + u.hex[1:], u.hex + "\n"]
    others += ["{" + str(u) + "}", f"urn:uuid:{u}", u.hex[:20] + "-" + u.hex[20:], "-" * 36]
    for other in others:
        assert canonical_id(other) == other and not is_uuid(other), other
        assert example_id(other) == hashlib.sha256(other.encode()).hexdigest()[:16]
        assert StoredTrace(id=other, created_at=at, trace=t).id == other


def test_trace_bytes_is_the_canonical_size():
    t = ReasoningTrace.model_validate(trace(prompt="é" * 10))
    assert trace_bytes(t) == len(dumps(t).encode("utf-8"))
    assert len(dumps(t)) < trace_bytes(t)  # UTF-8 bytes, not characters
    # the largest trace the contract allows (1000 steps of 20,000 chars) is far over the limit
    big = ReasoningTrace.model_validate(
        trace(steps=[step(i=k, content="y" * 2_000) for k in range(600)])
    )
    assert trace_bytes(big) > MAX_TRACE_BYTES


def test_round_trips():
    t = ReasoningTrace.model_validate(
        trace(meta={"tags": ["x"], "n": 1e-7, "deep": {"a": [True, None]}})
    )
    assert ReasoningTrace.model_validate_json(dumps(t)) == t
    s = StoredTrace(
        id="id-1", created_at=datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=UTC), trace=t
    )
    assert StoredTrace.model_validate_json(dumps(s)) == s
    e = trace_to_example(s, source="sqlite")
    assert TrainingExample.model_validate_json(dumps(e)) == e
    assert dumps(TrainingExample.model_validate_json(dumps(e))) == dumps(e)


def test_stable_bytes(snapshot):
    t = ReasoningTrace.model_validate(
        trace(prompt='Ünïcödé  \t"quoted"\nline\u2028', meta={"z": 1, "a": 2, "tags": "single"})
    )
    s = StoredTrace(id="1f0e", created_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC), trace=t)
    line = dumps(trace_to_example(s, source="jsonl"))
    assert "\n" not in line and line == dumps(trace_to_example(s, source="jsonl"))
    assert json.dumps(json.loads(line), ensure_ascii=False, separators=(",", ":")) == line
    assert "Ünïcödé" in line  # UTF-8 text, not \\u escapes
    assert list(json.loads(line)) == ["id", "prompt", "response", "metadata"]  # fixed key order
    snapshot.assert_match(line + "\n", "training_example.jsonl")
    unchecked = t.model_copy(update={"meta": {"x": float("nan")}})  # bypasses validation
    assert json.loads(dumps(unchecked))["meta"] == {"x": None}  # never NaN, which is not JSON


def test_trace_to_example():
    t = ReasoningTrace.model_validate(
        trace(
            steps=[step(i=5, content="last"), step(i=0, content="first"), step(i=2, content="mid")]
        )
    )
    s = StoredTrace(id="abc", created_at=datetime(2025, 1, 1, tzinfo=UTC), trace=t)
    e = trace_to_example(s, source="postgresql")
    assert e.response.steps == ["first", "mid", "last"]  # numbered order, not list order
    assert e.id == example_id("abc") == trace_to_example(s, source="jsonl").id
    assert e.metadata.source_trace_id == "abc" and e.metadata.source == "postgresql"
    assert e.metadata.created_at == "2025-01-01T00:00:00+00:00"
    assert e.metadata.tags == ["add"]
    for meta, tags in ((None, []), ({"tags": "one"}, ["one"]), ({"tags": [1, "b"]}, ["1", "b"])):
        st = s.model_copy(update={"trace": t.model_copy(update={"meta": meta})})
        assert trace_to_example(st, source="jsonl").metadata.tags == tags


def test_models_are_frozen():
    t = ReasoningTrace.model_validate(trace())
    with pytest.raises(ValidationError):
        t.prompt = "changed"
    with pytest.raises(ValidationError):
        TraceStep(i=0, type="t", content="c").i = 1


def test_fast_serializer_writes_the_same_bytes_for_every_code_point():
    # dumps() uses pydantic's serializer for the text-only models: it must escape exactly as
    # json.dumps(ensure_ascii=False) does, for every character (surrogates cannot be in a str
    # that came from valid UTF-8 or JSON).
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for k in range(0, len(chars), 4096):
        text = "".join(chars[k : k + 4096])
        e = TrainingExample(
            id=text,
            prompt=text,
            response=Response(steps=[text, "x"], final_answer=text),
            metadata=ExampleMetadata(
                source_trace_id=text, created_at=text, tags=[text], source="jsonl"
            ),
        )
        slow = json.dumps(e.model_dump(mode="json"), ensure_ascii=False, separators=(",", ":"))
        assert dumps(e) == slow

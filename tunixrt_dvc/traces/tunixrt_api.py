"""Sending traces to a tunix-rt server: `POST {api_url}/api/traces/batch`, in chunks.

tunix-rt's batch endpoint (backend/tunix_rt_backend/routers/traces.py) takes a JSON array of
ReasoningTrace payloads (`trace_version`, `prompt`, `final_answer`, `steps`, `meta`), at most 1,000
per request, stores them in one transaction (all or nothing) and answers 201 with
`{"created_count": N, "traces": [{"id", "created_at", "trace_version"}, ...]}` in request order;
400 for an empty or oversized batch, 422 when a trace fails validation. The server assigns its own
ids, so a receipt maps our ids (or line numbers) to the server's.

Nothing is retried: after a timeout the server may have stored the chunk, and a retry could store
it twice. A chunk counts as sent only when the server confirmed every trace in it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from tqdm import tqdm

from tunixrt_dvc.errors import InvalidInput, Problem, ResourceError, problems_from_validation
from tunixrt_dvc.io import jsonl_lines
from tunixrt_dvc.traces.schemas import MAX_TRACE_BYTES, ReasoningTrace, StoredTrace, trace_bytes

BATCH_PATH = "/api/traces/batch"
MAX_BATCH = 1_000  # tunix-rt refuses larger batches with a 400


class ChunkReceipt(BaseModel):
    """One chunk the server confirmed."""

    model_config = ConfigDict(frozen=True)

    index: int  # 1-based
    first_line: int
    last_line: int
    local_ids: list[str]  # the file's ids; `line:N` for records without one
    server_ids: list[str]


class PostResult(BaseModel):
    """What was sent; on failure, `error` says why and `failed_chunk` which chunk."""

    url: str
    total: int
    chunk_size: int
    n_chunks: int
    accepted: list[ChunkReceipt] = []
    failed_chunk: int | None = None
    error: str | None = None

    @property
    def sent(self) -> int:
        return sum(len(c.local_ids) for c in self.accepted)

    @property
    def ok(self) -> bool:
        return self.error is None


class PostError(ResourceError):
    """A chunk was not confirmed; `result` holds exactly what was before it."""

    def __init__(self, result: PostResult):
        self.result = result
        super().__init__(result.error or "post failed")


def _records(path: Path) -> Iterator[tuple[int, str, dict[str, Any] | list[Problem]]]:
    """(line, local id, payload) per non-blank line, or problems instead of the payload.

    A line is a stored trace (`{"id", "created_at", "trace"}`, as `report/eval_traces.jsonl`) or a
    bare ReasoningTrace (tunix-rt's own JSONL).
    """
    for lineno, text in jsonl_lines(path):
        local_id = f"line:{lineno}"
        if isinstance(text, Problem):
            yield lineno, local_id, [text]
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            yield lineno, local_id, [Problem(str(path), lineno, "<json>", e.msg)]
            continue
        try:
            if isinstance(data, dict) and "trace" in data:
                stored = StoredTrace.model_validate(data)
                trace, local_id = stored.trace, stored.id
            else:
                trace = ReasoningTrace.model_validate(data)
        except ValidationError as e:
            yield lineno, local_id, problems_from_validation(e, file=str(path), line=lineno)
            continue
        if trace_bytes(trace) > MAX_TRACE_BYTES:
            msg = f"serialized trace is over {MAX_TRACE_BYTES} bytes"
            yield lineno, local_id, [Problem(str(path), lineno, "trace", msg)]
            continue
        yield lineno, local_id, trace.model_dump(mode="json")


def _validate(path: Path) -> int:
    """Count the traces, or raise InvalidInput listing every bad line (before anything is sent)."""
    problems: list[Problem] = []
    n = 0
    for _, _, payload in _records(path):
        if isinstance(payload, list):
            problems.extend(payload)
        else:
            n += 1
    if not problems and n == 0:
        problems.append(Problem(str(path), None, "<file>", "no traces"))
    if problems:
        raise InvalidInput(problems)
    return n


def _chunks(path: Path, size: int) -> Iterator[list[tuple[int, str, dict[str, Any]]]]:
    chunk: list[tuple[int, str, dict[str, Any]]] = []
    for lineno, local_id, payload in _records(path):
        if isinstance(payload, list):  # the file changed since it was validated
            raise InvalidInput(payload)
        chunk.append((lineno, local_id, payload))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _server_ids(body: bytes, expected: int) -> list[str]:
    """Created ids from a batch response; ValueError unless it confirms all `expected` traces."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"the response is not JSON: {body[:200]!r}") from None
    count = data.get("created_count") if isinstance(data, dict) else None
    if count != expected:
        raise ValueError(f"the response confirms {count!r} traces, not {expected}")
    traces = data.get("traces")
    if isinstance(traces, list) and len(traces) == expected:
        return [str(t.get("id")) if isinstance(t, dict) else "" for t in traces]
    return []


def _describe(chunks: list[ChunkReceipt]) -> str:
    if not chunks:
        return "nothing"
    return (
        f"{sum(len(c.local_ids) for c in chunks)} trace(s) in chunk(s) 1-{chunks[-1].index} "
        f"(lines {chunks[0].first_line}-{chunks[-1].last_line})"
    )


def post_traces(
    path: str | Path, *, api_url: str, chunk_size: int = MAX_BATCH, timeout: float = 60.0
) -> PostResult:
    """POST every trace of a JSONL file to tunix-rt in chunks of at most `chunk_size` (<= 1,000).

    The whole file is validated first (InvalidInput, nothing sent). Chunks go in file order; the
    first chunk the server does not confirm (HTTP error, refused connection, timeout, malformed
    answer) stops the run with PostError, whose `result` lists exactly the confirmed chunks.
    """
    if not 1 <= chunk_size <= MAX_BATCH:
        msg = f"must be 1..{MAX_BATCH}, got {chunk_size}"
        raise InvalidInput([Problem("--chunk-size", None, "chunk_size", msg)])
    if not api_url.startswith(("http://", "https://")):
        msg = f"must be an http(s) URL, got {api_url!r}"
        raise InvalidInput([Problem("--api-url", None, "api_url", msg)])
    path = Path(path)
    url = api_url.rstrip("/") + BATCH_PATH
    total = _validate(path)
    n_chunks = -(-total // chunk_size)
    result = PostResult(url=url, total=total, chunk_size=chunk_size, n_chunks=n_chunks)
    with tqdm(total=total, unit="trace", desc="post", disable=None) as bar:
        for index, chunk in enumerate(_chunks(path, chunk_size), start=1):
            lines = f"lines {chunk[0][0]}-{chunk[-1][0]}"
            body = json.dumps([p for *_, p in chunk], ensure_ascii=False).encode("utf-8")
            request = urllib.request.Request(
                url,
                data=body,
                method="POST",
                headers={"Content-Type": "application/json", "Accept": "application/json"},
            )
            error = None
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    server_ids = _server_ids(response.read(), len(chunk))
            except urllib.error.HTTPError as e:
                detail = e.read()[:500].decode("utf-8", "replace")
                error = f"HTTP {e.code} {e.reason}: {detail}"
            except urllib.error.URLError as e:
                reason = e.reason
                if isinstance(reason, ConnectionRefusedError):
                    error = "connection refused (is the tunix-rt server running?)"
                elif isinstance(reason, TimeoutError):
                    error = f"no answer within {timeout:g} s; the server may or may not have it"
                else:
                    error = f"cannot reach the server: {reason}"
            except TimeoutError:
                error = f"no answer within {timeout:g} s; the server may or may not have it"
            except OSError as e:
                error = f"connection lost: {e}; the server may or may not have it"
            except ValueError as e:
                error = f"unexpected answer: {e}; the server may or may not have it"
            if error is not None:
                not_sent = (
                    f"chunks {index + 1}-{n_chunks} were not sent"
                    if index < n_chunks
                    else "no later chunks"
                )
                result.failed_chunk = index
                result.error = (
                    f"POST {url}: chunk {index} of {n_chunks} ({lines}, {len(chunk)} traces) "
                    f"failed: {error}. Confirmed before it: {_describe(result.accepted)}; "
                    f"{not_sent}."
                )
                raise PostError(result)
            result.accepted.append(
                ChunkReceipt(
                    index=index,
                    first_line=chunk[0][0],
                    last_line=chunk[-1][0],
                    local_ids=[local_id for _, local_id, _ in chunk],
                    server_ids=server_ids,
                )
            )
            bar.update(len(chunk))
    return result

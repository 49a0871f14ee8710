"""`post_traces` / `tunixrt traces post` against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner
from pydantic import TypeAdapter

from tunixrt_dvc.errors import InvalidInput
from tunixrt_dvc.traces.cli import post_command
from tunixrt_dvc.traces.schemas import ReasoningTrace, StoredTrace, TraceStep, dumps
from tunixrt_dvc.traces.tunixrt_api import PostError, post_traces

_BATCH = TypeAdapter(list[ReasoningTrace])


class FakeTunixRt(ThreadingHTTPServer):
    """tunix-rt's batch endpoint: validates like the real one, stores, answers 201 with ids."""

    def __init__(self, *, fail_on: set[int] | None = None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fail_on = fail_on or set()  # 1-based request numbers answered with a 500
        self.requests = 0
        self.stored: list[dict] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeTunixRt

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _answer(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        with self.server.lock:
            self.server.requests += 1
            n = self.server.requests
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path != "/api/traces/batch":
            return self._answer(404, {"detail": "Not Found"})
        if n in self.server.fail_on:
            return self._answer(500, {"detail": "database is down"})
        payload = json.loads(body)
        if not isinstance(payload, list) or not 1 <= len(payload) <= 1000:
            return self._answer(400, {"detail": "Batch size must be 1..1000"})
        _BATCH.validate_python(payload)  # a 500 by the server's own crash if invalid
        with self.server.lock:
            self.server.stored.extend(payload)
        created = [
            {"id": str(uuid.uuid4()), "created_at": "2026-01-01T00:00:00Z", "trace_version": "1.0"}
            for _ in payload
        ]
        self._answer(201, {"created_count": len(payload), "traces": created})


@pytest.fixture
def server_factory() -> Iterator:
    servers: list[FakeTunixRt] = []

    def start(**kwargs) -> FakeTunixRt:
        srv = FakeTunixRt(**kwargs)
        threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def _write_traces(path, n: int) -> list[str]:
    ids = []
    with path.open("w", encoding="utf-8") as f:
        for k in range(n):
            trace = ReasoningTrace(
                trace_version="1.0",
                prompt=f"What is {k} + 1?",
                final_answer=str(k + 1),
                steps=[TraceStep(i=0, type="equation", content=f"{k} + 1 = {k + 1}")],
                meta={"k": k},
            )
            stored = StoredTrace(
                id=f"t{k:05d}", created_at=datetime(2025, 1, 1, tzinfo=UTC), trace=trace
            )
            ids.append(stored.id)
            f.write(dumps(stored) + "\n")
    return ids


def test_posts_in_chunks_of_at_most_1000(tmp_path, server_factory) -> None:
    srv = server_factory()
    path = tmp_path / "traces.jsonl"
    ids = _write_traces(path, 2500)
    result = post_traces(path, api_url=srv.url + "/", timeout=10)
    assert result.ok and result.sent == 2500 and result.n_chunks == 3
    assert [len(c.local_ids) for c in result.accepted] == [1000, 1000, 500]
    assert [(c.first_line, c.last_line) for c in result.accepted] == [
        (1, 1000),
        (1001, 2000),
        (2001, 2500),
    ]
    assert [i for c in result.accepted for i in c.local_ids] == ids
    assert all(len(c.server_ids) == len(c.local_ids) for c in result.accepted)
    assert srv.requests == 3
    # The server received the traces themselves, in file order, unchanged.
    assert [t["final_answer"] for t in srv.stored] == [str(k + 1) for k in range(2500)]
    assert srv.stored[7]["steps"] == [{"i": 0, "type": "equation", "content": "7 + 1 = 8"}]


def test_bare_reasoning_traces_and_custom_chunk_size(tmp_path, server_factory) -> None:
    srv = server_factory()
    path = tmp_path / "bare.jsonl"
    lines = [
        json.dumps(
            {
                "trace_version": "1.0",
                "prompt": f"q{k}",
                "final_answer": "a",
                "steps": [{"i": 0, "type": "t", "content": "c"}],
            }
        )
        for k in range(5)
    ]
    path.write_text("\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]) + "\n")
    result = post_traces(path, api_url=srv.url, chunk_size=2, timeout=10)
    assert [c.local_ids for c in result.accepted] == [
        ["line:1", "line:2"],
        ["line:4", "line:5"],
        ["line:6"],
    ]
    assert len(srv.stored) == 5


def test_server_error_on_second_chunk_reports_what_was_sent(tmp_path, server_factory) -> None:
    srv = server_factory(fail_on={2})
    path = tmp_path / "traces.jsonl"
    ids = _write_traces(path, 2500)
    with pytest.raises(PostError) as e:
        post_traces(path, api_url=srv.url, timeout=10)
    result = e.value.result
    assert not result.ok and result.failed_chunk == 2
    assert result.sent == 1000 and [c.index for c in result.accepted] == [1]
    assert result.accepted[0].local_ids == ids[:1000]
    msg = e.value.message
    assert "chunk 2 of 3 (lines 1001-2000, 1000 traces) failed: HTTP 500" in msg
    assert "database is down" in msg
    assert "Confirmed before it: 1000 trace(s) in chunk(s) 1-1 (lines 1-1000)" in msg
    assert "chunks 3-3 were not sent" in msg
    assert srv.requests == 2  # it stopped: the third chunk never went out
    assert len(srv.stored) == 1000


def test_cli_failure_exit_code_and_receipt(tmp_path, server_factory) -> None:
    srv = server_factory(fail_on={2})
    path = tmp_path / "traces.jsonl"
    ids = _write_traces(path, 1500)
    receipt = tmp_path / "receipt.json"
    res = CliRunner().invoke(
        post_command, [str(path), "--api-url", srv.url, "--receipt", str(receipt)]
    )
    assert res.exit_code == 1
    assert "confirmed: chunk 1 (lines 1-1000)" in res.output
    assert "chunk 2 of 2 (lines 1001-1500, 500 traces) failed: HTTP 500" in res.output
    data = json.loads(receipt.read_text())
    assert data["failed_chunk"] == 2
    assert [i for c in data["accepted"] for i in c["local_ids"]] == ids[:1000]


def test_cli_success(tmp_path, server_factory) -> None:
    srv = server_factory()
    path = tmp_path / "traces.jsonl"
    _write_traces(path, 3)
    res = CliRunner().invoke(post_command, [str(path), "--api-url", srv.url])
    assert res.exit_code == 0, res.output
    assert f"posted 3 traces in 1 chunk(s) to {srv.url}/api/traces/batch" in res.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_refused_connection(tmp_path) -> None:
    path = tmp_path / "traces.jsonl"
    _write_traces(path, 3)
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(PostError) as e:
        post_traces(path, api_url=url, timeout=5)
    assert e.value.result.sent == 0 and e.value.result.accepted == []
    assert "chunk 1 of 1 (lines 1-3, 3 traces) failed: connection refused" in e.value.message
    assert "Confirmed before it: nothing" in e.value.message
    res = CliRunner().invoke(post_command, [str(path), "--api-url", url])
    assert res.exit_code == 1 and "connection refused" in res.output


def test_invalid_file_sends_nothing(tmp_path, server_factory) -> None:
    srv = server_factory()
    path = tmp_path / "traces.jsonl"
    _write_traces(path, 3)
    with path.open("a") as f:
        f.write('{"trace_version": "1.0", "prompt": "", "final_answer": "1", "steps": []}\n')
        f.write("not json\n")
    with pytest.raises(InvalidInput) as e:
        post_traces(path, api_url=srv.url, timeout=5)
    msg = e.value.message
    assert f"{path}:4: prompt:" in msg and f"{path}:4: steps:" in msg
    assert f"{path}:5: <json>:" in msg
    assert srv.requests == 0


def test_bad_arguments(tmp_path) -> None:
    path = tmp_path / "traces.jsonl"
    _write_traces(path, 1)
    res = CliRunner().invoke(post_command, [str(path), "--api-url", "x", "--chunk-size", "1001"])
    assert res.exit_code == 2 and "1001" in res.output
    res = CliRunner().invoke(post_command, [str(path), "--api-url", "ftp://host"])
    assert res.exit_code == 2 and "http(s) URL" in res.output

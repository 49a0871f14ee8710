"""Bench row `export`: exporting N traces from SQLite and from JSONL, in a fresh process each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tqdm import tqdm

from tunixrt_dvc.bench.context import BenchContext

_CHILD = """
import json, resource, sys, time
from tunixrt_dvc.task.reservations import load_reservations
from tunixrt_dvc.traces.export import export
def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime
t0, c0 = time.perf_counter(), cpu()
r = export(sys.argv[1], sys.argv[2], reserved=load_reservations(sys.argv[3]))
seconds, cpu_s = time.perf_counter() - t0, cpu() - c0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
print(json.dumps({"seconds": seconds, "cpu_s": cpu_s, "written": r.written, "peak_rss_mb": rss}))
"""


def synthetic_payloads(n: int) -> Iterator[tuple[str, str, str]]:
    """(id, created_at, payload) of n valid traces shaped like the built-in corpus, in an order
    that is not time order (k -> k * 7919 mod n), so that sorting is part of the work."""
    base = datetime(2025, 1, 1, tzinfo=UTC)
    ns = uuid.UUID("3a5e9a3c-2f3b-4d0e-8a53-9c1c1f0b7e21")
    for k in range(n):
        j = (k * 7919) % n if n % 7919 else k
        a, b = 100 + j % 900, 10 + (j * 31) % 90
        ones = a % 10 + b % 10
        tens = a // 10 % 10 + b // 10 + ones // 10
        trace = {
            "trace_version": "1.0",
            "prompt": f"Mia has {a} marbles and finds {b} more. How many marbles does Mia have?",
            "final_answer": str(a + b),
            "steps": [
                {"i": 0, "type": "column", "content": f"{a % 10} + {b % 10} = {ones}"},
                {"i": 1, "type": "column", "content": f"{a // 10 % 10} + {b // 10} = {tens}"},
                {
                    "i": 2,
                    "type": "column",
                    "content": f"{a // 100} + {tens // 10} = {a // 100 + tens // 10}",
                },
                {"i": 3, "type": "result", "content": f"{a} + {b} = {a + b}"},
            ],
            "meta": {"generator": "bench", "category": "add", "tags": ["add", "medium"]},
        }
        at = (base + timedelta(seconds=j)).isoformat(timespec="microseconds")
        yield str(uuid.uuid5(ns, str(j))), at, json.dumps(trace, separators=(",", ":"))


def _inputs(workdir: Path, n: int) -> dict[str, str]:
    """A JSONL file and a SQLite store (TraceStore's schema) of the same n traces; cached."""
    import sqlite3

    from tunixrt_dvc.traces.sqlite import SqliteStore

    jsonl, db = workdir / f"traces-{n}.jsonl", workdir / f"traces-{n}.sqlite"
    if not (jsonl.exists() and db.exists()):
        tmp_j, tmp_db = jsonl.with_suffix(".tmp"), db.with_suffix(".tmp.sqlite")
        tmp_db.unlink(missing_ok=True)
        with SqliteStore(tmp_db) as store:
            store.create_schema()
        conn = sqlite3.connect(tmp_db)
        with tmp_j.open("w", encoding="utf-8") as f:
            rows = []
            gen = synthetic_payloads(n)
            for ident, at, payload in tqdm(gen, total=n, desc=f"generate {n}", disable=None):
                f.write(f'{{"id":"{ident}","created_at":"{at}",{payload[1:]}\n')
                rows.append((ident, at, "1.0", payload))
                if len(rows) == 10_000:
                    conn.executemany("INSERT INTO traces VALUES (?,?,?,?)", rows)
                    rows.clear()
            conn.executemany("INSERT INTO traces VALUES (?,?,?,?)", rows)
        conn.commit()
        conn.close()
        os.replace(tmp_j, jsonl)
        os.replace(tmp_db, db)
    return {"sqlite": f"sqlite:{db}", "jsonl": str(jsonl)}


def export_row(ctx: BenchContext) -> list[dict[str, Any]]:
    """Export throughput and peak RSS (of a fresh process doing only the export) per size."""
    evalsets = ctx.workdir / "evalsets"
    evalsets.mkdir(exist_ok=True)
    item = {"id": "b1", "prompt": "What is 1 + 1?", "expected_answer": "2"}
    (evalsets / "bench.jsonl").write_text(
        json.dumps({**item, "category": "add", "difficulty": "easy"}) + "\n"
    )
    out = []
    for n in ctx.sizes:
        for kind, src in _inputs(ctx.workdir, n).items():
            dest = ctx.workdir / "examples.jsonl"
            r = subprocess.run(
                [sys.executable, "-c", _CHILD, src, str(dest), str(evalsets)],
                capture_output=True,
                text=True,
            )
            if r.returncode:
                raise RuntimeError(f"bench export {kind} {n}: {r.stderr.strip()}")
            m = json.loads(r.stdout)
            if m["written"] != n:
                raise RuntimeError(f"bench export {kind} {n}: wrote {m['written']}")
            dest.unlink()
            out.append(
                {
                    "source": kind,
                    "traces": n,
                    "seconds": round(m["seconds"], 2),
                    "cpu_s": round(m["cpu_s"], 2),  # less sensitive to other load than seconds
                    "traces_per_s": round(n / m["seconds"]),
                    "peak_rss_mb": round(m["peak_rss_mb"], 1),
                }
            )
    return out

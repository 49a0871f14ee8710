"""`tunixrt bench`: measure this machine. Prints a table and writes the figures as JSON.

Each row of the benchmark is a function `row(ctx: BenchContext) -> list[dict]` in the module it
measures, registered by name in ROWS ("module:function"); later stages add theirs there.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

ROWS: dict[str, str] = {
    "export": "tunixrt_dvc.bench:export_row",
    "format": "tunixrt_dvc.format_data:format_bench",
    "train": "tunixrt_dvc.training:bench_row",
    "eval": "tunixrt_dvc.sampling:bench_row",
    "dvc": "tunixrt_dvc.pipeline_bench:dvc_bench",
}


@dataclass(frozen=True)
class BenchContext:
    sizes: tuple[int, ...]  # problem sizes (traces, examples, ...) as the row understands them
    workdir: Path  # scratch space for generated inputs, reused across rows and sizes


# --- the export row ----------------------------------------------------------------------------

_CHILD = """
import json, resource, sys, time
from tunixrt_dvc.export import export
def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime
t0, c0 = time.perf_counter(), cpu()
r = export(sys.argv[1], sys.argv[2], evalsets_dir=sys.argv[3])
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

    from tunixrt_dvc.store import TraceStore

    jsonl, db = workdir / f"traces-{n}.jsonl", workdir / f"traces-{n}.sqlite"
    if not (jsonl.exists() and db.exists()):
        tmp_j, tmp_db = jsonl.with_suffix(".tmp"), db.with_suffix(".tmp.sqlite")
        tmp_db.unlink(missing_ok=True)
        with TraceStore.open(f"sqlite:{tmp_db}") as store:
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
                raise click.ClickException(f"bench export {kind} {n}: {r.stderr.strip()}")
            m = json.loads(r.stdout)
            if m["written"] != n:
                raise click.ClickException(f"bench export {kind} {n}: wrote {m['written']}")
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


# --- the command -------------------------------------------------------------------------------


def run_rows(names: list[str], ctx: BenchContext) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(name, rows) per row, as each finishes."""
    for name in names:
        module, attr = ROWS[name].split(":")
        yield name, getattr(importlib.import_module(module), attr)(ctx)


def table(name: str, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return f"{name}: (no rows)"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = [name, "  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _ints(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"not a comma-separated list of integers: {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter("sizes must be integers >= 1")
    return sizes


@click.command()
@click.option("--rows", default=",".join(ROWS), show_default=True, help="Rows to run.")
@click.option("--sizes", default="10000,100000,1000000", show_default=True, help="Problem sizes.")
@click.option("--out", default="bench.json", show_default=True, type=click.Path(dir_okay=False))
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    help="Keep generated inputs here and reuse them (default: a temporary directory).",
)
def main(rows: str, sizes: str, out: str, workdir: str | None) -> None:
    """Measure this machine: each row runs at each size; prints a table, writes JSON to OUT."""
    names = [r.strip() for r in rows.split(",") if r.strip()]
    if unknown := [r for r in names if r not in ROWS]:
        raise click.BadParameter(
            f"unknown rows {unknown}; known: {sorted(ROWS)}", param_hint="--rows"
        )
    machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    results: dict[str, list[dict[str, Any]]] = {}
    ctx_sizes = _ints(sizes)
    with tempfile.TemporaryDirectory(prefix="tunixrt-bench-") as tmp:
        work = Path(workdir) if workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        # Each row is printed and saved as soon as it is done: a later row failing loses nothing.
        for name, result in run_rows(names, BenchContext(sizes=ctx_sizes, workdir=work)):
            results[name] = result
            click.echo(table(name, result) + "\n")
            doc = {"machine": machine, "rows": results}
            Path(out).write_text(json.dumps(doc, indent=2) + "\n")
    click.echo(f"wrote {out}")

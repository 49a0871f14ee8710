"""Bench row `format`: the format stage on N examples, in a fresh process each."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from itertools import islice
from pathlib import Path
from typing import Any

from tunixrt_dvc.bench.context import BenchContext
from tunixrt_dvc.params import load_params
from tunixrt_dvc.task import corpus
from tunixrt_dvc.text.chat_format import render_example
from tunixrt_dvc.text.tokenizer import train_tokenizer
from tunixrt_dvc.traces.schemas import TrainingExample, dumps, trace_to_example

_BENCH_CHILD = """
import json, resource, sys, time
from tunixrt_dvc.params import FormatParams
from tunixrt_dvc.text.dataset import run_format
def usage():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime, s.ru_maxrss, c.ru_maxrss
params = FormatParams.model_validate_json(sys.argv[3])
t0, (c0, _, _) = time.perf_counter(), usage()
stats = run_format(sys.argv[1], sys.argv[2], params=params, seed=0)
seconds, (c1, rss, rss_workers) = time.perf_counter() - t0, usage()
written = sum(s["examples"] + s["over_max_len"] for s in stats["splits"].values())
print(json.dumps({"seconds": seconds, "cpu_s": c1 - c0, "rss_kb": rss,
                  "rss_workers_kb": rss_workers, "written": written}))
"""
_BENCH_DISTINCT = 100_000  # distinct problems in a bench input; bigger inputs repeat them


def _bench_input(workdir: Path, n: int) -> Path:
    """n TrainingExample lines from the built-in corpus (distinct ids); cached in workdir."""
    path = workdir / f"format-examples-{n}.jsonl"
    if path.exists():
        return path
    distinct = [
        dumps(trace_to_example(t, source="builtin"))
        for t in corpus.traces(n=min(n, _BENCH_DISTINCT), seed=0)
    ]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for i in range(n):
            line = distinct[i % len(distinct)]
            f.write(f'{{"id":"{i:016x}"{line[line.index(",") :]}\n')  # ids: the first key
    os.replace(tmp, path)
    return path


def format_row(ctx: BenchContext) -> list[dict[str, Any]]:
    """`tunixrt bench` row: the format stage on ctx.sizes examples, in a fresh process each.

    "given": a tokenizer is configured (validate, render, encode, write: one pass); "trained":
    the default, which also trains a tokenizer on the train split (two passes). Peak RSS is the
    largest process's (the stage's or a worker's), to show memory stays flat with size.
    """
    work = Path(ctx.workdir)
    base = load_params(ctx.params_file).format
    tokenizer = work / "format-bench-tokenizer.model"
    out = []
    for n in ctx.sizes:
        examples = _bench_input(work, n)
        if not tokenizer.exists():  # trained once, on the first inputs' head
            with examples.open("rb") as f:
                head = [TrainingExample.model_validate_json(line) for line in islice(f, 20_000)]
            texts = (
                "".join(render_example(ex, recipe="reasoning_tags", instruction="")) for ex in head
            )
            tokenizer.write_bytes(train_tokenizer(texts, vocab_size=512, seed=0))
        for source in ("given", "trained"):
            params = base.model_copy(
                update={"max_len": 1024, "tokenizer": str(tokenizer) if source == "given" else None}
            )
            dest = work / "format-out"
            r = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    _BENCH_CHILD,
                    str(examples),
                    str(dest),
                    params.model_dump_json(),
                ],
                capture_output=True,
                text=True,
            )
            if r.returncode:
                raise RuntimeError(f"bench format {source} {n}: {r.stderr.strip()[-2000:]}")
            m = json.loads(r.stdout)
            if m["written"] != n:
                raise RuntimeError(f"bench format {source} {n}: wrote {m['written']}")
            shutil.rmtree(dest)
            out.append(
                {
                    "tokenizer": source,
                    "examples": n,
                    "seconds": round(m["seconds"], 2),
                    "cpu_s": round(m["cpu_s"], 2),
                    "examples_per_s": round(n / m["seconds"]),
                    "peak_rss_mb": round(max(m["rss_kb"], m["rss_workers_kb"]) / 1024, 1),
                }
            )
    return out

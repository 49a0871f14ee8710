"""A small formatted dataset from the built-in corpus, as the format stage writes it."""

from __future__ import annotations

from pathlib import Path

from support.params import write_small_params
from tunixrt_dvc.params import load_params
from tunixrt_dvc.task import corpus
from tunixrt_dvc.text.dataset import run_format
from tunixrt_dvc.traces.schemas import dumps, trace_to_example


def small_formatted(root: Path, *, n_traces: int, overrides: dict | None = None) -> Path:
    """`n_traces` built-in traces formatted under `root/data`, with `root/params.yaml` (the small
    training params and `overrides`) as the params they were made with; returns `root/data`."""
    examples = root / "examples.jsonl"
    examples.write_text(
        "".join(
            dumps(trace_to_example(t, source="builtin")) + "\n"
            for t in corpus.traces(n=n_traces, seed=0)
        )
    )
    params = load_params(write_small_params(root / "params.yaml", overrides))
    run_format(examples, root / "data", params=params.format, seed=params.seed)
    return root / "data"

"""The eval generations as tunix-rt traces, loadable with `tunixrt traces import`."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from tunixrt_dvc.report.markdown import EMPTY_GENERATION, NO_ANSWER
from tunixrt_dvc.report.run import RUN_FIELDS, run_info
from tunixrt_dvc.task.arithmetic import check_equation
from tunixrt_dvc.task.scoring import ScoredItem
from tunixrt_dvc.traces.schemas import ReasoningTrace, StoredTrace, TraceStep, dumps

TRACE_VERSION = "1.0"  # tunix-rt's trace_version for its ReasoningTrace payloads
# Fixed namespace so that trace ids are the same on every machine (uuid5 of the content).
TRACE_NAMESPACE = uuid.UUID("6f1d7c9e-2b4a-5e8f-9c3d-7a1b0e4f2d68")
# Synthetic, reproducible creation times: the epoch plus the record's index in seconds, so the
# store's (created_at, id) order is the report's order; a wall-clock time would break byte-identity.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_STEP_CHARS = 20_000  # TraceStep.content limit


def _trace_for(item: ScoredItem, *, stage: str, info: Mapping[str, Any]) -> ReasoningTrace:
    """A tunix-rt trace of one generation.

    Parsed steps become steps (type `equation` when check_equation can check them, else `text`).
    A generation with no parsable steps keeps its raw text as a single step of type `generation`
    (`[empty generation]` if empty), and a missing answer is written as `[no answer]`; the scores
    in `meta` say what was parsed, so such traces stay valid and visibly failed.
    """
    steps = [s for s in item.steps if s.strip()]
    if steps:
        trace_steps = [
            TraceStep(
                i=k,
                type="text" if check_equation(s) is None else "equation",
                content=s[:_MAX_STEP_CHARS],
            )
            for k, s in enumerate(steps)
        ]
    else:
        raw = item.generation if item.generation.strip() else EMPTY_GENERATION
        trace_steps = [TraceStep(i=0, type="generation", content=raw[:_MAX_STEP_CHARS])]
    answer = item.answer if item.answer and item.answer.strip() else NO_ANSWER
    return ReasoningTrace(
        trace_version=TRACE_VERSION,
        prompt=item.prompt,
        final_answer=answer,
        steps=trace_steps,
        meta={
            "source": "tunixrt-dvc/eval",
            "tags": ["eval", stage],
            "eval": {
                "item_id": item.id,
                "category": item.category,
                "difficulty": item.difficulty,
                "expected_answer": item.expected_answer,
            },
            "model": {
                "stage": stage,
                "weights": "base" if stage == "before" else "tuned",
                "preset": info["preset"],
                "recipe": info["recipe"],
            },
            "run": {k: info[k] for k, _ in RUN_FIELDS},
            "scores": {
                "correct": item.correct,
                "well_formed": item.well_formed,
                "steps_total": item.steps_total,
                "steps_correct": item.steps_correct,
                "answer_follows": item.answer_follows,
                "gen_tokens": item.gen_tokens,
            },
            "generation": item.generation,
        },
    )


def eval_traces(
    before: Sequence[ScoredItem], after: Sequence[ScoredItem], *, manifest: Mapping[str, Any]
) -> list[StoredTrace]:
    """Before then after, in file order, with content-derived ids and synthetic created_at.

    The id is a uuid5 of the stage, the item id, the run's commit and data hash and the trace
    itself: rerunning gives the same ids (so `traces import` skips them), a changed generation a
    new one.
    """
    info = run_info(manifest)
    out = []
    for stage, items in (("before", before), ("after", after)):
        for item in items:
            trace = _trace_for(item, stage=stage, info=info)
            digest = hashlib.sha256(dumps(trace).encode()).hexdigest()
            key = "\n".join(
                [stage, item.id, str(info["git_sha"]), str(info["data_sha256"]), digest]
            )
            out.append(
                StoredTrace(
                    id=str(uuid.uuid5(TRACE_NAMESPACE, key)),
                    created_at=EPOCH + timedelta(seconds=len(out)),
                    trace=trace,
                )
            )
    return out

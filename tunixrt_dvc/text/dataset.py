"""The `format` stage: TrainingExample JSONL -> rendered, split, tokenized examples and a tokenizer.

Streaming keeps memory flat. With a tokenizer to train there are two passes over the input: the
first validates every record and feeds the train split's texts to the trainer, the second
validates again (the same function, so the same verdicts), encodes and writes. With a given
tokenizer there is only the second. Records are processed in chunks by worker processes on big
inputs, and written in input order, so the output does not depend on the number of workers.
Everything is written to a temporary directory beside the output and renamed into place at the
end: a failure leaves no partial output.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import multiprocessing
import os
from array import array
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from pydantic import ValidationError
from tqdm import tqdm

from tunixrt_dvc.errors import InvalidInput, Problem, problems_from_validation
from tunixrt_dvc.io import atomic_dir
from tunixrt_dvc.params import FormatParams
from tunixrt_dvc.text.chat import BOS, EOS, PAD, PROMPT_SUFFIX, TURN_TOKENS
from tunixrt_dvc.text.chat_format import render_example
from tunixrt_dvc.text.injection import control_layout_ok, example_problems, find_control_tokens
from tunixrt_dvc.text.tokenizer import Tokenizer, TokenizerError, train_tokenizer
from tunixrt_dvc.traces.schemas import TrainingExample

SPLITS = ("train", "val")
TOKENIZER_FILE = "tokenizer.model"
STATS_FILE = "stats.json"
REJECTS_FILE = "rejects.jsonl"
MAX_LISTED = 20  # over-long examples listed by id in stats.json
# The control pieces of every tokenizer train_tokenizer makes (known before it is trained).
TRAINED_CONTROL_PIECES = frozenset({PAD, EOS, BOS, *TURN_TOKENS})
_CHUNK = 2048  # lines per task
_POOL_MIN_BYTES = 32 << 20  # smaller inputs are processed in-process (no worker start-up)
_IN_FLIGHT = 4  # chunks queued per worker: bounds memory


def split_of(example_id: str, *, val_fraction: float) -> str:
    """'train' or 'val', from a hash of the id alone: stable across seeds, runs and machines."""
    h = int.from_bytes(hashlib.sha256(example_id.encode()).digest()[:8], "big")
    return "val" if h < val_fraction * 2**64 else "train"


# --- per-record work (runs in worker processes on big inputs) ------------------------------


@dataclass(frozen=True)
class _Job:
    file: str
    recipe: str
    instruction: str
    val_fraction: float
    control_pieces: frozenset[str]
    tokenizer: bytes | None  # None: the first pass (render only, to train a tokenizer)


class _Row(NamedTuple):
    """What one input line became: refused (problems) or accepted into a split."""

    line: int
    id: str | None
    problems: list[tuple[str, str]]
    split: str = ""
    payload: str = ""  # first pass: the text to train on; second: the output line
    n_tokens: int = 0
    n_completion: int = 0
    n_unk: int = 0


class _Worker:
    def __init__(self, job: _Job):
        self.job = job
        self.tok = Tokenizer.load(job.tokenizer) if job.tokenizer is not None else None
        self.suffix = self.tok.encode(PROMPT_SUFFIX) if self.tok else []

    def rows(self, chunk: list[tuple[int, bytes]]) -> list[_Row]:
        # A chunk allocates thousands of acyclic objects: the cyclic collector would scan them
        # again and again for nothing (20% of the time).
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._rows(chunk)
        finally:
            if enabled:
                gc.enable()

    def _rows(self, chunk: list[tuple[int, bytes]]) -> list[_Row]:
        job, rows, texts = self.job, [], []
        for n, raw in chunk:
            try:
                ex = TrainingExample.model_validate_json(raw)
            except ValidationError as e:
                problems = [
                    (p.field, p.message) for p in problems_from_validation(e, file="", line=n)
                ]
                rows.append(_Row(n, None, problems))
                continue
            if found := example_problems(
                ex.prompt, ex.response, recipe=job.recipe, control_pieces=job.control_pieces
            ):
                rows.append(_Row(n, ex.id, found))
                continue
            split = split_of(ex.id, val_fraction=job.val_fraction)
            prompt, completion = render_example(ex, recipe=job.recipe, instruction=job.instruction)
            rows.append(_Row(n, ex.id, [], split, prompt + completion))
            texts.append((len(rows) - 1, ex, prompt, completion))
        if self.tok is None:
            return rows
        encoded = self.tok.sp.encode([t for _, _, p, c in texts for t in (p, c)], num_threads=1)
        for k, (i, ex, prompt, completion) in enumerate(texts):
            rows[i] = self._encoded(rows[i], ex, prompt, completion, *encoded[2 * k : 2 * k + 2])
        return rows

    def _encoded(
        self,
        row: _Row,
        ex: TrainingExample,
        prompt: str,
        completion: str,
        p_ids: list[int],
        c_ids: list[int],
    ) -> _Row:
        tok = self.tok
        ids = [tok.bos_id, *p_ids, *c_ids]
        n_prompt = 1 + len(p_ids)
        if not control_layout_ok(tok, ids, n_prompt, suffix=self.suffix):
            msg = "the rendering encodes to control tokens outside the chat template"
            return row._replace(problems=[("<rendered>", msg)])
        record = {
            "id": ex.id,
            "prompt": prompt,
            "completion": completion,
            "ids": ids,
            "n_prompt": n_prompt,
            "category": ex.metadata.tags[0] if ex.metadata.tags else None,
        }
        return row._replace(
            payload=_dumps(record),
            n_tokens=len(ids),
            n_completion=len(c_ids),
            n_unk=ids.count(tok.sp.unk_id()),
        )


_worker: _Worker | None = None


def _init_worker(job: _Job) -> None:
    global _worker
    _worker = _Worker(job)


def _work(chunk: list[tuple[int, bytes]]) -> list[_Row]:
    assert _worker is not None
    return _worker.rows(chunk)


def _chunks(path: Path, desc: str) -> Iterator[list[tuple[int, bytes]]]:
    """Chunks of (line number, bytes) of the non-blank lines, with a progress bar."""
    with (
        path.open("rb") as f,
        tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=desc, disable=None) as bar,
    ):
        chunk: list[tuple[int, bytes]] = []
        for n, raw in enumerate(f, start=1):
            bar.update(len(raw))
            if raw.strip():
                chunk.append((n, raw))
                if len(chunk) == _CHUNK:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk


def _records(path: Path, job: _Job, repeats: dict[int, int], desc: str) -> Iterator[_Row]:
    """Every line's `_Row`, in input order, repeated ids refused (see `_repeated_ids`)."""
    for row in _process(path, job, desc):
        if not row.problems and (first := repeats.get(row.line)):
            row = _Row(row.line, row.id, [("id", f"repeats the id of line {first}")])
        yield row


def _repeated_ids(path: Path) -> dict[int, int]:
    """{line: the first line with its id} for every line that repeats an earlier line's id.

    A pass of its own over the ids alone keeps memory small: 20 bytes per line (a 128-bit hash
    of the id and the line number), sorted once at the end.
    """
    hashes, lines = array("Q"), array("I")
    for chunk in _chunks(path, "format: ids"):
        for n, raw in chunk:
            if (example_id := _id_of(raw)) is not None:
                hashes.frombytes(hashlib.sha256(example_id.encode()).digest()[:16])
                lines.append(n)
    if not lines:
        return {}
    h = np.frombuffer(hashes, dtype=np.uint64).reshape(-1, 2)
    order = np.lexsort((h[:, 1], h[:, 0]))  # stable: equal ids stay in line order
    hs = h[order]
    repeat = np.flatnonzero((hs[1:] == hs[:-1]).all(axis=1)) + 1
    if not len(repeat):
        return {}
    starts = np.ones(len(hs), dtype=bool)
    starts[repeat] = False
    first = np.maximum.accumulate(np.where(starts, np.arange(len(hs)), 0))
    ln = np.frombuffer(lines, dtype=np.uint32)
    return {int(ln[order[k]]): int(ln[order[first[k]]]) for k in repeat}


def _id_of(raw: bytes) -> str | None:
    """A record's `id` as the schema reads it, cheaply for export's lines; None if it has none."""
    prefix = b'{"id":"'
    if raw.startswith(prefix):
        end = raw.find(b'"', len(prefix))
        if end > 0 and b"\\" not in raw[len(prefix) : end]:
            return raw[len(prefix) : end].decode("utf-8", errors="replace")
    try:
        value = json.loads(raw).get("id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _process(path: Path, job: _Job, desc: str) -> Iterator[_Row]:
    """`_Worker.rows` over the file's chunks, in order: in worker processes on big inputs."""
    chunks = _chunks(path, desc)
    workers = min(os.cpu_count() or 1, 8)
    if workers < 2 or path.stat().st_size < _POOL_MIN_BYTES:
        worker = _Worker(job)
        for chunk in chunks:
            yield from worker.rows(chunk)
        return
    # spawn: the caller may have imported JAX, whose threads make fork unsafe.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(job,)) as pool:
        pending: deque = deque()
        for chunk in chunks:
            pending.append(pool.apply_async(_work, (chunk,)))
            if len(pending) >= _IN_FLIGHT * workers:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()


# --- the stage -----------------------------------------------------------------------------


@dataclass
class _Split:
    """What was written to one split, and its token-length distribution."""

    examples: int = 0
    over_max_len: int = 0
    over_max_len_ids: list[str] = field(default_factory=list)
    unk_tokens: int = 0
    # Histograms (length -> examples): exact percentiles in memory that does not grow with N.
    tokens: Counter[int] = field(default_factory=Counter)
    completion_tokens: Counter[int] = field(default_factory=Counter)

    def stats(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "over_max_len": self.over_max_len,
            "over_max_len_ids": self.over_max_len_ids,
            "unk_tokens": self.unk_tokens,
            "tokens": _distribution(self.tokens),
            "completion_tokens": _distribution(self.completion_tokens),
        }


def _distribution(hist: Counter[int]) -> dict[str, float | int]:
    """min, mean, p50, p90, p99, max of a length histogram (nearest rank: actual lengths)."""
    if not hist:
        return {}
    lengths = sorted(hist)
    below = np.cumsum([hist[k] for k in lengths])
    n = int(below[-1])

    def rank(q: float) -> int:
        return lengths[int(np.searchsorted(below, max(1, math.ceil(q * n))))]

    return {
        "min": lengths[0],
        "mean": round(sum(k * c for k, c in hist.items()) / n, 3),
        "p50": rank(0.5),
        "p90": rank(0.9),
        "p99": rank(0.99),
        "max": lengths[-1],
    }


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


@dataclass
class _Rejects:
    """Refused records: raised together under on_invalid=fail, listed in rejects.jsonl on skip."""

    file: str
    on_invalid: str
    rows: list[_Row] = field(default_factory=list)

    def add(self, row: _Row) -> None:
        self.rows.append(row)

    def check(self) -> None:
        if self.rows and self.on_invalid == "fail":
            raise InvalidInput(
                [Problem(self.file, r.line, f, m) for r in self.rows for f, m in r.problems]
            )

    def jsonl(self) -> str:
        return "".join(
            _dumps(
                {
                    "line": r.line,
                    "id": r.id,
                    "problems": [{"field": f, "message": m} for f, m in r.problems],
                }
            )
            + "\n"
            for r in self.rows
        )


def _param_error(params_file: str, name: str, message: str) -> InvalidInput:
    return InvalidInput([Problem(params_file, None, f"format.{name}", message)])


def _given_tokenizer(params: FormatParams, params_file: str) -> Tokenizer | None:
    if params.tokenizer is None:
        return None
    try:
        return Tokenizer.load(params.tokenizer)
    except FileNotFoundError:
        msg = f"{params.tokenizer}: not found"
    except TokenizerError as e:
        msg = str(e)
    raise _param_error(params_file, "tokenizer", msg)


def _check_counts(counts: dict[str, int], file: str, params_file: str) -> None:
    """Both splits need examples: none at all is the input's fault, one empty the fraction's."""
    if not any(counts.values()):
        raise InvalidInput([Problem(file, None, "<file>", "no valid examples")])
    for split, n in counts.items():
        if not n:
            raise _param_error(params_file, "val_fraction", f"the {split} split is empty")


def run_format(
    examples: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    params: FormatParams,
    seed: int,
    params_file: str = "params.yaml",
) -> dict[str, Any]:
    """Write train.jsonl, val.jsonl, tokenizer.model, stats.json (and rejects.jsonl on skip) to
    `out`; returns the stats. Bad input or params raise InvalidInput and write nothing."""
    examples, out = Path(examples), Path(out)
    if not examples.is_file():
        raise InvalidInput([Problem(str(examples), None, "<file>", "not found")])
    given = _given_tokenizer(params, params_file)
    control = given.control_pieces if given else TRAINED_CONTROL_PIECES
    if found := find_control_tokens(params.instruction, control):
        shown = ", ".join(repr(p) for p in dict.fromkeys(found))
        raise _param_error(params_file, "instruction", f"contains control token(s) {shown}")
    job = _Job(str(examples), params.recipe, params.instruction, params.val_fraction, control, None)
    repeats = _repeated_ids(examples)

    if given is None:
        model = _train(examples, job, repeats, params, seed=seed, params_file=params_file)
    else:
        model = given.model_bytes()
    tok = Tokenizer.load(model)

    with atomic_dir(out) as tmp:
        rejects = _Rejects(str(examples), params.on_invalid)
        splits = _write(examples, tmp, job, repeats, model, params.max_len, rejects)
        rejects.check()
        valid = {s: splits[s].examples + splits[s].over_max_len for s in SPLITS}
        _check_counts(valid, str(examples), params_file)
        for s in SPLITS:
            if not splits[s].examples:
                msg = f"every {s} example is longer than {params.max_len} tokens"
                raise _param_error(params_file, "max_len", msg)
        stats = {
            "recipe": params.recipe,
            "instruction": params.instruction,
            "max_len": params.max_len,
            "rejected": len(rejects.rows),
            "splits": {s: splits[s].stats() for s in SPLITS},
            "tokenizer": {
                "source": "trained" if given is None else "given",
                "vocab_size": tok.vocab_size,
                "sha256": hashlib.sha256(model).hexdigest(),
            },
        }
        (tmp / TOKENIZER_FILE).write_bytes(model)
        if params.on_invalid == "skip":
            (tmp / REJECTS_FILE).write_text(rejects.jsonl(), "utf-8")
        (tmp / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n", "utf-8")
    return stats


def _train(
    examples: Path,
    job: _Job,
    repeats: dict[int, int],
    params: FormatParams,
    *,
    seed: int,
    params_file: str,
) -> bytes:
    """First pass: validate everything, train the tokenizer on the train split's renderings."""
    rejects = _Rejects(job.file, params.on_invalid)
    counts = dict.fromkeys(SPLITS, 0)

    def texts() -> Iterator[str]:
        for row in _records(examples, job, repeats, "format: train tokenizer"):
            if row.problems:
                rejects.add(row)
            else:
                counts[row.split] += 1
                if row.split == "train":
                    yield row.payload

    rows = texts()
    try:
        model, error = train_tokenizer(rows, vocab_size=params.vocab_size, seed=seed), None
    except TokenizerError as e:
        model, error = b"", str(e)
    for _ in rows:  # the counts and rejects need every line, whatever the trainer read
        pass
    # Bad records explain an empty or odd training text better than the trainer does.
    rejects.check()
    _check_counts(counts, job.file, params_file)
    if error is not None:
        raise _param_error(params_file, "vocab_size", error)
    return model


def _write(
    examples: Path,
    tmp: Path,
    job: _Job,
    repeats: dict[int, int],
    model: bytes,
    max_len: int,
    rejects: _Rejects,
) -> dict[str, _Split]:
    """Second pass: encode and write the splits in input order."""
    splits = {s: _Split() for s in SPLITS}
    job = _Job(job.file, job.recipe, job.instruction, job.val_fraction, job.control_pieces, model)
    files = {s: (tmp / f"{s}.jsonl").open("w", encoding="utf-8", newline="\n") for s in SPLITS}
    try:
        for row in _records(examples, job, repeats, "format: tokenize"):
            if row.problems:
                rejects.add(row)
                continue
            s = splits[row.split]
            s.tokens[row.n_tokens] += 1
            s.completion_tokens[row.n_completion] += 1
            s.unk_tokens += row.n_unk
            if row.n_tokens > max_len:  # reported and excluded, never truncated
                s.over_max_len += 1
                if len(s.over_max_len_ids) < MAX_LISTED:
                    s.over_max_len_ids.append(row.id)
                continue
            files[row.split].write(row.payload + "\n")
            s.examples += 1
    finally:
        for f in files.values():
            f.close()
    return splits
